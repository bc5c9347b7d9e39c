//! The runner's scheduler: one-time schedules kept in the store (partition
//! `sched#local`, sort key = schedule name), so they survive a restart. The runner's
//! timer calls [`StoreScheduler::take_due`] every second and hands each body to the
//! planning queue; a schedule is deleted once delivered (EventBridge Scheduler's
//! `ActionAfterCompletion: DELETE`).

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::error::{AppError, AppResult};
use crate::ports::queue::Queue;
use crate::ports::scheduler::Scheduler;
use crate::ports::store::{ItemExt, Key, Query, Store, val};

const PK: &str = "sched#local";

pub struct StoreScheduler {
    store: Arc<dyn Store>,
}

impl StoreScheduler {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// Delivers every schedule due at `now` to `queue`, deleting each after delivery.
    /// Returns how many fired.
    pub async fn take_due(&self, now: DateTime<Utc>, queue: &dyn Queue) -> AppResult<usize> {
        let mut fired = 0;
        let mut cursor = None;
        loop {
            let page = self
                .store
                .query(Query::partition(PK).limit(100).cursor(cursor))
                .await?;
            for item in &page.items {
                let (Some(name), Some(at), Some(body)) = (
                    item.str_attr("sk"),
                    item.num_attr("at"),
                    item.str_attr("body"),
                ) else {
                    continue;
                };
                if at > now.timestamp() {
                    continue;
                }
                queue
                    .send_batch(vec![body.to_string()])
                    .await
                    .map_err(|e| AppError::internal(format!("firing a schedule: {e}")))?;
                self.store.delete(&Key::new(PK, name), None).await?;
                fired += 1;
            }
            cursor = page.cursor;
            if cursor.is_none() {
                return Ok(fired);
            }
        }
    }

    /// The pending schedules' names (tests).
    pub async fn pending(&self) -> AppResult<Vec<String>> {
        let page = self.store.query(Query::partition(PK).limit(1000)).await?;
        Ok(page
            .items
            .iter()
            .filter_map(|i| i.str_attr("sk").map(str::to_string))
            .collect())
    }
}

#[async_trait]
impl Scheduler for StoreScheduler {
    async fn create_at(&self, name: &str, at: DateTime<Utc>, body: &str) -> AppResult<()> {
        let mut item = crate::ports::store::Item::new();
        item.insert("pk".into(), val::s(PK));
        item.insert("sk".into(), val::s(name));
        item.insert("at".into(), val::n(at.timestamp()));
        item.insert("body".into(), val::s(body));
        self.store.put(item, None).await?;
        Ok(())
    }

    async fn delete(&self, name: &str) -> AppResult<()> {
        self.store.delete(&Key::new(PK, name), None).await?;
        Ok(())
    }
}
