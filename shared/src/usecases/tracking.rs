//! The event recorder (opens and clicks) and the unsubscribe use case.
//!
//! The tracking handler verifies a token, gives the event an id and hands it over (SQS
//! events queue / runner channel); [`record_events`] consumes batches of them:
//!
//! 1. an event whose id is already recorded is skipped (the `ws#<ws>#events` item, kept
//!    `retention_days` through its TTL);
//! 2. it is classified with [`OpenRules`] / [`ClickRules`] (the message's sent time, the
//!    message's recent clicks for bursts);
//! 3. a human open/click sets the message's first-open / first-click times (and the
//!    link's) by conditional updates that also store the event id, so a redelivered event
//!    finds "its" first again and counts it unique exactly once;
//! 4. one transaction writes the events' id items (condition: not there yet) and the
//!    summed counter increments; an id that turns out recorded (a concurrent duplicate)
//!    cancels the transaction, is dropped, and the rest is written again;
//! 5. a human event moves the contact's `last_engaged_at` forward.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};

use super::analytics::{self, Fact, Occurrence, RunRef};
use super::messages::MessageRecord;
use super::{from_item, to_item};
use crate::error::{AppError, AppResult};
use crate::keys;
use crate::model::message::MessageState;
use crate::model::tracking::{
    ClickClass, ClickRules, ClickSignals, OpenClass, OpenRules, OpenSignals, TrackEvent, TrackKind,
};
use crate::model::{EmailAddress, SuppressionReason};
use crate::ports::store::{
    Cond, Item, ItemExt, Key, Query, SortKeyCond, Store, StoreError, TTL, TxAction, Update, val,
};

/// What the recorder is configured with.
#[derive(Debug, Clone)]
pub struct RecorderConfig {
    pub open_rules: OpenRules,
    pub click_rules: ClickRules,
    /// How long event items are kept (their TTL); counters stay.
    pub retention_days: i64,
}

impl Default for RecorderConfig {
    fn default() -> Self {
        RecorderConfig {
            open_rules: OpenRules::default(),
            click_rules: ClickRules::default(),
            retention_days: super::messages::DEFAULT_RETENTION_DAYS,
        }
    }
}

/// Events per transaction: each writes its id item, and the counters of the chunk at
/// most 3 per event, within DynamoDB's 100 actions.
const EVENTS_PER_TX: usize = 20;

fn events_pk(ws: &str) -> String {
    keys::ws(ws, keys::EVENTS)
}

fn ts(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// What recording an event did (for tests and logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Open(OpenClass),
    Click(ClickClass),
    /// Recorded before: nothing changed.
    Duplicate,
}

/// Records a batch of events (any workspaces, any order). Idempotent per event id.
pub async fn record_events(
    store: &dyn Store,
    cfg: &RecorderConfig,
    events: &[TrackEvent],
) -> AppResult<Vec<Outcome>> {
    let mut outcomes = vec![Outcome::Duplicate; events.len()];
    let mut by_ws: std::collections::BTreeMap<&str, Vec<usize>> = Default::default();
    for (i, e) in events.iter().enumerate() {
        by_ws.entry(&e.workspace_id).or_default().push(i);
    }
    for (ws, idxs) in by_ws {
        for chunk in idxs.chunks(EVENTS_PER_TX) {
            let mut pending: Vec<(usize, Occurrence, Option<String>)> = Vec::new();
            for &i in chunk {
                let e = &events[i];
                if store
                    .get(&Key::new(events_pk(ws), e.id.clone()))
                    .await?
                    .is_some()
                {
                    continue;
                }
                let (outcome, occurrence, contact) = classify(store, cfg, e).await?;
                outcomes[i] = outcome;
                pending.push((i, occurrence, contact));
            }
            commit(store, cfg, ws, events, &mut pending, &mut outcomes).await?;
            for (i, _, contact) in &pending {
                let human = matches!(
                    outcomes[*i],
                    Outcome::Open(OpenClass::HumanOpen) | Outcome::Click(ClickClass::HumanClick)
                );
                if human && let Some(c) = contact {
                    touch_contact(store, ws, c, events[*i].at).await?;
                }
            }
        }
    }
    Ok(outcomes)
}

/// Writes the id items and counters of `pending` in one transaction, dropping events
/// that a concurrent delivery recorded first.
async fn commit(
    store: &dyn Store,
    cfg: &RecorderConfig,
    ws: &str,
    events: &[TrackEvent],
    pending: &mut Vec<(usize, Occurrence, Option<String>)>,
    outcomes: &mut [Outcome],
) -> AppResult<()> {
    for _ in 0..=EVENTS_PER_TX {
        if pending.is_empty() {
            return Ok(());
        }
        let mut actions = Vec::with_capacity(pending.len() * 3);
        for (i, _, _) in pending.iter() {
            let e = &events[*i];
            let mut item = to_item(&events_pk(ws), &e.id, e)?;
            item.insert(
                TTL.into(),
                val::n((e.at + chrono::Duration::days(cfg.retention_days)).timestamp()),
            );
            actions.push(TxAction::Put {
                item,
                cond: Some(Cond::ItemNotExists),
            });
        }
        let occurrences: Vec<Occurrence> = pending.iter().map(|p| p.1.clone()).collect();
        for (key, update) in analytics::counter_updates(ws, &occurrences) {
            actions.push(TxAction::Update {
                key,
                update,
                cond: None,
            });
        }
        match store.transact(actions).await {
            Ok(()) => return Ok(()),
            Err(StoreError::TransactionCanceled { failed }) if failed.iter().any(|f| *f) => {
                let mut k = 0;
                pending.retain(|(i, _, _)| {
                    let dup = failed.get(k).copied().unwrap_or(false);
                    k += 1;
                    if dup {
                        outcomes[*i] = Outcome::Duplicate;
                    }
                    !dup
                });
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(AppError::Store(StoreError::Throttled))
}

/// The message item, raw (first-marks are attributes outside [`MessageRecord`]).
async fn message_item(store: &dyn Store, ws: &str, id: &str) -> AppResult<Option<Item>> {
    Ok(store.get(&super::messages::key(ws, id)).await?)
}

/// Sets `attr` (and `<attr>_evt` = the event id) on the message if unset. `true` when
/// this event is the first: set now, or set earlier by this same event (a redelivery).
async fn first_by(store: &dyn Store, item: &Item, e: &TrackEvent, attr: &str) -> AppResult<bool> {
    let by = format!("{attr}_evt");
    if item.contains_key(attr) {
        return Ok(item.str_attr(&by) == Some(e.id.as_str()));
    }
    let update = Update::new()
        .set(attr, val::s(ts(e.at)))
        .set(by.clone(), val::s(e.id.clone()));
    let cond = Cond::And(vec![
        Cond::ItemExists,
        Cond::AttrNotExists(attr.to_string()),
    ]);
    match store
        .update(
            &super::messages::key(&e.workspace_id, &e.message_id),
            update,
            Some(cond),
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(StoreError::ConditionFailed) => {
            let now = message_item(store, &e.workspace_id, &e.message_id).await?;
            Ok(now.is_some_and(|i| i.str_attr(&by) == Some(e.id.as_str())))
        }
        Err(err) => Err(err.into()),
    }
}

fn sent_at(m: &MessageRecord) -> Option<DateTime<Utc>> {
    m.timeline
        .iter()
        .find(|t| t.state == MessageState::Sent)
        .map(|t| t.at)
}

/// Notes a click of `link` in the message's recent clicks and counts the distinct links
/// clicked within `window` of it (this one included).
async fn burst_links(
    store: &dyn Store,
    cfg: &RecorderConfig,
    e: &TrackEvent,
    link: u32,
) -> AppResult<u32> {
    let pk = events_pk(&e.workspace_id);
    let prefix = format!("clk#{}#", e.message_id);
    let ttl = (e.at + chrono::Duration::days(1)).timestamp();
    store
        .update(
            &Key::new(pk.clone(), format!("{prefix}{link:04}#{}", e.id)),
            Update::new()
                .set("at", val::n(e.at.timestamp_millis()))
                .set(TTL, val::n(ttl)),
            None,
        )
        .await?;
    let window = cfg.click_rules.burst_window.as_millis() as i64;
    let page = store
        .query(
            Query::partition(pk)
                .sk(SortKeyCond::BeginsWith(prefix.clone()))
                .limit(200),
        )
        .await?;
    let mut links: Vec<&str> = page
        .items
        .iter()
        .filter(|i| {
            i.num_attr("at")
                .is_some_and(|t| (t - e.at.timestamp_millis()).abs() <= window)
        })
        .filter_map(|i| i.str_attr("sk"))
        .filter_map(|sk| sk.strip_prefix(&prefix))
        .filter_map(|rest| rest.split('#').next())
        .collect();
    links.sort_unstable();
    links.dedup();
    Ok(links.len() as u32)
}

async fn classify(
    store: &dyn Store,
    cfg: &RecorderConfig,
    e: &TrackEvent,
) -> AppResult<(Outcome, Occurrence, Option<String>)> {
    let item = message_item(store, &e.workspace_id, &e.message_id).await?;
    let record: Option<MessageRecord> = match &item {
        Some(i) => Some(from_item(i.clone())?),
        None => None,
    };
    let run: Option<RunRef> = record.as_ref().and_then(analytics::run_of);
    let contact = record.as_ref().and_then(|m| m.contact_id.clone());
    let ua = e.user_agent.as_deref();
    let (outcome, fact) = match &e.kind {
        TrackKind::Open => {
            let class = cfg.open_rules.classify(&OpenSignals {
                user_agent: ua,
                ip: e.ip,
            });
            let human = class == OpenClass::HumanOpen;
            let unique = match (&item, human) {
                (Some(i), true) => first_by(store, i, e, analytics::first::HUMAN_OPEN).await?,
                _ => false,
            };
            (Outcome::Open(class), Fact::Open { human, unique })
        }
        TrackKind::Click { link, url } => {
            let since_sent = record
                .as_ref()
                .and_then(sent_at)
                .map(|s| (e.at - s).to_std().unwrap_or(Duration::ZERO));
            let burst = burst_links(store, cfg, e, *link).await?;
            let class = cfg.click_rules.classify(&ClickSignals {
                user_agent: ua,
                ip: e.ip,
                head: false,
                since_sent,
                distinct_links_in_burst: burst,
            });
            let human = class == ClickClass::HumanClick;
            let (unique, link_unique) = match (&item, human) {
                (Some(i), true) => (
                    first_by(store, i, e, analytics::first::HUMAN_CLICK).await?,
                    first_by(store, i, e, &analytics::first::link(*link)).await?,
                ),
                _ => (false, false),
            };
            (
                Outcome::Click(class),
                Fact::Click {
                    human,
                    unique,
                    link: *link,
                    url: url.clone(),
                    link_unique,
                },
            )
        }
    };
    Ok((
        outcome,
        Occurrence {
            at: e.at,
            run,
            fact,
        },
        contact,
    ))
}

/// Moves a contact's `last_engaged_at` forward (never back; a deleted contact is left).
async fn touch_contact(
    store: &dyn Store,
    ws: &str,
    contact_id: &str,
    at: DateTime<Utc>,
) -> AppResult<()> {
    let key = Key::new(keys::ws(ws, keys::CONTACTS), contact_id);
    let at = ts(at);
    let cond = Cond::And(vec![
        Cond::ItemExists,
        Cond::Or(vec![
            Cond::AttrNotExists("last_engaged_at".into()),
            Cond::lt("last_engaged_at", val::s(at.clone())),
        ]),
    ]);
    match store
        .update(
            &key,
            Update::new().set("last_engaged_at", val::s(at)),
            Some(cond),
        )
        .await
    {
        Ok(_) | Err(StoreError::ConditionFailed) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

// ---- unsubscribe ---------------------------------------------------------------------------

/// Which mail a recipient leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnsubscribeScope {
    /// Every mail of the workspace: the address is suppressed (reason `unsubscribed`).
    All,
    /// Only the lists the message's campaign was sent to (the contact leaves them).
    Lists,
}

/// What the unsubscribe page shows: only the workspace's name.
#[derive(Debug, Clone)]
pub struct UnsubscribeTarget {
    pub workspace_name: String,
    /// Whether the message came from a campaign with lists (the "only these lists"
    /// choice is offered).
    pub has_lists: bool,
    pub message: MessageRecord,
}

/// The message and workspace an unsubscribe token points at; `None` when either is gone.
pub async fn unsubscribe_target(
    store: &dyn Store,
    ws: &str,
    message_id: &str,
) -> AppResult<Option<UnsubscribeTarget>> {
    let Some(message) = super::messages::load(store, ws, message_id).await? else {
        return Ok(None);
    };
    let workspace = match super::workspaces::get_workspace(store, ws).await {
        Ok(w) => w,
        Err(AppError::NotFound) => return Ok(None),
        Err(e) => return Err(e),
    };
    let has_lists = match (analytics::run_of(&message), &message.contact_id) {
        (Some(run), Some(_)) => match super::campaigns::load(store, ws, &run.campaign_id).await {
            Ok(c) => !c.list_ids.is_empty(),
            Err(AppError::NotFound) => false,
            Err(e) => return Err(e),
        },
        _ => false,
    };
    Ok(Some(UnsubscribeTarget {
        workspace_name: workspace.name,
        has_lists,
        message,
    }))
}

/// Unsubscribes the recipient of a message. Idempotent: a repeated call changes nothing
/// and `unsubscribed` counts once per message. Effective at once: the sender checks the
/// suppression (and planning the list membership) before every send.
pub async fn unsubscribe(
    store: &dyn Store,
    target: &UnsubscribeTarget,
    scope: UnsubscribeScope,
    now: DateTime<Utc>,
) -> AppResult<()> {
    let m = &target.message;
    let ws = m.workspace_id.as_str();
    match (scope, target.has_lists, &m.contact_id, analytics::run_of(m)) {
        (UnsubscribeScope::Lists, true, Some(contact), Some(run)) => {
            let c = super::campaigns::load(store, ws, &run.campaign_id).await?;
            for list in &c.list_ids {
                let change = super::lists::MembersChange {
                    contact_ids: vec![contact.clone()],
                };
                match super::lists::remove_members(store, ws, list, change).await {
                    Ok(_) | Err(AppError::NotFound) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        _ => {
            let email = EmailAddress::parse(&m.to)
                .map_err(|_| AppError::invalid("/to", "the message's address is not valid"))?;
            super::suppressions::add(
                store,
                ws,
                super::suppressions::AddSuppression {
                    email: email.as_str().to_string(),
                    reason: Some(SuppressionReason::Unsubscribed),
                    source: Some("unsubscribe link".into()),
                },
            )
            .await?;
        }
    }
    // The message's `unsubscribed_at` and the counter in one transaction: counted once.
    let mut actions = vec![TxAction::Update {
        key: super::messages::key(ws, &m.id),
        update: Update::new().set("unsubscribed_at", val::s(ts(now))),
        cond: Some(Cond::And(vec![
            Cond::ItemExists,
            Cond::AttrNotExists("unsubscribed_at".into()),
        ])),
    }];
    let occurrence = Occurrence {
        at: now,
        run: analytics::run_of(m),
        fact: Fact::Unsubscribed,
    };
    for (key, update) in analytics::counter_updates(ws, std::slice::from_ref(&occurrence)) {
        actions.push(TxAction::Update {
            key,
            update,
            cond: None,
        });
    }
    match store.transact(actions).await {
        Ok(()) => {}
        Err(e) if e.is_condition_failed() => {}
        Err(e) => return Err(e.into()),
    }
    Ok(())
}
