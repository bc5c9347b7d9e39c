//! The event recorder (opens and clicks) and the unsubscribe use case.
//!
//! The tracking handler verifies a token, gives the event an id and hands it over (SQS
//! events queue / runner channel); [`record_events`] consumes batches of them, per
//! workspace, at a cost that grows per batch rather than per event:
//!
//! 1. an event whose id is already recorded is skipped (the `ws#<ws>#events` item, kept
//!    `retention_days` through its TTL; read with batch gets);
//! 2. the messages are read once each (batch gets); clicks are noted in short-lived
//!    `clk#<msg>#<link>#<evt>` items (one batched write) before the messages' recent
//!    clicks are read (one query per clicked message), so concurrent recorders see each
//!    other's clicks;
//! 3. each event is classified with [`OpenRules`] / [`ClickRules`] (the message's sent
//!    time; the distinct links clicked within the burst window, this batch's clicks
//!    counted up to the event, as if recorded one by one);
//! 4. the first human open/click of a message (and of each link) in the batch claims the
//!    message's first mark, unless the message has it already (a redelivered event
//!    recognises its own first through `<attr>_evt`);
//! 5. transactions of at most 100 actions, each key once, write the events' id items
//!    (condition: not there yet), one update per message setting its first marks
//!    (condition: unset), one update per contact moving `last_engaged_at` to the latest
//!    human event's time (condition: the contact exists and its time is earlier), and the
//!    summed counter increments. They go through [`Store::transact_seq`] (the embedded
//!    engine commits them with one fsync). A transaction that meets a concurrent write
//!    (a duplicate event, a first mark or a contact's time set meanwhile) is cancelled;
//!    its events and the later ones are redone from fresh reads.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};

use super::analytics::{self, Fact, Occurrence};
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
    BatchOp, Cond, Item, ItemExt, Key, PK, Query, SK, SortKeyCond, Store, StoreError, TTL,
    TxAction, Update, item_size, limits, val,
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

/// Rounds of one batch: a round that meets a concurrent recorder's write (the same event
/// recorded meanwhile, a first mark or a contact's engagement set meanwhile) reads again
/// and redoes what it did not write.
const MAX_ROUNDS: usize = 8;

/// A transaction's share of DynamoDB's 4 MB, kept with room to spare.
const TX_BYTES: usize = limits::MAX_TRANSACTION_BYTES / 2;

fn events_pk(ws: &str) -> String {
    keys::ws(ws, keys::EVENTS)
}

fn contact_key(ws: &str, contact_id: &str) -> Key {
    Key::new(keys::ws(ws, keys::CONTACTS), contact_id)
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
///
/// The cost grows per batch, not per event: per workspace, a round reads the id items,
/// messages and contacts in batches, writes the clicks' `clk#` items in one batched
/// write, and commits everything else in transactions of at most 100 actions, each key
/// once ([`Store::transact_seq`]: one write transaction on the embedded engine).
pub async fn record_events(
    store: &dyn Store,
    cfg: &RecorderConfig,
    events: &[TrackEvent],
) -> AppResult<Vec<Outcome>> {
    let mut outcomes = vec![Outcome::Duplicate; events.len()];
    let mut by_ws: BTreeMap<&str, Vec<usize>> = Default::default();
    let mut seen = HashSet::new();
    for (i, e) in events.iter().enumerate() {
        // The same event twice in one batch (a redelivery next to the original).
        if seen.insert((e.workspace_id.as_str(), e.id.as_str())) {
            by_ws.entry(&e.workspace_id).or_default().push(i);
        }
    }
    for (ws, idxs) in by_ws {
        let mut left = idxs;
        let mut clicks_noted = HashSet::new();
        let mut rounds = 0;
        while !left.is_empty() {
            if rounds == MAX_ROUNDS {
                return Err(AppError::Store(StoreError::Throttled));
            }
            rounds += 1;
            let mut round = Round {
                store,
                cfg,
                ws,
                events,
                outcomes: &mut outcomes,
                clicks_noted: &mut clicks_noted,
            };
            left = round.run(&left).await?;
        }
    }
    Ok(outcomes)
}

/// What classifying one event decided.
struct Planned {
    i: usize,
    occurrence: Occurrence,
    /// First marks this event sets on its message (attribute names).
    marks: Vec<String>,
    /// The contact whose `last_engaged_at` this (human) event moves to its time.
    touch: Option<String>,
}

/// One transaction's worth of events: their id items, one first-marks update per
/// message, one `last_engaged_at` update per contact (the latest time), the summed
/// counters. Every key once.
#[derive(Default)]
struct Group {
    events: Vec<(usize, Item)>,
    bytes: usize,
    occurrences: Vec<Occurrence>,
    counters: BTreeSet<String>,
    /// Message id → (attribute, event index) first marks.
    marks: BTreeMap<String, Vec<(String, usize)>>,
    /// Contact id → the time `last_engaged_at` moves to.
    contacts: BTreeMap<String, String>,
}

impl Group {
    fn actions(&self) -> usize {
        self.events.len() + self.counters.len() + self.marks.len() + self.contacts.len()
    }

    /// The actions with one more event (its item, counters, message and contact).
    fn actions_with(&self, msg: &str, p: &Planned, counters: &BTreeSet<String>) -> usize {
        let mut n = self.actions() + 1;
        n += counters.difference(&self.counters).count();
        if !p.marks.is_empty() && !self.marks.contains_key(msg) {
            n += 1;
        }
        if let Some(c) = &p.touch
            && !self.contacts.contains_key(c)
        {
            n += 1;
        }
        n
    }
}

struct Round<'a> {
    store: &'a dyn Store,
    cfg: &'a RecorderConfig,
    ws: &'a str,
    events: &'a [TrackEvent],
    outcomes: &'a mut [Outcome],
    /// Clicks whose `clk#` item is written (by an earlier round).
    clicks_noted: &'a mut HashSet<usize>,
}

impl Round<'_> {
    /// Records `idxs` (events of one workspace, in order); returns the events left to
    /// redo in another round (their transaction met a concurrent write).
    async fn run(&mut self, idxs: &[usize]) -> AppResult<Vec<usize>> {
        let (store, ws, events) = (self.store, self.ws, self.events);
        // 1. Events recorded before are duplicates.
        let pk = events_pk(ws);
        let recorded: HashSet<String> = get_all(
            store,
            idxs.iter().map(|&i| Key::new(pk.clone(), &events[i].id)),
        )
        .await?
        .into_keys()
        .collect();
        let fresh: Vec<usize> = idxs
            .iter()
            .copied()
            .filter(|&i| !recorded.contains(&events[i].id))
            .collect();
        for &i in idxs {
            self.outcomes[i] = Outcome::Duplicate;
        }
        if fresh.is_empty() {
            return Ok(Vec::new());
        }
        // 2. Their messages, once each.
        let mut messages: HashMap<String, (Item, MessageRecord)> = HashMap::new();
        let found = get_all(
            store,
            fresh
                .iter()
                .map(|&i| super::messages::key(ws, &events[i].message_id)),
        )
        .await?;
        for (id, item) in found {
            let record: MessageRecord = from_item(item.clone())?;
            messages.insert(id, (item, record));
        }
        // 3. The clicks' bursts.
        let bursts = self.bursts(&fresh).await?;
        // 4. Classify, in order; the first human event of a message claims its marks.
        let mut claimed: HashSet<(&str, String)> = HashSet::new();
        let mut planned = Vec::with_capacity(fresh.len());
        for &i in &fresh {
            let e = &events[i];
            let message = messages.get(&e.message_id);
            let item = message.map(|m| &m.0);
            let record = message.map(|m| &m.1);
            let mut marks = Vec::new();
            let mut first = |attr: &str| -> bool {
                let Some(item) = item else { return false };
                if item.contains_key(attr) {
                    // Set by this same event before (a redelivery): its own first.
                    return item.str_attr(&format!("{attr}_evt")) == Some(e.id.as_str());
                }
                if claimed.insert((e.message_id.as_str(), attr.to_string())) {
                    marks.push(attr.to_string());
                    return true;
                }
                false
            };
            let ua = e.user_agent.as_deref();
            let (outcome, fact, human) = match &e.kind {
                TrackKind::Open => {
                    let class = self.cfg.open_rules.classify(&OpenSignals {
                        user_agent: ua,
                        ip: e.ip,
                    });
                    let human = class == OpenClass::HumanOpen;
                    let unique = human && first(analytics::first::HUMAN_OPEN);
                    (Outcome::Open(class), Fact::Open { human, unique }, human)
                }
                TrackKind::Click { link, url } => {
                    let since_sent = record
                        .and_then(sent_at)
                        .map(|s| (e.at - s).to_std().unwrap_or(Duration::ZERO));
                    let class = self.cfg.click_rules.classify(&ClickSignals {
                        user_agent: ua,
                        ip: e.ip,
                        head: false,
                        since_sent,
                        distinct_links_in_burst: bursts.get(&i).copied().unwrap_or(1),
                    });
                    let human = class == ClickClass::HumanClick;
                    let unique = human && first(analytics::first::HUMAN_CLICK);
                    let link_unique = human && first(&analytics::first::link(*link));
                    let fact = Fact::Click {
                        human,
                        unique,
                        link: *link,
                        url: url.clone(),
                        link_unique,
                    };
                    (Outcome::Click(class), fact, human)
                }
            };
            self.outcomes[i] = outcome;
            let contact = record.and_then(|m| m.contact_id.clone());
            planned.push(Planned {
                i,
                occurrence: Occurrence {
                    at: e.at,
                    run: record.and_then(analytics::run_of),
                    fact,
                },
                marks,
                touch: contact.filter(|_| human),
            });
        }
        // 5. The contacts human events touch: moved forward only, never created.
        let mut engaged: HashMap<String, Option<String>> = get_all(
            store,
            planned
                .iter()
                .filter_map(|p| p.touch.as_deref())
                .map(|c| contact_key(ws, c)),
        )
        .await?
        .into_iter()
        .map(|(id, item)| {
            let at = item.str_attr(LAST_ENGAGED).map(str::to_string);
            (id, at)
        })
        .collect();
        // 6. Groups of at most 100 actions (and well under 4 MB), every key once.
        let mut groups: Vec<Group> = Vec::new();
        let mut group = Group::default();
        for mut p in planned {
            let e = &events[p.i];
            let at = ts(e.at);
            p.touch = p.touch.filter(|c| match engaged.get_mut(c) {
                Some(now) if now.as_deref().is_none_or(|n| n < at.as_str()) => {
                    *now = Some(at.clone());
                    true
                }
                _ => false,
            });
            let mut item = to_item(&pk, &e.id, e)?;
            item.insert(
                TTL.into(),
                val::n((e.at + chrono::Duration::days(self.cfg.retention_days)).timestamp()),
            );
            let size = item_size(&item);
            let counters = analytics::counter_prefixes(std::slice::from_ref(&p.occurrence));
            if !group.events.is_empty()
                && (group.actions_with(&e.message_id, &p, &counters)
                    > limits::MAX_TRANSACTION_ACTIONS
                    || group.bytes + size > TX_BYTES)
            {
                groups.push(std::mem::take(&mut group));
            }
            group.events.push((p.i, item));
            group.bytes += size;
            group.counters.extend(counters);
            group.occurrences.push(p.occurrence);
            for attr in p.marks {
                group
                    .marks
                    .entry(e.message_id.clone())
                    .or_default()
                    .push((attr, p.i));
            }
            if let Some(c) = p.touch {
                group.contacts.insert(c, at);
            }
        }
        groups.push(group);
        let txs = groups
            .iter()
            .map(|g| self.actions(g))
            .collect::<AppResult<Vec<_>>>()?;
        match store.transact_seq(txs).await {
            (_, None) => Ok(Vec::new()),
            // A concurrent write (a duplicate event, a first mark or a contact's time
            // set meanwhile, or a conflict): the groups from the failed one are redone
            // from fresh reads; the earlier ones are written.
            (done, Some(StoreError::TransactionCanceled { .. })) => {
                let left: Vec<usize> = groups[done..]
                    .iter()
                    .flat_map(|g| g.events.iter().map(|(i, _)| *i))
                    .collect();
                for &i in &left {
                    self.outcomes[i] = Outcome::Duplicate;
                }
                Ok(left)
            }
            (_, Some(e)) => Err(e.into()),
        }
    }

    /// The transaction of one group: id items first (`ItemNotExists`), then first marks,
    /// contacts and counters.
    fn actions(&self, g: &Group) -> AppResult<Vec<TxAction>> {
        let mut actions = Vec::with_capacity(g.actions());
        for (_, item) in &g.events {
            actions.push(TxAction::Put {
                item: item.clone(),
                cond: Some(Cond::ItemNotExists),
            });
        }
        for (msg, marks) in &g.marks {
            let mut update = Update::new();
            let mut conds = vec![Cond::ItemExists];
            for (attr, i) in marks {
                let e = &self.events[*i];
                update = update
                    .set(attr.clone(), val::s(ts(e.at)))
                    .set(format!("{attr}_evt"), val::s(e.id.clone()));
                conds.push(Cond::AttrNotExists(attr.clone()));
            }
            actions.push(TxAction::Update {
                key: super::messages::key(self.ws, msg),
                update,
                cond: Some(Cond::And(conds)),
            });
        }
        for (contact, at) in &g.contacts {
            actions.push(TxAction::Update {
                key: contact_key(self.ws, contact),
                update: Update::new().set(LAST_ENGAGED, val::s(at.clone())),
                cond: Some(Cond::And(vec![
                    Cond::ItemExists,
                    Cond::Or(vec![
                        Cond::AttrNotExists(LAST_ENGAGED.into()),
                        Cond::lt(LAST_ENGAGED, val::s(at.clone())),
                    ]),
                ])),
            });
        }
        for (key, update) in analytics::counter_updates(self.ws, &g.occurrences) {
            actions.push(TxAction::Update {
                key,
                update,
                cond: None,
            });
        }
        Ok(actions)
    }

    /// Notes the clicks of `fresh` in their messages' recent clicks (one batched write of
    /// `clk#<msg>#<link>#<evt>` items, TTL 1 day), then counts for each click the distinct
    /// links of its message clicked within the burst window of it: stored clicks (other
    /// recorders' too) and this batch's clicks up to this one (as if recorded one by one).
    async fn bursts(&mut self, fresh: &[usize]) -> AppResult<HashMap<usize, u32>> {
        let events = self.events;
        let clicks: Vec<(usize, u32)> = fresh
            .iter()
            .filter_map(|&i| match &events[i].kind {
                TrackKind::Click { link, .. } => Some((i, *link)),
                TrackKind::Open => None,
            })
            .collect();
        if clicks.is_empty() {
            return Ok(HashMap::new());
        }
        let pk = events_pk(self.ws);
        let mut ops = Vec::new();
        for &(i, link) in &clicks {
            if self.clicks_noted.contains(&i) {
                continue;
            }
            let e = &events[i];
            let mut item = Item::new();
            item.insert(PK.into(), val::s(pk.clone()));
            item.insert(
                SK.into(),
                val::s(format!("clk#{}#{link:04}#{}", e.message_id, e.id)),
            );
            item.insert("at".into(), val::n(e.at.timestamp_millis()));
            item.insert(
                TTL.into(),
                val::n((e.at + chrono::Duration::days(1)).timestamp()),
            );
            ops.push(BatchOp::Put(item));
        }
        self.store.batch_write_all(ops).await?;
        self.clicks_noted.extend(clicks.iter().map(|(i, _)| *i));
        // This batch's later clicks are not seen by an earlier one.
        let order: HashMap<&str, usize> = clicks
            .iter()
            .enumerate()
            .map(|(n, (i, _))| (events[*i].id.as_str(), n))
            .collect();
        let mut recent: HashMap<&str, Vec<NotedClick>> = HashMap::new();
        let window = self.cfg.click_rules.burst_window.as_millis() as i64;
        let mut out = HashMap::new();
        for (n, &(i, _)) in clicks.iter().enumerate() {
            let e = &events[i];
            let prefix = format!("clk#{}#", e.message_id);
            if !recent.contains_key(e.message_id.as_str()) {
                let page = self
                    .store
                    .query(
                        Query::partition(pk.clone())
                            .sk(SortKeyCond::BeginsWith(prefix.clone()))
                            .limit(200),
                    )
                    .await?;
                let stored = page
                    .items
                    .iter()
                    .filter_map(|item| {
                        let rest = item.str_attr(SK)?.strip_prefix(&prefix)?;
                        let (link, evt) = rest.split_once('#')?;
                        Some((
                            link.to_string(),
                            item.num_attr("at")?,
                            order.get(evt).copied(),
                        ))
                    })
                    .collect();
                recent.insert(e.message_id.as_str(), stored);
            }
            let mut links: Vec<&str> = recent[e.message_id.as_str()]
                .iter()
                .filter(|(_, at, pos)| {
                    pos.is_none_or(|p| p <= n) && (at - e.at.timestamp_millis()).abs() <= window
                })
                .map(|(link, _, _)| link.as_str())
                .collect();
            links.sort_unstable();
            links.dedup();
            out.insert(i, links.len() as u32);
        }
        Ok(out)
    }
}

/// A stored `clk#` item: the link, the click's time (ms) and, when the click is one of
/// this round's, its position among them.
type NotedClick = (String, i64, Option<usize>);

/// The items of `keys` (duplicates read once), by sort key, in batch gets of 100.
async fn get_all(
    store: &dyn Store,
    keys: impl IntoIterator<Item = Key>,
) -> AppResult<HashMap<String, Item>> {
    let keys: Vec<Key> = keys
        .into_iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut out = HashMap::with_capacity(keys.len());
    for chunk in keys.chunks(limits::MAX_BATCH_GET) {
        for item in store.batch_get(chunk).await? {
            if let Some(sk) = item.str_attr(SK) {
                out.insert(sk.to_string(), item);
            }
        }
    }
    Ok(out)
}

/// The contact attribute human events move forward.
const LAST_ENGAGED: &str = "last_engaged_at";

fn sent_at(m: &MessageRecord) -> Option<DateTime<Utc>> {
    m.timeline
        .iter()
        .find(|t| t.state == MessageState::Sent)
        .map(|t| t.at)
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
