//! The local runner: every function of Mailpilot in one process over the embedded
//! store. This is how a newcomer starts it, and how tests and benchmarks drive it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub mod delivery;
pub mod recorder;

use anyhow::{Context, Result};
use mailpilot_shared::adapters::local::blobs::FileBlobs;
use mailpilot_shared::adapters::local::store::{DEFAULT_RELAXED_SYNC, Options, RedbStore};
use mailpilot_shared::http::track::{self, TrackState};
use mailpilot_shared::http::{self, AppState, Config, JobDriver, Sending};
use mailpilot_shared::model::links::LinkKeys;
use mailpilot_shared::ports::clock::ManualClock;
use mailpilot_shared::ports::store::Store;
use mailpilot_shared::ratelimit::RateLimiter;
use mailpilot_shared::secrets::{Sealer, SecretsDoc};
use mailpilot_shared::usecases::imports::{self, BackgroundStarter, ImportEnv, ImportSettings};
use mailpilot_shared::usecases::messages::{Composer, DEFAULT_RETENTION_DAYS};
use mailpilot_shared::usecases::providers::Providers;
use mailpilot_shared::usecases::send::{Directory, SendConfig, StoreDirectory};
use mailpilot_shared::usecases::tracking::RecorderConfig;
use mailpilot_shared::usecases::{jobs, senders, workspaces};
use tokio::net::TcpListener;

/// The runner's settings (from `MAILPILOT_*` environment variables in `main`).
#[derive(Debug, Clone)]
pub struct Settings {
    pub addr: String,
    pub data_dir: PathBuf,
    pub public_url: Option<String>,
    /// `MAILPILOT_LINK_KEYS` (`kid1:secret1,kid2:secret2`); unset: the keys generated
    /// into the data dir's `secrets.json` on first start.
    pub link_keys: Option<String>,
    pub admin_token: Option<String>,
    /// Requests per second per API key (burst twice that); 0 turns the limit off.
    pub key_rate: u32,
    /// Create and announce a demo workspace on the first start.
    pub demo: bool,
    /// The delivery engine's settings.
    pub delivery: DeliverySettings,
}

/// How the runner sends mail.
#[derive(Clone)]
pub struct DeliverySettings {
    /// Sender workers (0: none; tests then call `Engine::drain`).
    pub workers: usize,
    /// How often the dispatcher looks for due messages.
    pub dispatch_every: std::time::Duration,
    /// Message retention in days (`MAILPILOT_RETENTION_DAYS`, default 400).
    pub retention_days: i64,
    pub send: SendConfig,
    pub queues: delivery::QueueSettings,
    /// Keep the queues in `queues.redb` in the data dir (survives a crash).
    pub persist_queues: bool,
    /// Where sender profiles come from; `None`: the store's sender profiles.
    pub directory: Option<Arc<dyn Directory>>,
    /// Tests: a clock that moves only when told to.
    pub manual_clock: Option<Arc<ManualClock>>,
    /// How provider events act (soft-bounce limit, sender-health thresholds).
    pub events: mailpilot_shared::usecases::provider_events::EventConfig,
    /// Where SNS signing certificates come from; `None`: over HTTPS from SNS.
    pub sns_certs: Option<Arc<dyn mailpilot_shared::webhooks::sns::CertFetcher>>,
    /// One worker only for the high-priority lane (default). `false` is the old
    /// behaviour, kept for the benchmark's baseline: transactional mail then waits
    /// for a worker to finish the bulk batch it holds.
    pub dedicated_priority_worker: bool,
}

impl std::fmt::Debug for DeliverySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliverySettings")
            .field("workers", &self.workers)
            .field("retention_days", &self.retention_days)
            .field("queues", &self.queues)
            .finish_non_exhaustive()
    }
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            workers: 4,
            dispatch_every: std::time::Duration::from_secs(10),
            retention_days: DEFAULT_RETENTION_DAYS,
            send: SendConfig::default(),
            queues: delivery::QueueSettings::default(),
            persist_queues: true,
            directory: None,
            manual_clock: None,
            events: Default::default(),
            sns_certs: None,
            dedicated_priority_worker: true,
        }
    }
}

impl Settings {
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Self {
            addr: var("MAILPILOT_ADDR").unwrap_or_else(|| "127.0.0.1:8080".into()),
            data_dir: var("MAILPILOT_DATA")
                .unwrap_or_else(|| "./mailpilot-data".into())
                .into(),
            public_url: var("MAILPILOT_PUBLIC_URL"),
            link_keys: var("MAILPILOT_LINK_KEYS"),
            admin_token: var("MAILPILOT_ADMIN_TOKEN"),
            key_rate: var("MAILPILOT_KEY_RATE")
                .and_then(|v| v.parse().ok())
                .unwrap_or(100),
            demo: true,
            delivery: DeliverySettings {
                workers: var("MAILPILOT_WORKERS")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(4),
                retention_days: var("MAILPILOT_RETENTION_DAYS")
                    .and_then(|v| v.parse().ok())
                    .filter(|d: &i64| *d > 0)
                    .unwrap_or(DEFAULT_RETENTION_DAYS),
                ..DeliverySettings::default()
            },
        }
    }
}

/// Opens (creating on first use) the data dir's store and secrets.
pub fn open_data_dir(dir: &Path) -> Result<(Arc<RedbStore>, SecretsDoc)> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating the data dir {}", dir.display()))?;
    let secrets = load_or_create_secrets(&dir.join("secrets.json"))?;
    // How late bulk commits (an import's chunks) may reach the disk; 0: fsync each.
    let relaxed_sync = std::env::var("MAILPILOT_STORE_RELAXED_SYNC_MS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .map_or(DEFAULT_RELAXED_SYNC, std::time::Duration::from_millis);
    let options = Options {
        relaxed_sync,
        ..Options::default()
    };
    let store = RedbStore::open_with(&dir.join("mailpilot.redb"), options).map_err(|e| {
        anyhow::anyhow!(
            "opening the store in {} failed ({e}); is another mailpilot server using this data dir?",
            dir.display()
        )
    })?;
    Ok((Arc::new(store), secrets))
}

fn load_or_create_secrets(path: &Path) -> Result<SecretsDoc> {
    if path.exists() {
        let raw = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        return serde_json::from_slice(&raw)
            .with_context(|| format!("{} is not a secrets document", path.display()));
    }
    let doc = SecretsDoc::generate();
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&doc)?)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    }
    std::fs::rename(&tmp, path)?;
    Ok(doc)
}

/// The campaign planner in the runner: the planning queue (persisted in the data dir),
/// its worker, and the store-backed one-time scheduler polled every second.
fn start_planner(
    data_dir: &Path,
    store: Arc<dyn Store>,
    state: &AppState,
    directory: Arc<dyn Directory>,
    clock: Arc<dyn mailpilot_shared::ports::clock::Clock>,
    send: Arc<dyn mailpilot_shared::ports::queue::Queue>,
) -> Result<tokio::task::JoinHandle<()>> {
    use mailpilot_shared::adapters::local::queue::{LocalQueue, QueueOptions, open_queue_db};
    use mailpilot_shared::adapters::local::scheduler::StoreScheduler;
    use mailpilot_shared::http::campaigns::CampaignPorts;
    use mailpilot_shared::ports::queue::Queue;
    use mailpilot_shared::usecases::planner::{self, PlannerDeps};
    use mailpilot_shared::usecases::send::{Incoming, Outcome};

    let db = open_queue_db(&data_dir.join("planning.redb"))
        .map_err(|e| anyhow::anyhow!("opening the planning queue: {e}"))?;
    let dead = Arc::new(LocalQueue::new(
        "planning-dlq",
        clock.clone(),
        QueueOptions::default(),
        None,
    ));
    let planning = Arc::new(
        LocalQueue::persisted(
            "planning",
            db,
            clock.clone(),
            QueueOptions::default(),
            Some(dead),
        )
        .map_err(|e| anyhow::anyhow!("opening the planning queue: {e}"))?,
    );
    let scheduler = Arc::new(StoreScheduler::new(store.clone()));
    state.set_campaign_ports(CampaignPorts {
        planning: planning.clone(),
        scheduler: scheduler.clone(),
        directory: directory.clone(),
    });
    Ok(tokio::spawn(async move {
        let mut last_tick = clock.now() - chrono::Duration::seconds(1);
        loop {
            let now = clock.now();
            if now - last_tick >= chrono::Duration::seconds(1) {
                last_tick = now;
                if let Err(e) = scheduler.take_due(now, planning.as_ref()).await {
                    tracing::warn!(error = %e, "firing schedules failed");
                }
            }
            let notified = planning.notify().notified();
            let received = planning.receive(10).unwrap_or_default();
            if received.is_empty() {
                let _ = tokio::time::timeout(std::time::Duration::from_millis(500), notified).await;
                continue;
            }
            let records: Vec<Incoming> = received
                .iter()
                .map(|r| Incoming {
                    id: r.id.clone(),
                    body: r.body.clone(),
                })
                .collect();
            let deps = PlannerDeps {
                store: store.as_ref(),
                directory: directory.as_ref(),
                planning: planning.as_ref(),
                send: send.as_ref(),
                scheduler: scheduler.as_ref(),
                clock: clock.as_ref(),
            };
            let outcomes = planner::handle_batch(&deps, &records).await;
            for (r, o) in received.iter().zip(outcomes) {
                let _ = match o {
                    Outcome::Done => planning.delete(&r.receipt),
                    Outcome::RetryAfter(secs) => planning.change_visibility(&r.receipt, secs).await,
                    Outcome::Failed => Ok(()),
                };
            }
        }
    }))
}

/// Where the outbox keeps each workspace's mail: `<data dir>/outbox/<workspace id>/`.
pub fn outbox_root(data_dir: &Path) -> PathBuf {
    data_dir.join("outbox")
}

/// A running server.
pub struct Running {
    pub addr: SocketAddr,
    pub store: Arc<RedbStore>,
    /// The import use cases' environment (uploads folder, background starter).
    pub imports: Arc<ImportEnv>,
    /// The demo workspace's key, when this start created it.
    pub demo: Option<workspaces::CreatedWorkspace>,
    /// The delivery engine (queues, dispatcher, senders).
    pub engine: Arc<delivery::Engine>,
    /// The tracking events recorder's counts (`settle()` waits for it to catch up).
    pub recorder: Arc<recorder::RecorderStats>,
    recorder_task: tokio::task::JoinHandle<()>,
    shutdown: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    planner: tokio::task::JoinHandle<()>,
    stop_workers: tokio::sync::watch::Sender<bool>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, finishes in-flight requests, and waits.
    pub async fn stop(self) -> Result<()> {
        let _ = self.shutdown.send(());
        self.task.await??;
        // The routes (and their event sink) are gone: the recorder drains and ends.
        let _ = self.recorder_task.await;
        self.planner.abort();
        let _ = self.stop_workers.send(true);
        for w in self.workers {
            let _ = w.await;
        }
        Ok(())
    }
}

/// Starts the API on `settings.addr` (port 0 picks a free one) and returns at once.
pub async fn start(settings: Settings) -> Result<Running> {
    let (store, secrets) = open_data_dir(&settings.data_dir)?;
    start_with_store(settings, store, secrets).await
}

pub async fn start_with_store(
    settings: Settings,
    store: Arc<RedbStore>,
    secrets: SecretsDoc,
) -> Result<Running> {
    let demo_marker = settings.data_dir.join("demo-workspace");
    let demo = if settings.demo && !demo_marker.exists() {
        let created = workspaces::create_workspace(
            store.as_ref(),
            workspaces::CreateWorkspace {
                name: "Demo".into(),
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("creating the demo workspace: {e}"))?;
        std::fs::write(&demo_marker, &created.workspace_id)?;
        Some(created)
    } else {
        None
    };
    // Every workspace of the runner can send at once: an outbox connection and a sender
    // on it (docs/providers.md). Idempotent, so a data dir from before gets them too.
    if let Ok(ws) = std::fs::read_to_string(&demo_marker) {
        senders::ensure_local_sender(store.as_ref(), ws.trim())
            .await
            .map_err(|e| anyhow::anyhow!("creating the default sender: {e}"))?;
    }
    let link_keys = Arc::new(match &settings.link_keys {
        Some(text) => LinkKeys::parse(text).context("MAILPILOT_LINK_KEYS")?,
        None => secrets
            .link_keys()
            .context("the link-signing keys in secrets.json")?,
    });
    let track_keys = link_keys.clone();
    let listener = TcpListener::bind(&settings.addr)
        .await
        .with_context(|| format!("binding {}", settings.addr))?;
    let addr = listener.local_addr()?;
    let public_url = settings
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));
    let dyn_store: Arc<dyn Store> = store.clone();
    let sealer = Sealer::new(&secrets.encryption_key);
    let config = Config {
        admin_token: settings.admin_token.clone().or(secrets.admin_token.clone()),
        sealer: sealer.clone(),
        jobs: JobDriver::Background,
        cache_keys: true,
        providers: Providers::new(sealer, Some(outbox_root(&settings.data_dir))),
        link_keys: link_keys.clone(),
        public_url: Some(public_url.clone()),
    };
    let import_env = Arc::new(ImportEnv {
        store: dyn_store.clone(),
        blobs: Arc::new(FileBlobs::new(&settings.data_dir.join("uploads"))),
        starter: Arc::new(BackgroundStarter),
        settings: ImportSettings::from_env(),
    });
    let state = AppState::with_imports(
        dyn_store.clone(),
        config,
        RateLimiter::memory(settings.key_rate),
        Some(import_env.clone()),
    );
    // Resume the imports (and undos) a previous process left running: it is gone (the
    // store is locked by this process), so its leases are taken over at once.
    imports::resume_all(&import_env)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    // Resume the jobs a previous process left unfinished.
    for (ws, job) in jobs::unfinished(dyn_store.as_ref())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
    {
        state.drive_job(&ws, &job);
    }
    let d = &settings.delivery;
    let directory: Arc<dyn Directory> = match &d.directory {
        Some(dir) => dir.clone(),
        None => Arc::new(StoreDirectory::new(
            dyn_store.clone(),
            state.config.providers.clone(),
        )),
    };
    let composer = Composer {
        link_keys,
        public_url,
    };
    let engine = Arc::new(delivery::Engine::new(
        dyn_store.clone(),
        directory.clone(),
        d.manual_clock.clone(),
        composer,
        d.send.clone(),
        d.persist_queues.then_some(settings.data_dir.as_path()),
        &d.queues,
    )?);
    engine.enable_polling(state.config.providers.clone(), d.events.clone());
    let planner = start_planner(
        &settings.data_dir,
        dyn_store.clone(),
        &state,
        directory.clone(),
        engine.clock.clone(),
        engine.bulk.clone(),
    )?;
    state.set_sending(Sending {
        directory,
        priority: engine.priority.clone(),
        clock: engine.clock.clone(),
        retention_days: d.retention_days,
    });
    state.set_webhooks(mailpilot_shared::http::webhooks::WebhookPorts {
        certs: d
            .sns_certs
            .clone()
            .unwrap_or_else(|| Arc::new(mailpilot_shared::webhooks::sns::HttpCertFetcher::new())),
        clock: engine.clock.clone(),
        events: d.events.clone(),
    });
    let (stop_workers, stop_rx) = tokio::sync::watch::channel(false);
    let workers = engine.spawn_with(
        d.workers,
        d.dedicated_priority_worker,
        d.dispatch_every,
        stop_rx,
    );
    let (sink, recorder_stats, recorder_task) = recorder::spawn(
        dyn_store.clone(),
        RecorderConfig {
            retention_days: d.retention_days,
            ..RecorderConfig::default()
        },
    );
    let tracking = track::router(TrackState {
        keys: track_keys,
        sink,
        store: dyn_store.clone(),
    });
    let app = http::router(state).merge(tracking);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = rx.await;
        })
        .await
    });
    Ok(Running {
        addr,
        store,
        imports: import_env,
        demo,
        engine,
        recorder: recorder_stats,
        recorder_task,
        shutdown: tx,
        task,
        planner,
        stop_workers,
        workers,
    })
}
