//! The send function: an SQS batch (from the send queue, the high-priority queue or one
//! of their dead-letter queues) → `usecases::send` → a partial batch response naming
//! exactly the records to retry. A record handed back with a delay gets
//! ChangeMessageVisibility first.

use std::sync::Arc;

pub use mailpilot_shared::lambda_events::{
    BatchResponse, ItemFailure, SqsAttributes, SqsEvent, SqsRecord,
};
use mailpilot_shared::metrics;
use mailpilot_shared::ports::clock::Clock;
use mailpilot_shared::ports::queue::{Lane, Queue};
use mailpilot_shared::ports::store::Store;
use mailpilot_shared::usecases::messages::{self, Composer, FailureTally};
use mailpilot_shared::usecases::send::{
    self, Directory, Incoming, Outcome, SendConfig, SenderDeps,
};

/// One queue the function consumes: its ARN and the handle to change visibility on it.
pub struct Source {
    pub arn: String,
    pub queue: Arc<dyn Queue>,
}

pub struct Handler {
    pub store: Arc<dyn Store>,
    pub directory: Arc<dyn Directory>,
    pub clock: Arc<dyn Clock>,
    pub composer: Composer,
    pub config: SendConfig,
    pub bulk: Source,
    pub priority: Source,
    /// ARNs of the dead-letter queues (their records mark messages `failed(dead_letter)`).
    pub dead_letter_arns: Vec<String>,
}

enum Kind {
    Lane(Lane),
    DeadLetter,
}

impl Handler {
    fn kind_of(&self, arn: &str) -> Kind {
        if self.dead_letter_arns.iter().any(|a| a == arn) {
            Kind::DeadLetter
        } else if arn == self.priority.arn {
            Kind::Lane(Lane::Priority)
        } else {
            Kind::Lane(Lane::Bulk)
        }
    }

    /// Handles one event. Records of different sources are handled as separate batches.
    pub async fn handle(&self, event: SqsEvent) -> BatchResponse {
        let mut response = BatchResponse::default();
        let mut groups: Vec<(String, Vec<&SqsRecord>)> = Vec::new();
        for r in &event.records {
            match groups
                .iter_mut()
                .find(|(arn, _)| *arn == r.event_source_arn)
            {
                Some((_, g)) => g.push(r),
                None => groups.push((r.event_source_arn.clone(), vec![r])),
            }
        }
        for (arn, records) in groups {
            let incoming: Vec<Incoming> = records
                .iter()
                .map(|r| Incoming {
                    id: r.message_id.clone(),
                    body: r.body.clone(),
                })
                .collect();
            let kind = self.kind_of(&arn);
            let lane_name = match &kind {
                Kind::DeadLetter => "dead_letter",
                Kind::Lane(Lane::Bulk) => "bulk",
                Kind::Lane(Lane::Priority) => "priority",
            };
            let now_ms = self.clock.now().timestamp_millis();
            let lag = records
                .iter()
                .filter_map(|r| r.attributes.sent_millis())
                .map(|sent| (now_ms - sent).max(0))
                .max();
            if let Some(lag) = lag {
                metrics::emit(
                    "send",
                    &[("Lane", lane_name)],
                    &[("QueueLag", lag as f64, metrics::Unit::Milliseconds)],
                );
            }
            // Boxed: the batch's future is large, and the task-local scope would hold it
            // on the stack.
            let ((outcomes, queue), failures) = messages::tallying_failures(Box::pin(async {
                match kind {
                    Kind::DeadLetter => (
                        send::handle_dead_letters(
                            self.store.as_ref(),
                            self.clock.as_ref(),
                            &incoming,
                        )
                        .await,
                        None,
                    ),
                    Kind::Lane(lane) => {
                        let deps = SenderDeps {
                            store: self.store.as_ref(),
                            directory: self.directory.as_ref(),
                            clock: self.clock.as_ref(),
                            composer: &self.composer,
                            config: &self.config,
                        };
                        let queue = match lane {
                            Lane::Bulk => &self.bulk.queue,
                            Lane::Priority => &self.priority.queue,
                        };
                        (
                            send::handle_batch(&deps, lane, &incoming).await,
                            Some(queue),
                        )
                    }
                }
            }))
            .await;
            for line in failure_lines(lane_name, &failures) {
                println!("{line}");
            }
            let (mut done, mut retried, mut failed) = (0.0, 0.0, 0.0);
            for o in &outcomes {
                match o {
                    Outcome::Done => done += 1.0,
                    Outcome::RetryAfter(_) => retried += 1.0,
                    Outcome::Failed => failed += 1.0,
                }
            }
            metrics::emit(
                "send",
                &[("Lane", lane_name)],
                &[
                    ("RecordsDone", done, metrics::Unit::Count),
                    ("RecordsRetried", retried, metrics::Unit::Count),
                    ("RecordsFailed", failed, metrics::Unit::Count),
                ],
            );
            for (r, o) in records.iter().zip(outcomes) {
                match o {
                    Outcome::Done => {}
                    Outcome::RetryAfter(secs) => {
                        if let Some(q) = queue
                            && let Err(e) = q.change_visibility(&r.receipt_handle, secs).await
                        {
                            tracing::warn!(error = %e, record = %r.message_id, "changing visibility failed");
                        }
                        response.fail(&r.message_id);
                    }
                    Outcome::Failed => response.fail(&r.message_id),
                }
            }
        }
        response
    }
}

/// The EMF lines of the messages a batch moved to `failed`: `MessagesFailed` under the
/// lane and the failure's class (`permanent`, `transient_exhausted`, `unknown_outcome`,
/// `dead_letter`, `sender_paused`), one line per class seen (none when nothing failed).
pub fn failure_lines(lane: &str, failures: &FailureTally) -> Vec<String> {
    failures
        .iter()
        .map(|(class, n)| {
            metrics::line(
                "send",
                &[("Lane", lane), ("Class", class)],
                &[("MessagesFailed", *n as f64, metrics::Unit::Count)],
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn failures_are_broken_out_by_class_and_lane() {
        let tally = FailureTally::from([
            ("permanent".to_string(), 2),
            ("transient_exhausted".to_string(), 1),
        ]);
        let lines: Vec<Value> = failure_lines("bulk", &tally)
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["Function"], "send");
        assert_eq!(lines[0]["Lane"], "bulk");
        assert_eq!(lines[0]["Class"], "permanent");
        assert_eq!(lines[0]["MessagesFailed"], 2.0);
        assert_eq!(lines[1]["Class"], "transient_exhausted");
        assert_eq!(lines[1]["MessagesFailed"], 1.0);
        let m = &lines[0]["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(m["Namespace"], "Mailpilot");
        assert_eq!(m["Dimensions"], json!([["Function", "Lane", "Class"]]));
        assert_eq!(
            m["Metrics"],
            json!([{"Name": "MessagesFailed", "Unit": "Count"}])
        );
        assert!(failure_lines("priority", &FailureTally::new()).is_empty());
    }
}
