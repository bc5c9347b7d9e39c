//! The webhooks function fed the sample events in `events/` (on the embedded store):
//! the EventBridge → SQS batch of every SES event type (a malformed record fails alone,
//! a redelivered batch changes nothing), and an API Gateway request carrying a
//! base64-encoded, Svix-signed Resend webhook; each Resend and SES sample through its
//! parser and recorder.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mailpilot_shared::adapters::local::store::RedbStore;
use mailpilot_shared::model::message::MessageState;
use mailpilot_shared::ports::clock::{Clock, ManualClock};
use mailpilot_shared::ports::queue::Lane;
use mailpilot_shared::ports::store::{Item, Store, val};
use mailpilot_shared::secrets::{Sealer, SecretsDoc};
use mailpilot_shared::usecases::messages;
use mailpilot_shared::usecases::provider_events::{self, EventConfig, Origin, Recorded};
use mailpilot_shared::usecases::providers::{
    self, CreateProvider, Providers, Secret, SettingsInput,
};
use mailpilot_shared::usecases::suppressions;
use mailpilot_shared::webhooks::events;
use mailpilot_shared::webhooks::sns::CertFetcher;
use serde_json::{Value, json};
use webhooks::{EventsHandler, ItemFailure, SqsEvent};

const SES_WS: &str = "ws_01JQ0000000000000000000000";
const SECRET: &str = "whsec_dGVzdC1zZWNyZXQtZm9yLW1haWxwaWxvdC13ZWJob29rcw==";

fn event(name: &str) -> String {
    let path = format!("{}/../../events/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

fn store() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(&dir.path().join("store.redb")).unwrap();
    (Arc::new(store), dir)
}

/// A sent message with the provider pointer the sender writes.
async fn sent_message(store: &dyn Store, ws: &str, id: &str, to: &str, provider: &str, pid: &str) {
    let mut m = messages::new_record(
        ws,
        id.into(),
        Lane::Bulk,
        MessageState::Sent,
        "snd_1",
        to,
        None,
        "Welcome",
        "2026-11-25T15:59:00Z".parse().unwrap(),
    );
    m.provider = Some(provider.into());
    m.provider_message_id = Some(pid.into());
    messages::insert(store, &m, 400).await.unwrap();
    let (pk, sk) = mailpilot_shared::keys::provider_message(provider, pid);
    let mut p = Item::new();
    p.insert("pk".into(), val::s(pk));
    p.insert("sk".into(), val::s(sk));
    p.insert("ws".into(), val::s(ws));
    p.insert("msg".into(), val::s(id));
    store.put(p, None).await.unwrap();
}

struct NoCerts;

#[async_trait]
impl CertFetcher for NoCerts {
    async fn fetch(&self, _url: &str) -> Result<Vec<u8>, String> {
        Err("no network in this test".into())
    }
}

#[tokio::test]
async fn the_sample_eventbridge_batch_settles_the_message_and_a_bad_record_fails_alone() {
    let (store, _dir) = store();
    sent_message(
        store.as_ref(),
        SES_WS,
        "msg_01JQ0000000000000000000000",
        "gone@example.com",
        "ses",
        "0100019a-ses-0001",
    )
    .await;
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(Utc::now()));
    let handler = EventsHandler {
        store: store.clone(),
        clock,
        config: EventConfig::default(),
    };
    let mut batch: Value = serde_json::from_str(&event("sqs-ses-eventbridge-events.json")).unwrap();
    let records = batch["Records"].as_array_mut().unwrap();
    let n = records.len();
    let mut bad = records[0].clone();
    bad["messageId"] = json!("bad-record");
    bad["body"] = json!("{\"detail\": 42");
    records.push(bad);
    let parsed: SqsEvent = serde_json::from_value(batch.clone()).unwrap();
    let out = handler.handle(parsed).await;
    assert_eq!(
        out.batch_item_failures,
        vec![ItemFailure {
            item_identifier: "bad-record".into()
        }]
    );
    let m = messages::load(store.as_ref(), SES_WS, "msg_01JQ0000000000000000000000")
        .await
        .unwrap()
        .unwrap();
    // Delivered, then the permanent bounce; the later complaint/reject cannot undo it.
    assert_eq!(m.state, MessageState::Bounced, "{:?}", m.timeline);
    let reasons: Vec<String> = m.timeline.iter().filter_map(|t| t.reason.clone()).collect();
    assert!(
        reasons.iter().any(|r| r.starts_with("soft_bounce")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.starts_with("delivery_delayed")),
        "{reasons:?}"
    );
    let s = suppressions::get(store.as_ref(), SES_WS, "gone@example.com")
        .await
        .unwrap();
    assert_eq!(serde_json::to_value(s.reason).unwrap(), "hard_bounce");

    // The same batch again: nothing changes, and still only the bad record fails.
    let out = handler.handle(serde_json::from_value(batch).unwrap()).await;
    assert_eq!(out.batch_item_failures.len(), 1);
    let again = messages::load(store.as_ref(), SES_WS, "msg_01JQ0000000000000000000000")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.timeline, m.timeline);
    assert_eq!(again.version, m.version);
    assert!(n >= 9);
}

#[tokio::test]
async fn every_sample_provider_event_is_recorded_once() {
    let now: DateTime<Utc> = "2026-11-25T16:05:00Z".parse().unwrap();
    let cfg = EventConfig::default();
    for name in [
        "ses-event-send.json",
        "ses-event-delivery.json",
        "ses-event-bounce-permanent.json",
        "ses-event-bounce-transient.json",
        "ses-event-bounce-undetermined.json",
        "ses-event-complaint.json",
        "ses-event-reject.json",
        "ses-event-delivery-delay.json",
        "ses-event-rendering-failure.json",
        "resend-webhook-delivered.json",
        "resend-webhook-bounced.json",
        "resend-webhook-complained.json",
        "resend-webhook-delivery-delayed.json",
    ] {
        let (store, _dir) = store();
        let evs = if name.starts_with("ses") {
            let v: Value = serde_json::from_str(&event(name)).unwrap();
            events::parse_ses(&format!("env-{name}"), &v).unwrap()
        } else {
            events::parse_resend(&format!("svix-{name}"), event(name).as_bytes()).unwrap()
        };
        for ev in evs {
            // A fresh sent message for each sample, found by its provider id.
            let id = format!("msg_{:0>26}", name.len() * 7 % 97);
            let ws = ev
                .workspace_id
                .clone()
                .unwrap_or_else(|| SES_WS.to_string());
            let msg = ev.message_id.clone().unwrap_or(id);
            let to = ev.recipient.clone().unwrap_or("someone@example.com".into());
            if messages::load(store.as_ref(), &ws, &msg)
                .await
                .unwrap()
                .is_none()
            {
                sent_message(
                    store.as_ref(),
                    &ws,
                    &msg,
                    &to,
                    &ev.provider,
                    &ev.provider_message_id,
                )
                .await;
            }
            let first = provider_events::record(store.as_ref(), now, &cfg, Origin::Account, &ev)
                .await
                .unwrap();
            assert!(
                matches!(first, Recorded::Applied { .. }),
                "{name}: {first:?}"
            );
            let second = provider_events::record(store.as_ref(), now, &cfg, Origin::Account, &ev)
                .await
                .unwrap();
            assert_eq!(second, Recorded::Duplicate, "{name}");
            // Another workspace's connection never reaches it.
            let foreign = provider_events::record(
                store.as_ref(),
                now,
                &cfg,
                Origin::Connection {
                    workspace_id: "ws_other00000000000000000000",
                },
                &ev,
            )
            .await
            .unwrap();
            assert_eq!(foreign, Recorded::Unmatched, "{name}");
        }
    }
}

#[tokio::test]
async fn the_sample_api_gateway_request_is_a_verified_resend_webhook() {
    let (store, _dir) = store();
    let secrets = SecretsDoc::generate();
    let ws = mailpilot_shared::usecases::workspaces::create_workspace(
        store.as_ref(),
        mailpilot_shared::usecases::workspaces::CreateWorkspace {
            name: "Acme".into(),
        },
    )
    .await
    .unwrap()
    .workspace_id;
    let conn = providers::create(
        store.as_ref(),
        &Providers::new(Sealer::new(&secrets.encryption_key), None),
        &ws,
        CreateProvider {
            name: "Resend".into(),
            rate_per_second: None,
            settings: SettingsInput::Resend {
                api_key: Secret::new("re_live_key_0000000000"),
                webhook_secret: Some(Secret::new(SECRET)),
                base_url: None,
            },
        },
    )
    .await
    .unwrap();
    sent_message(
        store.as_ref(),
        &ws,
        "msg_01JQ0000000000000000000009",
        "gone@example.com",
        "resend",
        "4ef9a417-02e9-4d39-ad75-9611e0fcc33d",
    )
    .await;
    let at: DateTime<Utc> = "2026-11-25T16:00:30Z".parse().unwrap();
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(at));
    let router = webhooks::router(
        store.clone(),
        &secrets,
        clock.clone(),
        Arc::new(NoCerts),
        EventConfig::default(),
    );
    let events_handler = EventsHandler {
        store: store.clone(),
        clock,
        config: EventConfig::default(),
    };
    let text = event("apigw-webhook-resend.json")
        .replace("WORKSPACE_ID", &ws)
        .replace("CONNECTION_ID", &conn.id);
    let payload: Value = serde_json::from_str(&text).unwrap();
    let call = |p: Value| {
        let (events_handler, router) = (&events_handler, &router);
        async move {
            webhooks::dispatch(events_handler, router, p, Default::default())
                .await
                .unwrap()
        }
    };
    let res = call(payload.clone()).await;
    assert_eq!(res["statusCode"], 200, "{res}");
    let ack: Value = serde_json::from_str(res["body"].as_str().unwrap()).unwrap();
    assert_eq!(ack["applied"], 1, "{ack}");
    let m = messages::load(store.as_ref(), &ws, "msg_01JQ0000000000000000000009")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.state, MessageState::Bounced);
    // Redelivered: nothing changes.
    let res = call(payload.clone()).await;
    let ack: Value = serde_json::from_str(res["body"].as_str().unwrap()).unwrap();
    assert_eq!(ack["duplicates"], 1, "{ack}");
    // The signature broken: 401.
    let mut forged = payload;
    forged["headers"]["svix-signature"] = json!("v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
    let res = call(forged).await;
    assert_eq!(res["statusCode"], 401, "{res}");
}
