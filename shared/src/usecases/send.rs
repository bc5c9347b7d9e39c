//! The sender: what happens to a batch of send-queue records (the SQS-triggered
//! function and the runner's workers both call [`handle_batch`]).
//!
//! Per message: claim it with a conditional state change (a duplicate record finds it
//! claimed or settled and sends nothing); re-check suppression; outside the sending
//! window → `deferred` into the due index (a transaction with the checkpoint check);
//! take units of the sender's and the workspace's daily caps (over a cap → `deferred`
//! to the next day) and of the connection's per-second rate, once per batch and sender
//! (not once per message: a hot counter item takes ~1,000 writes/s); compose; send;
//! record `sent` with the provider's id and a pointer item from that id to the message.
//! Transient errors go back to the queue with a growing delay until
//! [`MAX_ATTEMPTS`](crate::model::message::MAX_ATTEMPTS); permanent ones fail at once;
//! a sender-level error pauses the sender and fails the message `sender_paused`.
//!
//! The crash window: a claim carries a lease. A record that finds its message still
//! `sending` after the lease ended belongs to a process that died after the claim, maybe
//! after the provider accepted the message. It is never sent again, unless the provider
//! deduplicates by our idempotency key (Resend, within [`KEY_WINDOW_HOURS`] of the first
//! call): it ends `failed(unknown_outcome)`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use chrono_tz::Tz;
use rand::Rng;

use super::dispatch::{self, DueEntry};
use super::messages::{
    self, Composer, MessageRecord, RenderSpec, SendRecord, TransitionError, transition,
};
use super::suppressions;
use crate::error::{AppError, AppResult};
use crate::keys;
use crate::mime::{self, Mailbox, MimeError};
use crate::model::message::{
    DeferReason, FailReason, MAX_ATTEMPTS, MessageState, SkipReason, Transition, retry_delay_secs,
};
use crate::model::sender::{DailyCap, SendingWindow, cap_day};
use crate::ports::clock::Clock;
use crate::ports::provider::{OutgoingMessage, Provider, SendError};
use crate::ports::queue::Lane;
use crate::ports::store::{Cond, ItemExt, Key, Store, StoreError, TTL, TxAction, Update, val};

/// Everything the sender needs to know about a sender profile and its connection.
#[derive(Clone)]
pub struct Route {
    pub sender_id: String,
    pub from: Mailbox,
    pub reply_to: Option<Mailbox>,
    pub connection_id: String,
    pub provider: Arc<dyn Provider>,
    /// Sends per second the connection allows (shared by all its senders); `None`: no limit.
    pub rate_per_sec: Option<u32>,
    pub sender_tz: Tz,
    pub window: Option<SendingWindow>,
    pub sender_cap: Option<DailyCap>,
    /// The workspace's daily cap (counted per UTC day).
    pub workspace_cap: Option<u64>,
    /// Paused after a sender-level provider error.
    pub paused: bool,
}

/// Where sender profiles and connections come from (the providers use cases in the
/// product; a fixed map in tests).
#[async_trait]
pub trait Directory: Send + Sync {
    async fn route(&self, ws: &str, sender_id: &str) -> AppResult<Option<Route>>;
    /// The provider refused the sender itself: stop sending from it until an operator
    /// fixes and resumes it.
    async fn pause(&self, ws: &str, sender_id: &str, reason: &str) -> AppResult<()>;
}

/// Tunables of the sender.
#[derive(Debug, Clone)]
pub struct SendConfig {
    /// How long a claim holds; below the queue's visibility timeout, so a record
    /// redelivered after a crash finds the lease ended.
    pub lease_secs: i64,
    pub max_attempts: u32,
    /// Share of a connection's rate that bulk mail may use, in percent: the rest is kept
    /// for transactional mail.
    pub bulk_rate_percent: u32,
    /// How long to wait for a rate unit before handing the record back.
    pub rate_wait_tries: u32,
}

impl Default for SendConfig {
    fn default() -> Self {
        Self {
            lease_secs: 120,
            max_attempts: MAX_ATTEMPTS,
            bulk_rate_percent: 90,
            rate_wait_tries: 20,
        }
    }
}

pub struct SenderDeps<'a> {
    pub store: &'a dyn Store,
    pub directory: &'a dyn Directory,
    pub clock: &'a dyn Clock,
    pub composer: &'a Composer,
    pub config: &'a SendConfig,
}

/// One received record.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub id: String,
    pub body: String,
}

/// What to do with a record after the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Delete it: the message is settled, claimed elsewhere for good, or waiting in the
    /// due index.
    Done,
    /// Hand it back, visible again after this many seconds.
    RetryAfter(u64),
    /// Report it failed (the queue redelivers it after the visibility timeout and
    /// dead-letters it after `maxReceiveCount`).
    Failed,
}

/// A message this batch holds a claim on.
struct Claimed {
    index: usize,
    m: MessageRecord,
    /// What it renders from: the record's (transactional), else the message's own.
    render: Option<RenderSpec>,
    /// Already rendered (a campaign run's pinned template, rendered for this contact).
    rendered: Option<super::templates::RenderedMessage>,
}

/// Handles one batch of records from a send queue.
pub async fn handle_batch(deps: &SenderDeps<'_>, lane: Lane, records: &[Incoming]) -> Vec<Outcome> {
    // Campaign counters: one write per run per batch.
    super::campaigns::counting(deps.store, handle_records(deps, lane, records)).await
}

async fn handle_records(deps: &SenderDeps<'_>, lane: Lane, records: &[Incoming]) -> Vec<Outcome> {
    let mut outcomes = vec![Outcome::Failed; records.len()];
    let mut seen = HashSet::new();
    let mut claimed = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let Ok(rec) = serde_json::from_str::<SendRecord>(&r.body) else {
            tracing::warn!(record = %r.id, "a send record that does not parse");
            continue;
        };
        if !seen.insert((rec.ws.clone(), rec.msg.clone())) {
            // The same message twice in one batch: one record is enough.
            outcomes[i] = Outcome::Done;
            continue;
        }
        match claim(deps, &rec).await {
            Ok(Claim::Claimed(m)) => {
                let render = rec
                    .render
                    .or_else(|| rec.content.as_ref().map(RenderSpec::from))
                    .or_else(|| m.render.clone())
                    .or_else(|| m.content.as_ref().map(RenderSpec::from));
                claimed.push(Claimed {
                    index: i,
                    m: *m,
                    render,
                    rendered: None,
                })
            }
            Ok(Claim::Outcome(o)) => outcomes[i] = o,
            Err(e) => {
                tracing::warn!(error = %e, msg = %rec.msg, "claiming failed");
                outcomes[i] = Outcome::RetryAfter(5);
            }
        }
    }
    if claimed.is_empty() {
        return outcomes;
    }
    for (index, outcome) in send_claimed(deps, lane, claimed).await {
        outcomes[index] = outcome;
    }
    outcomes
}

enum Claim {
    Claimed(Box<MessageRecord>),
    Outcome(Outcome),
}

fn secs_until(t: DateTime<Utc>, now: DateTime<Utc>) -> u64 {
    (t - now).num_seconds().max(1) as u64
}

/// Claims the message of a record, or says what to do with the record instead.
async fn claim(deps: &SenderDeps<'_>, rec: &SendRecord) -> AppResult<Claim> {
    for _ in 0..5 {
        let now = deps.clock.now();
        let Some(m) = messages::load(deps.store, &rec.ws, &rec.msg).await? else {
            // Gone (retention, a deleted workspace, or taken back after a failed enqueue).
            return Ok(Claim::Outcome(Outcome::Done));
        };
        let lease_ended = m.lease_until.is_none_or(|l| l <= now);
        match m.state {
            s if s.is_settled() => return Ok(Claim::Outcome(Outcome::Done)),
            MessageState::Sending if !lease_ended => {
                let until = m.lease_until.unwrap_or(now);
                return Ok(Claim::Outcome(Outcome::RetryAfter(secs_until(until, now))));
            }
            MessageState::Sending => {
                // The crash window: whoever claimed it died. Resend only through a
                // provider that deduplicates by our key.
                let dedup = match deps.directory.route(&rec.ws, &m.sender_id).await? {
                    Some(route) => route.provider.deduplicates() && within_key_window(&m, now),
                    None => false,
                };
                if !dedup {
                    match transition(
                        deps.store,
                        &m,
                        Transition::Fail(FailReason::UnknownOutcome),
                        now,
                        |_| {},
                    )
                    .await
                    {
                        Ok(_) => return Ok(Claim::Outcome(Outcome::Done)),
                        Err(TransitionError::Conflict) => continue,
                        Err(e) => return Err(to_app(e)),
                    }
                }
                match reclaim(deps, &m, now).await {
                    Ok(m) => return Ok(Claim::Claimed(Box::new(m))),
                    Err(TransitionError::Conflict) => continue,
                    Err(e) => return Err(to_app(e)),
                }
            }
            MessageState::Planned | MessageState::Deferred if m.due_at.is_some_and(|d| d > now) => {
                // Not due: the due index hands it over when it is.
                return Ok(Claim::Outcome(Outcome::Done));
            }
            MessageState::Queued if m.not_before.is_some_and(|t| t > now) => {
                let t = m.not_before.unwrap_or(now);
                return Ok(Claim::Outcome(Outcome::RetryAfter(secs_until(t, now))));
            }
            _ => {}
        }
        let token = claim_token();
        let lease = now + Duration::seconds(deps.config.lease_secs);
        let m = if m.state != MessageState::Queued {
            // Bulk messages reach the queue without a write (the dispatcher only
            // enqueues); the claim records the `queued` step with it.
            let mut q = m.clone();
            q.timeline.push(messages::TimelineEntry {
                state: MessageState::Queued,
                at: now,
                reason: None,
            });
            q
        } else {
            m
        };
        match transition(deps.store, &m, Transition::Claim, now, |n| {
            n.claim = Some(token.clone());
            n.lease_until = Some(lease);
            n.not_before = None;
        })
        .await
        {
            Ok(m) => return Ok(Claim::Claimed(Box::new(m))),
            Err(TransitionError::Conflict) => continue,
            Err(e) => return Err(to_app(e)),
        }
    }
    Ok(Claim::Outcome(Outcome::RetryAfter(5)))
}

/// How long after its first use a deduplicating provider's idempotency key is trusted:
/// Resend keeps keys 24 hours; an hour is kept as a margin for clocks and slow calls.
pub const KEY_WINDOW_HOURS: i64 = 23;

/// Whether the message's first provider call (its first `sending`, else its creation:
/// earlier, so on the safe side) is recent enough that the provider still knows the key.
/// Past it, a call with the same key could deliver a second copy.
fn within_key_window(m: &MessageRecord, now: DateTime<Utc>) -> bool {
    let first = m
        .timeline
        .iter()
        .find(|t| t.state == MessageState::Sending)
        .map_or(m.created_at, |t| t.at);
    now - first < Duration::hours(KEY_WINDOW_HOURS)
}

async fn reclaim(
    deps: &SenderDeps<'_>,
    m: &MessageRecord,
    now: DateTime<Utc>,
) -> Result<MessageRecord, TransitionError> {
    // sending → sending is not a state change: a new claim and lease on the same state.
    let token = claim_token();
    let lease = now + Duration::seconds(deps.config.lease_secs);
    let update = Update::new()
        .set("claim", val::s(&token))
        .set(
            "lease_until",
            serde_dynamo::to_attribute_value(lease).map_err(AppError::from)?,
        )
        .set("version", val::n(m.version as i64 + 1));
    deps.store
        .update(
            &messages::key(&m.workspace_id, &m.id),
            update,
            Some(Cond::eq("version", val::n(m.version as i64))),
        )
        .await?;
    let mut next = m.clone();
    next.claim = Some(token);
    next.lease_until = Some(lease);
    next.version += 1;
    Ok(next)
}

fn claim_token() -> String {
    format!("{:016x}", rand::rng().random::<u64>())
}

fn to_app(e: TransitionError) -> AppError {
    match e {
        TransitionError::App(e) => e,
        other => AppError::internal(other),
    }
}

/// Ends a claimed message with a transition; a conflict means someone settled it.
async fn settle(
    deps: &SenderDeps<'_>,
    m: &MessageRecord,
    t: Transition,
    edit: impl FnOnce(&mut MessageRecord),
) -> Outcome {
    match transition(deps.store, m, t, deps.clock.now(), edit).await {
        Ok(_) | Err(TransitionError::Conflict) | Err(TransitionError::Invalid(_)) => Outcome::Done,
        Err(TransitionError::App(e)) => {
            tracing::warn!(error = %e, msg = %m.id, "recording a message's state failed");
            Outcome::RetryAfter(5)
        }
    }
}

/// Defers a claimed message to `until` (the message update and its due entry in one
/// transaction that also checks the dispatcher has not closed the minute).
async fn defer(
    deps: &SenderDeps<'_>,
    m: &MessageRecord,
    reason: DeferReason,
    until: DateTime<Utc>,
) -> Outcome {
    let entry = DueEntry {
        ws: m.workspace_id.clone(),
        message_id: m.id.clone(),
        lane: m.lane,
        due: until,
    };
    for _ in 0..5 {
        let result: AppResult<()> = async {
            let now = deps.clock.now();
            let cp = dispatch::checkpoint(deps.store, now).await?;
            let (_, update) = transition_update(m, Transition::Defer(reason), now, until)?;
            let mut actions = vec![update];
            actions.extend(dispatch::defer_actions(&entry, &cp));
            deps.store.transact(actions).await?;
            Ok(())
        }
        .await;
        match result {
            Ok(()) => return Outcome::Done,
            Err(AppError::Store(StoreError::TransactionCanceled { failed }))
                if failed.first() == Some(&true) =>
            {
                return Outcome::Done; // the message changed under us: settled elsewhere
            }
            Err(AppError::Store(StoreError::TransactionCanceled { .. })) => continue,
            Err(e) => {
                tracing::warn!(error = %e, msg = %m.id, "deferring failed");
                return Outcome::RetryAfter(5);
            }
        }
    }
    Outcome::RetryAfter(5)
}

/// The deferral as a transaction action (same fields `messages::transition` writes).
fn transition_update(
    m: &MessageRecord,
    t: Transition,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
) -> AppResult<(MessageRecord, TxAction)> {
    let state = crate::model::message::next_state(m.state, &t, None, m.retried)
        .map_err(AppError::internal)?;
    let reason = crate::model::message::reason_of(&t);
    let mut timeline = m.timeline.clone();
    timeline.push(messages::TimelineEntry {
        state,
        at: now,
        reason: reason.clone(),
    });
    let update = Update::new()
        .set("state", val::s(state.as_str()))
        .set("reason", val::s(reason.clone().unwrap_or_default()))
        .set("timeline", serde_dynamo::to_attribute_value(&timeline)?)
        .set("due_at", serde_dynamo::to_attribute_value(until)?)
        .set("updated_at", serde_dynamo::to_attribute_value(now)?)
        .set("version", val::n(m.version as i64 + 1))
        .remove("claim")
        .remove("lease_until");
    let mut next = m.clone();
    next.state = state;
    next.reason = reason;
    next.timeline = timeline;
    next.due_at = Some(until);
    next.version += 1;
    Ok((
        next,
        TxAction::Update {
            key: messages::key(&m.workspace_id, &m.id),
            update,
            cond: Some(Cond::eq("version", val::n(m.version as i64))),
        },
    ))
}

fn counter_key(ws: &str, sk: String) -> Key {
    Key::new(keys::ws(ws, keys::COUNTERS), sk)
}

/// Takes up to `n` units of a counter limited to `cap` (missing = 0). Returns how many
/// it got. One write in the common case; a contended or nearly full counter is read
/// and taken with a condition on the value read.
pub async fn take_units(
    store: &dyn Store,
    key: &Key,
    n: u64,
    cap: Option<u64>,
    expires: i64,
) -> AppResult<u64> {
    if n == 0 {
        return Ok(0);
    }
    let add = |k: u64| {
        Update::new()
            .add("count", k as i64)
            .set(TTL, val::n(expires))
    };
    let Some(cap) = cap else {
        store.update(key, add(n), None).await?;
        return Ok(n);
    };
    if cap >= n {
        let cond = Cond::Or(vec![
            Cond::AttrNotExists("count".into()),
            Cond::le("count", val::n((cap - n) as i64)),
        ]);
        match store.update(key, add(n), Some(cond)).await {
            Ok(_) => return Ok(n),
            Err(StoreError::ConditionFailed) => {}
            Err(e) => return Err(e.into()),
        }
    }
    for _ in 0..5 {
        let used = store
            .get(key)
            .await?
            .and_then(|i| i.num_attr("count"))
            .unwrap_or(0)
            .max(0) as u64;
        let k = cap.saturating_sub(used).min(n);
        if k == 0 {
            return Ok(0);
        }
        let cond = if used == 0 {
            Cond::Or(vec![
                Cond::AttrNotExists("count".into()),
                Cond::eq("count", val::n(0)),
            ])
        } else {
            Cond::eq("count", val::n(used as i64))
        };
        match store.update(key, add(k), Some(cond)).await {
            Ok(_) => return Ok(k),
            Err(StoreError::ConditionFailed) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(0)
}

async fn give_back(store: &dyn Store, key: &Key, n: u64) {
    if n > 0
        && let Err(e) = store
            .update(key, Update::new().add("count", -(n as i64)), None)
            .await
    {
        tracing::warn!(error = %e, "returning counter units failed");
    }
}

/// The next time the sender may send after its cap day `day` ends.
fn next_day_opening(route: &Route, day: NaiveDate, recipient_tz: Option<Tz>) -> DateTime<Utc> {
    let start = day
        .succ_opt()
        .map(|d| {
            crate::model::sender::local_instant(
                route.sender_tz,
                d.and_hms_opt(0, 0, 0).unwrap_or_default(),
            )
        })
        .unwrap_or_else(Utc::now);
    match &route.window {
        Some(w) => w.next_opening(start, recipient_tz),
        None => start,
    }
}

fn parse_tz(tz: Option<&str>) -> Option<Tz> {
    tz.and_then(|t| t.parse().ok())
}

/// Sends the claimed messages of one batch. Returns (record index, outcome).
async fn send_claimed(
    deps: &SenderDeps<'_>,
    lane: Lane,
    claimed: Vec<Claimed>,
) -> Vec<(usize, Outcome)> {
    let mut out = Vec::new();
    let now = deps.clock.now();
    // Routes, once per sender of the batch.
    let mut routes: HashMap<(String, String), Option<Route>> = HashMap::new();
    for c in &claimed {
        let k = (c.m.workspace_id.clone(), c.m.sender_id.clone());
        if let std::collections::hash_map::Entry::Vacant(v) = routes.entry(k) {
            match deps
                .directory
                .route(&c.m.workspace_id, &c.m.sender_id)
                .await
            {
                Ok(r) => {
                    v.insert(r);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "loading a sender failed");
                }
            }
        }
    }
    // Suppressions, batched per workspace.
    let mut by_ws: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for c in &claimed {
        by_ws
            .entry(c.m.workspace_id.clone())
            .or_default()
            .push(c.m.to.clone());
    }
    let mut suppressed = HashMap::new();
    for (ws, emails) in &by_ws {
        match suppressions::reasons_for(deps.store, ws, emails).await {
            Ok(found) => {
                for (email, reason) in found {
                    suppressed.insert((ws.clone(), email), reason);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading suppressions failed");
                // Without the suppression truth nothing may go out: hand all back.
                for c in claimed {
                    out.push((c.index, release(deps, &c.m).await));
                }
                return out;
            }
        }
    }
    // Campaign messages: the campaign's state (paused, cancelled) and the run's content,
    // read once per campaign and batch.
    let wanted: Vec<(String, String, String)> =
        claimed.iter().filter_map(|c| campaign_of(&c.m)).collect();
    let gates = super::campaigns::gates(deps.store, wanted).await;
    // Decide per message; group those that may go by sender for the counters.
    let mut groups: BTreeMap<(String, String), Vec<Claimed>> = BTreeMap::new();
    for mut c in claimed {
        if let Some(key) = campaign_of(&c.m) {
            match gates.get(&key) {
                Some(super::campaigns::Gate::Send(content)) => {
                    if c.render.is_none() && c.rendered.is_none() {
                        use super::campaigns::{RenderFailure, RunContent};
                        match content.as_ref() {
                            RunContent::Inline(inline) => {
                                c.render = Some(RenderSpec::from(inline));
                            }
                            RunContent::Template { .. } => {
                                match content.render(deps.store, deps.composer, &c.m).await {
                                    Ok(r) => c.rendered = Some(r),
                                    Err(RenderFailure::Permanent(code)) => {
                                        let t =
                                            Transition::Fail(FailReason::Permanent(code.into()));
                                        out.push((c.index, settle(deps, &c.m, t, |_| {}).await));
                                        continue;
                                    }
                                    Err(RenderFailure::Retry) => {
                                        out.push((c.index, release(deps, &c.m).await));
                                        continue;
                                    }
                                }
                            }
                        }
                    }
                }
                Some(super::campaigns::Gate::Park) => {
                    let until = now + Duration::seconds(super::campaigns::PARK_SECS);
                    let o = defer(deps, &c.m, DeferReason::CampaignPaused, until).await;
                    out.push((c.index, o));
                    continue;
                }
                Some(super::campaigns::Gate::Cancel) => {
                    let t = Transition::Skip(super::campaigns::CANCELLED);
                    out.push((c.index, settle(deps, &c.m, t, |_| {}).await));
                    continue;
                }
                None => {
                    out.push((c.index, release(deps, &c.m).await));
                    continue;
                }
            }
        }
        let k = (c.m.workspace_id.clone(), c.m.sender_id.clone());
        let Some(Some(route)) = routes.get(&k) else {
            let o = if routes.contains_key(&k) {
                settle(
                    deps,
                    &c.m,
                    Transition::Fail(FailReason::Permanent("sender_not_found".into())),
                    |_| {},
                )
                .await
            } else {
                release(deps, &c.m).await
            };
            out.push((c.index, o));
            continue;
        };
        if route.paused {
            let o = settle(
                deps,
                &c.m,
                Transition::Fail(FailReason::SenderPaused),
                |_| {},
            )
            .await;
            out.push((c.index, o));
            continue;
        }
        if let Some(reason) = suppressed.get(&(c.m.workspace_id.clone(), c.m.to.clone())) {
            let t = Transition::Skip(SkipReason::from_suppression(*reason));
            out.push((c.index, settle(deps, &c.m, t, |_| {}).await));
            continue;
        }
        // Transactional mail skips sending windows (API-CONVENTIONS.md).
        if lane == Lane::Bulk
            && let Some(w) = &route.window
        {
            let opening = w.next_opening(now, parse_tz(c.m.time_zone.as_deref()));
            if opening > now {
                out.push((
                    c.index,
                    defer(deps, &c.m, DeferReason::Window, opening).await,
                ));
                continue;
            }
        }
        groups.entry(k).or_default().push(c);
    }
    for ((ws, sender_id), group) in groups {
        let Some(Some(route)) = routes.get(&(ws.clone(), sender_id.clone())) else {
            continue;
        };
        out.extend(send_group(deps, lane, route, &ws, group, now).await);
    }
    out
}

/// (workspace, campaign, run) of a campaign's message.
fn campaign_of(m: &MessageRecord) -> Option<(String, String, String)> {
    Some((
        m.workspace_id.clone(),
        m.tags.get(super::campaigns::TAG_CAMPAIGN)?.clone(),
        m.tags.get(super::campaigns::TAG_RUN)?.clone(),
    ))
}

/// Hands a claimed message back without counting an attempt (queued again).
async fn release(deps: &SenderDeps<'_>, m: &MessageRecord) -> Outcome {
    match transition(deps.store, m, Transition::Retry, deps.clock.now(), |_| {}).await {
        Ok(_) => Outcome::RetryAfter(5),
        Err(TransitionError::Conflict) => Outcome::Done,
        Err(_) => Outcome::RetryAfter(5),
    }
}

async fn send_group(
    deps: &SenderDeps<'_>,
    lane: Lane,
    route: &Route,
    ws: &str,
    mut group: Vec<Claimed>,
    now: DateTime<Utc>,
) -> Vec<(usize, Outcome)> {
    let mut out = Vec::new();
    let n = group.len() as u64;
    let day = cap_day(now, route.sender_tz);
    // Kept past the day: sender health reads the last week's counts (`usecases::sender_health`).
    let day_end = (now + Duration::days(10)).timestamp();
    let sender_key = counter_key(ws, format!("sender#{}#{day}", route.sender_id));
    let ws_key = counter_key(ws, format!("day#{}", now.date_naive()));
    // Transactional mail counts toward the caps but is never held back by them.
    let (sender_cap, ws_cap) = match lane {
        Lane::Priority => (None, None),
        Lane::Bulk => (
            route.sender_cap.as_ref().map(|c| c.cap_on(day)),
            route.workspace_cap,
        ),
    };
    // A day counter exists only while its cap does (nothing reads it otherwise): a cap
    // set during a day counts the mail sent after it was set.
    let (count_sender, count_ws) = (route.sender_cap.is_some(), route.workspace_cap.is_some());
    let granted = async {
        let s = if count_sender {
            take_units(deps.store, &sender_key, n, sender_cap, day_end).await?
        } else {
            n
        };
        let w = if count_ws {
            take_units(deps.store, &ws_key, s, ws_cap, day_end).await?
        } else {
            s
        };
        if count_sender {
            give_back(deps.store, &sender_key, s - w).await;
        }
        Ok::<_, AppError>((s, w))
    }
    .await;
    let (s, w) = match granted {
        Ok(g) => g,
        Err(e) => {
            tracing::warn!(error = %e, "taking cap units failed");
            for c in group {
                out.push((c.index, release(deps, &c.m).await));
            }
            return out;
        }
    };
    // Over a cap: the rest waits for the next day's opening.
    let over: Vec<Claimed> = group.split_off(w as usize);
    for (i, c) in over.into_iter().enumerate() {
        // Positions [w, s) lost to the workspace's cap, [s, n) to the sender's.
        let reason = if w + (i as u64) < s {
            DeferReason::WorkspaceCap
        } else {
            DeferReason::SenderCap
        };
        let until = next_day_opening(route, day, parse_tz(c.m.time_zone.as_deref()));
        out.push((c.index, defer(deps, &c.m, reason, until).await));
    }
    // The connection's rate, per second.
    let mut ready = group;
    if let Some(rate) = route.rate_per_sec {
        let limit = match lane {
            Lane::Priority => u64::from(rate),
            Lane::Bulk => (u64::from(rate) * u64::from(deps.config.bulk_rate_percent) / 100).max(1),
        };
        let mut granted_all = Vec::new();
        for _ in 0..deps.config.rate_wait_tries {
            if ready.is_empty() {
                break;
            }
            let second = deps.clock.now().timestamp();
            let key = counter_key(ws, format!("rate#{}#{second}", route.connection_id));
            let k = take_units(
                deps.store,
                &key,
                ready.len() as u64,
                Some(limit),
                second + 120,
            )
            .await
            .unwrap_or(0);
            let rest = ready.split_off(k as usize);
            granted_all.extend(ready);
            ready = rest;
            if !ready.is_empty() {
                let ms = 1000 - deps.clock.now().timestamp_subsec_millis().min(999);
                tokio::time::sleep(std::time::Duration::from_millis(u64::from(ms))).await;
            }
        }
        for c in ready {
            out.push((c.index, release(deps, &c.m).await));
        }
        ready = granted_all;
    }
    for c in ready {
        out.push((c.index, send_one(deps, route, c).await));
    }
    out
}

async fn send_one(deps: &SenderDeps<'_>, route: &Route, c: Claimed) -> Outcome {
    let m = &c.m;
    let now = deps.clock.now();
    if let Some(rendered) = c.rendered {
        let parts = messages::parts_of(
            m,
            rendered,
            &route.from,
            route.reply_to.as_ref(),
            now,
            false,
        );
        return send_parts(deps, route, m, parts).await;
    }
    let Some(spec) = c.render else {
        return settle(
            deps,
            m,
            Transition::Fail(FailReason::Permanent("no_content".into())),
            |_| {},
        )
        .await;
    };
    let parts = match messages::render(
        deps.store,
        deps.composer,
        m,
        &spec,
        &route.from,
        route.reply_to.as_ref(),
        now,
    )
    .await
    {
        Ok(p) => p,
        Err(e @ (AppError::NotFound | AppError::Invalid(_))) => {
            // The template (or its version, or the workspace) is gone, or it does not
            // render for this recipient: trying again changes nothing.
            let code = match e {
                AppError::NotFound => "template_missing",
                _ => "render",
            };
            tracing::warn!(error = %e, msg = %m.id, "rendering failed");
            return settle(
                deps,
                m,
                Transition::Fail(FailReason::Permanent(code.into())),
                |_| {},
            )
            .await;
        }
        Err(e) => {
            tracing::warn!(error = %e, "rendering failed");
            return release(deps, m).await;
        }
    };
    send_parts(deps, route, m, parts).await
}

/// Builds the MIME message from rendered parts, sends it and records the outcome.
async fn send_parts(
    deps: &SenderDeps<'_>,
    route: &Route,
    m: &MessageRecord,
    parts: crate::mime::MessageParts,
) -> Outcome {
    let raw = match mime::build(&parts) {
        Ok(raw) => raw,
        Err(MimeError::Address { field: "to", .. }) => {
            return settle(
                deps,
                m,
                Transition::Skip(SkipReason::InvalidAddress),
                |_| {},
            )
            .await;
        }
        Err(e) => {
            let code = match e {
                MimeError::Address { .. } => "invalid_sender_address",
                MimeError::NoBody => "no_body",
                MimeError::Build(_) => "build",
            };
            return settle(
                deps,
                m,
                Transition::Fail(FailReason::Permanent(code.into())),
                |_| {},
            )
            .await;
        }
    };
    let mut tags = vec![
        ("mp_ws".to_string(), m.workspace_id.clone()),
        ("mp_msg".to_string(), m.id.clone()),
    ];
    tags.extend(m.tags.iter().map(|(k, v)| (k.clone(), v.clone())));
    let outgoing = OutgoingMessage {
        parts,
        raw,
        idempotency_key: m.id.clone(),
        tags,
    };
    match route.provider.send(&outgoing).await {
        Ok(accepted) => {
            record_sent(
                deps,
                route,
                m,
                &accepted.provider_message_id,
                &outgoing.parts.subject,
            )
            .await
        }
        Err(e @ (SendError::Transient { .. } | SendError::Throttled { .. })) => {
            let attempts = m.attempts + 1;
            if attempts >= deps.config.max_attempts {
                return settle(
                    deps,
                    m,
                    Transition::Fail(FailReason::TransientExhausted),
                    |n| n.attempts = attempts,
                )
                .await;
            }
            let delay = retry_delay_secs(attempts, e.retry_after().map(|d| d.as_secs()));
            let not_before = deps.clock.now() + Duration::seconds(delay as i64);
            match transition(deps.store, m, Transition::Retry, deps.clock.now(), |n| {
                n.attempts = attempts;
                n.not_before = Some(not_before);
                n.reason = Some(match &e {
                    SendError::Throttled { code, .. } => format!("throttled:{code}"),
                    SendError::Transient { code, .. } => format!("transient:{code}"),
                    _ => String::new(),
                });
            })
            .await
            {
                Ok(_) => Outcome::RetryAfter(delay),
                Err(TransitionError::Conflict) => Outcome::Done,
                Err(_) => Outcome::RetryAfter(delay),
            }
        }
        Err(SendError::Permanent { code, .. }) => {
            settle(
                deps,
                m,
                Transition::Fail(FailReason::Permanent(code)),
                |n| {
                    n.attempts += 1;
                },
            )
            .await
        }
        Err(SendError::Sender { code, .. }) => {
            if let Err(e) = deps
                .directory
                .pause(&m.workspace_id, &m.sender_id, &code)
                .await
            {
                tracing::warn!(error = %e, "pausing the sender failed");
            }
            settle(deps, m, Transition::Fail(FailReason::SenderPaused), |n| {
                n.attempts += 1;
            })
            .await
        }
    }
}

/// The provider took the message: record `sent` with its id and the rendered subject.
/// A provider whose events cannot name our message (`Provider::needs_message_pointer`)
/// also gets a pointer item from its id to the message, and a connection without
/// webhooks (`Provider::polls_status`) the message's first poll entry, in the same
/// transaction.
async fn record_sent(
    deps: &SenderDeps<'_>,
    route: &Route,
    m: &MessageRecord,
    provider_id: &str,
    subject: &str,
) -> Outcome {
    let kind = route.provider.kind();
    let now = deps.clock.now();
    let pointer = route.provider.needs_message_pointer().then(|| {
        let mut pointer = crate::ports::store::Item::new();
        let (pk, sk) = keys::provider_message(kind, provider_id);
        pointer.insert("pk".into(), val::s(pk));
        pointer.insert("sk".into(), val::s(sk));
        pointer.insert("ws".into(), val::s(&m.workspace_id));
        pointer.insert("msg".into(), val::s(&m.id));
        pointer.insert(
            TTL.into(),
            val::n((now + Duration::days(messages::DEFAULT_RETENTION_DAYS)).timestamp()),
        );
        pointer
    });
    // A connection no webhook reaches: the message's first status poll, filed with `sent`.
    let poll = route.provider.polls_status().then(|| {
        super::reconcile::PollEntry::first(
            &m.workspace_id,
            &m.id,
            &route.connection_id,
            provider_id,
            now,
        )
    });
    let mut current = m.clone();
    for _ in 0..5 {
        let attempts = current.attempts + 1;
        let edit = |n: &mut MessageRecord| {
            n.provider = Some(kind.to_string());
            n.provider_message_id = Some(provider_id.to_string());
            n.attempts = attempts;
            n.reason = None;
            n.subject = subject.to_string();
        };
        let mut with = Vec::new();
        if let Some(pointer) = &pointer {
            with.push(TxAction::Put {
                item: pointer.clone(),
                cond: None,
            });
        }
        if let Some(entry) = &poll {
            // Read each time: a cancelled check means the poller closed the minute.
            match super::reconcile::checkpoint(deps.store, now).await {
                Ok(cp) => with.extend(super::reconcile::file_actions(entry, &cp)),
                Err(e) => {
                    tracing::warn!(error = %e, "reading the poll checkpoint failed");
                    continue;
                }
            }
        }
        let r = if with.is_empty() {
            transition(deps.store, &current, Transition::Sent, now, edit).await
        } else {
            sent_with(deps.store, &current, now, edit, with).await
        };
        match r {
            Ok(_) => return Outcome::Done,
            Err(TransitionError::Conflict) | Err(TransitionError::App(_)) => {
                // Someone gave up on our claim (lease ended) or the store hiccuped:
                // read again and record the truth.
                match messages::load(deps.store, &m.workspace_id, &m.id).await {
                    Ok(Some(fresh)) if fresh.state == MessageState::Sent => return Outcome::Done,
                    Ok(Some(fresh)) => current = fresh,
                    Ok(None) => return Outcome::Done,
                    Err(_) => {}
                }
            }
            Err(TransitionError::Invalid(_)) => return Outcome::Done,
        }
    }
    tracing::error!(msg = %m.id, provider_id, "sent, but recording it failed");
    Outcome::Done
}

/// `sent` and the items that go with it (the provider pointer, the first poll entry and
/// its checkpoint check) in one transaction.
async fn sent_with(
    store: &dyn Store,
    m: &MessageRecord,
    now: DateTime<Utc>,
    edit: impl FnOnce(&mut MessageRecord),
    with: Vec<TxAction>,
) -> Result<MessageRecord, TransitionError> {
    let (next, action) = messages::transition_action(m, Transition::Sent, now, edit)?;
    let mut actions = vec![action];
    actions.extend(with);
    match store.transact(actions).await {
        Ok(()) => {}
        Err(StoreError::TransactionCanceled { failed }) if failed.first() == Some(&true) => {
            return Err(TransitionError::Conflict);
        }
        Err(e) => return Err(TransitionError::App(e.into())),
    }
    messages::after_transition(store, m, &next, now).await;
    Ok(next)
}

/// The dead-letter consumer: records that reached a DLQ mark their messages
/// `failed(dead_letter)` (unless settled meanwhile). Every record is consumed.
pub async fn handle_dead_letters(
    store: &dyn Store,
    clock: &dyn Clock,
    records: &[Incoming],
) -> Vec<Outcome> {
    let mut out = Vec::with_capacity(records.len());
    for r in records {
        let Ok(rec) = serde_json::from_str::<SendRecord>(&r.body) else {
            tracing::error!(record = %r.id, "a dead-lettered record that does not parse; dropped");
            out.push(Outcome::Done);
            continue;
        };
        let mut outcome = Outcome::Done;
        for _ in 0..5 {
            let m = match messages::load(store, &rec.ws, &rec.msg).await {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(_) => {
                    outcome = Outcome::Failed;
                    break;
                }
            };
            if m.state.is_settled() {
                break;
            }
            match transition(
                store,
                &m,
                Transition::Fail(FailReason::DeadLetter),
                clock.now(),
                |_| {},
            )
            .await
            {
                Ok(_) | Err(TransitionError::Invalid(_)) => break,
                Err(TransitionError::Conflict) => continue,
                Err(TransitionError::App(_)) => {
                    outcome = Outcome::Failed;
                    break;
                }
            }
        }
        out.push(outcome);
    }
    out
}

/// A fixed set of routes (tests, benchmarks, and the runner before providers exist).
#[derive(Default)]
pub struct StaticDirectory {
    routes: std::sync::RwLock<HashMap<(String, String), Route>>,
}

impl StaticDirectory {
    pub fn insert(&self, ws: &str, route: Route) {
        if let Ok(mut r) = self.routes.write() {
            r.insert((ws.to_string(), route.sender_id.clone()), route);
        }
    }
}

#[async_trait]
impl Directory for StaticDirectory {
    async fn route(&self, ws: &str, sender_id: &str) -> AppResult<Option<Route>> {
        Ok(self
            .routes
            .read()
            .ok()
            .and_then(|r| r.get(&(ws.to_string(), sender_id.to_string())).cloned()))
    }

    async fn pause(&self, ws: &str, sender_id: &str, _reason: &str) -> AppResult<()> {
        if let Ok(mut r) = self.routes.write()
            && let Some(route) = r.get_mut(&(ws.to_string(), sender_id.to_string()))
        {
            route.paused = true;
        }
        Ok(())
    }
}

/// Sender profiles and connections from the store (`/v1/senders`, `/v1/providers`):
/// the product's directory, in Lambda and in the runner.
pub struct StoreDirectory {
    store: Arc<dyn Store>,
    providers: super::providers::Providers,
}

impl StoreDirectory {
    pub fn new(store: Arc<dyn Store>, providers: super::providers::Providers) -> Self {
        Self { store, providers }
    }
}

#[async_trait]
impl Directory for StoreDirectory {
    async fn route(&self, ws: &str, sender_id: &str) -> AppResult<Option<Route>> {
        let store = self.store.as_ref();
        let sender = match super::senders::get(store, ws, sender_id).await {
            Ok(s) => s,
            Err(AppError::NotFound) => return Ok(None),
            Err(e) => return Err(e),
        };
        let (conn, provider) =
            match super::providers::provider_for(store, &self.providers, ws, &sender.connection_id)
                .await
            {
                Ok(found) => found,
                Err(AppError::NotFound) => return Ok(None),
                Err(e) => return Err(e),
            };
        let workspace_cap = super::workspaces::get_workspace(store, ws).await?.daily_cap;
        Ok(Some(Route {
            sender_id: sender.id.clone(),
            from: sender.from_mailbox(),
            reply_to: sender.reply_to_mailbox(),
            connection_id: conn.id.clone(),
            provider,
            rate_per_sec: Some(conn.rate_per_second).filter(|r| *r > 0),
            sender_tz: sender.tz(),
            window: sender.window(),
            sender_cap: sender.daily_cap(),
            workspace_cap,
            paused: sender.paused.is_some(),
        }))
    }

    async fn pause(&self, ws: &str, sender_id: &str, reason: &str) -> AppResult<()> {
        super::senders::pause(
            self.store.as_ref(),
            ws,
            sender_id,
            reason,
            "the provider refused the sender",
        )
        .await
        .map(|_| ())
    }
}
