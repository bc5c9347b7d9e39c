//! Provider events: what SES and Resend tell us after a message left (delivered, bounced,
//! complained, rejected, delayed). One verified, normalised [`ProviderEvent`] at a time:
//!
//! 1. find the message: our tags (`mp_ws`/`mp_msg`) or header, else the pointer the sender
//!    wrote from the provider's message id; a webhook received on a workspace's connection
//!    only ever touches that workspace's messages;
//! 2. claim the event id (one conditional put): a redelivered event changes nothing;
//! 3. apply it: the message's delivery fact with its timeline entry, the suppression
//!    (a hard bounce or a complaint at once, soft bounces after a count), the sender's
//!    health counters (which may pause its campaigns).
//!
//! If applying fails, the claim is taken back so the provider's redelivery tries again.

use chrono::{DateTime, Duration, Utc};

use super::analytics::{self, Fact, Occurrence};
use super::messages::{self, MessageRecord, TransitionError, transition};
use super::sender_health::{self, HealthConfig, HealthFact};
use super::suppressions::{self, AddSuppression};
use crate::error::{AppError, AppResult};
use crate::keys;
use crate::model::SuppressionReason;
use crate::model::message::{FailReason, MessageState, Transition};
use crate::ports::store::{Cond, Item, ItemExt, Key, Store, StoreError, TTL, Update, val};
use crate::webhooks::events::{BounceClass, EventKind, ProviderEvent};

/// How provider events act.
#[derive(Debug, Clone)]
pub struct EventConfig {
    /// Soft (transient or undetermined) bounces of one address before it is suppressed
    /// as a hard bounce; 0 = never.
    pub soft_bounce_limit: u32,
    /// How long event claims (the redelivery guard) are kept, in days.
    pub retention_days: i64,
    pub health: HealthConfig,
}

impl Default for EventConfig {
    fn default() -> Self {
        EventConfig {
            soft_bounce_limit: 3,
            retention_days: messages::DEFAULT_RETENTION_DAYS,
            health: HealthConfig::default(),
        }
    }
}

impl EventConfig {
    /// The defaults, overridden by `MAILPILOT_SOFT_BOUNCE_LIMIT`,
    /// `MAILPILOT_HEALTH_COMPLAINT_RATE`, `MAILPILOT_HEALTH_BOUNCE_RATE` and
    /// `MAILPILOT_HEALTH_MIN_VOLUME` where set (the Lambda functions' configuration).
    pub fn from_env() -> Self {
        fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        }
        let mut c = EventConfig::default();
        c.soft_bounce_limit = env_or("MAILPILOT_SOFT_BOUNCE_LIMIT", c.soft_bounce_limit);
        c.health.complaint_rate =
            env_or("MAILPILOT_HEALTH_COMPLAINT_RATE", c.health.complaint_rate);
        c.health.hard_bounce_rate =
            env_or("MAILPILOT_HEALTH_BOUNCE_RATE", c.health.hard_bounce_rate);
        c.health.min_volume = env_or("MAILPILOT_HEALTH_MIN_VOLUME", c.health.min_volume);
        c
    }
}

/// Where an event came from, which bounds what it may touch.
#[derive(Debug, Clone, Copy)]
pub enum Origin<'a> {
    /// A webhook posted to one workspace's provider connection: only that workspace.
    Connection { workspace_id: &'a str },
    /// Our own AWS account's event bus (EventBridge → SQS): the tags say the workspace.
    Account,
}

/// What became of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// Applied to message `1` of workspace `0`.
    Applied {
        workspace_id: String,
        message_id: String,
    },
    /// Seen before: nothing changed.
    Duplicate,
    /// No message of ours (or not of the connection's workspace): acknowledged, ignored.
    Unmatched,
}

/// Records one verified provider event.
pub async fn record(
    store: &dyn Store,
    now: DateTime<Utc>,
    cfg: &EventConfig,
    origin: Origin<'_>,
    ev: &ProviderEvent,
) -> AppResult<Recorded> {
    let Some(m) = find_message(store, origin, ev).await? else {
        tracing::info!(event = %ev.event_id, provider = %ev.provider, "provider event for no message of ours");
        return Ok(Recorded::Unmatched);
    };
    let Some(claim) = claim(
        store,
        now,
        cfg.retention_days,
        &m,
        &ev.provider,
        &ev.event_id,
    )
    .await?
    else {
        return Ok(Recorded::Duplicate);
    };
    if let Err(e) = apply(store, now, cfg, &m, ev).await {
        unclaim(store, &claim).await;
        return Err(e);
    }
    Ok(Recorded::Applied {
        workspace_id: m.workspace_id,
        message_id: m.id,
    })
}

/// Claims an event id for a message (one conditional put); `None` if it was seen before.
pub(crate) async fn claim(
    store: &dyn Store,
    now: DateTime<Utc>,
    retention_days: i64,
    m: &MessageRecord,
    source: &str,
    event_id: &str,
) -> AppResult<Option<Key>> {
    let key = Key::new(
        keys::ws(&m.workspace_id, keys::PROVIDER_EVENTS),
        format!("{source}#{event_id}"),
    );
    let mut item = Item::new();
    item.insert("pk".into(), val::s(&key.pk));
    item.insert("sk".into(), val::s(&key.sk));
    item.insert("msg".into(), val::s(&m.id));
    item.insert(
        TTL.into(),
        val::n((now + Duration::days(retention_days)).timestamp()),
    );
    match store.put(item, Some(Cond::ItemNotExists)).await {
        Ok(()) => Ok(Some(key)),
        Err(StoreError::ConditionFailed) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Takes a claim back after applying failed, so the provider's redelivery tries again.
pub(crate) async fn unclaim(store: &dyn Store, key: &Key) {
    if let Err(e) = store.delete(key, None).await {
        tracing::error!(error = %e, "taking back an event claim failed");
    }
}

/// Adds a timeline entry that keeps the state (read again on a concurrent change).
pub(crate) async fn note_on(
    store: &dyn Store,
    now: DateTime<Utc>,
    m: &MessageRecord,
    why: String,
) -> AppResult<()> {
    let mut current = m.clone();
    for _ in 0..5 {
        match note(store, &current, now, why.clone()).await {
            Ok(()) => return Ok(()),
            Err(TransitionError::Conflict) => {
                match messages::load(store, &m.workspace_id, &m.id).await? {
                    Some(fresh) => current = fresh,
                    None => return Ok(()),
                }
            }
            Err(TransitionError::Invalid(_)) => return Ok(()),
            Err(TransitionError::App(e)) => return Err(e),
        }
    }
    Err(AppError::Store(StoreError::Throttled))
}

/// Our tags first (checked against the provider id when the message has one), then the
/// provider-id pointer.
async fn find_message(
    store: &dyn Store,
    origin: Origin<'_>,
    ev: &ProviderEvent,
) -> AppResult<Option<MessageRecord>> {
    let allowed = |ws: &str| match origin {
        Origin::Connection { workspace_id } => workspace_id == ws,
        Origin::Account => true,
    };
    let tagged_ws = match origin {
        Origin::Connection { workspace_id } => {
            Some(ev.workspace_id.as_deref().unwrap_or(workspace_id))
        }
        Origin::Account => ev.workspace_id.as_deref(),
    };
    if let (Some(ws), Some(msg)) = (tagged_ws, ev.message_id.as_deref())
        && allowed(ws)
        && let Some(m) = messages::load(store, ws, msg).await?
        && m.provider_message_id
            .as_deref()
            .is_none_or(|p| p == ev.provider_message_id)
    {
        return Ok(Some(m));
    }
    let (pk, sk) = keys::provider_message(&ev.provider, &ev.provider_message_id);
    let Some(pointer) = store.get(&Key::new(pk, sk)).await? else {
        return Ok(None);
    };
    let (Some(ws), Some(msg)) = (pointer.str_attr("ws"), pointer.str_attr("msg")) else {
        return Ok(None);
    };
    if !allowed(ws) {
        return Ok(None);
    }
    messages::load(store, ws, msg).await
}

/// What an event does to its message.
enum Step {
    Fact(Transition, Option<String>),
    Note(String),
    Nothing,
}

fn step_of(m: &MessageRecord, kind: &EventKind) -> Step {
    let unknown = m.state == MessageState::Failed
        && m.reason.as_deref() == Some(FailReason::UnknownOutcome.code().as_str());
    match kind {
        // The provider took it: settles a crash-window message; otherwise nothing new.
        EventKind::Send if unknown => Step::Fact(Transition::Sent, None),
        EventKind::Send => Step::Nothing,
        EventKind::Delivered => Step::Fact(Transition::Delivered, None),
        EventKind::Bounced {
            class: BounceClass::Permanent,
            sub_type,
            ..
        } => Step::Fact(Transition::Bounced, Some(reason("hard_bounce", sub_type))),
        EventKind::Bounced {
            class, sub_type, ..
        } => Step::Note(reason(
            if *class == BounceClass::Transient {
                "soft_bounce"
            } else {
                "undetermined_bounce"
            },
            sub_type,
        )),
        EventKind::Complained { feedback_type } => Step::Fact(
            Transition::Complained,
            Some(reason(
                "complaint",
                feedback_type.as_deref().unwrap_or_default(),
            )),
        ),
        EventKind::Rejected { .. } => Step::Fact(
            Transition::Fail(FailReason::Permanent("reject".into())),
            None,
        ),
        EventKind::RenderingFailed { .. } => Step::Fact(
            Transition::Fail(FailReason::Permanent("rendering_failure".into())),
            None,
        ),
        EventKind::DeliveryDelayed { delay_type } => {
            Step::Note(reason("delivery_delayed", delay_type))
        }
    }
}

fn reason(class: &str, detail: &str) -> String {
    let detail: String = detail
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        .take(60)
        .collect();
    if detail.is_empty() {
        class.to_string()
    } else {
        format!("{class}:{}", detail.to_ascii_lowercase())
    }
}

async fn apply(
    store: &dyn Store,
    now: DateTime<Utc>,
    cfg: &EventConfig,
    m: &MessageRecord,
    ev: &ProviderEvent,
) -> AppResult<()> {
    let changed = update_message(store, now, m, ev).await?;
    // The analytics counters: a fact counts when it changed the message (once, by the
    // conditional transition); a soft bounce once per event (the claim).
    let fact = match &ev.kind {
        EventKind::Delivered if changed => Some(Fact::Delivered),
        EventKind::Bounced {
            class: BounceClass::Permanent,
            ..
        } if changed => Some(Fact::Bounced { hard: true }),
        EventKind::Bounced {
            class: BounceClass::Transient | BounceClass::Undetermined,
            ..
        } => Some(Fact::Bounced { hard: false }),
        EventKind::Complained { .. } if changed => Some(Fact::Complained),
        _ => None,
    };
    if let Some(fact) = fact {
        count(store, now, m, fact).await;
    }
    let source = format!("{}:{}", ev.provider, ev.event_id);
    let suppress = |reason| AddSuppression {
        email: m.to.clone(),
        reason: Some(reason),
        source: Some(truncate(&source, 200)),
    };
    match &ev.kind {
        EventKind::Bounced {
            class: BounceClass::Permanent,
            ..
        } => {
            suppress_quietly(
                store,
                &m.workspace_id,
                suppress(SuppressionReason::HardBounce),
            )
            .await?;
            if changed {
                sender_health::note(store, now, &cfg.health, m, HealthFact::HardBounce).await?;
            }
        }
        EventKind::Bounced { .. } => {
            // Soft bounces suppress once they reach the limit (0: never).
            let over_limit = cfg.soft_bounce_limit > 0
                && soft_bounces(store, now, &m.workspace_id, &m.to).await?
                    >= i64::from(cfg.soft_bounce_limit);
            if over_limit {
                suppress_quietly(
                    store,
                    &m.workspace_id,
                    suppress(SuppressionReason::HardBounce),
                )
                .await?;
            }
        }
        EventKind::Complained { .. } => {
            suppress_quietly(
                store,
                &m.workspace_id,
                suppress(SuppressionReason::Complaint),
            )
            .await?;
            if changed {
                sender_health::note(store, now, &cfg.health, m, HealthFact::Complaint).await?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Counts a fact in the analytics counters; a failed counter write is logged, never
/// fails the event (the message and the suppression are the truth).
pub(crate) async fn count(store: &dyn Store, now: DateTime<Utc>, m: &MessageRecord, fact: Fact) {
    let o = Occurrence {
        at: now,
        run: analytics::run_of(m),
        fact,
    };
    if let Err(e) = analytics::record(store, &m.workspace_id, &o).await {
        tracing::warn!(error = %e, msg = %m.id, "counting a provider event failed");
    }
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// An address we cannot parse cannot be suppressed either (it was never sendable).
async fn suppress_quietly(store: &dyn Store, ws: &str, add: AddSuppression) -> AppResult<()> {
    match suppressions::add(store, ws, add).await {
        Ok(_) => Ok(()),
        Err(AppError::Invalid(errors)) => {
            tracing::warn!(?errors, "an event's address could not be suppressed");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Counts one more soft bounce of an address (kept 90 days) and returns the count.
async fn soft_bounces(
    store: &dyn Store,
    now: DateTime<Utc>,
    ws: &str,
    email: &str,
) -> AppResult<i64> {
    let key = Key::new(keys::ws(ws, keys::COUNTERS), format!("softbounce#{email}"));
    let item = store
        .update(
            &key,
            Update::new()
                .add("count", 1)
                .set(TTL, val::n((now + Duration::days(90)).timestamp())),
            None,
        )
        .await?;
    Ok(item.num_attr("count").unwrap_or(1))
}

/// Writes the event's fact or note on the message; returns whether the state changed.
async fn update_message(
    store: &dyn Store,
    now: DateTime<Utc>,
    m: &MessageRecord,
    ev: &ProviderEvent,
) -> AppResult<bool> {
    let mut current = m.clone();
    for _ in 0..5 {
        let r = match step_of(&current, &ev.kind) {
            Step::Nothing => return Ok(false),
            Step::Fact(t, why) => {
                let provider = ev.provider.clone();
                let provider_id = ev.provider_message_id.clone();
                transition(store, &current, t, now, |n| {
                    if why.is_some() {
                        n.reason = why;
                    }
                    n.provider.get_or_insert(provider);
                    n.provider_message_id.get_or_insert(provider_id);
                })
                .await
                .map(|_| true)
            }
            Step::Note(why) => note(store, &current, now, why).await.map(|_| false),
        };
        match r {
            Ok(changed) => return Ok(changed),
            // Already bounced, or a fact that does not apply to this state: the event
            // stays recorded, the message as it is.
            Err(TransitionError::Invalid(e)) => {
                tracing::info!(msg = %m.id, error = %e, "provider event does not change the message");
                return Ok(false);
            }
            Err(TransitionError::Conflict) => {
                match messages::load(store, &m.workspace_id, &m.id).await? {
                    Some(fresh) => current = fresh,
                    None => return Ok(false),
                }
            }
            Err(TransitionError::App(e)) => return Err(e),
        }
    }
    Err(AppError::Store(StoreError::Throttled))
}

/// A timeline entry that keeps the state (a delay, a soft bounce).
async fn note(
    store: &dyn Store,
    m: &MessageRecord,
    now: DateTime<Utc>,
    why: String,
) -> Result<(), TransitionError> {
    let mut timeline = m.timeline.clone();
    timeline.push(messages::TimelineEntry {
        state: m.state,
        at: now,
        reason: Some(why),
    });
    if timeline.len() > 40 {
        timeline.remove(1);
    }
    let enc = |v: &dyn erased_serde_free::Enc| v.enc();
    let update = Update::new()
        .set("timeline", enc(&timeline)?)
        .set("updated_at", enc(&now)?)
        .set("version", val::n(m.version as i64 + 1));
    store
        .update(
            &messages::key(&m.workspace_id, &m.id),
            update,
            Some(Cond::eq("version", val::n(m.version as i64))),
        )
        .await?;
    Ok(())
}

mod erased_serde_free {
    use crate::error::AppResult;
    use crate::ports::store::Value;

    pub trait Enc {
        fn enc(&self) -> AppResult<Value>;
    }

    impl<T: serde::Serialize> Enc for T {
        fn enc(&self) -> AppResult<Value> {
            Ok(serde_dynamo::to_attribute_value(self)?)
        }
    }
}
