//! The send function fed the sample SQS event in `events/`, over DynamoDB in the local
//! emulator: the good record is sent, the unparsable one fails alone, the dead-lettered
//! one marks its message `failed(dead_letter)`.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::Utc;
use mailpilot_shared::adapters::aws::store::DynamoStore;
use mailpilot_shared::adapters::aws::table::create_table;
use mailpilot_shared::model::links::LinkKeys;
use mailpilot_shared::model::message::MessageState;
use mailpilot_shared::ports::clock::SystemClock;
use mailpilot_shared::ports::queue::{Lane, Queue, QueueError};
use mailpilot_shared::ports::store::Store;
use mailpilot_shared::usecases::messages::{self, Composer};
use mailpilot_shared::usecases::send::{SendConfig, StaticDirectory};
use mailpilot_tests::delivery::{Faults, TestProvider, route};
use send::{Handler, ItemFailure, Source, SqsEvent};

const WS: &str = "ws_sample0000000000000000000000";

#[derive(Default)]
struct RecordingQueue(Mutex<Vec<(String, u64)>>);

#[async_trait]
impl Queue for RecordingQueue {
    async fn send_batch(&self, _bodies: Vec<String>) -> Result<(), QueueError> {
        Ok(())
    }
    async fn change_visibility(&self, receipt: &str, secs: u64) -> Result<(), QueueError> {
        self.0.lock().unwrap().push((receipt.to_string(), secs));
        Ok(())
    }
}

fn event(name: &str) -> String {
    let path = format!("{}/../../events/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

#[tokio::test]
async fn the_sample_sqs_event_sends_fails_alone_and_dead_letters() {
    let client = mailpilot_tests::aws::dynamo_client();
    let table = format!(
        "send-events-{}",
        Utc::now().timestamp_nanos_opt().unwrap_or(0)
    );
    create_table(&client, &table).await.expect("create table");
    let store: Arc<dyn Store> = Arc::new(DynamoStore::new(client, table));
    // The renderer reads the workspace (name, footer, public URL) for every message.
    mailpilot_tests::delivery::put_workspace(store.as_ref(), WS).await;
    let now = Utc::now();
    for (id, to) in [
        ("msg_sample000000000000000000001", "ana@example.com"),
        ("msg_sample000000000000000000002", "bo@example.com"),
    ] {
        let m = messages::new_record(
            WS,
            id.into(),
            Lane::Priority,
            MessageState::Queued,
            "snd_test",
            to,
            None,
            "Your sign-in code",
            now,
        );
        messages::insert(store.as_ref(), &m, 400).await.unwrap();
    }
    let provider = Arc::new(TestProvider::new(Faults::default()));
    let directory = Arc::new(StaticDirectory::default());
    directory.insert(WS, route("snd_test", provider.clone()));
    let queue = Arc::new(RecordingQueue::default());
    let handler = Handler {
        store: store.clone(),
        directory,
        clock: Arc::new(SystemClock),
        composer: Composer {
            link_keys: Arc::new(LinkKeys::generate()),
            public_url: "https://mp.example".into(),
        },
        config: SendConfig::default(),
        bulk: Source {
            arn: "arn:aws:sqs:us-east-1:123456789012:mailpilot-dev-send".into(),
            queue: queue.clone(),
        },
        priority: Source {
            arn: "arn:aws:sqs:us-east-1:123456789012:mailpilot-dev-priority".into(),
            queue: queue.clone(),
        },
        dead_letter_arns: vec!["arn:aws:sqs:us-east-1:123456789012:mailpilot-dev-send-dlq".into()],
    };
    let ev: SqsEvent = serde_json::from_str(&event("sqs-send.json")).unwrap();
    let response = handler.handle(ev).await;
    assert_eq!(
        response.batch_item_failures,
        vec![ItemFailure {
            item_identifier: "9c1f8e6a-0f7e-4d0e-9a55-5b1e3a7f0002".into()
        }]
    );
    let sent = messages::load(store.as_ref(), WS, "msg_sample000000000000000000001")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sent.state, MessageState::Sent);
    assert_eq!(provider.count("ana@example.com"), 1);
    let dead = messages::load(store.as_ref(), WS, "msg_sample000000000000000000002")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(dead.state, MessageState::Failed);
    assert_eq!(dead.reason.as_deref(), Some("dead_letter"));

    // The same event again (SQS redelivers): nothing is sent twice.
    let ev: SqsEvent = serde_json::from_str(&event("sqs-send.json")).unwrap();
    handler.handle(ev).await;
    assert_eq!(provider.count("ana@example.com"), 1);
    assert!(queue.0.lock().unwrap().is_empty());
}
