//! Reconciliation by polling, end to end through the runner: a Resend connection without a
//! webhook secret has its sent mail polled (`GET /emails/{id}`) on the backoff schedule,
//! and each fact settles the message through the webhooks' own path (timeline,
//! suppression, analytics and campaign counters), once. Against a fake Resend API that
//! keeps each API key's emails apart, honours the idempotency key, and answers 429 with
//! `Retry-After` when told to. The clock is manual: no sleeps decide anything.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use chrono::{DateTime, Duration, Utc};
use mailpilot_runner::{DeliverySettings, Settings};
use mailpilot_shared::model::message::MessageState;
use mailpilot_shared::ports::clock::{Clock, ManualClock};
use mailpilot_shared::ports::queue::Lane;
use mailpilot_shared::ports::store::Store;
use mailpilot_shared::usecases::reconcile::{self, POLL_AFTER, PollEntry, ReconcileReport};
use mailpilot_shared::usecases::{messages, suppressions};
use mailpilot_shared::webhooks::svix::SvixSecret;
use mailpilot_tests::app::{TestApp, spawn_app_with};
use serde_json::{Value, json};

const SECRET: &str = "whsec_dGVzdC1zZWNyZXQtZm9yLW1haWxwaWxvdC13ZWJob29rcw==";

// ---- a fake Resend API ----------------------------------------------------------------

#[derive(Default)]
struct FakeResend {
    /// Accepted emails: id → (API key, recipient).
    emails: HashMap<String, (String, String)>,
    /// Idempotency key → email id (a repeated key sends nothing).
    keys: HashMap<String, String>,
    /// Deliveries per recipient.
    delivered: HashMap<String, u32>,
    /// `last_event` per email id (default `sent`).
    last_event: HashMap<String, String>,
    /// The next status requests to answer 429.
    throttle_gets: u32,
    /// Every status request: the email id.
    gets: Vec<String>,
}

type Fake = Arc<Mutex<FakeResend>>;

fn bearer(headers: &HeaderMap) -> String {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim_start_matches("Bearer ")
        .to_string()
}

async fn fake_send(State(s): State<Fake>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let Some(key) = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"name": "missing_idempotency_key"})),
        )
            .into_response();
    };
    let mut s = s.lock().unwrap();
    if let Some(id) = s.keys.get(&key) {
        return Json(json!({"id": id})).into_response();
    }
    let id = format!("re_{:04}", s.emails.len());
    let to = body["to"][0].as_str().unwrap_or("").to_string();
    s.keys.insert(key, id.clone());
    s.emails.insert(id.clone(), (bearer(&headers), to.clone()));
    *s.delivered.entry(to).or_default() += 1;
    Json(json!({"id": id})).into_response()
}

async fn fake_get(State(s): State<Fake>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let mut s = s.lock().unwrap();
    s.gets.push(id.clone());
    if s.throttle_gets > 0 {
        s.throttle_gets -= 1;
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "120")],
            Json(json!({"statusCode": 429, "name": "rate_limit_exceeded", "message": "Too many requests"})),
        )
            .into_response();
    }
    // Another account's email is not found.
    match s.emails.get(&id) {
        Some((key, to)) if *key == bearer(&headers) => {
            let last = s.last_event.get(&id).cloned().unwrap_or("sent".into());
            Json(json!({"object": "email", "id": id, "to": [to], "last_event": last}))
                .into_response()
        }
        _ => (
            StatusCode::NOT_FOUND,
            Json(json!({"statusCode": 404, "name": "not_found", "message": "Email not found"})),
        )
            .into_response(),
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

// ---- the world ------------------------------------------------------------------------

struct World {
    app: TestApp,
    clock: Arc<ManualClock>,
    fake: Fake,
    conn: String,
    sender: String,
}

/// The runner with a Resend connection that has no webhook secret: its mail is polled.
async fn world() -> World {
    let (fake_url, fake) = start_fake_resend().await;
    let clock = Arc::new(ManualClock::new(
        "2026-12-01T10:00:00Z".parse::<DateTime<Utc>>().unwrap(),
    ));
    let c2 = clock.clone();
    let app = spawn_app_with(move |s: &mut Settings| {
        s.delivery = DeliverySettings {
            workers: 0,
            persist_queues: false,
            manual_clock: Some(c2),
            ..DeliverySettings::default()
        };
    })
    .await;
    let conn = app
        .post(
            "/v1/providers",
            json!({"name": "Resend behind NAT", "rate_per_second": 100, "settings": {"kind": "resend",
                   "api_key": "re_key_a", "base_url": fake_url}}),
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
    World {
        app,
        clock,
        fake,
        conn,
        sender,
    }
}

impl World {
    /// A campaign to `emails`, planned and sent: its id.
    async fn campaign(&self, emails: &[&str]) -> String {
        let list = self.app.post("/v1/lists", json!({"name": "Readers"})).await;
        let list = list.body["id"].as_str().unwrap().to_string();
        let mut ids = vec![];
        for e in emails {
            let c = self.app.post("/v1/contacts", json!({ "email": e })).await;
            let id = match c.status {
                StatusCode::CREATED => c.body["id"].as_str().unwrap().to_string(),
                _ => {
                    let found = self.app.get(&format!("/v1/contacts/by-email/{e}")).await;
                    assert_eq!(found.status, StatusCode::OK, "{}", found.body);
                    found.body["id"].as_str().unwrap().to_string()
                }
            };
            ids.push(id);
        }
        let m = self
            .app
            .post(
                &format!("/v1/lists/{list}/members"),
                json!({"contact_ids": ids}),
            )
            .await;
        assert_eq!(m.status, StatusCode::OK, "{}", m.body);
        let id = self
            .app
            .launch_campaign(
                json!({"name": "Weekly", "sender_id": self.sender, "list_ids": [list],
                       "subject": "This week", "text": "News", "html": "<p>News</p>"}),
            )
            .await;
        // Up to the next minute: the dispatcher hands the due messages over, no further.
        self.app
            .engine()
            .drain(Some(self.clock.now() + Duration::seconds(60)))
            .await
            .unwrap();
        id
    }

    /// A transactional message to `to`, sent: its id.
    async fn send(&self, to: &str) -> String {
        let a = self
            .app
            .post(
                "/v1/send",
                json!({"sender_id": self.sender, "to": to, "subject": "Your code", "text": "1234"}),
            )
            .await;
        assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.body);
        let id = a.body["id"].as_str().unwrap().to_string();
        // Sent at once (the priority lane), the clock unmoved.
        self.app.engine().drain(None).await.unwrap();
        id
    }

    async fn message(&self, id: &str) -> Value {
        let m = self.app.get(&format!("/v1/messages/{id}")).await;
        assert_eq!(m.status, StatusCode::OK, "{}", m.body);
        m.body
    }

    async fn campaign_message(&self, campaign: &str, to: &str) -> Value {
        let all = self
            .app
            .get(&format!("/v1/campaigns/{campaign}/messages?limit=100"))
            .await;
        let id = all.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["to"] == to)
            .unwrap_or_else(|| panic!("no message to {to}: {}", all.body))["id"]
            .as_str()
            .unwrap()
            .to_string();
        self.message(&id).await
    }

    fn set_last_event(&self, provider_id: &str, event: &str) {
        self.fake
            .lock()
            .unwrap()
            .last_event
            .insert(provider_id.into(), event.into());
    }

    fn gets(&self) -> usize {
        self.fake.lock().unwrap().gets.len()
    }

    /// Moves the clock to `at` and runs the poller once.
    async fn poll_at(&self, at: DateTime<Utc>) -> ReconcileReport {
        self.clock.advance_to(at);
        self.app.engine().reconcile().await.unwrap()
    }

    /// Posts a Resend webhook signed with `SECRET`.
    async fn webhook(&self, svix_id: &str, body: &Value) -> Value {
        let raw = serde_json::to_vec(body).unwrap();
        let at = self.clock.now().timestamp();
        let sig = SvixSecret::parse(SECRET).unwrap().sign(svix_id, at, &raw);
        let res = self
            .app
            .client
            .post(format!(
                "{}/webhooks/resend/{}/{}",
                self.app.url, self.app.workspace_id, self.conn
            ))
            .header("content-type", "application/json")
            .header("svix-id", svix_id)
            .header("svix-timestamp", at.to_string())
            .header("svix-signature", sig)
            .body(raw)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        res.json().await.unwrap()
    }
}

fn sent_at(m: &Value) -> DateTime<Utc> {
    m["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["state"] == "sent")
        .unwrap_or_else(|| panic!("not sent: {m}"))["at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

fn pid(m: &Value) -> String {
    m["provider_message_id"].as_str().unwrap().to_string()
}

fn reasons(m: &Value) -> Vec<String> {
    m["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| format!("{}:{}", t["state"].as_str().unwrap(), t["reason"]))
        .collect()
}

// ---- tests ----------------------------------------------------------------------------

#[tokio::test]
async fn a_connection_without_webhooks_settles_its_mail_by_polling_and_a_hard_bounce_suppresses() {
    let w = world().await;
    let first = w.campaign(&["ok@example.com", "gone@example.com"]).await;
    let ok = w.campaign_message(&first, "ok@example.com").await;
    let gone = w.campaign_message(&first, "gone@example.com").await;
    assert_eq!(ok["state"], "sent", "{ok}");
    assert_eq!(gone["provider"], "resend");
    w.set_last_event(&pid(&ok), "delivered");
    w.set_last_event(&pid(&gone), "bounced");

    // Nothing is polled before its first poll is due (a minute after the send).
    let r = w.poll_at(sent_at(&ok) + Duration::seconds(30)).await;
    assert_eq!(r.polled, 0, "{r:?}");
    // The planner hands a message due at once to the send queue, and the connection's
    // rate may put the next one a few milliseconds later (the due index: the next
    // minute), so the two may be sent a minute apart.
    let last_sent = sent_at(&ok).max(sent_at(&gone));
    let r = w.poll_at(last_sent + Duration::minutes(2)).await;
    assert_eq!((r.polled, r.applied), (2, 2), "{r:?}");

    let ok = w.message(ok["id"].as_str().unwrap()).await;
    assert_eq!(ok["state"], "delivered", "{ok}");
    let gone = w.message(gone["id"].as_str().unwrap()).await;
    assert_eq!(gone["state"], "bounced", "{gone}");
    assert_eq!(gone["reason"], "hard_bounce");
    let s = w.app.get("/v1/suppressions/gone@example.com").await;
    assert_eq!(s.status, StatusCode::OK, "{}", s.body);
    assert_eq!(s.body["reason"], "hard_bounce");
    // The counters moved as a webhook moves them.
    let a = w.app.get(&format!("/v1/analytics/campaigns/{first}")).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["counts"]["delivered"], 1, "{}", a.body);
    assert_eq!(a.body["counts"]["bounced_hard"], 1, "{}", a.body);

    // A final fact ends the polling: later runs ask nothing.
    let before = w.gets();
    let r = w.poll_at(sent_at(&ok) + Duration::hours(2)).await;
    assert_eq!(r.polled, 0, "{r:?}");
    assert_eq!(w.gets(), before);

    // The next campaign skips the bounced address.
    let second = w.campaign(&["ok@example.com", "gone@example.com"]).await;
    let m = w.campaign_message(&second, "gone@example.com").await;
    assert_eq!(m["state"], "skipped", "{m}");
    assert_eq!(m["reason"], "bounced");
    assert_eq!(w.fake.lock().unwrap().delivered["gone@example.com"], 1);
}

#[tokio::test]
async fn a_fact_a_webhook_or_an_earlier_poll_applied_changes_nothing_the_second_time() {
    let w = world().await;
    let a = w.message(&w.send("a@example.com").await).await;
    let b = w.message(&w.send("b@example.com").await).await;
    let sent = sent_at(&b);

    // The operator adds the webhook later: a's delivery arrives by webhook first.
    let p = w
        .app
        .patch(
            &format!("/v1/providers/{}", w.conn),
            json!({"settings": {"kind": "resend", "webhook_secret": SECRET}}),
        )
        .await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    // (Resend echoes our tags: mail sent while polled has no provider-id pointer.)
    let ws = w.app.workspace_id.clone();
    let delivered = |m: &Value| {
        json!({"type": "email.delivered", "created_at": "2026-12-01T10:00:30Z",
               "data": {"email_id": pid(m), "to": [m["to"]], "created_at": "2026-12-01T10:00:00Z",
                        "tags": {"mp_ws": ws, "mp_msg": m["id"]}}})
    };
    let ack = w.webhook("msg_wa", &delivered(&a)).await;
    assert_eq!(ack["applied"], 1, "{ack}");
    let a_after_webhook = w.message(a["id"].as_str().unwrap()).await;
    assert_eq!(a_after_webhook["state"], "delivered");

    // The poll finds a settled: it asks nothing and changes nothing. b is polled.
    w.set_last_event(&pid(&a), "delivered");
    w.set_last_event(&pid(&b), "delivered");
    let r = w.poll_at(sent + Duration::minutes(2)).await;
    assert_eq!((r.polled, r.applied, r.dropped), (1, 1, 1), "{r:?}");
    assert_eq!(w.fake.lock().unwrap().gets, vec![pid(&b)]);
    assert_eq!(
        w.message(a["id"].as_str().unwrap()).await["timeline"],
        a_after_webhook["timeline"]
    );
    let b_after_poll = w.message(b["id"].as_str().unwrap()).await;
    assert_eq!(b_after_poll["state"], "delivered");

    // Then b's webhook arrives: acknowledged, nothing changes, nothing is counted twice.
    let ack = w.webhook("msg_wb", &delivered(&b)).await;
    assert_eq!(ack["applied"], 1, "recorded as seen: {ack}");
    assert_eq!(
        w.message(b["id"].as_str().unwrap()).await["timeline"],
        b_after_poll["timeline"]
    );
    let o = w
        .app
        .get("/v1/analytics/overview?from=2026-12-01&to=2026-12-01")
        .await;
    assert_eq!(o.status, StatusCode::OK, "{}", o.body);
    assert_eq!(o.body["counts"]["delivered"], 2, "{}", o.body);

    // A second poll entry for b (a repeated run) finds it settled: nothing asked.
    let store = w.app.store.as_ref();
    let entry = PollEntry::first(
        &w.app.workspace_id,
        b["id"].as_str().unwrap(),
        &w.conn,
        &pid(&b),
        w.clock.now(),
    );
    let cp = reconcile::checkpoint(store, w.clock.now()).await.unwrap();
    store
        .transact(reconcile::file_actions(&entry, &cp))
        .await
        .unwrap();
    let before = w.gets();
    let r = w.poll_at(w.clock.now() + Duration::minutes(2)).await;
    assert_eq!((r.polled, r.dropped), (0, 1), "{r:?}");
    assert_eq!(w.gets(), before);
}

#[tokio::test]
async fn polls_back_off_until_the_last_and_a_429_is_asked_again_later() {
    let w = world().await;
    let m = w.message(&w.send("slow@example.com").await).await;
    let sent = sent_at(&m);
    w.set_last_event(&pid(&m), "delivery_delayed");
    w.fake.lock().unwrap().throttle_gets = 1;

    // The first poll (due a minute after the send, read once that minute passed) is
    // throttled (Retry-After 120 s): put off, not counted as a poll.
    let r = w.poll_at(sent + Duration::seconds(65)).await;
    assert_eq!(r.polled, 0, "its minute has not passed: {r:?}");
    let r = w.poll_at(sent + Duration::seconds(125)).await;
    assert_eq!((r.polled, r.throttled, r.applied), (1, 1, 0), "{r:?}");
    let r = w.poll_at(sent + Duration::seconds(270)).await;
    assert_eq!(r.polled, 0, "not before the Retry-After: {r:?}");
    let r = w.poll_at(sent + Duration::seconds(330)).await;
    assert_eq!((r.polled, r.applied, r.refiled), (1, 1, 1), "{r:?}");

    // Every later poll comes on the schedule; the same delay is noted once.
    let mut polls = vec![];
    for (n, after) in POLL_AFTER.iter().enumerate().skip(1) {
        let due = sent + Duration::seconds(*after);
        let early = w.poll_at(due - Duration::minutes(2)).await;
        assert_eq!(early.polled, 0, "poll {n} not before it is due: {early:?}");
        let r = w.poll_at(due + Duration::minutes(1)).await;
        assert_eq!(r.polled, 1, "poll {n}: {r:?}");
        polls.push(r);
    }
    assert!(
        polls.iter().all(|r| r.duplicates == 1 && r.applied == 0),
        "{polls:?}"
    );
    assert_eq!(polls.last().unwrap().gave_up, 1);
    assert_eq!(w.gets(), 2 + POLL_AFTER.len() - 1);

    // After the last poll nothing is asked; the message stays sent, its delay noted once.
    let r = w.poll_at(sent + Duration::days(6)).await;
    assert_eq!(r.polled, 0, "{r:?}");
    let m = w.message(m["id"].as_str().unwrap()).await;
    assert_eq!(m["state"], "sent", "{m}");
    let delayed = reasons(&m)
        .iter()
        .filter(|r| r.contains("delivery_delayed"))
        .count();
    assert_eq!(delayed, 1, "{:?}", reasons(&m));
}

#[tokio::test]
async fn a_poll_entry_never_reaches_another_workspaces_message() {
    let w = world().await;
    let store = w.app.store.as_ref();
    // Workspace B's message, sent through its own Resend account (fake id `re_b`).
    let (ws_b, _) = w.app.create_workspace("Other").await;
    let mut theirs = messages::new_record(
        &ws_b,
        "msg_theirs".into(),
        Lane::Priority,
        MessageState::Sent,
        "snd_theirs",
        "victim@example.com",
        None,
        "Hello",
        w.clock.now(),
    );
    theirs.provider = Some("resend".into());
    theirs.provider_message_id = Some("re_b".into());
    messages::insert(store, &theirs, 400).await.unwrap();
    // Our own message, so the status endpoint would answer `bounced` for anything.
    let ours = w.message(&w.send("mine@example.com").await).await;
    w.set_last_event(&pid(&ours), "bounced");
    {
        let mut f = w.fake.lock().unwrap();
        let key = f.emails[&pid(&ours)].clone();
        f.emails.insert("re_b".into(), key);
        f.last_event.insert("re_b".into(), "bounced".into());
    }

    // Forged entries: B's message filed under our workspace, and under B with our
    // connection (which B does not have).
    let now = w.clock.now();
    let cp = reconcile::checkpoint(store, now).await.unwrap();
    for entry in [
        PollEntry::first(&w.app.workspace_id, "msg_theirs", &w.conn, "re_b", now),
        PollEntry::first(&ws_b, "msg_theirs", &w.conn, "re_b", now),
    ] {
        store
            .transact(reconcile::file_actions(&entry, &cp))
            .await
            .unwrap();
    }
    let r = w.poll_at(now + Duration::minutes(3)).await;
    assert_eq!(r.dropped, 2, "{r:?}");
    assert_eq!(r.applied, 1, "only our own message: {r:?}");
    assert!(
        !w.fake.lock().unwrap().gets.contains(&"re_b".to_string()),
        "nothing was asked about B's message"
    );
    let theirs = messages::load(store, &ws_b, "msg_theirs")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(theirs.state, MessageState::Sent);
    assert!(
        suppressions::get(store, &ws_b, "victim@example.com")
            .await
            .is_err()
    );
    assert!(
        suppressions::get(store, &w.app.workspace_id, "victim@example.com")
            .await
            .is_err()
    );
    let ours = w.message(ours["id"].as_str().unwrap()).await;
    assert_eq!(ours["state"], "bounced", "{ours}");
}
