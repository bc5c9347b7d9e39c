//! The storage port: DynamoDB's semantics with typed conditions and updates.
//!
//! Both engines (DynamoDB in `adapters::aws`, redb in `adapters::local`) implement
//! [`Store`]; the conformance suite in `tests/` proves they mean the same thing.
//! No expression strings cross this boundary: a condition is a [`Cond`], an update an
//! [`Update`], and a failed condition is [`StoreError::ConditionFailed`] (or, inside a
//! transaction, [`StoreError::TransactionCanceled`] naming the failing action).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;

/// One attribute value, exactly DynamoDB's type system (S, N, B, BOOL, NULL, M, L, sets).
pub type Value = serde_dynamo::AttributeValue;
/// One item: attribute name → value. Always holds `pk` and `sk` (both strings).
pub type Item = HashMap<String, Value>;

/// Partition-key attribute of the base table.
pub const PK: &str = "pk";
/// Sort-key attribute of the base table.
pub const SK: &str = "sk";
/// Time-to-live attribute (epoch seconds, a number). DynamoDB deletes expired items
/// eventually; the embedded engine hides them from reads and purges them lazily.
pub const TTL: &str = "ttl";

/// DynamoDB's limits, enforced by the embedded engine too.
pub mod limits {
    /// Largest item, in bytes, as DynamoDB counts them (names + values).
    pub const MAX_ITEM_BYTES: usize = 400 * 1024;
    /// BatchWriteItem: at most 25 puts or deletes.
    pub const MAX_BATCH_WRITE: usize = 25;
    /// BatchGetItem: at most 100 keys.
    pub const MAX_BATCH_GET: usize = 100;
    /// TransactWriteItems: at most 100 actions.
    pub const MAX_TRANSACTION_ACTIONS: usize = 100;
    /// TransactWriteItems: at most 4 MB in all.
    pub const MAX_TRANSACTION_BYTES: usize = 4 * 1024 * 1024;
    /// Query: a page holds at most 1 MB of items.
    pub const MAX_PAGE_BYTES: usize = 1024 * 1024;
}

/// The primary key of one item.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub pk: String,
    pub sk: String,
}

impl Key {
    pub fn new(pk: impl Into<String>, sk: impl Into<String>) -> Self {
        Self {
            pk: pk.into(),
            sk: sk.into(),
        }
    }

    /// The key of an item, if it has string `pk` and `sk` attributes.
    pub fn of(item: &Item) -> Option<Key> {
        match (item.get(PK), item.get(SK)) {
            (Some(Value::S(pk)), Some(Value::S(sk))) => Some(Key::new(pk.clone(), sk.clone())),
            _ => None,
        }
    }
}

/// The global secondary indexes of the table. Each projects all attributes; an item
/// appears in an index only when it has both of the index's key attributes (strings).
/// GSI reads are eventually consistent: no correctness may hang on one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Index {
    Gsi1,
}

impl Index {
    pub const ALL: [Index; 1] = [Index::Gsi1];

    pub fn name(self) -> &'static str {
        match self {
            Index::Gsi1 => "gsi1",
        }
    }

    pub fn pk_attr(self) -> &'static str {
        match self {
            Index::Gsi1 => "gsi1pk",
        }
    }

    pub fn sk_attr(self) -> &'static str {
        match self {
            Index::Gsi1 => "gsi1sk",
        }
    }
}

/// Comparison operators for conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// A typed condition on the item as it is before the write.
///
/// Semantics follow DynamoDB: a comparison on a missing attribute is false (`Ne` on a
/// missing attribute is true); values of different types are never equal and never
/// ordered; numbers compare numerically, strings and binaries by bytes.
#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    /// The item does not exist (`attribute_not_exists(pk)`).
    ItemNotExists,
    /// The item exists (`attribute_exists(pk)`).
    ItemExists,
    AttrExists(String),
    AttrNotExists(String),
    Compare(String, Cmp, Value),
    BeginsWith(String, String),
    And(Vec<Cond>),
    Or(Vec<Cond>),
    Not(Box<Cond>),
}

impl Cond {
    pub fn eq(attr: impl Into<String>, v: Value) -> Cond {
        Cond::Compare(attr.into(), Cmp::Eq, v)
    }
    pub fn ne(attr: impl Into<String>, v: Value) -> Cond {
        Cond::Compare(attr.into(), Cmp::Ne, v)
    }
    pub fn lt(attr: impl Into<String>, v: Value) -> Cond {
        Cond::Compare(attr.into(), Cmp::Lt, v)
    }
    pub fn le(attr: impl Into<String>, v: Value) -> Cond {
        Cond::Compare(attr.into(), Cmp::Le, v)
    }
    pub fn gt(attr: impl Into<String>, v: Value) -> Cond {
        Cond::Compare(attr.into(), Cmp::Gt, v)
    }
    pub fn ge(attr: impl Into<String>, v: Value) -> Cond {
        Cond::Compare(attr.into(), Cmp::Ge, v)
    }
}

/// One action of an update expression.
#[derive(Debug, Clone, PartialEq)]
pub enum UpdateAction {
    /// `SET attr = value`.
    Set(String, Value),
    /// `SET attr = if_not_exists(attr, value)`.
    SetIfNotExists(String, Value),
    /// `REMOVE attr`.
    Remove(String),
    /// `ADD attr delta`: a missing attribute counts as 0.
    Add(String, i64),
}

/// An update: creates the item if it is missing (as DynamoDB's UpdateItem does).
/// The key attributes (`pk`, `sk`) cannot be updated.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Update {
    pub actions: Vec<UpdateAction>,
}

impl Update {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn set(mut self, attr: impl Into<String>, v: Value) -> Self {
        self.actions.push(UpdateAction::Set(attr.into(), v));
        self
    }
    pub fn set_if_not_exists(mut self, attr: impl Into<String>, v: Value) -> Self {
        self.actions
            .push(UpdateAction::SetIfNotExists(attr.into(), v));
        self
    }
    pub fn remove(mut self, attr: impl Into<String>) -> Self {
        self.actions.push(UpdateAction::Remove(attr.into()));
        self
    }
    pub fn add(mut self, attr: impl Into<String>, delta: i64) -> Self {
        self.actions.push(UpdateAction::Add(attr.into(), delta));
        self
    }
}

/// A condition on the sort key of a query (on the index's sort key for GSI queries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SortKeyCond {
    Eq(String),
    Lt(String),
    Le(String),
    Gt(String),
    Ge(String),
    BeginsWith(String),
    /// Inclusive on both ends.
    Between(String, String),
}

/// A query of one partition (of the table or of an index).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub index: Option<Index>,
    pub pk: String,
    pub sk: Option<SortKeyCond>,
    /// `true` = ascending sort key (ScanIndexForward).
    pub forward: bool,
    /// Most items in the page (the page may hold fewer, also because of the 1 MB cap).
    pub limit: Option<usize>,
    /// Opaque cursor from a previous page's [`Page::cursor`].
    pub cursor: Option<String>,
    /// Strongly consistent read (base table only; ignored on an index).
    pub consistent: bool,
}

impl Query {
    pub fn partition(pk: impl Into<String>) -> Self {
        Self {
            index: None,
            pk: pk.into(),
            sk: None,
            forward: true,
            limit: None,
            cursor: None,
            consistent: true,
        }
    }
    pub fn index(index: Index, pk: impl Into<String>) -> Self {
        Self {
            index: Some(index),
            consistent: false,
            ..Self::partition(pk)
        }
    }
    pub fn sk(mut self, cond: SortKeyCond) -> Self {
        self.sk = Some(cond);
        self
    }
    pub fn backward(mut self) -> Self {
        self.forward = false;
        self
    }
    pub fn limit(mut self, n: usize) -> Self {
        self.limit = Some(n);
        self
    }
    pub fn cursor(mut self, c: Option<String>) -> Self {
        self.cursor = c;
        self
    }
}

/// One page of a query. `cursor` is `Some` when more items may follow.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Page {
    pub items: Vec<Item>,
    pub cursor: Option<String>,
}

/// One action of a transaction.
#[derive(Debug, Clone, PartialEq)]
pub enum TxAction {
    Put {
        item: Item,
        cond: Option<Cond>,
    },
    Update {
        key: Key,
        update: Update,
        cond: Option<Cond>,
    },
    Delete {
        key: Key,
        cond: Option<Cond>,
    },
    /// Only checks a condition on an item; writes nothing.
    Check {
        key: Key,
        cond: Cond,
    },
}

impl TxAction {
    pub fn key(&self) -> Option<Key> {
        match self {
            TxAction::Put { item, .. } => Key::of(item),
            TxAction::Update { key, .. }
            | TxAction::Delete { key, .. }
            | TxAction::Check { key, .. } => Some(key.clone()),
        }
    }
}

/// One write of a batch (no conditions, as in BatchWriteItem).
#[derive(Debug, Clone, PartialEq)]
pub enum BatchOp {
    Put(Item),
    Delete(Key),
}

/// A DynamoDB limit that a request broke. The request changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("item is {size} bytes; the limit is 400 KB")]
    ItemTooLarge { size: usize },
    #[error("batch write holds {count} operations; the limit is 25")]
    BatchWriteTooLarge { count: usize },
    #[error("batch get holds {count} keys; the limit is 100")]
    BatchGetTooLarge { count: usize },
    #[error("batch holds the key ({pk}, {sk}) twice")]
    DuplicateKeyInBatch { pk: String, sk: String },
    #[error("transaction holds {count} actions; the limit is 100")]
    TransactionTooLarge { count: usize },
    #[error("transaction is {size} bytes; the limit is 4 MB")]
    TransactionTooBig { size: usize },
    #[error("transaction touches the key ({pk}, {sk}) twice")]
    DuplicateKeyInTransaction { pk: String, sk: String },
    #[error("{0}")]
    Invalid(String),
}

/// Why a storage call failed. Callers match on the variants; nothing is a bare string
/// except the cause of `Unavailable`, which is for logs.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The condition of a single-item write was false. Nothing was written.
    #[error("the condition of the write was not met")]
    ConditionFailed,
    /// A transaction was cancelled; nothing was written. `failed[i]` is true when
    /// action `i`'s condition was false (all false: a conflict with another write).
    #[error("the transaction was cancelled (failed actions: {failed:?})")]
    TransactionCanceled { failed: Vec<bool> },
    /// The request broke a DynamoDB limit; nothing was written.
    #[error("DynamoDB limit: {0}")]
    Limit(#[from] LimitError),
    /// A cursor that this store did not produce, or that was tampered with.
    #[error("the cursor is not valid")]
    BadCursor,
    /// Throughput exceeded or a conflicting transaction: retry later.
    #[error("the store is throttling requests")]
    Throttled,
    /// Anything else (network, I/O, corruption). Keeps its cause for logs.
    #[error("the store is unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    pub fn unavailable(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        StoreError::Unavailable(e.into())
    }

    /// True when the failed write had a false condition (alone or in a transaction).
    pub fn is_condition_failed(&self) -> bool {
        match self {
            StoreError::ConditionFailed => true,
            StoreError::TransactionCanceled { failed } => failed.iter().any(|f| *f),
            _ => false,
        }
    }

    /// True when retrying the same call later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Throttled | StoreError::Unavailable(_))
            || matches!(self, StoreError::TransactionCanceled { failed } if !failed.iter().any(|f| *f))
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Counts the writes a store performs (items written: a put, an update and a delete
/// count one each; a batch or a transaction counts its actions, checks excluded).
/// Writes per sent message are the cost users pay, so the port counts them.
#[derive(Debug, Default)]
pub struct WriteCounter(AtomicU64);

impl WriteCounter {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The storage port. Every method is one DynamoDB call's worth of semantics.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// GetItem (strongly consistent).
    async fn get(&self, key: &Key) -> StoreResult<Option<Item>>;

    /// PutItem, replacing any item with the same key when `cond` holds.
    async fn put(&self, item: Item, cond: Option<Cond>) -> StoreResult<()>;

    /// UpdateItem; creates the item when missing. Returns the item after the update.
    async fn update(&self, key: &Key, update: Update, cond: Option<Cond>) -> StoreResult<Item>;

    /// DeleteItem. Returns the old item, if there was one.
    async fn delete(&self, key: &Key, cond: Option<Cond>) -> StoreResult<Option<Item>>;

    /// Query one partition of the table or of an index.
    async fn query(&self, query: Query) -> StoreResult<Page>;

    /// BatchGetItem (at most 100 keys, no duplicates). Missing items are left out; the
    /// order of the answer is not the order of the keys. Unprocessed keys are retried
    /// inside the call.
    async fn batch_get(&self, keys: &[Key]) -> StoreResult<Vec<Item>>;

    /// BatchWriteItem (at most 25 operations, no key twice). Unprocessed items are
    /// retried inside the call with backoff until all are written.
    async fn batch_write(&self, ops: Vec<BatchOp>) -> StoreResult<()>;

    /// Any number of puts and deletes (no key twice) as BatchWriteItem calls of at most 25,
    /// in order, stopping at the first that fails (the earlier ones stay written).
    /// DynamoDB runs one call per 25; the embedded engine writes them all in one write
    /// transaction (one fsync), as [`Store::transact_seq`] does for transactions.
    async fn batch_write_all(&self, ops: Vec<BatchOp>) -> StoreResult<()> {
        let mut seen = std::collections::HashSet::new();
        for op in &ops {
            let key = match op {
                BatchOp::Put(item) => Key::of(item),
                BatchOp::Delete(key) => Some(key.clone()),
            };
            if let Some(k) = key
                && !seen.insert(k.clone())
            {
                return Err(LimitError::DuplicateKeyInBatch { pk: k.pk, sk: k.sk }.into());
            }
        }
        let mut ops = ops.into_iter().peekable();
        while ops.peek().is_some() {
            let chunk: Vec<BatchOp> = ops.by_ref().take(limits::MAX_BATCH_WRITE).collect();
            self.batch_write(chunk).await?;
        }
        Ok(())
    }

    /// TransactWriteItems: all actions or none (at most 100, no key twice, 4 MB).
    async fn transact(&self, actions: Vec<TxAction>) -> StoreResult<()>;

    /// Several transactions in order, each all-or-nothing on its own, stopping at the
    /// first that fails. Returns how many committed and, when one failed, its error
    /// (the later ones were not tried). DynamoDB runs them one call each; the embedded
    /// engine commits them in one write transaction (one fsync), so bulk work such as an
    /// import does not pay a disk flush per small transaction.
    async fn transact_seq(&self, groups: Vec<Vec<TxAction>>) -> (usize, Option<StoreError>) {
        let mut done = 0;
        for group in groups {
            match self.transact(group).await {
                Ok(()) => done += 1,
                Err(e) => return (done, Some(e)),
            }
        }
        (done, None)
    }

    /// Bulk work whose every transaction carries its own resume point (a checkpoint
    /// written in the same transaction as the effects it covers, such as an import's):
    /// `first`, idempotent puts and deletes ([`Store::batch_write_all`]; an error there
    /// returns `(0, Some(error))` and tries no group), then `groups` as
    /// [`Store::transact_seq`] runs them. DynamoDB: exactly those calls. The embedded
    /// engine writes it all in one write transaction and may return before it is on
    /// disk: it fsyncs only when its last fsync is older than `Options::relaxed_sync`
    /// (1 s by default). A crash (even of the process) may then lose the last such
    /// commits, but only whole and in order: the store comes back as it was after an
    /// earlier commit, checkpoint included, so the work resumes exactly from there. Any
    /// other write, and any later fsynced commit, makes them durable.
    async fn transact_seq_relaxed(
        &self,
        first: Vec<BatchOp>,
        groups: Vec<Vec<TxAction>>,
    ) -> (usize, Option<StoreError>) {
        if !first.is_empty()
            && let Err(e) = self.batch_write_all(first).await
        {
            return (0, Some(e));
        }
        self.transact_seq(groups).await
    }

    /// The writes this store has performed since it was opened.
    fn writes(&self) -> u64;
}

/// DynamoDB's size of an item in bytes: the UTF-8 length of every attribute name plus
/// the size of its value (numbers: about one byte per two significant digits plus one;
/// maps and lists: 3 bytes plus 1 per element plus their contents).
pub fn item_size(item: &Item) -> usize {
    item.iter().map(|(k, v)| k.len() + value_size(v)).sum()
}

fn value_size(v: &Value) -> usize {
    match v {
        Value::S(s) => s.len(),
        Value::N(n) => number_size(n),
        Value::B(b) => b.len(),
        Value::Bool(_) | Value::Null(_) => 1,
        Value::M(m) => {
            3 + m
                .iter()
                .map(|(k, v)| 1 + k.len() + value_size(v))
                .sum::<usize>()
        }
        Value::L(l) => 3 + l.iter().map(|v| 1 + value_size(v)).sum::<usize>(),
        Value::Ss(s) => s.iter().map(|s| s.len()).sum(),
        Value::Ns(n) => n.iter().map(|n| number_size(n)).sum(),
        Value::Bs(b) => b.iter().map(|b| b.len()).sum(),
    }
}

fn number_size(n: &str) -> usize {
    let digits = n.chars().filter(|c| c.is_ascii_digit()).count();
    digits.div_ceil(2) + 1
}

/// Small constructors for values, so call sites stay short.
pub mod val {
    use super::Value;

    pub fn s(v: impl Into<String>) -> Value {
        Value::S(v.into())
    }
    pub fn n(v: i64) -> Value {
        Value::N(v.to_string())
    }
    pub fn b(v: bool) -> Value {
        Value::Bool(v)
    }
}

/// Read accessors on items.
pub trait ItemExt {
    fn str_attr(&self, name: &str) -> Option<&str>;
    fn num_attr(&self, name: &str) -> Option<i64>;
}

impl ItemExt for Item {
    fn str_attr(&self, name: &str) -> Option<&str> {
        match self.get(name) {
            Some(Value::S(s)) => Some(s),
            _ => None,
        }
    }
    fn num_attr(&self, name: &str) -> Option<i64> {
        match self.get(name) {
            Some(Value::N(n)) => n.parse().ok(),
            _ => None,
        }
    }
}
