//! Tracking, unsubscribe and analytics end to end through the runner over HTTP: a
//! campaign is sent, then opens, clicks and unsubscribes arrive as a recipient's mail
//! client (or a machine) would make them, and the analytics API shows them. Also token
//! forgery and open-redirect attempts, and the recorder's idempotency.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{Duration, SecondsFormat, Utc};
use mailpilot_runner::{DeliverySettings, Settings};
use mailpilot_shared::keys;
use mailpilot_shared::model::links::{LinkKeys, LinkToken};
use mailpilot_shared::model::tracking::{ClickClass, OpenClass, TrackEvent, TrackKind};
use mailpilot_shared::ports::clock::{Clock, ManualClock};
use mailpilot_shared::ports::store::{
    BatchOp, Cond, Item, ItemExt, Key, Page, Query, Store, StoreError, StoreResult, TxAction,
    Update,
};
use mailpilot_shared::usecases::senders::LOCAL_SENDER_ID;
use mailpilot_shared::usecases::tracking::{Outcome, RecorderConfig, record_events};
use mailpilot_shared::usecases::{analytics, messages};
use mailpilot_tests::app::{TestApp, spawn_app_with};
use reqwest::StatusCode;
use reqwest::redirect::Policy;
use serde_json::{Value, json};

const KEYS: &str = "k1:tracking-test-secret-0123456789abcdefghij";
const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36";

fn raw_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

/// A runner whose clock sent the campaign an hour ago (so clicks now are not "within
/// seconds of delivery"), with a campaign of three recipients sent.
async fn sent_campaign() -> (TestApp, Arc<ManualClock>, String, Vec<String>) {
    let clock = Arc::new(ManualClock::new(Utc::now() - Duration::hours(1)));
    let c2 = clock.clone();
    let app = spawn_app_with(move |s: &mut Settings| {
        s.link_keys = Some(KEYS.into());
        s.delivery = DeliverySettings {
            workers: 0,
            persist_queues: false,
            manual_clock: Some(c2),
            ..DeliverySettings::default()
        };
    })
    .await;
    let mut ids = vec![];
    for i in 0..3 {
        ids.push(app.contact(&format!("reader{i}@example.com")).await);
    }
    let list = app.post("/v1/lists", json!({"name": "Readers"})).await;
    let list_id = list.body["id"].as_str().unwrap().to_string();
    app.post(
        &format!("/v1/lists/{list_id}/members"),
        json!({"contact_ids": ids}),
    )
    .await;
    let id = app
        .launch_campaign(
            json!({"name": "Weekly", "sender_id": LOCAL_SENDER_ID, "list_ids": [list_id],
                   "subject": "This week", "text": "News",
                   "html": "<p>News <a href=\"https://example.com/a\">A</a></p>"}),
        )
        .await;
    app.engine()
        .drain(Some(clock.now() + Duration::minutes(5)))
        .await
        .unwrap();
    let sent = app
        .get(&format!("/v1/campaigns/{id}/messages?state=sent"))
        .await;
    let mut msgs: Vec<String> = sent.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    msgs.sort();
    assert_eq!(msgs.len(), 3, "{}", sent.body);
    (app, clock, id, msgs)
}

fn keys() -> LinkKeys {
    LinkKeys::parse(KEYS).unwrap()
}

fn open_token(ws: &str, msg: &str) -> String {
    keys().sign_message(ws, msg, false).unwrap()
}

fn unsub_token(ws: &str, msg: &str) -> String {
    keys().sign_message(ws, msg, true).unwrap()
}

fn click_token(ws: &str, msg: &str, i: u32, url: &str) -> String {
    keys().sign_click(ws, msg, i, url).unwrap()
}

async fn hit(app: &TestApp, method: reqwest::Method, path: &str, ua: &str) -> reqwest::Response {
    raw_client()
        .request(method, format!("{}{path}", app.url))
        .header("user-agent", ua)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn opens_clicks_and_unsubscribes_show_in_the_analytics_api() {
    let (app, _clock, cid, msgs) = sent_campaign().await;
    let ws = app.workspace_id.clone();

    // A person opens message 0 (twice), Apple's proxy prefetches it, a HEAD is not counted.
    for _ in 0..2 {
        let r = hit(
            &app,
            reqwest::Method::GET,
            &format!("/t/o/{}", open_token(&ws, &msgs[0])),
            CHROME,
        )
        .await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["content-type"], "image/gif");
        assert!(
            r.headers()["cache-control"]
                .to_str()
                .unwrap()
                .contains("no-store")
        );
        assert_eq!(r.bytes().await.unwrap().len(), 43);
    }
    let r = hit(
        &app,
        reqwest::Method::GET,
        &format!("/t/o/{}", open_token(&ws, &msgs[1])),
        "Mozilla/5.0",
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = hit(
        &app,
        reqwest::Method::HEAD,
        &format!("/t/o/{}", open_token(&ws, &msgs[2])),
        CHROME,
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);

    // A person clicks message 0's link; a scanner agent clicks message 2's; a burst of
    // three links of message 1 makes the third a bot click.
    let url = "https://example.com/a";
    let r = hit(
        &app,
        reqwest::Method::GET,
        &format!("/t/c/{}", click_token(&ws, &msgs[0], 0, url)),
        CHROME,
    )
    .await;
    assert_eq!(r.status(), StatusCode::FOUND);
    assert_eq!(r.headers()["location"], url);
    let r = hit(
        &app,
        reqwest::Method::GET,
        &format!("/t/c/{}", click_token(&ws, &msgs[2], 0, url)),
        "python-requests/2.31",
    )
    .await;
    assert_eq!(r.status(), StatusCode::FOUND);
    let r = hit(
        &app,
        reqwest::Method::HEAD,
        &format!("/t/c/{}", click_token(&ws, &msgs[2], 0, url)),
        CHROME,
    )
    .await;
    assert_eq!(r.status(), StatusCode::FOUND);
    app.recorder().settle().await;
    for i in 0..3 {
        let u = format!("https://example.com/burst{i}");
        let r = hit(
            &app,
            reqwest::Method::GET,
            &format!("/t/c/{}", click_token(&ws, &msgs[1], i + 1, &u)),
            CHROME,
        )
        .await;
        assert_eq!(r.status(), StatusCode::FOUND);
        app.recorder().settle().await;
    }

    // Unsubscribe: the page (a GET changes nothing), then one-click twice.
    let page = hit(
        &app,
        reqwest::Method::GET,
        &format!("/u/{}", unsub_token(&ws, &msgs[2])),
        CHROME,
    )
    .await;
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("Demo") && html.contains("<form method=\"post\">"),
        "{html}"
    );
    for _ in 0..2 {
        let r = raw_client()
            .post(format!("{}/u/{}", app.url, unsub_token(&ws, &msgs[2])))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("List-Unsubscribe=One-Click")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    let m2 = app.get(&format!("/v1/messages/{}", msgs[2])).await;
    let to = m2.body["to"].as_str().unwrap().to_string();
    let s = app.get(&format!("/v1/suppressions/{to}")).await;
    assert_eq!(s.status, StatusCode::OK, "{}", s.body);
    assert_eq!(s.body["reason"], "unsubscribed");

    app.recorder().settle().await;
    assert_eq!(app.recorder().failed(), 0);

    let a = app.get(&format!("/v1/analytics/campaigns/{cid}")).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let c = &a.body["counts"];
    assert_eq!(c["sent"], 3, "{}", a.body);
    assert_eq!(c["unique_human_opens"], 1, "{}", a.body);
    assert_eq!(c["human_opens"], 2, "{}", a.body);
    assert_eq!(c["machine_opens"], 1, "{}", a.body);
    // Message 0's click, and the first two links of message 1's burst.
    assert_eq!(c["human_clicks"], 3, "{}", a.body);
    assert_eq!(c["unique_human_clicks"], 2, "{}", a.body);
    assert_eq!(c["bot_clicks"], 2, "{}", a.body);
    assert_eq!(c["unsubscribed"], 1, "{}", a.body);
    assert_eq!(a.body["runs"].as_array().unwrap().len(), 1);

    let today = Utc::now().date_naive();
    let o = app
        .get(&format!(
            "/v1/analytics/overview?from={}&to={today}",
            today - Duration::days(1)
        ))
        .await;
    assert_eq!(o.status, StatusCode::OK, "{}", o.body);
    assert_eq!(o.body["counts"]["unique_human_opens"], 1, "{}", o.body);
    assert_eq!(o.body["counts"]["machine_opens"], 1, "{}", o.body);
    assert_eq!(o.body["counts"]["unsubscribed"], 1, "{}", o.body);
    let rate = o.body["rates"]["open"].as_f64().unwrap();
    assert!(rate > 0.0 && rate <= 1.0, "{}", o.body);

    let d = app
        .get("/v1/analytics/daily?from=2026-01-01&to=2026-01-03")
        .await;
    assert_eq!(d.status, StatusCode::OK, "{}", d.body);
    assert_eq!(d.body["data"].as_array().unwrap().len(), 3);
    let bad = app
        .get("/v1/analytics/daily?from=2026-02-01&to=2026-01-01")
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.body);
    let bad = app.get("/v1/analytics/overview?from=yesterday").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);

    let links = app
        .get(&format!("/v1/analytics/campaigns/{cid}/links"))
        .await;
    assert_eq!(links.status, StatusCode::OK, "{}", links.body);
    let l0 = &links.body["data"][0];
    assert_eq!(l0["index"], 0);
    assert_eq!(l0["url"], url);
    assert_eq!(l0["unique_human_clicks"], 1);
    assert_eq!(l0["bot_clicks"], 1);

    // The contact who opened has a last engagement.
    let contact = app.get(&format!("/v1/messages/{}", msgs[0])).await;
    assert_eq!(contact.status, StatusCode::OK);

    // Resend to non-openers: message 1's recipient only (0 opened, 2 unsubscribed).
    let r = app
        .post(
            &format!("/v1/campaigns/{cid}/resend"),
            json!({"subject": "In case you missed it"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["state"], "draft");
    let list = r.body["list_ids"][0].as_str().unwrap();
    let members = app.get(&format!("/v1/lists/{list}/members")).await;
    assert_eq!(
        members.body["data"].as_array().unwrap().len(),
        1,
        "{}",
        members.body
    );
    let same = app
        .post(
            &format!("/v1/campaigns/{cid}/resend"),
            json!({"subject": "This week"}),
        )
        .await;
    assert_eq!(
        same.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        same.body
    );
    let other = app
        .post(
            "/v1/campaigns/cpg_00000000000000000000000000/resend",
            json!({"subject": "x"}),
        )
        .await;
    assert_eq!(other.status, StatusCode::NOT_FOUND, "{}", other.body);
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

#[tokio::test]
async fn forged_tokens_and_open_redirect_attempts_never_redirect() {
    let (app, _clock, _cid, msgs) = sent_campaign().await;
    let ws = app.workspace_id.clone();
    let good = click_token(&ws, &msgs[0], 0, "https://example.com/a");
    let parts: Vec<&str> = good.split('.').collect();
    let evil = json!({"w": ws, "m": msgs[0], "k": "c", "i": 0, "u": "https://evil.example/"});
    let other_keys = LinkKeys::parse("k1:another-secret-0123456789abcdefghijklmn").unwrap();
    let retired = LinkKeys::parse("old:retired-secret-0123456789abcdefghijklmn").unwrap();
    let mut forged = vec![
        // Tampered payload, original signature.
        format!("{}.{}.{}", parts[0], b64(&evil), parts[2]),
        // Signed with another secret under the same kid.
        other_keys
            .sign(&LinkToken::Click {
                workspace_id: ws.clone(),
                message_id: msgs[0].clone(),
                link_index: 0,
                url: "https://evil.example/".into(),
            })
            .unwrap(),
        // A retired key.
        retired
            .sign(&LinkToken::Click {
                workspace_id: ws.clone(),
                message_id: msgs[0].clone(),
                link_index: 0,
                url: "https://evil.example/".into(),
            })
            .unwrap(),
        // alg none, with and without a signature.
        format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "kid": "k1"})),
            b64(&evil)
        ),
        format!(
            "{}.{}.{}",
            b64(&json!({"alg": "none", "kid": "k1"})),
            b64(&evil),
            parts[2]
        ),
        // Not a token at all: URLs and encodings in the path.
        "https:%2F%2Fevil.example".into(),
        "%2F%2Fevil.example".into(),
        "..%2F..%2Fevil".into(),
        // An open token on the click route.
        open_token(&ws, &msgs[0]),
    ];
    forged.push(format!("{good}x"));
    for t in &forged {
        let r = hit(&app, reqwest::Method::GET, &format!("/t/c/{t}"), CHROME).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{t}");
        assert!(r.headers().get("location").is_none(), "{t}");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        // The pixel route still answers the pixel, and counts nothing.
        let o = hit(&app, reqwest::Method::GET, &format!("/t/o/{t}"), CHROME).await;
        assert_eq!(o.status(), StatusCode::OK, "{t}");
        assert_eq!(o.bytes().await.unwrap().len(), 43);
    }
    // Parameters and extra path never change the destination.
    for suffix in [
        "?url=https://evil.example/",
        "?u=//evil.example",
        "#https://evil.example",
    ] {
        let r = hit(
            &app,
            reqwest::Method::GET,
            &format!("/t/c/{good}{suffix}"),
            CHROME,
        )
        .await;
        assert_eq!(r.status(), StatusCode::FOUND);
        assert_eq!(r.headers()["location"], "https://example.com/a");
    }
    let r = hit(
        &app,
        reqwest::Method::GET,
        &format!("/t/c/{good}/https://evil.example"),
        CHROME,
    )
    .await;
    assert!(r.headers().get("location").is_none());
    // Forged unsubscribe tokens unsubscribe nobody.
    let r = raw_client()
        .post(format!("{}/u/{}", app.url, forged[0]))
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    app.recorder().settle().await;
    let today = Utc::now().date_naive();
    let o = app.get(&format!("/v1/analytics/overview?to={today}")).await;
    let c = &o.body["counts"];
    // Only the genuine open token (listed above as the wrong kind for /t/c) counted.
    assert_eq!(c["human_opens"], 1, "{}", o.body);
    assert_eq!(c["machine_opens"], 0, "{}", o.body);
    // Only the three good clicks with parameters counted.
    assert_eq!(c["human_clicks"], 3, "{}", o.body);
    assert_eq!(c["unsubscribed"], 0, "{}", o.body);
}

#[tokio::test]
async fn redelivered_events_change_nothing() {
    let (app, _clock, cid, msgs) = sent_campaign().await;
    let ws = app.workspace_id.clone();
    let event = |id: &str, kind: TrackKind| TrackEvent {
        id: id.into(),
        workspace_id: ws.clone(),
        message_id: msgs[0].clone(),
        at: Utc::now(),
        kind,
        ip: Some("198.51.100.7".parse().unwrap()),
        user_agent: Some(CHROME.into()),
    };
    let batch = vec![
        event("evt_a", TrackKind::Open),
        event(
            "evt_b",
            TrackKind::Click {
                link: 0,
                url: "https://example.com/a".into(),
            },
        ),
        event("evt_a", TrackKind::Open),
    ];
    let cfg = RecorderConfig::default();
    let first = record_events(app.store.as_ref(), &cfg, &batch)
        .await
        .unwrap();
    assert_eq!(first[2], Outcome::Duplicate);
    let again = record_events(app.store.as_ref(), &cfg, &batch)
        .await
        .unwrap();
    assert!(again.iter().all(|o| *o == Outcome::Duplicate), "{again:?}");
    let a = app.get(&format!("/v1/analytics/campaigns/{cid}")).await;
    let c = &a.body["counts"];
    assert_eq!(c["human_opens"], 1, "{}", a.body);
    assert_eq!(c["unique_human_opens"], 1, "{}", a.body);
    assert_eq!(c["human_clicks"], 1, "{}", a.body);
    assert_eq!(c["unique_human_clicks"], 1, "{}", a.body);
}

/// Passes every call to the store and notes the keys each write call writes.
struct NotingStore {
    inner: Arc<dyn Store>,
    writes: Mutex<Vec<Vec<Key>>>,
}

impl NotingStore {
    fn note(&self, keys: impl IntoIterator<Item = Key>) {
        self.writes.lock().unwrap().push(keys.into_iter().collect());
    }
    fn take(&self) -> Vec<Vec<Key>> {
        std::mem::take(&mut *self.writes.lock().unwrap())
    }
}

fn op_key(op: &BatchOp) -> Key {
    match op {
        BatchOp::Put(item) => Key::of(item).unwrap(),
        BatchOp::Delete(key) => key.clone(),
    }
}

#[async_trait]
impl Store for NotingStore {
    async fn get(&self, key: &Key) -> StoreResult<Option<Item>> {
        self.inner.get(key).await
    }
    async fn put(&self, item: Item, cond: Option<Cond>) -> StoreResult<()> {
        self.note(Key::of(&item));
        self.inner.put(item, cond).await
    }
    async fn update(&self, key: &Key, update: Update, cond: Option<Cond>) -> StoreResult<Item> {
        self.note([key.clone()]);
        self.inner.update(key, update, cond).await
    }
    async fn delete(&self, key: &Key, cond: Option<Cond>) -> StoreResult<Option<Item>> {
        self.note([key.clone()]);
        self.inner.delete(key, cond).await
    }
    async fn query(&self, query: Query) -> StoreResult<Page> {
        self.inner.query(query).await
    }
    async fn batch_get(&self, keys: &[Key]) -> StoreResult<Vec<Item>> {
        self.inner.batch_get(keys).await
    }
    async fn batch_write(&self, ops: Vec<BatchOp>) -> StoreResult<()> {
        self.note(ops.iter().map(op_key));
        self.inner.batch_write(ops).await
    }
    async fn batch_write_all(&self, ops: Vec<BatchOp>) -> StoreResult<()> {
        self.note(ops.iter().map(op_key));
        self.inner.batch_write_all(ops).await
    }
    async fn transact(&self, actions: Vec<TxAction>) -> StoreResult<()> {
        self.note(actions.iter().filter_map(TxAction::key));
        self.inner.transact(actions).await
    }
    async fn transact_seq(&self, groups: Vec<Vec<TxAction>>) -> (usize, Option<StoreError>) {
        self.note(groups.iter().flatten().filter_map(TxAction::key));
        self.inner.transact_seq(groups).await
    }
    fn writes(&self) -> u64 {
        self.inner.writes()
    }
}

/// One batch with several opens and clicks of the same message (and so the same contact),
/// a machine open, a duplicate event id and an event older than the others: the counters
/// are exact, the first marks name the first events, the contact's `last_engaged_at` is
/// the latest human event's time, and the batch costs one batched write (the clicks'
/// `clk#` items) and one sequence of transactions, each key written once. Again: nothing.
#[tokio::test]
async fn a_batch_counts_exactly_and_writes_each_key_once() {
    let (app, _clock, cid, msgs) = sent_campaign().await;
    let ws = app.workspace_id.clone();
    let store = NotingStore {
        inner: app.store.clone(),
        writes: Mutex::new(Vec::new()),
    };
    let t0 = Utc::now();
    let event = |id: &str, msg: usize, secs: i64, kind: TrackKind, ua: &str| TrackEvent {
        id: id.into(),
        workspace_id: ws.clone(),
        message_id: msgs[msg].clone(),
        at: t0 + Duration::seconds(secs),
        kind,
        ip: Some("198.51.100.7".parse().unwrap()),
        user_agent: Some(ua.into()),
    };
    let click = |link: u32| TrackKind::Click {
        link,
        url: "https://example.com/a".into(),
    };
    let batch = vec![
        event("evt_o1", 0, 0, TrackKind::Open, CHROME),
        event("evt_o2", 0, 1, TrackKind::Open, CHROME),
        event("evt_c1", 0, 2, click(0), CHROME),
        event("evt_o1", 0, 0, TrackKind::Open, CHROME),
        event("evt_c2", 0, 3, click(0), CHROME),
        event("evt_m1", 0, 4, TrackKind::Open, "Mozilla/5.0"),
        event("evt_o3", 1, 5, TrackKind::Open, CHROME),
        event("evt_o4", 0, -60, TrackKind::Open, CHROME),
    ];
    let cfg = RecorderConfig::default();
    let out = record_events(&store, &cfg, &batch).await.unwrap();
    assert_eq!(out[3], Outcome::Duplicate, "{out:?}");
    assert_eq!(out[5], Outcome::Open(OpenClass::MachineOpen), "{out:?}");
    assert_eq!(out[2], Outcome::Click(ClickClass::HumanClick), "{out:?}");
    let calls = store.take();
    assert_eq!(
        calls.len(),
        2,
        "one clk# write, one transaction sequence: {calls:?}"
    );
    assert_eq!(calls[0].len(), 2, "the two clicks' clk# items: {calls:?}");
    let mut all: Vec<&Key> = calls.iter().flatten().collect();
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), n, "a key written twice: {calls:?}");
    // 7 id items + 2 clk# + 2 messages + 2 contacts + counters (day, run, link).
    assert_eq!(n, 7 + 2 + 2 + 2 + 3, "{calls:?}");

    let a = app.get(&format!("/v1/analytics/campaigns/{cid}")).await;
    let c = &a.body["counts"];
    assert_eq!(c["human_opens"], 4, "{}", a.body);
    assert_eq!(c["unique_human_opens"], 2, "{}", a.body);
    assert_eq!(c["machine_opens"], 1, "{}", a.body);
    assert_eq!(c["human_clicks"], 2, "{}", a.body);
    assert_eq!(c["unique_human_clicks"], 1, "{}", a.body);
    assert_eq!(c["bot_clicks"], 0, "{}", a.body);

    let m = app
        .store
        .get(&messages::key(&ws, &msgs[0]))
        .await
        .unwrap()
        .unwrap();
    let evt = |attr: &str| m.str_attr(&format!("{attr}_evt")).map(str::to_string);
    assert_eq!(evt(analytics::first::HUMAN_OPEN).as_deref(), Some("evt_o1"));
    assert_eq!(
        evt(analytics::first::HUMAN_CLICK).as_deref(),
        Some("evt_c1")
    );
    assert_eq!(evt(&analytics::first::link(0)).as_deref(), Some("evt_c1"));
    let contact = m.str_attr("contact_id").unwrap().to_string();
    let ct = app
        .store
        .get(&Key::new(keys::ws(&ws, keys::CONTACTS), contact))
        .await
        .unwrap()
        .unwrap();
    let latest = (t0 + Duration::seconds(3)).to_rfc3339_opts(SecondsFormat::Micros, true);
    assert_eq!(ct.str_attr("last_engaged_at"), Some(latest.as_str()));

    let again = record_events(&store, &cfg, &batch).await.unwrap();
    assert!(again.iter().all(|o| *o == Outcome::Duplicate), "{again:?}");
    assert!(
        store.take().is_empty(),
        "a redelivered batch writes nothing"
    );
    let b = app.get(&format!("/v1/analytics/campaigns/{cid}")).await;
    assert_eq!(b.body["counts"], a.body["counts"]);
}

/// A scanner's burst inside one batch is classified as if the clicks were recorded one
/// by one: the clicks before the burst is recognisable are human, the rest bots.
#[tokio::test]
async fn a_burst_inside_one_batch_is_classified_click_by_click() {
    let (app, _clock, _cid, msgs) = sent_campaign().await;
    let t0 = Utc::now();
    let batch: Vec<TrackEvent> = (0..4)
        .map(|i| TrackEvent {
            id: format!("evt_burst{i}"),
            workspace_id: app.workspace_id.clone(),
            message_id: msgs[2].clone(),
            at: t0 + Duration::milliseconds(100 * i64::from(i)),
            kind: TrackKind::Click {
                link: i,
                url: format!("https://example.com/l{i}"),
            },
            ip: Some("198.51.100.7".parse().unwrap()),
            user_agent: Some(CHROME.into()),
        })
        .collect();
    let out = record_events(app.store.as_ref(), &RecorderConfig::default(), &batch)
        .await
        .unwrap();
    let human = Outcome::Click(ClickClass::HumanClick);
    let bot = Outcome::Click(ClickClass::BotClick);
    assert_eq!(out, vec![human.clone(), human, bot.clone(), bot]);
}
