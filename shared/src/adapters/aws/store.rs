//! The DynamoDB engine: the [`Store`] port over aws-sdk-dynamodb.
//!
//! Typed conditions and updates become expressions with generated placeholders
//! (`#n0`, `:v0`, …): every attribute name goes through `ExpressionAttributeNames`, so
//! reserved words and odd characters never matter. DynamoDB's limits are checked
//! client-side first, with the same [`LimitError`] variants as the embedded engine, so a
//! call fails the same way on both engines and nothing is sent that DynamoDB would reject.
//!
//! Expired items (a numeric `ttl` in the past) are hidden from reads, and
//! `ItemExists` / `ItemNotExists` treat them as absent: DynamoDB deletes them only
//! eventually (often days later), the embedded engine hides them at once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::batch_get_item::BatchGetItemError;
use aws_sdk_dynamodb::operation::batch_write_item::BatchWriteItemError;
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::get_item::GetItemError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::query::QueryError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeValue as AwsValue, ConditionCheck, Delete, DeleteRequest, KeysAndAttributes, Put,
    PutRequest, ReturnValue, TransactWriteItem, Update as TxUpdate, WriteRequest,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::Rng as _;

use crate::ports::store::{
    BatchOp, Cmp, Cond, Index, Item, Key, LimitError, PK, Page, Query, SK, SortKeyCond, Store,
    StoreError, StoreResult, TTL, TxAction, Update, UpdateAction, Value, WriteCounter, item_size,
    limits,
};

/// Attempts of a batch call whose unprocessed keys or items keep coming back, before
/// the call gives up with [`StoreError::Throttled`].
const MAX_BATCH_ATTEMPTS: u32 = 10;
/// First backoff between batch retries; doubles each attempt (full jitter).
const BACKOFF_BASE: Duration = Duration::from_millis(25);
/// Longest backoff between two batch retries.
const BACKOFF_CAP: Duration = Duration::from_secs(2);
/// DynamoDB's largest partition key value, in bytes.
const MAX_PK_BYTES: usize = 2048;
/// DynamoDB's largest sort key value, in bytes.
const MAX_SK_BYTES: usize = 1024;

/// The [`Store`] port on one DynamoDB table (the layout of [`super::table::TABLE`]).
#[derive(Debug)]
pub struct DynamoStore {
    client: Client,
    table: String,
    writes: WriteCounter,
}

impl DynamoStore {
    /// A store on `table_name` through `client`.
    pub fn new(client: Client, table_name: impl Into<String>) -> Self {
        Self {
            client,
            table: table_name.into(),
            writes: WriteCounter::default(),
        }
    }

    /// A store on `table_name` with a client from aws-config's defaults (environment,
    /// profile, instance role; `AWS_ENDPOINT_URL` points it at an emulator).
    pub async fn from_env(table_name: impl Into<String>) -> Self {
        let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        Self::new(Client::new(&config), table_name)
    }

    /// The SDK client this store uses.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The table this store reads and writes.
    pub fn table_name(&self) -> &str {
        &self.table
    }
}

#[async_trait]
impl Store for DynamoStore {
    async fn get(&self, key: &Key) -> StoreResult<Option<Item>> {
        validate_key(key)?;
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key_to_aws(key)))
            .consistent_read(true)
            .send()
            .await
            .map_err(map_sdk_error)?;
        match out.item {
            Some(item) => {
                let item = item_from_aws(item)?;
                Ok((!is_expired(&item, now_secs())).then_some(item))
            }
            None => Ok(None),
        }
    }

    async fn put(&self, item: Item, cond: Option<Cond>) -> StoreResult<()> {
        validate_item(&item)?;
        cond.as_ref().map_or(Ok(()), validate_cond)?;
        let mut expr = Expr::default();
        let condition = cond.as_ref().map(|c| expr.cond(c, now_secs()));
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item_to_aws(item)))
            .set_condition_expression(condition)
            .set_expression_attribute_names(expr.names())
            .set_expression_attribute_values(expr.values())
            .send()
            .await
            .map_err(map_sdk_error)?;
        self.writes.add(1);
        Ok(())
    }

    async fn update(&self, key: &Key, update: Update, cond: Option<Cond>) -> StoreResult<Item> {
        validate_update(key, &update)?;
        cond.as_ref().map_or(Ok(()), validate_cond)?;
        let mut expr = Expr::default();
        let update_expression = expr.update(&update);
        let condition = cond.as_ref().map(|c| expr.cond(c, now_secs()));
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key_to_aws(key)))
            .set_update_expression(update_expression)
            .set_condition_expression(condition)
            .set_expression_attribute_names(expr.names())
            .set_expression_attribute_values(expr.values())
            .return_values(ReturnValue::AllNew)
            .send()
            .await
            .map_err(|e| map_update_error(e, key, &update))?;
        self.writes.add(1);
        match out.attributes {
            Some(item) => item_from_aws(item),
            None => Ok(key_item(key)),
        }
    }

    async fn delete(&self, key: &Key, cond: Option<Cond>) -> StoreResult<Option<Item>> {
        validate_key(key)?;
        cond.as_ref().map_or(Ok(()), validate_cond)?;
        let now = now_secs();
        let mut expr = Expr::default();
        let condition = cond.as_ref().map(|c| expr.cond(c, now));
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key_to_aws(key)))
            .set_condition_expression(condition)
            .set_expression_attribute_names(expr.names())
            .set_expression_attribute_values(expr.values())
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(map_sdk_error)?;
        self.writes.add(1);
        match out.attributes {
            Some(old) if !old.is_empty() => {
                let old = item_from_aws(old)?;
                Ok((!is_expired(&old, now)).then_some(old))
            }
            _ => Ok(None),
        }
    }

    async fn query(&self, query: Query) -> StoreResult<Page> {
        let (pk_attr, sk_attr) = match query.index {
            None => (PK, SK),
            Some(index) => (index.pk_attr(), index.sk_attr()),
        };
        let limit = match query.limit {
            Some(0) => {
                return Err(
                    LimitError::Invalid("a query's limit must be at least 1".into()).into(),
                );
            }
            Some(n) => Some(i32::try_from(n).unwrap_or(i32::MAX)),
            None => None,
        };
        let start = match &query.cursor {
            Some(cursor) => Some(decode_cursor(cursor, &query)?),
            None => None,
        };
        // No item has an empty key value, and DynamoDB rejects empty strings in key
        // conditions: answer those queries here, the way the embedded engine does.
        if query.pk.is_empty() {
            return Ok(Page::default());
        }
        let sk = match normalize_sort_cond(query.sk.as_ref()) {
            SortRange::Empty => return Ok(Page::default()),
            SortRange::All => None,
            SortRange::Cond(c) => Some(c),
        };

        let mut expr = Expr::default();
        let pk_name = expr.name(pk_attr);
        let pk_value = expr.value(&Value::S(query.pk.clone()));
        let mut key_condition = format!("{pk_name} = {pk_value}");
        if let Some(sk) = sk {
            let n = expr.name(sk_attr);
            let part = match &sk {
                SortKeyCond::Eq(v) => format!("{n} = {}", expr.str_value(v)),
                SortKeyCond::Lt(v) => format!("{n} < {}", expr.str_value(v)),
                SortKeyCond::Le(v) => format!("{n} <= {}", expr.str_value(v)),
                SortKeyCond::Gt(v) => format!("{n} > {}", expr.str_value(v)),
                SortKeyCond::Ge(v) => format!("{n} >= {}", expr.str_value(v)),
                SortKeyCond::BeginsWith(v) => format!("begins_with({n}, {})", expr.str_value(v)),
                SortKeyCond::Between(lo, hi) => {
                    let lo = expr.str_value(lo);
                    let hi = expr.str_value(hi);
                    format!("{n} BETWEEN {lo} AND {hi}")
                }
            };
            key_condition = format!("{key_condition} AND {part}");
        }

        let out = self
            .client
            .query()
            .table_name(&self.table)
            .set_index_name(query.index.map(|i| i.name().to_owned()))
            .key_condition_expression(key_condition)
            .set_expression_attribute_names(expr.names())
            .set_expression_attribute_values(expr.values())
            .scan_index_forward(query.forward)
            .set_limit(limit)
            // DynamoDB rejects strongly consistent reads on a global secondary index.
            .set_consistent_read(query.index.is_none().then_some(query.consistent))
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(map_sdk_error)?;

        let now = now_secs();
        let mut items = Vec::with_capacity(out.items.as_ref().map_or(0, Vec::len));
        for item in out.items.unwrap_or_default() {
            let item = item_from_aws(item)?;
            if !is_expired(&item, now) {
                items.push(item);
            }
        }
        let cursor = match out.last_evaluated_key {
            Some(last) if !last.is_empty() => Some(encode_cursor(&last)?),
            _ => None,
        };
        Ok(Page { items, cursor })
    }

    async fn batch_get(&self, keys: &[Key]) -> StoreResult<Vec<Item>> {
        if keys.len() > limits::MAX_BATCH_GET {
            return Err(LimitError::BatchGetTooLarge { count: keys.len() }.into());
        }
        let mut seen = HashSet::with_capacity(keys.len());
        for key in keys {
            validate_key(key)?;
            if !seen.insert(key) {
                return Err(LimitError::DuplicateKeyInBatch {
                    pk: key.pk.clone(),
                    sk: key.sk.clone(),
                }
                .into());
            }
        }
        let mut found = Vec::with_capacity(keys.len());
        let mut pending: Vec<HashMap<String, AwsValue>> = keys.iter().map(key_to_aws).collect();
        let mut attempt = 0;
        while !pending.is_empty() {
            if attempt > 0 {
                if attempt >= MAX_BATCH_ATTEMPTS {
                    return Err(StoreError::Throttled);
                }
                backoff(attempt).await;
            }
            attempt += 1;
            let request = KeysAndAttributes::builder()
                .set_keys(Some(std::mem::take(&mut pending)))
                .consistent_read(true)
                .build()
                .map_err(StoreError::unavailable)?;
            let out = self
                .client
                .batch_get_item()
                .request_items(&self.table, request)
                .send()
                .await
                .map_err(map_sdk_error)?;
            if let Some(mut responses) = out.responses {
                found.extend(responses.remove(&self.table).unwrap_or_default());
            }
            if let Some(mut unprocessed) = out.unprocessed_keys
                && let Some(rest) = unprocessed.remove(&self.table)
            {
                pending = rest.keys;
            }
        }
        let now = now_secs();
        let mut items = Vec::with_capacity(found.len());
        for item in found {
            let item = item_from_aws(item)?;
            if !is_expired(&item, now) {
                items.push(item);
            }
        }
        Ok(items)
    }

    async fn batch_write(&self, ops: Vec<BatchOp>) -> StoreResult<()> {
        if ops.len() > limits::MAX_BATCH_WRITE {
            return Err(LimitError::BatchWriteTooLarge { count: ops.len() }.into());
        }
        let mut seen = HashSet::with_capacity(ops.len());
        for op in &ops {
            let key = match op {
                BatchOp::Put(item) => {
                    validate_item(item)?;
                    Key::of(item)
                }
                BatchOp::Delete(key) => {
                    validate_key(key)?;
                    Some(key.clone())
                }
            };
            if let Some(key) = key
                && !seen.insert(key.clone())
            {
                return Err(LimitError::DuplicateKeyInBatch {
                    pk: key.pk,
                    sk: key.sk,
                }
                .into());
            }
        }
        let total = ops.len();
        let mut pending = Vec::with_capacity(total);
        for op in ops {
            pending.push(match op {
                BatchOp::Put(item) => WriteRequest::builder()
                    .put_request(
                        PutRequest::builder()
                            .set_item(Some(item_to_aws(item)))
                            .build()
                            .map_err(StoreError::unavailable)?,
                    )
                    .build(),
                BatchOp::Delete(key) => WriteRequest::builder()
                    .delete_request(
                        DeleteRequest::builder()
                            .set_key(Some(key_to_aws(&key)))
                            .build()
                            .map_err(StoreError::unavailable)?,
                    )
                    .build(),
            });
        }
        let mut attempt = 0;
        while !pending.is_empty() {
            if attempt > 0 {
                if attempt >= MAX_BATCH_ATTEMPTS {
                    self.writes.add((total - pending.len()) as u64);
                    return Err(StoreError::Throttled);
                }
                backoff(attempt).await;
            }
            attempt += 1;
            let in_flight = pending.len();
            let result = self
                .client
                .batch_write_item()
                .request_items(&self.table, std::mem::take(&mut pending))
                .send()
                .await;
            let out = match result {
                Ok(out) => out,
                Err(e) => {
                    // The writes of earlier rounds happened; the ones in flight did not.
                    self.writes.add((total - in_flight) as u64);
                    return Err(map_sdk_error(e));
                }
            };
            if let Some(mut unprocessed) = out.unprocessed_items {
                pending = unprocessed.remove(&self.table).unwrap_or_default();
            }
        }
        self.writes.add(total as u64);
        Ok(())
    }

    async fn transact(&self, actions: Vec<TxAction>) -> StoreResult<()> {
        validate_transaction(&actions)?;
        if actions.is_empty() {
            return Ok(());
        }
        let now = now_secs();
        let count = actions.len();
        let mut writes = 0u64;
        let mut items = Vec::with_capacity(count);
        for action in actions {
            let mut expr = Expr::default();
            let item = match action {
                TxAction::Put { item, cond } => {
                    writes += 1;
                    let condition = cond.as_ref().map(|c| expr.cond(c, now));
                    let put = Put::builder()
                        .table_name(&self.table)
                        .set_item(Some(item_to_aws(item)))
                        .set_condition_expression(condition)
                        .set_expression_attribute_names(expr.names())
                        .set_expression_attribute_values(expr.values())
                        .build()
                        .map_err(StoreError::unavailable)?;
                    TransactWriteItem::builder().put(put).build()
                }
                TxAction::Update { key, update, cond } => {
                    writes += 1;
                    // TransactWriteItems requires an update expression: an empty update
                    // still creates the item, as UpdateItem does.
                    let update_expression = expr.update(&update).unwrap_or_else(|| {
                        let n = expr.name(PK);
                        format!("SET {n} = {n}")
                    });
                    let condition = cond.as_ref().map(|c| expr.cond(c, now));
                    let update = TxUpdate::builder()
                        .table_name(&self.table)
                        .set_key(Some(key_to_aws(&key)))
                        .update_expression(update_expression)
                        .set_condition_expression(condition)
                        .set_expression_attribute_names(expr.names())
                        .set_expression_attribute_values(expr.values())
                        .build()
                        .map_err(StoreError::unavailable)?;
                    TransactWriteItem::builder().update(update).build()
                }
                TxAction::Delete { key, cond } => {
                    writes += 1;
                    let condition = cond.as_ref().map(|c| expr.cond(c, now));
                    let delete = Delete::builder()
                        .table_name(&self.table)
                        .set_key(Some(key_to_aws(&key)))
                        .set_condition_expression(condition)
                        .set_expression_attribute_names(expr.names())
                        .set_expression_attribute_values(expr.values())
                        .build()
                        .map_err(StoreError::unavailable)?;
                    TransactWriteItem::builder().delete(delete).build()
                }
                TxAction::Check { key, cond } => {
                    let condition = expr.cond(&cond, now);
                    let check = ConditionCheck::builder()
                        .table_name(&self.table)
                        .set_key(Some(key_to_aws(&key)))
                        .condition_expression(condition)
                        .set_expression_attribute_names(expr.names())
                        .set_expression_attribute_values(expr.values())
                        .build()
                        .map_err(StoreError::unavailable)?;
                    TransactWriteItem::builder().condition_check(check).build()
                }
            };
            items.push(item);
        }
        self.client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
            .map_err(|e| map_transaction_error(e, count))?;
        self.writes.add(writes);
        Ok(())
    }

    fn writes(&self) -> u64 {
        self.writes.get()
    }
}

// ---------------------------------------------------------------------------------------
// Expressions

/// The names and values of one request's expressions (condition, update, key condition
/// share them).
#[derive(Debug, Default)]
struct Expr {
    names: HashMap<String, String>,
    placeholders: HashMap<String, String>,
    values: HashMap<String, AwsValue>,
}

impl Expr {
    /// The placeholder (`#nK`) of an attribute name; one per distinct name.
    fn name(&mut self, attr: &str) -> String {
        if let Some(p) = self.placeholders.get(attr) {
            return p.clone();
        }
        let p = format!("#n{}", self.placeholders.len());
        self.placeholders.insert(attr.to_owned(), p.clone());
        self.names.insert(p.clone(), attr.to_owned());
        p
    }

    /// The placeholder (`:vK`) of a value.
    fn value(&mut self, v: &Value) -> String {
        let p = format!(":v{}", self.values.len());
        self.values.insert(p.clone(), value_to_aws(v.clone()));
        p
    }

    fn str_value(&mut self, s: &str) -> String {
        self.value(&Value::S(s.to_owned()))
    }

    fn names(&self) -> Option<HashMap<String, String>> {
        (!self.names.is_empty()).then(|| self.names.clone())
    }

    fn values(&self) -> Option<HashMap<String, AwsValue>> {
        (!self.values.is_empty()).then(|| self.values.clone())
    }

    /// `#ttl < :now`: the item has expired (false when `ttl` is missing or not a number).
    fn expired(&mut self, now: i64) -> String {
        let ttl = self.name(TTL);
        let now = self.value(&Value::N(now.to_string()));
        format!("{ttl} < {now}")
    }

    /// A condition expression. `now` (epoch seconds) makes `ItemExists` /
    /// `ItemNotExists` treat an expired item as absent, as reads do.
    fn cond(&mut self, cond: &Cond, now: i64) -> String {
        match cond {
            Cond::ItemNotExists => {
                let pk = self.name(PK);
                let expired = self.expired(now);
                format!("(attribute_not_exists({pk}) OR {expired})")
            }
            Cond::ItemExists => {
                let pk = self.name(PK);
                let expired = self.expired(now);
                format!("(attribute_exists({pk}) AND NOT {expired})")
            }
            Cond::AttrExists(a) => format!("attribute_exists({})", self.name(a)),
            Cond::AttrNotExists(a) => format!("attribute_not_exists({})", self.name(a)),
            Cond::Compare(a, cmp, v) => {
                let n = self.name(a);
                let v = self.value(v);
                let op = match cmp {
                    Cmp::Eq => "=",
                    Cmp::Ne => "<>",
                    Cmp::Lt => "<",
                    Cmp::Le => "<=",
                    Cmp::Gt => ">",
                    Cmp::Ge => ">=",
                };
                format!("{n} {op} {v}")
            }
            Cond::BeginsWith(a, prefix) => {
                let n = self.name(a);
                let v = self.str_value(prefix);
                format!("begins_with({n}, {v})")
            }
            // DynamoDB has no literal true/false: an empty AND is a tautology, an empty
            // OR a contradiction, both spelled on the partition key.
            Cond::And(conds) if conds.is_empty() => {
                let pk = self.name(PK);
                format!("(attribute_exists({pk}) OR attribute_not_exists({pk}))")
            }
            Cond::Or(conds) if conds.is_empty() => {
                let pk = self.name(PK);
                format!("(attribute_exists({pk}) AND attribute_not_exists({pk}))")
            }
            Cond::And(conds) => self.join(conds, " AND ", now),
            Cond::Or(conds) => self.join(conds, " OR ", now),
            Cond::Not(inner) => format!("(NOT {})", self.cond(inner, now)),
        }
    }

    fn join(&mut self, conds: &[Cond], op: &str, now: i64) -> String {
        let parts: Vec<String> = conds.iter().map(|c| self.cond(c, now)).collect();
        format!("({})", parts.join(op))
    }

    /// An update expression (`None` for an update without actions). The update must
    /// have passed [`validate_update`].
    fn update(&mut self, update: &Update) -> Option<String> {
        let mut set = Vec::new();
        let mut remove = Vec::new();
        let mut add = Vec::new();
        for action in &update.actions {
            match action {
                UpdateAction::Set(a, v) => {
                    let n = self.name(a);
                    let v = self.value(v);
                    set.push(format!("{n} = {v}"));
                }
                UpdateAction::SetIfNotExists(a, v) => {
                    let n = self.name(a);
                    let v = self.value(v);
                    set.push(format!("{n} = if_not_exists({n}, {v})"));
                }
                UpdateAction::Remove(a) => remove.push(self.name(a)),
                UpdateAction::Add(a, delta) => {
                    let n = self.name(a);
                    let v = self.value(&Value::N(delta.to_string()));
                    add.push(format!("{n} {v}"));
                }
            }
        }
        let mut clauses = Vec::new();
        if !set.is_empty() {
            clauses.push(format!("SET {}", set.join(", ")));
        }
        if !remove.is_empty() {
            clauses.push(format!("REMOVE {}", remove.join(", ")));
        }
        if !add.is_empty() {
            clauses.push(format!("ADD {}", add.join(", ")));
        }
        (!clauses.is_empty()).then(|| clauses.join(" "))
    }
}

/// A sort-key condition, with the empty-string cases answered (DynamoDB rejects empty
/// strings in key conditions; no item has an empty sort key).
enum SortRange {
    All,
    Empty,
    Cond(SortKeyCond),
}

fn normalize_sort_cond(cond: Option<&SortKeyCond>) -> SortRange {
    let Some(cond) = cond else {
        return SortRange::All;
    };
    match cond {
        SortKeyCond::Eq(v) | SortKeyCond::Lt(v) | SortKeyCond::Le(v) if v.is_empty() => {
            SortRange::Empty
        }
        SortKeyCond::Gt(v) | SortKeyCond::Ge(v) | SortKeyCond::BeginsWith(v) if v.is_empty() => {
            SortRange::All
        }
        SortKeyCond::Between(lo, hi) if lo > hi || hi.is_empty() => SortRange::Empty,
        // `"" <= sk <= hi` is `sk <= hi` (every sort key is >= "").
        SortKeyCond::Between(lo, hi) if lo.is_empty() => {
            SortRange::Cond(SortKeyCond::Le(hi.clone()))
        }
        _ => SortRange::Cond(cond.clone()),
    }
}

/// Whether a sort key value satisfies a sort-key condition (cursor checks).
fn sort_matches(cond: &SortKeyCond, sk: &str) -> bool {
    match cond {
        SortKeyCond::Eq(v) => sk == v,
        SortKeyCond::Lt(v) => sk < v.as_str(),
        SortKeyCond::Le(v) => sk <= v.as_str(),
        SortKeyCond::Gt(v) => sk > v.as_str(),
        SortKeyCond::Ge(v) => sk >= v.as_str(),
        SortKeyCond::BeginsWith(v) => sk.starts_with(v.as_str()),
        SortKeyCond::Between(lo, hi) => lo.as_str() <= sk && sk <= hi.as_str(),
    }
}

// ---------------------------------------------------------------------------------------
// Cursors

/// The key attributes a cursor of `query` holds: the table's key, plus the index's key
/// for an index query (DynamoDB's LastEvaluatedKey).
fn cursor_attrs(index: Option<Index>) -> Vec<&'static str> {
    match index {
        None => vec![PK, SK],
        Some(index) => vec![PK, SK, index.pk_attr(), index.sk_attr()],
    }
}

fn encode_cursor(last: &HashMap<String, AwsValue>) -> StoreResult<String> {
    let mut key = BTreeMap::new();
    for (name, value) in last {
        match value {
            AwsValue::S(s) => {
                key.insert(name.as_str(), s.as_str());
            }
            _ => return Err(StoreError::unavailable(CursorKeyNotString(name.clone()))),
        }
    }
    let json = serde_json::to_vec(&key).map_err(StoreError::unavailable)?;
    Ok(URL_SAFE_NO_PAD.encode(json))
}

fn decode_cursor(cursor: &str, query: &Query) -> StoreResult<HashMap<String, AwsValue>> {
    let json = URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| StoreError::BadCursor)?;
    let key: BTreeMap<String, String> =
        serde_json::from_slice(&json).map_err(|_| StoreError::BadCursor)?;
    let expected = cursor_attrs(query.index);
    if key.len() != expected.len() || expected.iter().any(|a| !key.contains_key(*a)) {
        return Err(StoreError::BadCursor);
    }
    if key.values().any(String::is_empty) {
        return Err(StoreError::BadCursor);
    }
    let (pk_attr, sk_attr) = match query.index {
        None => (PK, SK),
        Some(index) => (index.pk_attr(), index.sk_attr()),
    };
    // A cursor never moves a query to another partition: tenants are isolated by pk.
    if key.get(pk_attr) != Some(&query.pk) {
        return Err(StoreError::BadCursor);
    }
    if let (Some(cond), Some(sk)) = (&query.sk, key.get(sk_attr))
        && !sort_matches(cond, sk)
    {
        return Err(StoreError::BadCursor);
    }
    Ok(key
        .into_iter()
        .map(|(name, value)| (name, AwsValue::S(value)))
        .collect())
}

#[derive(Debug, thiserror::Error)]
#[error("DynamoDB returned a LastEvaluatedKey whose attribute {0} is not a string")]
struct CursorKeyNotString(String);

// ---------------------------------------------------------------------------------------
// Client-side limits (the same LimitError variants as the embedded engine)

fn invalid(msg: impl Into<String>) -> StoreError {
    LimitError::Invalid(msg.into()).into()
}

fn validate_key(key: &Key) -> StoreResult<()> {
    if key.pk.is_empty() || key.sk.is_empty() {
        return Err(invalid(
            "the key attributes pk and sk must be non-empty strings",
        ));
    }
    if key.pk.len() > MAX_PK_BYTES {
        return Err(invalid(format!(
            "the partition key is {} bytes; the limit is {MAX_PK_BYTES}",
            key.pk.len()
        )));
    }
    if key.sk.len() > MAX_SK_BYTES {
        return Err(invalid(format!(
            "the sort key is {} bytes; the limit is {MAX_SK_BYTES}",
            key.sk.len()
        )));
    }
    Ok(())
}

/// An index key attribute must be a non-empty string within the key-size limits when
/// present: the table declares it as `S`, and DynamoDB rejects anything else on write.
fn validate_index_attr(name: &str, value: &Value) -> StoreResult<()> {
    let max = if Index::ALL.iter().any(|i| i.pk_attr() == name) {
        MAX_PK_BYTES
    } else {
        MAX_SK_BYTES
    };
    match value {
        Value::S(s) if !s.is_empty() && s.len() <= max => Ok(()),
        _ => Err(invalid(format!(
            "the index key attribute {name} must be a non-empty string of at most {max} bytes"
        ))),
    }
}

fn is_index_attr(name: &str) -> bool {
    Index::ALL
        .iter()
        .any(|i| i.pk_attr() == name || i.sk_attr() == name)
}

fn validate_name(name: &str) -> StoreResult<()> {
    if name.is_empty() {
        return Err(invalid("attribute names may not be empty"));
    }
    Ok(())
}

/// Attribute names in a condition must be non-empty (DynamoDB refuses the expression).
fn validate_cond(cond: &Cond) -> StoreResult<()> {
    match cond {
        Cond::AttrExists(a)
        | Cond::AttrNotExists(a)
        | Cond::Compare(a, _, _)
        | Cond::BeginsWith(a, _) => validate_name(a),
        Cond::And(cs) | Cond::Or(cs) => cs.iter().try_for_each(validate_cond),
        Cond::Not(c) => validate_cond(c),
        Cond::ItemExists | Cond::ItemNotExists => Ok(()),
    }
}

fn validate_item(item: &Item) -> StoreResult<()> {
    let key = Key::of(item).ok_or_else(|| invalid("an item needs string attributes pk and sk"))?;
    validate_key(&key)?;
    for (name, value) in item {
        validate_name(name)?;
        if is_index_attr(name) {
            validate_index_attr(name, value)?;
        }
    }
    let size = item_size(item);
    if size > limits::MAX_ITEM_BYTES {
        return Err(LimitError::ItemTooLarge { size }.into());
    }
    Ok(())
}

/// The bytes an update writes at least: the key plus every value it sets.
fn update_size(key: &Key, update: &Update) -> usize {
    let mut item = key_item(key);
    for action in &update.actions {
        match action {
            UpdateAction::Set(a, v) | UpdateAction::SetIfNotExists(a, v) => {
                item.insert(a.clone(), v.clone());
            }
            UpdateAction::Add(a, d) => {
                item.insert(a.clone(), Value::N(d.to_string()));
            }
            UpdateAction::Remove(_) => {}
        }
    }
    item_size(&item)
}

fn validate_update(key: &Key, update: &Update) -> StoreResult<()> {
    validate_key(key)?;
    let mut seen = HashSet::with_capacity(update.actions.len());
    for action in &update.actions {
        let attr = match action {
            UpdateAction::Set(a, _)
            | UpdateAction::SetIfNotExists(a, _)
            | UpdateAction::Remove(a)
            | UpdateAction::Add(a, _) => a,
        };
        validate_name(attr)?;
        if attr == PK || attr == SK {
            return Err(invalid("the key attributes pk and sk cannot be updated"));
        }
        if !seen.insert(attr.as_str()) {
            // DynamoDB: "Two document paths overlap with each other".
            return Err(invalid(format!(
                "an update touches the attribute {attr} twice"
            )));
        }
        if is_index_attr(attr) {
            match action {
                UpdateAction::Set(a, v) | UpdateAction::SetIfNotExists(a, v) => {
                    validate_index_attr(a, v)?;
                }
                UpdateAction::Add(a, _) => {
                    return Err(invalid(format!(
                        "the index key attribute {a} is a string; it cannot be added to"
                    )));
                }
                UpdateAction::Remove(_) => {}
            }
        }
    }
    let size = update_size(key, update);
    if size > limits::MAX_ITEM_BYTES {
        return Err(LimitError::ItemTooLarge { size }.into());
    }
    Ok(())
}

fn validate_transaction(actions: &[TxAction]) -> StoreResult<()> {
    if actions.len() > limits::MAX_TRANSACTION_ACTIONS {
        return Err(LimitError::TransactionTooLarge {
            count: actions.len(),
        }
        .into());
    }
    let mut total = 0usize;
    let mut seen = HashSet::with_capacity(actions.len());
    for action in actions {
        match action {
            TxAction::Put { cond, .. }
            | TxAction::Update { cond, .. }
            | TxAction::Delete { cond, .. } => cond.as_ref().map_or(Ok(()), validate_cond)?,
            TxAction::Check { cond, .. } => validate_cond(cond)?,
        }
        let key = match action {
            TxAction::Put { item, .. } => {
                validate_item(item)?;
                total += item_size(item);
                Key::of(item)
            }
            TxAction::Update { key, update, .. } => {
                validate_update(key, update)?;
                total += update_size(key, update);
                Some(key.clone())
            }
            TxAction::Delete { key, .. } | TxAction::Check { key, .. } => {
                validate_key(key)?;
                total += item_size(&key_item(key));
                Some(key.clone())
            }
        };
        if let Some(key) = key
            && !seen.insert(key.clone())
        {
            return Err(LimitError::DuplicateKeyInTransaction {
                pk: key.pk,
                sk: key.sk,
            }
            .into());
        }
    }
    if total > limits::MAX_TRANSACTION_BYTES {
        return Err(LimitError::TransactionTooBig { size: total }.into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Errors

/// What this engine needs to know of one operation's modeled errors.
trait OperationError: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static {
    /// ConditionalCheckFailedException.
    fn condition_failed(&self) -> bool {
        false
    }
    /// Throughput exceeded, throttling, or a conflict with a running transaction.
    fn throttled(&self) -> bool;
}

macro_rules! operation_error {
    ($ty:ty, condition: [$($c:ident),*], throttled: [$($t:ident),*]) => {
        impl OperationError for $ty {
            fn condition_failed(&self) -> bool {
                false $(|| self.$c())*
            }
            fn throttled(&self) -> bool {
                false $(|| self.$t())*
            }
        }
    };
}

operation_error!(GetItemError, condition: [], throttled: [
    is_provisioned_throughput_exceeded_exception, is_request_limit_exceeded, is_throttling_exception
]);
operation_error!(QueryError, condition: [], throttled: [
    is_provisioned_throughput_exceeded_exception, is_request_limit_exceeded, is_throttling_exception
]);
operation_error!(BatchGetItemError, condition: [], throttled: [
    is_provisioned_throughput_exceeded_exception, is_request_limit_exceeded, is_throttling_exception
]);
operation_error!(BatchWriteItemError, condition: [], throttled: [
    is_provisioned_throughput_exceeded_exception, is_request_limit_exceeded, is_throttling_exception,
    is_replicated_write_conflict_exception
]);
operation_error!(PutItemError, condition: [is_conditional_check_failed_exception], throttled: [
    is_provisioned_throughput_exceeded_exception, is_request_limit_exceeded, is_throttling_exception,
    is_transaction_conflict_exception, is_replicated_write_conflict_exception
]);
operation_error!(UpdateItemError, condition: [is_conditional_check_failed_exception], throttled: [
    is_provisioned_throughput_exceeded_exception, is_request_limit_exceeded, is_throttling_exception,
    is_transaction_conflict_exception, is_replicated_write_conflict_exception
]);
operation_error!(DeleteItemError, condition: [is_conditional_check_failed_exception], throttled: [
    is_provisioned_throughput_exceeded_exception, is_request_limit_exceeded, is_throttling_exception,
    is_transaction_conflict_exception, is_replicated_write_conflict_exception
]);
operation_error!(TransactWriteItemsError, condition: [], throttled: [
    is_provisioned_throughput_exceeded_exception, is_request_limit_exceeded, is_throttling_exception,
    is_transaction_in_progress_exception
]);

/// Whether a ValidationException's message is DynamoDB's (or moto's) "item too large".
fn is_item_size_message(message: Option<&str>) -> bool {
    message.is_some_and(|m| {
        let m = m.to_ascii_lowercase();
        m.contains("item size") && m.contains("exceeded")
    })
}

fn map_sdk_error<E: OperationError>(err: SdkError<E, HttpResponse>) -> StoreError {
    map_sdk_error_with_size(err, limits::MAX_ITEM_BYTES + 1)
}

/// Maps an SDK error; `size` is the best known size for an "item too large" answer.
fn map_sdk_error_with_size<E: OperationError>(
    err: SdkError<E, HttpResponse>,
    size: usize,
) -> StoreError {
    if let Some(service) = err.as_service_error() {
        if service.condition_failed() {
            return StoreError::ConditionFailed;
        }
        if service.throttled() {
            return StoreError::Throttled;
        }
        if service.code() == Some("ValidationException") {
            // A request DynamoDB refused as invalid (the client-side checks normally
            // catch these first). Not retryable, so not `Unavailable`.
            if is_item_size_message(service.message()) {
                return LimitError::ItemTooLarge { size }.into();
            }
            return invalid(format!(
                "DynamoDB rejected the request: {}",
                service.message().unwrap_or("ValidationException")
            ));
        }
    }
    StoreError::unavailable(err)
}

fn map_update_error(
    err: SdkError<UpdateItemError, HttpResponse>,
    key: &Key,
    update: &Update,
) -> StoreError {
    // The item after the update is larger than what the update sets; say at least the
    // limit plus one when the update alone is smaller.
    let size = update_size(key, update).max(limits::MAX_ITEM_BYTES + 1);
    map_sdk_error_with_size(err, size)
}

fn map_transaction_error(
    err: SdkError<TransactWriteItemsError, HttpResponse>,
    count: usize,
) -> StoreError {
    let Some(TransactWriteItemsError::TransactionCanceledException(canceled)) =
        err.as_service_error()
    else {
        return map_sdk_error(err);
    };
    let reasons = canceled.cancellation_reasons();
    let code = |i: usize| reasons.get(i).and_then(|r| r.code());
    let failed: Vec<bool> = (0..count)
        .map(|i| code(i) == Some("ConditionalCheckFailed"))
        .collect();
    if failed.iter().any(|f| *f) {
        return StoreError::TransactionCanceled { failed };
    }
    if let Some(reason) = reasons.iter().find(|r| r.code() == Some("ValidationError")) {
        if is_item_size_message(reason.message()) {
            return LimitError::ItemTooLarge {
                size: limits::MAX_ITEM_BYTES + 1,
            }
            .into();
        }
        return invalid(format!(
            "DynamoDB rejected the transaction: {}",
            reason.message().unwrap_or("ValidationError")
        ));
    }
    if reasons.iter().any(|r| {
        matches!(
            r.code(),
            Some("ThrottlingError" | "ProvisionedThroughputExceeded" | "RequestLimitExceeded")
        )
    }) {
        return StoreError::Throttled;
    }
    // TransactionConflict (another transaction touched one of the items): no action's
    // condition was false, and retrying may succeed.
    StoreError::TransactionCanceled { failed }
}

// ---------------------------------------------------------------------------------------
// Values

#[derive(Debug, thiserror::Error)]
#[error("DynamoDB returned an attribute value of a type this engine does not know")]
struct UnknownAttributeType;

fn value_to_aws(v: Value) -> AwsValue {
    v.into()
}

fn value_from_aws(v: AwsValue) -> StoreResult<Value> {
    Ok(match v {
        AwsValue::S(s) => Value::S(s),
        AwsValue::N(n) => Value::N(n),
        AwsValue::B(b) => Value::B(b.into_inner()),
        AwsValue::Bool(b) => Value::Bool(b),
        AwsValue::Null(b) => Value::Null(b),
        AwsValue::M(m) => Value::M(item_from_aws(m)?),
        AwsValue::L(l) => Value::L(
            l.into_iter()
                .map(value_from_aws)
                .collect::<Result<_, _>>()?,
        ),
        AwsValue::Ss(s) => Value::Ss(s),
        AwsValue::Ns(n) => Value::Ns(n),
        AwsValue::Bs(b) => Value::Bs(b.into_iter().map(Blob::into_inner).collect()),
        _ => return Err(StoreError::unavailable(UnknownAttributeType)),
    })
}

fn item_to_aws(item: Item) -> HashMap<String, AwsValue> {
    item.into_iter()
        .map(|(k, v)| (k, value_to_aws(v)))
        .collect()
}

fn item_from_aws(item: HashMap<String, AwsValue>) -> StoreResult<Item> {
    item.into_iter()
        .map(|(k, v)| Ok((k, value_from_aws(v)?)))
        .collect()
}

fn key_to_aws(key: &Key) -> HashMap<String, AwsValue> {
    HashMap::from([
        (PK.to_owned(), AwsValue::S(key.pk.clone())),
        (SK.to_owned(), AwsValue::S(key.sk.clone())),
    ])
}

fn key_item(key: &Key) -> Item {
    HashMap::from([
        (PK.to_owned(), Value::S(key.pk.clone())),
        (SK.to_owned(), Value::S(key.sk.clone())),
    ])
}

// ---------------------------------------------------------------------------------------
// Time and backoff

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// An item whose `ttl` (epoch seconds, a number) is in the past has expired.
fn is_expired(item: &Item, now: i64) -> bool {
    match item.get(TTL) {
        Some(Value::N(n)) => n.parse::<f64>().is_ok_and(|ttl| ttl < now as f64),
        _ => false,
    }
}

/// Exponential backoff with full jitter before retry `attempt` (1-based).
async fn backoff(attempt: u32) {
    let ceiling = BACKOFF_BASE
        .saturating_mul(1u32 << attempt.min(10))
        .min(BACKOFF_CAP);
    let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
    let wait = rand::rng().random_range(millis / 2..=millis);
    tokio::time::sleep(Duration::from_millis(wait)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::store::val;

    #[test]
    fn names_and_values_are_placeholders() {
        let mut e = Expr::default();
        let c = Cond::And(vec![
            Cond::ItemExists,
            Cond::eq("status", val::s("queued")),
            Cond::Not(Box::new(Cond::BeginsWith("status".into(), "x".into()))),
        ]);
        let s = e.cond(&c, 100);
        assert_eq!(
            s,
            "((attribute_exists(#n0) AND NOT #n1 < :v0) AND #n2 = :v1 AND (NOT begins_with(#n2, :v2)))"
        );
        assert_eq!(e.names.get("#n2").map(String::as_str), Some("status"));
        let u = e.update(&Update::new().set("a", val::n(1)).remove("b").add("c", 2));
        assert_eq!(u.as_deref(), Some("SET #n3 = :v3 REMOVE #n4 ADD #n5 :v4"));
    }

    #[test]
    fn cursor_round_trip_and_partition_check() {
        let last = HashMap::from([
            ("pk".to_owned(), AwsValue::S("w1#c".into())),
            ("sk".to_owned(), AwsValue::S("c#1".into())),
        ]);
        let cursor = encode_cursor(&last).expect("encodes");
        let q = Query::partition("w1#c").cursor(Some(cursor.clone()));
        assert_eq!(decode_cursor(&cursor, &q).expect("decodes"), last);
        let other = Query::partition("w2#c");
        assert!(matches!(
            decode_cursor(&cursor, &other),
            Err(StoreError::BadCursor)
        ));
        let gsi = Query::index(Index::Gsi1, "w1#c");
        assert!(matches!(
            decode_cursor(&cursor, &gsi),
            Err(StoreError::BadCursor)
        ));
        assert!(matches!(
            decode_cursor("not base64!", &q),
            Err(StoreError::BadCursor)
        ));
    }

    #[test]
    fn updates_of_keys_and_overlaps_are_invalid() {
        let k = Key::new("p", "s");
        assert!(matches!(
            validate_update(&k, &Update::new().set("pk", val::s("x"))),
            Err(StoreError::Limit(LimitError::Invalid(_)))
        ));
        assert!(matches!(
            validate_update(&k, &Update::new().set("a", val::s("x")).add("a", 1)),
            Err(StoreError::Limit(LimitError::Invalid(_)))
        ));
    }
}
