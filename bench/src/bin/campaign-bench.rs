//! `campaign-bench`: a broadcast from launch to the last message sent, on the local
//! runner as `mailpilot serve` runs it (4 sender workers, the planner worker, the
//! dispatcher timer, persisted queues, an fsynced store), driven over HTTP.
//!
//! Each case (`provider:recipients`) gets a fresh data dir. The audience (a workspace,
//! N contacts, one list holding them all) is written first through the shared use cases
//! on the same file opened without fsync (set-up, not measured); then the runner starts
//! on that file with the provider routed to the sender `snd_bench`, the campaign is
//! created and launched over HTTP, and its status is polled until it is `completed`.
//!
//! Reported per case: messages/s from the launch request to completion, CPU-seconds of
//! the process (runner and this driver together) per 1,000 messages, store item writes
//! per sent message (the store's own counter: every write the message causes, planner,
//! sender, counters and run progress included), store commits and items per commit, and
//! store items/s during the run next to raw redb (one table, fsynced commits, the same
//! items per commit and item size) measured right after, in the same process.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use mailpilot_bench::{NullProvider, cpu_secs, loadavg};
use mailpilot_runner::{DeliverySettings, Settings};
use mailpilot_shared::adapters::local::store::{Durability, Options, RedbStore};
use mailpilot_shared::mime::Mailbox;
use mailpilot_shared::ports::provider::Provider;
use mailpilot_shared::ports::store::Store;
use mailpilot_shared::usecases::send::{Route, StaticDirectory};
use mailpilot_shared::usecases::{contacts, lists, workspaces};
use redb::TableDefinition;
use serde_json::{Value, json};

#[derive(Parser, Debug)]
#[command(
    name = "campaign-bench",
    about = "a broadcast on the local runner, launch to last sent"
)]
struct Args {
    /// Cases as `provider:recipients` (provider `null` or `outbox`), comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "null:10000,null:100000,outbox:100000,null:1000000"
    )]
    cases: Vec<String>,
    /// Where the data dirs go (a fresh temp dir per case). Default: the system temp dir.
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
    /// Give up on a case after this many seconds.
    #[arg(long, default_value_t = 3600)]
    timeout_secs: u64,
}

/// The audience, written without fsync (set-up): returns (api key, list id).
async fn audience(path: &Path, n: usize) -> Result<(String, String, String)> {
    let store = RedbStore::open_with(
        path,
        Options {
            durability: Durability::NoSync,
            ..Options::default()
        },
    )?;
    let created = workspaces::create_workspace(
        &store,
        workspaces::CreateWorkspace {
            name: "Bench".into(),
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let ws = created.workspace_id.clone();
    let list = lists::create(
        &store,
        &ws,
        lists::CreateList {
            name: "Everyone".into(),
            description: None,
            double_opt_in: false,
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut ids = Vec::with_capacity(1000);
    for i in 0..n {
        let c = contacts::create(
            &store,
            &ws,
            contacts::ContactInput {
                email: Some(format!("reader{i}@example.com")),
                first_name: Some(Some(format!("Reader {i}"))),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        ids.push(c.id);
        if ids.len() == 1000 || i + 1 == n {
            lists::add_members(
                &store,
                &ws,
                &list.id,
                lists::MembersChange {
                    contact_ids: std::mem::take(&mut ids),
                },
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
    }
    Ok((ws, created.api_key, list.id))
}

const RAW: TableDefinition<&[u8], &[u8]> = TableDefinition::new("raw");

/// Raw redb: fsynced commits of `per_commit` items of `item_bytes` each into one table,
/// for `secs` seconds; items/s.
fn raw_rate(path: &Path, per_commit: usize, item_bytes: usize, secs: f64) -> Result<f64> {
    let db = redb::Builder::new()
        .set_cache_size(64 * 1024 * 1024)
        .create(path)?;
    let value = vec![0x5au8; item_bytes];
    let started = Instant::now();
    let (mut items, mut k) = (0u64, 0u64);
    while started.elapsed().as_secs_f64() < secs {
        let txn = db.begin_write()?;
        {
            let mut t = txn.open_table(RAW)?;
            for _ in 0..per_commit {
                k += 1;
                // Spread keys like message ids (random-looking, not appended).
                let key = format!(
                    "ws_bench#msg#{:016x}",
                    k.wrapping_mul(0x9E37_79B9_7F4A_7C15)
                );
                t.insert(key.as_bytes(), value.as_slice())?;
            }
        }
        txn.commit()?;
        items += per_commit as u64;
    }
    Ok(items as f64 / started.elapsed().as_secs_f64())
}

async fn case(args: &Args, provider: &str, n: usize) -> Result<()> {
    let dir = match &args.dir {
        Some(d) => tempfile::tempdir_in(d)?,
        None => tempfile::tempdir()?,
    };
    let setup = Instant::now();
    let (ws, api_key, list_id) = audience(&dir.path().join("mailpilot.redb"), n).await?;
    eprintln!(
        "{provider}:{n}: audience written in {:.1}s",
        setup.elapsed().as_secs_f64()
    );

    let directory = Arc::new(StaticDirectory::default());
    let provider_impl: Arc<dyn Provider> = match provider {
        "outbox" => Arc::new(
            mailpilot_shared::adapters::mail::outbox::OutboxProvider::new(
                dir.path().join("outbox"),
            ),
        ),
        "null" => Arc::new(NullProvider),
        other => bail!("unknown provider {other}: use null or outbox"),
    };
    directory.insert(
        &ws,
        Route {
            sender_id: "snd_bench".into(),
            from: Mailbox::new(Some("Bench"), "news@example.com"),
            reply_to: None,
            connection_id: "conn_bench".into(),
            provider: provider_impl,
            rate_per_sec: None,
            sender_tz: chrono_tz::UTC,
            window: None,
            sender_cap: None,
            workspace_cap: None,
            paused: false,
        },
    );
    let running = mailpilot_runner::start(Settings {
        addr: "127.0.0.1:0".into(),
        data_dir: dir.path().to_path_buf(),
        public_url: Some("https://mail.example.com".into()),
        link_keys: None,
        admin_token: None,
        key_rate: 0,
        demo: false,
        delivery: DeliverySettings {
            directory: Some(directory.clone()),
            ..DeliverySettings::default()
        },
    })
    .await?;
    let base = running.url();
    let client = reqwest::Client::new();
    let created: Value = client
        .post(format!("{base}/v1/campaigns"))
        .bearer_auth(&api_key)
        .json(&json!({
            "name": "Weekly",
            "sender_id": "snd_bench",
            "list_ids": [list_id],
            "subject": "This week for {{first_name}}",
            "html": "<h1>Hello {{default first_name \"there\"}}</h1><p>This week's news: <a href=\"https://example.com/a\">the first story</a> and <a href=\"https://example.com/b\">the second</a>.</p><p><a href=\"{{unsubscribe_url}}\">Unsubscribe</a></p>",
            "text": "Hello {{default first_name \"there\"}}\n\nThis week's news: https://example.com/a\n\nUnsubscribe: {{unsubscribe_url}}",
            "tracking": true
        }))
        .send()
        .await?
        .json()
        .await?;
    let id = created["id"]
        .as_str()
        .with_context(|| format!("creating the campaign: {created}"))?
        .to_string();

    let (writes0, commits0, cpu0) = (running.store.writes(), running.store.commits(), cpu_secs());
    let started = Instant::now();
    let launched = client
        .post(format!("{base}/v1/campaigns/{id}/launch"))
        .bearer_auth(&api_key)
        .json(&json!({}))
        .send()
        .await?;
    if launched.status() != reqwest::StatusCode::ACCEPTED {
        bail!("launch: {} {}", launched.status(), launched.text().await?);
    }
    let deadline = started + Duration::from_secs(args.timeout_secs);
    let mut last_print = Instant::now();
    let status = loop {
        let s: Value = client
            .get(format!("{base}/v1/campaigns/{id}"))
            .bearer_auth(&api_key)
            .send()
            .await?
            .json()
            .await?;
        if s["state"] == "completed" {
            break s;
        }
        if Instant::now() > deadline {
            bail!("{provider}:{n}: not completed in time: {s}");
        }
        if last_print.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "{provider}:{n}: {:.0}s state={} sent={} load={}",
                started.elapsed().as_secs_f64(),
                s["state"],
                s["runs"][0]["counts"]["sent"],
                loadavg()
            );
            last_print = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let secs = started.elapsed().as_secs_f64();
    let cpu = cpu_secs() - cpu0;
    let load = loadavg();
    let writes = running.store.writes() - writes0;
    let commits = running.store.commits() - commits0;
    let sent = status["runs"][0]["counts"]["sent"].as_u64().unwrap_or(0);
    if sent != n as u64 {
        bail!("{provider}:{n}: {sent} sent of {n}: {status}");
    }
    running.stop().await?;
    if provider == "outbox" {
        let files = std::fs::read_dir(dir.path().join("outbox"))
            .map(|d| d.count())
            .unwrap_or(0);
        eprintln!("{provider}:{n}: {files} files in the outbox");
    }

    let per_commit = (writes as f64 / commits.max(1) as f64).round().max(1.0) as usize;
    let raw = raw_rate(&dir.path().join("raw.redb"), per_commit, 600, 5.0)?;
    let items_per_sec = writes as f64 / secs;
    println!(
        "| {provider} | {n} | {secs:.1} | {:.0} | {:.2} | {:.2} | {commits} | {:.1} | {items_per_sec:.0} | {raw:.0} | {:.0}% | {load} |",
        n as f64 / secs,
        cpu / n as f64 * 1000.0,
        writes as f64 / n as f64,
        writes as f64 / commits.max(1) as f64,
        items_per_sec / raw * 100.0,
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    println!(
        "| provider | recipients | seconds | messages/s | CPU-s per 1,000 | item writes per sent message | commits | items per commit | store items/s | raw redb items/s (same commit size) | store vs raw | load average (1/5/15 min) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for c in &args.cases {
        let (provider, n) = c
            .split_once(':')
            .with_context(|| format!("case {c}: use provider:recipients"))?;
        let n: usize = n.parse().with_context(|| format!("case {c}"))?;
        case(&args, provider, n).await?;
    }
    Ok(())
}
