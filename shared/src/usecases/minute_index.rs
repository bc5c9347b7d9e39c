//! A minute-sharded index with a checkpoint: what the due index (`usecases::dispatch`)
//! and the poll index (`usecases::reconcile`) are built on.
//!
//! Entries live in the base table under `<prefix>#<epoch minute>#<shard>` (the shard a
//! hash of the message id, so a busy minute is several partitions, not one hot one),
//! sort key `<workspace>#<message>`, and are read with strong consistency (never a GSI).
//! The index's checkpoint item holds `accept_from` (no entry is ever written below it)
//! and `next` (the first minute not fully read, with the shard and cursor reached inside
//! it). A run first raises `accept_from` past every minute that has fully passed, then
//! reads those minutes page by page ([`Scan`]), saving its place after each page. A
//! writer files an entry at its minute clamped to `accept_from`, in a transaction whose
//! ConditionCheck fails if a run has closed that minute meanwhile ([`MinuteIndex::file`])
//! or re-reads the checkpoint after a batch write and re-files what landed below it. So
//! no entry is written into a minute already read, and a run's cost grows with the
//! entries that came due, never with future ones.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{AppError, AppResult};
use crate::ports::store::{Cond, Item, Key, Query, Store, StoreError, TTL, TxAction, Update, val};

/// The minute a time falls in (minutes since the epoch).
pub fn minute_of(t: DateTime<Utc>) -> i64 {
    t.timestamp().div_euclid(60)
}

/// The start of a minute.
pub fn minute_start(m: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(m * 60, 0).unwrap_or_default()
}

/// FNV-1a of a message id: stable across processes and versions.
fn hash(message_id: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in message_id.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// A run's progress through an index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// No entry is accepted below this minute.
    pub accept_from: i64,
    /// The first minute not fully read.
    pub next: i64,
    /// Inside `next`: the shard reached and the cursor in it.
    #[serde(default)]
    pub shard: u32,
    #[serde(default)]
    pub cursor: Option<String>,
}

impl Checkpoint {
    /// The minute an entry due at `due` is filed under: never below `accept_from`.
    pub fn clamp(&self, due: DateTime<Utc>) -> i64 {
        minute_of(due).max(self.accept_from)
    }
}

/// One index: its key prefix, checkpoint, shards, entry lifetime and page size.
#[derive(Debug)]
pub struct MinuteIndex {
    /// Entries are under `<prefix>#<minute>#<shard>`.
    pub prefix: &'static str,
    /// The checkpoint's partition key (sort key `checkpoint`).
    pub checkpoint_pk: &'static str,
    pub shards: u32,
    /// Entries are kept this long after their minute (then TTL removes them).
    pub ttl_days: i64,
    /// Entries read per query page.
    pub page: usize,
}

impl MinuteIndex {
    pub fn pk(&self, minute: i64, shard: u32) -> String {
        format!("{}#{minute}#{shard}", self.prefix)
    }

    /// The shard of a message's entries.
    pub fn shard_of(&self, message_id: &str) -> u32 {
        hash(message_id) % self.shards
    }

    pub fn checkpoint_key(&self) -> Key {
        Key::new(self.checkpoint_pk, "checkpoint")
    }

    /// An entry's item at `minute`: keys, `ws`, `msg` and the TTL; the caller adds its
    /// own attributes.
    pub fn entry(&self, minute: i64, ws: &str, msg: &str) -> Item {
        let mut item = Item::new();
        item.insert("pk".into(), val::s(self.pk(minute, self.shard_of(msg))));
        item.insert("sk".into(), val::s(format!("{ws}#{msg}")));
        item.insert("ws".into(), val::s(ws));
        item.insert("msg".into(), val::s(msg));
        item.insert(
            TTL.into(),
            val::n((minute_start(minute) + Duration::days(self.ttl_days)).timestamp()),
        );
        item
    }

    /// The transaction actions that file `item` (made by [`Self::entry`] at `minute`):
    /// the put, and a check that no run has closed the minute. Cancelled → read the
    /// checkpoint again and file at the new clamp.
    pub fn file(&self, item: Item, minute: i64) -> Vec<TxAction> {
        vec![
            TxAction::Put { item, cond: None },
            TxAction::Check {
                key: self.checkpoint_key(),
                cond: Cond::le("accept_from", val::n(minute)),
            },
        ]
    }

    /// Reads the checkpoint, creating it at the current minute on first use.
    pub async fn checkpoint(&self, store: &dyn Store, now: DateTime<Utc>) -> AppResult<Checkpoint> {
        if let Some(item) = store.get(&self.checkpoint_key()).await? {
            return super::from_item(item);
        }
        let cp = Checkpoint {
            accept_from: minute_of(now),
            next: minute_of(now),
            shard: 0,
            cursor: None,
        };
        let created = store
            .put(
                super::to_item(self.checkpoint_pk, "checkpoint", &cp)?,
                Some(Cond::ItemNotExists),
            )
            .await;
        match created {
            Ok(()) => Ok(cp),
            Err(StoreError::ConditionFailed) => {
                let item = store.get(&self.checkpoint_key()).await?.ok_or_else(|| {
                    AppError::internal(format!("the {} checkpoint vanished", self.prefix))
                })?;
                super::from_item(item)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// When the next entry may be due: the start of the minute after the checkpoint's
    /// `next` (for a driver that advances a manual clock).
    pub async fn next_run_at(
        &self,
        store: &dyn Store,
        now: DateTime<Utc>,
    ) -> AppResult<DateTime<Utc>> {
        let cp = self.checkpoint(store, now).await?;
        Ok(minute_start(cp.next + 1))
    }

    /// Starts a run over every minute that has fully passed: closes them to writers,
    /// then reads them page by page. `None`: nothing has come due, or another run holds
    /// the minutes.
    pub async fn scan<'a>(
        &'a self,
        store: &'a dyn Store,
        now: DateTime<Utc>,
        max_items: u64,
    ) -> AppResult<Option<Scan<'a>>> {
        let now_minute = minute_of(now);
        let mut cp = self.checkpoint(store, now).await?;
        if cp.next >= now_minute {
            return Ok(None);
        }
        if cp.accept_from < now_minute {
            let closed = store
                .update(
                    &self.checkpoint_key(),
                    Update::new().set("accept_from", val::n(now_minute)),
                    Some(Cond::eq("accept_from", val::n(cp.accept_from))),
                )
                .await;
            match closed {
                Ok(_) => cp.accept_from = now_minute,
                Err(StoreError::ConditionFailed) => return Ok(None), // another run is on it
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Some(Scan {
            index: self,
            store,
            cp,
            now_minute,
            max_items,
            handed_out: None,
            minutes: 0,
            queries: 0,
            items_read: 0,
        }))
    }
}

/// A run through the passed minutes of an index. Each [`Scan::next_page`] first moves
/// the checkpoint past the page handed out before (so a run that fails or stops while
/// handling a page reads it again next time: at least once), then reads the next one.
pub struct Scan<'a> {
    index: &'a MinuteIndex,
    store: &'a dyn Store,
    cp: Checkpoint,
    now_minute: i64,
    max_items: u64,
    /// The cursor after the page handed out last, once it has been handed out.
    handed_out: Option<Option<String>>,
    /// Minutes fully read.
    pub minutes: u64,
    pub queries: u64,
    pub items_read: u64,
}

impl Scan<'_> {
    /// The minutes closed to writers: entries are filed at this minute or later.
    pub fn accept_from(&self) -> i64 {
        self.cp.accept_from
    }

    /// The next page of entries; `None` when every passed minute is read, or when
    /// `max_items` entries were read (the next run goes on from the checkpoint).
    pub async fn next_page(&mut self) -> AppResult<Option<Vec<Item>>> {
        if let Some(cursor) = self.handed_out.take() {
            self.cp.cursor = cursor;
            if self.cp.cursor.is_some() {
                self.save().await?;
                if self.items_read >= self.max_items {
                    return Ok(None);
                }
            } else {
                self.cp.shard += 1;
                if self.cp.shard >= self.index.shards {
                    self.cp.next += 1;
                    self.cp.shard = 0;
                    self.minutes += 1;
                    self.save().await?;
                    if self.items_read >= self.max_items {
                        return Ok(None);
                    }
                }
            }
        }
        if self.cp.next >= self.now_minute {
            return Ok(None);
        }
        let page = self
            .store
            .query(
                Query::partition(self.index.pk(self.cp.next, self.cp.shard))
                    .limit(self.index.page)
                    .cursor(self.cp.cursor.clone()),
            )
            .await?;
        self.queries += 1;
        self.items_read += page.items.len() as u64;
        self.handed_out = Some(page.cursor);
        Ok(Some(page.items))
    }

    async fn save(&self) -> AppResult<()> {
        let cp = &self.cp;
        let mut update = Update::new()
            .set("next", val::n(cp.next))
            .set("shard", val::n(i64::from(cp.shard)));
        update = match &cp.cursor {
            Some(c) => update.set("cursor", val::s(c)),
            None => update.remove("cursor"),
        };
        self.store
            .update(&self.index.checkpoint_key(), update, None)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INDEX: MinuteIndex = MinuteIndex {
        prefix: "test",
        checkpoint_pk: "test#checkpoint",
        shards: 32,
        ttl_days: 7,
        page: 10,
    };

    #[test]
    fn shards_spread_and_are_stable() {
        let mut counts = vec![0u32; INDEX.shards as usize];
        for i in 0..32_000 {
            counts[INDEX.shard_of(&format!("msg_{i:026}")) as usize] += 1;
        }
        assert!(counts.iter().all(|c| (700..1300).contains(c)), "{counts:?}");
        assert_eq!(INDEX.shard_of("msg_x"), INDEX.shard_of("msg_x"));
    }

    #[test]
    fn a_due_time_before_the_checkpoint_is_clamped() {
        let cp = Checkpoint {
            accept_from: 100,
            next: 100,
            shard: 0,
            cursor: None,
        };
        assert_eq!(cp.clamp(minute_start(50)), 100);
        assert_eq!(cp.clamp(minute_start(150) + Duration::seconds(30)), 150);
    }
}
