//! The `mailpilot` binary as a newcomer runs it: first start, the CLI, Ctrl-C, and a
//! `SIGKILL` that must lose nothing acknowledged.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;
use common::Server;

fn serve(data: &std::path::Path) -> Server {
    common::serve(data, &[])
}

fn demo_key(lines: &[String]) -> String {
    lines
        .iter()
        .map(|l| l.trim())
        .find(|l| l.starts_with("mp_"))
        .expect("the first start prints the demo key")
        .to_string()
}

#[tokio::test]
async fn first_start_prints_a_key_and_a_curl_line_that_work() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = serve(dir.path());
    let key = demo_key(&server.stderr_lines);
    let curl = server
        .stderr_lines
        .iter()
        .find(|l| l.trim().starts_with("curl "))
        .expect("a curl line");
    assert!(curl.contains(&key) && curl.contains(&server.url));
    let res = reqwest::Client::new()
        .post(format!("{}/v1/contacts", server.url))
        .bearer_auth(&key)
        .json(&json!({"email": "ana@example.com", "first_name": "Ana"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    server.child.kill().unwrap();
    server.child.wait().unwrap();

    // A second start reuses the workspace and prints no new key.
    let mut again = serve(dir.path());
    assert!(
        again
            .stderr_lines
            .iter()
            .all(|l| !l.trim().starts_with("mp_"))
    );
    let res = reqwest::Client::new()
        .get(format!(
            "{}/v1/contacts/by-email/ana@example.com",
            again.url
        ))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    again.child.kill().unwrap();
    again.child.wait().unwrap();
}

#[tokio::test]
async fn sigkill_loses_nothing_that_was_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = serve(dir.path());
    let key = demo_key(&server.stderr_lines);
    let client = reqwest::Client::new();
    let mut acknowledged = vec![];
    for i in 0..60 {
        let res = client
            .post(format!("{}/v1/contacts", server.url))
            .bearer_auth(&key)
            .json(&json!({"email": format!("k{i}@x.example")}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        let body: Value = res.json().await.unwrap();
        acknowledged.push(body["id"].as_str().unwrap().to_string());
    }
    server.child.kill().unwrap(); // SIGKILL: no shutdown hook runs
    server.child.wait().unwrap();

    let mut again = serve(dir.path());
    for id in &acknowledged {
        let res = client
            .get(format!("{}/v1/contacts/{id}", again.url))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(
            res.status(),
            200,
            "contact {id} was acknowledged before the kill"
        );
    }
    again.child.kill().unwrap();
    again.child.wait().unwrap();
}

#[test]
fn ctrl_c_shuts_down_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = serve(dir.path());
    let status = Command::new("kill")
        .args(["-INT", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(code) = server.child.try_wait().unwrap() {
            assert!(code.success(), "exit status {code:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "server did not stop after SIGINT"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn workspace_create_prints_json_and_refuses_a_data_dir_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mailpilot"))
        .args(["workspace", "create", "Acme"])
        .env("MAILPILOT_DATA", dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    assert!(created["workspace_id"].as_str().unwrap().starts_with("ws_"));
    assert!(created["api_key"].as_str().unwrap().starts_with("mp_"));

    let mut server = serve(dir.path());
    let busy = Command::new(env!("CARGO_BIN_EXE_mailpilot"))
        .args(["workspace", "create", "Other"])
        .env("MAILPILOT_DATA", dir.path())
        .output()
        .unwrap();
    assert!(!busy.status.success());
    let err = String::from_utf8_lossy(&busy.stderr);
    assert!(err.contains("another mailpilot server"), "{err}");
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}
