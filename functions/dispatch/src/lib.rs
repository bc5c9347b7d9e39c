//! The dispatch function: a Scheduler event (every minute; its content does not
//! matter) → `usecases::dispatch::dispatch` → the run's report.

use mailpilot_shared::error::AppResult;
use mailpilot_shared::ports::clock::Clock;
use mailpilot_shared::ports::queue::Queue;
use mailpilot_shared::ports::store::Store;
use mailpilot_shared::usecases::dispatch::{self, DispatchReport};

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
