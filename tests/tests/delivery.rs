//! The delivery engine end to end on the embedded store, driven inline with a manual
//! clock (no sleeps): transactional sends over HTTP, the due index and windows, caps,
//! retries, sender pauses, the crash window, dead letters, and the fault-injection
//! suite (10,000 messages, 10% transient errors, 5% duplicate deliveries, crashes).

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use mailpilot_runner::delivery::{Engine, QueueSettings};
use mailpilot_runner::{DeliverySettings, Settings};
use mailpilot_shared::adapters::local::store::{Durability, Options, RedbStore};
use mailpilot_shared::model::links::LinkKeys;
use mailpilot_shared::model::message::{MAX_ATTEMPTS, MessageState};
use mailpilot_shared::model::sender::{DailyCap, Day, SendingWindow, WindowSpec, WindowZone};
use mailpilot_shared::model::{Id, SuppressionReason};
use mailpilot_shared::ports::clock::{Clock, ManualClock};
use mailpilot_shared::ports::provider::Provider;
use mailpilot_shared::ports::queue::{Lane, Queue};
use mailpilot_shared::ports::store::Store;
use mailpilot_shared::usecases::messages::{
    self, Composer, Content, MessageRecord, Planned, SendDeps, SendRequest,
};
use mailpilot_shared::usecases::send::{Route, SendConfig, StaticDirectory};
use mailpilot_shared::usecases::suppressions::{self, AddSuppression};
use mailpilot_tests::app::{TestApp, spawn_app_with};
use mailpilot_tests::delivery::{
    Faults, TestProvider, put_workspace, quiet_simulated_crashes, route,
};
use reqwest::StatusCode;
use serde_json::json;

const WS: &str = "ws_00000000000000000000000000";
const SENDER: &str = "snd_test";

fn start() -> DateTime<Utc> {
    // A Wednesday, 10:00 UTC, near the real time (TTLs are real time).
    mailpilot_tests::next_wednesday_10_utc()
}

struct Rig {
    engine: Arc<Engine>,
    clock: Arc<ManualClock>,
    directory: Arc<StaticDirectory>,
    store: Arc<dyn Store>,
    _dir: tempfile::TempDir,
}

async fn rig(route: Route, duplicate_share: f64) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        RedbStore::open_with(
            &dir.path().join("db.redb"),
            Options {
                durability: Durability::NoSync,
                ..Options::default()
            },
        )
        .unwrap(),
    );
    put_workspace(store.as_ref(), WS).await;
    let clock = Arc::new(ManualClock::new(start()));
    let directory = Arc::new(StaticDirectory::default());
    directory.insert(WS, route);
    let engine = Arc::new(
        Engine::new(
            store.clone(),
            directory.clone(),
            Some(clock.clone()),
            Composer {
                link_keys: Arc::new(LinkKeys::generate()),
                public_url: "https://mp.example".into(),
            },
            SendConfig::default(),
            None,
            &QueueSettings {
                visibility_timeout_secs: 180,
                duplicate_share,
            },
        )
        .unwrap(),
    );
    Rig {
        engine,
        clock,
        directory,
        store,
        _dir: dir,
    }
}

fn content(subject: &str) -> Content {
    Content {
        subject: subject.into(),
        html: Some("<p>Hello {{name}}</p>".into()),
        text: Some("Hello {{name}}".into()),
        variables: [("name".to_string(), "Ana".to_string())].into(),
    }
}

impl Rig {
    async fn transactional(&self, to: &str) -> String {
        let deps = SendDeps {
            store: self.store.as_ref(),
            directory: self.directory.as_ref(),
            priority: self.engine.priority.as_ref() as &dyn Queue,
            clock: self.clock.as_ref(),
            retention_days: 400,
        };
        let req: SendRequest = serde_json::from_value(json!({
            "sender_id": SENDER, "to": to, "subject": "Your code", "text": "1234",
        }))
        .unwrap();
        messages::send_transactional(&deps, WS, req)
            .await
            .unwrap()
            .id
    }

    async fn plan(&self, tos: &[String], due: DateTime<Utc>) -> Vec<String> {
        let planned: Vec<Planned> = tos
            .iter()
            .map(|to| Planned {
                id: Id::generate(Id::MESSAGE),
                sender_id: SENDER.into(),
                to: to.clone(),
                contact_id: None,
                time_zone: None,
                content: content("News"),
                due,
            })
            .collect();
        let ids = planned.iter().map(|p| p.id.clone()).collect();
        messages::plan(self.store.as_ref(), WS, planned, self.clock.now(), 400)
            .await
            .unwrap();
        ids
    }

    async fn message(&self, id: &str) -> MessageRecord {
        messages::load(self.store.as_ref(), WS, id)
            .await
            .unwrap()
            .unwrap()
    }

    async fn drain_for(&self, d: Duration) {
        self.engine.drain(Some(self.clock.now() + d)).await.unwrap();
    }
}

#[tokio::test]
async fn a_transactional_message_is_sent_once_with_a_timeline() {
    let provider = Arc::new(TestProvider::new(Faults::default()));
    let rig = rig(route(SENDER, provider.clone()), 0.0).await;
    let id = rig.transactional("ana@example.com").await;
    assert_eq!(rig.message(&id).await.state, MessageState::Queued);
    rig.drain_for(Duration::minutes(5)).await;
    let m = rig.message(&id).await;
    assert_eq!(m.state, MessageState::Sent);
    assert_eq!(
        m.provider_message_id.as_deref(),
        Some(&*format!("test-{id}"))
    );
    let states: Vec<_> = m.timeline.iter().map(|t| t.state).collect();
    assert_eq!(
        states,
        vec![
            MessageState::Queued,
            MessageState::Sending,
            MessageState::Sent
        ]
    );
    assert_eq!(provider.count("ana@example.com"), 1);
    // The provider pointer leads back to the message.
    let pointer = rig
        .store
        .get(&mailpilot_shared::ports::store::Key::new(
            format!("provmsg#test#test-{id}"),
            "msg",
        ))
        .await
        .unwrap()
        .expect("pointer item");
    assert_eq!(pointer["msg"], mailpilot_shared::ports::store::val::s(&id));
}

#[tokio::test]
async fn a_redelivered_record_sends_nothing_twice() {
    let provider = Arc::new(TestProvider::new(Faults::default()));
    let rig = rig(route(SENDER, provider.clone()), 1.0).await;
    let id = rig.transactional("bo@example.com").await;
    assert_eq!(rig.engine.priority.len(), 2, "every record delivered twice");
    rig.drain_for(Duration::minutes(5)).await;
    assert_eq!(rig.message(&id).await.state, MessageState::Sent);
    assert_eq!(provider.count("bo@example.com"), 1);
    assert!(rig.engine.priority.is_empty());
}

#[tokio::test]
async fn bulk_messages_wait_in_the_due_index_and_respect_the_window() {
    let provider = Arc::new(TestProvider::new(Faults::default()));
    let mut r = route(SENDER, provider.clone());
    // Open 14:00-16:00 UTC, every day.
    r.window = Some(
        SendingWindow::parse(
            &WindowSpec {
                days: Day::ALL.to_vec(),
                start_hour: 14,
                end_hour: 16,
                time_zone: WindowZone::Sender,
            },
            chrono_tz::UTC,
        )
        .unwrap(),
    );
    let rig = rig(r, 0.0).await;
    let ids = rig.plan(&["a@example.com".into()], start()).await;
    // Due now, but outside the window: deferred to 14:00, never spun through the queue.
    rig.drain_for(Duration::minutes(3)).await;
    let m = rig.message(&ids[0]).await;
    assert_eq!(m.state, MessageState::Deferred);
    assert_eq!(m.reason.as_deref(), Some("window"));
    assert_eq!(m.due_at, Some(start() + Duration::hours(4)));
    assert!(rig.engine.bulk.is_empty());
    assert_eq!(provider.total(), 0);
    rig.drain_for(Duration::hours(5)).await;
    let m = rig.message(&ids[0]).await;
    assert_eq!(m.state, MessageState::Sent);
    assert!(rig.clock.now() >= start() + Duration::hours(4));
    // The dispatcher never reads a minute twice, and never skips one.
    assert_eq!(provider.count("a@example.com"), 1);
}

#[tokio::test]
async fn a_due_time_in_the_past_is_filed_at_the_checkpoint() {
    let provider = Arc::new(TestProvider::new(Faults::default()));
    let rig = rig(route(SENDER, provider.clone()), 0.0).await;
    rig.plan(&["first@example.com".into()], start()).await;
    rig.drain_for(Duration::minutes(3)).await;
    // Yesterday's due time: clamped to the checkpoint, still sent.
    let ids = rig
        .plan(&["late@example.com".into()], start() - Duration::days(1))
        .await;
    rig.drain_for(Duration::minutes(3)).await;
    assert_eq!(rig.message(&ids[0]).await.state, MessageState::Sent);
}

#[tokio::test]
async fn over_the_daily_cap_messages_wait_for_the_next_day() {
    let provider = Arc::new(TestProvider::new(Faults::default()));
    let mut r = route(SENDER, provider.clone());
    r.sender_cap = Some(DailyCap::parse(3, None).unwrap());
    let rig = rig(r, 0.0).await;
    let tos: Vec<String> = (0..5).map(|i| format!("c{i}@example.com")).collect();
    let ids = rig.plan(&tos, start()).await;
    rig.drain_for(Duration::minutes(3)).await;
    let mut by_state: HashMap<MessageState, usize> = HashMap::new();
    for id in &ids {
        *by_state.entry(rig.message(id).await.state).or_default() += 1;
    }
    assert_eq!(by_state.get(&MessageState::Sent), Some(&3));
    assert_eq!(by_state.get(&MessageState::Deferred), Some(&2));
    // Transactional mail counts but is never held back by the cap.
    let t = rig.transactional("otp@example.com").await;
    rig.drain_for(Duration::minutes(1)).await;
    assert_eq!(rig.message(&t).await.state, MessageState::Sent);
    rig.drain_for(Duration::days(1)).await;
    for id in &ids {
        assert_eq!(rig.message(id).await.state, MessageState::Sent);
    }
    assert_eq!(provider.total(), 6);
}

#[tokio::test]
async fn transient_errors_back_off_until_the_attempt_limit() {
    let provider = Arc::new(TestProvider::new(Faults {
        transient: 1.0,
        ..Faults::default()
    }));
    let rig = rig(route(SENDER, provider.clone()), 0.0).await;
    let id = rig.transactional("slow@example.com").await;
    rig.drain_for(Duration::minutes(1)).await;
    let m = rig.message(&id).await;
    assert_eq!(m.state, MessageState::Failed);
    assert_eq!(m.reason.as_deref(), Some("transient_exhausted"));
    assert_eq!(m.attempts, MAX_ATTEMPTS);
    // Growing delays, inside SQS's 12 hours each.
    assert!(rig.clock.now() - start() > Duration::minutes(60));
    assert!(rig.engine.priority.is_empty());
}

#[tokio::test]
async fn a_sender_level_error_pauses_the_sender() {
    let provider = Arc::new(TestProvider {
        refuse_sender: true,
        ..TestProvider::default()
    });
    let rig = rig(route(SENDER, provider.clone()), 0.0).await;
    let a = rig.transactional("a@example.com").await;
    rig.drain_for(Duration::minutes(1)).await;
    let b = rig.transactional("b@example.com").await;
    rig.drain_for(Duration::minutes(1)).await;
    for id in [a, b] {
        let m = rig.message(&id).await;
        assert_eq!(m.state, MessageState::Failed);
        assert_eq!(m.reason.as_deref(), Some("sender_paused"));
    }
    let r = mailpilot_shared::usecases::send::Directory::route(rig.directory.as_ref(), WS, SENDER)
        .await
        .unwrap()
        .unwrap();
    assert!(r.paused);
}

#[tokio::test]
async fn suppressed_addresses_are_skipped_at_send_time() {
    let provider = Arc::new(TestProvider::new(Faults::default()));
    let rig = rig(route(SENDER, provider.clone()), 0.0).await;
    let ids = rig.plan(&["gone@example.com".into()], start()).await;
    suppressions::add(
        rig.store.as_ref(),
        WS,
        AddSuppression {
            email: "gone@example.com".into(),
            reason: Some(SuppressionReason::HardBounce),
            source: None,
        },
    )
    .await
    .unwrap();
    rig.drain_for(Duration::minutes(3)).await;
    let m = rig.message(&ids[0]).await;
    assert_eq!(m.state, MessageState::Skipped);
    assert_eq!(m.reason.as_deref(), Some("bounced"));
    assert_eq!(provider.total(), 0);
}

#[tokio::test]
async fn the_crash_window_never_sends_twice_and_dedup_providers_resend() {
    quiet_simulated_crashes();
    for dedup in [false, true] {
        let provider = Arc::new(TestProvider {
            faults: Faults {
                crash: 1.0,
                ..Faults::default()
            },
            dedup,
            ..TestProvider::default()
        });
        let rig = rig(route(SENDER, provider.clone() as Arc<dyn Provider>), 0.0).await;
        let id = rig.transactional("crash@example.com").await;
        let report = rig
            .engine
            .drain(Some(rig.clock.now() + Duration::minutes(1)))
            .await
            .unwrap();
        assert_eq!(report.crashes, 1, "dedup={dedup}");
        let m = rig.message(&id).await;
        if dedup {
            // Resent under the same idempotency key: the provider delivered once.
            assert_eq!(m.state, MessageState::Sent);
        } else {
            assert_eq!(m.state, MessageState::Failed);
            assert_eq!(m.reason.as_deref(), Some("unknown_outcome"));
        }
        assert_eq!(provider.count("crash@example.com"), 1, "dedup={dedup}");
    }
}

#[tokio::test]
async fn a_dedup_provider_is_not_called_again_once_its_key_window_passed() {
    quiet_simulated_crashes();
    let provider = Arc::new(TestProvider {
        faults: Faults {
            crash: 1.0,
            ..Faults::default()
        },
        dedup: true,
        ..TestProvider::default()
    });
    let rig = rig(route(SENDER, provider.clone() as Arc<dyn Provider>), 0.0).await;
    let id = rig.transactional("late@example.com").await;
    let (_, crashed) = rig.engine.step(Lane::Priority).await;
    assert!(crashed);
    // The record comes back only a day later (an outage): the provider has forgotten the
    // idempotency key, so calling it again could deliver a second copy.
    rig.clock.advance(Duration::hours(24));
    rig.drain_for(Duration::minutes(1)).await;
    let m = rig.message(&id).await;
    assert_eq!(m.state, MessageState::Failed);
    assert_eq!(m.reason.as_deref(), Some("unknown_outcome"));
    assert_eq!(provider.count("late@example.com"), 1);
}

#[tokio::test]
async fn an_unparsable_record_fails_alone_and_dead_letters_are_marked() {
    let provider = Arc::new(TestProvider::new(Faults::default()));
    let rig = rig(route(SENDER, provider.clone()), 0.0).await;
    let ok = rig.transactional("fine@example.com").await;
    rig.engine
        .priority
        .send_batch(vec!["{not json".into()])
        .await
        .unwrap();
    // A message whose records never get handled: receive it past maxReceiveCount.
    let stuck = rig.transactional("stuck@example.com").await;
    rig.drain_for(Duration::minutes(1)).await;
    assert_eq!(rig.message(&ok).await.state, MessageState::Sent);
    assert_eq!(rig.message(&stuck).await.state, MessageState::Sent);
    let dlq = rig.engine.priority.dead_letters().unwrap();
    assert!(rig.engine.priority.is_empty() && dlq.is_empty());
    // Now a message that is never handled: its record goes to the DLQ.
    let lost = rig.transactional("lost@example.com").await;
    for _ in 0..=mailpilot_runner::delivery::MAX_RECEIVE {
        let got = rig.engine.priority.receive(10).unwrap();
        for r in got {
            rig.engine
                .priority
                .change_visibility(&r.receipt, 0)
                .await
                .unwrap();
        }
    }
    rig.drain_for(Duration::minutes(1)).await;
    let m = rig.message(&lost).await;
    assert_eq!(m.state, MessageState::Failed);
    assert_eq!(m.reason.as_deref(), Some("dead_letter"));
}

/// The fault-injection suite: 10,000 messages (half bulk through the due index, half
/// transactional), 10% transient errors, 2% throttled, 1% permanent, 5% of records
/// delivered twice, 0.5% crashes between send and record, 1% suppressed addresses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_messages_under_faults_end_terminal_and_none_twice() {
    quiet_simulated_crashes();
    let provider = Arc::new(TestProvider::new(Faults {
        transient: 0.10,
        throttled: 0.02,
        permanent: 0.01,
        crash: 0.005,
    }));
    let rig = rig(route(SENDER, provider.clone()), 0.05).await;
    let n = 10_000;
    let tos: Vec<String> = (0..n).map(|i| format!("r{i}@example.com")).collect();
    for to in tos.iter().step_by(100) {
        suppressions::add(
            rig.store.as_ref(),
            WS,
            AddSuppression {
                email: to.clone(),
                reason: Some(SuppressionReason::Unsubscribed),
                source: None,
            },
        )
        .await
        .unwrap();
    }
    let mut ids = rig.plan(&tos[..n / 2], start()).await;
    for to in &tos[n / 2..] {
        ids.push(rig.transactional(to).await);
    }
    let report = rig
        .engine
        .drain(Some(rig.clock.now() + Duration::minutes(5)))
        .await
        .unwrap();
    assert!(report.crashes > 0, "the suite must crash some batches");

    let mut by_state: HashMap<MessageState, usize> = HashMap::new();
    let mut by_reason: HashMap<String, usize> = HashMap::new();
    for (id, to) in ids.iter().zip(&tos) {
        let m = rig.message(id).await;
        assert!(m.state.is_settled(), "{id} ended {:?}", m.state);
        *by_state.entry(m.state).or_default() += 1;
        match m.state {
            MessageState::Sent => assert_eq!(provider.count(to), 1, "{to} sent once"),
            MessageState::Skipped | MessageState::Failed => {
                let reason = m.reason.clone().expect("a terminal state has a reason");
                assert!(
                    [
                        "unsubscribed",
                        "permanent:550",
                        "transient_exhausted",
                        "unknown_outcome",
                        "dead_letter"
                    ]
                    .contains(&reason.as_str()),
                    "{reason}"
                );
                if reason == "unknown_outcome" {
                    assert!(provider.count(to) <= 1);
                } else {
                    assert_eq!(provider.count(to), 0, "{to} ({reason}) was never delivered");
                }
                *by_reason.entry(reason).or_default() += 1;
            }
            other => panic!("unexpected state {other}"),
        }
    }
    assert_eq!(by_state.values().sum::<usize>(), n, "{by_state:?}");
    let sent = by_state.get(&MessageState::Sent).copied().unwrap_or(0);
    let unknown = by_reason.get("unknown_outcome").copied().unwrap_or(0);
    assert_eq!(by_reason.get("unsubscribed"), Some(&(n / 100)));
    assert!(unknown > 0, "{by_reason:?}");
    // The provider received every sent message, and some of the unknown outcomes (a
    // crash loses the whole batch: its other claimed messages never reached the provider).
    let total = provider.total() as usize;
    assert!(
        sent < total && total <= sent + unknown,
        "{total} {by_state:?} {by_reason:?}"
    );
    assert!(provider.delivered.lock().unwrap().values().all(|c| *c == 1));
    assert!(rig.engine.bulk.is_empty() && rig.engine.priority.is_empty());
    eprintln!("fault suite: {by_state:?} {by_reason:?} {report:?}");
}

// ---- over HTTP -------------------------------------------------------------------

async fn app_with(provider: Arc<TestProvider>) -> (TestApp, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let directory = Arc::new(StaticDirectory::default());
    let dir2 = directory.clone();
    let c2 = clock.clone();
    let app = spawn_app_with(move |s: &mut Settings| {
        s.delivery = DeliverySettings {
            workers: 0,
            persist_queues: false,
            directory: Some(dir2),
            manual_clock: Some(c2),
            ..DeliverySettings::default()
        };
    })
    .await;
    directory.insert(&app.workspace_id, route(SENDER, provider));
    (app, clock)
}

#[tokio::test]
async fn post_send_answers_202_and_the_message_can_be_followed() {
    let provider = Arc::new(TestProvider::new(Faults::default()));
    let (app, _clock) = app_with(provider.clone()).await;
    let a = app
        .post(
            "/v1/send",
            json!({"sender_id": SENDER, "to": "Ana@Example.com", "subject": "Hi {{name}}",
                   "html": "<p>Hi {{name}}</p>", "variables": {"name": "Ana"}, "tags": {"kind": "otp"}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.body);
    let id = a.body["id"].as_str().unwrap().to_string();
    assert_eq!(a.body["state"], "queued");
    assert_eq!(a.body["to"], "ana@example.com");
    assert_eq!(
        a.headers["location"].to_str().unwrap(),
        format!("/v1/messages/{id}")
    );
    app.engine().drain(None).await.unwrap();
    let m = app.get(&format!("/v1/messages/{id}")).await;
    assert_eq!(m.status, StatusCode::OK);
    assert_eq!(m.body["state"], "sent", "{}", m.body);
    assert_eq!(m.body["timeline"].as_array().unwrap().len(), 3);
    assert_eq!(provider.count("ana@example.com"), 1);

    let sent = app.get("/v1/messages?state=sent").await;
    assert_eq!(sent.body["data"][0]["id"], id.as_str());
    let queued = app.get("/v1/messages?state=queued").await;
    assert_eq!(queued.body["data"].as_array().unwrap().len(), 0);
    let bad = app.get("/v1/messages?state=nope").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn post_send_renders_a_stored_template_with_the_contacts_variables() {
    let provider = Arc::new(TestProvider::new(Faults::default()));
    let (app, _clock) = app_with(provider.clone()).await;
    let t = app
        .post(
            "/v1/templates",
            json!({"name": "Receipt", "subject": "Receipt for {{first_name}}",
                   "html": "<p>Hi {{first_name}}, plan {{attributes.plan}}, order {{order.id}}. <a href=\"{{unsubscribe_url}}\">Unsubscribe</a></p>",
                   "publish": true}),
        )
        .await;
    assert_eq!(t.status, StatusCode::CREATED, "{}", t.body);
    let tid = t.body["id"].as_str().unwrap().to_string();
    // Version 2 exists but is not published.
    let v2 = app
        .patch(
            &format!("/v1/templates/{tid}"),
            json!({"subject": "Your receipt, {{first_name}}"}),
        )
        .await;
    assert_eq!(v2.status, StatusCode::OK, "{}", v2.body);
    let c = app
        .post(
            "/v1/contacts",
            json!({"email": "ana@example.com", "first_name": "Ana", "attributes": {"plan": "pro"}}),
        )
        .await;
    assert_eq!(c.status, StatusCode::CREATED, "{}", c.body);
    let cid = c.body["id"].as_str().unwrap().to_string();

    let published = app
        .post(
            "/v1/send",
            json!({"sender_id": SENDER, "contact_id": cid, "template_id": tid,
                   "variables": {"order": {"id": "A-17"}}}),
        )
        .await;
    assert_eq!(published.status, StatusCode::ACCEPTED, "{}", published.body);
    let pinned = app
        .post(
            "/v1/send",
            json!({"sender_id": SENDER, "to": "bo@example.com", "template_id": tid, "version": 2,
                   "variables": {"first_name": "Bo", "order": {"id": "B-2"}}}),
        )
        .await;
    assert_eq!(pinned.status, StatusCode::ACCEPTED, "{}", pinned.body);
    app.engine().drain(None).await.unwrap();

    let sent = provider.accepted.lock().unwrap().clone();
    assert_eq!(sent.len(), 2);
    let ana = sent
        .iter()
        .find(|p| p.to.email == "ana@example.com")
        .unwrap();
    assert_eq!(ana.subject, "Receipt for Ana");
    let html = ana.html.as_deref().unwrap();
    assert!(html.contains("Hi Ana, plan pro, order A-17."), "{html}");
    assert!(ana.text.as_deref().unwrap().contains("Hi Ana, plan pro"));
    let unsubscribe = &ana.list_unsubscribe.as_ref().unwrap().url;
    assert!(unsubscribe.contains("/u/"), "{unsubscribe}");
    let bo = sent
        .iter()
        .find(|p| p.to.email == "bo@example.com")
        .unwrap();
    assert_eq!(bo.subject, "Your receipt, Bo");
    assert!(bo.html.as_deref().unwrap().contains("order B-2."));
    // The message shows the subject it was sent with.
    let id = published.body["id"].as_str().unwrap();
    let m = app.get(&format!("/v1/messages/{id}")).await;
    assert_eq!(m.body["state"], "sent", "{}", m.body);
    assert_eq!(m.body["subject"], "Receipt for Ana");

    // Inline content goes through the same renderer; text-only stays text-only.
    let inline = app
        .post(
            "/v1/send",
            json!({"sender_id": SENDER, "to": "cy@example.com", "subject": "Code for {{name}}",
                   "text": "Your code: {{code}}", "variables": {"name": "Cy", "code": 4711}}),
        )
        .await;
    assert_eq!(inline.status, StatusCode::ACCEPTED, "{}", inline.body);
    app.engine().drain(None).await.unwrap();
    let sent = provider.accepted.lock().unwrap().clone();
    let cy = sent
        .iter()
        .find(|p| p.to.email == "cy@example.com")
        .unwrap();
    assert_eq!(cy.subject, "Code for Cy");
    assert_eq!(cy.html, None);
    assert_eq!(cy.text.as_deref().map(str::trim), Some("Your code: 4711"));

    // Unknown templates and versions, and mixing a template with inline content: 422s
    // naming the field.
    for (body, field) in [
        (
            json!({"sender_id": SENDER, "to": "x@example.com", "template_id": "tpl_nope"}),
            "/template_id",
        ),
        (
            json!({"sender_id": SENDER, "to": "x@example.com", "template_id": tid, "version": 9}),
            "/version",
        ),
        (
            json!({"sender_id": SENDER, "to": "x@example.com", "template_id": tid, "subject": "s"}),
            "/subject",
        ),
        (
            json!({"sender_id": SENDER, "to": "x@example.com", "subject": "s", "text": "t", "version": 1}),
            "/version",
        ),
        (
            json!({"sender_id": SENDER, "to": "x@example.com", "subject": "s", "html": "<p>{{#if}}</p>"}),
            "/html",
        ),
    ] {
        let r = app.post("/v1/send", body.clone()).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body} → {}",
            r.body
        );
        let fields: Vec<&str> = r.body["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert_eq!(fields, [field], "{body}");
    }
}

#[tokio::test]
async fn post_send_validates_and_respects_scopes_and_suppression() {
    let provider = Arc::new(TestProvider::new(Faults::default()));
    let (app, _clock) = app_with(provider.clone()).await;
    let bad = app
        .post(
            "/v1/send",
            json!({"sender_id": "snd_nope", "to": "x", "subject": "s"}),
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.body);
    let fields: Vec<&str> = bad.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert!(
        fields.contains(&"/to") && fields.contains(&"/sender_id") && fields.contains(&"/html"),
        "{fields:?}"
    );

    app.post("/v1/suppressions", json!({"email": "no@example.com"}))
        .await;
    let s = app
        .post(
            "/v1/send",
            json!({"sender_id": SENDER, "to": "no@example.com", "subject": "s", "text": "t"}),
        )
        .await;
    assert_eq!(s.status, StatusCode::ACCEPTED);
    assert_eq!(s.body["state"], "skipped");
    assert_eq!(s.body["reason"], "suppressed");

    // A send key may send and read its messages, nothing else; a read key may not send.
    let k = app
        .post("/v1/api-keys", json!({"name": "app", "scope": "send"}))
        .await;
    let send_key = k.body["key"].as_str().unwrap().to_string();
    let r = app
        .post("/v1/api-keys", json!({"name": "ro", "scope": "read"}))
        .await;
    let read_key = r.body["key"].as_str().unwrap().to_string();
    let body = json!({"sender_id": SENDER, "to": "k@example.com", "subject": "s", "text": "t"});
    let sent = app
        .call(
            reqwest::Method::POST,
            "/v1/send",
            Some(&send_key),
            Some(body.clone()),
        )
        .await;
    assert_eq!(sent.status, StatusCode::ACCEPTED, "{}", sent.body);
    let id = sent.body["id"].as_str().unwrap();
    let got = app
        .call(
            reqwest::Method::GET,
            &format!("/v1/messages/{id}"),
            Some(&send_key),
            None,
        )
        .await;
    assert_eq!(got.status, StatusCode::OK);
    let list = app
        .call(reqwest::Method::GET, "/v1/messages", Some(&send_key), None)
        .await;
    assert_eq!(list.status, StatusCode::FORBIDDEN);
    let denied = app
        .call(
            reqwest::Method::POST,
            "/v1/send",
            Some(&read_key),
            Some(body),
        )
        .await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
}

/// A provider that holds every send to `@bulk.example` until released, and accepts the
/// rest at once: bulk workers stay busy with the batch they hold.
#[derive(Default)]
struct GateProvider {
    open: tokio::sync::Notify,
    opened: std::sync::atomic::AtomicBool,
    /// Sends held at the gate right now.
    waiting: std::sync::atomic::AtomicUsize,
    accepted: std::sync::Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl Provider for GateProvider {
    fn kind(&self) -> &'static str {
        "gate"
    }

    async fn send(
        &self,
        message: &mailpilot_shared::ports::provider::OutgoingMessage,
    ) -> Result<
        mailpilot_shared::ports::provider::Accepted,
        mailpilot_shared::ports::provider::SendError,
    > {
        let to = message.parts.to.email.clone();
        if to.ends_with("@bulk.example") {
            let wait = self.open.notified();
            tokio::pin!(wait);
            wait.as_mut().enable();
            if !self.opened.load(std::sync::atomic::Ordering::SeqCst) {
                self.waiting
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                wait.await;
                self.waiting
                    .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
        self.accepted.lock().unwrap().push(to);
        Ok(mailpilot_shared::ports::provider::Accepted {
            provider_message_id: format!("gate-{}", message.idempotency_key),
        })
    }

    async fn verify(&self) -> Result<(), mailpilot_shared::ports::provider::SendError> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactional_mail_is_sent_while_every_bulk_worker_holds_a_bulk_batch() {
    let provider = Arc::new(GateProvider::default());
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        RedbStore::open_with(
            &dir.path().join("db.redb"),
            Options {
                durability: Durability::NoSync,
                ..Options::default()
            },
        )
        .unwrap(),
    );
    put_workspace(store.as_ref(), WS).await;
    let directory = Arc::new(StaticDirectory::default());
    directory.insert(WS, route(SENDER, provider.clone()));
    let engine = Arc::new(
        Engine::new(
            store.clone(),
            directory.clone(),
            None, // the system clock: real workers, not the inline drain
            Composer {
                link_keys: Arc::new(LinkKeys::generate()),
                public_url: "https://mp.example".into(),
            },
            SendConfig::default(),
            None,
            &QueueSettings::default(),
        )
        .unwrap(),
    );
    let clock = mailpilot_shared::ports::clock::SystemClock;
    // A bulk backlog, due now, already in the normal queue.
    const BACKLOG: usize = 2_000;
    let now = clock.now();
    let planned: Vec<Planned> = (0..BACKLOG)
        .map(|i| Planned {
            id: Id::generate(Id::MESSAGE),
            sender_id: SENDER.into(),
            to: format!("b{i}@bulk.example"),
            contact_id: None,
            time_zone: None,
            content: content("News"),
            due: now,
        })
        .collect();
    let bodies: Vec<String> = planned
        .iter()
        .map(|p| {
            serde_json::to_string(&messages::SendRecord {
                ws: WS.into(),
                msg: p.id.clone(),
                content: None,
                render: None,
            })
            .unwrap()
        })
        .collect();
    messages::plan(store.as_ref(), WS, planned, now, 400)
        .await
        .unwrap();
    for chunk in bodies.chunks(10) {
        engine.bulk.send_batch(chunk.to_vec()).await.unwrap();
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let workers = 3;
    let tasks = engine.spawn(workers, std::time::Duration::from_secs(3600), stop_rx);
    // Wait until every shared worker holds a bulk batch (the gate keeps them there).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while provider.waiting.load(std::sync::atomic::Ordering::SeqCst) < workers {
        assert!(
            std::time::Instant::now() < deadline,
            "bulk workers never started"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let deps = SendDeps {
        store: store.as_ref(),
        directory: directory.as_ref(),
        priority: engine.priority.as_ref() as &dyn Queue,
        clock: &clock,
        retention_days: 400,
    };
    let req: SendRequest = serde_json::from_value(json!({
        "sender_id": SENDER, "to": "otp@example.com", "subject": "Your code", "text": "1234",
    }))
    .unwrap();
    let id = messages::send_transactional(&deps, WS, req)
        .await
        .unwrap()
        .id;
    // The dedicated high-priority worker sends it; without it this loop never ends.
    loop {
        let m = messages::load(store.as_ref(), WS, &id)
            .await
            .unwrap()
            .unwrap();
        if m.state == MessageState::Sent {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the transactional message waited behind the bulk backlog: {:?}",
            m.state
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Sent while the whole backlog is still there: no bulk message went out, the
    // workers still hold their bulk batches and the rest is still queued.
    assert_eq!(
        provider.accepted.lock().unwrap().as_slice(),
        ["otp@example.com".to_string()]
    );
    // At least the backlog: if a minute boundary passed since planning, the dispatcher
    // handed the planned messages over once more (harmless: the claim sends each once).
    assert!(
        engine.bulk.len() >= BACKLOG,
        "bulk records are all still queued or held: {}",
        engine.bulk.len()
    );
    assert_eq!(
        provider.waiting.load(std::sync::atomic::Ordering::SeqCst),
        workers
    );
    // Release the bulk lane and stop.
    provider
        .opened
        .store(true, std::sync::atomic::Ordering::SeqCst);
    provider.open.notify_waiters();
    stop_tx.send(true).unwrap();
    for t in tasks {
        t.await.unwrap();
    }
}
