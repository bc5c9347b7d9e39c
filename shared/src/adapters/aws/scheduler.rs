//! The scheduler port on Amazon EventBridge Scheduler (aws-sdk-scheduler): a campaign
//! scheduled for later is a one-time `at(yyyy-mm-ddThh:mm:ss)` schedule in UTC whose
//! target is the planning queue (SQS) with the planning task as the message body,
//! `ActionAfterCompletion: DELETE` (it deletes itself once it fired), and flexible time
//! window off (the campaign starts at the minute asked). Scheduler assumes
//! `role_arn` (allowed `sqs:SendMessage` on the planning queue only) to deliver it.
//!
//! Firing twice is harmless (the planner drops a `fire` task of a campaign that is not
//! `scheduled` any more); a cancel deletes the schedule, a missing one is fine.

use async_trait::async_trait;
use aws_sdk_scheduler::Client;
use aws_sdk_scheduler::types::{
    ActionAfterCompletion, FlexibleTimeWindow, FlexibleTimeWindowMode, Target,
};
use chrono::{DateTime, Utc};

use crate::error::{AppError, AppResult};
use crate::ports::scheduler::Scheduler;

/// One schedule group, the planning queue and the role Scheduler assumes.
#[derive(Debug, Clone)]
pub struct EventBridgeScheduler {
    client: Client,
    group: String,
    queue_arn: String,
    role_arn: String,
}

impl EventBridgeScheduler {
    pub fn new(
        client: Client,
        group: impl Into<String>,
        queue_arn: impl Into<String>,
        role_arn: impl Into<String>,
    ) -> Self {
        Self {
            client,
            group: group.into(),
            queue_arn: queue_arn.into(),
            role_arn: role_arn.into(),
        }
    }
}

/// The schedule expression for a UTC instant: `at(yyyy-mm-ddThh:mm:ss)` (Scheduler takes
/// whole seconds; a fraction is rounded up so it never fires early).
pub fn at_expression(at: DateTime<Utc>) -> String {
    let whole = if at.timestamp_subsec_nanos() > 0 {
        at + chrono::Duration::seconds(1)
    } else {
        at
    };
    format!("at({})", whole.format("%Y-%m-%dT%H:%M:%S"))
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> AppError {
    AppError::Store(crate::ports::store::StoreError::unavailable(format!(
        "EventBridge Scheduler {what}: {e}"
    )))
}

#[async_trait]
impl Scheduler for EventBridgeScheduler {
    async fn create_at(&self, name: &str, at: DateTime<Utc>, body: &str) -> AppResult<()> {
        let target = Target::builder()
            .arn(&self.queue_arn)
            .role_arn(&self.role_arn)
            .input(body)
            .build()
            .map_err(|e| unavailable("target", e))?;
        let window = FlexibleTimeWindow::builder()
            .mode(FlexibleTimeWindowMode::Off)
            .build()
            .map_err(|e| unavailable("time window", e))?;
        let expression = at_expression(at);
        for attempt in 0..2 {
            let sent = self
                .client
                .create_schedule()
                .name(name)
                .group_name(&self.group)
                .schedule_expression(&expression)
                .schedule_expression_timezone("UTC")
                .action_after_completion(ActionAfterCompletion::Delete)
                .flexible_time_window(window.clone())
                .target(target.clone())
                .description("mailpilot campaign start")
                .send()
                .await;
            match sent {
                Ok(_) => return Ok(()),
                // Replaced: a retried launch, or a schedule that was moved.
                Err(e)
                    if attempt == 0
                        && e.as_service_error()
                            .is_some_and(|s| s.is_conflict_exception()) =>
                {
                    self.delete(name).await?;
                }
                Err(e) => {
                    return Err(unavailable(
                        "CreateSchedule",
                        aws_sdk_scheduler::error::DisplayErrorContext(e),
                    ));
                }
            }
        }
        Err(unavailable("CreateSchedule", "the name stays taken"))
    }

    async fn delete(&self, name: &str) -> AppResult<()> {
        match self
            .client
            .delete_schedule()
            .name(name)
            .group_name(&self.group)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(unavailable(
                "DeleteSchedule",
                aws_sdk_scheduler::error::DisplayErrorContext(e),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn expressions_are_utc_whole_seconds_never_early() {
        let t = Utc.with_ymd_and_hms(2026, 12, 1, 9, 30, 0).unwrap();
        assert_eq!(at_expression(t), "at(2026-12-01T09:30:00)");
        let t = t + chrono::Duration::milliseconds(250);
        assert_eq!(at_expression(t), "at(2026-12-01T09:30:01)");
    }
}
