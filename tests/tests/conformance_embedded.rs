//! The storage conformance suite against the embedded engine (a fresh redb file per
//! test), plus what only the embedded engine can show: data surviving a reopen and a
//! SIGKILL, GSI-lag test mode, the diagnostic prefix count.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mailpilot_shared::adapters::local::store::{Durability, Options, RedbStore};
use mailpilot_shared::ports::store::val::{n, s};
use mailpilot_shared::ports::store::{
    Cond, Index, ItemExt, LimitError, Query, Store, StoreError, TxAction, Update, Value,
};
use mailpilot_tests::conformance::{Harness, TempDir, holds, item, key, new_pk};

async fn embedded() -> Harness {
    let dir = TempDir::new();
    let store = RedbStore::open(&dir.path().join("store.redb")).expect("opens the store");
    Harness::new(Arc::new(store), dir)
}

mailpilot_tests::conformance_tests!(embedded());

fn open(path: &Path) -> RedbStore {
    RedbStore::open(path).expect("opens the store")
}

#[tokio::test]
async fn data_survives_reopen() {
    let dir = TempDir::new();
    let path = dir.path().join("store.redb");
    let pk = new_pk("reopen");
    {
        let store = open(&path);
        store
            .put(
                item(
                    &pk,
                    "a",
                    [("v", n(1)), ("gsi1pk", s("g")), ("gsi1sk", s("1"))],
                ),
                None,
            )
            .await
            .expect("put");
        store
            .update(&key(&pk, "b"), Update::new().add("c", 5), None)
            .await
            .expect("update");
    }
    let store = open(&path);
    let a = store
        .get(&key(&pk, "a"))
        .await
        .expect("get")
        .expect("a survives");
    assert_eq!(a.num_attr("v"), Some(1));
    let b = store
        .get(&key(&pk, "b"))
        .await
        .expect("get")
        .expect("b survives");
    assert_eq!(b.num_attr("c"), Some(5));
    let page = store
        .query(Query::index(Index::Gsi1, "g"))
        .await
        .expect("query");
    assert_eq!(page.items.len(), 1, "the index survives too");
}

#[tokio::test]
async fn no_sync_durability_still_persists_on_a_clean_close() {
    let dir = TempDir::new();
    let path = dir.path().join("store.redb");
    let pk = new_pk("nosync");
    {
        let options = Options {
            durability: Durability::NoSync,
            ..Options::default()
        };
        let store = RedbStore::open_with(&path, options).expect("opens");
        store.put(item(&pk, "a", []), None).await.expect("put");
    }
    let store = open(&path);
    assert!(store.get(&key(&pk, "a")).await.expect("get").is_some());
}

#[tokio::test]
async fn gsi_lag_hides_fresh_writes_from_the_index_until_the_lag_passes() {
    let dir = TempDir::new();
    let lag = Duration::from_millis(400);
    let options = Options {
        gsi_lag: Some(lag),
        ..Options::default()
    };
    let store = RedbStore::open_with(&dir.path().join("store.redb"), options).expect("opens");
    let pk = new_pk("lag");
    let gpk = new_pk("lag-index");
    let k = key(&pk, "a");
    let written = Instant::now();
    store
        .put(
            item(
                &pk,
                "a",
                [("gsi1pk", s(gpk.as_str())), ("gsi1sk", s("1")), ("v", n(1))],
            ),
            None,
        )
        .await
        .expect("put");
    assert!(
        store.get(&k).await.expect("get").is_some(),
        "the base table sees it at once"
    );
    let page = store
        .query(Query::index(Index::Gsi1, &gpk))
        .await
        .expect("query");
    assert!(
        written.elapsed() < lag,
        "the machine is too slow for this test"
    );
    assert!(
        page.items.is_empty(),
        "the index does not see a fresh write"
    );

    tokio::time::sleep(lag + Duration::from_millis(100)).await;
    let page = store
        .query(Query::index(Index::Gsi1, &gpk))
        .await
        .expect("query");
    assert_eq!(page.items.len(), 1, "after the lag the index sees it");

    // An update is seen late too: the index keeps showing the old version.
    store
        .update(&k, Update::new().set("v", n(2)), None)
        .await
        .expect("update");
    let page = store
        .query(Query::index(Index::Gsi1, &gpk))
        .await
        .expect("query");
    assert_eq!(
        page.items[0].num_attr("v"),
        Some(1),
        "the old version, for now"
    );
    assert_eq!(
        store
            .get(&k)
            .await
            .expect("get")
            .and_then(|i| i.num_attr("v")),
        Some(2)
    );
    store.delete(&k, None).await.expect("delete");
    tokio::time::sleep(lag + Duration::from_millis(100)).await;
    let page = store
        .query(Query::index(Index::Gsi1, &gpk))
        .await
        .expect("query");
    assert!(page.items.is_empty(), "the delete reached the index");
}

#[tokio::test]
async fn reopening_without_lag_settles_pending_index_changes() {
    let dir = TempDir::new();
    let path = dir.path().join("store.redb");
    let gpk = new_pk("settle");
    {
        let options = Options {
            gsi_lag: Some(Duration::from_secs(3600)),
            ..Options::default()
        };
        let store = RedbStore::open_with(&path, options).expect("opens");
        store
            .put(
                item(
                    &new_pk("settle-base"),
                    "a",
                    [("gsi1pk", s(gpk.as_str())), ("gsi1sk", s("1"))],
                ),
                None,
            )
            .await
            .expect("put");
    }
    let store = open(&path);
    let page = store
        .query(Query::index(Index::Gsi1, &gpk))
        .await
        .expect("query");
    assert_eq!(page.items.len(), 1);
}

#[tokio::test]
async fn count_items_with_pk_prefix_counts_only_that_prefix() {
    let dir = TempDir::new();
    let store = open(&dir.path().join("store.redb"));
    let ws = new_pk("ws");
    for (pk, sk) in [
        (format!("{ws}#contact"), "1"),
        (format!("{ws}#contact"), "2"),
        (format!("{ws}#list#x"), "1"),
        (ws.clone(), "meta"),
        (format!("{ws}\0weird"), "1"),
        ("other#contact".to_string(), "1"),
    ] {
        store.put(item(&pk, sk, []), None).await.expect("put");
    }
    assert_eq!(
        store
            .count_items_with_pk_prefix(&format!("{ws}#"))
            .expect("count"),
        3
    );
    assert_eq!(store.count_items_with_pk_prefix(&ws).expect("count"), 5);
    assert_eq!(store.count_items_with_pk_prefix("").expect("count"), 6);
    store
        .delete(&key(&format!("{ws}#contact"), "1"), None)
        .await
        .expect("delete");
    assert_eq!(
        store
            .count_items_with_pk_prefix(&format!("{ws}#"))
            .expect("count"),
        2
    );
    assert_eq!(
        store.count_items_with_pk_prefix("nobody").expect("count"),
        0
    );
}

#[tokio::test]
async fn index_key_attributes_of_another_type_are_rejected_as_dynamodb_does() {
    let dir = TempDir::new();
    let store = open(&dir.path().join("store.redb"));
    let pk = new_pk("gsitype");
    for bad in [n(1), s("")] {
        let result = store
            .put(
                item(&pk, "a", [("gsi1pk", bad.clone()), ("gsi1sk", s("x"))]),
                None,
            )
            .await;
        assert!(
            matches!(result, Err(StoreError::Limit(LimitError::Invalid(_)))),
            "{bad:?}: {result:?}"
        );
    }
    let result = store
        .put(item(&pk, "a", [("n", Value::N("twelve".into()))]), None)
        .await;
    assert!(matches!(
        result,
        Err(StoreError::Limit(LimitError::Invalid(_)))
    ));
}

#[tokio::test]
async fn numbers_are_stored_in_canonical_form() {
    let dir = TempDir::new();
    let store = open(&dir.path().join("store.redb"));
    let pk = new_pk("canon");
    store
        .put(item(&pk, "a", [("x", Value::N("001.50".into()))]), None)
        .await
        .expect("put");
    let got = store
        .get(&key(&pk, "a"))
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(got.get("x"), Some(&Value::N("1.5".into())));
    let updated = store
        .update(
            &key(&pk, "a"),
            Update::new().add("x", 1),
            Some(Cond::eq("x", Value::N("1.5".into()))),
        )
        .await
        .expect("update");
    assert_eq!(updated.get("x"), Some(&Value::N("2.5".into())));
}

#[tokio::test]
async fn ordering_comparisons_across_types_are_false() {
    let dir = TempDir::new();
    let store = open(&dir.path().join("store.redb"));
    let pk = new_pk("crosstype");
    let k = key(&pk, "a");
    store
        .put(
            item(
                &pk,
                "a",
                [("n", n(10)), ("s", s("10")), ("b", Value::Bool(true))],
            ),
            None,
        )
        .await
        .expect("put");
    for cond in [
        Cond::lt("n", s("9")),
        Cond::gt("n", s("9")),
        Cond::le("n", s("10")),
        Cond::ge("s", n(1)),
        Cond::lt("s", n(100)),
        Cond::gt("b", Value::Bool(false)),
        Cond::BeginsWith("n".into(), "1".into()),
    ] {
        assert!(!holds(&store, &k, cond.clone()).await, "{cond:?}");
    }
}

const CHILD_DB_VAR: &str = "MAILPILOT_SIGKILL_CHILD_DB";

/// The child of `acknowledged_writes_survive_sigkill`: writes pairs of items in
/// transactions, printing `ACK <i>` after each commit returns, until it is killed.
#[tokio::test]
#[ignore = "run only as the child process of acknowledged_writes_survive_sigkill"]
async fn sigkill_child_writes_until_killed() {
    let Ok(path) = std::env::var(CHILD_DB_VAR) else {
        return;
    };
    let store = open(Path::new(&path));
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut i = 0u64;
    while Instant::now() < deadline {
        store
            .transact(vec![
                TxAction::Put {
                    item: item(
                        "kill#a",
                        &format!("{i:08}"),
                        [("body", s("x".repeat(2000)))],
                    ),
                    cond: Some(Cond::ItemNotExists),
                },
                TxAction::Put {
                    item: item("kill#b", &format!("{i:08}"), []),
                    cond: None,
                },
            ])
            .await
            .expect("write");
        println!("ACK {i}");
        i += 1;
    }
}

#[tokio::test]
async fn acknowledged_writes_survive_sigkill() {
    let dir = TempDir::new();
    let path = dir.path().join("store.redb");
    let exe = std::env::current_exe().expect("the test binary");
    let mut child = Command::new(exe)
        .args([
            "sigkill_child_writes_until_killed",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env(CHILD_DB_VAR, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawns the child");
    let stdout = child.stdout.take().expect("child stdout");
    let mut acked = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("reads the child's output");
        if let Some(i) = line.strip_prefix("ACK ") {
            let i: u64 = i.trim().parse().expect("a number");
            acked = Some(i);
            if i >= 150 {
                break;
            }
        }
    }
    child.kill().expect("SIGKILL"); // kill() sends SIGKILL on Unix
    child.wait().expect("reaps the child");
    let acked = acked.expect("the child acknowledged writes");

    let store = open(&path);
    let a = store.count_items_with_pk_prefix("kill#a").expect("count");
    let b = store.count_items_with_pk_prefix("kill#b").expect("count");
    assert_eq!(a, b, "transactions are all-or-nothing across a crash");
    assert!(
        a as u64 > acked,
        "every acknowledged write survived: {a} items, acked up to {acked}"
    );
    let last = key("kill#a", &format!("{acked:08}"));
    assert!(store.get(&last).await.expect("get").is_some());
}
