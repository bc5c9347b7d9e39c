//! The dispatch function, two entry points in one binary:
//! - a Scheduler event (every minute; its content does not matter) →
//!   `usecases::dispatch::dispatch`, then the status poller (`usecases::reconcile`, for
//!   connections without webhooks) → the runs' reports;
//! - an SQS batch from the **planning queue** (a campaign's scheduled start from its
//!   EventBridge Scheduler `at()` schedule, a launch, the next page the planner queued, a
//!   cancel/resume/retry sweep) → `usecases::planner::handle_batch` → a partial batch
//!   response (`ReportBatchItemFailures`) naming the records to retry.
//!
//! The planner re-enqueues the next page on the queue it is fed from: a deliberate
//! Lambda → SQS → Lambda loop (template.yaml: `PlanFunction`, `RecursiveLoop: Allow`).

use mailpilot_shared::error::AppResult;
use mailpilot_shared::lambda_events;
pub use mailpilot_shared::lambda_events::{BatchResponse, ItemFailure, SqsEvent, SqsRecord};
use mailpilot_shared::ports::clock::Clock;
use mailpilot_shared::ports::queue::Queue;
use mailpilot_shared::ports::store::Store;
use mailpilot_shared::usecases::dispatch::{self, DispatchReport};
use mailpilot_shared::usecases::planner::{self, PlannerDeps};
use mailpilot_shared::usecases::reconcile::{self, ReconcileDeps, ReconcileReport};
use mailpilot_shared::usecases::send::{Incoming, Outcome};

/// Entries read per invocation at most (the next run goes on from the checkpoint): at
/// 500 per page and 10 per SendMessageBatch this fits the function's 60 s.
pub const MAX_ITEMS_PER_RUN: u64 = 200_000;

pub async fn handle(
    _event: serde_json::Value,
    store: &dyn Store,
    bulk: &dyn Queue,
    priority: &dyn Queue,
    clock: &dyn Clock,
) -> AppResult<DispatchReport> {
    let report = dispatch::dispatch(store, bulk, priority, clock, MAX_ITEMS_PER_RUN).await?;
    tracing::info!(?report, "dispatched");
    Ok(report)
}

/// Poll entries read per invocation at most (each at most one HTTPS call to the provider; the next
/// run goes on from the poll checkpoint), so the dispatcher and the poller fit the
/// function's 60 s together.
pub const MAX_POLLS_PER_RUN: u64 = 200;

/// The minute's status poller run, after the dispatcher's.
pub async fn reconcile(deps: &ReconcileDeps<'_>) -> AppResult<ReconcileReport> {
    let report = reconcile::run(deps, MAX_POLLS_PER_RUN).await?;
    tracing::info!(?report, "polled");
    Ok(report)
}

/// Is this event an SQS batch (the planning queue) rather than the minute's schedule?
pub fn is_sqs(event: &serde_json::Value) -> bool {
    lambda_events::is_sqs_batch(event)
}

/// Plans the records of a planning-queue batch. A record that does not parse is dropped
/// (logged); a failed step is reported so SQS redelivers it after the visibility
/// timeout (and dead-letters it after `maxReceiveCount`). Every step is idempotent:
/// a redelivered or duplicated record writes nothing twice.
pub async fn plan(event: serde_json::Value, deps: &PlannerDeps<'_>) -> BatchResponse {
    let event: SqsEvent = match serde_json::from_value(event) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "a planning event that is not an SQS batch");
            return BatchResponse::default();
        }
    };
    let records: Vec<Incoming> = event
        .records
        .iter()
        .map(|r| Incoming {
            id: r.message_id.clone(),
            body: r.body.clone(),
        })
        .collect();
    let outcomes = planner::handle_batch(deps, &records).await;
    BatchResponse::failing(
        records
            .iter()
            .zip(outcomes)
            .filter(|(_, o)| !matches!(o, Outcome::Done))
            .map(|(r, _)| r.id.clone()),
    )
}
