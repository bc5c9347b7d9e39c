//! The planner: turns a run's audience into message items, one page of list members
//! at a time, from the planning queue (functions/dispatch in AWS, a worker in the
//! runner). Each page: read up to [`PAGE`] members of the current target list; leave
//! out members of the exclusion lists and those still pending double opt-in; mark
//! contacts already in an earlier target list `duplicate` (counted, no second message:
//! the message id is derived from (run, contact)); write one message per recipient —
//! `skipped` with its reason (suppressed, unsubscribed, bounced, complained,
//! invalid_address) or `planned` with a sender from the pool and a due time — and file
//! the planned ones in the engine's due index. Then the run's progress moves to the next
//! page (a write conditional on the page number) and the next page is enqueued.
//!
//! Idempotent: a message is written with "not exists", so a page planned twice writes
//! no message and counts nothing twice; a stale task (its page already done) is dropped.
//! [`preflight`] runs the same classification without writing.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use serde::Serialize;
use utoipa::ToSchema;

use super::campaigns::{
    self, CampaignRecord, PlanTask, RunRecord, Sweep, SweepKind, TAG_CAMPAIGN, TAG_RUN, attr,
};
use super::dispatch::{self, DueEntry};
use super::messages::{self, MessageRecord, TimelineEntry, TransitionError};
use super::send::{Directory, Incoming, Outcome, Route};
use super::{contacts, lists, suppressions, to_item};
use crate::error::{AppError, AppResult};
use crate::keys;
use crate::model::EmailAddress;
use crate::model::campaign::{CampaignAction, CampaignState, PoolRotation, PoolSender, next_state};
use crate::model::message::{FailReason, MessageState, SkipReason, Transition, message_id_for};
use crate::model::sender::{cap_day, local_instant};
use crate::ports::clock::Clock;
use crate::ports::queue::{Lane, Queue};
use crate::ports::scheduler::Scheduler;
use crate::ports::store::{
    Cond, Index, ItemExt, Key, Query, Store, StoreError, TTL, TxAction, Update, limits, val,
};

/// List members per planning page.
pub const PAGE: usize = 1000;
/// Messages walked per sweep page (cancel, resume, retry-failed).
const SWEEP_PAGE: usize = 200;

pub struct PlannerDeps<'a> {
    pub store: &'a dyn Store,
    pub directory: &'a dyn Directory,
    pub planning: &'a dyn Queue,
    /// The bulk send queue: planned messages that are due at once go straight to it.
    pub send: &'a dyn Queue,
    pub scheduler: &'a dyn Scheduler,
    pub clock: &'a dyn Clock,
}

/// Handles a batch of planning-queue records (one SQS batch, or the runner's worker).
pub async fn handle_batch(deps: &PlannerDeps<'_>, records: &[Incoming]) -> Vec<Outcome> {
    let mut out = Vec::with_capacity(records.len());
    for r in records {
        let Ok(task) = serde_json::from_str::<PlanTask>(&r.body) else {
            tracing::error!(record = %r.id, "a planning record that does not parse; dropped");
            out.push(Outcome::Done);
            continue;
        };
        match step(deps, &task).await {
            Ok(()) => out.push(Outcome::Done),
            Err(e) => {
                tracing::warn!(error = %e, run = %task.run, page = task.page, "planning step failed");
                out.push(Outcome::RetryAfter(10));
            }
        }
    }
    out
}

/// One planning-queue task.
pub async fn step(deps: &PlannerDeps<'_>, task: &PlanTask) -> AppResult<()> {
    if let Some(sweep) = &task.sweep {
        let last = campaigns::counting(deps.store, sweep_page(deps, task, sweep)).await?;
        if last && sweep.kind == SweepKind::RetryFailed {
            // Nothing was retryable, or all retried ones settled already.
            campaigns::complete_if_settled(deps.store, &task.ws, &task.campaign, &task.run).await?;
        }
        return Ok(());
    }
    let store = deps.store;
    let now = deps.clock.now();
    let mut c = match campaigns::load(store, &task.ws, &task.campaign).await {
        Ok(c) => c,
        Err(AppError::NotFound) => return Ok(()),
        Err(e) => return Err(e),
    };
    if c.run_id.as_deref() != Some(task.run.as_str()) {
        return Ok(()); // an earlier run's task, or an unscheduled run
    }
    let Some(mut run) = campaigns::load_run(store, &task.ws, &c.id, &task.run).await? else {
        return Ok(());
    };
    if task.fire {
        if c.state != CampaignState::Scheduled {
            // Fired twice, or after cancel / a launch now: nothing to start.
            return Ok(());
        }
        c.state = next_state(c.state, CampaignAction::Fire).map_err(AppError::internal)?;
        let name = run.schedule_name.take();
        run.started_at = Some(now);
        let read = c.version;
        c.version += 1;
        c.updated_at = now;
        let started = store
            .transact(vec![
                TxAction::Put {
                    item: to_item(&campaigns::campaigns_pk(&task.ws), &c.id, &c)?,
                    cond: Some(Cond::eq("version", val::n(read))),
                },
                TxAction::Put {
                    item: run_item(&task.ws, &run)?,
                    cond: Some(Cond::eq("page", val::n(run.page as i64))),
                },
            ])
            .await;
        match started {
            Ok(()) => {}
            Err(e) if e.is_condition_failed() => return Ok(()), // someone else started it
            Err(e) => return Err(e.into()),
        }
        if let Some(name) = name {
            deps.scheduler.delete(&name).await?;
        }
    }
    if c.state != CampaignState::Planning || run.planning_done {
        return Ok(()); // paused (resume re-enqueues), cancelled, or done
    }
    if run.page > task.page {
        if run.page == task.page + 1 {
            // Redelivered after the progress was saved: the next page may not have been
            // enqueued (a crash in between). A duplicate next task dies at its first
            // conditional progress write.
            campaigns::enqueue(deps.planning, &next_task(task, run.page)).await?;
        }
        return Ok(());
    }
    if run.page < task.page {
        return Ok(()); // cannot happen: pages are enqueued after their predecessor saved
    }
    plan_page(deps, &c, run, now).await
}

fn next_task(task: &PlanTask, page: u64) -> PlanTask {
    PlanTask {
        ws: task.ws.clone(),
        campaign: task.campaign.clone(),
        run: task.run.clone(),
        page,
        fire: false,
        sweep: None,
    }
}

fn run_item(ws: &str, run: &RunRecord) -> AppResult<crate::ports::store::Item> {
    to_item(
        &campaigns::runs_pk(ws),
        &format!("{}#{}", run.campaign_id, run.id),
        run,
    )
}

/// One recipient, classified.
#[derive(Debug, Clone)]
struct Recipient {
    contact_id: String,
    email: String,
    time_zone: Option<String>,
    skip: Option<SkipReason>,
}

/// A page of members, classified (no writes).
#[derive(Debug, Default)]
struct Classified {
    recipients: Vec<Recipient>,
    members: i64,
    excluded: i64,
    pending: i64,
    duplicates: i64,
    /// Where the next page starts: (list index, cursor); `None` = the audience is done.
    next: Option<(usize, Option<String>)>,
}

async fn member_of(
    store: &dyn Store,
    ws: &str,
    list_ids: &[String],
    contact_ids: &[String],
) -> AppResult<HashSet<String>> {
    let mut found = HashSet::new();
    for list_id in list_ids {
        for chunk in contact_ids.chunks(limits::MAX_BATCH_GET) {
            let keys: Vec<Key> = chunk
                .iter()
                .map(|c| Key::new(keys::list_members(ws, list_id), c))
                .collect();
            for item in store.batch_get(&keys).await? {
                if let Some(sk) = item.str_attr("sk") {
                    found.insert(sk.to_string());
                }
            }
        }
    }
    Ok(found)
}

async fn classify(
    store: &dyn Store,
    ws: &str,
    list_ids: &[String],
    exclude_list_ids: &[String],
    list_index: usize,
    cursor: Option<String>,
    page_size: usize,
) -> AppResult<Classified> {
    let mut out = Classified::default();
    let Some(list_id) = list_ids.get(list_index) else {
        return Ok(out);
    };
    let page = store
        .query(
            Query::partition(keys::list_members(ws, list_id))
                .limit(page_size)
                .cursor(cursor),
        )
        .await?;
    out.next = match page.cursor {
        Some(c) => Some((list_index, Some(c))),
        None if list_index + 1 < list_ids.len() => Some((list_index + 1, None)),
        None => None,
    };
    let mut ids = Vec::with_capacity(page.items.len());
    for item in page.items {
        let member: lists::Member = super::from_item(item)?;
        out.members += 1;
        if member.status == lists::MemberStatus::Pending {
            out.pending += 1;
        } else {
            ids.push(member.contact_id);
        }
    }
    let excluded = member_of(store, ws, exclude_list_ids, &ids).await?;
    let earlier = member_of(store, ws, &list_ids[..list_index], &ids).await?;
    ids.retain(|id| {
        if excluded.contains(id) {
            out.excluded += 1;
            false
        } else if earlier.contains(id) {
            out.duplicates += 1;
            false
        } else {
            true
        }
    });
    let records = contacts::records_by_ids(store, ws, &ids).await?;
    let emails: Vec<String> = records.iter().map(|r| r.email.clone()).collect();
    let suppressed = suppressions::reasons_for(store, ws, &emails).await?;
    let by_id: HashMap<&str, &contacts::ContactRecord> =
        records.iter().map(|r| (r.id.as_str(), r)).collect();
    for id in &ids {
        // A contact deleted since it was listed is no longer in the audience.
        let Some(r) = by_id.get(id.as_str()) else {
            continue;
        };
        let skip = match EmailAddress::parse(&r.email) {
            Err(_) => Some(SkipReason::InvalidAddress),
            Ok(_) => suppressed
                .get(&r.email)
                .map(|reason| SkipReason::from_suppression(*reason)),
        };
        out.recipients.push(Recipient {
            contact_id: r.id.clone(),
            email: r.email.clone(),
            time_zone: r.time_zone.clone(),
            skip,
        });
    }
    Ok(out)
}

/// The pool's routes, in pool order (`None` for a sender the directory does not know:
/// the sender fails such messages `permanent:sender_not_found`).
async fn routes(
    directory: &dyn Directory,
    ws: &str,
    sender_ids: &[String],
) -> AppResult<Vec<Option<Route>>> {
    let mut out = Vec::with_capacity(sender_ids.len());
    for s in sender_ids {
        out.push(directory.route(ws, s).await?);
    }
    Ok(out)
}

fn rotation_for(run: &RunRecord, routes: &[Option<Route>], now: DateTime<Utc>) -> PoolRotation {
    let senders = run
        .sender_ids
        .iter()
        .zip(routes)
        .map(|(id, r)| PoolSender {
            sender_id: id.clone(),
            cap: r.as_ref().and_then(|r| {
                r.sender_cap
                    .as_ref()
                    .map(|c| c.cap_on(cap_day(now, r.sender_tz)))
            }),
        })
        .collect();
    let ws_cap = routes.iter().flatten().find_map(|r| r.workspace_cap);
    PoolRotation::new(senders, ws_cap)
}

/// The due time of a recipient assigned to `route` on day `day` after `now`: the start
/// of that day in the sender's zone (or now), the window's next opening for the
/// recipient, and the connection's pace under its rate.
fn due_time(
    route: Option<&Route>,
    day: u32,
    now: DateTime<Utc>,
    recipient_tz: Option<&str>,
    pace: &mut BTreeMap<String, DateTime<Utc>>,
    bulk_rate_percent: u32,
) -> DateTime<Utc> {
    let Some(route) = route else {
        return now;
    };
    let mut due = if day == 0 {
        now
    } else {
        let d = cap_day(now, route.sender_tz) + Duration::days(i64::from(day));
        local_instant(route.sender_tz, d.and_hms_opt(0, 0, 0).unwrap_or_default())
    };
    if let Some(w) = &route.window {
        let tz: Option<Tz> = recipient_tz.and_then(|t| t.parse().ok());
        due = w.next_opening(due, tz);
    }
    if let Some(rate) = route.rate_per_sec {
        let per_sec = (u64::from(rate) * u64::from(bulk_rate_percent) / 100).max(1);
        let step = Duration::microseconds((1_000_000 / per_sec) as i64);
        let slot = pace.entry(route.connection_id.clone()).or_insert(due);
        if *slot > due {
            due = *slot;
        }
        *slot = due + step;
    }
    due
}

fn message_for(
    run: &RunRecord,
    r: &Recipient,
    sender_id: &str,
    due: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> MessageRecord {
    let (state, reason) = match r.skip {
        Some(s) => (MessageState::Skipped, Some(s.as_str().to_string())),
        None => (MessageState::Planned, None),
    };
    let mut m = messages::new_record(
        &run.workspace_id,
        message_id_for(&run.id, &r.contact_id),
        Lane::Bulk,
        state,
        sender_id,
        &r.email,
        Some(r.contact_id.clone()),
        &run.content.subject,
        now,
    );
    m.reason = reason.clone();
    m.timeline = vec![TimelineEntry {
        state,
        at: now,
        reason,
    }];
    m.time_zone = r.time_zone.clone();
    m.due_at = due;
    m.tags = BTreeMap::from([
        (TAG_CAMPAIGN.to_string(), run.campaign_id.clone()),
        (TAG_RUN.to_string(), run.id.clone()),
    ]);
    m
}

fn message_item(m: &MessageRecord) -> AppResult<crate::ports::store::Item> {
    let mut item = to_item(&messages::pk(&m.workspace_id), &m.id, m)?;
    item.insert(
        TTL.into(),
        val::n((m.created_at + Duration::days(messages::DEFAULT_RETENTION_DAYS)).timestamp()),
    );
    item.insert(
        Index::Gsi1.pk_attr().into(),
        val::s(campaigns::run_messages_gsi(&m.workspace_id, message_run(m))),
    );
    item.insert(Index::Gsi1.sk_attr().into(), val::s(&m.id));
    Ok(item)
}

fn message_run(m: &MessageRecord) -> &str {
    m.tags.get(TAG_RUN).map(String::as_str).unwrap_or_default()
}

/// The counter deltas of newly written messages.
fn written_deltas(written: &[&MessageRecord]) -> BTreeMap<String, i64> {
    let mut d = BTreeMap::new();
    for m in written {
        *d.entry(attr::MESSAGES.to_string()).or_default() += 1;
        if m.state == MessageState::Skipped {
            *d.entry(attr::SKIPPED.to_string()).or_default() += 1;
            if let Some(r) = &m.reason {
                *d.entry(attr::skip(r)).or_default() += 1;
            }
        }
    }
    d
}

/// Writes the messages that do not exist yet, 99 per transaction with the counter
/// update for exactly those. Returns the ids that existed already.
async fn write_new(
    store: &dyn Store,
    ws: &str,
    run_id: &str,
    msgs: &[MessageRecord],
) -> AppResult<HashSet<String>> {
    let mut existing = HashSet::new();
    for chunk in msgs.chunks(limits::MAX_BATCH_GET) {
        let keys: Vec<Key> = chunk.iter().map(|m| messages::key(ws, &m.id)).collect();
        for item in store.batch_get(&keys).await? {
            if let Some(sk) = item.str_attr("sk") {
                existing.insert(sk.to_string());
            }
        }
    }
    let fresh: Vec<&MessageRecord> = msgs.iter().filter(|m| !existing.contains(&m.id)).collect();
    for chunk in fresh.chunks(limits::MAX_TRANSACTION_ACTIONS - 1) {
        let mut pending: Vec<&MessageRecord> = chunk.to_vec();
        for _ in 0..5 {
            if pending.is_empty() {
                break;
            }
            let mut actions = Vec::with_capacity(pending.len() + 1);
            for m in &pending {
                actions.push(TxAction::Put {
                    item: message_item(m)?,
                    cond: Some(Cond::ItemNotExists),
                });
            }
            if let Some(update) = campaigns::counts_update(&written_deltas(&pending)) {
                actions.push(TxAction::Update {
                    key: campaigns::planner_counter_key(ws, run_id),
                    update,
                    cond: None,
                });
            }
            match store.transact(actions).await {
                Ok(()) => {
                    pending.clear();
                }
                Err(StoreError::TransactionCanceled { failed }) => {
                    // A concurrent planner of the same page wrote some: leave those out.
                    let mut next = Vec::new();
                    for (m, f) in pending
                        .iter()
                        .zip(failed.iter().chain(std::iter::repeat(&false)))
                    {
                        if *f {
                            existing.insert(m.id.clone());
                        } else {
                            next.push(*m);
                        }
                    }
                    pending = next;
                }
                Err(e) if e.is_retryable() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        if !pending.is_empty() {
            return Err(AppError::Store(StoreError::Throttled));
        }
    }
    Ok(existing)
}

async fn plan_page(
    deps: &PlannerDeps<'_>,
    c: &CampaignRecord,
    mut run: RunRecord,
    now: DateTime<Utc>,
) -> AppResult<()> {
    let store = deps.store;
    let ws = run.workspace_id.clone();
    let page = classify(
        store,
        &ws,
        &run.list_ids,
        &run.exclude_list_ids,
        run.list_index,
        run.cursor.clone(),
        PAGE,
    )
    .await?;
    let routes = routes(deps.directory, &ws, &run.sender_ids).await?;
    let mut rotation = run
        .rotation
        .clone()
        .unwrap_or_else(|| rotation_for(&run, &routes, now));
    let bulk_share = super::send::SendConfig::default().bulk_rate_percent;
    let mut msgs = Vec::with_capacity(page.recipients.len());
    for r in &page.recipients {
        if r.skip.is_some() {
            msgs.push(message_for(&run, r, &run.sender_ids[0], None, now));
            continue;
        }
        match rotation.assign() {
            Some(a) => {
                let due = due_time(
                    routes[a.sender].as_ref(),
                    a.day,
                    now,
                    r.time_zone.as_deref(),
                    &mut run.pace,
                    bulk_share,
                );
                run.last_due = Some(run.last_due.map_or(due, |d| d.max(due)));
                msgs.push(message_for(
                    &run,
                    r,
                    &run.sender_ids[a.sender],
                    Some(due),
                    now,
                ));
            }
            None => {
                // Every cap of the pool is zero: nothing can go out. Planned anyway, due
                // now, so the sender defers them visibly (`sender_cap`).
                msgs.push(message_for(&run, r, &run.sender_ids[0], Some(now), now));
            }
        }
    }
    write_new(store, &ws, &run.id, &msgs).await?;
    // Every planned message of the page is handed on (again for ones that existed: a
    // crash may have come between their write and this; a duplicate is harmless, the
    // sender's claim sends once): those due now straight to the send queue, the others
    // into the due index. A message due now thus costs no due entry (one write less)
    // and does not wait for its minute to pass.
    let (mut due_now, mut later) = (Vec::new(), Vec::new());
    for m in &msgs {
        if m.state == MessageState::Planned
            && let Some(due) = m.due_at
        {
            let entry = DueEntry {
                ws: ws.clone(),
                message_id: m.id.clone(),
                lane: Lane::Bulk,
                due,
            };
            if due <= now {
                due_now.push(entry);
            } else {
                later.push(entry);
            }
        }
    }
    dispatch::schedule(store, &later, now).await?;
    dispatch::enqueue_now(deps.send, &due_now).await?;
    // Cancelled while this page was written: its messages are skipped here (the
    // cancel sweep may have walked the run before they existed).
    let fresh = campaigns::load(store, &ws, &c.id).await?;
    if fresh.state == CampaignState::Cancelled {
        campaigns::counting(store, async {
            for m in &msgs {
                cancel_one(store, &ws, &m.id, now).await?;
            }
            Ok::<_, AppError>(())
        })
        .await?;
        return Ok(());
    }
    // Progress, with the page's audience counts, once: conditional on the page.
    let read_page = run.page;
    run.page += 1;
    run.rotation = Some(rotation);
    match &page.next {
        Some((list_index, cursor)) => {
            run.list_index = *list_index;
            run.cursor = cursor.clone();
        }
        None => {
            run.planning_done = true;
            run.planned_at = Some(now);
            run.cursor = None;
        }
    }
    let mut audience = BTreeMap::new();
    audience.insert(attr::MEMBERS.to_string(), page.members);
    audience.insert(attr::EXCLUDED.to_string(), page.excluded);
    audience.insert(attr::PENDING.to_string(), page.pending);
    audience.insert(attr::skip(SkipReason::Duplicate.as_str()), page.duplicates);
    let mut actions = vec![TxAction::Put {
        item: run_item(&ws, &run)?,
        cond: Some(Cond::eq("page", val::n(read_page as i64))),
    }];
    if let Some(update) = campaigns::counts_update(&audience) {
        actions.push(TxAction::Update {
            key: campaigns::planner_counter_key(&ws, &run.id),
            update,
            cond: None,
        });
    }
    match store.transact(actions).await {
        Ok(()) => {}
        Err(e) if e.is_condition_failed() => return Ok(()), // another planner saved it
        Err(e) => return Err(e.into()),
    }
    if run.planning_done {
        finish_planning(store, &ws, &c.id, &run.id).await
    } else {
        let task = PlanTask {
            ws: ws.clone(),
            campaign: c.id.clone(),
            run: run.id.clone(),
            page: run.page,
            fire: false,
            sweep: None,
        };
        campaigns::enqueue(deps.planning, &task).await
    }
}

/// `planning → sending` (a paused campaign stays paused: resume finds planning done),
/// then completes at once if nothing is left to send.
async fn finish_planning(
    store: &dyn Store,
    ws: &str,
    campaign_id: &str,
    run_id: &str,
) -> AppResult<()> {
    for _ in 0..5 {
        let mut c = campaigns::load(store, ws, campaign_id).await?;
        if c.state != CampaignState::Planning || c.run_id.as_deref() != Some(run_id) {
            break;
        }
        c.state = next_state(c.state, CampaignAction::Planned).map_err(AppError::internal)?;
        let read = c.version;
        c.version += 1;
        c.updated_at = Utc::now();
        match store
            .put(
                to_item(&campaigns::campaigns_pk(ws), &c.id, &c)?,
                Some(Cond::eq("version", val::n(read))),
            )
            .await
        {
            Ok(()) => break,
            Err(StoreError::ConditionFailed) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    campaigns::complete_if_settled(store, ws, campaign_id, run_id).await?;
    Ok(())
}

/// Skips one message as cancelled unless it is settled or being sent right now (a
/// claimed message finishes: it may already be with the provider).
async fn cancel_one(store: &dyn Store, ws: &str, id: &str, now: DateTime<Utc>) -> AppResult<()> {
    for _ in 0..5 {
        let Some(m) = messages::load(store, ws, id).await? else {
            return Ok(());
        };
        if m.state.is_settled() || m.state == MessageState::Sending {
            return Ok(());
        }
        match messages::transition(
            store,
            &m,
            Transition::Skip(SkipReason::Cancelled),
            now,
            |_| {},
        )
        .await
        {
            Ok(_) | Err(TransitionError::Invalid(_)) => return Ok(()),
            Err(TransitionError::Conflict) => continue,
            Err(TransitionError::App(e)) => return Err(e),
        }
    }
    Err(AppError::Store(StoreError::Throttled))
}

/// One page of a walk over a run's messages; `true` on the last page.
async fn sweep_page(deps: &PlannerDeps<'_>, task: &PlanTask, sweep: &Sweep) -> AppResult<bool> {
    let store = deps.store;
    let now = deps.clock.now();
    let page = store
        .query(
            Query::index(
                Index::Gsi1,
                campaigns::run_messages_gsi(&task.ws, &task.run),
            )
            .limit(SWEEP_PAGE)
            .cursor(sweep.cursor.clone()),
        )
        .await?;
    let mut refile = Vec::new();
    for item in page.items {
        let seen: MessageRecord = super::from_item(item)?;
        match sweep.kind {
            SweepKind::Cancel => cancel_one(store, &task.ws, &seen.id, now).await?,
            SweepKind::Resume => {
                if let Some(m) = reschedule_parked(store, &task.ws, &seen.id, now).await? {
                    refile.push(m);
                }
            }
            SweepKind::RetryFailed => {
                if let Some(m) = retry_one(store, &task.ws, &seen.id, now).await? {
                    refile.push(m);
                }
            }
        }
    }
    let entries: Vec<DueEntry> = refile
        .into_iter()
        .map(|id| DueEntry {
            ws: task.ws.clone(),
            message_id: id,
            lane: Lane::Bulk,
            due: now,
        })
        .collect();
    dispatch::schedule(store, &entries, now).await?;
    if let Some(cursor) = page.cursor {
        let next = PlanTask {
            sweep: Some(Sweep {
                kind: sweep.kind,
                cursor: Some(cursor),
            }),
            ..task.clone()
        };
        campaigns::enqueue(deps.planning, &next).await?;
        return Ok(false);
    }
    Ok(true)
}

/// A message parked while its campaign was paused becomes due now.
async fn reschedule_parked(
    store: &dyn Store,
    ws: &str,
    id: &str,
    now: DateTime<Utc>,
) -> AppResult<Option<String>> {
    for _ in 0..5 {
        let Some(m) = messages::load(store, ws, id).await? else {
            return Ok(None);
        };
        let parked = m.state == MessageState::Deferred
            && m.reason.as_deref()
                == Some(crate::model::message::DeferReason::CampaignPaused.as_str());
        if !parked {
            return Ok(None);
        }
        let update = Update::new()
            .set("due_at", serde_dynamo::to_attribute_value(now)?)
            .set("version", val::n(m.version as i64 + 1));
        match store
            .update(
                &messages::key(ws, id),
                update,
                Some(Cond::eq("version", val::n(m.version as i64))),
            )
            .await
        {
            Ok(_) => return Ok(Some(m.id)),
            Err(StoreError::ConditionFailed) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(AppError::Store(StoreError::Throttled))
}

/// `failed → queued`, once, never `unknown_outcome` (the state machine decides).
async fn retry_one(
    store: &dyn Store,
    ws: &str,
    id: &str,
    now: DateTime<Utc>,
) -> AppResult<Option<String>> {
    for _ in 0..5 {
        let Some(m) = messages::load(store, ws, id).await? else {
            return Ok(None);
        };
        if m.state != MessageState::Failed
            || m.retried
            || m.reason.as_deref() == Some(FailReason::UnknownOutcome.code().as_str())
        {
            return Ok(None);
        }
        match messages::transition(store, &m, Transition::RetryFailed, now, |n| {
            n.retried = true;
            n.attempts = 0;
            n.due_at = Some(now);
            n.not_before = None;
        })
        .await
        {
            Ok(_) => return Ok(Some(m.id)),
            Err(TransitionError::Invalid(_)) => return Ok(None),
            Err(TransitionError::Conflict) => continue,
            Err(TransitionError::App(e)) => return Err(e),
        }
    }
    Err(AppError::Store(StoreError::Throttled))
}

// ---- preflight ----------------------------------------------------------------------------

/// Unit prices assumed for the AWS cost estimate (us-east-1, on-demand, 2025 list
/// prices; docs/campaigns.md): USD.
pub mod prices {
    /// SES: per 1,000 outbound emails.
    pub const SES_PER_1000: f64 = 0.10;
    /// DynamoDB on-demand: per million write request units (a transactional write is 2).
    pub const DDB_WRITE_PER_MILLION: f64 = 0.625;
    /// DynamoDB on-demand: per million read request units.
    pub const DDB_READ_PER_MILLION: f64 = 0.125;
    /// SQS standard: per million requests (a batch of 10 is one request).
    pub const SQS_PER_MILLION: f64 = 0.40;
    /// Lambda arm64/x86 per GB-second, and per million invocations.
    pub const LAMBDA_GB_SECOND: f64 = 0.000_016_666_7;
    pub const LAMBDA_PER_MILLION: f64 = 0.20;
}

/// What a launch would do, computed without writing anything.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct Preflight {
    /// Members of the target lists (a contact in two lists counts twice).
    pub members: i64,
    pub excluded: i64,
    pub pending_opt_in: i64,
    /// Messages that would be planned (skipped ones included).
    pub messages: i64,
    /// Messages that would be sent.
    pub recipients: i64,
    /// Skips by reason (`duplicate` included).
    pub skip_reasons: BTreeMap<String, i64>,
    /// Per sender of the pool: messages assigned.
    pub per_sender: BTreeMap<String, i64>,
    /// Days the pool's caps spread the audience over (1 = all today).
    pub days: u32,
    /// When the last message would be due (windows, caps, rates).
    pub eta: Option<DateTime<Utc>>,
    /// Estimated AWS cost in USD (SES, DynamoDB, SQS, Lambda), with the assumptions.
    pub estimated_cost_usd: f64,
    pub cost_breakdown_usd: BTreeMap<String, f64>,
    /// Things worth a look before launching (the template's warnings included, as
    /// `template: <message>`).
    pub warnings: Vec<String>,
    /// The template version a launch now would pin (`null`: inline content).
    pub template: Option<campaigns::PinnedTemplate>,
    /// The template's own warnings (`no_unsubscribe_link`, `no_postal_address`, …).
    pub template_warnings: Vec<crate::render::Warning>,
    /// The message as the first recipients (up to 3) would get it.
    pub samples: Vec<SampleRender>,
}

/// One recipient's render in a preflight.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SampleRender {
    pub contact_id: String,
    pub email: String,
    pub subject: String,
    pub html: Option<String>,
    pub text: Option<String>,
    /// Variables the template uses that this recipient does not have.
    pub missing_variables: Vec<String>,
}

/// Recipients rendered as samples in a preflight.
pub const SAMPLES: usize = 3;

/// Runs the planner's classification and rotation over the whole audience, reading only.
pub async fn preflight(
    store: &dyn Store,
    directory: &dyn Directory,
    ws: &str,
    id: &str,
    now: DateTime<Utc>,
    keys: &std::sync::Arc<crate::model::links::LinkKeys>,
    public_url: &str,
) -> AppResult<Preflight> {
    let c = campaigns::load(store, ws, id).await?;
    let mut p = Preflight::default();
    // The template a launch now would pin, and its warnings.
    let mut template = None;
    if let Some(tid) = &c.template_id {
        let pinned = match c.template_version {
            Some(v) => Some(v),
            None => match super::templates::get(store, ws, tid).await {
                Ok(t) if t.published_version > 0 => Some(t.published_version),
                Ok(_) => {
                    p.warnings.push(
                        "the template has no published version: launching fails until one is \
                         published or template_version is set"
                            .into(),
                    );
                    None
                }
                Err(AppError::NotFound) => {
                    p.warnings
                        .push("the template does not exist any more".into());
                    None
                }
                Err(e) => return Err(e),
            },
        };
        if let Some(v) = pinned {
            match super::templates::get_version(store, ws, tid, v).await {
                Ok(tv) => {
                    for w in &tv.warnings {
                        p.warnings.push(format!("template: {}", w.message));
                    }
                    p.template_warnings = tv.warnings;
                    template = Some(campaigns::PinnedTemplate {
                        template_id: tid.clone(),
                        version: v,
                    });
                }
                Err(AppError::NotFound) => p
                    .warnings
                    .push(format!("the template has no version {v} any more")),
                Err(e) => return Err(e),
            }
        }
    }
    p.template = template.clone();
    let run = RunRecord {
        id: "preflight".into(),
        campaign_id: c.id.clone(),
        workspace_id: ws.to_string(),
        number: 0,
        sender_ids: c.sender_ids.clone(),
        list_ids: c.list_ids.clone(),
        exclude_list_ids: c.exclude_list_ids.clone(),
        content: messages::Content {
            subject: c.subject.clone(),
            html: c.html.clone(),
            text: c.text.clone(),
            variables: BTreeMap::new(),
        },
        template,
        tracking: c.tracking,
        scheduled_for: None,
        schedule_name: None,
        created_at: now,
        started_at: None,
        page: 0,
        list_index: 0,
        cursor: None,
        planning_done: false,
        planned_at: None,
        rotation: None,
        pace: BTreeMap::new(),
        last_due: None,
        ended_at: None,
        ended: None,
    };
    let routes = routes(directory, ws, &run.sender_ids).await?;
    let content = campaigns::run_content(store, &c, run.clone()).await?;
    let composer = messages::Composer {
        link_keys: keys.clone(),
        public_url: public_url.to_string(),
    };
    for (id, r) in run.sender_ids.iter().zip(&routes) {
        match r {
            None => p.warnings.push(format!("sender {id} does not exist")),
            Some(r) if r.paused => p.warnings.push(format!("sender {id} is paused")),
            Some(_) => {}
        }
    }
    let start = c.scheduled_at.filter(|t| *t > now).unwrap_or(now);
    let mut rotation = rotation_for(&run, &routes, start);
    let mut pace = BTreeMap::new();
    let bulk_share = super::send::SendConfig::default().bulk_rate_percent;
    let (mut list_index, mut cursor) = (0usize, None);
    let mut pages = 0u64;
    loop {
        let page = classify(
            store,
            ws,
            &run.list_ids,
            &run.exclude_list_ids,
            list_index,
            cursor.clone(),
            PAGE,
        )
        .await?;
        pages += 1;
        p.members += page.members;
        p.excluded += page.excluded;
        p.pending_opt_in += page.pending;
        if page.duplicates > 0 {
            *p.skip_reasons.entry("duplicate".into()).or_default() += page.duplicates;
        }
        for r in &page.recipients {
            p.messages += 1;
            if let Some(s) = r.skip {
                *p.skip_reasons.entry(s.as_str().into()).or_default() += 1;
                continue;
            }
            p.recipients += 1;
            if p.samples.len() < SAMPLES {
                p.samples
                    .push(sample(store, &content, &composer, &run, r, now).await?);
            }
            if let Some(a) = rotation.assign() {
                let due = due_time(
                    routes[a.sender].as_ref(),
                    a.day,
                    start,
                    r.time_zone.as_deref(),
                    &mut pace,
                    bulk_share,
                );
                p.eta = Some(p.eta.map_or(due, |d| d.max(due)));
                p.days = p.days.max(a.day + 1);
                *p.per_sender
                    .entry(run.sender_ids[a.sender].clone())
                    .or_default() += 1;
            }
        }
        match page.next {
            Some((l, c)) => {
                list_index = l;
                cursor = c;
            }
            None => break,
        }
    }
    if p.recipients == 0 {
        p.warnings.push("nobody would receive this campaign".into());
    }
    if rotation.senders.iter().all(|s| s.cap == Some(0)) {
        p.warnings
            .push("every sender of the pool has a daily cap of 0 today".into());
    }
    if p.days > 1 {
        p.warnings.push(format!(
            "the daily caps spread this campaign over {} days",
            p.days
        ));
    }
    if c.template_id.is_none()
        && (c.html.as_deref().is_some_and(|h| h.contains("{{")) || c.subject.contains("{{"))
    {
        p.warnings.push(
            "inline content fills no contact variables: {{…}} placeholders are sent as written \
             (use a template for per-recipient variables)"
                .into(),
        );
    }
    let mut missing: Vec<&str> = p
        .samples
        .iter()
        .flat_map(|s| s.missing_variables.iter().map(String::as_str))
        .collect();
    missing.sort_unstable();
    missing.dedup();
    if !missing.is_empty() {
        p.warnings.push(format!(
            "sample recipients lack variables the template uses: {}",
            missing.join(", ")
        ));
    }
    // Cost: per message written and sent, plus planning reads and writes per page.
    let m = p.messages as f64;
    let sent = p.recipients as f64;
    // Writes: message (2, transactional) + due entry + claim + sent + provider pointer
    // + counters per batch of 10 (0.1) + planning progress (per page).
    let writes = m * 2.0 + sent * (1.0 + 1.0 + 1.0 + 1.0 + 0.1) + pages as f64 * 4.0;
    // Reads: member page, memberships, contact, suppression, existing check (planning);
    // message, suppression, campaign/run gate per batch (sending).
    let reads = m * 4.0 + sent * 2.2;
    let sqs = sent / 10.0 * 3.0 + pages as f64 * 3.0; // send, receive, delete per batch
    let lambda_gb_s = sent * 0.002 + pages as f64 * 1.0; // ~2 ms per message at 1 GB
    let invocations = sent / 10.0 + pages as f64;
    let mut b = BTreeMap::new();
    b.insert("ses".into(), sent / 1000.0 * prices::SES_PER_1000);
    b.insert(
        "dynamodb".into(),
        writes / 1e6 * prices::DDB_WRITE_PER_MILLION + reads / 1e6 * prices::DDB_READ_PER_MILLION,
    );
    b.insert("sqs".into(), sqs / 1e6 * prices::SQS_PER_MILLION);
    b.insert(
        "lambda".into(),
        lambda_gb_s * prices::LAMBDA_GB_SECOND + invocations / 1e6 * prices::LAMBDA_PER_MILLION,
    );
    p.estimated_cost_usd = b.values().sum();
    p.cost_breakdown_usd = b;
    Ok(p)
}

/// Renders the message one recipient of a preflight would get (tracking as the campaign
/// says; the message id is the one a launch now would not use: `preview`).
async fn sample(
    store: &dyn Store,
    content: &campaigns::RunContent,
    composer: &messages::Composer,
    run: &RunRecord,
    r: &Recipient,
    now: DateTime<Utc>,
) -> AppResult<SampleRender> {
    let mut m = messages::new_record(
        &run.workspace_id,
        "preview".into(),
        Lane::Bulk,
        MessageState::Planned,
        "preview",
        &r.email,
        Some(r.contact_id.clone()),
        &run.content.subject,
        now,
    );
    m.time_zone = r.time_zone.clone();
    let (rendered, missing) = match content {
        campaigns::RunContent::Inline(c) => (c.clone(), vec![]),
        campaigns::RunContent::Template { .. } => match content.render(store, composer, &m).await {
            Ok(r) => (
                messages::Content {
                    subject: r.subject,
                    html: Some(r.html),
                    text: Some(r.text),
                    variables: BTreeMap::new(),
                },
                r.missing_variables,
            ),
            Err(campaigns::RenderFailure::Retry) => {
                return Err(AppError::internal("reading a sample recipient failed"));
            }
            Err(campaigns::RenderFailure::Permanent(code)) => (
                messages::Content {
                    subject: format!("(does not render for this recipient: {code})"),
                    html: None,
                    text: None,
                    variables: BTreeMap::new(),
                },
                vec![],
            ),
        },
    };
    Ok(SampleRender {
        contact_id: r.contact_id.clone(),
        email: r.email.clone(),
        subject: rendered.subject,
        html: rendered.html,
        text: rendered.text,
        missing_variables: missing,
    })
}
