//! An in-process queue with SQS's semantics: a received record stays invisible for the
//! visibility timeout and comes back unless deleted; every receive counts; past
//! `max_receive` the record moves to the dead-letter queue instead of being delivered.
//!
//! Time comes from a [`Clock`], so a test with a manual clock drains retries and
//! expired visibility without sleeping. Optionally persisted (a redb file: sends and
//! deletes are durable, so records survive a `SIGKILL`; after a restart every record
//! left is visible at once, as after an expired visibility timeout, with its receive
//! count starting over). A fault mode delivers a share of the records twice, as SQS's
//! at-least-once delivery may.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use rand::Rng;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::ports::clock::Clock;
use crate::ports::queue::{MAX_SEND_BATCH, MAX_VISIBILITY_SECS, Queue, QueueError, Received};

struct Record {
    body: String,
    visible_at: i64,
    receive_count: u32,
}

#[derive(Default)]
struct State {
    next_id: u64,
    records: HashMap<u64, Record>,
    /// (visible at, epoch millis; id) of every record.
    by_time: BTreeMap<(i64, u64), ()>,
}

/// Settings of one local queue.
#[derive(Debug, Clone)]
pub struct QueueOptions {
    pub visibility_timeout_secs: u64,
    /// Receives before a record moves to the dead-letter queue (SQS `maxReceiveCount`).
    pub max_receive: u32,
    /// Share of sent records delivered twice (fault injection; 0 in production).
    pub duplicate_share: f64,
}

impl Default for QueueOptions {
    fn default() -> Self {
        Self {
            visibility_timeout_secs: 180,
            max_receive: 12,
            duplicate_share: 0.0,
        }
    }
}

pub struct LocalQueue {
    name: String,
    state: Mutex<State>,
    clock: Arc<dyn Clock>,
    options: QueueOptions,
    dead_letters: Option<Arc<LocalQueue>>,
    persist: Option<Arc<Database>>,
    notify: tokio::sync::Notify,
}

fn table(name: &str) -> TableDefinition<'_, u64, &'static str> {
    TableDefinition::new(name)
}

fn unavailable(e: impl std::fmt::Display) -> QueueError {
    QueueError::unavailable(e.to_string())
}

impl LocalQueue {
    /// A queue in memory only.
    pub fn new(
        name: &str,
        clock: Arc<dyn Clock>,
        options: QueueOptions,
        dead_letters: Option<Arc<LocalQueue>>,
    ) -> Self {
        Self {
            name: name.to_string(),
            state: Mutex::new(State::default()),
            clock,
            options,
            dead_letters,
            persist: None,
            notify: tokio::sync::Notify::new(),
        }
    }

    /// A queue persisted in `db` (table `name`), loading the records left there.
    pub fn persisted(
        name: &str,
        db: Arc<Database>,
        clock: Arc<dyn Clock>,
        options: QueueOptions,
        dead_letters: Option<Arc<LocalQueue>>,
    ) -> Result<Self, QueueError> {
        let mut q = Self::new(name, clock, options, dead_letters);
        let now = q.clock.now().timestamp_millis();
        {
            let tx = db.begin_write().map_err(unavailable)?;
            tx.open_table(table(name)).map_err(unavailable)?;
            tx.commit().map_err(unavailable)?;
        }
        let read = db.begin_read().map_err(unavailable)?;
        let t = read.open_table(table(name)).map_err(unavailable)?;
        let state = q.state.get_mut().unwrap_or_else(|e| e.into_inner());
        for row in t.iter().map_err(unavailable)? {
            let (id, body) = row.map_err(unavailable)?;
            let id = id.value();
            state.records.insert(
                id,
                Record {
                    body: body.value().to_string(),
                    visible_at: now,
                    receive_count: 0,
                },
            );
            state.by_time.insert((now, id), ());
            state.next_id = state.next_id.max(id + 1);
        }
        drop(t);
        q.persist = Some(db);
        Ok(q)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn dead_letters(&self) -> Option<&Arc<LocalQueue>> {
        self.dead_letters.as_ref()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn write<F>(&self, f: F) -> Result<(), QueueError>
    where
        F: FnOnce(&mut redb::Table<'_, u64, &'static str>) -> Result<(), redb::StorageError>,
    {
        if let Some(db) = &self.persist {
            let tx = db.begin_write().map_err(unavailable)?;
            {
                let mut t = tx.open_table(table(&self.name)).map_err(unavailable)?;
                f(&mut t).map_err(unavailable)?;
            }
            tx.commit().map_err(unavailable)?;
        }
        Ok(())
    }

    /// Sends bodies (any number; the port's batch limit is checked in `send_batch`).
    fn push(&self, bodies: Vec<String>) -> Result<(), QueueError> {
        let now = self.clock.now().timestamp_millis();
        let mut copies = Vec::with_capacity(bodies.len());
        {
            let mut rng = rand::rng();
            for body in bodies {
                let twice = self.options.duplicate_share > 0.0
                    && rng.random_bool(self.options.duplicate_share.min(1.0));
                if twice {
                    copies.push(body.clone());
                }
                copies.push(body);
            }
        }
        let mut state = self.lock();
        let first = state.next_id;
        state.next_id += copies.len() as u64;
        self.write(|t| {
            for (i, body) in copies.iter().enumerate() {
                t.insert(first + i as u64, body.as_str())?;
            }
            Ok(())
        })?;
        for (i, body) in copies.into_iter().enumerate() {
            let id = first + i as u64;
            state.records.insert(
                id,
                Record {
                    body,
                    visible_at: now,
                    receive_count: 0,
                },
            );
            state.by_time.insert((now, id), ());
        }
        drop(state);
        self.notify.notify_waiters();
        Ok(())
    }

    /// ReceiveMessage: up to `max` visible records, each hidden for the visibility
    /// timeout. Records received more than `max_receive` times move to the DLQ.
    pub fn receive(&self, max: usize) -> Result<Vec<Received>, QueueError> {
        let now = self.clock.now().timestamp_millis();
        let hide = now + (self.options.visibility_timeout_secs as i64) * 1000;
        let mut out = Vec::new();
        let mut to_dlq = Vec::new();
        let mut state = self.lock();
        while out.len() < max {
            let Some((&(at, id), _)) = state.by_time.iter().next() else {
                break;
            };
            if at > now {
                break;
            }
            state.by_time.remove(&(at, id));
            let Some(rec) = state.records.get_mut(&id) else {
                continue;
            };
            rec.receive_count += 1;
            if rec.receive_count > self.options.max_receive && self.dead_letters.is_some() {
                if let Some(rec) = state.records.remove(&id) {
                    to_dlq.push((id, rec.body));
                }
                continue;
            }
            rec.visible_at = hide;
            out.push(Received {
                id: format!("{}-{id}", self.name),
                receipt: format!("{id}:{}", rec.receive_count),
                body: rec.body.clone(),
                receive_count: rec.receive_count,
            });
            state.by_time.insert((hide, id), ());
        }
        drop(state);
        if let Some(dlq) = &self.dead_letters
            && !to_dlq.is_empty()
        {
            dlq.push(to_dlq.iter().map(|(_, b)| b.clone()).collect())?;
            self.write(|t| {
                for (id, _) in &to_dlq {
                    t.remove(*id)?;
                }
                Ok(())
            })?;
        }
        Ok(out)
    }

    fn parse_receipt(receipt: &str) -> Result<(u64, u32), QueueError> {
        let (id, count) = receipt.split_once(':').ok_or(QueueError::BadReceipt)?;
        Ok((
            id.parse().map_err(|_| QueueError::BadReceipt)?,
            count.parse().map_err(|_| QueueError::BadReceipt)?,
        ))
    }

    /// DeleteMessage. A stale receipt (the record was received again since) is ignored,
    /// as SQS may.
    pub fn delete(&self, receipt: &str) -> Result<(), QueueError> {
        let (id, count) = Self::parse_receipt(receipt)?;
        let mut state = self.lock();
        let Some(rec) = state.records.get(&id) else {
            return Ok(());
        };
        if rec.receive_count != count {
            return Ok(());
        }
        let at = rec.visible_at;
        self.write(|t| t.remove(id).map(|_| ()))?;
        state.records.remove(&id);
        state.by_time.remove(&(at, id));
        Ok(())
    }

    /// Records not yet deleted (visible or not).
    pub fn len(&self) -> usize {
        self.lock().records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// When the next record becomes visible (`None`: the queue is empty).
    pub fn next_visible_at(&self) -> Option<DateTime<Utc>> {
        let state = self.lock();
        state
            .by_time
            .keys()
            .next()
            .and_then(|(at, _)| DateTime::from_timestamp_millis(*at))
    }

    /// Woken (`notify_waiters`) whenever records are sent; enable a `notified()` future
    /// before looking at the queue so no send is missed.
    pub fn notify(&self) -> &tokio::sync::Notify {
        &self.notify
    }
}

#[async_trait]
impl Queue for LocalQueue {
    async fn send_batch(&self, bodies: Vec<String>) -> Result<(), QueueError> {
        if bodies.len() > MAX_SEND_BATCH {
            return Err(QueueError::BatchTooLarge(bodies.len()));
        }
        self.push(bodies)
    }

    async fn change_visibility(&self, receipt: &str, secs: u64) -> Result<(), QueueError> {
        let (id, count) = Self::parse_receipt(receipt)?;
        let at = (self.clock.now() + Duration::seconds(secs.min(MAX_VISIBILITY_SECS) as i64))
            .timestamp_millis();
        let mut state = self.lock();
        let Some(rec) = state.records.get_mut(&id) else {
            return Err(QueueError::BadReceipt);
        };
        if rec.receive_count != count {
            return Err(QueueError::BadReceipt);
        }
        let old = rec.visible_at;
        rec.visible_at = at;
        state.by_time.remove(&(old, id));
        state.by_time.insert((at, id), ());
        Ok(())
    }
}

/// Opens (creating) the redb file that persists the runner's queues.
pub fn open_queue_db(path: &Path) -> Result<Arc<Database>, QueueError> {
    // The queues are small: a 16 MiB page cache instead of redb's 1 GiB default.
    redb::Builder::new()
        .set_cache_size(16 * 1024 * 1024)
        .create(path)
        .map(Arc::new)
        .map_err(unavailable)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::clock::ManualClock;

    fn clock() -> Arc<ManualClock> {
        Arc::new(ManualClock::new(Utc::now()))
    }

    #[tokio::test]
    async fn a_received_record_comes_back_after_the_visibility_timeout() {
        let c = clock();
        let q = LocalQueue::new("q", c.clone(), QueueOptions::default(), None);
        q.send_batch(vec!["a".into()]).await.unwrap();
        let got = q.receive(10).unwrap();
        assert_eq!(got.len(), 1);
        assert!(
            q.receive(10).unwrap().is_empty(),
            "invisible while received"
        );
        c.advance(Duration::seconds(181));
        let again = q.receive(10).unwrap();
        assert_eq!(again[0].receive_count, 2);
        // The first receipt is stale now: deleting with it does nothing.
        q.delete(&got[0].receipt).unwrap();
        assert_eq!(q.len(), 1);
        q.delete(&again[0].receipt).unwrap();
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn change_visibility_delays_and_max_receive_moves_to_the_dlq() {
        let c = clock();
        let dlq = Arc::new(LocalQueue::new(
            "dlq",
            c.clone(),
            QueueOptions::default(),
            None,
        ));
        let opts = QueueOptions {
            max_receive: 2,
            ..QueueOptions::default()
        };
        let q = LocalQueue::new("q", c.clone(), opts, Some(dlq.clone()));
        q.send_batch(vec!["x".into()]).await.unwrap();
        let r = q.receive(1).unwrap().remove(0);
        q.change_visibility(&r.receipt, 30).await.unwrap();
        c.advance(Duration::seconds(29));
        assert!(q.receive(1).unwrap().is_empty());
        c.advance(Duration::seconds(1));
        let r = q.receive(1).unwrap().remove(0);
        assert_eq!(r.receive_count, 2);
        q.change_visibility(&r.receipt, 0).await.unwrap();
        assert!(
            q.receive(1).unwrap().is_empty(),
            "third receive goes to the DLQ"
        );
        assert!(q.is_empty());
        assert_eq!(dlq.receive(10).unwrap()[0].body, "x");
        assert!(matches!(
            q.send_batch(vec![String::new(); 11]).await,
            Err(QueueError::BatchTooLarge(11))
        ));
    }

    #[tokio::test]
    async fn a_persisted_queue_keeps_undeleted_records_across_a_reopen() {
        let dir = tempfile_dir();
        let path = dir.join("q.redb");
        {
            let db = open_queue_db(&path).unwrap();
            let q =
                LocalQueue::persisted("send", db, clock(), QueueOptions::default(), None).unwrap();
            q.send_batch(vec!["a".into(), "b".into()]).await.unwrap();
            let r = q.receive(1).unwrap().remove(0);
            q.delete(&r.receipt).unwrap();
        }
        let db = open_queue_db(&path).unwrap();
        let q = LocalQueue::persisted("send", db, clock(), QueueOptions::default(), None).unwrap();
        let left = q.receive(10).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].body, "b");
        q.send_batch(vec!["c".into()]).await.unwrap();
        assert_eq!(q.len(), 2, "new ids do not reuse old ones");
        let _ = std::fs::remove_dir_all(dir);
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("mp-queue-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
