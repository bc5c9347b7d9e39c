//! The delivery engine in one process: the two send queues (in process, with SQS's
//! semantics, persisted next to the store), the dispatcher and the status poller
//! (`usecases::reconcile`) on a timer, and sender workers that always take the
//! high-priority lane first. [`Engine::drain`] runs all
//! pending work inline, for tests (with a manual clock, retries and due times pass
//! without sleeping).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use mailpilot_shared::adapters::local::queue::{LocalQueue, QueueOptions, open_queue_db};
use mailpilot_shared::ports::clock::{Clock, ManualClock};
use mailpilot_shared::ports::queue::{Lane, Queue};
use mailpilot_shared::ports::store::Store;
use mailpilot_shared::usecases::dispatch::{self, DispatchReport};
use mailpilot_shared::usecases::messages::Composer;
use mailpilot_shared::usecases::provider_events::EventConfig;
use mailpilot_shared::usecases::providers::Providers;
use mailpilot_shared::usecases::reconcile::{self, ReconcileDeps, ReconcileReport};
use mailpilot_shared::usecases::send::{
    self, Directory, Incoming, Outcome, SendConfig, SenderDeps,
};

/// Records taken per receive (SQS's batch size).
const BATCH: usize = 10;
/// Receives before a record is dead-lettered; above the sender's attempt limit.
pub const MAX_RECEIVE: u32 = 20;

/// How the engine's queues behave.
#[derive(Debug, Clone)]
pub struct QueueSettings {
    pub visibility_timeout_secs: u64,
    /// Fault injection: share of records delivered twice.
    pub duplicate_share: f64,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            visibility_timeout_secs: 180,
            duplicate_share: 0.0,
        }
    }
}

pub struct Engine {
    pub store: Arc<dyn Store>,
    pub bulk: Arc<LocalQueue>,
    pub priority: Arc<LocalQueue>,
    pub directory: Arc<dyn Directory>,
    pub clock: Arc<dyn Clock>,
    pub manual_clock: Option<Arc<ManualClock>>,
    pub composer: Composer,
    pub config: SendConfig,
    /// What the status poller builds providers with and how facts act; unset: no polling.
    poller: std::sync::OnceLock<(Providers, EventConfig)>,
}

/// Poll entries read per poller run at most (the next run goes on from the checkpoint).
const MAX_POLLS_PER_RUN: u64 = 1_000;

fn queues(
    dir: Option<&Path>,
    clock: Arc<dyn Clock>,
    q: &QueueSettings,
) -> Result<(Arc<LocalQueue>, Arc<LocalQueue>)> {
    let opts = QueueOptions {
        visibility_timeout_secs: q.visibility_timeout_secs,
        max_receive: MAX_RECEIVE,
        duplicate_share: q.duplicate_share,
    };
    let dlq_opts = QueueOptions {
        duplicate_share: 0.0,
        ..opts.clone()
    };
    match dir {
        Some(dir) => {
            let db = open_queue_db(&dir.join("queues.redb"))
                .context("opening the queue file (is another mailpilot using this data dir?)")?;
            let mk = |name: &str, o: &QueueOptions, dlq: Option<Arc<LocalQueue>>| {
                LocalQueue::persisted(name, db.clone(), clock.clone(), o.clone(), dlq)
                    .map(Arc::new)
                    .map_err(|e| anyhow::anyhow!("opening queue {name}: {e}"))
            };
            let bulk_dlq = mk("send-dlq", &dlq_opts, None)?;
            let prio_dlq = mk("priority-dlq", &dlq_opts, None)?;
            Ok((
                mk("send", &opts, Some(bulk_dlq))?,
                mk("priority", &opts, Some(prio_dlq))?,
            ))
        }
        None => {
            let mk = |name: &str, o: &QueueOptions, dlq: Option<Arc<LocalQueue>>| {
                Arc::new(LocalQueue::new(name, clock.clone(), o.clone(), dlq))
            };
            let bulk_dlq = mk("send-dlq", &dlq_opts, None);
            let prio_dlq = mk("priority-dlq", &dlq_opts, None);
            Ok((
                mk("send", &opts, Some(bulk_dlq)),
                mk("priority", &opts, Some(prio_dlq)),
            ))
        }
    }
}

/// What [`Engine::drain`] did.
#[derive(Debug, Clone, Default)]
pub struct DrainReport {
    pub records: u64,
    pub dispatched: u64,
    pub crashes: u64,
}

impl Engine {
    /// An engine over `store`; queues persisted under `queue_dir` when given.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<dyn Store>,
        directory: Arc<dyn Directory>,
        manual_clock: Option<Arc<ManualClock>>,
        composer: Composer,
        config: SendConfig,
        queue_dir: Option<&Path>,
        queue_settings: &QueueSettings,
    ) -> Result<Self> {
        let clock: Arc<dyn Clock> = match &manual_clock {
            Some(c) => c.clone(),
            None => Arc::new(mailpilot_shared::ports::clock::SystemClock),
        };
        let (bulk, priority) = queues(queue_dir, clock.clone(), queue_settings)?;
        Ok(Self {
            store,
            bulk,
            priority,
            directory,
            clock,
            manual_clock,
            composer,
            config,
            poller: std::sync::OnceLock::new(),
        })
    }

    /// Turns the status poller on (connections without webhooks): the timer runs it after
    /// each dispatcher run. Set once.
    pub fn enable_polling(&self, providers: Providers, events: EventConfig) {
        let _ = self.poller.set((providers, events));
    }

    /// One status poller run (nothing when polling is off).
    pub async fn reconcile(&self) -> Result<ReconcileReport> {
        let Some((providers, events)) = self.poller.get() else {
            return Ok(ReconcileReport::default());
        };
        let deps = ReconcileDeps {
            store: self.store.as_ref(),
            providers,
            clock: self.clock.as_ref(),
            events,
        };
        reconcile::run(&deps, MAX_POLLS_PER_RUN)
            .await
            .map_err(|e| anyhow::anyhow!("reconcile: {e}"))
    }

    pub fn queue(&self, lane: Lane) -> &Arc<LocalQueue> {
        match lane {
            Lane::Bulk => &self.bulk,
            Lane::Priority => &self.priority,
        }
    }

    /// One batch from one lane: receive, handle (in a task of its own, so a panic
    /// behaves like a crash of the process: nothing after it runs and the records come
    /// back after their visibility timeout), then delete or delay each record.
    /// Returns the records received and whether the batch crashed.
    pub async fn step(self: &Arc<Self>, lane: Lane) -> (usize, bool) {
        let queue = self.queue(lane).clone();
        let received = match queue.receive(BATCH) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "receiving failed");
                return (0, false);
            }
        };
        if received.is_empty() {
            return (0, false);
        }
        let incoming: Vec<Incoming> = received
            .iter()
            .map(|r| Incoming {
                id: r.id.clone(),
                body: r.body.clone(),
            })
            .collect();
        let me = self.clone();
        let handled = tokio::spawn(async move {
            let deps = SenderDeps {
                store: me.store.as_ref(),
                directory: me.directory.as_ref(),
                clock: me.clock.as_ref(),
                composer: &me.composer,
                config: &me.config,
            };
            send::handle_batch(&deps, lane, &incoming).await
        })
        .await;
        let Ok(outcomes) = handled else {
            return (received.len(), true);
        };
        for (r, o) in received.iter().zip(outcomes) {
            let result = match o {
                Outcome::Done => queue.delete(&r.receipt),
                Outcome::RetryAfter(secs) => queue.change_visibility(&r.receipt, secs).await,
                Outcome::Failed => Ok(()),
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "settling a record failed");
            }
        }
        (received.len(), false)
    }

    /// One batch from each dead-letter queue.
    pub async fn step_dead_letters(&self) -> usize {
        let mut n = 0;
        for q in [&self.bulk, &self.priority] {
            let Some(dlq) = q.dead_letters() else {
                continue;
            };
            let Ok(received) = dlq.receive(BATCH) else {
                continue;
            };
            n += received.len();
            let incoming: Vec<Incoming> = received
                .iter()
                .map(|r| Incoming {
                    id: r.id.clone(),
                    body: r.body.clone(),
                })
                .collect();
            let outcomes =
                send::handle_dead_letters(self.store.as_ref(), self.clock.as_ref(), &incoming)
                    .await;
            for (r, o) in received.iter().zip(outcomes) {
                if o == Outcome::Done {
                    let _ = dlq.delete(&r.receipt);
                }
            }
        }
        n
    }

    /// One dispatcher run.
    pub async fn dispatch(&self) -> Result<DispatchReport> {
        dispatch::dispatch(
            self.store.as_ref(),
            self.bulk.as_ref() as &dyn Queue,
            self.priority.as_ref() as &dyn Queue,
            self.clock.as_ref(),
            u64::MAX,
        )
        .await
        .map_err(|e| anyhow::anyhow!("dispatch: {e}"))
    }

    /// Runs everything pending, inline. With a manual clock, moves time forward to the
    /// next record that becomes visible, and (up to `horizon`) to the next minute the
    /// dispatcher may find due messages in, until nothing is left to do.
    pub async fn drain(self: &Arc<Self>, horizon: Option<DateTime<Utc>>) -> Result<DrainReport> {
        let mut report = DrainReport::default();
        loop {
            let mut worked = false;
            loop {
                let (p, pc) = self.step(Lane::Priority).await;
                let (b, bc) = if p == 0 {
                    self.step(Lane::Bulk).await
                } else {
                    (0, false)
                };
                let d = self.step_dead_letters().await;
                report.crashes += u64::from(pc) + u64::from(bc);
                report.records += (p + b + d) as u64;
                if p + b + d == 0 {
                    break;
                }
                worked = true;
            }
            let dispatched = self.dispatch().await?;
            report.dispatched += dispatched.enqueued;
            if worked || dispatched.enqueued > 0 {
                continue;
            }
            let Some(clock) = &self.manual_clock else {
                break;
            };
            let now = clock.now();
            let mut next: Option<DateTime<Utc>> = None;
            for q in [&self.bulk, &self.priority] {
                for t in [
                    q.next_visible_at(),
                    q.dead_letters().and_then(|d| d.next_visible_at()),
                ]
                .into_iter()
                .flatten()
                {
                    next = Some(next.map_or(t, |n| n.min(t)));
                }
            }
            if let Some(h) = horizon {
                let d = dispatch::next_dispatch_at(self.store.as_ref(), now)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                if d <= h {
                    next = Some(next.map_or(d, |n| n.min(d)));
                }
            }
            match next {
                Some(t) if t > now => clock.advance_to(t),
                Some(_) => {}
                None => break,
            }
        }
        Ok(report)
    }

    /// A sender loop over `lanes`, in order: a batch from the first lane that has one,
    /// then from the first again. Waits for a send (or 200 ms, for records whose delay
    /// ended) when all are empty. A loop that takes bulk also consumes dead letters.
    fn spawn_worker(
        self: &Arc<Self>,
        lanes: &[Lane],
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        let lanes = lanes.to_vec();
        let dead_letters = lanes.contains(&Lane::Bulk);
        tokio::spawn(async move {
            'work: loop {
                if *stop.borrow() {
                    return;
                }
                let pn = me.priority.notify().notified();
                let bn = me.bulk.notify().notified();
                tokio::pin!(pn);
                tokio::pin!(bn);
                pn.as_mut().enable();
                bn.as_mut().enable();
                for lane in &lanes {
                    let (n, _) = me.step(*lane).await;
                    if n > 0 {
                        continue 'work;
                    }
                }
                if dead_letters && me.step_dead_letters().await > 0 {
                    continue;
                }
                // Woken by a send; the timeout picks up records whose delay ended.
                if dead_letters {
                    tokio::select! {
                        _ = pn => {}
                        _ = bn => {}
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                        _ = stop.changed() => {}
                    }
                } else {
                    tokio::select! {
                        _ = pn => {}
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                        _ = stop.changed() => {}
                    }
                }
            }
        })
    }

    /// The runner's background work: one worker dedicated to the high-priority lane
    /// (transactional mail: it never holds a bulk batch, so `POST /v1/send` never waits
    /// behind a bulk backlog, as the separate event source mapping does in Lambda),
    /// `workers` sender loops that take the high-priority lane first and bulk after it,
    /// and the dispatcher (then the status poller) every `dispatch_every`. Stops when `stop` fires.
    pub fn spawn(
        self: &Arc<Self>,
        workers: usize,
        dispatch_every: Duration,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        self.spawn_with(workers, true, dispatch_every, stop)
    }

    /// [`Engine::spawn`], with the dedicated high-priority worker optional (`false`: the
    /// benchmark's baseline).
    pub fn spawn_with(
        self: &Arc<Self>,
        workers: usize,
        dedicated_priority_worker: bool,
        dispatch_every: Duration,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = Vec::new();
        if workers == 0 {
            return tasks; // driven inline (`drain`)
        }
        if dedicated_priority_worker {
            tasks.push(self.spawn_worker(&[Lane::Priority], stop.clone()));
        }
        for _ in 0..workers {
            tasks.push(self.spawn_worker(&[Lane::Priority, Lane::Bulk], stop.clone()));
        }
        let me = self.clone();
        let mut stop = stop;
        tasks.push(tokio::spawn(async move {
            loop {
                if let Err(e) = me.dispatch().await {
                    tracing::warn!(error = %e, "dispatcher run failed");
                }
                if let Err(e) = me.reconcile().await {
                    tracing::warn!(error = %e, "status poller run failed");
                }
                tokio::select! {
                    _ = tokio::time::sleep(dispatch_every) => {}
                    _ = stop.changed() => {}
                }
                if *stop.borrow() {
                    return;
                }
            }
        }));
        tasks
    }
}
