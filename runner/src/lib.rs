//! The local runner: every function of Mailpilot in one process over the embedded
//! store. This is how a newcomer starts it, and how tests and benchmarks drive it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use mailpilot_shared::adapters::local::blobs::FileBlobs;
use mailpilot_shared::adapters::local::store::RedbStore;
use mailpilot_shared::http::{self, AppState, Config, JobDriver};
use mailpilot_shared::ports::store::Store;
use mailpilot_shared::ratelimit::RateLimiter;
use mailpilot_shared::secrets::{Sealer, SecretsDoc};
use mailpilot_shared::usecases::imports::{self, BackgroundStarter, ImportEnv, ImportSettings};
use mailpilot_shared::usecases::{jobs, workspaces};
use tokio::net::TcpListener;

/// The runner's settings (from `MAILPILOT_*` environment variables in `main`).
#[derive(Debug, Clone)]
pub struct Settings {
    pub addr: String,
    pub data_dir: PathBuf,
    pub public_url: Option<String>,
    pub admin_token: Option<String>,
    /// Requests per second per API key (burst twice that); 0 turns the limit off.
    pub key_rate: u32,
    /// Create and announce a demo workspace on the first start.
    pub demo: bool,
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
            admin_token: var("MAILPILOT_ADMIN_TOKEN"),
            key_rate: var("MAILPILOT_KEY_RATE")
                .and_then(|v| v.parse().ok())
                .unwrap_or(100),
            demo: true,
        }
    }
}

/// Opens (creating on first use) the data dir's store and secrets.
pub fn open_data_dir(dir: &Path) -> Result<(Arc<RedbStore>, SecretsDoc)> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating the data dir {}", dir.display()))?;
    let secrets = load_or_create_secrets(&dir.join("secrets.json"))?;
    let store = RedbStore::open(&dir.join("mailpilot.redb")).map_err(|e| {
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

/// A running server.
pub struct Running {
    pub addr: SocketAddr,
    pub store: Arc<RedbStore>,
    /// The import use cases' environment (uploads folder, background starter).
    pub imports: Arc<ImportEnv>,
    /// The demo workspace's key, when this start created it.
    pub demo: Option<workspaces::CreatedWorkspace>,
    shutdown: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, finishes in-flight requests, and waits.
    pub async fn stop(self) -> Result<()> {
        let _ = self.shutdown.send(());
        self.task.await??;
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
    let dyn_store: Arc<dyn Store> = store.clone();
    let config = Config {
        admin_token: settings.admin_token.clone().or(secrets.admin_token.clone()),
        sealer: Sealer::new(&secrets.encryption_key),
        jobs: JobDriver::Background,
        cache_keys: true,
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
    let listener = TcpListener::bind(&settings.addr)
        .await
        .with_context(|| format!("binding {}", settings.addr))?;
    let addr = listener.local_addr()?;
    let app = http::router(state);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
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
        shutdown: tx,
        task,
    })
}
