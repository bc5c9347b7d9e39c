//! The due index and the dispatcher.
//!
//! A message that is due later (a planned broadcast message, a deferred one) has an
//! entry in the due index: partition `due#<epoch minute>#<shard>` (base table, read with
//! strong consistency; never a GSI), sort key `<workspace>#<message>`. The shard is a
//! hash of the message id over [`DUE_SHARDS`] partitions, so a million-message minute is
//! 32 partitions of ~31,000 entries, not one hot one.
//!
//! The dispatcher runs every minute. Its checkpoint item holds `accept_from` (writers
//! never write an entry below it) and `next` (the first minute not yet dispatched, with
//! the shard and cursor reached inside it). For every minute that has fully passed it
//! first raises `accept_from` past the minute, then reads the minute's shards and sends
//! the entries to the send queue in batches of 10. Writers clamp a due time to
//! `accept_from`, and write the entry in a transaction whose condition checks
//! `accept_from` has not passed it ([`defer_actions`]), or re-read the checkpoint after a
//! batch write and re-file entries that landed below it ([`schedule`]). So no entry is
//! ever written into a minute already read, and the dispatcher reads only due minutes:
//! its cost grows with due messages, never with future ones. The index mechanics (keys,
//! checkpoint, the guarded write, the paged scan) are `usecases::minute_index`, shared
//! with the poll index of `usecases::reconcile`.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::error::{AppError, AppResult};
use crate::ports::clock::Clock;
use crate::ports::queue::{Lane, MAX_SEND_BATCH, Queue};
use crate::ports::store::{BatchOp, Item, ItemExt, Store, TxAction, limits, val};

use super::messages::SendRecord;
use super::minute_index::MinuteIndex;
pub use super::minute_index::{Checkpoint, minute_of};

/// Partitions per due minute.
pub const DUE_SHARDS: u32 = 32;

/// The due index.
pub const DUE: MinuteIndex = MinuteIndex {
    prefix: "due",
    checkpoint_pk: "dispatch#checkpoint",
    shards: DUE_SHARDS,
    ttl_days: 7,
    page: 500,
};

/// The shard of a message's due entry.
pub fn shard_of(message_id: &str) -> u32 {
    DUE.shard_of(message_id)
}

pub fn due_pk(minute: i64, shard: u32) -> String {
    DUE.pk(minute, shard)
}

/// One entry of the due index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueEntry {
    pub ws: String,
    pub message_id: String,
    pub lane: Lane,
    pub due: DateTime<Utc>,
}

fn entry_item(e: &DueEntry, minute: i64) -> Item {
    let mut item = DUE.entry(minute, &e.ws, &e.message_id);
    item.insert("lane".into(), val::s(e.lane.as_str()));
    item
}

/// Reads the dispatcher's checkpoint, creating it at the current minute on first use.
pub async fn checkpoint(store: &dyn Store, now: DateTime<Utc>) -> AppResult<Checkpoint> {
    DUE.checkpoint(store, now).await
}

/// The minute an entry due at `due` is filed under: never below `accept_from`.
pub fn clamp(due: DateTime<Utc>, cp: &Checkpoint) -> i64 {
    cp.clamp(due)
}

/// Files entries in the due index (batches of 25), then re-reads the checkpoint and
/// re-files any entry whose minute the dispatcher may have read meanwhile (a duplicate
/// entry is harmless: the sender's claim sends a message once).
pub async fn schedule(
    store: &dyn Store,
    entries: &[DueEntry],
    now: DateTime<Utc>,
) -> AppResult<()> {
    for chunk in entries.chunks(limits::MAX_BATCH_WRITE) {
        let mut cp = checkpoint(store, now).await?;
        let mut pending: Vec<(&DueEntry, i64)> =
            chunk.iter().map(|e| (e, clamp(e.due, &cp))).collect();
        loop {
            store
                .batch_write(
                    pending
                        .iter()
                        .map(|(e, m)| BatchOp::Put(entry_item(e, *m)))
                        .collect(),
                )
                .await?;
            let after = checkpoint(store, now).await?;
            if after.accept_from <= cp.accept_from {
                break;
            }
            pending.retain(|(_, m)| *m < after.accept_from);
            if pending.is_empty() {
                break;
            }
            for (_, m) in pending.iter_mut() {
                *m = after.accept_from;
            }
            cp = after;
        }
    }
    Ok(())
}

/// The transaction actions that file one entry (deferring a message): the entry, and a
/// check that the dispatcher has not closed its minute. Cancelled → read the checkpoint
/// again and retry with the new clamp.
pub fn defer_actions(e: &DueEntry, cp: &Checkpoint) -> Vec<TxAction> {
    let minute = clamp(e.due, cp);
    DUE.file(entry_item(e, minute), minute)
}

/// What a dispatcher run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DispatchReport {
    pub minutes: u64,
    pub queries: u64,
    pub items_read: u64,
    pub enqueued: u64,
}

/// Dispatches every minute that has fully passed, from the checkpoint on, until done or
/// `max_items` entries were read (then the next run goes on from the checkpoint).
pub async fn dispatch(
    store: &dyn Store,
    bulk: &dyn Queue,
    priority: &dyn Queue,
    clock: &dyn Clock,
    max_items: u64,
) -> AppResult<DispatchReport> {
    let mut report = DispatchReport::default();
    let Some(mut scan) = DUE.scan(store, clock.now(), max_items).await? else {
        return Ok(report);
    };
    while let Some(items) = scan.next_page().await? {
        let mut bulk_bodies = Vec::new();
        let mut priority_bodies = Vec::new();
        for item in &items {
            let (Some(ws), Some(msg)) = (item.str_attr("ws"), item.str_attr("msg")) else {
                continue;
            };
            let body = record_body(ws, msg)?;
            match item.str_attr("lane") {
                Some("priority") => priority_bodies.push(body),
                _ => bulk_bodies.push(body),
            }
        }
        for (queue, bodies) in [(bulk, bulk_bodies), (priority, priority_bodies)] {
            for chunk in bodies.chunks(MAX_SEND_BATCH) {
                queue
                    .send_batch(chunk.to_vec())
                    .await
                    .map_err(|e| AppError::internal(format!("enqueueing: {e}")))?;
                report.enqueued += chunk.len() as u64;
            }
        }
    }
    report.minutes = scan.minutes;
    report.queries = scan.queries;
    report.items_read = scan.items_read;
    Ok(report)
}

/// The send-queue record of a message the sender loads from the store.
fn record_body(ws: &str, msg: &str) -> AppResult<String> {
    serde_json::to_string(&SendRecord {
        ws: ws.to_string(),
        msg: msg.to_string(),
        content: None,
        render: None,
    })
    .map_err(AppError::internal)
}

/// Hands messages that are due already straight to `queue` (batches of 10), as the
/// dispatcher would a minute later: no due entry is written for them. The sender's
/// claim makes a record enqueued twice (a re-planned page) harmless.
pub async fn enqueue_now(queue: &dyn Queue, entries: &[DueEntry]) -> AppResult<u64> {
    let bodies = entries
        .iter()
        .map(|e| record_body(&e.ws, &e.message_id))
        .collect::<AppResult<Vec<_>>>()?;
    for chunk in bodies.chunks(MAX_SEND_BATCH) {
        queue
            .send_batch(chunk.to_vec())
            .await
            .map_err(|e| AppError::internal(format!("enqueueing: {e}")))?;
    }
    Ok(bodies.len() as u64)
}

/// When the next due entry may exist: the start of the minute after the checkpoint's
/// `next` (for a test driver that advances a manual clock).
pub async fn next_dispatch_at(store: &dyn Store, now: DateTime<Utc>) -> AppResult<DateTime<Utc>> {
    DUE.next_run_at(store, now).await
}
