//! Analytics: counters every delivery and engagement fact updates as it happens, and the
//! reports read from them (never by scanning messages).
//!
//! Layout (partition `ws#<ws>#analytics`, docs/tracking.md has the table):
//! - `day#<YYYY-MM-DD>#<shard>`: the workspace's counters of one UTC day;
//! - `cpg#<campaign>#<run>#<shard>`: one campaign run's counters (a campaign's figures
//!   are the sum over its runs);
//! - `link#<campaign>#<link index, 4 digits>#<shard>`: one link of a campaign (its URL
//!   and its human unique / human total / bot clicks).
//!
//! Counters are sharded ([`SHARDS`] items per counter, a random one per write) so a busy
//! campaign spreads its writes over several items; [`record_batch`] first sums the facts
//! of a batch per item, so a recorder batch costs one write per touched shard.
//!
//! Uniqueness is per message: the first human open, first human click and first human
//! click of each link are conditional updates on the message item ([`mark_first`]), so a
//! redelivered or repeated event never counts twice as unique.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use rand::Rng;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::AppResult;
use crate::keys;
use crate::ports::store::{Cond, ItemExt, Key, Query, SortKeyCond, Store, StoreError, Update};

/// Counter items per counter: a write goes to a random one, a read sums them.
pub const SHARDS: u32 = 8;

/// Counter attribute names (the same on every counter item).
pub mod attr {
    pub const SENT: &str = "sent";
    pub const DELIVERED: &str = "delivered";
    pub const BOUNCED: &str = "bounced";
    pub const BOUNCED_HARD: &str = "bounced_hard";
    pub const BOUNCED_SOFT: &str = "bounced_soft";
    pub const COMPLAINED: &str = "complained";
    pub const UNSUBSCRIBED: &str = "unsubscribed";
    pub const REPLIED: &str = "replied";
    pub const OPENS_HUMAN_UNIQUE: &str = "opens_human_unique";
    pub const OPENS_HUMAN: &str = "opens_human";
    pub const OPENS_MACHINE: &str = "opens_machine";
    pub const CLICKS_HUMAN_UNIQUE: &str = "clicks_human_unique";
    pub const CLICKS_HUMAN: &str = "clicks_human";
    pub const CLICKS_BOT: &str = "clicks_bot";
    /// On link items: the link's destination.
    pub const URL: &str = "url";
}

/// Attributes set on the message item the first time something happens to it.
pub mod first {
    /// The first human open.
    pub const HUMAN_OPEN: &str = "first_open_at";
    /// The first human click (any link).
    pub const HUMAN_CLICK: &str = "first_click_at";
    /// The first human click of link `i`.
    pub fn link(i: u32) -> String {
        format!("first_click_l{i}")
    }
}

/// The campaign run a message belongs to (its `mp_campaign` / `mp_run` tags).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RunRef {
    pub campaign_id: String,
    pub run_id: String,
}

/// Something that happened to a message, as the counters see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "fact", rename_all = "snake_case")]
pub enum Fact {
    /// The provider accepted the message.
    Sent,
    Delivered,
    /// `hard` = a permanent bounce.
    Bounced {
        hard: bool,
    },
    Complained,
    Unsubscribed,
    Replied,
    /// An open; `unique` = the message's first human open (see [`mark_first`]).
    Open {
        human: bool,
        unique: bool,
    },
    /// A click on link `link` (`url` its destination); `unique` = the message's first
    /// human click, `link_unique` = the first human click of this link in this message.
    Click {
        human: bool,
        unique: bool,
        link: u32,
        url: String,
        link_unique: bool,
    },
}

/// One fact with when it happened and the campaign run it counts for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Occurrence {
    pub at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<RunRef>,
    pub fact: Fact,
}

impl Fact {
    /// The counter increments of this fact.
    fn deltas(&self) -> Vec<&'static str> {
        use attr::*;
        match self {
            Fact::Sent => vec![SENT],
            Fact::Delivered => vec![DELIVERED],
            Fact::Bounced { hard: true } => vec![BOUNCED, BOUNCED_HARD],
            Fact::Bounced { hard: false } => vec![BOUNCED, BOUNCED_SOFT],
            Fact::Complained => vec![COMPLAINED],
            Fact::Unsubscribed => vec![UNSUBSCRIBED],
            Fact::Replied => vec![REPLIED],
            Fact::Open { human: false, .. } => vec![OPENS_MACHINE],
            Fact::Open {
                human: true,
                unique,
            } => {
                if *unique {
                    vec![OPENS_HUMAN, OPENS_HUMAN_UNIQUE]
                } else {
                    vec![OPENS_HUMAN]
                }
            }
            Fact::Click { human: false, .. } => vec![CLICKS_BOT],
            Fact::Click {
                human: true,
                unique,
                ..
            } => {
                if *unique {
                    vec![CLICKS_HUMAN, CLICKS_HUMAN_UNIQUE]
                } else {
                    vec![CLICKS_HUMAN]
                }
            }
        }
    }

    /// The increments of the link's own counter (clicks of campaign messages only).
    fn link_deltas(&self) -> Option<(u32, &str, Vec<&'static str>)> {
        use attr::*;
        match self {
            Fact::Click {
                human: false,
                link,
                url,
                ..
            } => Some((*link, url, vec![CLICKS_BOT])),
            Fact::Click {
                human: true,
                link,
                url,
                link_unique,
                ..
            } => Some((
                *link,
                url,
                if *link_unique {
                    vec![CLICKS_HUMAN, CLICKS_HUMAN_UNIQUE]
                } else {
                    vec![CLICKS_HUMAN]
                },
            )),
            _ => None,
        }
    }
}

pub fn pk(ws: &str) -> String {
    keys::ws(ws, keys::ANALYTICS)
}

fn day_sk(day: NaiveDate, shard: u32) -> String {
    format!("day#{}#{shard}", day.format("%Y-%m-%d"))
}

/// Counts one fact.
pub async fn record(store: &dyn Store, ws: &str, occurrence: &Occurrence) -> AppResult<()> {
    record_batch(store, ws, std::slice::from_ref(occurrence)).await
}

/// Counts a batch of facts of one workspace: the increments are summed per counter item
/// first, so the batch costs one write per counter it touches (on one random shard each).
/// Not idempotent by itself: callers count a fact once (the recorder dedupes by event id,
/// the message state machine by its conditional transitions).
pub async fn record_batch(
    store: &dyn Store,
    ws: &str,
    occurrences: &[Occurrence],
) -> AppResult<()> {
    for (key, update) in counter_updates(ws, occurrences) {
        store.update(&key, update, None).await?;
    }
    Ok(())
}

/// The counter writes of a batch of facts: increments summed per counter, each counter's
/// on one random shard (the recorder puts these in its transaction).
pub fn counter_updates(ws: &str, occurrences: &[Occurrence]) -> Vec<(Key, Update)> {
    let (sums, urls) = sums(occurrences);
    let pk = pk(ws);
    let mut rng = rand::rng();
    sums.into_iter()
        .map(|(prefix, deltas)| {
            let shard = rng.random_range(0..SHARDS);
            let mut update = Update::new();
            for (a, d) in deltas {
                update = update.add(a, d);
            }
            if let Some(url) = urls.get(&prefix) {
                update = update.set(attr::URL, crate::ports::store::val::s(url.clone()));
            }
            (Key::new(pk.clone(), format!("{prefix}#{shard}")), update)
        })
        .collect()
}

/// The counters (sort-key prefixes, without the shard) that `occurrences` touch: as
/// many items as [`counter_updates`] writes for them.
pub fn counter_prefixes(occurrences: &[Occurrence]) -> std::collections::BTreeSet<String> {
    sums(occurrences).0.into_keys().collect()
}

type Sums = BTreeMap<String, BTreeMap<&'static str, i64>>;

/// Sort-key prefix (without the shard) → attribute → delta; plus the links' URLs.
fn sums(occurrences: &[Occurrence]) -> (Sums, BTreeMap<String, String>) {
    let mut sums: Sums = BTreeMap::new();
    let mut urls: BTreeMap<String, String> = BTreeMap::new();
    for o in occurrences {
        let day = format!("day#{}", o.at.date_naive().format("%Y-%m-%d"));
        for a in o.fact.deltas() {
            *sums.entry(day.clone()).or_default().entry(a).or_default() += 1;
            if let Some(run) = &o.run {
                let k = format!("cpg#{}#{}", run.campaign_id, run.run_id);
                *sums.entry(k).or_default().entry(a).or_default() += 1;
            }
        }
        if let (Some(run), Some((link, url, deltas))) = (&o.run, o.fact.link_deltas()) {
            let k = format!("link#{}#{link:04}", run.campaign_id);
            urls.insert(k.clone(), url.to_string());
            for a in deltas {
                *sums.entry(k.clone()).or_default().entry(a).or_default() += 1;
            }
        }
    }
    (sums, urls)
}

/// The campaign run of a message, from its tags.
pub fn run_of(m: &super::messages::MessageRecord) -> Option<RunRef> {
    let campaign_id = m.tags.get(super::campaigns::TAG_CAMPAIGN)?;
    let run_id = m.tags.get(super::campaigns::TAG_RUN)?;
    Some(RunRef {
        campaign_id: campaign_id.clone(),
        run_id: run_id.clone(),
    })
}

/// Counts a message's `sent` (the message's conditional transition makes it once).
/// A failed counter write is logged, never fails the send.
pub async fn note_sent(store: &dyn Store, m: &super::messages::MessageRecord, at: DateTime<Utc>) {
    let mut o = Some(Occurrence {
        at,
        run: run_of(m),
        fact: Fact::Sent,
    });
    // Inside a sender batch ([`batching`]): counted once per batch, not per message.
    let batched = SENT
        .try_with(|s| {
            if let Some(o) = o.take() {
                s.borrow_mut().push((m.workspace_id.clone(), o));
            }
        })
        .is_ok();
    if batched {
        return;
    }
    if let Some(o) = o
        && let Err(e) = record(store, &m.workspace_id, &o).await
    {
        tracing::warn!(error = %e, message = %m.id, "counting a sent message failed");
    }
}

tokio::task_local! {
    /// The sent messages of the batch being handled, counted when it ends.
    static SENT: std::cell::RefCell<Vec<(String, Occurrence)>>;
}

/// Runs `f` (a sender batch) and counts the messages it sent at the end: one write per
/// counter the batch touches (the day's, each campaign run's), instead of one per
/// message. A failed counter write is logged; it never fails the batch.
pub async fn batching<F: std::future::Future>(store: &dyn Store, f: F) -> F::Output {
    let (out, sent) = SENT
        .scope(std::cell::RefCell::new(Vec::new()), async {
            let out = f.await;
            let sent = SENT.with(|s| std::mem::take(&mut *s.borrow_mut()));
            (out, sent)
        })
        .await;
    let mut by_ws: BTreeMap<String, Vec<Occurrence>> = BTreeMap::new();
    for (ws, o) in sent {
        by_ws.entry(ws).or_default().push(o);
    }
    for (ws, occurrences) in by_ws {
        if let Err(e) = record_batch(store, &ws, &occurrences).await {
            tracing::warn!(error = %e, workspace = %ws, sent = occurrences.len(), "counting sent messages failed");
        }
    }
    out
}

/// Sets `attribute` on the message item to `at` if it is not set yet: `true` when this
/// call set it (the first time), `false` when it was set already or the message is gone.
pub async fn mark_first(
    store: &dyn Store,
    ws: &str,
    message_id: &str,
    attribute: &str,
    at: DateTime<Utc>,
) -> AppResult<bool> {
    let key = super::messages::key(ws, message_id);
    let update = Update::new().set(attribute, crate::ports::store::val::s(at.to_rfc3339()));
    let cond = Cond::And(vec![
        Cond::ItemExists,
        Cond::AttrNotExists(attribute.to_string()),
    ]);
    match store.update(&key, update, Some(cond)).await {
        Ok(_) => Ok(true),
        Err(StoreError::ConditionFailed) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

// ---- reading ------------------------------------------------------------------------------

/// Counter totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Counts {
    pub sent: i64,
    pub delivered: i64,
    /// Hard and soft.
    pub bounced: i64,
    pub bounced_hard: i64,
    pub bounced_soft: i64,
    pub complained: i64,
    pub unsubscribed: i64,
    pub replied: i64,
    /// Messages opened by a person at least once.
    pub unique_human_opens: i64,
    pub human_opens: i64,
    /// Opens by machines (Apple Mail Privacy Protection prefetches).
    pub machine_opens: i64,
    /// Messages with at least one click by a person.
    pub unique_human_clicks: i64,
    pub human_clicks: i64,
    /// Clicks by link scanners.
    pub bot_clicks: i64,
}

impl Counts {
    fn add_item(&mut self, item: &crate::ports::store::Item) {
        let n = |a: &str| item.num_attr(a).unwrap_or(0);
        self.sent += n(attr::SENT);
        self.delivered += n(attr::DELIVERED);
        self.bounced += n(attr::BOUNCED);
        self.bounced_hard += n(attr::BOUNCED_HARD);
        self.bounced_soft += n(attr::BOUNCED_SOFT);
        self.complained += n(attr::COMPLAINED);
        self.unsubscribed += n(attr::UNSUBSCRIBED);
        self.replied += n(attr::REPLIED);
        self.unique_human_opens += n(attr::OPENS_HUMAN_UNIQUE);
        self.human_opens += n(attr::OPENS_HUMAN);
        self.machine_opens += n(attr::OPENS_MACHINE);
        self.unique_human_clicks += n(attr::CLICKS_HUMAN_UNIQUE);
        self.human_clicks += n(attr::CLICKS_HUMAN);
        self.bot_clicks += n(attr::CLICKS_BOT);
    }

    /// The rates of these counts.
    pub fn rates(&self) -> Rates {
        let ratio = |n: i64, d: i64| if d > 0 { n as f64 / d as f64 } else { 0.0 };
        // Engagement is relative to delivered mail; where no delivery events arrive (a
        // provider without webhooks), to sent mail.
        let base = if self.delivered > 0 {
            self.delivered
        } else {
            self.sent
        };
        Rates {
            delivery: ratio(self.delivered, self.sent),
            bounce: ratio(self.bounced, self.sent),
            hard_bounce: ratio(self.bounced_hard, self.sent),
            complaint: ratio(self.complained, base),
            unsubscribe: ratio(self.unsubscribed, base),
            reply: ratio(self.replied, base),
            open: ratio(self.unique_human_opens, base),
            click: ratio(self.unique_human_clicks, base),
            click_to_open: ratio(self.unique_human_clicks, self.unique_human_opens),
        }
    }
}

/// Rates between 0 and 1 (0 when the denominator is 0). Delivery and bounce rates are of
/// sent mail; the others of delivered mail (of sent mail when nothing reported delivery).
/// Open and click rates count unique human opens and clicks only.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Rates {
    pub delivery: f64,
    pub bounce: f64,
    pub hard_bounce: f64,
    pub complaint: f64,
    pub unsubscribe: f64,
    pub reply: f64,
    pub open: f64,
    pub click: f64,
    /// Unique human clicks per unique human open.
    pub click_to_open: f64,
}

/// Every item of a partition range (all pages).
async fn query_all(store: &dyn Store, q: Query) -> AppResult<Vec<crate::ports::store::Item>> {
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let page = store.query(q.clone().cursor(cursor)).await?;
        out.extend(page.items);
        match page.cursor {
            Some(c) => cursor = Some(c),
            None => return Ok(out),
        }
    }
}

/// The daily counters of `from..=to` (UTC days), one entry per day with any count.
pub async fn daily(
    store: &dyn Store,
    ws: &str,
    from: NaiveDate,
    to: NaiveDate,
) -> AppResult<Vec<(NaiveDate, Counts)>> {
    let q = Query::partition(pk(ws)).sk(SortKeyCond::Between(
        day_sk(from, 0),
        format!("day#{}#~", to.format("%Y-%m-%d")),
    ));
    let mut days: BTreeMap<NaiveDate, Counts> = BTreeMap::new();
    for item in query_all(store, q).await? {
        let Some(day) = item
            .str_attr(crate::ports::store::SK)
            .and_then(|sk| sk.split('#').nth(1))
            .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
        else {
            continue;
        };
        days.entry(day).or_default().add_item(&item);
    }
    Ok(days.into_iter().collect())
}

/// The workspace's totals over `from..=to`.
pub async fn overview(
    store: &dyn Store,
    ws: &str,
    from: NaiveDate,
    to: NaiveDate,
) -> AppResult<Counts> {
    let mut total = Counts::default();
    for (_, c) in daily(store, ws, from, to).await? {
        total.sent += c.sent;
        total.delivered += c.delivered;
        total.bounced += c.bounced;
        total.bounced_hard += c.bounced_hard;
        total.bounced_soft += c.bounced_soft;
        total.complained += c.complained;
        total.unsubscribed += c.unsubscribed;
        total.replied += c.replied;
        total.unique_human_opens += c.unique_human_opens;
        total.human_opens += c.human_opens;
        total.machine_opens += c.machine_opens;
        total.unique_human_clicks += c.unique_human_clicks;
        total.human_clicks += c.human_clicks;
        total.bot_clicks += c.bot_clicks;
    }
    Ok(total)
}

/// A campaign's totals and each run's (run id → counts).
pub async fn campaign(
    store: &dyn Store,
    ws: &str,
    campaign_id: &str,
) -> AppResult<(Counts, BTreeMap<String, Counts>)> {
    let q = Query::partition(pk(ws)).sk(SortKeyCond::BeginsWith(format!("cpg#{campaign_id}#")));
    let mut total = Counts::default();
    let mut runs: BTreeMap<String, Counts> = BTreeMap::new();
    for item in query_all(store, q).await? {
        let Some(run) = item
            .str_attr(crate::ports::store::SK)
            .and_then(|sk| sk.split('#').nth(2))
            .map(str::to_string)
        else {
            continue;
        };
        total.add_item(&item);
        runs.entry(run).or_default().add_item(&item);
    }
    Ok((total, runs))
}

/// One link of a campaign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LinkCounts {
    /// The link's position among the message's tracked links (0-based).
    pub index: u32,
    pub url: String,
    /// Messages in which a person clicked this link.
    pub unique_human_clicks: i64,
    pub human_clicks: i64,
    pub bot_clicks: i64,
}

/// A campaign's links, by index.
pub async fn links(store: &dyn Store, ws: &str, campaign_id: &str) -> AppResult<Vec<LinkCounts>> {
    let q = Query::partition(pk(ws)).sk(SortKeyCond::BeginsWith(format!("link#{campaign_id}#")));
    let mut out: BTreeMap<u32, LinkCounts> = BTreeMap::new();
    for item in query_all(store, q).await? {
        let Some(index) = item
            .str_attr(crate::ports::store::SK)
            .and_then(|sk| sk.split('#').nth(2))
            .and_then(|i| i.parse::<u32>().ok())
        else {
            continue;
        };
        let e = out.entry(index).or_insert_with(|| LinkCounts {
            index,
            url: String::new(),
            unique_human_clicks: 0,
            human_clicks: 0,
            bot_clicks: 0,
        });
        if e.url.is_empty()
            && let Some(u) = item.str_attr(attr::URL)
        {
            e.url = u.to_string();
        }
        let n = |a: &str| item.num_attr(a).unwrap_or(0);
        e.unique_human_clicks += n(attr::CLICKS_HUMAN_UNIQUE);
        e.human_clicks += n(attr::CLICKS_HUMAN);
        e.bot_clicks += n(attr::CLICKS_BOT);
    }
    Ok(out.into_values().collect())
}

#[cfg(all(test, feature = "local"))]
mod tests {
    use super::*;
    use crate::adapters::local::store::RedbStore;
    use chrono::TimeZone;

    fn run() -> Option<RunRef> {
        Some(RunRef {
            campaign_id: "cpg_1".into(),
            run_id: "run_1".into(),
        })
    }

    #[tokio::test]
    async fn facts_sum_per_day_campaign_and_link() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("db.redb")).unwrap();
        let d1 = Utc.with_ymd_and_hms(2026, 3, 1, 10, 0, 0).unwrap();
        let d2 = Utc.with_ymd_and_hms(2026, 3, 2, 23, 59, 0).unwrap();
        let at = |at, fact| Occurrence {
            at,
            run: run(),
            fact,
        };
        let click = |human, unique, link_unique| Fact::Click {
            human,
            unique,
            link: 1,
            url: "https://example.com/a".into(),
            link_unique,
        };
        let batch = vec![
            at(d1, Fact::Sent),
            at(d1, Fact::Sent),
            at(d1, Fact::Delivered),
            at(d1, Fact::Bounced { hard: true }),
            at(
                d1,
                Fact::Open {
                    human: true,
                    unique: true,
                },
            ),
            at(
                d1,
                Fact::Open {
                    human: true,
                    unique: false,
                },
            ),
            at(
                d1,
                Fact::Open {
                    human: false,
                    unique: false,
                },
            ),
            at(d2, click(true, true, true)),
            at(d2, click(true, false, false)),
            at(d2, click(false, false, false)),
            at(d2, Fact::Unsubscribed),
        ];
        record_batch(&store, "ws_a", &batch).await.unwrap();
        // Outside the campaign: only the day counts.
        record(
            &store,
            "ws_a",
            &Occurrence {
                at: d2,
                run: None,
                fact: Fact::Complained,
            },
        )
        .await
        .unwrap();

        let days = daily(&store, "ws_a", d1.date_naive(), d2.date_naive())
            .await
            .unwrap();
        assert_eq!(days.len(), 2);
        assert_eq!(days[0].1.sent, 2);
        assert_eq!(days[0].1.bounced_hard, 1);
        assert_eq!(days[0].1.unique_human_opens, 1);
        assert_eq!(days[0].1.human_opens, 2);
        assert_eq!(days[0].1.machine_opens, 1);
        assert_eq!(days[1].1.human_clicks, 2);
        assert_eq!(days[1].1.unique_human_clicks, 1);
        assert_eq!(days[1].1.bot_clicks, 1);
        assert_eq!(days[1].1.complained, 1);

        let total = overview(&store, "ws_a", d1.date_naive(), d1.date_naive())
            .await
            .unwrap();
        assert_eq!(total.sent, 2);
        assert_eq!(total.human_clicks, 0);
        assert_eq!(total.rates().delivery, 0.5);

        let (c, runs) = campaign(&store, "ws_a", "cpg_1").await.unwrap();
        assert_eq!(c.sent, 2);
        assert_eq!(c.complained, 0);
        assert_eq!(runs.len(), 1);
        assert_eq!(runs["run_1"].unsubscribed, 1);

        let l = links(&store, "ws_a", "cpg_1").await.unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].url, "https://example.com/a");
        assert_eq!(
            (l[0].unique_human_clicks, l[0].human_clicks, l[0].bot_clicks),
            (1, 2, 1)
        );
        // Another workspace sees nothing.
        assert!(
            campaign(&store, "ws_b", "cpg_1")
                .await
                .unwrap()
                .1
                .is_empty()
        );
    }
}
