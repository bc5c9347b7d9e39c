//! The life of a message: one state machine, pure.
//!
//! ```text
//! planned ──► queued ──► sending ──► sent ──► delivered | bounced | complained
//!    │          ▲  │        │  │
//!    │          │  │        │  └──► queued            (transient error: retry later)
//!    │          │  │        └─────► deferred(until)   (outside the window, over a cap)
//!    │          │  └──────────────► skipped(reason)   (suppressed, invalid address, …)
//!    ▼          │
//! deferred ─────┘ (when due)        failed(reason) from queued, sending or deferred
//! ```
//!
//! `skipped` and `failed` are terminal; `sent` ends the sender's work and delivery
//! facts (`delivered`, `bounced`, `complained`) arrive later from provider events.
//! `failed → queued` (`retry-failed`) is the one way back, once, never for
//! `failed(unknown_outcome)`. Opens, clicks and replies are events, not states.
//! docs/delivery.md explains every transition; the reasons are API-CONVENTIONS.md's.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::SuppressionReason;

/// Where a message is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MessageState {
    Planned,
    Queued,
    Sending,
    Sent,
    Deferred,
    Delivered,
    Bounced,
    Complained,
    Skipped,
    Failed,
}

impl MessageState {
    pub const ALL: [MessageState; 10] = [
        MessageState::Planned,
        MessageState::Queued,
        MessageState::Sending,
        MessageState::Sent,
        MessageState::Deferred,
        MessageState::Delivered,
        MessageState::Bounced,
        MessageState::Complained,
        MessageState::Skipped,
        MessageState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MessageState::Planned => "planned",
            MessageState::Queued => "queued",
            MessageState::Sending => "sending",
            MessageState::Sent => "sent",
            MessageState::Deferred => "deferred",
            MessageState::Delivered => "delivered",
            MessageState::Bounced => "bounced",
            MessageState::Complained => "complained",
            MessageState::Skipped => "skipped",
            MessageState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<MessageState> {
        MessageState::ALL.into_iter().find(|m| m.as_str() == s)
    }

    /// No sender will touch the message again (delivery facts may still arrive after `sent`).
    pub fn is_settled(self) -> bool {
        !matches!(
            self,
            MessageState::Planned
                | MessageState::Queued
                | MessageState::Sending
                | MessageState::Deferred
        )
    }

    /// A sender may claim a message in this state (when it is due).
    pub fn is_claimable(self) -> bool {
        matches!(
            self,
            MessageState::Planned | MessageState::Queued | MessageState::Deferred
        )
    }
}

impl fmt::Display for MessageState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a message was skipped (never handed to a provider).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SkipReason {
    Unsubscribed,
    Bounced,
    Complained,
    Suppressed,
    Duplicate,
    InvalidAddress,
    Cancelled,
    CollisionAlreadySent,
    CollisionLowerPriority,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::Unsubscribed => "unsubscribed",
            SkipReason::Bounced => "bounced",
            SkipReason::Complained => "complained",
            SkipReason::Suppressed => "suppressed",
            SkipReason::Duplicate => "duplicate",
            SkipReason::InvalidAddress => "invalid_address",
            SkipReason::Cancelled => "cancelled",
            SkipReason::CollisionAlreadySent => "collision:already_sent",
            SkipReason::CollisionLowerPriority => "collision:lower_priority",
        }
    }

    /// The skip reason of a suppressed address (API-CONVENTIONS.md's mapping).
    pub fn from_suppression(reason: SuppressionReason) -> Self {
        match reason {
            SuppressionReason::Unsubscribed => SkipReason::Unsubscribed,
            SuppressionReason::HardBounce => SkipReason::Bounced,
            SuppressionReason::Complaint => SkipReason::Complained,
            SuppressionReason::Manual => SkipReason::Suppressed,
        }
    }
}

/// Why a message failed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FailReason {
    /// The provider refused this message for good: `permanent:<code>`.
    Permanent(String),
    /// Transient errors until the attempt limit.
    TransientExhausted,
    /// The process died after handing the message over and before recording the answer;
    /// it may have gone out, so it is never sent again automatically.
    UnknownOutcome,
    /// Its queue record ended in the dead-letter queue.
    DeadLetter,
    /// The provider refused the sender itself (unverified identity, suspended account).
    SenderPaused,
}

impl FailReason {
    pub fn code(&self) -> String {
        match self {
            FailReason::Permanent(code) => format!("permanent:{code}"),
            FailReason::TransientExhausted => "transient_exhausted".into(),
            FailReason::UnknownOutcome => "unknown_outcome".into(),
            FailReason::DeadLetter => "dead_letter".into(),
            FailReason::SenderPaused => "sender_paused".into(),
        }
    }

    /// The class of a failure reason, without the provider's code: `permanent:550` →
    /// `permanent`, `transient_exhausted` as is (what metrics and counters break out).
    pub fn class_of(reason: &str) -> &str {
        reason.split(':').next().unwrap_or(reason)
    }

    pub fn parse(s: &str) -> Option<FailReason> {
        Some(match s {
            "transient_exhausted" => FailReason::TransientExhausted,
            "unknown_outcome" => FailReason::UnknownOutcome,
            "dead_letter" => FailReason::DeadLetter,
            "sender_paused" => FailReason::SenderPaused,
            other => FailReason::Permanent(other.strip_prefix("permanent:")?.to_string()),
        })
    }
}

/// Why a message was deferred.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeferReason {
    /// Outside the sender's sending window.
    Window,
    /// The sender's daily cap (with its warm-up ramp) is used up.
    SenderCap,
    /// The workspace's daily cap is used up.
    WorkspaceCap,
    /// Its campaign is paused: parked until resume.
    CampaignPaused,
}

impl DeferReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DeferReason::Window => "window",
            DeferReason::SenderCap => "sender_cap",
            DeferReason::WorkspaceCap => "workspace_cap",
            DeferReason::CampaignPaused => "campaign_paused",
        }
    }
}

/// Something that happens to a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// Handed to a send queue (transactional at once; bulk when due).
    Enqueue,
    /// A sender claimed it (conditional write: one claimant).
    Claim,
    /// The provider accepted it.
    Sent,
    /// A transient error: back to the queue for another attempt.
    Retry,
    /// Outside the window or over a cap: wait for the next opening.
    Defer(DeferReason),
    Skip(SkipReason),
    Fail(FailReason),
    /// Delivery facts from provider events.
    Delivered,
    Bounced,
    Complained,
    /// `retry-failed`: an operator sends a failed message again (once).
    RetryFailed,
}

/// A transition that the state machine does not allow from the current state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a {state} message cannot take the transition {transition:?}")]
pub struct InvalidTransition {
    pub state: MessageState,
    pub transition: Transition,
}

/// The state after `transition`, or why it is not allowed.
///
/// `retried_once` says whether the message already went through `retry-failed`;
/// `reason` is the current failure reason (for `retry-failed`).
pub fn next_state(
    state: MessageState,
    transition: &Transition,
    failure: Option<&FailReason>,
    retried_once: bool,
) -> Result<MessageState, InvalidTransition> {
    use MessageState as S;
    use Transition as T;
    let next = match (state, transition) {
        (S::Planned | S::Deferred, T::Enqueue) => Some(S::Queued),
        (S::Planned | S::Queued | S::Deferred, T::Claim) => Some(S::Sending),
        (S::Sending, T::Sent) => Some(S::Sent),
        // A late `sent` settles a message the crash-window rule already gave up on.
        (S::Failed, T::Sent) if failure == Some(&FailReason::UnknownOutcome) => Some(S::Sent),
        (S::Sending, T::Retry) => Some(S::Queued),
        (S::Sending | S::Planned | S::Queued, T::Defer(_)) => Some(S::Deferred),
        (S::Planned | S::Queued | S::Sending | S::Deferred, T::Skip(_)) => Some(S::Skipped),
        (S::Planned | S::Queued | S::Sending | S::Deferred, T::Fail(_)) => Some(S::Failed),
        // The provider accepted it, then refused it after all (SES Reject, Rendering
        // Failure): a permanent failure, also of an unknown outcome.
        (S::Sent, T::Fail(FailReason::Permanent(_))) => Some(S::Failed),
        (S::Failed, T::Fail(FailReason::Permanent(_)))
            if failure == Some(&FailReason::UnknownOutcome) =>
        {
            Some(S::Failed)
        }
        // Delivery facts: a bounce or complaint can follow a delivery; unknown outcomes
        // are settled by the provider's events.
        (S::Sent, T::Delivered) => Some(S::Delivered),
        (S::Sent | S::Delivered, T::Bounced) => Some(S::Bounced),
        (S::Sent | S::Delivered, T::Complained) => Some(S::Complained),
        (S::Failed, T::Delivered | T::Bounced | T::Complained)
            if failure == Some(&FailReason::UnknownOutcome) =>
        {
            Some(match transition {
                T::Delivered => S::Delivered,
                T::Bounced => S::Bounced,
                _ => S::Complained,
            })
        }
        (S::Failed, T::RetryFailed)
            if !retried_once && failure != Some(&FailReason::UnknownOutcome) =>
        {
            Some(S::Queued)
        }
        _ => None,
    };
    next.ok_or_else(|| InvalidTransition {
        state,
        transition: transition.clone(),
    })
}

/// The reason recorded with a transition, if it carries one.
pub fn reason_of(transition: &Transition) -> Option<String> {
    match transition {
        Transition::Skip(r) => Some(r.as_str().into()),
        Transition::Fail(r) => Some(r.code()),
        Transition::Defer(r) => Some(r.as_str().into()),
        _ => None,
    }
}

/// Backoff before the `attempt`-th retry (1-based) of a transient failure: 30 s doubling,
/// at most 12 hours (SQS's longest visibility timeout). `hint` is the provider's
/// `Retry-After`, honoured when longer.
pub fn retry_delay_secs(attempt: u32, hint_secs: Option<u64>) -> u64 {
    const MAX: u64 = 12 * 60 * 60;
    let base = 30u64.saturating_mul(1u64 << attempt.saturating_sub(1).min(20));
    base.max(hint_secs.unwrap_or(0)).min(MAX)
}

/// Attempts a message gets before `failed(transient_exhausted)`. The queues'
/// `maxReceiveCount` (template.yaml) is above this, so the sender decides first and
/// the dead-letter queue only catches records the sender could not handle at all.
pub const MAX_ATTEMPTS: u32 = 8;

const ID_ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// The id of the message a campaign run sends to a contact: derived, so planning the
/// same (run, contact) twice writes the same message (idempotent planning). It has the
/// shape of every message id (`msg_` + 26 base-32 characters).
pub fn message_id_for(run_id: &str, contact_id: &str) -> String {
    let digest = Sha256::digest(format!("{run_id}\u{0}{contact_id}").as_bytes());
    // One character per digest byte: 256 is a multiple of 32, so each stays uniform.
    let body: String = digest[..26]
        .iter()
        .map(|b| ID_ALPHABET[usize::from(b & 31)] as char)
        .collect();
    format!("msg_{body}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Id;
    use MessageState as S;
    use Transition as T;

    fn go(s: S, t: T) -> Result<S, InvalidTransition> {
        next_state(s, &t, None, false)
    }

    #[test]
    fn the_happy_path_is_planned_queued_sending_sent_delivered() {
        let mut s = S::Planned;
        for (t, want) in [
            (T::Enqueue, S::Queued),
            (T::Claim, S::Sending),
            (T::Sent, S::Sent),
            (T::Delivered, S::Delivered),
            (T::Bounced, S::Bounced),
        ] {
            s = go(s, t).unwrap();
            assert_eq!(s, want);
        }
    }

    #[test]
    fn a_sent_message_cannot_be_claimed_again() {
        for s in [S::Sending, S::Sent, S::Delivered, S::Skipped, S::Failed] {
            assert!(go(s, T::Claim).is_err(), "{s} must not be claimable");
        }
    }

    #[test]
    fn deferred_goes_back_to_queued_when_due() {
        let s = go(S::Sending, T::Defer(DeferReason::Window)).unwrap();
        assert_eq!(s, S::Deferred);
        assert_eq!(go(s, T::Enqueue).unwrap(), S::Queued);
        assert_eq!(go(s, T::Claim).unwrap(), S::Sending);
    }

    #[test]
    fn terminal_states_stay_terminal() {
        for s in [S::Skipped, S::Failed] {
            for t in [
                T::Enqueue,
                T::Claim,
                T::Retry,
                T::Defer(DeferReason::Window),
            ] {
                assert!(go(s, t).is_err());
            }
        }
    }

    #[test]
    fn retry_failed_is_once_and_never_for_unknown_outcome() {
        let perm = FailReason::Permanent("550".into());
        assert_eq!(
            next_state(S::Failed, &T::RetryFailed, Some(&perm), false).unwrap(),
            S::Queued
        );
        assert!(next_state(S::Failed, &T::RetryFailed, Some(&perm), true).is_err());
        assert!(
            next_state(
                S::Failed,
                &T::RetryFailed,
                Some(&FailReason::UnknownOutcome),
                false
            )
            .is_err()
        );
    }

    #[test]
    fn unknown_outcomes_are_settled_by_events_or_a_late_sent() {
        let u = FailReason::UnknownOutcome;
        assert_eq!(
            next_state(S::Failed, &T::Delivered, Some(&u), false).unwrap(),
            S::Delivered
        );
        assert_eq!(
            next_state(S::Failed, &T::Sent, Some(&u), false).unwrap(),
            S::Sent
        );
        let p = FailReason::Permanent("550".into());
        assert!(next_state(S::Failed, &T::Delivered, Some(&p), false).is_err());
        let rejected = T::Fail(FailReason::Permanent("reject".into()));
        assert_eq!(
            next_state(S::Failed, &rejected, Some(&u), false).unwrap(),
            S::Failed
        );
        assert!(next_state(S::Failed, &rejected, Some(&p), false).is_err());
        assert_eq!(go(S::Sent, rejected).unwrap(), S::Failed);
        assert!(go(S::Delivered, T::Fail(FailReason::Permanent("x".into()))).is_err());
        assert!(go(S::Sent, T::Fail(FailReason::DeadLetter)).is_err());
    }

    #[test]
    fn reasons_use_the_one_vocabulary() {
        assert_eq!(FailReason::Permanent("550".into()).code(), "permanent:550");
        for r in [
            FailReason::TransientExhausted,
            FailReason::UnknownOutcome,
            FailReason::DeadLetter,
            FailReason::SenderPaused,
            FailReason::Permanent("MessageRejected".into()),
        ] {
            assert_eq!(FailReason::parse(&r.code()), Some(r));
        }
        assert_eq!(FailReason::parse("nonsense"), None);
        assert_eq!(
            SkipReason::from_suppression(SuppressionReason::HardBounce).as_str(),
            "bounced"
        );
        assert_eq!(
            SkipReason::CollisionAlreadySent.as_str(),
            "collision:already_sent"
        );
        for s in MessageState::ALL {
            assert_eq!(MessageState::parse(s.as_str()), Some(s));
        }
    }

    #[test]
    fn retry_delay_grows_and_is_capped_at_12_hours() {
        let delays: Vec<u64> = (1..=MAX_ATTEMPTS)
            .map(|a| retry_delay_secs(a, None))
            .collect();
        assert!(delays.windows(2).all(|w| w[0] < w[1]), "{delays:?}");
        assert_eq!(retry_delay_secs(40, None), 12 * 3600);
        assert_eq!(retry_delay_secs(1, Some(600)), 600);
        assert_eq!(retry_delay_secs(1, Some(10 * 24 * 3600)), 12 * 3600);
    }

    #[test]
    fn campaign_message_ids_are_derived_and_well_formed() {
        let a = message_id_for("run_1", "ct_1");
        assert_eq!(a, message_id_for("run_1", "ct_1"));
        assert_ne!(a, message_id_for("run_1", "ct_2"));
        assert_ne!(a, message_id_for("run_2", "ct_1"));
        assert!(Id::is_valid("msg", &a), "{a}");
    }
}
