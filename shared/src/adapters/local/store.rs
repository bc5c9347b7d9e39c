//! The embedded engine: [`RedbStore`], the storage port on one local redb file.
//!
//! # Why redb
//!
//! redb is a pure-Rust embedded key-value store (no C toolchain, nothing to install),
//! ACID with a single writer: a write transaction commits with an fsync by default
//! (copy-on-write B-trees and a double-buffered commit slot, so a crash at any point
//! leaves the last committed state), and readers see MVCC snapshots without blocking the
//! writer. Every port call that writes is one redb write transaction, so DynamoDB's
//! all-or-nothing transactions, and keeping the secondary index in step with the base
//! table, come for free.
//!
//! # File layout
//!
//! One database file holds three tables:
//!
//! - `items`: key `enc(pk) ++ enc(sk)` → the item (see `codec` for both encodings). Byte
//!   order of the keys is DynamoDB's order: partition, then sort key by bytes.
//! - `gsi1`: key `enc(gsi1pk) ++ enc(gsi1sk) ++ enc(pk) ++ enc(sk)` → a copy of the item
//!   (the index projects all attributes, as DynamoDB's does). Equal index sort keys are
//!   ordered by the base key, so pages never skip or repeat an entry. An item is in the
//!   index only while it has both `gsi1pk` and `gsi1sk` (non-empty strings; any other
//!   type is rejected on write, as DynamoDB rejects it).
//! - `gsi_pending`: only in GSI-lag test mode ([`Options::gsi_lag`]): a FIFO of index
//!   changes, each applied once it is older than the lag. Without lag the index is
//!   written in the same transaction as the base item, and the FIFO stays empty.
//!
//! # Semantics worth knowing
//!
//! - Conditions, updates and DynamoDB's limits are evaluated here exactly as the port
//!   documents them; numbers are exact decimals (38 digits) and are stored in
//!   DynamoDB's canonical text (`1.50` → `1.5`).
//! - TTL: an item whose `ttl` (epoch seconds) is in the past is hidden *immediately* from
//!   gets, queries, batch gets and conditions (DynamoDB deletes it within days; code must
//!   not rely on either timing). It stays on disk until it is overwritten or deleted.
//! - A query returns a cursor only when at least one more matching item exists (we look
//!   one item ahead). DynamoDB may also return one when the page ends exactly at the end
//!   of the partition, so callers must accept an empty last page.
//! - Empty `batch_get`, `batch_write` and `transact` calls are no-ops (DynamoDB rejects
//!   them; the DynamoDB adapter short-circuits them too).
//! - The write counter counts writes that happened: a failed condition writes nothing.

use std::collections::HashSet;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::codec::{decode_item, encode_item, escape_into, key_of, prefix_end, push_part};
use super::eval::{
    apply_update, eval, expired, invalid, validate_cond, validate_item, validate_key,
    validate_update,
};
use crate::ports::store::{
    BatchOp, Cond, Index, Item, Key, LimitError, Page, Query, SortKeyCond, Store, StoreError,
    StoreResult, TxAction, Update, UpdateAction, Value, WriteCounter, item_size, limits,
};

type Bytes = &'static [u8];

const ITEMS: TableDefinition<Bytes, Bytes> = TableDefinition::new("items");
const GSI1: TableDefinition<Bytes, Bytes> = TableDefinition::new("gsi1");
const GSI_PENDING: TableDefinition<u64, Bytes> = TableDefinition::new("gsi_pending");

/// How commits reach the disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Durability {
    /// Every acknowledged write is fsynced before the call returns (the default).
    #[default]
    Immediate,
    /// Commits are not fsynced: for benchmarks only. A crash (or SIGKILL) may lose
    /// acknowledged writes, though the file stays consistent; dropping the store
    /// flushes them.
    NoSync,
}

/// Options of [`RedbStore::open_with`].
#[derive(Debug, Clone)]
pub struct Options {
    /// Test mode: an index query does not see writes younger than this (DynamoDB's GSIs
    /// are eventually consistent; this makes code that wrongly relies on them fail
    /// locally). Base-table reads stay strongly consistent. `None`: no lag.
    pub gsi_lag: Option<Duration>,
    /// Whether commits are fsynced.
    pub durability: Durability,
    /// How late a [`Store::transact_seq_relaxed`] commit may reach the disk: such a
    /// commit is fsynced only when the last fsynced commit is older than this (every
    /// other write is fsynced at once, and makes the relaxed ones before it durable
    /// too). `Duration::ZERO`: fsync every commit. Default: 1 s.
    pub relaxed_sync: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            gsi_lag: None,
            durability: Durability::default(),
            relaxed_sync: DEFAULT_RELAXED_SYNC,
        }
    }
}

/// [`Options::relaxed_sync`]'s default.
pub const DEFAULT_RELAXED_SYNC: Duration = Duration::from_secs(1);

/// redb's page cache for the store (see `open_with`).
const CACHE_BYTES: usize = 64 * 1024 * 1024;

/// The embedded engine of the storage port (see the module docs).
#[derive(Clone)]
pub struct RedbStore {
    inner: Arc<Inner>,
}

impl fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedbStore")
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

struct Inner {
    db: Database,
    options: Options,
    writes: WriteCounter,
    /// Write transactions committed (benchmarks: items per commit).
    commits: WriteCounter,
    /// When the last fsynced commit ended (for `relaxed_sync`).
    last_sync: std::sync::Mutex<Instant>,
    /// A relaxed commit has not been fsynced yet.
    unsynced: std::sync::atomic::AtomicBool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let unsynced = self.options.durability == Durability::NoSync
            || self.unsynced.load(std::sync::atomic::Ordering::Relaxed);
        if unsynced && let Ok(txn) = self.db.begin_write() {
            // An empty durable commit makes every earlier non-durable commit durable.
            let _ = txn.commit();
        }
    }
}

/// Maps redb's errors (all convertible into `redb::Error`) to `Unavailable`.
trait OrUnavailable<T> {
    fn db(self) -> StoreResult<T>;
}

impl<T, E: Into<redb::Error>> OrUnavailable<T> for Result<T, E> {
    fn db(self) -> StoreResult<T> {
        self.map_err(|e| StoreError::unavailable(e.into()))
    }
}

fn now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

fn index_table(index: Index) -> TableDefinition<'static, Bytes, Bytes> {
    match index {
        Index::Gsi1 => GSI1,
    }
}

fn index_tag(index: Index) -> u8 {
    match index {
        Index::Gsi1 => 1,
    }
}

fn index_of_tag(tag: u8) -> Option<Index> {
    Index::ALL.into_iter().find(|i| index_tag(*i) == tag)
}

fn base_key(key: &Key) -> Vec<u8> {
    key_of(&[&key.pk, &key.sk])
}

/// The item's entry key in `index`, when it has both index key attributes.
fn index_key(index: Index, item: &Item) -> Option<Vec<u8>> {
    match (item.get(index.pk_attr()), item.get(index.sk_attr())) {
        (Some(Value::S(ipk)), Some(Value::S(isk))) => {
            let key = Key::of(item)?;
            Some(key_of(&[ipk, isk, &key.pk, &key.sk]))
        }
        _ => None,
    }
}

fn live(item: Option<Item>, now_secs: f64) -> Option<Item> {
    item.filter(|i| !expired(i, now_secs))
}

fn check_item_size(item: &Item) -> StoreResult<()> {
    let size = item_size(item);
    if size > limits::MAX_ITEM_BYTES {
        return Err(LimitError::ItemTooLarge { size }.into());
    }
    Ok(())
}

fn key_size(key: &Key) -> usize {
    2 + key.pk.len() + 2 + key.sk.len()
}

/// The request size of an update, as DynamoDB counts it toward the 4 MB of a
/// transaction: the key plus every name and value it carries.
fn update_size(key: &Key, update: &Update) -> usize {
    let mut carried = Item::new();
    let mut names = 0;
    for a in &update.actions {
        match a {
            UpdateAction::Set(n, v) | UpdateAction::SetIfNotExists(n, v) => {
                carried.insert(n.clone(), v.clone());
            }
            UpdateAction::Add(n, d) => {
                carried.insert(n.clone(), Value::N(d.to_string()));
            }
            UpdateAction::Remove(n) => names += n.len(),
        }
    }
    key_size(key) + item_size(&carried) + names
}

/// One write transaction's view of the tables.
struct Writer<'t> {
    items: redb::Table<'t, Bytes, Bytes>,
    gsi1: redb::Table<'t, Bytes, Bytes>,
    pending: redb::Table<'t, u64, Bytes>,
    lag_ms: Option<u64>,
    now_ms: u64,
    now_secs: f64,
}

impl<'t> Writer<'t> {
    fn open(txn: &'t WriteTransaction, options: &Options) -> StoreResult<Self> {
        let now = now();
        Ok(Writer {
            items: txn.open_table(ITEMS).db()?,
            gsi1: txn.open_table(GSI1).db()?,
            pending: txn.open_table(GSI_PENDING).db()?,
            lag_ms: options
                .gsi_lag
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            now_ms: u64::try_from(now.as_millis()).unwrap_or(u64::MAX),
            now_secs: now.as_secs_f64(),
        })
    }

    fn index_mut(&mut self, index: Index) -> &mut redb::Table<'t, Bytes, Bytes> {
        match index {
            Index::Gsi1 => &mut self.gsi1,
        }
    }

    /// The stored item, expired or not.
    fn load(&self, key: &Key) -> StoreResult<Option<Item>> {
        match self.items.get(base_key(key).as_slice()).db()? {
            Some(v) => Ok(Some(decode_item(v.value())?)),
            None => Ok(None),
        }
    }

    /// Replaces the stored item `old` of `key` with `new` (`None`: delete), keeping the
    /// indexes in step.
    fn write(&mut self, key: &Key, old: Option<&Item>, new: Option<&Item>) -> StoreResult<()> {
        let k = base_key(key);
        let bytes = new.map(encode_item);
        match &bytes {
            Some(b) => {
                self.items.insert(k.as_slice(), b.as_slice()).db()?;
            }
            None => {
                self.items.remove(k.as_slice()).db()?;
            }
        }
        for index in Index::ALL {
            let old_ik = old.and_then(|i| index_key(index, i));
            let new_ik = new.and_then(|i| index_key(index, i));
            if let Some(o) = old_ik.filter(|o| Some(o) != new_ik.as_ref()) {
                self.index_change(index, &o, None)?;
            }
            if let (Some(n), Some(b)) = (new_ik, &bytes) {
                self.index_change(index, &n, Some(b))?;
            }
        }
        Ok(())
    }

    /// Puts (`Some`) or removes (`None`) one index entry: now, or after the lag.
    fn index_change(&mut self, index: Index, ik: &[u8], item: Option<&[u8]>) -> StoreResult<()> {
        let Some(lag) = self.lag_ms else {
            return self.apply_index_change(index, ik, item);
        };
        let seq = match self.pending.last().db()? {
            Some((k, _)) => k.value() + 1,
            None => 0,
        };
        let mut rec = Vec::with_capacity(14 + ik.len() + item.map_or(0, <[u8]>::len));
        rec.extend_from_slice(&self.now_ms.saturating_add(lag).to_le_bytes());
        rec.push(u8::from(item.is_some()));
        rec.push(index_tag(index));
        rec.extend_from_slice(&(ik.len() as u32).to_le_bytes());
        rec.extend_from_slice(ik);
        if let Some(item) = item {
            rec.extend_from_slice(item);
        }
        self.pending.insert(seq, rec.as_slice()).db()?;
        Ok(())
    }

    fn apply_index_change(
        &mut self,
        index: Index,
        ik: &[u8],
        item: Option<&[u8]>,
    ) -> StoreResult<()> {
        let table = self.index_mut(index);
        match item {
            Some(b) => {
                table.insert(ik, b).db()?;
            }
            None => {
                table.remove(ik).db()?;
            }
        }
        Ok(())
    }

    /// Applies the pending index changes that are due (`all`: every one), oldest first.
    fn apply_pending(&mut self, all: bool) -> StoreResult<()> {
        loop {
            let (seq, rec) = match self.pending.first().db()? {
                Some((k, v)) => (k.value(), v.value().to_vec()),
                None => return Ok(()),
            };
            let bad = || StoreError::unavailable("corrupt pending index change");
            let due_at = u64::from_le_bytes(
                rec.get(0..8)
                    .ok_or_else(bad)?
                    .try_into()
                    .map_err(|_| bad())?,
            );
            if !all && due_at > self.now_ms {
                return Ok(());
            }
            let is_put = *rec.get(8).ok_or_else(bad)? == 1;
            let index = index_of_tag(*rec.get(9).ok_or_else(bad)?).ok_or_else(bad)?;
            let klen = u32::from_le_bytes(
                rec.get(10..14)
                    .ok_or_else(bad)?
                    .try_into()
                    .map_err(|_| bad())?,
            ) as usize;
            let ik = rec.get(14..14 + klen).ok_or_else(bad)?;
            let item = is_put.then(|| &rec[14 + klen..]);
            self.apply_index_change(index, ik, item)?;
            self.pending.remove(seq).db()?;
        }
    }
}

/// What a cursor holds: the key of the last item of the page (index keys included).
#[derive(Serialize, Deserialize)]
struct CursorData {
    v: u8,
    #[serde(default)]
    i: Option<String>,
    pk: String,
    sk: String,
    #[serde(default)]
    ipk: Option<String>,
    #[serde(default)]
    isk: Option<String>,
}

const CURSOR_VERSION: u8 = 1;

fn encode_cursor(index: Option<Index>, item: &Item) -> StoreResult<String> {
    let key = Key::of(item).ok_or_else(|| StoreError::unavailable("stored item without a key"))?;
    let attr = |name: &str| match item.get(name) {
        Some(Value::S(s)) => Some(s.clone()),
        _ => None,
    };
    let data = CursorData {
        v: CURSOR_VERSION,
        i: index.map(|i| i.name().to_string()),
        pk: key.pk,
        sk: key.sk,
        ipk: index.and_then(|i| attr(i.pk_attr())),
        isk: index.and_then(|i| attr(i.sk_attr())),
    };
    let json = serde_json::to_vec(&data).map_err(StoreError::unavailable)?;
    Ok(URL_SAFE_NO_PAD.encode(json))
}

/// The encoded key a cursor stands for, after checking that it belongs to this query's
/// index and partition.
fn decode_cursor(cursor: &str, query: &Query) -> StoreResult<Vec<u8>> {
    let json = URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| StoreError::BadCursor)?;
    let data: CursorData = serde_json::from_slice(&json).map_err(|_| StoreError::BadCursor)?;
    if data.v != CURSOR_VERSION || data.i.as_deref() != query.index.map(Index::name) {
        return Err(StoreError::BadCursor);
    }
    match query.index {
        None if data.pk == query.pk => Ok(key_of(&[&data.pk, &data.sk])),
        Some(_) => match (data.ipk, data.isk) {
            (Some(ipk), Some(isk)) if ipk == query.pk => {
                Ok(key_of(&[&ipk, &isk, &data.pk, &data.sk]))
            }
            _ => Err(StoreError::BadCursor),
        },
        None => Err(StoreError::BadCursor),
    }
}

/// The half-open byte range `[lo, hi)` of a query's entries, after its cursor.
fn query_range(query: &Query) -> StoreResult<(Vec<u8>, Vec<u8>)> {
    let no_end = || StoreError::unavailable("key range without an end");
    let mut p = Vec::with_capacity(query.pk.len() + 2);
    push_part(&mut p, &query.pk);
    let part_end = prefix_end(&p).ok_or_else(no_end)?;
    // All entries whose (index) sort key is x: [lo, hi).
    let group = |x: &str| -> StoreResult<(Vec<u8>, Vec<u8>)> {
        let mut lo = p.clone();
        push_part(&mut lo, x);
        let hi = prefix_end(&lo).ok_or_else(no_end)?;
        Ok((lo, hi))
    };
    let (mut lo, mut hi) = match &query.sk {
        None => (p.clone(), part_end),
        Some(SortKeyCond::Eq(x)) => group(x)?,
        Some(SortKeyCond::Lt(x)) => (p.clone(), group(x)?.0),
        Some(SortKeyCond::Le(x)) => (p.clone(), group(x)?.1),
        Some(SortKeyCond::Gt(x)) => (group(x)?.1, part_end),
        Some(SortKeyCond::Ge(x)) => (group(x)?.0, part_end),
        Some(SortKeyCond::Between(a, b)) => {
            if a.as_bytes() > b.as_bytes() {
                return Err(invalid("BETWEEN needs its lower bound ≤ its upper bound"));
            }
            (group(a)?.0, group(b)?.1)
        }
        Some(SortKeyCond::BeginsWith(q)) => {
            let mut lo = p.clone();
            escape_into(&mut lo, q);
            let hi = prefix_end(&lo).ok_or_else(no_end)?;
            (lo, hi)
        }
    };
    if let Some(cursor) = &query.cursor {
        let last = decode_cursor(cursor, query)?;
        if query.forward {
            let mut after = last;
            after.push(0);
            lo = lo.max(after);
        } else {
            hi = hi.min(last);
        }
    }
    Ok((lo, hi))
}

/// Reads one page of `[lo, hi)` from a base or index table.
fn read_page<T: ReadableTable<Bytes, Bytes>>(
    table: &T,
    query: &Query,
    lo: &[u8],
    hi: &[u8],
    now_secs: f64,
) -> StoreResult<Page> {
    let mut page = Page::default();
    if lo >= hi {
        return Ok(page);
    }
    let limit = query.limit.unwrap_or(usize::MAX);
    let range = table.range::<&[u8]>(lo..hi).db()?;
    let entries: Box<dyn Iterator<Item = _>> = if query.forward {
        Box::new(range)
    } else {
        Box::new(range.rev())
    };
    let mut bytes = 0usize;
    let mut more = false;
    for entry in entries {
        let (_, v) = entry.db()?;
        let item = decode_item(v.value())?;
        if expired(&item, now_secs) {
            continue;
        }
        let size = item_size(&item);
        if page.items.len() >= limit
            || (!page.items.is_empty() && bytes + size > limits::MAX_PAGE_BYTES)
        {
            more = true;
            break;
        }
        bytes += size;
        page.items.push(item);
    }
    if more && let Some(last) = page.items.last() {
        page.cursor = Some(encode_cursor(query.index, last)?);
    }
    Ok(page)
}

/// A validated transaction action.
enum Prepared {
    Put(Key, Item, Option<Cond>),
    Update(Key, Update, Option<Cond>),
    Delete(Key, Option<Cond>),
    Check(Key, Cond),
}

impl Prepared {
    fn key(&self) -> &Key {
        match self {
            Prepared::Put(k, ..)
            | Prepared::Update(k, ..)
            | Prepared::Delete(k, _)
            | Prepared::Check(k, _) => k,
        }
    }
    fn cond(&self) -> Option<&Cond> {
        match self {
            Prepared::Put(_, _, c) | Prepared::Update(_, _, c) | Prepared::Delete(_, c) => {
                c.as_ref()
            }
            Prepared::Check(_, c) => Some(c),
        }
    }
}

fn prepare(action: TxAction) -> StoreResult<(Prepared, usize)> {
    let validate = |c: &Option<Cond>| c.as_ref().map_or(Ok(()), validate_cond);
    Ok(match action {
        TxAction::Put { item, cond } => {
            validate(&cond)?;
            let (key, item) = validate_item(item)?;
            check_item_size(&item)?;
            let size = item_size(&item);
            (Prepared::Put(key, item, cond), size)
        }
        TxAction::Update { key, update, cond } => {
            validate(&cond)?;
            validate_key(&key)?;
            validate_update(&update)?;
            let size = update_size(&key, &update);
            (Prepared::Update(key, update, cond), size)
        }
        TxAction::Delete { key, cond } => {
            validate(&cond)?;
            validate_key(&key)?;
            let size = key_size(&key);
            (Prepared::Delete(key, cond), size)
        }
        TxAction::Check { key, cond } => {
            validate_cond(&cond)?;
            validate_key(&key)?;
            let size = key_size(&key);
            (Prepared::Check(key, cond), size)
        }
    })
}

impl Inner {
    /// Runs `f` in one write transaction and commits when it succeeds (an error aborts:
    /// nothing is written).
    fn write_txn<T>(&self, f: impl FnOnce(&mut Writer<'_>) -> StoreResult<T>) -> StoreResult<T> {
        self.write_txn_with(false, f)
    }

    /// [`Inner::write_txn`]; `relaxed`: the commit is fsynced only if the last fsynced
    /// one is older than `relaxed_sync` (see [`Store::transact_seq_relaxed`]).
    fn write_txn_with<T>(
        &self,
        relaxed: bool,
        f: impl FnOnce(&mut Writer<'_>) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let mut txn = self.db.begin_write().db()?;
        // The single writer: `begin_write` waits for the previous write transaction, so
        // `last_sync` is read and set by one writer at a time.
        let sync = match self.options.durability {
            Durability::NoSync => false,
            Durability::Immediate => {
                !relaxed
                    || self
                        .last_sync
                        .lock()
                        .map(|t| t.elapsed() >= self.options.relaxed_sync)
                        .unwrap_or(true)
            }
        };
        txn.set_durability(if sync {
            redb::Durability::Immediate
        } else {
            redb::Durability::None
        })
        .db()?;
        let out = {
            let mut w = Writer::open(&txn, &self.options)?;
            f(&mut w)?
        };
        txn.commit().db()?;
        if sync && let Ok(mut t) = self.last_sync.lock() {
            *t = Instant::now();
        }
        self.unsynced
            .store(!sync, std::sync::atomic::Ordering::Relaxed);
        self.commits.add(1);
        Ok(out)
    }
}

impl RedbStore {
    /// Write transactions committed since the store was opened (each writing port call
    /// is one; the benchmarks divide item writes by it).
    pub fn commits(&self) -> u64 {
        self.inner.commits.get()
    }

    /// Opens (or creates) the database at `path`, fsyncing every commit. Blocks: call it
    /// at startup, or from `spawn_blocking`.
    pub fn open(path: &Path) -> StoreResult<Self> {
        Self::open_with(path, Options::default())
    }

    /// Opens (or creates) the database at `path` with `options`. After a crash, redb
    /// repairs the file on open (the last committed state survives).
    pub fn open_with(path: &Path, options: Options) -> StoreResult<Self> {
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(StoreError::unavailable)?;
        }
        // redb's default page cache is 1 GiB, which a big import fills (RSS grew with the
        // database: 1 GB at 1M contacts). 64 MiB keeps the runner's memory flat; the OS
        // page cache still holds the file.
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .db()?;
        let inner = Inner {
            db,
            options,
            writes: WriteCounter::default(),
            commits: WriteCounter::default(),
            last_sync: std::sync::Mutex::new(Instant::now()),
            unsynced: std::sync::atomic::AtomicBool::new(false),
        };
        // Creates the tables; without lag, settles index changes left by a lagged run.
        let settle = inner.options.gsi_lag.is_none();
        inner.write_txn(|w| {
            if settle {
                w.apply_pending(true)
            } else {
                Ok(())
            }
        })?;
        Ok(RedbStore {
            inner: Arc::new(inner),
        })
    }

    /// The redb database itself, for benchmarks that compare the port with raw redb
    /// writes. Write only to tables of your own: `items`, `gsi1` and `gsi_pending`
    /// belong to the store.
    pub fn raw_db(&self) -> &Database {
        &self.inner.db
    }

    /// Counts the stored items whose `pk` starts with `prefix`, by scanning the base
    /// table — for tests and diagnostics only (a product path never scans; DynamoDB
    /// could not). Expired-but-not-yet-purged items count. Blocks.
    pub fn count_items_with_pk_prefix(&self, prefix: &str) -> StoreResult<usize> {
        let txn = self.inner.db.begin_read().db()?;
        let table = txn.open_table(ITEMS).db()?;
        let mut lo = Vec::new();
        escape_into(&mut lo, prefix);
        let range = match prefix_end(&lo) {
            Some(hi) => table.range::<&[u8]>(lo.as_slice()..hi.as_slice()).db()?,
            None => table.range::<&[u8]>(lo.as_slice()..).db()?,
        };
        let mut n = 0;
        for entry in range {
            entry.db()?;
            n += 1;
        }
        Ok(n)
    }

    /// Runs a read on the calling task. Reads are MVCC snapshots that never wait for
    /// the writer and take microseconds when the pages are cached; a hand-off to the
    /// blocking pool cost more than the read itself (BENCHMARKS.md: 2x the req/s of
    /// `GET /v1/contacts/{id}`). Writes stay on the blocking pool: they fsync.
    fn read<T>(&self, f: impl FnOnce(&Inner) -> StoreResult<T>) -> StoreResult<T> {
        f(&self.inner)
    }

    /// `transact_seq` and `transact_seq_relaxed`: `first` then every group, in one
    /// write transaction.
    async fn seq(
        &self,
        first: Vec<BatchOp>,
        groups: Vec<Vec<TxAction>>,
        relaxed: bool,
    ) -> (usize, Option<StoreError>) {
        let first = match prepare_batch(first) {
            Ok(f) => f,
            Err(e) => return (0, Some(e)),
        };
        // Each group is checked against DynamoDB's limits on its own, as one call would be.
        let mut prepared = Vec::with_capacity(groups.len());
        let mut invalid = None;
        for group in groups {
            match prepare_transaction(group) {
                Ok(p) => prepared.push(p),
                Err(e) => {
                    invalid = Some(e);
                    break;
                }
            }
        }
        let result = self
            .blocking(move |inner| {
                let mut writes = 0;
                let (done, failed) = inner.write_txn_with(relaxed, |w| {
                    write_batch(w, &first)?;
                    writes += first.len() as u64;
                    let mut done = 0;
                    for (group, n) in prepared {
                        // A failing group writes nothing (conditions are checked and new
                        // items computed before any write), so the earlier ones commit.
                        match apply_transaction(w, group) {
                            Ok(()) => {
                                done += 1;
                                writes += n;
                            }
                            Err(
                                e @ (StoreError::TransactionCanceled { .. } | StoreError::Limit(_)),
                            ) => return Ok((done, Some(e))),
                            // An I/O error may have come mid-write: abort everything.
                            Err(e) => return Err(e),
                        }
                    }
                    Ok((done, None))
                })?;
                inner.writes.add(writes);
                Ok((done, failed))
            })
            .await;
        match result {
            Ok((done, Some(e))) => (done, Some(e)),
            Ok((done, None)) => (done, invalid),
            Err(e) => (0, Some(e)),
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(StoreError::unavailable)?
    }
}

/// Checks a transaction against DynamoDB's limits; returns its prepared actions and
/// how many items it writes.
fn prepare_transaction(actions: Vec<TxAction>) -> StoreResult<(Vec<Prepared>, u64)> {
    if actions.len() > limits::MAX_TRANSACTION_ACTIONS {
        return Err(LimitError::TransactionTooLarge {
            count: actions.len(),
        }
        .into());
    }
    let mut prepared = Vec::with_capacity(actions.len());
    let mut total = 0usize;
    for action in actions {
        let (p, size) = prepare(action)?;
        total += size;
        prepared.push(p);
    }
    check_unique(prepared.iter().map(Prepared::key), |k| {
        LimitError::DuplicateKeyInTransaction {
            pk: k.pk.clone(),
            sk: k.sk.clone(),
        }
    })?;
    if total > limits::MAX_TRANSACTION_BYTES {
        return Err(LimitError::TransactionTooBig { size: total }.into());
    }
    let writes = prepared
        .iter()
        .filter(|p| !matches!(p, Prepared::Check(..)))
        .count() as u64;
    Ok((prepared, writes))
}

/// Applies one transaction inside a write transaction: every condition is checked and
/// every new item computed before anything is written, so a failure writes nothing.
fn apply_transaction(w: &mut Writer<'_>, prepared: Vec<Prepared>) -> StoreResult<()> {
    // (old item, whether it is live); the old item is cloned only for an update.
    let mut olds = Vec::with_capacity(prepared.len());
    let mut failed = vec![false; prepared.len()];
    for (i, p) in prepared.iter().enumerate() {
        let old = w.load(p.key())?;
        let is_live = old.as_ref().is_some_and(|o| !expired(o, w.now_secs));
        if let Some(c) = p.cond()
            && !eval(c, old.as_ref().filter(|_| is_live))
        {
            failed[i] = true;
        }
        olds.push((old, is_live));
    }
    if failed.iter().any(|f| *f) {
        return Err(StoreError::TransactionCanceled { failed });
    }
    let mut changes = Vec::with_capacity(prepared.len());
    for (p, (old, is_live)) in prepared.into_iter().zip(olds) {
        match p {
            Prepared::Put(key, item, _) => changes.push((key, old, Some(item))),
            Prepared::Update(key, update, _) => {
                let current = old.clone().filter(|_| is_live);
                let (_, new) = validate_item(apply_update(&key, current, &update)?)?;
                check_item_size(&new)?;
                changes.push((key, old, Some(new)));
            }
            Prepared::Delete(key, _) => {
                if old.is_some() {
                    changes.push((key, old, None));
                }
            }
            Prepared::Check(..) => {}
        }
    }
    for (key, old, new) in &changes {
        w.write(key, old.as_ref(), new.as_ref())?;
    }
    Ok(())
}

/// Validates the puts and deletes of a batch (no key twice): (key, new item or `None`).
fn prepare_batch(ops: Vec<BatchOp>) -> StoreResult<Vec<(Key, Option<Item>)>> {
    let mut prepared = Vec::with_capacity(ops.len());
    for op in ops {
        prepared.push(match op {
            BatchOp::Put(item) => {
                let (key, item) = validate_item(item)?;
                check_item_size(&item)?;
                (key, Some(item))
            }
            BatchOp::Delete(key) => {
                validate_key(&key)?;
                (key, None)
            }
        });
    }
    check_unique(prepared.iter().map(|(k, _)| k), |k| {
        LimitError::DuplicateKeyInBatch {
            pk: k.pk.clone(),
            sk: k.sk.clone(),
        }
    })?;
    Ok(prepared)
}

/// Writes a prepared batch (unconditional puts and deletes).
fn write_batch(w: &mut Writer<'_>, prepared: &[(Key, Option<Item>)]) -> StoreResult<()> {
    for (key, item) in prepared {
        let old = w.load(key)?;
        if item.is_some() || old.is_some() {
            w.write(key, old.as_ref(), item.as_ref())?;
        }
    }
    Ok(())
}

fn check_unique<'a>(
    keys: impl IntoIterator<Item = &'a Key>,
    dup: impl Fn(&Key) -> LimitError,
) -> StoreResult<()> {
    let mut seen = HashSet::new();
    for key in keys {
        if !seen.insert(key) {
            return Err(dup(key).into());
        }
    }
    Ok(())
}

#[async_trait]
impl Store for RedbStore {
    async fn get(&self, key: &Key) -> StoreResult<Option<Item>> {
        validate_key(key)?;
        self.read(|inner| {
            let txn = inner.db.begin_read().db()?;
            let table = txn.open_table(ITEMS).db()?;
            let item = match table.get(base_key(key).as_slice()).db()? {
                Some(v) => Some(decode_item(v.value())?),
                None => None,
            };
            Ok(live(item, now().as_secs_f64()))
        })
    }

    async fn put(&self, item: Item, cond: Option<Cond>) -> StoreResult<()> {
        let (key, item) = validate_item(item)?;
        check_item_size(&item)?;
        if let Some(c) = &cond {
            validate_cond(c)?;
        }
        self.blocking(move |inner| {
            inner.write_txn(|w| {
                let old = w.load(&key)?;
                if let Some(c) = &cond
                    && !eval(c, live(old.clone(), w.now_secs).as_ref())
                {
                    return Err(StoreError::ConditionFailed);
                }
                w.write(&key, old.as_ref(), Some(&item))
            })?;
            inner.writes.add(1);
            Ok(())
        })
        .await
    }

    async fn update(&self, key: &Key, update: Update, cond: Option<Cond>) -> StoreResult<Item> {
        validate_key(key)?;
        validate_update(&update)?;
        if let Some(c) = &cond {
            validate_cond(c)?;
        }
        let key = key.clone();
        self.blocking(move |inner| {
            let item = inner.write_txn(|w| {
                let old = w.load(&key)?;
                let current = live(old.clone(), w.now_secs);
                if let Some(c) = &cond
                    && !eval(c, current.as_ref())
                {
                    return Err(StoreError::ConditionFailed);
                }
                let (_, new) = validate_item(apply_update(&key, current, &update)?)?;
                check_item_size(&new)?;
                w.write(&key, old.as_ref(), Some(&new))?;
                Ok(new)
            })?;
            inner.writes.add(1);
            Ok(item)
        })
        .await
    }

    async fn delete(&self, key: &Key, cond: Option<Cond>) -> StoreResult<Option<Item>> {
        validate_key(key)?;
        if let Some(c) = &cond {
            validate_cond(c)?;
        }
        let key = key.clone();
        self.blocking(move |inner| {
            let old = inner.write_txn(|w| {
                let old = w.load(&key)?;
                let current = live(old.clone(), w.now_secs);
                if let Some(c) = &cond
                    && !eval(c, current.as_ref())
                {
                    return Err(StoreError::ConditionFailed);
                }
                if old.is_some() {
                    w.write(&key, old.as_ref(), None)?;
                }
                Ok(current)
            })?;
            inner.writes.add(1);
            Ok(old)
        })
        .await
    }

    async fn query(&self, query: Query) -> StoreResult<Page> {
        if query.limit == Some(0) {
            return Err(invalid("a query limit must be at least 1"));
        }
        let (lo, hi) = query_range(&query)?;
        let table = match query.index {
            None => ITEMS,
            Some(index) => {
                if self.inner.options.gsi_lag.is_some() {
                    // Applying the index changes whose lag has passed is a write.
                    self.blocking(|inner| inner.write_txn(|w| w.apply_pending(false)))
                        .await?;
                }
                index_table(index)
            }
        };
        self.read(|inner| {
            let txn = inner.db.begin_read().db()?;
            let table = txn.open_table(table).db()?;
            read_page(&table, &query, &lo, &hi, now().as_secs_f64())
        })
    }

    async fn batch_get(&self, keys: &[Key]) -> StoreResult<Vec<Item>> {
        if keys.len() > limits::MAX_BATCH_GET {
            return Err(LimitError::BatchGetTooLarge { count: keys.len() }.into());
        }
        keys.iter().try_for_each(validate_key)?;
        check_unique(keys, |k| LimitError::DuplicateKeyInBatch {
            pk: k.pk.clone(),
            sk: k.sk.clone(),
        })?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.read(|inner| {
            let txn = inner.db.begin_read().db()?;
            let table = txn.open_table(ITEMS).db()?;
            let now_secs = now().as_secs_f64();
            let mut out = Vec::with_capacity(keys.len());
            for key in keys {
                if let Some(v) = table.get(base_key(key).as_slice()).db()? {
                    let item = decode_item(v.value())?;
                    if !expired(&item, now_secs) {
                        out.push(item);
                    }
                }
            }
            Ok(out)
        })
    }

    async fn batch_write(&self, ops: Vec<BatchOp>) -> StoreResult<()> {
        if ops.len() > limits::MAX_BATCH_WRITE {
            return Err(LimitError::BatchWriteTooLarge { count: ops.len() }.into());
        }
        self.batch_write_all(ops).await
    }

    async fn batch_write_all(&self, ops: Vec<BatchOp>) -> StoreResult<()> {
        let prepared = prepare_batch(ops)?;
        if prepared.is_empty() {
            return Ok(());
        }
        // One write transaction (one fsync): for `batch_write_all`, what its calls of 25
        // would write.
        self.blocking(move |inner| {
            inner.write_txn(|w| write_batch(w, &prepared))?;
            inner.writes.add(prepared.len() as u64);
            Ok(())
        })
        .await
    }

    async fn transact(&self, actions: Vec<TxAction>) -> StoreResult<()> {
        let (prepared, writes) = prepare_transaction(actions)?;
        if prepared.is_empty() {
            return Ok(());
        }
        self.blocking(move |inner| {
            inner.write_txn(|w| apply_transaction(w, prepared))?;
            inner.writes.add(writes);
            Ok(())
        })
        .await
    }

    async fn transact_seq(&self, groups: Vec<Vec<TxAction>>) -> (usize, Option<StoreError>) {
        self.seq(Vec::new(), groups, false).await
    }

    async fn transact_seq_relaxed(
        &self,
        first: Vec<BatchOp>,
        groups: Vec<Vec<TxAction>>,
    ) -> (usize, Option<StoreError>) {
        self.seq(first, groups, true).await
    }

    fn writes(&self) -> u64 {
        self.inner.writes.get()
    }
}
