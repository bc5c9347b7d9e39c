//! Provider events end to end through the runner: Resend webhooks (Svix) and SES through
//! SNS, against a fake Resend API that the runner sends through.
//! Badly signed, stale and replayed webhooks record nothing; a hard bounce stops the next
//! campaign's send to that address; sender health pauses a running campaign past the
//! complaint threshold and not below the minimum volume; replies are matched.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::extract::{Path, State};
use axum::response::IntoResponse;
use axum::{Json, Router};
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use mailpilot_runner::{DeliverySettings, Settings};
use mailpilot_shared::ports::clock::{Clock, ManualClock};
use mailpilot_shared::ports::store::{Key, Store, Update};
use mailpilot_shared::usecases::messages;
use mailpilot_shared::webhooks::sns::CertFetcher;
use mailpilot_shared::webhooks::svix::SvixSecret;
use mailpilot_tests::app::{TestApp, spawn_app_with};
use reqwest::StatusCode;
use serde_json::{Value, json};

const SECRET: &str = "whsec_dGVzdC1zZWNyZXQtZm9yLW1haWxwaWxvdC13ZWJob29rcw==";

// ---- a fake Resend API ----------------------------------------------------------------

#[derive(Default)]
struct FakeResend {
    sent: Vec<(String, String)>,
}

type Fake = Arc<Mutex<FakeResend>>;

async fn fake_send(State(s): State<Fake>, Json(body): Json<Value>) -> impl IntoResponse {
    let mut s = s.lock().unwrap();
    let id = format!("re_{:04}", s.sent.len());
    let to = body["to"][0].as_str().unwrap_or("").to_string();
    s.sent.push((id.clone(), to));
    Json(json!({"id": id}))
}

async fn fake_get(State(s): State<Fake>, Path(id): Path<String>) -> impl IntoResponse {
    let s = s.lock().unwrap();
    match s.sent.iter().find(|(i, _)| *i == id) {
        Some((_, to)) => {
            let last = if to.starts_with("gone") {
                "bounced"
            } else {
                "delivered"
            };
            (
                StatusCode::OK,
                Json(json!({"object": "email", "id": id, "to": [to], "last_event": last})),
            )
                .into_response()
        }
        None => (StatusCode::NOT_FOUND, Json(json!({"name": "not_found"}))).into_response(),
    }
}

async fn start_fake_resend() -> (String, Fake) {
    let state: Fake = Arc::default();
    let app = Router::new()
        .route("/emails", axum::routing::post(fake_send))
        .route("/emails/{id}", axum::routing::get(fake_get))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), state)
}

// ---- SNS certificates from the test fixtures ------------------------------------------

#[derive(Default)]
struct FixtureCerts {
    visited: Mutex<Vec<String>>,
}

#[async_trait]
impl CertFetcher for FixtureCerts {
    async fn fetch(&self, url: &str) -> Result<Vec<u8>, String> {
        self.visited.lock().unwrap().push(url.to_string());
        Ok(include_bytes!("../../shared/src/webhooks/testdata/test-signer.pem").to_vec())
    }
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/../shared/src/webhooks/testdata/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

// ---- the world ------------------------------------------------------------------------

struct World {
    app: TestApp,
    clock: Arc<ManualClock>,
    fake: Fake,
    certs: Arc<FixtureCerts>,
    conn: String,
    sender: String,
    list: String,
}

async fn world(start: DateTime<Utc>) -> World {
    let (fake_url, fake) = start_fake_resend().await;
    let clock = Arc::new(ManualClock::new(start));
    let certs = Arc::new(FixtureCerts::default());
    let (c2, certs2) = (clock.clone(), certs.clone());
    let app = spawn_app_with(move |s: &mut Settings| {
        s.delivery = DeliverySettings {
            workers: 0,
            persist_queues: false,
            manual_clock: Some(c2),
            sns_certs: Some(certs2),
            ..DeliverySettings::default()
        };
    })
    .await;
    let conn = app
        .post(
            "/v1/providers",
            json!({"name": "Resend", "settings": {"kind": "resend", "api_key": "re_test_key",
                   "webhook_secret": SECRET, "base_url": fake_url}}),
        )
        .await;
    assert_eq!(conn.status, StatusCode::CREATED, "{}", conn.body);
    let conn = conn.body["id"].as_str().unwrap().to_string();
    let sender = app
        .post(
            "/v1/senders",
            json!({"from_email": "news@acme.example", "connection_id": conn}),
        )
        .await;
    assert_eq!(sender.status, StatusCode::CREATED, "{}", sender.body);
    let sender = sender.body["id"].as_str().unwrap().to_string();
    let list = app.post("/v1/lists", json!({"name": "Readers"})).await;
    let list = list.body["id"].as_str().unwrap().to_string();
    World {
        app,
        clock,
        fake,
        certs,
        conn,
        sender,
        list,
    }
}

impl World {
    async fn members(&self, emails: &[&str]) {
        let mut ids = vec![];
        for e in emails {
            ids.push(self.app.contact(e).await);
        }
        let m = self
            .app
            .post(
                &format!("/v1/lists/{}/members", self.list),
                json!({"contact_ids": ids}),
            )
            .await;
        assert_eq!(m.status, StatusCode::OK, "{}", m.body);
    }

    /// Creates and launches a campaign to the list; waits for planning; optionally sends.
    async fn campaign(&self, send: bool) -> String {
        let id = self
            .app
            .launch_campaign(
                json!({"name": "Weekly", "sender_id": self.sender, "list_ids": [self.list],
                       "subject": "This week", "text": "News", "html": "<p>News</p>"}),
            )
            .await;
        if send {
            self.app
                .engine()
                .drain(Some(self.clock.now() + Duration::minutes(5)))
                .await
                .unwrap();
        }
        id
    }

    async fn messages(&self, campaign: &str) -> Vec<Value> {
        let m = self
            .app
            .get(&format!("/v1/campaigns/{campaign}/messages?limit=100"))
            .await;
        assert_eq!(m.status, StatusCode::OK, "{}", m.body);
        m.body["data"].as_array().unwrap().clone()
    }

    async fn message_to(&self, campaign: &str, to: &str) -> Value {
        let all = self.messages(campaign).await;
        let id = all
            .iter()
            .find(|m| m["to"] == to)
            .unwrap_or_else(|| panic!("no message to {to}: {all:?}"))["id"]
            .as_str()
            .unwrap()
            .to_string();
        self.app.get(&format!("/v1/messages/{id}")).await.body
    }

    fn resend_path(&self) -> String {
        format!("/webhooks/resend/{}/{}", self.app.workspace_id, self.conn)
    }

    async fn post_raw(
        &self,
        path: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .app
            .client
            .post(format!("{}{path}", self.app.url))
            .header("content-type", "application/json")
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        let body = res.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// Posts a Resend webhook signed at `at` (with `secret`).
    async fn resend(
        &self,
        svix_id: &str,
        body: &Value,
        at: i64,
        secret: &str,
    ) -> (StatusCode, Value) {
        let raw = serde_json::to_vec(body).unwrap();
        let sig = SvixSecret::parse(secret).unwrap().sign(svix_id, at, &raw);
        self.post_raw(
            &self.resend_path(),
            &[
                ("svix-id", svix_id.to_string()),
                ("svix-timestamp", at.to_string()),
                ("svix-signature", format!("v1,bm90LWl0 {sig}")),
            ],
            raw,
        )
        .await
    }
}

fn resend_event(kind: &str, email_id: &str, to: &str, extra: Value) -> Value {
    let mut data = json!({"email_id": email_id, "to": [to], "from": "news@acme.example",
                          "subject": "This week", "created_at": "2026-11-25T16:00:00Z"});
    if let (Some(d), Some(x)) = (data.as_object_mut(), extra.as_object()) {
        d.extend(x.clone());
    }
    json!({"type": kind, "created_at": "2026-11-25T16:00:01Z", "data": data})
}

async fn suppression(app: &TestApp, email: &str) -> (StatusCode, Value) {
    let s = app.get(&format!("/v1/suppressions/{email}")).await;
    (s.status, s.body)
}

#[tokio::test]
async fn a_hard_bounce_stops_the_next_campaigns_send_and_bad_webhooks_record_nothing() {
    let w = world(Utc::now()).await;
    w.members(&["ok@example.com", "gone@example.com"]).await;
    let first = w.campaign(true).await;
    let gone = w.message_to(&first, "gone@example.com").await;
    assert_eq!(gone["state"], "sent", "{gone}");
    assert_eq!(gone["provider"], "resend");
    let gone_pid = gone["provider_message_id"].as_str().unwrap().to_string();
    let ok = w.message_to(&first, "ok@example.com").await;
    let ok_pid = ok["provider_message_id"].as_str().unwrap().to_string();
    let now = w.clock.now().timestamp();

    // Forged, stale and unsigned webhooks: 401, nothing recorded.
    let complaint = resend_event("email.complained", &ok_pid, "ok@example.com", json!({}));
    let (s, body) = w
        .resend(
            "msg_forged",
            &complaint,
            now,
            "whsec_b3RoZXIta2V5LW90aGVyLWtleQ==",
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["status"], 401);
    let (s, _) = w.resend("msg_stale", &complaint, now - 600, SECRET).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = w
        .post_raw(
            &w.resend_path(),
            &[],
            serde_json::to_vec(&complaint).unwrap(),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // A body changed after signing.
    let raw = serde_json::to_vec(&complaint).unwrap();
    let sig = SvixSecret::parse(SECRET).unwrap().sign("msg_t", now, &raw);
    let mut tampered = raw.clone();
    tampered.extend_from_slice(b" ");
    let (s, _) = w
        .post_raw(
            &w.resend_path(),
            &[
                ("svix-id", "msg_t".into()),
                ("svix-timestamp", now.to_string()),
                ("svix-signature", sig),
            ],
            tampered,
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(
        suppression(&w.app, "ok@example.com").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        w.message_to(&first, "ok@example.com").await["state"],
        "sent"
    );
    // Another workspace's path cannot reach this connection.
    let (other_ws, _) = w.app.create_workspace("Other").await;
    let (s, _) = w
        .post_raw(
            &format!("/webhooks/resend/{other_ws}/{}", w.conn),
            &[],
            b"{}".to_vec(),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // A delivery, then the hard bounce (no tags: the provider-id pointer finds it).
    let delivered = resend_event("email.delivered", &gone_pid, "gone@example.com", json!({}));
    let (s, ack) = w.resend("msg_d1", &delivered, now, SECRET).await;
    assert_eq!(s, StatusCode::OK, "{ack}");
    assert_eq!(ack["applied"], 1, "{ack}");
    let bounce = resend_event(
        "email.bounced",
        &gone_pid,
        "gone@example.com",
        json!({"bounce": {"type": "Permanent", "subType": "General", "message": "550 5.1.1 user unknown"}}),
    );
    let (s, ack) = w.resend("msg_b1", &bounce, now, SECRET).await;
    assert_eq!(s, StatusCode::OK, "{ack}");
    assert_eq!(ack["applied"], 1, "{ack}");
    let m = w.message_to(&first, "gone@example.com").await;
    assert_eq!(m["state"], "bounced", "{m}");
    assert_eq!(m["reason"], "hard_bounce:general");
    let states: Vec<&str> = m["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["state"].as_str().unwrap())
        .collect();
    assert!(
        states.ends_with(&["sent", "delivered", "bounced"]),
        "{states:?}"
    );
    let (s, sup) = suppression(&w.app, "gone@example.com").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(sup["reason"], "hard_bounce");

    // The same webhook again (a redelivery) changes nothing.
    let (s, ack) = w.resend("msg_b1", &bounce, now, SECRET).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(ack["duplicates"], 1);
    assert_eq!(ack["applied"], 0);
    let again = w.message_to(&first, "gone@example.com").await;
    assert_eq!(again["timeline"], m["timeline"]);

    // The next campaign skips the bounced address and sends to the other.
    let sent_before = w.fake.lock().unwrap().sent.len();
    let second = w.campaign(true).await;
    let m = w.message_to(&second, "gone@example.com").await;
    assert_eq!(m["state"], "skipped", "{m}");
    assert_eq!(m["reason"], "bounced");
    assert_eq!(
        w.message_to(&second, "ok@example.com").await["state"],
        "sent"
    );
    let sent: Vec<String> = w.fake.lock().unwrap().sent[sent_before..]
        .iter()
        .map(|(_, to)| to.clone())
        .collect();
    assert_eq!(sent, vec!["ok@example.com".to_string()]);

    // A reply to the first campaign's message (Resend inbound) is recorded once.
    let reply = json!({"type": "email.received", "created_at": "2026-11-25T17:00:00Z",
        "data": {"email_id": "in_1", "from": "ok@example.com", "to": ["news@acme.example"],
                 "headers": [{"name": "In-Reply-To", "value": format!("<{}@acme.example>", ok["id"].as_str().unwrap())}]}});
    let (s, ack) = w.resend("msg_r1", &reply, now, SECRET).await;
    assert_eq!(s, StatusCode::OK, "{ack}");
    assert_eq!(ack["applied"], 1, "{ack}");
    let (_, ack) = w.resend("msg_r1", &reply, now, SECRET).await;
    assert_eq!(ack["duplicates"], 1);
    // The campaign's counters: one delivered, one hard bounce, one reply, counted once.
    let a = w.app.get(&format!("/v1/analytics/campaigns/{first}")).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["counts"]["delivered"], 1, "{}", a.body);
    assert_eq!(a.body["counts"]["bounced_hard"], 1, "{}", a.body);
    assert_eq!(a.body["counts"]["replied"], 1, "{}", a.body);
    assert_eq!(a.body["counts"]["complained"], 0, "{}", a.body);
    let m = w.message_to(&first, "ok@example.com").await;
    let replied = m["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["reason"] == "replied")
        .count();
    assert_eq!(replied, 1, "{m}");
}

#[tokio::test]
async fn sender_health_pauses_a_running_campaign_past_the_threshold_not_below_the_volume() {
    let w = world(Utc::now()).await;
    let emails: Vec<String> = (0..4).map(|i| format!("reader{i}@example.com")).collect();
    let refs: Vec<&str> = emails.iter().map(String::as_str).collect();
    w.members(&refs).await;
    let first = w.campaign(true).await;
    // A second campaign from the same sender, planned and not yet sent: `sending`.
    let second = w.campaign(false).await;
    // (`planning` until the planner records the run's last page, then `sending`.)
    let running = |c: &Value| c["state"] == "sending" || c["state"] == "planning";
    let c = w.app.get(&format!("/v1/campaigns/{second}")).await.body;
    assert!(running(&c), "{c}");

    // The sender's volume today: its 8 messages plus 300 earlier ones (below 500).
    let day = w.clock.now().date_naive();
    let volume = |n: i64| {
        let store = w.app.store.clone();
        let key = Key::new(
            format!("ws#{}#counters", w.app.workspace_id),
            format!("sender#{}#{day}", w.sender),
        );
        async move {
            store
                .update(&key, Update::new().add("count", n), None)
                .await
                .unwrap()
        }
    };
    volume(300).await;
    let now = w.clock.now().timestamp();
    for (i, email) in emails.iter().take(3).enumerate() {
        let m = w.message_to(&first, email).await;
        let ev = resend_event(
            "email.complained",
            m["provider_message_id"].as_str().unwrap(),
            email,
            json!({}),
        );
        let (s, ack) = w.resend(&format!("msg_c{i}"), &ev, now, SECRET).await;
        assert_eq!(s, StatusCode::OK, "{ack}");
        assert_eq!(ack["applied"], 1, "{ack}");
        assert_eq!(w.message_to(&first, email).await["state"], "complained");
        assert_eq!(suppression(&w.app, email).await.1["reason"], "complaint");
    }
    // 3 complaints in ~308 sends is 1%, but under the minimum volume: still sending.
    let c = w.app.get(&format!("/v1/campaigns/{second}")).await.body;
    assert!(running(&c), "{c}");
    assert_eq!(c["pause_reason"], Value::Null);

    // Past the minimum volume, the next complaint pauses it with the reason.
    volume(300).await;
    let m = w.message_to(&first, &emails[3]).await;
    let ev = resend_event(
        "email.complained",
        m["provider_message_id"].as_str().unwrap(),
        &emails[3],
        json!({}),
    );
    let (s, _) = w.resend("msg_c3", &ev, now, SECRET).await;
    assert_eq!(s, StatusCode::OK);
    let c = w.app.get(&format!("/v1/campaigns/{second}")).await.body;
    assert_eq!(c["state"], "paused", "{c}");
    assert_eq!(c["pause_reason"], "sender_health:complaint_rate");
}

#[tokio::test]
async fn ses_through_sns_verifies_confirms_and_records_once() {
    // The fixtures were signed at 16:00 UTC on 2026-11-25.
    let at: DateTime<Utc> = "2026-11-25T16:01:00Z".parse().unwrap();
    let w = world(at).await;
    let topic = "arn:aws:sns:us-east-1:123456789012:mailpilot-ses-events";
    let ses = w
        .app
        .post(
            "/v1/providers",
            json!({"name": "SES", "settings": {"kind": "ses", "region": "us-east-1",
                   "sns_topic_arns": ["arn:aws:sns:us-east-1:123456789012:someone-else"]}}),
        )
        .await;
    assert_eq!(ses.status, StatusCode::CREATED, "{}", ses.body);
    let ses_id = ses.body["id"].as_str().unwrap().to_string();
    let path = format!("/webhooks/ses/{}/{ses_id}", w.app.workspace_id);
    // The message the fixture bounces (`mp_msg` = msg_01, SES id 0100018c-ses-id).
    let mut m = messages::new_record(
        &w.app.workspace_id,
        "msg_01".into(),
        mailpilot_shared::ports::queue::Lane::Bulk,
        mailpilot_shared::model::message::MessageState::Sent,
        &w.sender,
        "gone@example.com",
        None,
        "Hello",
        at - Duration::minutes(5),
    );
    m.provider = Some("ses".into());
    m.provider_message_id = Some("0100018c-ses-id".into());
    messages::insert(w.app.store.as_ref(), &m, 400)
        .await
        .unwrap();

    // A topic not on the connection's allow-list: 401 even though the signature is valid.
    let (s, _) = w
        .post_raw(&path, &[], fixture("sns-notification-v1.json"))
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let p = w
        .app
        .patch(
            &format!("/v1/providers/{ses_id}"),
            json!({"settings": {"kind": "ses", "sns_topic_arns": [topic]}}),
        )
        .await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    assert_eq!(p.body["settings"]["sns_topic_arns"][0], topic);

    // A tampered message: 401, nothing recorded.
    let mut v: Value = serde_json::from_slice(&fixture("sns-notification-v1.json")).unwrap();
    v["Message"] = Value::from(
        v["Message"]
            .as_str()
            .unwrap()
            .replace("Permanent", "Transient"),
    );
    let (s, _) = w
        .post_raw(&path, &[], serde_json::to_vec(&v).unwrap())
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // A certificate from anywhere but SNS: 401.
    let mut v: Value = serde_json::from_slice(&fixture("sns-notification-v1.json")).unwrap();
    v["SigningCertURL"] = Value::from("https://sns.us-east-1.amazonaws.com.evil.example/cert.pem");
    let (s, _) = w
        .post_raw(&path, &[], serde_json::to_vec(&v).unwrap())
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = suppression(&w.app, "gone@example.com").await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Signed (v1), allowed: the bounce is applied once.
    let (s, ack) = w
        .post_raw(&path, &[], fixture("sns-notification-v1.json"))
        .await;
    assert_eq!(s, StatusCode::OK, "{ack}");
    assert_eq!(ack["applied"], 1, "{ack}");
    let (s, ack) = w
        .post_raw(&path, &[], fixture("sns-notification-v1.json"))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(ack["duplicates"], 1);
    let got = messages::load(w.app.store.as_ref(), &w.app.workspace_id, "msg_01")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        got.state,
        mailpilot_shared::model::message::MessageState::Bounced
    );
    assert_eq!(
        suppression(&w.app, "gone@example.com").await.1["reason"],
        "hard_bounce"
    );

    // A subscription confirmation visits the SubscribeURL (an SNS host).
    let (s, ack) = w
        .post_raw(&path, &[], fixture("sns-subscription-confirmation-v1.json"))
        .await;
    assert_eq!(s, StatusCode::OK, "{ack}");
    assert_eq!(ack["confirmed"], true);
    let visited = w.certs.visited.lock().unwrap().clone();
    assert!(
        visited
            .iter()
            .any(|u| u.contains("Action=ConfirmSubscription")),
        "{visited:?}"
    );

    // A stale message (an hour and more later) is refused.
    w.clock.advance_to(at + Duration::hours(2));
    let (s, _) = w
        .post_raw(&path, &[], fixture("sns-notification-v2.json"))
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[test]
fn the_secret_is_standard_base64() {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(SECRET.trim_start_matches("whsec_"))
        .unwrap();
    assert!(!raw.is_empty());
}
