//! The webhooks function fed the sample events in `events/` (on the embedded store):
//! the EventBridge → SQS batch of every SES event type (a malformed record fails alone,
//! a redelivered batch changes nothing), and an API Gateway request carrying a
//! base64-encoded, Svix-signed Resend webhook; each Resend and SES sample through its
//! parser and recorder, then each through the function's handler: every `ses-event-*`
//! as the EventBridge rule queues it, every `resend-webhook-*` (signed here) and every
//! `sns-*` (signed by `scripts/sign-sns-events.py` with the sample signer in
//! `tests/testdata`) as API Gateway delivers it, asserting the message's state,
//! timeline and the suppression each leaves.

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
use mailpilot_shared::webhooks::svix::SvixSecret;
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

/// A provider connection of `ws`; its id.
async fn connection(
    store: &dyn Store,
    secrets: &SecretsDoc,
    ws: &str,
    settings: SettingsInput,
) -> String {
    let input = CreateProvider {
        name: "Provider".into(),
        rate_per_second: None,
        settings,
    };
    let providers = Providers::new(Sealer::new(&secrets.encryption_key), None);
    providers::create(store, &providers, ws, input)
        .await
        .unwrap()
        .id
}

/// A Resend connection whose webhooks are signed with [`SECRET`].
fn resend_settings() -> SettingsInput {
    SettingsInput::Resend {
        api_key: Secret::new("re_live_key_0000000000"),
        webhook_secret: Some(Secret::new(SECRET)),
        base_url: None,
    }
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
    let conn = connection(store.as_ref(), &secrets, &ws, resend_settings()).await;
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
        .replace("CONNECTION_ID", &conn);
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

// ---- every sample through a handler -------------------------------------------------

/// Serves the sample signer's certificate for any `SigningCertURL` (the verifier has
/// checked it is an SNS https URL first) and notes the other URLs visited (the
/// `SubscribeURL` of a confirmation).
#[derive(Default)]
struct SampleCerts(std::sync::Mutex<Vec<String>>);

#[async_trait]
impl CertFetcher for SampleCerts {
    async fn fetch(&self, url: &str) -> Result<Vec<u8>, String> {
        if url.ends_with(".pem") {
            let path = format!(
                "{}/tests/testdata/sns-sample-signer.pem",
                env!("CARGO_MANIFEST_DIR")
            );
            return std::fs::read(path).map_err(|e| e.to_string());
        }
        self.0.lock().unwrap().push(url.to_string());
        Ok(Vec::new())
    }
}

/// A store with the SES sample workspace's Resend and SES connections, and the webhooks
/// function over it (both triggers) at a clock the test moves.
struct Function {
    store: Arc<dyn Store>,
    clock: Arc<ManualClock>,
    certs: Arc<SampleCerts>,
    events: EventsHandler,
    router: axum::Router,
    resend_conn: String,
    ses_conn: String,
    _dir: tempfile::TempDir,
}

const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:mailpilot-ses-events";

impl Function {
    async fn new(at: &str) -> Function {
        let (store, dir) = store();
        let secrets = SecretsDoc::generate();
        let resend_conn = connection(store.as_ref(), &secrets, SES_WS, resend_settings()).await;
        let ses = SettingsInput::Ses {
            region: "us-east-1".into(),
            configuration_set: Some("mailpilot".into()),
            access_key_id: None,
            secret_access_key: None,
            sns_topic_arns: vec![TOPIC.into()],
        };
        let ses_conn = connection(store.as_ref(), &secrets, SES_WS, ses).await;
        let clock = Arc::new(ManualClock::new(at.parse().unwrap()));
        let certs = Arc::new(SampleCerts::default());
        let router = webhooks::router(
            store.clone(),
            &secrets,
            clock.clone(),
            certs.clone(),
            EventConfig::default(),
        );
        let events = EventsHandler {
            store: store.clone(),
            clock: clock.clone(),
            config: EventConfig::default(),
        };
        Function {
            store,
            clock,
            certs,
            events,
            router,
            resend_conn,
            ses_conn,
            _dir: dir,
        }
    }

    /// The sample API Gateway request with another path, headers and body.
    async fn post(&self, path: &str, headers: &[(&str, String)], body: &str) -> (u16, Value) {
        let mut req: Value = serde_json::from_str(&event("apigw-webhook-resend.json")).unwrap();
        req["rawPath"] = json!(path);
        req["requestContext"]["http"]["path"] = json!(path);
        req["pathParameters"]["proxy"] = json!(path.trim_start_matches("/webhooks/"));
        let h = req["headers"].as_object_mut().unwrap();
        h.retain(|k, _| !k.starts_with("svix-"));
        for (k, v) in headers {
            h.insert(k.to_string(), json!(v));
        }
        req["body"] = json!(body);
        req["isBase64Encoded"] = json!(false);
        let res = webhooks::dispatch(&self.events, &self.router, req, Default::default())
            .await
            .unwrap();
        let status = res["statusCode"].as_u64().unwrap() as u16;
        let body = serde_json::from_str(res["body"].as_str().unwrap_or("null")).unwrap();
        (status, body)
    }

    /// A Resend webhook body, Svix-signed now.
    async fn resend(&self, svix_id: &str, body: &str) -> (u16, Value) {
        let at = self.clock.now().timestamp();
        let sig = SvixSecret::parse(SECRET)
            .unwrap()
            .sign(svix_id, at, body.as_bytes());
        let path = format!("/webhooks/resend/{SES_WS}/{}", self.resend_conn);
        let headers = [
            ("svix-id", svix_id.to_string()),
            ("svix-timestamp", at.to_string()),
            ("svix-signature", sig),
        ];
        self.post(&path, &headers, body).await
    }

    /// An SNS delivery, as SNS POSTs it.
    async fn sns(&self, body: &str) -> (u16, Value) {
        let path = format!("/webhooks/ses/{SES_WS}/{}", self.ses_conn);
        let headers = [("content-type", "text/plain; charset=UTF-8".to_string())];
        self.post(&path, &headers, body).await
    }

    async fn message(&self, id: &str) -> messages::MessageRecord {
        messages::load(self.store.as_ref(), SES_WS, id)
            .await
            .unwrap()
            .unwrap()
    }

    /// [`MSG`], sent to `to` through `provider` as `pid`.
    async fn sent(&self, to: &str, provider: &str, pid: &str) {
        sent_message(self.store.as_ref(), SES_WS, MSG, to, provider, pid).await;
    }

    /// How many `replied` entries a message's timeline has.
    async fn replies(&self, id: &str) -> usize {
        let m = self.message(id).await;
        m.timeline
            .iter()
            .filter(|t| t.reason.as_deref() == Some("replied"))
            .count()
    }

    async fn suppression(&self, email: &str) -> Option<String> {
        suppressions::get(self.store.as_ref(), SES_WS, email)
            .await
            .ok()
            .map(|s| {
                serde_json::to_value(s.reason)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_string()
            })
    }
}

const MSG: &str = "msg_01JQ0000000000000000000000";
const SES_ID: &str = "0100019a-ses-0001";

#[tokio::test]
async fn each_ses_sample_through_the_eventbridge_queue() {
    use MessageState::*;
    // (sample, state after, reason of the last timeline entry, suppression)
    let cases = [
        ("ses-event-send.json", Sent, None, None),
        ("ses-event-delivery.json", Delivered, None, None),
        (
            "ses-event-bounce-permanent.json",
            Bounced,
            Some("hard_bounce"),
            Some("hard_bounce"),
        ),
        (
            "ses-event-bounce-transient.json",
            Sent,
            Some("soft_bounce"),
            None,
        ),
        (
            "ses-event-bounce-undetermined.json",
            Sent,
            Some("undetermined_bounce"),
            None,
        ),
        (
            "ses-event-complaint.json",
            Complained,
            Some("complaint"),
            Some("complaint"),
        ),
        (
            "ses-event-reject.json",
            Failed,
            Some("permanent:reject"),
            None,
        ),
        (
            "ses-event-delivery-delay.json",
            Sent,
            Some("delivery_delayed"),
            None,
        ),
        (
            "ses-event-rendering-failure.json",
            Failed,
            Some("permanent:rendering_failure"),
            None,
        ),
    ];
    for (name, state, reason, suppression) in cases {
        let f = Function::new("2026-11-25T16:10:00Z").await;
        let detail: Value = serde_json::from_str(&event(name)).unwrap();
        let to = detail["mail"]["destination"][0].as_str().unwrap();
        sent_message(f.store.as_ref(), SES_WS, MSG, to, "ses", SES_ID).await;
        // As the EventBridge rule delivers it to the queue.
        let envelope = json!({
            "version": "0", "id": format!("eb-{name}"), "detail-type": "SES event",
            "source": "aws.ses", "account": "123456789012", "time": "2026-11-25T16:00:04Z",
            "region": "us-east-1", "resources": [], "detail": detail,
        });
        let batch = json!({"Records": [{
            "messageId": "sqs-1", "receiptHandle": "rh-1", "body": envelope.to_string(),
            "attributes": {"SentTimestamp": "1795104004000"}, "eventSource": "aws:sqs",
            "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:mailpilot-provider-events",
        }]});
        let res = webhooks::dispatch(&f.events, &f.router, batch.clone(), Default::default())
            .await
            .unwrap();
        assert_eq!(res, json!({"batchItemFailures": []}), "{name}");
        let m = f.message(MSG).await;
        assert_eq!(m.state, state, "{name}: {:?}", m.timeline);
        match reason {
            None if state == Sent => assert_eq!(m.timeline.len(), 1, "{name}: {:?}", m.timeline),
            None => assert_eq!(m.timeline.last().unwrap().reason, None, "{name}"),
            Some(r) => {
                let last = m
                    .timeline
                    .last()
                    .unwrap()
                    .reason
                    .clone()
                    .unwrap_or_default();
                assert!(last.starts_with(r), "{name}: {last}");
            }
        }
        assert_eq!(f.suppression(to).await.as_deref(), suppression, "{name}");
        // Redelivered: nothing changes.
        webhooks::dispatch(&f.events, &f.router, batch, Default::default())
            .await
            .unwrap();
        assert_eq!(f.message(MSG).await.version, m.version, "{name}");
    }
}

#[tokio::test]
async fn each_resend_sample_through_the_webhook_route() {
    use MessageState::*;
    let cases = [
        ("resend-webhook-delivered.json", Delivered, None, None),
        (
            "resend-webhook-bounced.json",
            Bounced,
            Some("hard_bounce"),
            Some("hard_bounce"),
        ),
        (
            "resend-webhook-complained.json",
            Complained,
            Some("complaint"),
            Some("complaint"),
        ),
        (
            "resend-webhook-delivery-delayed.json",
            Sent,
            Some("delivery_delayed"),
            None,
        ),
    ];
    for (name, state, reason, suppression) in cases {
        let f = Function::new("2026-11-25T16:10:00Z").await;
        let body = event(name);
        let v: Value = serde_json::from_str(&body).unwrap();
        let to = v["data"]["to"][0].as_str().unwrap();
        let pid = v["data"]["email_id"].as_str().unwrap();
        // The tagged message, or (untagged) the one the provider-id pointer names.
        let msg = v["data"]["tags"]["mp_msg"]
            .as_str()
            .unwrap_or("msg_01JQ0000000000000000000009");
        sent_message(f.store.as_ref(), SES_WS, msg, to, "resend", pid).await;
        let (status, ack) = f.resend("msg_svix_1", &body).await;
        assert_eq!(status, 200, "{name}: {ack}");
        assert_eq!(ack["applied"], 1, "{name}: {ack}");
        let m = f.message(msg).await;
        assert_eq!(m.state, state, "{name}: {:?}", m.timeline);
        let last = m.timeline.last().unwrap().reason.clone();
        match reason {
            None => assert_eq!(last, None, "{name}"),
            Some(r) => assert!(last.unwrap_or_default().starts_with(r), "{name}"),
        }
        assert_eq!(f.suppression(to).await.as_deref(), suppression, "{name}");
        let (_, ack) = f.resend("msg_svix_1", &body).await;
        assert_eq!(ack["duplicates"], 1, "{name}: {ack}");
    }
}

#[tokio::test]
async fn the_sns_samples_confirm_the_subscription_and_record_the_ses_event() {
    let f = Function::new("2026-11-25T16:10:00Z").await;
    f.sent("gone@example.com", "ses", SES_ID).await;

    let confirmation = event("sns-subscription-confirmation.json");
    let (status, ack) = f.sns(&confirmation).await;
    assert_eq!(status, 200, "{ack}");
    assert_eq!(ack["confirmed"], true, "{ack}");
    let subscribe: Value = serde_json::from_str(&confirmation).unwrap();
    assert_eq!(
        *f.certs.0.lock().unwrap(),
        vec![subscribe["SubscribeURL"].as_str().unwrap().to_string()]
    );

    let notification = event("sns-notification-ses-event.json");
    let (status, ack) = f.sns(&notification).await;
    assert_eq!(status, 200, "{ack}");
    assert_eq!(ack["applied"], 1, "{ack}");
    let m = f.message(MSG).await;
    assert_eq!(m.state, MessageState::Bounced, "{:?}", m.timeline);
    assert_eq!(
        f.suppression("gone@example.com").await.as_deref(),
        Some("hard_bounce")
    );
    // SNS redelivers: nothing changes.
    let (_, ack) = f.sns(&notification).await;
    assert_eq!(ack["duplicates"], 1, "{ack}");
    assert_eq!(f.message(MSG).await.version, m.version);
    // Another topic's message, or a tampered one: 401, nothing recorded.
    for edit in ["TopicArn", "Message"] {
        let mut v: Value = serde_json::from_str(&notification).unwrap();
        v[edit] = json!(format!("{}x", v[edit].as_str().unwrap()));
        let (status, _) = f.sns(&v.to_string()).await;
        assert_eq!(status, 401, "{edit}");
    }
    // Past the staleness window: 401.
    f.clock.advance(chrono::Duration::hours(2));
    let (status, _) = f.sns(&notification).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn the_inbound_samples_record_a_reply_once() {
    // SES receiving through SNS: In-Reply-To names the SES Message-ID of our message
    // (SES replaces ours); Resend's email.received: In-Reply-To names our own Message-ID
    // (`<{message id}@{domain}>`, so a real message id).
    for (msg, provider, pid, sample) in [
        (MSG, "ses", SES_ID, "sns-notification-ses-received.json"),
        (
            "msg_01jq0000000000000000000000",
            "resend",
            "4ef9a417-02e9-4d39-ad75-9611e0fcc33c",
            "resend-webhook-received.json",
        ),
    ] {
        let f = Function::new("2026-11-25T17:05:00Z").await;
        sent_message(
            f.store.as_ref(),
            SES_WS,
            msg,
            "ada@example.com",
            provider,
            pid,
        )
        .await;
        let body = event(sample);
        for expect in ["applied", "duplicates"] {
            let (status, ack) = match provider {
                "ses" => f.sns(&body).await,
                _ => f.resend("msg_svix_in_1", &body).await,
            };
            assert_eq!(status, 200, "{sample}: {ack}");
            assert_eq!(ack[expect], 1, "{sample}: {ack}");
        }
        assert_eq!(f.message(msg).await.state, MessageState::Sent, "{sample}");
        assert_eq!(f.replies(msg).await, 1, "{sample}");
    }
}
