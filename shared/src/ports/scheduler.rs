//! The scheduler port: one-time schedules that hand a body to the planning queue at a
//! time (a scheduled campaign's start). In AWS an EventBridge Scheduler `at()` schedule
//! whose target is the planning queue; locally a store-backed timer the runner polls.
//! Firing twice must be harmless: the planner's state checks make the second a no-op.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::error::AppResult;

#[async_trait]
pub trait Scheduler: Send + Sync {
    /// Creates the schedule `name` that delivers `body` to the planning queue at `at`
    /// (UTC). An existing schedule of that name is replaced.
    async fn create_at(&self, name: &str, at: DateTime<Utc>, body: &str) -> AppResult<()>;

    /// Deletes the schedule (a missing one is fine: it fired and deleted itself, or it
    /// was never created).
    async fn delete(&self, name: &str) -> AppResult<()>;
}
