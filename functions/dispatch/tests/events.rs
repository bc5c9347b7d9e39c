//! The dispatch function fed the sample Scheduler event in `events/`, over DynamoDB in
//! the local emulator and SQS in the emulator: due messages reach the send queue, future
//! ones are not read.

use std::sync::Arc;

use chrono::{Duration, Utc};
use mailpilot_shared::adapters::aws::queue::SqsQueue;
use mailpilot_shared::adapters::aws::store::DynamoStore;
use mailpilot_shared::adapters::aws::table::create_table;
use mailpilot_shared::model::Id;
use mailpilot_shared::ports::clock::{Clock, ManualClock};
use mailpilot_shared::ports::store::Store;
use mailpilot_shared::usecases::messages::{self, Content, Planned};

fn event(name: &str) -> serde_json::Value {
    let path = format!("{}/../../events/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

fn planned(due: chrono::DateTime<Utc>, i: usize) -> Planned {
    Planned {
        id: Id::generate(Id::MESSAGE),
        sender_id: "snd_test".into(),
        to: format!("r{i}@example.com"),
        contact_id: None,
        time_zone: None,
        content: Content {
            subject: "News".into(),
            html: None,
            text: Some("Hello".into()),
            variables: Default::default(),
        },
        due,
    }
}

#[tokio::test]
async fn the_sample_schedule_event_dispatches_due_messages_only() {
    let suffix = Utc::now().timestamp_nanos_opt().unwrap_or(0);
    let client = mailpilot_tests::aws::dynamo_client();
    let table = format!("dispatch-events-{suffix}");
    create_table(&client, &table).await.expect("create table");
    let store: Arc<dyn Store> = Arc::new(DynamoStore::new(client, table));
    let sqs = mailpilot_tests::aws::sqs_client();
    let mut urls = vec![];
    for name in ["send", "priority"] {
        let out = sqs
            .create_queue()
            .queue_name(format!("dispatch-{name}-{suffix}"))
            .send()
            .await
            .expect("create queue");
        urls.push(out.queue_url().unwrap().to_string());
    }
    let bulk = SqsQueue::new(sqs.clone(), &urls[0]);
    let priority = SqsQueue::new(sqs.clone(), &urls[1]);

    // Near the real time: expired items (TTL, real time) are hidden from reads.
    let start = mailpilot_tests::next_wednesday_10_utc();
    let clock = ManualClock::new(start);
    let ws = Id::generate(Id::WORKSPACE);
    let due: Vec<Planned> = (0..12).map(|i| planned(start, i)).collect();
    let future: Vec<Planned> = (0..30)
        .map(|i| planned(start + Duration::days(1), 100 + i))
        .collect();
    messages::plan(store.as_ref(), &ws, due, clock.now(), 400)
        .await
        .unwrap();
    messages::plan(store.as_ref(), &ws, future, clock.now(), 400)
        .await
        .unwrap();

    // Before the minute has passed, nothing is due.
    let r = dispatch::handle(
        event("scheduler-dispatch.json"),
        store.as_ref(),
        &bulk,
        &priority,
        &clock,
    )
    .await
    .unwrap();
    assert_eq!(r.enqueued, 0);
    clock.advance(Duration::minutes(5));
    let r = dispatch::handle(
        event("scheduler-dispatch.json"),
        store.as_ref(),
        &bulk,
        &priority,
        &clock,
    )
    .await
    .unwrap();
    assert_eq!(r.enqueued, 12);
    assert_eq!(r.items_read, 12, "future messages are never read");
    // Running again reads nothing (the checkpoint moved on).
    let r = dispatch::handle(
        event("scheduler-dispatch.json"),
        store.as_ref(),
        &bulk,
        &priority,
        &clock,
    )
    .await
    .unwrap();
    assert_eq!(r.items_read, 0);

    let mut bodies = vec![];
    for _ in 0..10 {
        let out = sqs
            .receive_message()
            .queue_url(&urls[0])
            .max_number_of_messages(10)
            .send()
            .await
            .expect("receive");
        if out.messages().is_empty() {
            break;
        }
        for m in out.messages() {
            bodies.push(m.body().unwrap_or_default().to_string());
            sqs.delete_message()
                .queue_url(&urls[0])
                .receipt_handle(m.receipt_handle().unwrap())
                .send()
                .await
                .expect("delete");
        }
    }
    assert_eq!(bodies.len(), 12);
    assert!(bodies.iter().all(|b| b.contains(&ws)));
}
