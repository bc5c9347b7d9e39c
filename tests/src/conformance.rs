//! The storage conformance suite: the same tests, run against both engines.
//!
//! Every function takes a fresh `Arc<dyn Store>` and writes only under partition keys
//! that start with a new UUID, so tests can share one table. [`conformance_tests!`]
//! expands one `#[tokio::test]` per function, given an expression that builds a
//! [`Harness`] (see `tests/conformance_embedded.rs` and `tests/conformance_dynamodb.rs`).
//!
//! Behaviour that only one engine can show (reopening a file, GSI lag mode, SIGKILL)
//! lives in the embedded test file, not here.

use std::any::Any;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mailpilot_shared::ports::store::val::{n, s};
use mailpilot_shared::ports::store::{
    BatchOp, Cond, Index, Item, ItemExt, Key, LimitError, Page, Query, SortKeyCond, Store,
    StoreError, TxAction, Update, Value, item_size, limits,
};
use uuid::Uuid;

/// A store under test, plus whatever must live as long as it (a temporary directory).
pub struct Harness {
    pub store: Arc<dyn Store>,
    _keep: Box<dyn Any + Send + Sync>,
}

impl Harness {
    pub fn new(store: Arc<dyn Store>, keep: impl Any + Send + Sync) -> Self {
        Self {
            store,
            _keep: Box::new(keep),
        }
    }
}

/// A directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let path = std::env::temp_dir().join(format!("mailpilot-test-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&path).expect("creates a temporary directory");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Default for TempDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Expands one `#[tokio::test]` per conformance test. `$make` is an expression whose
/// value is a future of a [`Harness`]; it is evaluated once per test.
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!(@each $make;
            put_then_get_returns_the_item,
            get_of_a_missing_item_returns_none,
            put_replaces_the_whole_item,
            delete_returns_the_old_item_and_removes_it,
            conditional_delete_with_false_condition_keeps_the_item,
            duplicate_conditional_put_fails_with_condition_failed,
            item_exists_condition_guards_puts,
            comparisons_on_numbers_are_numeric,
            comparisons_on_strings_are_bytewise,
            values_of_different_types_never_compare,
            comparisons_on_a_missing_attribute_are_false_except_ne,
            begins_with_and_boolean_combinators_evaluate_like_dynamodb,
            update_sets_adds_removes_and_returns_the_new_item,
            update_creates_the_item_when_missing,
            set_if_not_exists_keeps_an_existing_value,
            update_with_false_condition_fails_and_writes_nothing,
            add_on_a_non_number_is_rejected,
            updating_a_key_attribute_is_rejected,
            query_returns_the_partition_in_sort_key_order_both_ways,
            query_sort_key_conditions_select_the_right_items,
            query_pages_with_limit_and_cursor,
            pagination_over_2500_items_returns_each_exactly_once_both_ways,
            query_pages_are_capped_at_one_megabyte,
            index_query_finds_items_by_their_index_keys,
            index_follows_updates_and_deletes,
            batch_get_leaves_out_missing_keys,
            batch_get_over_100_keys_is_rejected,
            batch_get_with_duplicate_keys_is_rejected,
            batch_write_puts_and_deletes,
            batch_write_over_25_operations_is_rejected,
            batch_write_with_duplicate_keys_is_rejected,
            transaction_writes_every_action,
            transaction_with_a_false_condition_writes_nothing,
            transaction_over_100_actions_is_rejected,
            relaxed_sequence_writes_the_batch_then_groups_up_to_the_failing_one,
            transaction_touching_one_key_twice_is_rejected,
            transaction_over_4_mb_is_rejected,
            items_over_400_kb_are_rejected_by_every_write,
            concurrent_adds_from_50_tasks_are_exact,
            malformed_cursor_is_rejected_as_bad_cursor,
            cursor_from_another_partition_or_index_is_rejected,
            expired_items_are_hidden_from_reads_and_conditions,
            write_counter_counts_items_written,
        );
    };
    (@each $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let harness: $crate::conformance::Harness = $make.await;
                $crate::conformance::$name(::std::sync::Arc::clone(&harness.store)).await;
            }
        )*
    };
}

// ---------------------------------------------------------------------------------
// Helpers

/// A partition key no other test uses.
pub fn new_pk(tag: &str) -> String {
    format!("conf{}#{tag}", Uuid::new_v4().simple())
}

pub fn key(pk: &str, sk: &str) -> Key {
    Key::new(pk, sk)
}

/// An item with key `(pk, sk)` and the given attributes.
pub fn item<'a>(pk: &str, sk: &str, attrs: impl IntoIterator<Item = (&'a str, Value)>) -> Item {
    let mut item = Item::from([("pk".to_string(), s(pk)), ("sk".to_string(), s(sk))]);
    for (name, v) in attrs {
        item.insert(name.to_string(), v);
    }
    item
}

/// A string of `len` bytes.
fn blob(len: usize) -> Value {
    s("x".repeat(len))
}

fn sks(items: &[Item]) -> Vec<String> {
    items
        .iter()
        .map(|i| i.str_attr("sk").unwrap_or_default().to_string())
        .collect()
}

/// True when `cond` holds on the item at `key`: tried as a conditional update that only
/// sets a probe attribute (so the item is created if missing and the condition passes).
pub async fn holds(store: &dyn Store, key: &Key, cond: Cond) -> bool {
    let probe = Update::new().set("probe", n(1));
    match store.update(key, probe, Some(cond.clone())).await {
        Ok(_) => true,
        Err(StoreError::ConditionFailed) => false,
        Err(e) => panic!("condition {cond:?} failed with an unexpected error: {e:?}"),
    }
}

/// Every page of a query, following cursors; panics if it does not end.
async fn drain(store: &dyn Store, query: Query) -> (Vec<Item>, usize) {
    let mut items = Vec::new();
    let mut pages = 0;
    let mut cursor = None;
    loop {
        let page: Page = store
            .query(query.clone().cursor(cursor))
            .await
            .expect("query succeeds");
        pages += 1;
        assert!(pages < 10_000, "pagination does not end");
        if let Some(limit) = query.limit {
            assert!(
                page.items.len() <= limit,
                "a page holds more than `limit` items"
            );
        }
        items.extend(page.items);
        match page.cursor {
            Some(c) => cursor = Some(c),
            None => return (items, pages),
        }
    }
}

/// Queries an index until `done` holds on all of its items (GSIs are eventually
/// consistent on DynamoDB), for at most ten seconds; returns the last answer.
async fn poll_index(store: &dyn Store, query: Query, done: impl Fn(&[Item]) -> bool) -> Vec<Item> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (items, _) = drain(store, query.clone()).await;
        if done(&items) || Instant::now() > deadline {
            return items;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn expect_limit(
    result: Result<impl std::fmt::Debug, StoreError>,
    what: &str,
    ok: impl Fn(&LimitError) -> bool,
) {
    match result {
        Err(StoreError::Limit(e)) if ok(&e) => {}
        other => panic!("{what}: expected a specific limit error, got {other:?}"),
    }
}

fn epoch_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------
// Get, put, delete

pub async fn put_then_get_returns_the_item(store: Arc<dyn Store>) {
    let pk = new_pk("get");
    let it = item(
        &pk,
        "a",
        [
            ("name", s("Ada")),
            ("age", n(36)),
            ("ok", Value::Bool(true)),
            ("bin", Value::B(vec![0, 1, 2])),
            ("tags", Value::Ss(vec!["x".into(), "y".into()])),
            ("list", Value::L(vec![s("one"), n(2)])),
            ("map", Value::M([("k".to_string(), s("v"))].into())),
            ("nothing", Value::Null(true)),
        ],
    );
    store.put(it.clone(), None).await.expect("put succeeds");
    let got = store.get(&key(&pk, "a")).await.expect("get succeeds");
    let mut got = got.expect("the item exists");
    // Sets come back in any order.
    if let Some(Value::Ss(tags)) = got.get_mut("tags") {
        tags.sort();
    }
    assert_eq!(got, it);
}

pub async fn get_of_a_missing_item_returns_none(store: Arc<dyn Store>) {
    let pk = new_pk("missing");
    assert_eq!(
        store.get(&key(&pk, "nope")).await.expect("get succeeds"),
        None
    );
}

pub async fn put_replaces_the_whole_item(store: Arc<dyn Store>) {
    let pk = new_pk("replace");
    store
        .put(item(&pk, "a", [("x", n(1)), ("y", n(2))]), None)
        .await
        .expect("first put");
    store
        .put(item(&pk, "a", [("z", n(3))]), None)
        .await
        .expect("second put");
    let got = store
        .get(&key(&pk, "a"))
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(got, item(&pk, "a", [("z", n(3))]));
}

pub async fn delete_returns_the_old_item_and_removes_it(store: Arc<dyn Store>) {
    let pk = new_pk("delete");
    let it = item(&pk, "a", [("x", n(1))]);
    store.put(it.clone(), None).await.expect("put");
    let old = store.delete(&key(&pk, "a"), None).await.expect("delete");
    assert_eq!(old, Some(it));
    assert_eq!(store.get(&key(&pk, "a")).await.expect("get"), None);
    let again = store
        .delete(&key(&pk, "a"), None)
        .await
        .expect("delete of a missing item");
    assert_eq!(again, None);
}

pub async fn conditional_delete_with_false_condition_keeps_the_item(store: Arc<dyn Store>) {
    let pk = new_pk("cdelete");
    store
        .put(item(&pk, "a", [("v", n(1))]), None)
        .await
        .expect("put");
    let err = store
        .delete(&key(&pk, "a"), Some(Cond::eq("v", n(2))))
        .await
        .expect_err("the condition is false");
    assert!(matches!(err, StoreError::ConditionFailed), "got {err:?}");
    assert!(store.get(&key(&pk, "a")).await.expect("get").is_some());
    store
        .delete(&key(&pk, "a"), Some(Cond::eq("v", n(1))))
        .await
        .expect("the condition is true");
    assert!(store.get(&key(&pk, "a")).await.expect("get").is_none());
}

// ---------------------------------------------------------------------------------
// Conditions

pub async fn duplicate_conditional_put_fails_with_condition_failed(store: Arc<dyn Store>) {
    let pk = new_pk("dup");
    let first = item(&pk, "a", [("v", n(1))]);
    store
        .put(first.clone(), Some(Cond::ItemNotExists))
        .await
        .expect("the first put succeeds");
    let err = store
        .put(item(&pk, "a", [("v", n(2))]), Some(Cond::ItemNotExists))
        .await
        .expect_err("the second put fails");
    assert!(matches!(err, StoreError::ConditionFailed), "got {err:?}");
    assert!(err.is_condition_failed());
    assert_eq!(store.get(&key(&pk, "a")).await.expect("get"), Some(first));
}

pub async fn item_exists_condition_guards_puts(store: Arc<dyn Store>) {
    let pk = new_pk("exists");
    let err = store
        .put(item(&pk, "a", []), Some(Cond::ItemExists))
        .await
        .expect_err("no item yet");
    assert!(matches!(err, StoreError::ConditionFailed), "got {err:?}");
    assert_eq!(store.get(&key(&pk, "a")).await.expect("get"), None);
    store.put(item(&pk, "a", []), None).await.expect("put");
    store
        .put(item(&pk, "a", [("v", n(1))]), Some(Cond::ItemExists))
        .await
        .expect("the item exists now");
}

pub async fn comparisons_on_numbers_are_numeric(store: Arc<dyn Store>) {
    let pk = new_pk("num");
    let k = key(&pk, "a");
    store
        .put(
            item(
                &pk,
                "a",
                [("n", n(10)), ("big", Value::N("9007199254740993".into()))],
            ),
            None,
        )
        .await
        .expect("put");
    // As strings, "10" < "9"; as numbers it is greater.
    assert!(holds(&*store, &k, Cond::gt("n", n(9))).await);
    assert!(!holds(&*store, &k, Cond::lt("n", n(9))).await);
    assert!(holds(&*store, &k, Cond::ge("n", n(10))).await);
    assert!(holds(&*store, &k, Cond::le("n", n(10))).await);
    assert!(!holds(&*store, &k, Cond::lt("n", n(10))).await);
    assert!(!holds(&*store, &k, Cond::gt("n", n(10))).await);
    assert!(holds(&*store, &k, Cond::eq("n", n(10))).await);
    assert!(!holds(&*store, &k, Cond::ne("n", n(10))).await);
    assert!(holds(&*store, &k, Cond::ne("n", n(11))).await);
    assert!(holds(&*store, &k, Cond::gt("n", Value::N("9.5".into()))).await);
    assert!(holds(&*store, &k, Cond::gt("n", n(-100))).await);
    // Integers beyond f64's 2^53 compare exactly.
    assert!(
        holds(
            &*store,
            &k,
            Cond::gt("big", Value::N("9007199254740992".into()))
        )
        .await
    );
    assert!(
        !holds(
            &*store,
            &k,
            Cond::eq("big", Value::N("9007199254740992".into()))
        )
        .await
    );
}

pub async fn comparisons_on_strings_are_bytewise(store: Arc<dyn Store>) {
    let pk = new_pk("str");
    let k = key(&pk, "a");
    store
        .put(item(&pk, "a", [("s", s("b"))]), None)
        .await
        .expect("put");
    assert!(holds(&*store, &k, Cond::lt("s", s("c"))).await);
    assert!(holds(&*store, &k, Cond::gt("s", s("a"))).await);
    assert!(holds(&*store, &k, Cond::ge("s", s("b"))).await);
    assert!(holds(&*store, &k, Cond::le("s", s("b"))).await);
    assert!(holds(&*store, &k, Cond::lt("s", s("ba"))).await);
    // Upper case sorts before lower case in bytes.
    assert!(holds(&*store, &k, Cond::gt("s", s("B"))).await);
    assert!(holds(&*store, &k, Cond::eq("s", s("b"))).await);
    assert!(!holds(&*store, &k, Cond::eq("s", s("B"))).await);
}

pub async fn values_of_different_types_never_compare(store: Arc<dyn Store>) {
    let pk = new_pk("types");
    let k = key(&pk, "a");
    store
        .put(item(&pk, "a", [("n", n(10)), ("s", s("10"))]), None)
        .await
        .expect("put");
    assert!(!holds(&*store, &k, Cond::eq("n", s("10"))).await);
    assert!(holds(&*store, &k, Cond::ne("n", s("10"))).await);
    assert!(!holds(&*store, &k, Cond::eq("s", n(10))).await);
    assert!(holds(&*store, &k, Cond::ne("s", n(10))).await);
    // Ordering comparisons across types (`n < "9"`) are false on DynamoDB too, but moto
    // answers them with an HTTP 500, so they are checked in the embedded tests only.
}

pub async fn comparisons_on_a_missing_attribute_are_false_except_ne(store: Arc<dyn Store>) {
    let pk = new_pk("missattr");
    let k = key(&pk, "a");
    store.put(item(&pk, "a", []), None).await.expect("put");
    assert!(!holds(&*store, &k, Cond::eq("x", n(1))).await);
    assert!(holds(&*store, &k, Cond::ne("x", n(1))).await);
    assert!(!holds(&*store, &k, Cond::lt("x", n(1))).await);
    assert!(!holds(&*store, &k, Cond::le("x", n(1))).await);
    assert!(!holds(&*store, &k, Cond::gt("x", n(1))).await);
    assert!(!holds(&*store, &k, Cond::ge("x", n(1))).await);
    assert!(!holds(&*store, &k, Cond::BeginsWith("x".into(), "a".into())).await);
    assert!(holds(&*store, &k, Cond::AttrNotExists("x".into())).await);
    assert!(!holds(&*store, &k, Cond::AttrExists("x".into())).await);
    assert!(holds(&*store, &k, Cond::AttrExists("pk".into())).await);

    // On a missing item every attribute is missing.
    let absent = key(&pk, "absent-1");
    assert!(!holds(&*store, &absent, Cond::eq("x", n(1))).await);
    assert!(holds(&*store, &absent, Cond::ne("x", n(1))).await);
    let absent = key(&pk, "absent-2");
    assert!(!holds(&*store, &absent, Cond::ItemExists).await);
    assert!(holds(&*store, &absent, Cond::ItemNotExists).await);
}

pub async fn begins_with_and_boolean_combinators_evaluate_like_dynamodb(store: Arc<dyn Store>) {
    let pk = new_pk("combinators");
    let k = key(&pk, "a");
    store
        .put(item(&pk, "a", [("s", s("hello")), ("n", n(5))]), None)
        .await
        .expect("put");
    assert!(holds(&*store, &k, Cond::BeginsWith("s".into(), "he".into())).await);
    assert!(!holds(&*store, &k, Cond::BeginsWith("s".into(), "lo".into())).await);
    // begins_with on a number is false.
    assert!(!holds(&*store, &k, Cond::BeginsWith("n".into(), "5".into())).await);

    let t = || Cond::eq("n", n(5));
    let f = || Cond::eq("n", n(6));
    assert!(holds(&*store, &k, Cond::And(vec![t(), t()])).await);
    assert!(!holds(&*store, &k, Cond::And(vec![t(), f()])).await);
    assert!(holds(&*store, &k, Cond::Or(vec![f(), t()])).await);
    assert!(!holds(&*store, &k, Cond::Or(vec![f(), f()])).await);
    assert!(holds(&*store, &k, Cond::Not(Box::new(f()))).await);
    assert!(!holds(&*store, &k, Cond::Not(Box::new(t()))).await);
    assert!(
        holds(
            &*store,
            &k,
            Cond::And(vec![
                Cond::Or(vec![f(), Cond::BeginsWith("s".into(), "h".into())]),
                Cond::Not(Box::new(Cond::AttrExists("missing".into()))),
            ])
        )
        .await
    );
}

// ---------------------------------------------------------------------------------
// Update

pub async fn update_sets_adds_removes_and_returns_the_new_item(store: Arc<dyn Store>) {
    let pk = new_pk("update");
    let k = key(&pk, "a");
    store
        .put(
            item(
                &pk,
                "a",
                [("gone", s("x")), ("count", n(5)), ("name", s("old"))],
            ),
            None,
        )
        .await
        .expect("put");
    let new = store
        .update(
            &k,
            Update::new()
                .set("name", s("new"))
                .remove("gone")
                .add("count", 3)
                .add("fresh", -2),
            None,
        )
        .await
        .expect("update");
    let expected = item(
        &pk,
        "a",
        [("name", s("new")), ("count", n(8)), ("fresh", n(-2))],
    );
    assert_eq!(new, expected);
    assert_eq!(store.get(&k).await.expect("get"), Some(expected));
}

pub async fn update_creates_the_item_when_missing(store: Arc<dyn Store>) {
    let pk = new_pk("upsert");
    let k = key(&pk, "a");
    let new = store
        .update(&k, Update::new().set("v", s("x")).add("c", 1), None)
        .await
        .expect("update");
    let expected = item(&pk, "a", [("v", s("x")), ("c", n(1))]);
    assert_eq!(new, expected);
    assert_eq!(store.get(&k).await.expect("get"), Some(expected));
}

pub async fn set_if_not_exists_keeps_an_existing_value(store: Arc<dyn Store>) {
    let pk = new_pk("ifnotexists");
    let k = key(&pk, "a");
    let first = store
        .update(&k, Update::new().set_if_not_exists("created", n(100)), None)
        .await
        .expect("first update");
    assert_eq!(first.num_attr("created"), Some(100));
    let second = store
        .update(
            &k,
            Update::new()
                .set_if_not_exists("created", n(200))
                .set("touched", n(1)),
            None,
        )
        .await
        .expect("second update");
    assert_eq!(second.num_attr("created"), Some(100));
    assert_eq!(second.num_attr("touched"), Some(1));
}

pub async fn update_with_false_condition_fails_and_writes_nothing(store: Arc<dyn Store>) {
    let pk = new_pk("condupdate");
    let k = key(&pk, "a");
    store
        .put(item(&pk, "a", [("state", s("sent"))]), None)
        .await
        .expect("put");
    let err = store
        .update(
            &k,
            Update::new().set("state", s("queued")),
            Some(Cond::eq("state", s("draft"))),
        )
        .await
        .expect_err("the condition is false");
    assert!(matches!(err, StoreError::ConditionFailed), "got {err:?}");
    assert_eq!(
        store.get(&k).await.expect("get"),
        Some(item(&pk, "a", [("state", s("sent"))]))
    );
    // A condition on a missing item fails without creating it.
    let missing = key(&pk, "b");
    let err = store
        .update(
            &missing,
            Update::new().set("v", n(1)),
            Some(Cond::ItemExists),
        )
        .await
        .expect_err("no item");
    assert!(matches!(err, StoreError::ConditionFailed), "got {err:?}");
    assert_eq!(store.get(&missing).await.expect("get"), None);
    // And a true condition lets the update through.
    let new = store
        .update(
            &k,
            Update::new().set("state", s("done")),
            Some(Cond::eq("state", s("sent"))),
        )
        .await
        .expect("the condition is true");
    assert_eq!(new.str_attr("state"), Some("done"));
}

pub async fn add_on_a_non_number_is_rejected(store: Arc<dyn Store>) {
    let pk = new_pk("addstr");
    let k = key(&pk, "a");
    store
        .put(item(&pk, "a", [("v", s("text"))]), None)
        .await
        .expect("put");
    let result = store.update(&k, Update::new().add("v", 1), None).await;
    expect_limit(result, "ADD on a string", |e| {
        matches!(e, LimitError::Invalid(_))
    });
    assert_eq!(
        store.get(&k).await.expect("get"),
        Some(item(&pk, "a", [("v", s("text"))]))
    );
}

pub async fn updating_a_key_attribute_is_rejected(store: Arc<dyn Store>) {
    let pk = new_pk("updkey");
    let k = key(&pk, "a");
    store.put(item(&pk, "a", []), None).await.expect("put");
    let result = store
        .update(&k, Update::new().set("sk", s("b")), None)
        .await;
    expect_limit(result, "SET sk", |e| matches!(e, LimitError::Invalid(_)));
    let result = store.update(&k, Update::new().remove("pk"), None).await;
    expect_limit(result, "REMOVE pk", |e| matches!(e, LimitError::Invalid(_)));
}

// ---------------------------------------------------------------------------------
// Query

async fn put_all(store: &dyn Store, pk: &str, sks: &[&str]) {
    for sk in sks {
        store
            .put(item(pk, sk, [("v", s(*sk))]), None)
            .await
            .expect("put");
    }
}

pub async fn query_returns_the_partition_in_sort_key_order_both_ways(store: Arc<dyn Store>) {
    let pk = new_pk("order");
    let other = new_pk("order-neighbour");
    put_all(&*store, &pk, &["b", "a", "B", "c", "a#2", "ab"]).await;
    put_all(&*store, &other, &["a", "z"]).await;
    let page = store.query(Query::partition(&pk)).await.expect("query");
    assert_eq!(sks(&page.items), ["B", "a", "a#2", "ab", "b", "c"]);
    assert_eq!(page.cursor, None);
    let page = store
        .query(Query::partition(&pk).backward())
        .await
        .expect("query");
    assert_eq!(sks(&page.items), ["c", "b", "ab", "a#2", "a", "B"]);
    let empty = store
        .query(Query::partition(new_pk("empty")))
        .await
        .expect("query");
    assert!(empty.items.is_empty() && empty.cursor.is_none());
}

pub async fn query_sort_key_conditions_select_the_right_items(store: Arc<dyn Store>) {
    let pk = new_pk("skcond");
    put_all(&*store, &pk, &["a", "b", "ba", "bb", "c", "d"]).await;
    let cases: Vec<(SortKeyCond, Vec<&str>)> = vec![
        (SortKeyCond::Eq("b".into()), vec!["b"]),
        (SortKeyCond::Eq("bc".into()), vec![]),
        (SortKeyCond::Lt("b".into()), vec!["a"]),
        (SortKeyCond::Le("b".into()), vec!["a", "b"]),
        (SortKeyCond::Gt("bb".into()), vec!["c", "d"]),
        (SortKeyCond::Ge("bb".into()), vec!["bb", "c", "d"]),
        (SortKeyCond::BeginsWith("b".into()), vec!["b", "ba", "bb"]),
        (SortKeyCond::BeginsWith("z".into()), vec![]),
        (
            SortKeyCond::Between("ba".into(), "c".into()),
            vec!["ba", "bb", "c"],
        ),
        (SortKeyCond::Between("b".into(), "b".into()), vec!["b"]),
    ];
    for (cond, expected) in cases {
        let page = store
            .query(Query::partition(&pk).sk(cond.clone()))
            .await
            .expect("query");
        assert_eq!(sks(&page.items), expected, "forward {cond:?}");
        let page = store
            .query(Query::partition(&pk).sk(cond.clone()).backward())
            .await
            .expect("query");
        let mut reversed = expected.clone();
        reversed.reverse();
        assert_eq!(sks(&page.items), reversed, "backward {cond:?}");
    }
}

pub async fn query_pages_with_limit_and_cursor(store: Arc<dyn Store>) {
    let pk = new_pk("limit");
    put_all(&*store, &pk, &["a", "b", "c", "d", "e"]).await;
    let first = store
        .query(Query::partition(&pk).limit(2))
        .await
        .expect("page 1");
    assert_eq!(sks(&first.items), ["a", "b"]);
    assert!(first.cursor.is_some());
    let second = store
        .query(Query::partition(&pk).limit(2).cursor(first.cursor))
        .await
        .expect("page 2");
    assert_eq!(sks(&second.items), ["c", "d"]);
    let third = store
        .query(Query::partition(&pk).limit(2).cursor(second.cursor))
        .await
        .expect("page 3");
    assert_eq!(sks(&third.items), ["e"]);
    assert_eq!(third.cursor, None);

    // A cursor composes with a sort-key condition and with direction.
    let q = Query::partition(&pk)
        .sk(SortKeyCond::Between("b".into(), "d".into()))
        .backward()
        .limit(1);
    let (items, _) = drain(&*store, q).await;
    assert_eq!(sks(&items), ["d", "c", "b"]);

    // When a page ends exactly at the end of the partition, a cursor is allowed (as
    // DynamoDB does) but the next page must then be empty.
    let (items, _) = drain(&*store, Query::partition(&pk).limit(5)).await;
    assert_eq!(sks(&items), ["a", "b", "c", "d", "e"]);
}

pub async fn pagination_over_2500_items_returns_each_exactly_once_both_ways(store: Arc<dyn Store>) {
    let pk = new_pk("many");
    let all: Vec<String> = (0..2500).map(|i| format!("{i:05}")).collect();
    for chunk in all.chunks(limits::MAX_BATCH_WRITE) {
        let ops = chunk
            .iter()
            .map(|sk| BatchOp::Put(item(&pk, sk, [("n", n(1))])))
            .collect();
        store.batch_write(ops).await.expect("batch write");
    }
    let (items, pages) = drain(&*store, Query::partition(&pk).limit(97)).await;
    assert_eq!(sks(&items), all, "forward pages");
    assert!(pages >= 2500 / 97, "pages of at most 97 items: {pages}");
    let (items, _) = drain(&*store, Query::partition(&pk).limit(97).backward()).await;
    let mut reversed = all.clone();
    reversed.reverse();
    assert_eq!(sks(&items), reversed, "backward pages");
    // Without a limit, small items all fit in one page.
    let (items, _) = drain(&*store, Query::partition(&pk)).await;
    assert_eq!(items.len(), 2500);
}

pub async fn query_pages_are_capped_at_one_megabyte(store: Arc<dyn Store>) {
    let pk = new_pk("megabyte");
    for i in 0..30 {
        store
            .put(
                item(&pk, &format!("{i:02}"), [("body", blob(100_000))]),
                None,
            )
            .await
            .expect("put");
    }
    for forward in [true, false] {
        let q = if forward {
            Query::partition(&pk)
        } else {
            Query::partition(&pk).backward()
        };
        let first = store.query(q.clone()).await.expect("query");
        assert!(
            !first.items.is_empty() && first.items.len() < 30,
            "a page is cut at 1 MB: it held {} items",
            first.items.len()
        );
        let bytes: usize = first.items.iter().map(item_size).sum();
        assert!(
            bytes <= limits::MAX_PAGE_BYTES + 110_000,
            "page of {bytes} bytes"
        );
        assert!(first.cursor.is_some(), "a cut page has a cursor");
        let (items, pages) = drain(&*store, q).await;
        assert!(pages >= 3, "30 items of 100 KB need at least 3 pages");
        let seen: HashSet<String> = sks(&items).into_iter().collect();
        assert_eq!(items.len(), 30);
        assert_eq!(seen.len(), 30);
    }
}

pub async fn index_query_finds_items_by_their_index_keys(store: Arc<dyn Store>) {
    let pk = new_pk("gsi-base");
    let gpk = new_pk("gsi");
    let index_item = |sk: &str, gsk: &str| {
        item(
            &pk,
            sk,
            [
                ("gsi1pk", s(gpk.as_str())),
                ("gsi1sk", s(gsk)),
                ("v", s(sk)),
            ],
        )
    };
    store.put(index_item("1", "b"), None).await.expect("put");
    store.put(index_item("2", "a"), None).await.expect("put");
    store.put(index_item("3", "c"), None).await.expect("put");
    // Equal index sort keys: ordered by base key, and paged without loss.
    store.put(index_item("4", "same"), None).await.expect("put");
    store.put(index_item("5", "same"), None).await.expect("put");
    store.put(index_item("6", "same"), None).await.expect("put");
    // Not in the index: one key attribute missing.
    store
        .put(item(&pk, "7", [("gsi1pk", s(gpk.as_str()))]), None)
        .await
        .expect("put");

    let q = Query::index(Index::Gsi1, &gpk);
    let items = poll_index(&*store, q.clone(), |items| items.len() >= 6).await;
    let order = sks(&items);
    assert_eq!(&order[..3], ["2", "1", "3"], "ordered by gsi1sk");
    let mut same: Vec<String> = order[3..].to_vec();
    same.sort();
    assert_eq!(
        same,
        ["4", "5", "6"],
        "equal gsi1sk entries, no item without gsi1sk"
    );
    assert_eq!(
        items[0],
        index_item("2", "a"),
        "the index projects every attribute"
    );

    let (paged, _) = drain(&*store, q.clone().limit(1)).await;
    assert_eq!(sks(&paged), order, "pages of one give the same order");
    let (paged, _) = drain(&*store, q.clone().limit(2).backward()).await;
    let mut reversed = order.clone();
    reversed.reverse();
    assert_eq!(sks(&paged), reversed, "backward pages");

    let page = store
        .query(q.clone().sk(SortKeyCond::BeginsWith("s".into())))
        .await
        .expect("query");
    assert_eq!(page.items.len(), 3);
    let page = store
        .query(q.sk(SortKeyCond::Between("a".into(), "b".into())))
        .await
        .expect("query");
    assert_eq!(sks(&page.items), ["2", "1"]);
}

pub async fn index_follows_updates_and_deletes(store: Arc<dyn Store>) {
    let pk = new_pk("gsi-move");
    let g1 = new_pk("gsi-one");
    let g2 = new_pk("gsi-two");
    let k = key(&pk, "a");
    store
        .put(
            item(&pk, "a", [("gsi1pk", s(g1.as_str())), ("gsi1sk", s("x"))]),
            None,
        )
        .await
        .expect("put");
    let items = poll_index(&*store, Query::index(Index::Gsi1, &g1), |i| i.len() == 1).await;
    assert_eq!(items.len(), 1);
    store
        .update(
            &k,
            Update::new().set("gsi1pk", s(g2.as_str())).set("v", n(2)),
            None,
        )
        .await
        .expect("update");
    let items = poll_index(&*store, Query::index(Index::Gsi1, &g1), |i| i.is_empty()).await;
    assert!(items.is_empty(), "the old index entry is gone");
    let items = poll_index(&*store, Query::index(Index::Gsi1, &g2), |i| {
        i.len() == 1 && i[0].num_attr("v") == Some(2)
    })
    .await;
    assert_eq!(items.len(), 1);
    assert_eq!(
        items[0].num_attr("v"),
        Some(2),
        "the index holds the new item"
    );
    store
        .update(&k, Update::new().remove("gsi1sk"), None)
        .await
        .expect("update");
    let items = poll_index(&*store, Query::index(Index::Gsi1, &g2), |i| i.is_empty()).await;
    assert!(items.is_empty(), "without gsi1sk the item leaves the index");
    store
        .update(&k, Update::new().set("gsi1sk", s("y")), None)
        .await
        .expect("update");
    let items = poll_index(&*store, Query::index(Index::Gsi1, &g2), |i| i.len() == 1).await;
    assert_eq!(items.len(), 1);
    store.delete(&k, None).await.expect("delete");
    let items = poll_index(&*store, Query::index(Index::Gsi1, &g2), |i| i.is_empty()).await;
    assert!(items.is_empty(), "a deleted item leaves the index");
}

// ---------------------------------------------------------------------------------
// Batches

pub async fn batch_get_leaves_out_missing_keys(store: Arc<dyn Store>) {
    let pk = new_pk("bget");
    put_all(&*store, &pk, &["a", "c"]).await;
    let keys: Vec<Key> = ["a", "b", "c"].iter().map(|sk| key(&pk, sk)).collect();
    let mut got = store.batch_get(&keys).await.expect("batch get");
    got.sort_by(|x, y| x.str_attr("sk").cmp(&y.str_attr("sk")));
    assert_eq!(sks(&got), ["a", "c"]);

    // A full batch of 100 keys is fine.
    let keys: Vec<Key> = (0..limits::MAX_BATCH_GET)
        .map(|i| key(&pk, &format!("k{i}")))
        .collect();
    assert!(store.batch_get(&keys).await.expect("batch get").is_empty());
}

pub async fn batch_get_over_100_keys_is_rejected(store: Arc<dyn Store>) {
    let pk = new_pk("bget-many");
    let keys: Vec<Key> = (0..=limits::MAX_BATCH_GET)
        .map(|i| key(&pk, &format!("k{i}")))
        .collect();
    let result = store.batch_get(&keys).await;
    expect_limit(result, "101 keys", |e| {
        matches!(e, LimitError::BatchGetTooLarge { count: 101 })
    });
}

pub async fn batch_get_with_duplicate_keys_is_rejected(store: Arc<dyn Store>) {
    let pk = new_pk("bget-dup");
    let keys = [key(&pk, "a"), key(&pk, "b"), key(&pk, "a")];
    let result = store.batch_get(&keys).await;
    expect_limit(
        result,
        "a key twice",
        |e| matches!(e, LimitError::DuplicateKeyInBatch { sk, .. } if sk == "a"),
    );
}

pub async fn batch_write_puts_and_deletes(store: Arc<dyn Store>) {
    let pk = new_pk("bwrite");
    put_all(&*store, &pk, &["old1", "old2"]).await;
    let mut ops: Vec<BatchOp> = (0..23)
        .map(|i| BatchOp::Put(item(&pk, &format!("new{i:02}"), [("i", n(i))])))
        .collect();
    ops.push(BatchOp::Delete(key(&pk, "old1")));
    ops.push(BatchOp::Delete(key(&pk, "never-existed")));
    assert_eq!(ops.len(), limits::MAX_BATCH_WRITE);
    store.batch_write(ops).await.expect("batch write");
    let (items, _) = drain(&*store, Query::partition(&pk)).await;
    assert_eq!(items.len(), 24);
    assert!(store.get(&key(&pk, "old1")).await.expect("get").is_none());
    assert!(store.get(&key(&pk, "old2")).await.expect("get").is_some());
    let got = store
        .get(&key(&pk, "new07"))
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(got.num_attr("i"), Some(7));
}

pub async fn batch_write_over_25_operations_is_rejected(store: Arc<dyn Store>) {
    let pk = new_pk("bwrite-many");
    let ops: Vec<BatchOp> = (0..=limits::MAX_BATCH_WRITE)
        .map(|i| BatchOp::Put(item(&pk, &format!("k{i:02}"), [])))
        .collect();
    let result = store.batch_write(ops).await;
    expect_limit(result, "26 operations", |e| {
        matches!(e, LimitError::BatchWriteTooLarge { count: 26 })
    });
    let (items, _) = drain(&*store, Query::partition(&pk)).await;
    assert!(items.is_empty(), "nothing was written");
}

pub async fn batch_write_with_duplicate_keys_is_rejected(store: Arc<dyn Store>) {
    let pk = new_pk("bwrite-dup");
    let ops = vec![
        BatchOp::Put(item(&pk, "a", [])),
        BatchOp::Put(item(&pk, "b", [])),
        BatchOp::Delete(key(&pk, "a")),
    ];
    let result = store.batch_write(ops).await;
    expect_limit(
        result,
        "a key twice",
        |e| matches!(e, LimitError::DuplicateKeyInBatch { sk, .. } if sk == "a"),
    );
    let (items, _) = drain(&*store, Query::partition(&pk)).await;
    assert!(items.is_empty(), "nothing was written");
}

// ---------------------------------------------------------------------------------
// Transactions

pub async fn transaction_writes_every_action(store: Arc<dyn Store>) {
    let pk = new_pk("tx");
    put_all(&*store, &pk, &["upd", "del", "chk"]).await;
    store
        .transact(vec![
            TxAction::Put {
                item: item(&pk, "new", [("v", n(1))]),
                cond: Some(Cond::ItemNotExists),
            },
            TxAction::Update {
                key: key(&pk, "upd"),
                update: Update::new().add("count", 2),
                cond: Some(Cond::ItemExists),
            },
            TxAction::Delete {
                key: key(&pk, "del"),
                cond: Some(Cond::eq("v", s("del"))),
            },
            TxAction::Check {
                key: key(&pk, "chk"),
                cond: Cond::ItemExists,
            },
        ])
        .await
        .expect("transaction");
    let get = |sk: &'static str| {
        let store = Arc::clone(&store);
        let k = key(&pk, sk);
        async move { store.get(&k).await.expect("get") }
    };
    assert_eq!(get("new").await, Some(item(&pk, "new", [("v", n(1))])));
    assert_eq!(get("upd").await.and_then(|i| i.num_attr("count")), Some(2));
    assert_eq!(get("del").await, None);
    assert_eq!(get("chk").await, Some(item(&pk, "chk", [("v", s("chk"))])));
}

pub async fn transaction_with_a_false_condition_writes_nothing(store: Arc<dyn Store>) {
    let pk = new_pk("tx-fail");
    put_all(&*store, &pk, &["upd", "del"]).await;
    let err = store
        .transact(vec![
            TxAction::Put {
                item: item(&pk, "new", []),
                cond: Some(Cond::ItemNotExists),
            },
            TxAction::Update {
                key: key(&pk, "upd"),
                update: Update::new().set("v", s("changed")),
                cond: Some(Cond::eq("v", s("something else"))),
            },
            TxAction::Delete {
                key: key(&pk, "del"),
                cond: None,
            },
            TxAction::Check {
                key: key(&pk, "missing"),
                cond: Cond::ItemExists,
            },
        ])
        .await
        .expect_err("two conditions are false");
    match &err {
        StoreError::TransactionCanceled { failed } => {
            assert_eq!(failed, &[false, true, false, true]);
        }
        other => panic!("expected TransactionCanceled, got {other:?}"),
    }
    assert!(err.is_condition_failed());
    assert!(!err.is_retryable());
    assert_eq!(store.get(&key(&pk, "new")).await.expect("get"), None);
    assert_eq!(
        store.get(&key(&pk, "upd")).await.expect("get"),
        Some(item(&pk, "upd", [("v", s("upd"))]))
    );
    assert!(store.get(&key(&pk, "del")).await.expect("get").is_some());
}

/// `transact_seq_relaxed`: the batch first, then each group all or nothing, in order,
/// stopping at the first that fails (the batch and earlier groups stay written); a
/// batch that breaks a limit writes nothing and tries no group.
pub async fn relaxed_sequence_writes_the_batch_then_groups_up_to_the_failing_one(
    store: Arc<dyn Store>,
) {
    let pk = new_pk("relaxed");
    let first: Vec<BatchOp> = (0..30)
        .map(|i| BatchOp::Put(item(&pk, &format!("report{i:02}"), [])))
        .collect();
    let group = |sk: &str, cond: Option<Cond>| {
        vec![
            TxAction::Put {
                item: item(&pk, sk, []),
                cond,
            },
            TxAction::Update {
                key: key(&pk, "checkpoint"),
                update: Update::new().add("n", 1),
                cond: None,
            },
        ]
    };
    let (done, err) = store
        .transact_seq_relaxed(
            first,
            vec![
                group("a", Some(Cond::ItemNotExists)),
                group("b", Some(Cond::ItemNotExists)),
                group("report05", Some(Cond::ItemNotExists)),
                group("c", None),
            ],
        )
        .await;
    assert_eq!(done, 2);
    assert!(
        matches!(&err, Some(StoreError::TransactionCanceled { failed }) if failed == &[true, false]),
        "{err:?}"
    );
    let page = store.query(Query::partition(&pk)).await.expect("query");
    assert_eq!(
        page.items.len(),
        30 + 3,
        "30 batch items, a, b and the checkpoint"
    );
    let checkpoint = store.get(&key(&pk, "checkpoint")).await.expect("get");
    assert_eq!(checkpoint.and_then(|c| c.get("n").cloned()), Some(n(2)));
    assert_eq!(store.get(&key(&pk, "c")).await.expect("get"), None);

    let dup = vec![
        BatchOp::Put(item(&pk, "x", [])),
        BatchOp::Put(item(&pk, "x", [])),
    ];
    let (done, err) = store
        .transact_seq_relaxed(dup, vec![group("d", None)])
        .await;
    assert_eq!(done, 0);
    assert!(matches!(err, Some(StoreError::Limit(_))), "{err:?}");
    assert_eq!(store.get(&key(&pk, "x")).await.expect("get"), None);
    assert_eq!(store.get(&key(&pk, "d")).await.expect("get"), None);
}

pub async fn transaction_over_100_actions_is_rejected(store: Arc<dyn Store>) {
    let pk = new_pk("tx-many");
    let actions: Vec<TxAction> = (0..=limits::MAX_TRANSACTION_ACTIONS)
        .map(|i| TxAction::Put {
            item: item(&pk, &format!("k{i:03}"), []),
            cond: None,
        })
        .collect();
    let result = store.transact(actions).await;
    expect_limit(result, "101 actions", |e| {
        matches!(e, LimitError::TransactionTooLarge { count: 101 })
    });
    let (items, _) = drain(&*store, Query::partition(&pk)).await;
    assert!(items.is_empty(), "nothing was written");
}

pub async fn transaction_touching_one_key_twice_is_rejected(store: Arc<dyn Store>) {
    let pk = new_pk("tx-dup");
    let result = store
        .transact(vec![
            TxAction::Put {
                item: item(&pk, "a", []),
                cond: None,
            },
            TxAction::Check {
                key: key(&pk, "a"),
                cond: Cond::ItemNotExists,
            },
        ])
        .await;
    expect_limit(
        result,
        "a key twice",
        |e| matches!(e, LimitError::DuplicateKeyInTransaction { sk, .. } if sk == "a"),
    );
    assert_eq!(store.get(&key(&pk, "a")).await.expect("get"), None);
}

pub async fn transaction_over_4_mb_is_rejected(store: Arc<dyn Store>) {
    let pk = new_pk("tx-big");
    // 11 items of 390 KB: each fits, together they pass 4 MB.
    let actions: Vec<TxAction> = (0..11)
        .map(|i| TxAction::Put {
            item: item(&pk, &format!("k{i:02}"), [("body", blob(390 * 1024))]),
            cond: None,
        })
        .collect();
    let result = store.transact(actions).await;
    expect_limit(result, "4.2 MB", |e| {
        matches!(e, LimitError::TransactionTooBig { .. })
    });
    let (items, _) = drain(&*store, Query::partition(&pk)).await;
    assert!(items.is_empty(), "nothing was written");
}

pub async fn items_over_400_kb_are_rejected_by_every_write(store: Arc<dyn Store>) {
    let pk = new_pk("toolarge");
    let too_large = |sk: &str| {
        item(
            pk.as_str(),
            sk,
            [("body", blob(limits::MAX_ITEM_BYTES + 1))],
        )
    };
    let is_too_large = |e: &LimitError| matches!(e, LimitError::ItemTooLarge { .. });

    // Under the limit is fine (390 KB: moto's own limit is 405,000 bytes, DynamoDB's
    // is 400 KiB).
    let fits = item(&pk, "fits", [("body", blob(390 * 1024))]);
    store.put(fits, None).await.expect("an item under 400 KB");

    expect_limit(store.put(too_large("put"), None).await, "put", is_too_large);

    // An update whose result passes 400 KB.
    let k = key(&pk, "upd");
    store
        .put(item(&pk, "upd", [("a", blob(300 * 1024))]), None)
        .await
        .expect("put");
    let result = store
        .update(&k, Update::new().set("b", blob(200 * 1024)), None)
        .await;
    expect_limit(result, "update", is_too_large);
    let kept = store.get(&k).await.expect("get").expect("exists");
    assert!(!kept.contains_key("b"), "the update wrote nothing");

    let result = store
        .batch_write(vec![
            BatchOp::Put(item(&pk, "b1", [])),
            BatchOp::Put(too_large("b2")),
        ])
        .await;
    expect_limit(result, "batch write", is_too_large);
    assert_eq!(store.get(&key(&pk, "b1")).await.expect("get"), None);

    let result = store
        .transact(vec![
            TxAction::Put {
                item: item(&pk, "t1", []),
                cond: None,
            },
            TxAction::Put {
                item: too_large("t2"),
                cond: None,
            },
        ])
        .await;
    expect_limit(result, "transaction", is_too_large);
    assert_eq!(store.get(&key(&pk, "t1")).await.expect("get"), None);
}

// ---------------------------------------------------------------------------------
// Concurrency, cursors, TTL, counting

pub async fn concurrent_adds_from_50_tasks_are_exact(store: Arc<dyn Store>) {
    let pk = new_pk("counter");
    let k = key(&pk, "c");
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let store = Arc::clone(&store);
            let k = k.clone();
            tokio::spawn(async move {
                store
                    .update(&k, Update::new().add("count", 1), None)
                    .await
                    .expect("add")
                    .num_attr("count")
                    .expect("a count")
            })
        })
        .collect();
    let mut seen = Vec::new();
    for t in tasks {
        seen.push(t.await.expect("task"));
    }
    seen.sort();
    assert_eq!(
        seen,
        (1..=50).collect::<Vec<i64>>(),
        "each add saw its own total"
    );
    let item = store.get(&k).await.expect("get").expect("exists");
    assert_eq!(item.num_attr("count"), Some(50));
}

pub async fn malformed_cursor_is_rejected_as_bad_cursor(store: Arc<dyn Store>) {
    let pk = new_pk("badcursor");
    put_all(&*store, &pk, &["a", "b"]).await;
    for junk in ["", "not a cursor!", "eyJ4IjoxfQ", "AAAA"] {
        let err = store
            .query(Query::partition(&pk).cursor(Some(junk.to_string())))
            .await
            .expect_err("a junk cursor");
        assert!(
            matches!(err, StoreError::BadCursor),
            "{junk:?}: got {err:?}"
        );
    }
}

pub async fn cursor_from_another_partition_or_index_is_rejected(store: Arc<dyn Store>) {
    let mine = new_pk("tenant-a");
    let theirs = new_pk("tenant-b");
    put_all(&*store, &mine, &["a", "b", "c"]).await;
    put_all(&*store, &theirs, &["a", "b", "c"]).await;
    let page = store
        .query(Query::partition(&theirs).limit(1))
        .await
        .expect("query");
    let cursor = page.cursor.expect("more items follow");
    let err = store
        .query(Query::partition(&mine).cursor(Some(cursor.clone())))
        .await
        .expect_err("another partition's cursor");
    assert!(matches!(err, StoreError::BadCursor), "got {err:?}");
    let err = store
        .query(Query::index(Index::Gsi1, &theirs).cursor(Some(cursor)))
        .await
        .expect_err("a base-table cursor on an index");
    assert!(matches!(err, StoreError::BadCursor), "got {err:?}");
}

pub async fn expired_items_are_hidden_from_reads_and_conditions(store: Arc<dyn Store>) {
    let pk = new_pk("ttl");
    let past = (epoch_secs() - 3600) as i64;
    let future = (epoch_secs() + 3600) as i64;
    store
        .put(item(&pk, "old", [("ttl", n(past))]), None)
        .await
        .expect("put");
    store
        .put(item(&pk, "new", [("ttl", n(future))]), None)
        .await
        .expect("put");
    assert_eq!(store.get(&key(&pk, "old")).await.expect("get"), None);
    assert!(store.get(&key(&pk, "new")).await.expect("get").is_some());
    let page = store.query(Query::partition(&pk)).await.expect("query");
    assert_eq!(sks(&page.items), ["new"]);
    let got = store
        .batch_get(&[key(&pk, "old"), key(&pk, "new")])
        .await
        .expect("batch get");
    assert_eq!(sks(&got), ["new"]);
    // An expired item is absent for conditions: it can be claimed again.
    store
        .put(item(&pk, "old", [("v", n(2))]), Some(Cond::ItemNotExists))
        .await
        .expect("the expired item counts as absent");
    let got = store
        .get(&key(&pk, "old"))
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(got, item(&pk, "old", [("v", n(2))]));
}

pub async fn write_counter_counts_items_written(store: Arc<dyn Store>) {
    let pk = new_pk("counting");
    let before = store.writes();
    store.put(item(&pk, "a", []), None).await.expect("put");
    store
        .update(&key(&pk, "a"), Update::new().add("n", 1), None)
        .await
        .expect("update");
    store.delete(&key(&pk, "a"), None).await.expect("delete");
    assert_eq!(store.writes() - before, 3);
    store
        .batch_write(vec![
            BatchOp::Put(item(&pk, "b", [])),
            BatchOp::Put(item(&pk, "c", [])),
            BatchOp::Delete(key(&pk, "d")),
        ])
        .await
        .expect("batch");
    assert_eq!(store.writes() - before, 6);
    store
        .transact(vec![
            TxAction::Put {
                item: item(&pk, "e", []),
                cond: None,
            },
            TxAction::Update {
                key: key(&pk, "f"),
                update: Update::new().set("x", n(1)),
                cond: None,
            },
            TxAction::Check {
                key: key(&pk, "b"),
                cond: Cond::ItemExists,
            },
        ])
        .await
        .expect("transaction");
    assert_eq!(store.writes() - before, 8, "checks are not writes");
}
