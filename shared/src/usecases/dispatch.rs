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
//! `accept_from` has not passed it ([`defer_action`]), or re-read the checkpoint after a
//! batch write and re-file entries that landed below it ([`schedule`]). So no entry is
//! ever written into a minute already read, and the dispatcher reads only due minutes:
//! its cost grows with due messages, never with future ones.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{AppError, AppResult};
use crate::ports::clock::Clock;
use crate::ports::queue::{Lane, MAX_SEND_BATCH, Queue};
use crate::ports::store::{
    BatchOp, Cond, Item, ItemExt, Key, Query, Store, StoreError, TTL, TxAction, Update, limits, val,
};

use super::messages::SendRecord;

/// Partitions per due minute.
pub const DUE_SHARDS: u32 = 32;
/// Due entries are kept this long after their minute (then TTL removes them).
const DUE_TTL_DAYS: i64 = 7;
/// Entries read per query page.
const PAGE: usize = 500;

const CHECKPOINT_PK: &str = "dispatch#checkpoint";
const CHECKPOINT_SK: &str = "checkpoint";

fn checkpoint_key() -> Key {
    Key::new(CHECKPOINT_PK, CHECKPOINT_SK)
}

/// The minute a time falls in (minutes since the epoch).
pub fn minute_of(t: DateTime<Utc>) -> i64 {
    t.timestamp().div_euclid(60)
}

fn minute_start(m: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(m * 60, 0).unwrap_or_default()
}

/// The shard of a message's due entry.
pub fn shard_of(message_id: &str) -> u32 {
    // FNV-1a: stable across processes and versions.
    let mut h: u32 = 0x811c_9dc5;
    for b in message_id.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % DUE_SHARDS
}

pub fn due_pk(minute: i64, shard: u32) -> String {
    format!("due#{minute}#{shard}")
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
    let mut item = Item::new();
    item.insert("pk".into(), val::s(due_pk(minute, shard_of(&e.message_id))));
    item.insert("sk".into(), val::s(format!("{}#{}", e.ws, e.message_id)));
    item.insert("ws".into(), val::s(&e.ws));
    item.insert("msg".into(), val::s(&e.message_id));
    item.insert("lane".into(), val::s(e.lane.as_str()));
    item.insert(
        TTL.into(),
        val::n((minute_start(minute) + Duration::days(DUE_TTL_DAYS)).timestamp()),
    );
    item
}

/// The dispatcher's progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// No due entry is accepted below this minute.
    pub accept_from: i64,
    /// The first minute not fully dispatched.
    pub next: i64,
    /// Inside `next`: the shard reached and the cursor in it.
    #[serde(default)]
    pub shard: u32,
    #[serde(default)]
    pub cursor: Option<String>,
}

/// Reads the checkpoint, creating it at the current minute on first use.
pub async fn checkpoint(store: &dyn Store, now: DateTime<Utc>) -> AppResult<Checkpoint> {
    if let Some(item) = store.get(&checkpoint_key()).await? {
        return super::from_item(item);
    }
    let cp = Checkpoint {
        accept_from: minute_of(now),
        next: minute_of(now),
        shard: 0,
        cursor: None,
    };
    match store
        .put(
            super::to_item(CHECKPOINT_PK, CHECKPOINT_SK, &cp)?,
            Some(Cond::ItemNotExists),
        )
        .await
    {
        Ok(()) => Ok(cp),
        Err(StoreError::ConditionFailed) => {
            let item = store
                .get(&checkpoint_key())
                .await?
                .ok_or_else(|| AppError::internal("the checkpoint vanished"))?;
            super::from_item(item)
        }
        Err(e) => Err(e.into()),
    }
}

/// The minute an entry due at `due` is filed under: never below `accept_from`.
pub fn clamp(due: DateTime<Utc>, cp: &Checkpoint) -> i64 {
    minute_of(due).max(cp.accept_from)
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
    vec![
        TxAction::Put {
            item: entry_item(e, minute),
            cond: None,
        },
        TxAction::Check {
            key: checkpoint_key(),
            cond: Cond::le("accept_from", val::n(minute)),
        },
    ]
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
    let now_minute = minute_of(clock.now());
    let mut cp = checkpoint(store, clock.now()).await?;
    if cp.next >= now_minute {
        return Ok(report);
    }
    // Close every passed minute to writers before reading any of them.
    if cp.accept_from < now_minute {
        let updated = store
            .update(
                &checkpoint_key(),
                Update::new().set("accept_from", val::n(now_minute)),
                Some(Cond::eq("accept_from", val::n(cp.accept_from))),
            )
            .await;
        match updated {
            Ok(_) => cp.accept_from = now_minute,
            Err(StoreError::ConditionFailed) => return Ok(report), // another run is on it
            Err(e) => return Err(e.into()),
        }
    }
    while cp.next < now_minute {
        while cp.shard < DUE_SHARDS {
            loop {
                let page = store
                    .query(
                        Query::partition(due_pk(cp.next, cp.shard))
                            .limit(PAGE)
                            .cursor(cp.cursor.clone()),
                    )
                    .await?;
                report.queries += 1;
                report.items_read += page.items.len() as u64;
                let mut bulk_bodies = Vec::new();
                let mut priority_bodies = Vec::new();
                for item in &page.items {
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
                cp.cursor = page.cursor;
                if cp.cursor.is_none() {
                    break;
                }
                save(store, &cp).await?;
                if report.items_read >= max_items {
                    return Ok(report);
                }
            }
            cp.shard += 1;
        }
        cp.next += 1;
        cp.shard = 0;
        cp.cursor = None;
        report.minutes += 1;
        save(store, &cp).await?;
        if report.items_read >= max_items {
            break;
        }
    }
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

async fn save(store: &dyn Store, cp: &Checkpoint) -> AppResult<()> {
    let mut update = Update::new()
        .set("next", val::n(cp.next))
        .set("shard", val::n(i64::from(cp.shard)));
    update = match &cp.cursor {
        Some(c) => update.set("cursor", val::s(c)),
        None => update.remove("cursor"),
    };
    store.update(&checkpoint_key(), update, None).await?;
    Ok(())
}

/// When the next due entry may exist: the start of the minute after the checkpoint's
/// `next` (for a test driver that advances a manual clock).
pub async fn next_dispatch_at(store: &dyn Store, now: DateTime<Utc>) -> AppResult<DateTime<Utc>> {
    let cp = checkpoint(store, now).await?;
    Ok(minute_start(cp.next + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_spread_and_are_stable() {
        let mut counts = vec![0u32; DUE_SHARDS as usize];
        for i in 0..32_000 {
            counts[shard_of(&format!("msg_{i:026}")) as usize] += 1;
        }
        assert!(counts.iter().all(|c| (700..1300).contains(c)), "{counts:?}");
        assert_eq!(shard_of("msg_x"), shard_of("msg_x"));
    }

    #[test]
    fn a_due_time_before_the_checkpoint_is_clamped() {
        let cp = Checkpoint {
            accept_from: 100,
            next: 100,
            shard: 0,
            cursor: None,
        };
        assert_eq!(clamp(minute_start(50), &cp), 100);
        assert_eq!(clamp(minute_start(150) + Duration::seconds(30), &cp), 150);
    }
}
