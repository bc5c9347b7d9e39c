//! The track function fed the sample API Gateway events in `events/` (open, click,
//! unsubscribe page, RFC 8058 one-click) over DynamoDB in the local emulator, and the
//! events it hands to the queue.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::Utc;
use http_body_util::BodyExt;
use mailpilot_shared::adapters::aws::store::DynamoStore;
use mailpilot_shared::adapters::aws::table::create_table;
use mailpilot_shared::keys;
use mailpilot_shared::model::links::LinkKeys;
use mailpilot_shared::model::message::MessageState;
use mailpilot_shared::model::tracking::{TrackEvent, TrackKind};
use mailpilot_shared::ports::events::EventSink;
use mailpilot_shared::ports::queue::{Lane, QueueError};
use mailpilot_shared::ports::store::Store;
use mailpilot_shared::usecases::{messages, suppressions, to_item};
use tower::ServiceExt;

const WS: &str = "ws_sample0000000000000000000000";
const MSG: &str = "msg_sample000000000000000000001";
/// The key the sample events' tokens are signed with.
const SAMPLE_KEYS: &str = "sample:sample-link-secret-0123456789abcdef-XYZ";

#[derive(Default)]
struct Sink(Mutex<Vec<TrackEvent>>);

#[async_trait]
impl EventSink for Sink {
    async fn emit(&self, e: TrackEvent) -> Result<(), QueueError> {
        self.0.lock().unwrap().push(e);
        Ok(())
    }
}

fn event(name: &str) -> lambda_http::Request {
    let path = format!("{}/../../events/{name}", env!("CARGO_MANIFEST_DIR"));
    let raw = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    lambda_http::request::from_str(&raw).expect("event parses")
}

async fn call(app: &axum::Router, req: lambda_http::Request) -> http::Response<bytes_of::Bytes> {
    let (parts, body) = req.into_parts();
    let body = match body {
        lambda_http::Body::Text(t) => axum::body::Body::from(t),
        lambda_http::Body::Binary(b) => axum::body::Body::from(b),
        _ => axum::body::Body::empty(),
    };
    let res = app
        .clone()
        .oneshot(http::Request::from_parts(parts, body))
        .await
        .unwrap();
    let (parts, body) = res.into_parts();
    http::Response::from_parts(parts, body.collect().await.unwrap().to_bytes())
}

mod bytes_of {
    pub type Bytes = axum::body::Bytes;
}

#[tokio::test]
async fn sample_events_open_click_and_unsubscribe() {
    let client = mailpilot_tests::aws::dynamo_client();
    let table = format!(
        "track-events-{}",
        Utc::now().timestamp_nanos_opt().unwrap_or(0)
    );
    create_table(&client, &table).await.expect("create table");
    let store: Arc<dyn Store> = Arc::new(DynamoStore::new(client, table));
    let now = Utc::now();
    let (pk, sk) = keys::workspace(WS);
    store
        .put(
            to_item(
                &pk,
                &sk,
                &serde_json::json!({"id": WS, "name": "Sample Shop", "created_at": now, "updated_at": now}),
            )
            .unwrap(),
            None,
        )
        .await
        .unwrap();
    let m = messages::new_record(
        WS,
        MSG.into(),
        Lane::Priority,
        MessageState::Sent,
        "snd_sample",
        "ana@example.com",
        None,
        "Hello",
        now,
    );
    messages::insert(store.as_ref(), &m, 400).await.unwrap();
    let sink = Arc::new(Sink::default());
    let app = track::app(
        store.clone(),
        Arc::new(LinkKeys::parse(SAMPLE_KEYS).unwrap()),
        sink.clone(),
    );

    let open = call(&app, event("track-open.json")).await;
    assert_eq!(open.status(), 200);
    assert_eq!(open.headers()["content-type"], "image/gif");
    assert_eq!(open.body().len(), 43);

    let click = call(&app, event("track-click.json")).await;
    assert_eq!(click.status(), 302);
    assert_eq!(
        click.headers()["location"],
        "https://example.com/pricing?utm_source=mail"
    );
    {
        let events = sink.0.lock().unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].kind, TrackKind::Open);
        assert_eq!(events[0].workspace_id, WS);
        // API Gateway's X-Forwarded-For gives the client's address.
        assert_eq!(events[0].ip, Some("198.51.100.23".parse().unwrap()));
        assert!(matches!(events[1].kind, TrackKind::Click { link: 0, .. }));
        assert_ne!(events[0].id, events[1].id);
    }

    let page = call(&app, event("track-unsubscribe-page.json")).await;
    assert_eq!(page.status(), 200);
    let html = String::from_utf8_lossy(page.body());
    assert!(html.contains("Sample Shop"), "{html}");
    assert!(
        suppressions::reason_for(store.as_ref(), WS, "ana@example.com")
            .await
            .unwrap()
            .is_none(),
        "the page alone unsubscribes nobody"
    );
    for _ in 0..2 {
        let r = call(&app, event("track-unsubscribe-one-click.json")).await;
        assert_eq!(r.status(), 200);
    }
    assert!(
        suppressions::reason_for(store.as_ref(), WS, "ana@example.com")
            .await
            .unwrap()
            .is_some()
    );
}
