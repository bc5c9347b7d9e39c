//! Sender health: a sender whose recent mail draws too many complaints or hard bounces
//! stops sending campaigns before its reputation (and the account's) suffers. Gmail and
//! Yahoo ask bulk senders to stay under 0.3% spam complaints; SES reviews accounts with a
//! bounce rate over 5% (and 10% puts them on probation).
//!
//! Volume is what the sender took from its daily cap (`counters` `sender#<id>#<day>`,
//! written by the sender for every message handed to a provider); hard bounces and
//! complaints are counted here per sender and UTC day (`health#<id>#<day>`), once per
//! event (the event recorder's claim guards redelivery). Over the last `window_days`,
//! once at least `min_volume` messages went out, a rate past its threshold pauses every
//! running campaign that uses the sender, with the reason `sender_health:<rate>`.

use chrono::{DateTime, Duration, NaiveDate, Utc};

use super::campaigns;
use super::messages::MessageRecord;
use crate::error::{AppError, AppResult};
use crate::keys;
use crate::model::campaign::CampaignState;
use crate::ports::store::{ItemExt, Key, Query, SortKeyCond, Store, TTL, Update, val};

/// Thresholds (rates are fractions: 0.003 = 0.3%).
#[derive(Debug, Clone, PartialEq)]
pub struct HealthConfig {
    pub complaint_rate: f64,
    pub hard_bounce_rate: f64,
    /// Messages sent in the window before any rate is judged.
    pub min_volume: u64,
    pub window_days: i64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            complaint_rate: 0.003,
            hard_bounce_rate: 0.05,
            min_volume: 500,
            window_days: 7,
        }
    }
}

/// What happened to one of the sender's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthFact {
    HardBounce,
    Complaint,
}

impl HealthFact {
    fn attr(self) -> &'static str {
        match self {
            HealthFact::HardBounce => "hard_bounces",
            HealthFact::Complaint => "complaints",
        }
    }
}

/// A sender's figures over the window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Figures {
    pub sent: u64,
    pub hard_bounces: u64,
    pub complaints: u64,
}

/// The reason to pause, if the figures call for it (pure).
pub fn judge(f: Figures, cfg: &HealthConfig) -> Option<&'static str> {
    if f.sent == 0 || f.sent < cfg.min_volume {
        return None;
    }
    let rate = |n: u64| n as f64 / f.sent as f64;
    if rate(f.complaints) > cfg.complaint_rate {
        Some("sender_health:complaint_rate")
    } else if rate(f.hard_bounces) > cfg.hard_bounce_rate {
        Some("sender_health:hard_bounce_rate")
    } else {
        None
    }
}

fn counters_pk(ws: &str) -> String {
    keys::ws(ws, keys::COUNTERS)
}

/// Counts a fact against the message's sender, then judges the sender.
pub async fn note(
    store: &dyn Store,
    now: DateTime<Utc>,
    cfg: &HealthConfig,
    m: &MessageRecord,
    fact: HealthFact,
) -> AppResult<()> {
    let ws = &m.workspace_id;
    let key = Key::new(
        counters_pk(ws),
        format!("health#{}#{}", m.sender_id, now.date_naive()),
    );
    store
        .update(
            &key,
            Update::new().add(fact.attr(), 1).set(
                TTL,
                val::n((now + Duration::days(cfg.window_days + 3)).timestamp()),
            ),
            None,
        )
        .await?;
    let f = figures(store, now, cfg, ws, &m.sender_id).await?;
    if let Some(reason) = judge(f, cfg) {
        tracing::warn!(ws, sender = %m.sender_id, ?f, reason, "pausing the sender's campaigns");
        pause_campaigns(store, ws, &m.sender_id, reason).await?;
    }
    Ok(())
}

/// The sender's figures over the window ending today.
pub async fn figures(
    store: &dyn Store,
    now: DateTime<Utc>,
    cfg: &HealthConfig,
    ws: &str,
    sender_id: &str,
) -> AppResult<Figures> {
    // A day more than the window: the cap day is the sender's local date.
    let since = now.date_naive() - Duration::days(cfg.window_days);
    let mut f = Figures::default();
    for (prefix, is_volume) in [
        (format!("sender#{sender_id}#"), true),
        (format!("health#{sender_id}#"), false),
    ] {
        let mut cursor = None;
        loop {
            let page = store
                .query(
                    Query::partition(counters_pk(ws))
                        .sk(SortKeyCond::BeginsWith(prefix.clone()))
                        .cursor(cursor),
                )
                .await?;
            for item in &page.items {
                let day = item
                    .str_attr("sk")
                    .and_then(|sk| sk.strip_prefix(prefix.as_str()))
                    .and_then(|d| d.parse::<NaiveDate>().ok());
                if day.is_none_or(|d| d < since) {
                    continue;
                }
                let n = |a: &str| item.num_attr(a).unwrap_or(0).max(0) as u64;
                if is_volume {
                    f.sent += n("count");
                } else {
                    f.hard_bounces += n("hard_bounces");
                    f.complaints += n("complaints");
                }
            }
            cursor = page.cursor;
            if cursor.is_none() {
                break;
            }
        }
    }
    Ok(f)
}

/// Pauses every planning or sending campaign that sends from the sender.
async fn pause_campaigns(
    store: &dyn Store,
    ws: &str,
    sender_id: &str,
    reason: &str,
) -> AppResult<()> {
    let mut cursor = None;
    loop {
        let page = campaigns::list(store, ws, 100, cursor).await?;
        for c in page.data {
            let running = matches!(c.state, CampaignState::Planning | CampaignState::Sending);
            if running && c.sender_ids.iter().any(|s| s == sender_id) {
                match campaigns::pause_because(store, ws, &c.id, reason).await {
                    // Paused meanwhile, or changed under us: the next event judges again.
                    Ok(_) | Err(AppError::Conflict { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        cursor = page.next_cursor;
        if cursor.is_none() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judged_only_past_the_minimum_volume() {
        let cfg = HealthConfig::default();
        let f = |sent, hard_bounces, complaints| Figures {
            sent,
            hard_bounces,
            complaints,
        };
        assert_eq!(judge(f(499, 100, 100), &cfg), None);
        assert_eq!(judge(f(0, 1, 1), &cfg), None);
        assert_eq!(judge(f(1000, 0, 3), &cfg), None, "0.3% is not past 0.3%");
        assert_eq!(
            judge(f(1000, 0, 4), &cfg),
            Some("sender_health:complaint_rate")
        );
        assert_eq!(judge(f(1000, 50, 0), &cfg), None);
        assert_eq!(
            judge(f(1000, 51, 0), &cfg),
            Some("sender_health:hard_bounce_rate")
        );
    }
}
