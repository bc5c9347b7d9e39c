//! Reconciliation by polling: for connections no webhook reaches (a Resend connection
//! without a webhook secret, e.g. a runner behind NAT), ask the provider what became of
//! each message it accepted, and settle the message through the webhooks' own path
//! ([`provider_events::record`]): the same timeline entry, suppression, analytics and
//! campaign counters, and the same guards (an event id claimed once, a conditional
//! transition), so a fact seen twice (webhook + poll, or two polls) changes nothing the
//! second time.
//!
//! The poll index is a [`MinuteIndex`] like the due index (`usecases::dispatch`): entries in the base
//! table under `poll#<epoch minute>#<shard>` ([`POLL_SHARDS`] shards by a hash of the
//! message id), sort key `<workspace>#<message>`, read with strong consistency from a
//! checkpoint of their own (`poll#checkpoint`: `accept_from`, `next`, shard, cursor), so
//! a run reads only the minutes that came due: its cost grows with due polls, not with
//! messages. The sender files a message's first poll in the transaction that records
//! `sent`, with a ConditionCheck that the poller has not closed its minute. Each poll
//! files the next one ([`POLL_AFTER`], counted from the send: 1 min, 10 min, 1 h, 6 h,
//! 1, 2 and 3 days) until a final fact (delivered, bounced, complained, failed) arrives,
//! the message was settled by other means (a webhook), or the last poll passed (then the
//! message stays `sent`). Polled entries are never deleted: the checkpoint passed them and
//! their TTL removes them.
//!
//! A provider's 429 (with `Retry-After`) or 5xx does not count as a poll: the entry is
//! filed again after the wait (at least a minute), and the rest of the run leaves that
//! connection alone; a connection's auth error counts as a poll; an id the provider does
//! not know (404) ends the polling.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use super::messages::{self, MessageRecord};
use super::minute_index::{Checkpoint, MinuteIndex, minute_of};
use super::provider_events::{self, EventConfig, Origin, Recorded};
use super::providers::{self, Providers, StoredSettings};
use crate::error::{AppError, AppResult};
use crate::model::message::{FailReason, MessageState};
use crate::ports::clock::Clock;
use crate::ports::provider::{DeliveryStatus, Provider, SendError};
use crate::ports::store::{Item, ItemExt, Store, TxAction, val};
use crate::webhooks::events::{BounceClass, EventKind, ProviderEvent};

/// Partitions per poll minute (polls are at most a connection's send rate per minute).
pub const POLL_SHARDS: u32 = 8;
/// When each poll is due, counted from the send; after the last one, polling stops.
pub const POLL_AFTER: [i64; 7] = [60, 10 * 60, 3600, 6 * 3600, 24 * 3600, 48 * 3600, 72 * 3600];
/// Retries after throttling or transient errors stop this long after the send.
const GIVE_UP_AFTER_SECS: i64 = 96 * 3600;

/// The poll index.
pub const POLLS: MinuteIndex = MinuteIndex {
    prefix: "poll",
    checkpoint_pk: "poll#checkpoint",
    shards: POLL_SHARDS,
    ttl_days: 7,
    page: 100,
};

/// The shard of a message's poll entries.
pub fn shard_of(message_id: &str) -> u32 {
    POLLS.shard_of(message_id)
}

pub fn poll_pk(minute: i64, shard: u32) -> String {
    POLLS.pk(minute, shard)
}

/// One entry of the poll index: poll message `msg` of workspace `ws`, sent through
/// connection `conn` with the provider's id `pid`, for the `n`th time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollEntry {
    pub ws: String,
    pub msg: String,
    pub conn: String,
    pub pid: String,
    /// Which poll this is (an index into [`POLL_AFTER`]).
    pub n: usize,
    /// When the provider accepted the message.
    pub sent: DateTime<Utc>,
}

impl PollEntry {
    /// The first poll of a message sent at `sent`.
    pub fn first(ws: &str, msg: &str, conn: &str, pid: &str, sent: DateTime<Utc>) -> Self {
        PollEntry {
            ws: ws.into(),
            msg: msg.into(),
            conn: conn.into(),
            pid: pid.into(),
            n: 0,
            sent,
        }
    }

    /// When this poll is due.
    pub fn due(&self) -> DateTime<Utc> {
        self.sent + Duration::seconds(POLL_AFTER[self.n.min(POLL_AFTER.len() - 1)])
    }

    fn item(&self, minute: i64) -> Item {
        let mut item = POLLS.entry(minute, &self.ws, &self.msg);
        item.insert("conn".into(), val::s(&self.conn));
        item.insert("pid".into(), val::s(&self.pid));
        item.insert("n".into(), val::n(self.n as i64));
        item.insert("sent".into(), val::n(self.sent.timestamp()));
        item
    }

    fn parse(item: &Item) -> Option<Self> {
        Some(PollEntry {
            ws: item.str_attr("ws")?.into(),
            msg: item.str_attr("msg")?.into(),
            conn: item.str_attr("conn")?.into(),
            pid: item.str_attr("pid")?.into(),
            n: usize::try_from(item.num_attr("n")?).ok()?,
            sent: DateTime::from_timestamp(item.num_attr("sent")?, 0)?,
        })
    }
}

/// Reads the poll checkpoint, creating it at the current minute on first use.
pub async fn checkpoint(store: &dyn Store, now: DateTime<Utc>) -> AppResult<Checkpoint> {
    POLLS.checkpoint(store, now).await
}

/// The transaction actions that file a poll entry (with `sent`): the entry at its due
/// minute (never below `accept_from`), and a check that the poller has not closed that
/// minute. Cancelled → read the checkpoint again and retry.
pub fn file_actions(e: &PollEntry, cp: &Checkpoint) -> Vec<TxAction> {
    let minute = cp.clamp(e.due());
    POLLS.file(e.item(minute), minute)
}

/// What a poller run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReconcileReport {
    pub minutes: u64,
    pub queries: u64,
    pub items_read: u64,
    /// Status requests made.
    pub polled: u64,
    /// Facts that changed a message (through `provider_events::record`).
    pub applied: u64,
    /// Facts seen before (a webhook or an earlier poll claimed them).
    pub duplicates: u64,
    /// Entries filed again for a later poll.
    pub refiled: u64,
    /// Entries put off by throttling or a transient error (not counted as polls).
    pub throttled: u64,
    /// Messages settled otherwise (a webhook), gone, or unknown to the provider.
    pub dropped: u64,
    /// Messages whose last poll passed without a final fact.
    pub gave_up: u64,
}

/// What the poller needs.
pub struct ReconcileDeps<'a> {
    pub store: &'a dyn Store,
    pub providers: &'a Providers,
    pub clock: &'a dyn Clock,
    pub events: &'a EventConfig,
}

/// Polls every entry of every minute that has fully passed, from the checkpoint on,
/// until done or `max_items` entries were read (the next run goes on from there).
pub async fn run(deps: &ReconcileDeps<'_>, max_items: u64) -> AppResult<ReconcileReport> {
    super::campaigns::counting(deps.store, run_counted(deps, max_items)).await
}

async fn run_counted(deps: &ReconcileDeps<'_>, max_items: u64) -> AppResult<ReconcileReport> {
    let Some(mut scan) = POLLS.scan(deps.store, deps.clock.now(), max_items).await? else {
        return Ok(ReconcileReport::default());
    };
    let mut run = Run {
        deps,
        accept_from: scan.accept_from(),
        held: HashMap::new(),
        connections: HashMap::new(),
        report: ReconcileReport::default(),
    };
    while let Some(items) = scan.next_page().await? {
        for item in &items {
            let Some(e) = PollEntry::parse(item) else {
                run.report.dropped += 1;
                continue;
            };
            // One entry's trouble (a connection whose key does not open, a store
            // hiccup) puts that poll off; if even that fails, the run stops here and
            // the next one resumes from the saved page.
            if let Err(err) = run.poll(&e).await {
                tracing::warn!(error = %err, msg = %e.msg, "a poll failed; put off");
                let later = deps.clock.now() + Duration::seconds(60);
                run.put_off(&e, later).await?;
            }
        }
    }
    run.report.minutes = scan.minutes;
    run.report.queries = scan.queries;
    run.report.items_read = scan.items_read;
    Ok(run.report)
}

/// When the next poll may be due: the start of the minute after the checkpoint's `next`.
pub async fn next_run_at(store: &dyn Store, now: DateTime<Utc>) -> AppResult<DateTime<Utc>> {
    POLLS.next_run_at(store, now).await
}

struct Run<'a, 'd> {
    deps: &'a ReconcileDeps<'d>,
    accept_from: i64,
    /// Connections that answered 429 or 5xx in this run, and until when to leave them.
    held: HashMap<(String, String), DateTime<Utc>>,
    /// The run's providers by (workspace, connection); `None`: gone or not pollable.
    connections: HashMap<(String, String), Option<Arc<dyn Provider>>>,
    report: ReconcileReport,
}

fn is_unknown_outcome(m: &MessageRecord) -> bool {
    m.state == MessageState::Failed
        && m.reason.as_deref() == Some(FailReason::UnknownOutcome.code().as_str())
}

/// Whether a poll could still change the message: `sent`, or a crash-window
/// `failed(unknown_outcome)`. Delivered, bounced, complained or failed otherwise: a
/// webhook (or an earlier poll) settled it.
fn pollable(m: &MessageRecord) -> bool {
    m.state == MessageState::Sent || is_unknown_outcome(m)
}

impl Run<'_, '_> {
    async fn poll(&mut self, e: &PollEntry) -> AppResult<()> {
        let deps = self.deps;
        let now = deps.clock.now();
        let conn_key = (e.ws.clone(), e.conn.clone());
        if let Some(until) = self.held.get(&conn_key).copied()
            && until > now
        {
            return self.put_off(e, until).await;
        }
        // The entry names its workspace: the message, the connection and every effect
        // stay inside it (an entry naming another workspace's message finds nothing).
        let Some(m) = messages::load(deps.store, &e.ws, &e.msg).await? else {
            self.report.dropped += 1;
            return Ok(());
        };
        if m.provider_message_id.as_deref() != Some(e.pid.as_str()) || !pollable(&m) {
            self.report.dropped += 1;
            return Ok(());
        }
        let Some(provider) = self.provider(&e.ws, &e.conn).await? else {
            self.report.dropped += 1;
            return Ok(());
        };
        self.report.polled += 1;
        match provider.status(&e.pid).await {
            Ok(status) => {
                if let Some(kind) = fact_of(status, &m) {
                    let ev = ProviderEvent {
                        provider: provider.kind().to_string(),
                        event_id: format!("poll:{}:{}", e.pid, status_code(status)),
                        kind,
                        provider_message_id: e.pid.clone(),
                        message_id: Some(e.msg.clone()),
                        workspace_id: Some(e.ws.clone()),
                        recipient: Some(m.to.clone()),
                        at: now,
                    };
                    let origin = Origin::Connection {
                        workspace_id: &e.ws,
                    };
                    match provider_events::record(deps.store, now, deps.events, origin, &ev).await?
                    {
                        Recorded::Applied { .. } => self.report.applied += 1,
                        Recorded::Duplicate => self.report.duplicates += 1,
                        Recorded::Unmatched => {}
                    }
                }
                if status.is_final() {
                    Ok(())
                } else {
                    self.next_poll(e, now).await
                }
            }
            Err(err @ (SendError::Throttled { .. } | SendError::Transient { .. })) => {
                let wait = err
                    .retry_after()
                    .map(|d| d.as_secs() as i64)
                    .unwrap_or(0)
                    .max(60);
                let until = now + Duration::seconds(wait);
                tracing::info!(error = %err, conn = %e.conn, "polling put off");
                self.held.insert(conn_key, until);
                self.put_off(e, until).await
            }
            Err(err @ SendError::Sender { .. }) => {
                tracing::warn!(error = %err, conn = %e.conn, "the provider refused the connection's status request");
                self.next_poll(e, now).await
            }
            Err(err @ SendError::Permanent { .. }) => {
                tracing::info!(error = %err, msg = %e.msg, "polling stopped");
                self.report.dropped += 1;
                Ok(())
            }
        }
    }

    /// The provider of a workspace's connection (built once per run); `None` when the
    /// connection is gone (or is of another workspace) or has no status to poll.
    async fn provider(&mut self, ws: &str, conn: &str) -> AppResult<Option<Arc<dyn Provider>>> {
        let key = (ws.to_string(), conn.to_string());
        if let Some(p) = self.connections.get(&key) {
            return Ok(p.clone());
        }
        let p = match providers::get(self.deps.store, ws, conn).await {
            Ok(c) if matches!(c.settings, StoredSettings::Resend(_)) => {
                Some(self.deps.providers.build(ws, &c).await?)
            }
            Ok(_) | Err(AppError::NotFound) => None,
            Err(err) => return Err(err),
        };
        self.connections.insert(key, p.clone());
        Ok(p)
    }

    /// Files the next poll of the backoff, or gives up after the last.
    async fn next_poll(&mut self, e: &PollEntry, now: DateTime<Utc>) -> AppResult<()> {
        if e.n + 1 >= POLL_AFTER.len() {
            tracing::info!(msg = %e.msg, "no final delivery fact after the last poll");
            self.report.gave_up += 1;
            return Ok(());
        }
        let next = PollEntry {
            n: e.n + 1,
            ..e.clone()
        };
        let at = next.due().max(now + Duration::seconds(60));
        self.file(&next, at).await?;
        self.report.refiled += 1;
        Ok(())
    }

    /// The same poll, later (throttling and transient errors do not count as polls).
    async fn put_off(&mut self, e: &PollEntry, until: DateTime<Utc>) -> AppResult<()> {
        if until - e.sent > Duration::seconds(GIVE_UP_AFTER_SECS) {
            self.report.gave_up += 1;
            return Ok(());
        }
        self.file(e, until).await?;
        self.report.throttled += 1;
        Ok(())
    }

    /// A plain put: this run closed every minute before the current one and no other run
    /// moves `accept_from` while it holds the checkpoint, so a minute after the current
    /// one is open.
    async fn file(&self, e: &PollEntry, at: DateTime<Utc>) -> AppResult<()> {
        let minute = minute_of(at).max(self.accept_from + 1);
        self.deps.store.put(e.item(minute), None).await?;
        Ok(())
    }
}

/// The fact a status stands for, given the message: `sent` settles only a crash-window
/// message; the others are the webhook events' facts.
fn fact_of(status: DeliveryStatus, m: &MessageRecord) -> Option<EventKind> {
    Some(match status {
        DeliveryStatus::Accepted if is_unknown_outcome(m) => EventKind::Send,
        DeliveryStatus::Accepted => return None,
        DeliveryStatus::Delivered => EventKind::Delivered,
        // Resend's `bounced` is a permanent rejection (its soft failures are
        // `delivery_delayed`).
        DeliveryStatus::Bounced => EventKind::Bounced {
            class: BounceClass::Permanent,
            sub_type: String::new(),
            diagnostic: None,
        },
        DeliveryStatus::Complained => EventKind::Complained {
            feedback_type: None,
        },
        DeliveryStatus::Delayed => EventKind::DeliveryDelayed {
            delay_type: "delivery_delayed".into(),
        },
        DeliveryStatus::Failed => EventKind::Rejected {
            reason: "failed".into(),
        },
    })
}

fn status_code(s: DeliveryStatus) -> &'static str {
    match s {
        DeliveryStatus::Accepted => "sent",
        DeliveryStatus::Delivered => "delivered",
        DeliveryStatus::Bounced => "bounced",
        DeliveryStatus::Complained => "complained",
        DeliveryStatus::Delayed => "delivery_delayed",
        DeliveryStatus::Failed => "failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_back_off_from_the_send_and_stop_after_three_days() {
        let sent: DateTime<Utc> = "2026-12-01T10:00:00Z".parse().unwrap();
        let mut e = PollEntry::first("ws_a", "msg_a", "conn_a", "re_1", sent);
        assert_eq!(e.due(), sent + Duration::minutes(1));
        e.n = 3;
        assert_eq!(e.due(), sent + Duration::hours(6));
        e.n = POLL_AFTER.len() - 1;
        assert_eq!(e.due(), sent + Duration::days(3));
        let item = e.item(minute_of(e.due()));
        assert_eq!(PollEntry::parse(&item), Some(e));
    }

    #[test]
    fn an_entry_is_filed_at_its_due_minute_never_below_the_checkpoint() {
        let sent: DateTime<Utc> = "2026-12-01T10:00:00Z".parse().unwrap();
        let e = PollEntry::first("ws_a", "msg_a", "conn_a", "re_1", sent);
        let cp = Checkpoint {
            accept_from: minute_of(sent) + 5,
            next: minute_of(sent) + 5,
            shard: 0,
            cursor: None,
        };
        let actions = file_actions(&e, &cp);
        let TxAction::Put { item, .. } = &actions[0] else {
            panic!("a put first");
        };
        assert_eq!(
            item.str_attr("pk"),
            Some(poll_pk(minute_of(sent) + 5, shard_of("msg_a")).as_str())
        );
        assert!(matches!(actions[1], TxAction::Check { .. }));
    }
}
