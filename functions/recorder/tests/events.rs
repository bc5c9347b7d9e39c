//! The recorder function fed the sample events-queue batch in `events/` over DynamoDB in
//! the local emulator: the bad record fails alone, the duplicate changes nothing, the
//! Apple proxy open is a machine open; the same batch again changes nothing.

use std::sync::Arc;

use chrono::{NaiveDate, Utc};
use mailpilot_shared::adapters::aws::store::DynamoStore;
use mailpilot_shared::adapters::aws::table::create_table;
use mailpilot_shared::model::message::MessageState;
use mailpilot_shared::ports::queue::Lane;
use mailpilot_shared::ports::store::Store;
use mailpilot_shared::usecases::tracking::RecorderConfig;
use mailpilot_shared::usecases::{analytics, messages};
use recorder::{Handler, ItemFailure, SqsEvent};

const WS: &str = "ws_sample0000000000000000000000";
const MSG: &str = "msg_sample000000000000000000001";

fn event() -> SqsEvent {
    let path = format!(
        "{}/../../events/sqs-tracking-events.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let raw = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    serde_json::from_str(&raw).expect("event parses")
}

#[tokio::test]
async fn the_sample_batch_records_once() {
    let client = mailpilot_tests::aws::dynamo_client();
    let table = format!(
        "recorder-events-{}",
        Utc::now().timestamp_nanos_opt().unwrap_or(0)
    );
    create_table(&client, &table).await.expect("create table");
    let store: Arc<dyn Store> = Arc::new(DynamoStore::new(client, table));
    let sent = "2026-11-25T12:00:00Z".parse().unwrap();
    let mut m = messages::new_record(
        WS,
        MSG.into(),
        Lane::Priority,
        MessageState::Sent,
        "snd_sample",
        "ana@example.com",
        None,
        "Hello",
        sent,
    );
    m.timeline[0].state = MessageState::Sent;
    messages::insert(store.as_ref(), &m, 400).await.unwrap();
    let handler = Handler {
        store: store.clone(),
        config: RecorderConfig::default(),
    };
    let out = handler.handle(event()).await;
    assert_eq!(
        out.batch_item_failures,
        vec![ItemFailure {
            item_identifier: "5e1f8e6a-0f7e-4d0e-9a55-5b1e3a7f0004".into()
        }]
    );
    let again = handler.handle(event()).await;
    assert_eq!(again.batch_item_failures.len(), 1);
    let day = NaiveDate::from_ymd_opt(2026, 11, 25).unwrap();
    let c = analytics::overview(store.as_ref(), WS, day, day)
        .await
        .unwrap();
    assert_eq!(c.human_opens, 1);
    assert_eq!(c.unique_human_opens, 1);
    assert_eq!(c.machine_opens, 1);
    assert_eq!(c.human_clicks, 1);
    assert_eq!(c.unique_human_clicks, 1);
    assert_eq!(c.bot_clicks, 0);
}
