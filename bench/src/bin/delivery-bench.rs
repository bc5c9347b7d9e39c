//! `delivery-bench`: the delivery engine on the runner's embedded store.
//!
//! 1. **Transactional sends**: `POST /v1/send` over HTTP to the local runner (4 sender
//!    workers, persisted queues, fsynced store), a null provider; `--concurrency` clients
//!    each with one request in flight. With and without a backlog of bulk records in the
//!    normal queue. Reports messages/s (POST of the first to `sent` of the last), p50/p99
//!    from the POST to the `sent` time in the message's timeline, CPU-seconds (user+sys of
//!    the process) per 1,000 messages, store item writes per sent message, and billed
//!    DynamoDB write units per message (a counting store decorator: ceil(KB) per item
//!    written, the larger of before/after for updates, 2× inside transactions; no item of
//!    the engine is in a GSI).
//! 2. **Dispatch**: items read per dispatched message, with 0 and with N future messages
//!    already in the due index, 1,000 due messages per run, median of `--runs` runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::Result;
use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use clap::Parser;
use hdrhistogram::Histogram;
use mailpilot_bench::{NullProvider, cpu_secs};
use mailpilot_runner::{DeliverySettings, Settings};
use mailpilot_shared::adapters::local::queue::{LocalQueue, QueueOptions};
use mailpilot_shared::adapters::local::store::{Durability, Options, RedbStore};
use mailpilot_shared::mime::Mailbox;
use mailpilot_shared::model::Id;
use mailpilot_shared::ports::clock::{Clock, ManualClock};
use mailpilot_shared::ports::provider::{Accepted, OutgoingMessage, Provider, SendError};
use mailpilot_shared::ports::queue::Queue;
use mailpilot_shared::ports::store::{
    BatchOp, Item, Key, Page, Query, Store, StoreResult, TxAction, Update, item_size, val,
};
use mailpilot_shared::usecases::dispatch::{self, DueEntry};
use mailpilot_shared::usecases::messages::{self, Content, SendRecord};
use mailpilot_shared::usecases::send::{Route, StaticDirectory};

#[derive(Parser, Debug)]
struct Args {
    /// Transactional messages per measurement (comma-separated sizes).
    #[arg(long, value_delimiter = ',', default_value = "1000,5000")]
    sizes: Vec<usize>,
    /// Bulk records waiting in the normal queue during the backlog measurement.
    #[arg(long, default_value_t = 100_000)]
    backlog: usize,
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Future messages in the due index for the dispatch measurement (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "0,100000,1000000")]
    future: Vec<usize>,
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// Providers for the transactional measurement: `null`, `outbox` (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "null,outbox")]
    providers: Vec<String>,
    /// Also run the backlog case without the dedicated high-priority worker (baseline).
    #[arg(long, default_value_t = true)]
    baseline: bool,
}

/// Counts billed DynamoDB write units of what passes through.
struct Billed<S> {
    inner: S,
    wcu: AtomicU64,
}

fn units(bytes: usize) -> u64 {
    (bytes.max(1) as u64).div_ceil(1024)
}

#[async_trait]
impl<S: Store> Store for Billed<S> {
    async fn get(&self, key: &Key) -> StoreResult<Option<Item>> {
        self.inner.get(key).await
    }
    async fn put(
        &self,
        item: Item,
        cond: Option<mailpilot_shared::ports::store::Cond>,
    ) -> StoreResult<()> {
        let n = units(item_size(&item));
        self.inner.put(item, cond).await?;
        self.wcu.fetch_add(n, Ordering::Relaxed);
        Ok(())
    }
    async fn update(
        &self,
        key: &Key,
        update: Update,
        cond: Option<mailpilot_shared::ports::store::Cond>,
    ) -> StoreResult<Item> {
        let after = self.inner.update(key, update, cond).await?;
        self.wcu
            .fetch_add(units(item_size(&after)), Ordering::Relaxed);
        Ok(after)
    }
    async fn delete(
        &self,
        key: &Key,
        cond: Option<mailpilot_shared::ports::store::Cond>,
    ) -> StoreResult<Option<Item>> {
        let old = self.inner.delete(key, cond).await?;
        self.wcu.fetch_add(
            old.as_ref().map_or(1, |i| units(item_size(i))),
            Ordering::Relaxed,
        );
        Ok(old)
    }
    async fn query(&self, query: Query) -> StoreResult<Page> {
        self.inner.query(query).await
    }
    async fn batch_get(&self, keys: &[Key]) -> StoreResult<Vec<Item>> {
        self.inner.batch_get(keys).await
    }
    async fn batch_write(&self, ops: Vec<BatchOp>) -> StoreResult<()> {
        let n: u64 = ops
            .iter()
            .map(|o| match o {
                BatchOp::Put(i) => units(item_size(i)),
                BatchOp::Delete(_) => 1,
            })
            .sum();
        self.inner.batch_write(ops).await?;
        self.wcu.fetch_add(n, Ordering::Relaxed);
        Ok(())
    }
    async fn transact(&self, actions: Vec<TxAction>) -> StoreResult<()> {
        let n: u64 = actions
            .iter()
            .map(|a| match a {
                TxAction::Put { item, .. } => 2 * units(item_size(item)),
                TxAction::Update { .. } | TxAction::Delete { .. } => 2,
                TxAction::Check { .. } => 0,
            })
            .sum();
        self.inner.transact(actions).await?;
        self.wcu.fetch_add(n, Ordering::Relaxed);
        Ok(())
    }
    fn writes(&self) -> u64 {
        self.inner.writes()
    }
}

/// The null provider, but its events would need the provider-id pointer (as SES
/// without a configuration set).
struct PointerProvider;

#[async_trait]
impl Provider for PointerProvider {
    fn kind(&self) -> &'static str {
        "nullptr"
    }
    async fn send(&self, m: &OutgoingMessage) -> Result<Accepted, SendError> {
        NullProvider.send(m).await
    }
    async fn verify(&self) -> Result<(), SendError> {
        Ok(())
    }
}

fn route(ws_sender: &str) -> Route {
    route_via(ws_sender, Arc::new(NullProvider))
}

fn route_via(ws_sender: &str, provider: Arc<dyn Provider>) -> Route {
    Route {
        sender_id: ws_sender.into(),
        from: Mailbox::new(Some("Bench"), "bench@example.com"),
        reply_to: None,
        connection_id: "conn_bench".into(),
        provider,
        rate_per_sec: None,
        sender_tz: chrono_tz::UTC,
        window: None,
        sender_cap: None,
        workspace_cap: None,
        paused: false,
    }
}

/// Writes a workspace record (the renderer reads it for every message).
async fn put_workspace(store: &dyn Store, ws: &str) -> Result<()> {
    let now = Utc::now();
    let record = mailpilot_shared::usecases::workspaces::Workspace {
        id: ws.to_string(),
        name: "Bench".into(),
        company_name: None,
        postal_address: None,
        public_url: None,
        daily_cap: None,
        created_at: now,
        updated_at: now,
    };
    let (pk, sk) = mailpilot_shared::keys::workspace(ws);
    store
        .put(
            mailpilot_shared::usecases::to_item(&pk, &sk, &record)?,
            None,
        )
        .await?;
    Ok(())
}

async fn transactional(
    n: usize,
    backlog: usize,
    concurrency: usize,
    provider: &str,
    dedicated: bool,
) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let directory = Arc::new(StaticDirectory::default());
    let running = mailpilot_runner::start(Settings {
        addr: "127.0.0.1:0".into(),
        data_dir: dir.path().to_path_buf(),
        public_url: None,
        link_keys: None,
        admin_token: None,
        key_rate: 0,
        demo: true,
        delivery: DeliverySettings {
            directory: Some(directory.clone()),
            dedicated_priority_worker: dedicated,
            ..DeliverySettings::default()
        },
    })
    .await?;
    let demo = running.demo.clone().expect("demo");
    let ws = demo.workspace_id.clone();
    let provider_impl: Arc<dyn Provider> = match provider {
        "outbox" => Arc::new(
            mailpilot_shared::adapters::mail::outbox::OutboxProvider::new(
                dir.path().join("outbox"),
            ),
        ),
        _ => Arc::new(NullProvider),
    };
    directory.insert(&ws, route_via("snd_bench", provider_impl));
    // The backlog: bulk messages due now (real sends through the same provider), their
    // records already in the normal queue. Written 25 items per commit, straight into
    // the store (as `messages::plan` writes them, without due entries: the records are
    // enqueued here, not by the dispatcher).
    if backlog > 0 {
        let now = Utc::now();
        let mut bodies = Vec::with_capacity(backlog);
        let mut items = Vec::with_capacity(25);
        for i in 0..backlog {
            let mut m = messages::new_record(
                &ws,
                Id::generate(Id::MESSAGE),
                mailpilot_shared::ports::queue::Lane::Bulk,
                mailpilot_shared::model::message::MessageState::Planned,
                "snd_bench",
                &format!("bulk{i}@example.com"),
                None,
                "News",
                now,
            );
            m.due_at = Some(now);
            m.content = Some(Content {
                subject: "News for {{name}}".into(),
                html: Some("<p>News for {{name}}</p>".into()),
                text: None,
                variables: [("name".to_string(), format!("reader {i}"))].into(),
            });
            bodies.push(serde_json::to_string(&SendRecord {
                ws: ws.clone(),
                msg: m.id.clone(),
                content: None,
                render: None,
            })?);
            items.push(BatchOp::Put(mailpilot_shared::usecases::to_item(
                &messages::pk(&ws),
                &m.id,
                &m,
            )?));
            if items.len() == 25 || i + 1 == backlog {
                running
                    .store
                    .batch_write(std::mem::take(&mut items))
                    .await?;
            }
        }
        for c in bodies.chunks(10) {
            running.engine.bulk.send_batch(c.to_vec()).await?;
        }
    }
    let writes0 = running.store.writes();
    let cpu0 = cpu_secs();
    let client = reqwest::Client::new();
    let url = format!("{}/v1/send", running.url());
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let t0 = Utc::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, key, next) = (
            client.clone(),
            url.clone(),
            demo.api_key.clone(),
            next.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut out: Vec<(String, DateTime<Utc>)> = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= n {
                    return out;
                }
                let at = Utc::now();
                let res = client
                    .post(&url)
                    .bearer_auth(&key)
                    .json(&serde_json::json!({"sender_id": "snd_bench", "to": format!("t{i}@example.com"), "subject": "Code", "text": "1234"}))
                    .send()
                    .await;
                if let Ok(r) = res
                    && let Ok(v) = r.json::<serde_json::Value>().await
                    && let Some(id) = v["id"].as_str()
                {
                    out.push((id.to_string(), at));
                }
            }
        }));
    }
    let mut posted = Vec::new();
    for t in tasks {
        posted.extend(t.await?);
    }
    // Wait until every transactional message is sent (bounded).
    let mut hist = Histogram::<u64>::new(3)?;
    let mut last_sent = t0;
    let deadline = Instant::now() + std::time::Duration::from_secs(600);
    for (id, at) in &posted {
        loop {
            let m = messages::load(running.store.as_ref(), &ws, id)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            if let Some(m) = m.filter(|m| m.state.is_settled()) {
                let sent = m.timeline.last().map(|t| t.at).unwrap_or(*at);
                last_sent = last_sent.max(sent);
                hist.record(((sent - *at).num_microseconds().unwrap_or(0).max(1)) as u64)?;
                break;
            }
            if Instant::now() > deadline {
                anyhow::bail!("{id} not sent in time");
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    let secs = (last_sent - t0).num_milliseconds() as f64 / 1000.0;
    let cpu = cpu_secs() - cpu0;
    let writes = running.store.writes() - writes0;
    let bulk_left = running.engine.bulk.len();
    let lane = if dedicated {
        "dedicated worker"
    } else {
        "baseline: shared workers only"
    };
    println!(
        "| {provider} | {lane} | {n} | {backlog} | {:.0} | {:.1} | {:.1} | {:.2} | {:.2} | {} |",
        posted.len() as f64 / secs,
        hist.value_at_quantile(0.5) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
        cpu / posted.len() as f64 * 1000.0,
        writes as f64 / posted.len() as f64,
        bulk_left,
    );
    let _ = started;
    running.stop().await?;
    Ok(())
}

/// Billed write units and item writes per transactional message, on a counting store
/// driven inline (no HTTP): the per-message cost in isolation.
async fn billed(n: usize) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let inner = RedbStore::open_with(
        &dir.path().join("db.redb"),
        Options {
            durability: Durability::NoSync,
            ..Options::default()
        },
    )?;
    let store = Arc::new(Billed {
        inner,
        wcu: AtomicU64::new(0),
    });
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let directory = Arc::new(StaticDirectory::default());
    let ws = Id::generate(Id::WORKSPACE);
    put_workspace(store.as_ref(), &ws).await?;
    directory.insert(&ws, route("snd_bench"));
    let mut capped = route_via("snd_capped", Arc::new(NullProvider));
    capped.sender_cap = mailpilot_shared::model::sender::DailyCap::parse(10_000_000, None).ok();
    capped.workspace_cap = Some(10_000_000);
    directory.insert(&ws, capped);
    directory.insert(&ws, route_via("snd_pointer", Arc::new(PointerProvider)));
    let engine = Arc::new(mailpilot_runner::delivery::Engine::new(
        store.clone(),
        directory.clone(),
        Some(clock.clone()),
        messages::Composer {
            link_keys: Arc::new(mailpilot_shared::model::links::LinkKeys::generate()),
            public_url: "https://mp.example".into(),
        },
        Default::default(),
        None,
        &Default::default(),
    )?);
    let deps = messages::SendDeps {
        store: store.as_ref(),
        directory: directory.as_ref(),
        priority: engine.priority.as_ref() as &dyn Queue,
        clock: clock.as_ref(),
        retention_days: 400,
    };
    let (w0, u0) = (store.writes(), store.wcu.load(Ordering::Relaxed));
    for i in 0..n {
        let req = serde_json::from_value(
            serde_json::json!({"sender_id": "snd_bench", "to": format!("t{i}@example.com"), "subject": "Code", "text": "1234"}),
        )?;
        messages::send_transactional(&deps, &ws, req)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    engine.drain(None).await?;
    println!(
        "| transactional, batches of 10 | {n} | {:.2} | {:.2} |",
        (store.writes() - w0) as f64 / n as f64,
        (store.wcu.load(Ordering::Relaxed) - u0) as f64 / n as f64
    );
    // One at a time (batch of 1: the counters are written once per message).
    let (w0, u0) = (store.writes(), store.wcu.load(Ordering::Relaxed));
    for i in 0..200 {
        let req = serde_json::from_value(
            serde_json::json!({"sender_id": "snd_bench", "to": format!("s{i}@example.com"), "subject": "Code", "text": "1234"}),
        )?;
        messages::send_transactional(&deps, &ws, req)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        engine.drain(None).await?;
    }
    println!(
        "| transactional, one at a time | 200 | {:.2} | {:.2} |",
        (store.writes() - w0) as f64 / 200.0,
        (store.wcu.load(Ordering::Relaxed) - u0) as f64 / 200.0
    );
    for (sender, case) in [
        (
            "snd_capped",
            "transactional, sender and workspace caps, batches of 10",
        ),
        (
            "snd_pointer",
            "transactional, provider needing the id pointer, batches of 10",
        ),
    ] {
        let (w0, u0) = (store.writes(), store.wcu.load(Ordering::Relaxed));
        for i in 0..n {
            let req = serde_json::from_value(
                serde_json::json!({"sender_id": sender, "to": format!("{sender}{i}@example.com"), "subject": "Code", "text": "1234"}),
            )?;
            messages::send_transactional(&deps, &ws, req)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        engine.drain(None).await?;
        println!(
            "| {case} | {n} | {:.2} | {:.2} |",
            (store.writes() - w0) as f64 / n as f64,
            (store.wcu.load(Ordering::Relaxed) - u0) as f64 / n as f64
        );
    }
    Ok(())
}

async fn dispatch_reads(future: usize, runs: usize) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = RedbStore::open_with(
        &dir.path().join("db.redb"),
        Options {
            durability: Durability::NoSync,
            ..Options::default()
        },
    )?;
    let start = Utc::now();
    let clock = Arc::new(ManualClock::new(start));
    let q = |name: &str| LocalQueue::new(name, clock.clone(), QueueOptions::default(), None);
    let (bulk, prio) = (q("send"), q("priority"));
    let ws = Id::generate(Id::WORKSPACE);
    // Future entries: spread over the next 30 days (written straight into the index).
    let entries: Vec<DueEntry> = (0..future)
        .map(|i| DueEntry {
            ws: ws.clone(),
            message_id: Id::generate(Id::MESSAGE),
            lane: mailpilot_shared::ports::queue::Lane::Bulk,
            due: start + Duration::days(1) + Duration::seconds((i % (29 * 86_400)) as i64),
        })
        .collect();
    for c in entries.chunks(25_000) {
        dispatch::schedule(&store, c, clock.now())
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let mut per_msg = Vec::new();
    let mut queries = Vec::new();
    for _ in 0..runs {
        let due: Vec<DueEntry> = (0..1000)
            .map(|_| DueEntry {
                ws: ws.clone(),
                message_id: Id::generate(Id::MESSAGE),
                lane: mailpilot_shared::ports::queue::Lane::Bulk,
                due: clock.now(),
            })
            .collect();
        dispatch::schedule(&store, &due, clock.now())
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        clock.advance(Duration::minutes(1));
        let r = dispatch::dispatch(&store, &bulk, &prio, clock.as_ref(), u64::MAX)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        per_msg.push(r.items_read as f64 / r.enqueued.max(1) as f64);
        queries.push(r.queries);
        while !bulk.receive(10)?.is_empty() {}
    }
    per_msg.sort_by(|a, b| a.total_cmp(b));
    queries.sort();
    let _ = val::n(0);
    println!(
        "| {future} | {runs} | {:.3} | {} |",
        per_msg[per_msg.len() / 2],
        queries[queries.len() / 2]
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    println!(
        "### Transactional sends (runner over HTTP, null provider, 4 workers, fsynced store and queues)\n"
    );
    println!(
        "| provider | high-priority lane | messages | bulk backlog | messages/s | p50 POST→sent ms | p99 POST→sent ms | CPU-s per 1,000 | store item writes per message | bulk records left |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for p in &args.providers {
        for &n in &args.sizes {
            transactional(n, 0, args.concurrency, p, true).await?;
            transactional(n, args.backlog, args.concurrency, p, true).await?;
            if args.baseline {
                transactional(n, args.backlog, args.concurrency, p, false).await?;
            }
        }
    }
    println!("\n### Writes and billed DynamoDB write units per sent message\n");
    println!("| case | messages | item writes / message | billed WCU / message |");
    println!("|---|---|---|---|");
    billed(args.sizes[0]).await?;
    println!("\n### Dispatch: items read per dispatched message (1,000 due per run)\n");
    println!(
        "| future messages in the index | runs | items read / dispatched (median) | queries per run (median) |"
    );
    println!("|---|---|---|---|");
    for &f in &args.future {
        dispatch_reads(f, args.runs).await?;
    }
    Ok(())
}
