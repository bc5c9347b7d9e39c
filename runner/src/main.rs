//! `mailpilot`: the local runner. `mailpilot serve` (the default) runs everything in
//! one process; `mailpilot workspace create <name>` creates a workspace offline.

use anyhow::Result;
use clap::{Parser, Subcommand};
use mailpilot_runner::{Settings, open_data_dir, start};
use mailpilot_shared::usecases::{senders, workspaces};

#[derive(Parser)]
#[command(name = "mailpilot", version, about = "Mailpilot, on one machine")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the API over the embedded store (the default).
    Serve,
    /// Manage workspaces on a data dir that no server has open.
    Workspace {
        #[command(subcommand)]
        action: WorkspaceAction,
    },
}

#[derive(Subcommand)]
enum WorkspaceAction {
    /// Create a workspace; prints {"workspace_id", "api_key"} as JSON.
    Create { name: String },
}

fn main() -> Result<()> {
    limit_malloc_arenas();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}

/// glibc gives threads that allocate at once their own malloc arenas (up to 8 per core),
/// and each keeps the memory freed into it. The store's writes run on tokio's blocking
/// threads, so a long import spread its short-lived items over many arenas: the runner's
/// RSS stepped from ~140 to ~180 MB during a 1M-row import. Two arenas keep it flat
/// (≈130 MB at 1M rows; BENCHMARKS.md, "CSV import"). `MALLOC_ARENA_MAX` still wins.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: called first thing in `main`, before any other thread exists; mallopt
        // only sets one of glibc's malloc tunables.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}

async fn run() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let settings = Settings::from_env();
    match Cli::parse().command.unwrap_or(Command::Serve) {
        Command::Serve => serve(settings).await,
        Command::Workspace {
            action: WorkspaceAction::Create { name },
        } => {
            let (store, _) = open_data_dir(&settings.data_dir)?;
            let created =
                workspaces::create_workspace(store.as_ref(), workspaces::CreateWorkspace { name })
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            senders::ensure_local_sender(store.as_ref(), &created.workspace_id)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("{}", serde_json::to_string(&created)?);
            Ok(())
        }
    }
}

async fn serve(settings: Settings) -> Result<()> {
    let running = start(settings.clone()).await?;
    let url = settings.public_url.clone().unwrap_or_else(|| running.url());
    eprintln!(
        "Mailpilot is running at {url} (data in {})",
        settings.data_dir.display()
    );
    if let Some(demo) = &running.demo {
        eprintln!();
        eprintln!("Created a demo workspace {}.", demo.workspace_id);
        eprintln!("Its API key (shown once; keep it):");
        eprintln!();
        eprintln!("    {}", demo.api_key);
        eprintln!();
        eprintln!("Try it:");
        eprintln!();
        eprintln!(
            "    curl -s -X POST {url}/v1/contacts -H 'Authorization: Bearer {}' -H 'Content-Type: application/json' -d '{{\"email\": \"ana@example.com\", \"first_name\": \"Ana\"}}'",
            demo.api_key
        );
        eprintln!();
    }
    eprintln!("API description: {url}/openapi.json — press Ctrl-C to stop.");
    shutdown_signal().await;
    eprintln!("Shutting down…");
    running.stop().await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
