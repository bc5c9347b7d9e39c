//! The crash window with a real `SIGKILL`: a runner process dies after the provider
//! accepted a message and before the sender recorded it. After a restart the message
//! ends `failed(unknown_outcome)` and is never sent again.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;

use chrono::{Duration, Utc};
use mailpilot_runner::{DeliverySettings, Settings};
use mailpilot_shared::model::message::MessageState;
use mailpilot_shared::ports::clock::ManualClock;
use mailpilot_shared::usecases::messages;
use mailpilot_shared::usecases::send::StaticDirectory;
use mailpilot_shared::usecases::senders::LOCAL_SENDER_ID;
use mailpilot_tests::delivery::{Faults, TestProvider, route};
use serde_json::json;

#[tokio::test]
async fn sigkill_between_send_and_record_never_sends_twice() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_send-crash-child"))
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the child starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = lines.next().expect("a line").expect("READY");
    let mut words = ready.split_whitespace().skip(1);
    let (url, key) = (
        words.next().unwrap().to_string(),
        words.next().unwrap().to_string(),
    );

    let client = reqwest::Client::new();
    let res = client
        .post(format!("{url}/v1/send"))
        .bearer_auth(&key)
        .json(&json!({"sender_id": LOCAL_SENDER_ID, "to": "once@example.com", "subject": "Once", "text": "only once"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let body: serde_json::Value = res.json().await.unwrap();
    let id = body["id"].as_str().unwrap().to_string();
    let ws = {
        let me: serde_json::Value = client
            .get(format!("{url}/v1/workspace"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        me["id"].as_str().unwrap().to_string()
    };
    // Blocks until the provider has accepted the message (the child then hangs).
    let sent = tokio::task::spawn_blocking(move || lines.next().expect("a line").expect("SENT"))
        .await
        .unwrap();
    assert_eq!(sent, format!("SENT {id}"));
    child.kill().expect("SIGKILL"); // Child::kill sends SIGKILL on Unix
    child.wait().unwrap();

    // Restart on the same data dir, with the clock past the claim's lease.
    let clock = Arc::new(ManualClock::new(Utc::now() + Duration::minutes(10)));
    let provider = Arc::new(TestProvider::new(Faults::default()));
    let directory = Arc::new(StaticDirectory::default());
    directory.insert(&ws, route(LOCAL_SENDER_ID, provider.clone()));
    let running = mailpilot_runner::start(Settings {
        addr: "127.0.0.1:0".into(),
        data_dir: dir.path().to_path_buf(),
        public_url: None,
        link_keys: None,
        admin_token: None,
        key_rate: 0,
        demo: false,
        delivery: DeliverySettings {
            workers: 0,
            directory: Some(directory),
            manual_clock: Some(clock),
            ..DeliverySettings::default()
        },
    })
    .await
    .unwrap();
    assert_eq!(
        running.engine.priority.len(),
        1,
        "the record survived the crash"
    );
    running.engine.drain(None).await.unwrap();
    let m = messages::load(running.store.as_ref(), &ws, &id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.state, MessageState::Failed);
    assert_eq!(m.reason.as_deref(), Some("unknown_outcome"));
    assert_eq!(provider.total(), 0, "never sent a second time");
    let accepted = std::fs::read_to_string(dir.path().join("accepted.log")).unwrap();
    assert_eq!(accepted.lines().collect::<Vec<_>>(), vec![id.as_str()]);
    assert!(running.engine.priority.is_empty());
    running.stop().await.unwrap();
}
