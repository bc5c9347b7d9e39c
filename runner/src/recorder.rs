//! The runner's event recorder: the tracking routes hand events to a channel; one task
//! takes them in batches and records them (`usecases::tracking::record_events`), the
//! same code the recorder function runs on SQS batches in AWS.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use mailpilot_shared::model::tracking::TrackEvent;
use mailpilot_shared::ports::events::{ChannelSink, EventSink};
use mailpilot_shared::ports::queue::QueueError;
use mailpilot_shared::ports::store::Store;
use mailpilot_shared::usecases::tracking::{RecorderConfig, record_events};
use tokio::sync::mpsc;

/// Events waiting in the channel at most (the tracking routes wait when it is full).
const CHANNEL: usize = 1 << 18;
/// Events per recording batch (at most; whatever waits). A batch costs a few batched
/// reads, one batched write of its clicks and one write transaction (one fsync) for all
/// its transactions of up to 100 actions, so larger batches cost less per event.
const BATCH: usize = 1024;

/// Counts of the recorder, for tests and benchmarks.
#[derive(Default)]
pub struct RecorderStats {
    emitted: AtomicU64,
    done: AtomicU64,
    failed: AtomicU64,
}

impl RecorderStats {
    /// Events handed over by the routes.
    pub fn emitted(&self) -> u64 {
        self.emitted.load(Ordering::SeqCst)
    }
    /// Events recorded (or found recorded before).
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::SeqCst)
    }
    /// Events given up after repeated store errors.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::SeqCst)
    }
    /// Waits until every event handed over so far is recorded or given up.
    pub async fn settle(&self) {
        while self.done() + self.failed() < self.emitted() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}

/// The sink the routes use: the channel, counting.
pub struct CountingSink {
    inner: ChannelSink,
    stats: Arc<RecorderStats>,
}

#[async_trait]
impl EventSink for CountingSink {
    async fn emit(&self, event: TrackEvent) -> Result<(), QueueError> {
        self.stats.emitted.fetch_add(1, Ordering::SeqCst);
        let r = self.inner.emit(event).await;
        if r.is_err() {
            self.stats.failed.fetch_add(1, Ordering::SeqCst);
        }
        r
    }
}

/// Starts the recorder task; it ends when every sink is dropped and the channel is empty.
pub fn spawn(
    store: Arc<dyn Store>,
    config: RecorderConfig,
) -> (
    Arc<CountingSink>,
    Arc<RecorderStats>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, mut rx) = mpsc::channel::<TrackEvent>(CHANNEL);
    let stats = Arc::new(RecorderStats::default());
    let sink = Arc::new(CountingSink {
        inner: ChannelSink(tx),
        stats: stats.clone(),
    });
    let task_stats = stats.clone();
    let task = tokio::spawn(async move {
        let mut batch = Vec::with_capacity(BATCH);
        while rx.recv_many(&mut batch, BATCH).await > 0 {
            let n = batch.len() as u64;
            let mut attempt = 0u32;
            loop {
                match record_events(store.as_ref(), &config, &batch).await {
                    Ok(_) => {
                        task_stats.done.fetch_add(n, Ordering::SeqCst);
                        break;
                    }
                    // Store trouble: the batch is retried (recording is idempotent).
                    Err(e) if attempt < 5 => {
                        attempt += 1;
                        tracing::warn!(error = %e, attempt, "recording tracking events failed; retrying");
                        tokio::time::sleep(std::time::Duration::from_millis(100 << attempt)).await;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, events = n, "recording tracking events failed; dropped");
                        task_stats.failed.fetch_add(n, Ordering::SeqCst);
                        break;
                    }
                }
            }
            batch.clear();
        }
    });
    (sink, stats, task)
}
