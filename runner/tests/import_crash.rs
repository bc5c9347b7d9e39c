//! A real `SIGKILL` of the runner in the middle of an import, then a restart: the
//! runner resumes the import from its checkpoint at start, and the final counters are
//! exactly those of the file (no row imported twice, none lost).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;
use common::Server;

/// `relaxed_sync_ms`: how late the import's chunk commits may reach the disk.
fn serve(data: &std::path::Path, relaxed_sync_ms: u64) -> Server {
    common::serve(
        data,
        &[
            // Small chunks: many checkpoints, and an import slow enough to kill mid-way.
            ("MAILPILOT_IMPORT_CHUNK_ROWS", "10".into()),
            ("MAILPILOT_IMPORT_TX_ACTIONS", "25".into()),
            (
                "MAILPILOT_STORE_RELAXED_SYNC_MS",
                relaxed_sync_ms.to_string(),
            ),
        ],
    )
}

/// The file and what importing it must give: (csv, rows, created, failed, duplicates).
fn file(rows: usize) -> (String, i64, i64, i64, i64) {
    let mut csv = String::from("email,first_name,n\n");
    let mut emails = vec![];
    let mut failed = 0;
    for i in 0..rows {
        let email = match i % 10 {
            3 => {
                failed += 1;
                csv.push_str(&format!("broken-{i},B,{i}\n"));
                continue;
            }
            7 => format!("user{}@example.com", i - 4),
            _ => format!("user{i}@example.com"),
        };
        csv.push_str(&format!("{email},User,{i}\n"));
        emails.push(email);
    }
    let mut last: HashMap<&str, usize> = HashMap::new();
    for (i, e) in emails.iter().enumerate() {
        last.insert(e, i);
    }
    let created = last.len() as i64;
    let dups = emails.len() as i64 - created;
    (csv, rows as i64, created, failed, dups)
}

#[tokio::test]
async fn an_import_killed_mid_way_resumes_after_restart_with_exact_counters() {
    killed_mid_way(0).await;
}

/// The chunks' commits are not fsynced for a minute (only the start's writes are), so
/// the kill loses every chunk committed so far, checkpoints included: the restart finds
/// the import where the last fsynced commit left it and redoes the rest exactly.
#[tokio::test]
async fn an_import_killed_with_unsynced_chunks_redoes_them_exactly() {
    killed_mid_way(60_000).await;
}

/// The default: chunks fsynced at most a second late.
#[tokio::test]
async fn an_import_killed_with_the_default_sync_resumes_exactly() {
    killed_mid_way(1_000).await;
}

async fn killed_mid_way(relaxed_sync_ms: u64) {
    let dir = tempfile::tempdir().unwrap();
    let mut server = serve(dir.path(), relaxed_sync_ms);
    let key = server
        .stderr_lines
        .iter()
        .map(|l| l.trim())
        .find(|l| l.starts_with("mp_"))
        .expect("demo key")
        .to_string();
    let client = reqwest::Client::new();
    let list: Value = client
        .post(format!("{}/v1/lists", server.url))
        .bearer_auth(&key)
        .json(&json!({"name": "Imported"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let list_id = list["id"].as_str().unwrap().to_string();
    let created: Value = client
        .post(format!("{}/v1/imports", server.url))
        .bearer_auth(&key)
        .json(&json!({"list_ids": [list_id]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    let (csv, rows, want_created, want_failed, want_dups) = file(6_000);
    let put = client
        .put(format!("{}/v1/imports/{id}/file", server.url))
        .bearer_auth(&key)
        .body(csv)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);

    // Progress is visible while it runs; kill it once it is well under way.
    let deadline = Instant::now() + Duration::from_secs(120);
    let at_kill = loop {
        let a: Value = client
            .get(format!("{}/v1/imports/{id}", server.url))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let read = a["rows_read"].as_i64().unwrap();
        assert_eq!(
            a["status"], "running",
            "the import finished before the kill: {a}"
        );
        if read >= 600 {
            break a;
        }
        assert!(Instant::now() < deadline, "no progress: {a}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();
    assert!(at_kill["rows_read"].as_i64().unwrap() < rows);

    let mut again = serve(dir.path(), relaxed_sync_ms);
    let deadline = Instant::now() + Duration::from_secs(300);
    let done = loop {
        let a: Value = client
            .get(format!("{}/v1/imports/{id}", again.url))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if a["status"] != "running" {
            break a;
        }
        assert!(Instant::now() < deadline, "the import did not resume: {a}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(done["status"], "completed_with_errors", "{done}");
    assert_eq!(done["rows_read"], rows);
    assert_eq!(done["created"], want_created);
    assert_eq!(done["updated"], 0);
    assert_eq!(done["failed"], want_failed);
    assert_eq!(done["skipped"]["duplicate"], want_dups);
    assert_eq!(done["bytes_processed"], done["bytes_total"]);
    let list: Value = client
        .get(format!("{}/v1/lists/{list_id}", again.url))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        list["member_count"], want_created,
        "each contact joined once"
    );
    let report = client
        .get(format!("{}/v1/imports/{id}/errors", again.url))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        report.lines().count() as i64,
        1 + want_failed + want_dups,
        "one report line per failed or duplicate row"
    );
    again.child.kill().unwrap();
    again.child.wait().unwrap();
}
