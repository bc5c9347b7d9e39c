//! Campaigns end to end over the use cases on the embedded store: the planner from the
//! planning queue, the engine's dispatcher and sender with a recording provider, and a
//! manual clock (no sleeps, no timing assertions).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Duration, TimeZone, Utc};
use mailpilot_shared::adapters::local::queue::{LocalQueue, QueueOptions};
use mailpilot_shared::adapters::local::scheduler::StoreScheduler;
use mailpilot_shared::adapters::local::store::RedbStore;
use mailpilot_shared::mime::Mailbox;
use mailpilot_shared::model::SuppressionReason;
use mailpilot_shared::model::campaign::CampaignState;
use mailpilot_shared::model::links::LinkKeys;
use mailpilot_shared::model::message::MessageState;
use mailpilot_shared::model::sender::DailyCap;
use mailpilot_shared::ports::clock::{Clock, ManualClock};
use mailpilot_shared::ports::provider::{Accepted, OutgoingMessage, Provider, SendError};
use mailpilot_shared::ports::queue::{Lane, Queue};
use mailpilot_shared::ports::store::{
    BatchOp, Cond, Item, Key, Page, Query, Store, StoreError, StoreResult, TxAction, Update,
};
use mailpilot_shared::usecases::campaigns::{
    self, CampaignPatch, CreateCampaign, LaunchDeps, LaunchRequest, PlanTask,
};
use mailpilot_shared::usecases::messages::{self, Composer, MessageRecord};
use mailpilot_shared::usecases::planner::{self, PlannerDeps};
use mailpilot_shared::usecases::send::{
    self, Incoming, Outcome, Route, SendConfig, SenderDeps, StaticDirectory,
};
use mailpilot_shared::usecases::{contacts, dispatch, lists, suppressions, workspaces};

/// Records every message handed to it; refuses addresses listed in `refuse`.
#[derive(Default)]
struct Recorder {
    sent: Mutex<Vec<(String, String, DateTime<Utc>)>>, // (to, from, when)
    refuse: Mutex<Vec<String>>,
    clock: Mutex<Option<Arc<ManualClock>>>,
}

#[async_trait]
impl Provider for Recorder {
    fn kind(&self) -> &'static str {
        "test"
    }
    async fn send(&self, m: &OutgoingMessage) -> Result<Accepted, SendError> {
        let to = m.parts.to.email.clone();
        if self.refuse.lock().unwrap().contains(&to) {
            return Err(SendError::Permanent {
                code: "550".into(),
                detail: "no such user".into(),
            });
        }
        let now = self
            .clock
            .lock()
            .unwrap()
            .as_ref()
            .map(|c| c.now())
            .unwrap();
        let from = m.parts.from.email.clone();
        let mut sent = self.sent.lock().unwrap();
        sent.push((to, from, now));
        Ok(Accepted {
            provider_message_id: format!("p-{}", sent.len()),
        })
    }
    async fn verify(&self) -> Result<(), SendError> {
        Ok(())
    }
}

/// Fails the first transaction that saves a run's progress (a crash after a page's
/// messages were written and before its progress was).
struct LoseProgress {
    inner: Arc<RedbStore>,
    armed: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl Store for LoseProgress {
    async fn get(&self, key: &Key) -> StoreResult<Option<Item>> {
        self.inner.get(key).await
    }
    async fn put(&self, item: Item, cond: Option<Cond>) -> StoreResult<()> {
        self.inner.put(item, cond).await
    }
    async fn update(&self, key: &Key, update: Update, cond: Option<Cond>) -> StoreResult<Item> {
        self.inner.update(key, update, cond).await
    }
    async fn delete(&self, key: &Key, cond: Option<Cond>) -> StoreResult<Option<Item>> {
        self.inner.delete(key, cond).await
    }
    async fn query(&self, query: Query) -> StoreResult<Page> {
        self.inner.query(query).await
    }
    async fn batch_get(&self, keys: &[Key]) -> StoreResult<Vec<Item>> {
        self.inner.batch_get(keys).await
    }
    async fn batch_write(&self, ops: Vec<BatchOp>) -> StoreResult<()> {
        self.inner.batch_write(ops).await
    }
    async fn transact(&self, actions: Vec<TxAction>) -> StoreResult<()> {
        let progress = actions
            .iter()
            .any(|a| a.key().is_some_and(|k| k.pk.ends_with("#cruns")));
        if progress && self.armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError::unavailable("crash before the progress write"));
        }
        self.inner.transact(actions).await
    }
    fn writes(&self) -> u64 {
        self.inner.writes()
    }
}

struct World {
    store: Arc<RedbStore>,
    clock: Arc<ManualClock>,
    planning: Arc<LocalQueue>,
    bulk: Arc<LocalQueue>,
    priority: Arc<LocalQueue>,
    scheduler: Arc<StoreScheduler>,
    directory: Arc<StaticDirectory>,
    provider: Arc<Recorder>,
    composer: Composer,
    ws: String,
    _dir: tempfile::TempDir,
}

fn route(id: &str, provider: Arc<Recorder>, cap: Option<u64>) -> Route {
    Route {
        sender_id: id.into(),
        from: Mailbox::new(None, &format!("{id}@sender.example")),
        reply_to: None,
        connection_id: "conn".into(),
        provider,
        rate_per_sec: None,
        sender_tz: chrono_tz::UTC,
        window: None,
        sender_cap: cap.map(|c| DailyCap::parse(c, None).unwrap()),
        workspace_cap: None,
        paused: false,
    }
}

impl World {
    async fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(RedbStore::open(&dir.path().join("s.redb")).unwrap());
        // Near the real time: the embedded store hides items whose TTL has passed.
        let minute = Utc::now().timestamp().div_euclid(60) * 60;
        let start = Utc.timestamp_opt(minute + 30, 0).unwrap();
        let clock = Arc::new(ManualClock::new(start));
        let c: Arc<dyn Clock> = clock.clone();
        let q = |n: &str| Arc::new(LocalQueue::new(n, c.clone(), QueueOptions::default(), None));
        let provider = Arc::new(Recorder::default());
        *provider.clock.lock().unwrap() = Some(clock.clone());
        let created = workspaces::create_workspace(
            store.as_ref(),
            workspaces::CreateWorkspace { name: "W".into() },
        )
        .await
        .unwrap();
        let directory = Arc::new(StaticDirectory::default());
        directory.insert(
            &created.workspace_id,
            route("snd_a", provider.clone(), None),
        );
        World {
            scheduler: Arc::new(StoreScheduler::new(store.clone())),
            store,
            clock,
            planning: q("planning"),
            bulk: q("bulk"),
            priority: q("priority"),
            directory,
            provider,
            composer: Composer {
                link_keys: Arc::new(
                    LinkKeys::parse("k1:0123456789abcdef0123456789abcdef").unwrap(),
                ),
                public_url: "http://localhost".into(),
            },
            ws: created.workspace_id,
            _dir: dir,
        }
    }

    fn s(&self) -> &dyn Store {
        self.store.as_ref()
    }

    async fn contacts(&self, n: usize, prefix: &str) -> Vec<String> {
        let mut ids = vec![];
        for i in 0..n {
            let c = contacts::create(
                self.s(),
                &self.ws,
                contacts::ContactInput {
                    email: Some(format!("{prefix}{i}@example.com")),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
            ids.push(c.id);
        }
        ids
    }

    async fn list(&self, members: &[String]) -> String {
        let l = lists::create(
            self.s(),
            &self.ws,
            lists::CreateList {
                name: "L".into(),
                description: None,
                double_opt_in: false,
            },
        )
        .await
        .unwrap();
        for chunk in members.chunks(1000) {
            lists::add_members(
                self.s(),
                &self.ws,
                &l.id,
                lists::MembersChange {
                    contact_ids: chunk.to_vec(),
                },
            )
            .await
            .unwrap();
        }
        l.id
    }

    async fn campaign(&self, senders: &[&str], targets: &[String], excluded: &[String]) -> String {
        campaigns::create(
            self.s(),
            &self.ws,
            CreateCampaign {
                name: "Spring".into(),
                sender_id: None,
                sender_ids: Some(senders.iter().map(|s| s.to_string()).collect()),
                list_ids: targets.to_vec(),
                exclude_list_ids: Some(excluded.to_vec()),
                template_id: None,
                template_version: None,
                subject: Some("Hello".into()),
                html: None,
                text: Some("Hi there".into()),
                tracking: Some(false),
                scheduled_at: None,
            },
        )
        .await
        .unwrap()
        .id
    }

    fn launch_deps(&self) -> LaunchDeps<'_> {
        LaunchDeps {
            store: self.s(),
            planning: self.planning.as_ref(),
            scheduler: self.scheduler.as_ref(),
            now: self.clock.now(),
        }
    }

    async fn launch(&self, id: &str) -> campaigns::Campaign {
        campaigns::launch(&self.launch_deps(), &self.ws, id, LaunchRequest::default())
            .await
            .unwrap()
    }

    fn planner(&self) -> PlannerDeps<'_> {
        PlannerDeps {
            store: self.s(),
            directory: self.directory.as_ref(),
            planning: self.planning.as_ref(),
            send: self.bulk.as_ref(),
            scheduler: self.scheduler.as_ref(),
            clock: self.clock.as_ref(),
        }
    }

    /// Takes the planning queue's records without handling them.
    fn take_planning(&self) -> Vec<String> {
        let got = self.planning.receive(10).unwrap();
        for r in &got {
            self.planning.delete(&r.receipt).unwrap();
        }
        got.into_iter().map(|r| r.body).collect()
    }

    async fn plan(&self, body: &str) {
        let out = planner::handle_batch(
            &self.planner(),
            &[Incoming {
                id: "r".into(),
                body: body.to_string(),
            }],
        )
        .await;
        assert_eq!(out, vec![Outcome::Done]);
    }

    /// Handles planning records until the queue is empty.
    async fn drain_planning(&self) {
        loop {
            let bodies = self.take_planning();
            if bodies.is_empty() {
                return;
            }
            for b in bodies {
                self.plan(&b).await;
            }
        }
    }

    /// Moves the clock past the current minute and dispatches the due index.
    async fn dispatch(&self) {
        self.clock.advance(Duration::seconds(61));
        dispatch::dispatch(
            self.s(),
            self.bulk.as_ref(),
            self.priority.as_ref(),
            self.clock.as_ref(),
            u64::MAX,
        )
        .await
        .unwrap();
    }

    /// Sends at most `batches` batches of 10 from the bulk queue; returns records handled.
    async fn send(&self, batches: usize) -> usize {
        let config = SendConfig::default();
        let deps = SenderDeps {
            store: self.s(),
            directory: self.directory.as_ref(),
            clock: self.clock.as_ref(),
            composer: &self.composer,
            config: &config,
        };
        let mut handled = 0;
        for _ in 0..batches {
            let got = self.bulk.receive(10).unwrap();
            if got.is_empty() {
                break;
            }
            let records: Vec<Incoming> = got
                .iter()
                .map(|r| Incoming {
                    id: r.id.clone(),
                    body: r.body.clone(),
                })
                .collect();
            let out = send::handle_batch(&deps, Lane::Bulk, &records).await;
            for (r, o) in got.iter().zip(out) {
                match o {
                    Outcome::Done => self.bulk.delete(&r.receipt).unwrap(),
                    Outcome::RetryAfter(s) => {
                        self.bulk.change_visibility(&r.receipt, s).await.unwrap()
                    }
                    Outcome::Failed => {}
                }
            }
            handled += records.len();
        }
        handled
    }

    async fn run_messages(&self, campaign: &str) -> Vec<MessageRecord> {
        let c = campaigns::load(self.s(), &self.ws, campaign).await.unwrap();
        let run = c.run_id.unwrap();
        let mut out = vec![];
        let mut cursor = None;
        loop {
            let page = self
                .s()
                .query(
                    Query::partition(messages::pk(&self.ws))
                        .limit(500)
                        .cursor(cursor),
                )
                .await
                .unwrap();
            for item in page.items {
                let m: MessageRecord = mailpilot_shared::usecases::from_item(item).unwrap();
                if m.tags.get("mp_run") == Some(&run) {
                    out.push(m);
                }
            }
            cursor = page.cursor;
            if cursor.is_none() {
                return out;
            }
        }
    }

    async fn status(&self, campaign: &str) -> campaigns::Campaign {
        campaigns::get(self.s(), &self.ws, campaign).await.unwrap()
    }

    fn sent_count(&self) -> usize {
        self.provider.sent.lock().unwrap().len()
    }
}

fn per_day_total(sent: &[(String, String, DateTime<Utc>)]) -> Vec<usize> {
    let mut days: BTreeMap<chrono::NaiveDate, usize> = BTreeMap::new();
    for (_, _, at) in sent {
        *days.entry(at.date_naive()).or_default() += 1;
    }
    days.into_values().collect()
}

fn by_state(msgs: &[MessageRecord]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for x in msgs {
        let k = match &x.reason {
            Some(r) if x.state == MessageState::Skipped || x.state == MessageState::Failed => {
                format!("{}({r})", x.state)
            }
            _ => x.state.to_string(),
        };
        *m.entry(k).or_default() += 1;
    }
    m
}

#[tokio::test]
async fn planning_skips_with_reasons_and_a_page_planned_twice_writes_nothing_new() {
    let w = World::new().await;
    let a = w.contacts(12, "a").await;
    let b = w.contacts(3, "b").await;
    // List 1: a0..a9; list 2: a8..a11 + b0 (a8, a9 duplicate); exclusion: b0.
    let l1 = w.list(&a[..10]).await;
    let l2 = w.list(&[&a[8..12], &b[..1]].concat()).await;
    let ex = w.list(&b[..1]).await;
    for (email, reason) in [
        ("a1@example.com", SuppressionReason::Manual),
        ("a2@example.com", SuppressionReason::Unsubscribed),
        ("a3@example.com", SuppressionReason::HardBounce),
        ("a4@example.com", SuppressionReason::Complaint),
    ] {
        suppressions::add(
            w.s(),
            &w.ws,
            suppressions::AddSuppression {
                email: email.into(),
                reason: Some(reason),
                source: None,
            },
        )
        .await
        .unwrap();
    }
    let id = w.campaign(&["snd_a"], &[l1, l2], &[ex]).await;
    let c = w.launch(&id).await;
    assert_eq!(c.state, CampaignState::Planning);
    let first = w.take_planning();
    assert_eq!(first.len(), 1);
    // The first attempt writes the page's messages and dies before saving progress.
    let lossy = LoseProgress {
        inner: w.store.clone(),
        armed: true.into(),
    };
    let deps = PlannerDeps {
        store: &lossy,
        ..w.planner()
    };
    let out = planner::handle_batch(
        &deps,
        &[Incoming {
            id: "r".into(),
            body: first[0].clone(),
        }],
    )
    .await;
    assert_eq!(out, vec![Outcome::RetryAfter(10)]);
    assert!(
        w.take_planning().is_empty(),
        "no next page without progress"
    );
    let after_crash = w.run_messages(&id).await.len();
    assert_eq!(after_crash, 10, "list 1's recipients are written");
    // Redelivered: the same page again writes no message and counts nothing twice.
    w.plan(&first[0]).await;
    assert_eq!(w.run_messages(&id).await.len(), 10);
    // Page 0 is list 1; the second task is list 2's page.
    let second = w.take_planning();
    w.plan(&second[0]).await;
    assert!(w.take_planning().is_empty(), "planning is done");

    let msgs = w.run_messages(&id).await;
    let states = by_state(&msgs);
    assert_eq!(states["skipped(suppressed)"], 1);
    assert_eq!(states["skipped(unsubscribed)"], 1);
    assert_eq!(states["skipped(bounced)"], 1);
    assert_eq!(states["skipped(complained)"], 1);
    assert_eq!(states["planned"], 8, "{states:?}"); // a0, a5..a11
    assert_eq!(msgs.len(), 12, "one message per recipient, none for b0");

    let status = w.status(&id).await;
    assert_eq!(status.state, CampaignState::Sending);
    let n = &status.runs[0].counts;
    assert_eq!(n.messages, 12);
    assert_eq!(n.skipped, 4);
    assert_eq!(n.skip_reasons["duplicate"], 2);
    assert_eq!(n.excluded, 1);
    assert_eq!(n.members, 15);
    assert_eq!(n.in_flight, 8);

    // Both pages again (redelivery): nothing is written, nothing counted twice.
    let writes = w.s().writes();
    w.plan(&first[0]).await;
    w.plan(&second[0]).await;
    assert_eq!(w.s().writes(), writes, "a re-planned page writes nothing");
    // A page whose progress was lost is planned again with no new message either.
    let before = w.run_messages(&id).await.len();
    let again = w.status(&id).await;
    assert_eq!(again.runs[0].counts.messages, 12);
    assert_eq!(again.runs[0].counts.skip_reasons["duplicate"], 2);
    assert_eq!(before, 12);

    // Everything planned goes out; the run completes.
    w.dispatch().await;
    w.send(10).await;
    assert_eq!(w.sent_count(), 8);
    let done = w.status(&id).await;
    assert_eq!(done.state, CampaignState::Completed);
    assert_eq!(done.runs[0].counts.sent, 8);
    assert_eq!(done.runs[0].progress, 1.0);
}

#[tokio::test]
async fn a_contact_suppressed_after_planning_is_skipped_at_send() {
    let w = World::new().await;
    let ids = w.contacts(5, "c").await;
    let l = w.list(&ids).await;
    let id = w.campaign(&["snd_a"], &[l], &[]).await;
    w.launch(&id).await;
    w.drain_planning().await;
    suppressions::add(
        w.s(),
        &w.ws,
        suppressions::AddSuppression {
            email: "c2@example.com".into(),
            reason: Some(SuppressionReason::Unsubscribed),
            source: None,
        },
    )
    .await
    .unwrap();
    w.dispatch().await;
    w.send(10).await;
    assert_eq!(w.sent_count(), 4);
    let states = by_state(&w.run_messages(&id).await);
    assert_eq!(states["skipped(unsubscribed)"], 1);
    let s = w.status(&id).await;
    assert_eq!(s.runs[0].counts.skip_reasons["unsubscribed"], 1);
    assert_eq!(s.state, CampaignState::Completed);
}

#[tokio::test]
async fn pause_stops_sending_within_one_batch_and_resume_sends_the_rest() {
    let w = World::new().await;
    let ids = w.contacts(40, "p").await;
    let l = w.list(&ids).await;
    let id = w.campaign(&["snd_a"], &[l], &[]).await;
    w.launch(&id).await;
    w.drain_planning().await;
    w.dispatch().await;
    w.send(1).await;
    assert_eq!(w.sent_count(), 10);
    let paused = campaigns::pause(w.s(), &w.ws, &id).await.unwrap();
    assert_eq!(paused.state, CampaignState::Paused);
    // Everything already in the send queue is parked, not sent.
    w.send(10).await;
    assert_eq!(w.sent_count(), 10, "nothing is sent after the pause");
    let states = by_state(&w.run_messages(&id).await);
    assert_eq!(states["deferred"], 30, "{states:?}");
    let r = campaigns::resume(&w.launch_deps(), &w.ws, &id)
        .await
        .unwrap();
    assert_eq!(r.state, CampaignState::Sending);
    w.drain_planning().await;
    w.dispatch().await;
    w.send(10).await;
    assert_eq!(w.sent_count(), 40);
    let s = w.status(&id).await;
    assert_eq!(s.state, CampaignState::Completed);
    assert_eq!(s.runs[0].counts.sent, 40);
    // Each contact got exactly one message.
    let mut to: Vec<String> = w
        .provider
        .sent
        .lock()
        .unwrap()
        .iter()
        .map(|x| x.0.clone())
        .collect();
    to.sort();
    to.dedup();
    assert_eq!(to.len(), 40);
}

#[tokio::test]
async fn cancel_leaves_no_message_unsent_but_live() {
    let w = World::new().await;
    let ids = w.contacts(30, "x").await;
    let l = w.list(&ids).await;
    let id = w.campaign(&["snd_a"], &[l], &[]).await;
    w.launch(&id).await;
    w.drain_planning().await;
    w.dispatch().await;
    w.send(1).await;
    assert_eq!(w.sent_count(), 10);
    let c = campaigns::cancel(&w.launch_deps(), &w.ws, &id)
        .await
        .unwrap();
    assert_eq!(c.state, CampaignState::Cancelled);
    w.drain_planning().await;
    let msgs = w.run_messages(&id).await;
    for m in &msgs {
        assert!(m.state.is_settled(), "{} is {} after cancel", m.id, m.state);
    }
    assert_eq!(by_state(&msgs)["skipped(cancelled)"], 20);
    // The records still in the send queue send nothing.
    w.send(10).await;
    assert_eq!(w.sent_count(), 10);
    let s = w.status(&id).await;
    assert_eq!(s.runs[0].counts.skip_reasons["cancelled"], 20);
    assert_eq!(s.runs[0].counts.in_flight, 0);
    // A cancelled campaign cannot be resumed or launched again.
    assert!(
        campaigns::resume(&w.launch_deps(), &w.ws, &id)
            .await
            .is_err()
    );
    assert!(
        campaigns::launch(&w.launch_deps(), &w.ws, &id, LaunchRequest::default())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn sender_pool_rotation_never_exceeds_any_senders_cap() {
    let w = World::new().await;
    for (s, cap) in [("snd_b", Some(4)), ("snd_c", Some(3)), ("snd_d", Some(2))] {
        w.directory.insert(&w.ws, route(s, w.provider.clone(), cap));
    }
    let ids = w.contacts(14, "r").await;
    let l = w.list(&ids).await;
    let id = w.campaign(&["snd_b", "snd_c", "snd_d"], &[l], &[]).await;
    w.launch(&id).await;
    w.drain_planning().await;
    // 9 a day (4 + 3 + 2): two days; run the clock day by day.
    for _ in 0..2 {
        for _ in 0..3 {
            w.dispatch().await;
            w.send(10).await;
        }
        let next = (w.clock.now() + Duration::days(1))
            .date_naive()
            .and_hms_opt(0, 0, 30)
            .unwrap();
        w.clock.advance_to(Utc.from_utc_datetime(&next));
    }
    for _ in 0..2 {
        w.dispatch().await;
        w.send(10).await;
    }
    let sent = w.provider.sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 14, "everyone is reached in the end");
    assert_eq!(per_day_total(&sent), vec![9, 5]);
    let mut per_day: HashMap<(String, chrono::NaiveDate), u64> = HashMap::new();
    for (_, from, at) in &sent {
        *per_day.entry((from.clone(), at.date_naive())).or_default() += 1;
    }
    let caps = HashMap::from([
        ("snd_b@sender.example", 4),
        ("snd_c@sender.example", 3),
        ("snd_d@sender.example", 2),
    ]);
    for ((from, day), n) in &per_day {
        assert!(*n <= caps[from.as_str()], "{from} sent {n} on {day}");
    }
    assert_eq!(w.status(&id).await.state, CampaignState::Completed);
}

#[tokio::test]
async fn a_scheduled_launch_fires_once_and_never_after_cancel() {
    let w = World::new().await;
    let ids = w.contacts(5, "s").await;
    let l = w.list(&ids).await;
    let id = w.campaign(&["snd_a"], std::slice::from_ref(&l), &[]).await;
    let at = w.clock.now() + Duration::hours(2);
    let c = campaigns::launch(&w.launch_deps(), &w.ws, &id, LaunchRequest { at: Some(at) })
        .await
        .unwrap();
    assert_eq!(c.state, CampaignState::Scheduled);
    assert_eq!(c.runs[0].scheduled_for, Some(at));
    assert_eq!(w.scheduler.pending().await.unwrap().len(), 1);
    assert!(
        w.take_planning().is_empty(),
        "nothing is planned before the time"
    );
    // Edits are refused once scheduled.
    let e = campaigns::patch(
        w.s(),
        &w.ws,
        &id,
        CampaignPatch {
            name: Some("x".into()),
            ..Default::default()
        },
    )
    .await;
    assert!(e.is_err());
    // Not yet due: nothing fires.
    assert_eq!(
        w.scheduler
            .take_due(w.clock.now(), w.planning.as_ref())
            .await
            .unwrap(),
        0
    );
    w.clock.advance(Duration::hours(2));
    assert_eq!(
        w.scheduler
            .take_due(w.clock.now(), w.planning.as_ref())
            .await
            .unwrap(),
        1
    );
    assert!(
        w.scheduler.pending().await.unwrap().is_empty(),
        "deleted after firing"
    );
    let fired = w.take_planning();
    assert_eq!(fired.len(), 1);
    let task: PlanTask = serde_json::from_str(&fired[0]).unwrap();
    assert!(task.fire);
    // The event twice: planned once.
    w.plan(&fired[0]).await;
    w.drain_planning().await;
    let writes = w.s().writes();
    w.plan(&fired[0]).await;
    assert_eq!(w.s().writes(), writes, "a second fire does nothing");
    assert_eq!(w.run_messages(&id).await.len(), 5);

    // Another campaign scheduled, then cancelled: its event plans nothing.
    let id2 = w.campaign(&["snd_a"], &[l], &[]).await;
    campaigns::launch(
        &w.launch_deps(),
        &w.ws,
        &id2,
        LaunchRequest {
            at: Some(w.clock.now() + Duration::hours(1)),
        },
    )
    .await
    .unwrap();
    let pending = w.scheduler.pending().await.unwrap();
    assert_eq!(pending.len(), 1);
    // Keep the event the schedule would deliver, then cancel.
    let c2 = campaigns::load(w.s(), &w.ws, &id2).await.unwrap();
    let event = serde_json::to_string(&PlanTask {
        ws: w.ws.clone(),
        campaign: id2.clone(),
        run: c2.run_id.clone().unwrap(),
        page: 0,
        fire: true,
        sweep: None,
    })
    .unwrap();
    campaigns::cancel(&w.launch_deps(), &w.ws, &id2)
        .await
        .unwrap();
    assert!(
        w.scheduler.pending().await.unwrap().is_empty(),
        "cancel deletes the schedule"
    );
    w.drain_planning().await;
    w.plan(&event).await;
    assert!(w.take_planning().is_empty());
    assert!(
        w.run_messages(&id2).await.is_empty(),
        "nothing planned after cancel"
    );
}

#[tokio::test]
async fn retry_failed_requeues_failures_once() {
    let w = World::new().await;
    let ids = w.contacts(4, "f").await;
    let l = w.list(&ids).await;
    w.provider
        .refuse
        .lock()
        .unwrap()
        .push("f1@example.com".into());
    let id = w.campaign(&["snd_a"], &[l], &[]).await;
    w.launch(&id).await;
    w.drain_planning().await;
    w.dispatch().await;
    w.send(10).await;
    let s = w.status(&id).await;
    assert_eq!(s.state, CampaignState::Completed);
    assert_eq!(s.runs[0].counts.failed, 1);
    assert_eq!(s.runs[0].counts.failure_reasons["permanent"], 1);
    let failed = campaigns::messages(w.s(), &w.ws, &id, Some(MessageState::Failed), 50, None)
        .await
        .unwrap();
    assert_eq!(failed.data.len(), 1);
    assert_eq!(failed.data[0].to, "f1@example.com");

    w.provider.refuse.lock().unwrap().clear();
    campaigns::retry_failed(&w.launch_deps(), &w.ws, &id)
        .await
        .unwrap();
    w.drain_planning().await;
    assert_eq!(w.status(&id).await.state, CampaignState::Sending);
    let cp = dispatch::checkpoint(w.s(), w.clock.now()).await.unwrap();
    eprintln!("cp {cp:?} now {}", dispatch::minute_of(w.clock.now()));
    let mut total = 0;
    for sh in 0..32 {
        total += w
            .s()
            .query(Query::partition(dispatch::due_pk(cp.accept_from, sh)))
            .await
            .unwrap()
            .items
            .len();
    }
    eprintln!("entries {total}");
    w.clock.advance(Duration::seconds(61));
    let r = dispatch::dispatch(
        w.s(),
        w.bulk.as_ref(),
        w.priority.as_ref(),
        w.clock.as_ref(),
        u64::MAX,
    )
    .await;
    eprintln!("dispatch {r:?}");
    let n = w.send(10).await;
    eprintln!(
        "handled {n}, bulk {} {:?}",
        w.bulk.len(),
        by_state(&w.run_messages(&id).await)
    );
    for m in w.run_messages(&id).await {
        eprintln!("due {:?} {}", m.due_at, dispatch::shard_of(&m.id));
    }
    assert_eq!(w.sent_count(), 4);
    let s = w.status(&id).await;
    assert_eq!(s.state, CampaignState::Completed);
    assert_eq!(s.runs[0].counts.failed, 0);
    assert_eq!(s.runs[0].counts.sent, 4);
}

#[tokio::test]
async fn preflight_reports_the_audience_and_writes_nothing() {
    let w = World::new().await;
    w.directory
        .insert(&w.ws, route("snd_b", w.provider.clone(), Some(2)));
    let ids = w.contacts(6, "q").await;
    let l = w.list(&ids).await;
    suppressions::add(
        w.s(),
        &w.ws,
        suppressions::AddSuppression {
            email: "q0@example.com".into(),
            reason: None,
            source: None,
        },
    )
    .await
    .unwrap();
    let id = w.campaign(&["snd_b", "snd_missing"], &[l], &[]).await;
    let writes = w.s().writes();
    let p = planner::preflight(
        w.s(),
        w.directory.as_ref(),
        &w.ws,
        &id,
        w.clock.now(),
        &w.composer.link_keys,
        &w.composer.public_url,
    )
    .await
    .unwrap();
    assert_eq!(w.s().writes(), writes);
    assert_eq!(p.members, 6);
    assert_eq!(p.recipients, 5);
    assert_eq!(p.skip_reasons["suppressed"], 1);
    assert!(
        p.warnings.iter().any(|w| w.contains("snd_missing")),
        "{:?}",
        p.warnings
    );
    assert!(p.estimated_cost_usd > 0.0);
    assert!(p.eta.is_some());
    assert_eq!(p.per_sender.values().sum::<i64>(), 5);
}

// ---- over HTTP through the runner ----------------------------------------------------

#[tokio::test]
async fn a_campaign_goes_from_lists_to_the_outbox_through_the_runner_over_http() {
    use mailpilot_runner::{DeliverySettings, Settings};
    use mailpilot_shared::usecases::senders::LOCAL_SENDER_ID;
    use mailpilot_tests::app::spawn_app_with;
    use reqwest::StatusCode;
    use serde_json::json;

    let clock = Arc::new(ManualClock::new(Utc::now()));
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
    let mut ids = vec![];
    for i in 0..3 {
        ids.push(app.contact(&format!("reader{i}@example.com")).await);
    }
    let list = app.post("/v1/lists", json!({"name": "Readers"})).await;
    let list_id = list.body["id"].as_str().unwrap().to_string();
    let m = app
        .post(
            &format!("/v1/lists/{list_id}/members"),
            json!({"contact_ids": ids}),
        )
        .await;
    assert_eq!(m.body["changed"], 3);

    // Validation names the fields.
    let bad = app
        .post(
            "/v1/campaigns",
            json!({"name": " ", "sender_ids": ["ok", "ok"], "list_ids": ["ls_nope"], "subject": "s"}),
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.body);
    let fields: Vec<&str> = bad.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    for f in ["/name", "/sender_ids/1", "/list_ids/0", "/html"] {
        assert!(fields.contains(&f), "{f} missing from {fields:?}");
    }

    let c = app
        .post(
            "/v1/campaigns",
            json!({"name": "Weekly", "sender_id": LOCAL_SENDER_ID, "list_ids": [list_id],
                   "subject": "This week", "text": "News", "html": "<p>News</p>"}),
        )
        .await;
    assert_eq!(c.status, StatusCode::CREATED, "{}", c.body);
    assert_eq!(c.body["state"], "draft");
    let id = c.body["id"].as_str().unwrap().to_string();
    assert_eq!(
        c.headers["location"].to_str().unwrap(),
        format!("/v1/campaigns/{id}")
    );

    let p = app
        .post(&format!("/v1/campaigns/{id}/preflight"), json!({}))
        .await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    assert_eq!(p.body["recipients"], 3);

    let l = app
        .post(&format!("/v1/campaigns/{id}/launch"), json!({}))
        .await;
    assert_eq!(l.status, StatusCode::ACCEPTED, "{}", l.body);
    assert_eq!(l.body["state"], "planning");
    // A launched campaign is no longer editable.
    let e = app
        .patch(&format!("/v1/campaigns/{id}"), json!({"name": "x"}))
        .await;
    assert_eq!(e.status, StatusCode::CONFLICT, "{}", e.body);

    // The runner's planning worker plans in the background.
    app.wait_planned(&id).await;
    app.engine()
        .drain(Some(clock.now() + Duration::minutes(5)))
        .await
        .unwrap();

    let s = app.get(&format!("/v1/campaigns/{id}")).await;
    assert_eq!(s.body["state"], "completed", "{}", s.body);
    assert_eq!(s.body["runs"][0]["counts"]["sent"], 3);
    assert_eq!(s.body["runs"][0]["progress"], 1.0);
    let sent = app
        .get(&format!("/v1/campaigns/{id}/messages?state=sent"))
        .await;
    assert_eq!(
        sent.body["data"].as_array().unwrap().len(),
        3,
        "{}",
        sent.body
    );
    let outbox = app.get("/v1/outbox").await;
    assert_eq!(outbox.status, StatusCode::OK, "{}", outbox.body);
    let in_outbox: Vec<&str> = outbox.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["message_id"].as_str())
        .collect();
    for m in sent.body["data"].as_array().unwrap() {
        assert!(
            in_outbox.contains(&m["id"].as_str().unwrap()),
            "{} is in the outbox: {}",
            m["id"],
            outbox.body
        );
    }
    let bad_state = app
        .get(&format!("/v1/campaigns/{id}/messages?state=nope"))
        .await;
    assert_eq!(bad_state.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_template_campaign_pins_its_version_and_renders_per_recipient() {
    use mailpilot_runner::{DeliverySettings, Settings};
    use mailpilot_shared::usecases::senders::LOCAL_SENDER_ID;
    use mailpilot_tests::app::spawn_app_with;
    use reqwest::StatusCode;
    use serde_json::json;

    let clock = Arc::new(ManualClock::new(Utc::now()));
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
    let mut ids = vec![];
    for (email, name) in [("ana@example.com", Some("Ana")), ("bo@example.com", None)] {
        let mut body = json!({ "email": email });
        if let Some(n) = name {
            body["first_name"] = json!(n);
        }
        let c = app.post("/v1/contacts", body).await;
        assert_eq!(c.status, StatusCode::CREATED, "{}", c.body);
        ids.push(c.body["id"].as_str().unwrap().to_string());
    }
    let list = app.post("/v1/lists", json!({"name": "Readers"})).await;
    let list_id = list.body["id"].as_str().unwrap().to_string();
    app.post(
        &format!("/v1/lists/{list_id}/members"),
        json!({"contact_ids": ids}),
    )
    .await;
    // Version 1 (published): the subject greets by first name. No unsubscribe link:
    // a template warning the preflight passes on.
    let t = app
        .post(
            "/v1/templates",
            json!({"name": "News", "subject": "Hi {{first_name}} from {{campaign.name}}",
                   "html": "<p>Hello {{first_name}}</p>"}),
        )
        .await;
    assert_eq!(t.status, StatusCode::CREATED, "{}", t.body);
    let tid = t.body["id"].as_str().unwrap().to_string();

    // Template and inline content exclude each other; an unknown template is named.
    for (body, field) in [
        (
            json!({"name": "W", "sender_id": LOCAL_SENDER_ID, "list_ids": [list_id],
                   "template_id": tid, "subject": "x"}),
            "/subject",
        ),
        (
            json!({"name": "W", "sender_id": LOCAL_SENDER_ID, "list_ids": [list_id],
                   "template_id": "tpl_nope"}),
            "/template_id",
        ),
        (
            json!({"name": "W", "sender_id": LOCAL_SENDER_ID, "list_ids": [list_id],
                   "template_id": tid, "template_version": 7}),
            "/template_version",
        ),
    ] {
        let bad = app.post("/v1/campaigns", body).await;
        assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.body);
        assert_eq!(bad.body["errors"][0]["field"], field, "{}", bad.body);
    }

    let c = app
        .post(
            "/v1/campaigns",
            json!({"name": "Weekly", "sender_id": LOCAL_SENDER_ID, "list_ids": [list_id],
                   "template_id": tid, "tracking": false}),
        )
        .await;
    assert_eq!(c.status, StatusCode::CREATED, "{}", c.body);
    assert_eq!(c.body["template_id"], tid.as_str());
    assert!(c.body["subject"].is_null());
    let id = c.body["id"].as_str().unwrap().to_string();

    let p = app
        .post(&format!("/v1/campaigns/{id}/preflight"), json!({}))
        .await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    assert_eq!(p.body["template"]["version"], 1, "{}", p.body);
    let samples = p.body["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 2, "{}", p.body);
    let subjects: Vec<&str> = samples
        .iter()
        .map(|s| s["subject"].as_str().unwrap())
        .collect();
    assert!(subjects.contains(&"Hi Ana from Weekly"), "{subjects:?}");
    let bo = samples
        .iter()
        .find(|s| s["email"] == "bo@example.com")
        .unwrap();
    assert_eq!(bo["missing_variables"], json!(["first_name"]), "{bo}");
    let codes: Vec<&str> = p.body["template_warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["code"].as_str().unwrap())
        .collect();
    assert!(codes.contains(&"no_unsubscribe_link"), "{codes:?}");

    // A test copy: the transactional lane, marked, outside the campaign's counts.
    let t = app
        .post(
            &format!("/v1/campaigns/{id}/test"),
            json!({"to": "qa@example.com"}),
        )
        .await;
    assert_eq!(t.status, StatusCode::ACCEPTED, "{}", t.body);
    assert_eq!(
        t.body["tags"]["mp_campaign_test"],
        id.as_str(),
        "{}",
        t.body
    );
    let bad = app
        .post(&format!("/v1/campaigns/{id}/test"), json!({"to": "nope"}))
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.body);
    assert_eq!(bad.body["errors"][0]["field"], "/to");

    let l = app
        .post(&format!("/v1/campaigns/{id}/launch"), json!({}))
        .await;
    assert_eq!(l.status, StatusCode::ACCEPTED, "{}", l.body);
    assert_eq!(l.body["runs"][0]["template"]["version"], 1, "{}", l.body);
    // A version saved and published after the launch does not change this run.
    let v2 = app
        .patch(
            &format!("/v1/templates/{tid}"),
            json!({"subject": "Changed", "publish": true}),
        )
        .await;
    assert_eq!(v2.status, StatusCode::OK, "{}", v2.body);

    app.wait_planned(&id).await;
    app.engine()
        .drain(Some(clock.now() + Duration::minutes(5)))
        .await
        .unwrap();
    let s = app.get(&format!("/v1/campaigns/{id}")).await;
    assert_eq!(s.body["state"], "completed", "{}", s.body);
    assert_eq!(s.body["runs"][0]["counts"]["sent"], 2, "{}", s.body);
    let outbox = app.get("/v1/outbox").await;
    let mut subjects: Vec<String> = outbox.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["subject"].as_str())
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    subjects.sort_unstable();
    assert_eq!(
        subjects,
        vec![
            "Hi Ana from Weekly",
            "Hi from Weekly",
            "[Test] Hi from Weekly"
        ],
        "{}",
        outbox.body
    );
}
