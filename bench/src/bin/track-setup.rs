//! `track-setup`: prepares the tracking benchmark (`scripts/bench-track.sh`) on a data dir
//! that no server has open. For one existing workspace (made with `mailpilot workspace
//! create`) it writes N contacts and N sent messages, one per contact, as the runner
//! stores them (`contacts::create`; `messages::new_record` moved queued → sending → sent
//! with `messages::transition_action`, sent two hours ago, so clicks now are not "within
//! seconds of delivery"), counts them `sent` (`analytics::record_batch`), and mints with
//! the shared token code and the given link keys one open token and one click token per
//! message (link 0, a distinct URL each).
//!
//! Writes `<out>-open.txt` and `<out>-click.txt`: one request path per line
//! (`/t/o/<token>`, `/t/c/<token>`), in message order. Prints a JSON summary on stdout.
//!
//! The store is opened with `Durability::NoSync` (setup only; dropping it flushes).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use chrono::{Duration, Utc};
use clap::Parser;
use mailpilot_shared::adapters::local::store::{Durability, Options, RedbStore};
use mailpilot_shared::model::Id;
use mailpilot_shared::model::links::LinkKeys;
use mailpilot_shared::model::message::{MessageState, Transition};
use mailpilot_shared::ports::queue::Lane;
use mailpilot_shared::ports::store::{BatchOp, Store, TTL, limits, val};
use mailpilot_shared::usecases::analytics::{self, Fact, Occurrence};
use mailpilot_shared::usecases::contacts::{self, ContactInput};
use mailpilot_shared::usecases::messages::{self, DEFAULT_RETENTION_DAYS};
use mailpilot_shared::usecases::senders::LOCAL_SENDER_ID;
use mailpilot_shared::usecases::to_item;

#[derive(Parser, Debug)]
#[command(
    name = "track-setup",
    about = "contacts, sent messages and tracking tokens for the tracking benchmark"
)]
struct Args {
    /// The runner's data dir (`MAILPILOT_DATA`); no server may have it open.
    #[arg(long)]
    data: PathBuf,
    /// The workspace (from `mailpilot workspace create`).
    #[arg(long)]
    workspace: String,
    /// Messages (and contacts) to create: one open and one click token each.
    #[arg(long, default_value_t = 10_000)]
    messages: usize,
    /// The link keys the runner is started with (`kid:secret,...`); default: the
    /// `MAILPILOT_LINK_KEYS` environment variable.
    #[arg(long)]
    keys: Option<String>,
    /// Output prefix: `<out>-open.txt`, `<out>-click.txt`.
    #[arg(long)]
    out: PathBuf,
    /// Give the messages no contact (the recorder then skips the contact's
    /// `last_engaged_at` write).
    #[arg(long)]
    no_contacts: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.messages == 0 || args.messages > 1_000_000 {
        bail!("--messages must be 1..=1000000");
    }
    let keys_text = match &args.keys {
        Some(k) => k.clone(),
        None => std::env::var("MAILPILOT_LINK_KEYS")
            .context("--keys or MAILPILOT_LINK_KEYS is required")?,
    };
    let keys = LinkKeys::parse(&keys_text).context("the link keys")?;
    let store = RedbStore::open_with(
        &args.data.join("mailpilot.redb"),
        Options {
            durability: Durability::NoSync,
            ..Options::default()
        },
    )
    .map_err(|e| anyhow!("opening the store in {}: {e}", args.data.display()))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let started = std::time::Instant::now();
    let ids = rt.block_on(setup(&store, &args))?;
    drop(store);

    let ws = &args.workspace;
    let mut open = std::io::BufWriter::new(
        std::fs::File::create(path_with(&args.out, "-open.txt")).context("the open file")?,
    );
    let mut click = std::io::BufWriter::new(
        std::fs::File::create(path_with(&args.out, "-click.txt")).context("the click file")?,
    );
    for (i, msg) in ids.iter().enumerate() {
        let o = keys.sign_message(ws, msg, false)?;
        let url = format!("https://example.com/articles/{i}?utm_source=mailpilot");
        let c = keys.sign_click(ws, msg, 0, &url)?;
        writeln!(open, "/t/o/{o}")?;
        writeln!(click, "/t/c/{c}")?;
    }
    open.flush()?;
    click.flush()?;
    println!(
        "{}",
        serde_json::json!({
            "workspace": ws,
            "messages": ids.len(),
            "contacts": !args.no_contacts,
            "open_tokens": ids.len(),
            "click_tokens": ids.len(),
            "seconds": started.elapsed().as_secs_f64(),
        })
    );
    Ok(())
}

fn path_with(prefix: &std::path::Path, suffix: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Writes the contacts, the sent messages and their `sent` counts; returns the message ids.
async fn setup(store: &RedbStore, args: &Args) -> Result<Vec<String>> {
    let ws = args.workspace.as_str();
    let now = Utc::now();
    let created = now - Duration::hours(2);
    let sent_at = created + Duration::seconds(2);
    let mut ids = Vec::with_capacity(args.messages);
    let mut ops = Vec::with_capacity(limits::MAX_BATCH_WRITE);
    for i in 0..args.messages {
        let to = format!("reader{i:07}@example.com");
        let contact_id = if args.no_contacts {
            None
        } else {
            let input = ContactInput {
                email: Some(to.clone()),
                first_name: Some(Some(format!("Reader {i}"))),
                ..ContactInput::default()
            };
            let c = contacts::create(store, ws, input)
                .await
                .map_err(|e| anyhow!("creating contact {to}: {e}"))?;
            Some(c.id)
        };
        let queued = messages::new_record(
            ws,
            Id::generate(Id::MESSAGE),
            Lane::Priority,
            MessageState::Queued,
            LOCAL_SENDER_ID,
            &to,
            contact_id,
            "Your weekly digest",
            created,
        );
        let (sending, _) = messages::transition_action(
            &queued,
            Transition::Claim,
            created + Duration::seconds(1),
            |_| {},
        )
        .map_err(|e| anyhow!("{e}"))?;
        let (sent, _) = messages::transition_action(&sending, Transition::Sent, sent_at, |m| {
            m.provider = Some("outbox".into());
            m.provider_message_id = Some(format!("bench-{i}"));
        })
        .map_err(|e| anyhow!("{e}"))?;
        let mut item = to_item(&messages::pk(ws), &sent.id, &sent).map_err(|e| anyhow!("{e}"))?;
        item.insert(
            TTL.into(),
            val::n((created + Duration::days(DEFAULT_RETENTION_DAYS)).timestamp()),
        );
        ops.push(BatchOp::Put(item));
        ids.push(sent.id);
        if ops.len() == limits::MAX_BATCH_WRITE {
            store.batch_write(std::mem::take(&mut ops)).await?;
        }
    }
    if !ops.is_empty() {
        store.batch_write(ops).await?;
    }
    let occurrences: Vec<Occurrence> = ids
        .iter()
        .map(|_| Occurrence {
            at: sent_at,
            run: None,
            fact: Fact::Sent,
        })
        .collect();
    analytics::record_batch(store, ws, &occurrences)
        .await
        .map_err(|e| anyhow!("counting sent: {e}"))?;
    Ok(ids)
}
