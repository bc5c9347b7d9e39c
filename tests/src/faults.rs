//! A store wrapper that injects faults, for tests of what the API and the use cases do
//! when DynamoDB throttles or fails mid-way.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use mailpilot_shared::ports::store::{
    BatchOp, Cond, Item, Key, Page, Query, Store, StoreError, StoreResult, TxAction, Update,
};

/// Which fault to inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Throttled,
    Unavailable,
}

/// Passes every call to the inner store, except that calls number `from..from+count`
/// (counting every call, reads included) fail with the fault, writing nothing.
pub struct FaultyStore {
    inner: Arc<dyn Store>,
    calls: AtomicU64,
    from: AtomicU64,
    count: AtomicU64,
    fault: Fault,
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn Store>, fault: Fault) -> Self {
        Self {
            inner,
            calls: AtomicU64::new(0),
            from: AtomicU64::new(u64::MAX),
            count: AtomicU64::new(0),
            fault,
        }
    }

    /// Fails the next `count` calls.
    pub fn fail_next(&self, count: u64) {
        self.from
            .store(self.calls.load(Ordering::SeqCst), Ordering::SeqCst);
        self.count.store(count, Ordering::SeqCst);
    }

    /// Fails `count` calls starting `after` calls from now.
    pub fn fail_after(&self, after: u64, count: u64) {
        self.from
            .store(self.calls.load(Ordering::SeqCst) + after, Ordering::SeqCst);
        self.count.store(count, Ordering::SeqCst);
    }

    /// Stops injecting faults.
    pub fn heal(&self) {
        self.count.store(0, Ordering::SeqCst);
    }

    fn check(&self) -> StoreResult<()> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let from = self.from.load(Ordering::SeqCst);
        if n >= from && n < from.saturating_add(self.count.load(Ordering::SeqCst)) {
            return Err(match self.fault {
                Fault::Throttled => StoreError::Throttled,
                Fault::Unavailable => StoreError::unavailable("injected fault"),
            });
        }
        Ok(())
    }
}

#[async_trait]
impl Store for FaultyStore {
    async fn get(&self, key: &Key) -> StoreResult<Option<Item>> {
        self.check()?;
        self.inner.get(key).await
    }
    async fn put(&self, item: Item, cond: Option<Cond>) -> StoreResult<()> {
        self.check()?;
        self.inner.put(item, cond).await
    }
    async fn update(&self, key: &Key, update: Update, cond: Option<Cond>) -> StoreResult<Item> {
        self.check()?;
        self.inner.update(key, update, cond).await
    }
    async fn delete(&self, key: &Key, cond: Option<Cond>) -> StoreResult<Option<Item>> {
        self.check()?;
        self.inner.delete(key, cond).await
    }
    async fn query(&self, query: Query) -> StoreResult<Page> {
        self.check()?;
        self.inner.query(query).await
    }
    async fn batch_get(&self, keys: &[Key]) -> StoreResult<Vec<Item>> {
        self.check()?;
        self.inner.batch_get(keys).await
    }
    async fn batch_write(&self, ops: Vec<BatchOp>) -> StoreResult<()> {
        self.check()?;
        self.inner.batch_write(ops).await
    }
    async fn transact(&self, actions: Vec<TxAction>) -> StoreResult<()> {
        self.check()?;
        self.inner.transact(actions).await
    }
    fn writes(&self) -> u64 {
        self.inner.writes()
    }
}
