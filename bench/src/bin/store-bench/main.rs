//! `store-bench`: write throughput of raw redb vs the same writes through the storage
//! port (`Store::batch_write` on `RedbStore`), in the same run, same machine, same bytes.
//!
//! - **Raw**: one redb write transaction per commit, inserting `key_of(pk, sk)` →
//!   `encode_item(item)` into a table of our own (`bench_raw_items`) of a `RedbStore`'s
//!   database (`raw_db()`), so the redb version and settings are the store's. The item
//!   and key encodings are a copy of the store's; start-up checks they are byte-identical
//!   to what the store writes. Raw encodes every item inside the timed loop, as any
//!   writer of this format must.
//! - **Port**: `Store::batch_write` with 25 puts per call (DynamoDB's limit), awaited
//!   one after another on a multi-thread tokio runtime (as the runner runs it).
//!
//! Items are contacts as the contacts use case stores them (`ContactRecord` →
//! `usecases::to_item`), random 26-character ids (as `Id::generate` makes them, so
//! inserts spread over the key range), about 400 bytes each. Building the `Item`s is
//! not timed for either side.
//!
//! Every measurement is bounded by an item count and a time limit, whichever comes
//! first. Results: markdown tables on stdout; progress on stderr.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::Parser;
use mailpilot_shared::adapters::local::store::{Durability, Options, RedbStore};
use mailpilot_shared::keys;
use mailpilot_shared::ports::store::{BatchOp, Item, Key, Store, Value, item_size, limits};
use mailpilot_shared::usecases::contacts::ContactRecord;
use mailpilot_shared::usecases::to_item;
use redb::{Database, ReadableDatabase, TableDefinition};

use mailpilot_shared::adapters::local::codec::{encode_item, key_of};

type Bytes = &'static [u8];

/// The raw benchmark's own table (same key/value types as the store's `items`).
const RAW: TableDefinition<Bytes, Bytes> = TableDefinition::new("bench_raw_items");
/// The store's base table, read (never written) by the encoding self-check.
const STORE_ITEMS: TableDefinition<Bytes, Bytes> = TableDefinition::new("items");

const BATCH: usize = limits::MAX_BATCH_WRITE;
const BIG_COMMIT: usize = 1_000;

#[derive(Parser, Debug)]
#[command(name = "store-bench", about = "raw redb vs the storage port, same run")]
struct Args {
    /// Where the temporary database files go (a fresh temp dir inside it, removed at
    /// the end). Default: the system temp dir.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Time limit of one measurement, seconds.
    #[arg(long, default_value_t = 5.0)]
    max_secs: f64,
    /// Item limit of one measurement in the commit-size table (each starts on an empty
    /// table, so the table grows from 0 to at most this during it).
    #[arg(long, default_value_t = 50_000)]
    max_items: usize,
    /// Table sizes (items already stored) at which the growth table measures.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
    growth_sizes: Vec<usize>,
    /// Item limit of one measurement in the growth table.
    #[arg(long, default_value_t = 10_000)]
    growth_window: usize,
    /// Skip the growth table.
    #[arg(long)]
    skip_growth: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.max_secs <= 0.0 || args.max_items == 0 || args.growth_window == 0 {
        bail!("--max-secs, --max-items and --growth-window must be positive");
    }
    let base = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir(),
    };
    std::fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix("mailpilot-store-bench-")
        .tempdir_in(&base)
        .context("creating a temp dir")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    let limit = Limit {
        secs: Duration::from_secs_f64(args.max_secs),
        items: args.max_items,
    };

    let mut items_gen = ItemGen::new(1)?;
    self_check(&rt, tmp.path(), &mut items_gen)?;
    let sample: Vec<Item> = (0..1_000).map(|_| items_gen.next()).collect();
    let enc_avg = sample.iter().map(|i| encode_item(i).len()).sum::<usize>() / sample.len();
    let ddb_avg = sample.iter().map(item_size).sum::<usize>() / sample.len();
    println!(
        "Items: contacts as stored by the contacts use case, {} attributes, {enc_avg} bytes \
         encoded on average ({ddb_avg} bytes as DynamoDB counts them); random 26-char ids.\n",
        sample[0].len()
    );

    // ---- commit-size table -------------------------------------------------------
    println!(
        "### Commit size (each row on a fresh, empty database; ≤ {} items or ≤ {} s per row)\n",
        args.max_items, args.max_secs
    );
    println!(
        "| fsync | row | items per commit | commits | items | seconds | items/s | port ÷ raw |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    let mut n = 0;
    for durability in [Durability::Immediate, Durability::NoSync] {
        let mode = mode_name(durability);
        let mut fresh = |name: &str| -> Result<RedbStore> {
            n += 1;
            let path = tmp.path().join(format!("{n}-{name}.redb"));
            RedbStore::open_with(
                &path,
                Options {
                    durability,
                    ..Options::default()
                },
            )
            .map_err(|e| anyhow!("opening {}: {e}", path.display()))
        };

        let raw25 = {
            let s = fresh("raw25")?;
            raw_run(s.raw_db(), &mut ItemGen::new(7)?, BATCH, durability, limit)?
        };
        row(
            mode,
            "raw redb: 1 write txn per 25 items",
            "25",
            &raw25,
            None,
        );
        let port25 = {
            let s = fresh("port25")?;
            port_run(&rt, &s, &mut ItemGen::new(7)?, limit, BATCH)?
        };
        row(
            mode,
            "port: `batch_write` of 25",
            "25",
            &port25,
            Some(&raw25),
        );
        let raw1k = {
            let s = fresh("raw1k")?;
            raw_run(
                s.raw_db(),
                &mut ItemGen::new(7)?,
                BIG_COMMIT,
                durability,
                limit,
            )?
        };
        row(
            mode,
            "raw redb: 1 write txn per 1,000 items",
            "1,000",
            &raw1k,
            None,
        );
        let port1k = {
            let s = fresh("port1k")?;
            port_run(&rt, &s, &mut ItemGen::new(7)?, limit, BIG_COMMIT)?
        };
        row(
            mode,
            "port: 40 × `batch_write` of 25 per 1,000 items (no 1,000-item call exists)",
            "25",
            &port1k,
            Some(&raw1k),
        );
    }
    println!();

    // ---- growth table ------------------------------------------------------------
    if !args.skip_growth {
        let mut sizes = args.growth_sizes.clone();
        sizes.sort_unstable();
        sizes.dedup();
        growth(&rt, tmp.path(), &sizes, &args)?;
    }
    drop(rt);
    tmp.close().context("removing the temp dir")?;
    Ok(())
}

fn mode_name(d: Durability) -> &'static str {
    match d {
        Durability::Immediate => "Immediate",
        Durability::NoSync => "NoSync",
    }
}

#[derive(Debug, Clone, Copy)]
struct Limit {
    secs: Duration,
    items: usize,
}

#[derive(Debug, Clone, Copy)]
struct Run {
    commits: u64,
    items: u64,
    secs: f64,
}

impl Run {
    fn rate(&self) -> f64 {
        if self.secs > 0.0 {
            self.items as f64 / self.secs
        } else {
            0.0
        }
    }
}

fn row(mode: &str, what: &str, per_commit: &str, run: &Run, raw: Option<&Run>) {
    let ratio = match raw {
        Some(r) if r.rate() > 0.0 => format!("{:.2}", run.rate() / r.rate()),
        _ => "—".into(),
    };
    println!(
        "| {mode} | {what} | {per_commit} | {} | {} | {:.2} | {:.0} | {ratio} |",
        run.commits,
        run.items,
        run.secs,
        run.rate()
    );
}

// ---- items ---------------------------------------------------------------------------

const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// Deterministic contact items (the same seed gives the same ids, so raw and port
/// write the same keys).
struct ItemGen {
    state: u64,
    n: u64,
    pk: String,
    template: Item,
}

impl ItemGen {
    fn new(seed: u64) -> Result<Self> {
        let ws = "ws_0123456789abcdefghjkmnpqrs";
        let rec: ContactRecord = serde_json::from_value(serde_json::json!({
            "id": "ct_00000000000000000000000000",
            "email": "ana.silva@example.com",
            "first_name": "Ana",
            "last_name": "Silva",
            "time_zone": "Europe/Lisbon",
            "locale": "pt-PT",
            "external_id": "crm-0000000",
            "consent": {"source": "signup_form", "at": "2025-01-15T10:20:30Z", "ip": "203.0.113.7"},
            "attributes": serde_json::json!({
                "plan": "pro",
                "company": "Acme Lda",
                "signup_source": "webinar-2025-01",
                "lifetime_value": 1234.5,
                "tags": ["beta", "newsletter"]
            }).to_string(),
            "created_at": "2025-01-15T10:20:30.123456Z",
            "updated_at": "2025-02-01T08:00:00.654321Z",
            "version": 3
        }))
        .context("building the template contact")?;
        let pk = keys::ws(ws, keys::CONTACTS);
        let template =
            to_item(&pk, &rec.id, &rec).map_err(|e| anyhow!("encoding the template: {e}"))?;
        Ok(Self {
            state: seed,
            n: 0,
            pk,
            template,
        })
    }

    /// splitmix64
    fn rand(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn next(&mut self) -> Item {
        let mut id = String::with_capacity(29);
        id.push_str("ct_");
        let (a, b) = (self.rand(), self.rand());
        for i in 0..26 {
            let bits = if i < 12 {
                a >> (i * 5)
            } else {
                b >> ((i - 12) * 5)
            };
            id.push(ALPHABET[(bits & 31) as usize] as char);
        }
        self.n += 1;
        let n = self.n;
        let mut item = self.template.clone();
        item.insert("sk".into(), Value::S(id.clone()));
        item.insert("id".into(), Value::S(id));
        item.insert(
            "email".into(),
            Value::S(format!("ana.silva.{n}@example.com")),
        );
        item.insert("external_id".into(), Value::S(format!("crm-{n:07}")));
        debug_assert_eq!(
            item.get("pk"),
            Some(&Value::S(self.pk.clone())),
            "template keeps its pk"
        );
        item
    }

    fn take(&mut self, n: usize) -> Vec<Item> {
        (0..n).map(|_| self.next()).collect()
    }
}

fn key_bytes(item: &Item) -> Result<Vec<u8>> {
    let key = Key::of(item).ok_or_else(|| anyhow!("item without pk/sk"))?;
    Ok(key_of(&[&key.pk, &key.sk]))
}

/// Writes a few items through the port and checks that the store's `items` table holds
/// exactly the key and value bytes the raw path would write.
fn self_check(rt: &tokio::runtime::Runtime, dir: &Path, items_gen: &mut ItemGen) -> Result<()> {
    let store = RedbStore::open_with(
        &dir.join("self-check.redb"),
        Options {
            durability: Durability::NoSync,
            ..Options::default()
        },
    )
    .map_err(|e| anyhow!("opening the self-check store: {e}"))?;
    let items = items_gen.take(3);
    rt.block_on(store.batch_write(items.iter().cloned().map(BatchOp::Put).collect()))
        .map_err(|e| anyhow!("self-check write: {e}"))?;
    let txn = store.raw_db().begin_read()?;
    let table = txn.open_table(STORE_ITEMS)?;
    for item in &items {
        let stored = table
            .get(key_bytes(item)?.as_slice())?
            .ok_or_else(|| anyhow!("self-check: the store's key encoding differs from ours"))?;
        if stored.value() != encode_item(item).as_slice() {
            bail!("self-check: the store's item encoding differs from ours ");
        }
    }
    eprintln!("self-check: raw key/item encodings are byte-identical to the store's");
    Ok(())
}

// ---- the two writers -----------------------------------------------------------------

fn redb_durability(d: Durability) -> redb::Durability {
    match d {
        Durability::Immediate => redb::Durability::Immediate,
        Durability::NoSync => redb::Durability::None,
    }
}

/// One raw commit: one write transaction inserting every item.
fn raw_commit(db: &Database, items: &[Item], durability: Durability) -> Result<()> {
    let mut txn = db.begin_write()?;
    txn.set_durability(redb_durability(durability))?;
    {
        let mut table = txn.open_table(RAW)?;
        for item in items {
            let k = key_bytes(item)?;
            let v = encode_item(item);
            table.insert(k.as_slice(), v.as_slice())?;
        }
    }
    txn.commit()?;
    Ok(())
}

/// Raw commits of `per_commit` items until `limit`.
fn raw_run(
    db: &Database,
    items_gen: &mut ItemGen,
    per_commit: usize,
    durability: Durability,
    limit: Limit,
) -> Result<Run> {
    let items = items_gen.take(limit.items.max(per_commit));
    let start = Instant::now();
    let mut run = Run {
        commits: 0,
        items: 0,
        secs: 0.0,
    };
    for chunk in items.chunks(per_commit) {
        raw_commit(db, chunk, durability)?;
        run.commits += 1;
        run.items += chunk.len() as u64;
        if start.elapsed() >= limit.secs {
            break;
        }
    }
    run.secs = start.elapsed().as_secs_f64();
    Ok(run)
}

/// Port `batch_write`s of 25 until `limit`; the time check happens every `group` items
/// (1,000 for the "40 × 25 per 1,000 items" row, so it ends on whole groups).
fn port_run(
    rt: &tokio::runtime::Runtime,
    store: &RedbStore,
    items_gen: &mut ItemGen,
    limit: Limit,
    group: usize,
) -> Result<Run> {
    let total = limit.items.max(group);
    let groups: Vec<Vec<Vec<BatchOp>>> = items_gen
        .take(total)
        .chunks(group)
        .map(|g| {
            g.chunks(BATCH)
                .map(|b| b.iter().cloned().map(BatchOp::Put).collect())
                .collect()
        })
        .collect();
    rt.block_on(async {
        let start = Instant::now();
        let mut run = Run {
            commits: 0,
            items: 0,
            secs: 0.0,
        };
        for g in groups {
            for ops in g {
                let n = ops.len() as u64;
                store
                    .batch_write(ops)
                    .await
                    .map_err(|e| anyhow!("batch_write: {e}"))?;
                run.commits += 1;
                run.items += n;
            }
            if start.elapsed() >= limit.secs {
                break;
            }
        }
        run.secs = start.elapsed().as_secs_f64();
        Ok(run)
    })
}

// ---- growth --------------------------------------------------------------------------

fn open_store(path: &Path, durability: Durability) -> Result<RedbStore> {
    RedbStore::open_with(
        path,
        Options {
            durability,
            ..Options::default()
        },
    )
    .map_err(|e| anyhow!("opening {}: {e}", path.display()))
}

/// Fills the raw table and the port's table up to each size (untimed, NoSync, 1,000-item
/// raw commits / 25-item port batches), then measures at that size.
fn growth(rt: &tokio::runtime::Runtime, dir: &Path, sizes: &[usize], args: &Args) -> Result<()> {
    println!(
        "### Cost vs table size (items already stored when the cell starts; each cell \
         adds ≤ {} items or runs ≤ {} s; fills are untimed)\n",
        args.growth_window, args.max_secs
    );
    println!(
        "| items in table (raw / port) | fsync | raw 25/commit items/s | port `batch_write` 25 items/s | port ÷ raw | raw 1,000/commit items/s | file size (port) |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|");
    let limit = Limit {
        secs: Duration::from_secs_f64(args.max_secs),
        items: args.growth_window,
    };
    let raw_path = dir.join("growth-raw.redb");
    let port_path = dir.join("growth-port.redb");
    let raw_store = open_store(&raw_path, Durability::NoSync)?;
    let raw_db = raw_store.raw_db();
    // Same seed on both sides: the same keys, in the same order.
    let mut raw_gen = ItemGen::new(99)?;
    let mut port_gen = ItemGen::new(99)?;
    let (mut raw_count, mut port_count) = (0usize, 0usize);
    for &size in sizes {
        let fill_start = Instant::now();
        while raw_count < size {
            let n = (size - raw_count).min(BIG_COMMIT);
            raw_commit(raw_db, &raw_gen.take(n), Durability::NoSync)?;
            raw_count += n;
        }
        {
            let store = open_store(&port_path, Durability::NoSync)?;
            while port_count < size {
                let n = (size - port_count).min(10_000);
                let batches: Vec<Vec<BatchOp>> = port_gen
                    .take(n)
                    .chunks(BATCH)
                    .map(|b| b.iter().cloned().map(BatchOp::Put).collect())
                    .collect();
                rt.block_on(async {
                    for ops in batches {
                        store.batch_write(ops).await?;
                    }
                    Ok::<_, mailpilot_shared::ports::store::StoreError>(())
                })
                .map_err(|e| anyhow!("filling: {e}"))?;
                port_count += n;
            }
        }
        eprintln!(
            "growth: filled to {size} items in {:.1} s",
            fill_start.elapsed().as_secs_f64()
        );
        for durability in [Durability::NoSync, Durability::Immediate] {
            // Untimed durable commit first: flushes what earlier NoSync commits left
            // dirty (the port side gets the same from closing and reopening its store).
            raw_commit(raw_db, &[], Durability::Immediate)?;
            let at = format!("{raw_count} / {port_count}");
            let raw25 = raw_run(raw_db, &mut raw_gen, BATCH, durability, limit)?;
            raw_count += raw25.items as usize;
            let port25 = {
                let store = open_store(&port_path, durability)?;
                let r = port_run(rt, &store, &mut port_gen, limit, BATCH)?;
                port_count += r.items as usize;
                r
            };
            let raw1k = if durability == Durability::NoSync {
                let r = raw_run(raw_db, &mut raw_gen, BIG_COMMIT, durability, limit)?;
                raw_count += r.items as usize;
                format!("{:.0}", r.rate())
            } else {
                "—".into()
            };
            let file_mb = std::fs::metadata(&port_path)
                .map(|m| m.len() as f64 / 1e6)
                .unwrap_or(0.0);
            println!(
                "| {at} | {} | {:.0} | {:.0} | {:.2} | {raw1k} | {file_mb:.0} MB |",
                mode_name(durability),
                raw25.rate(),
                port25.rate(),
                if raw25.rate() > 0.0 {
                    port25.rate() / raw25.rate()
                } else {
                    0.0
                },
            );
            eprintln!("growth: measured at {at} ({})", mode_name(durability));
        }
    }
    println!();
    Ok(())
}
