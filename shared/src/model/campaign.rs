//! The life of a campaign: one state machine, pure.
//!
//! ```text
//! draft ──schedule──► scheduled ──fire──► planning ──planned──► sending ──settled──► completed
//!   │  ▲                  │  │                │   ▲                │  ▲                  │
//!   │  └──unschedule──────┘  │                ▼   │ resume         ▼  │ resume            │
//!   └────────launch──────────┼──────────►  paused ┘             paused┘                   │
//!                            │                                                          launch
//!   scheduled | planning | sending | paused ──cancel──► cancelled          (a new run) ◄─┘
//! ```
//!
//! `completed` can be launched (or scheduled) again: each launch is a new run whose
//! message ids are derived from (run, contact). `cancelled` is final. Editing the
//! campaign's content and audience is possible only in `draft`.

use std::fmt;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CampaignState {
    Draft,
    Scheduled,
    Planning,
    Sending,
    Paused,
    Completed,
    Cancelled,
}

impl CampaignState {
    pub const ALL: [CampaignState; 7] = [
        CampaignState::Draft,
        CampaignState::Scheduled,
        CampaignState::Planning,
        CampaignState::Sending,
        CampaignState::Paused,
        CampaignState::Completed,
        CampaignState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CampaignState::Draft => "draft",
            CampaignState::Scheduled => "scheduled",
            CampaignState::Planning => "planning",
            CampaignState::Sending => "sending",
            CampaignState::Paused => "paused",
            CampaignState::Completed => "completed",
            CampaignState::Cancelled => "cancelled",
        }
    }

    /// Content, audience and senders may change only in a draft.
    pub fn is_editable(self) -> bool {
        self == CampaignState::Draft
    }

    /// A campaign with a run in progress (or about to start) cannot be deleted.
    pub fn is_deletable(self) -> bool {
        matches!(
            self,
            CampaignState::Draft | CampaignState::Completed | CampaignState::Cancelled
        )
    }

    /// Messages of the current run may be handed to a provider.
    pub fn may_send(self) -> bool {
        matches!(self, CampaignState::Planning | CampaignState::Sending)
    }
}

impl fmt::Display for CampaignState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something that happens to a campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CampaignAction {
    /// Start a run now (`POST /launch` without `at`).
    Launch,
    /// Start a run at a time (`POST /launch` with `at`).
    Schedule,
    /// Take a pending schedule back (`POST /unschedule`).
    Unschedule,
    /// The schedule's time came.
    Fire,
    /// The planner wrote the last page.
    Planned,
    /// Every message of the run is settled.
    Settled,
    Pause,
    /// `planning_done` says where the run was.
    Resume {
        planning_done: bool,
    },
    Cancel,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a {state} campaign cannot {action:?}")]
pub struct InvalidCampaignTransition {
    pub state: CampaignState,
    pub action: CampaignAction,
}

/// The state after `action`, or why it is not allowed.
pub fn next_state(
    state: CampaignState,
    action: CampaignAction,
) -> Result<CampaignState, InvalidCampaignTransition> {
    use CampaignAction as A;
    use CampaignState as S;
    let next = match (state, action) {
        (S::Draft | S::Completed | S::Scheduled, A::Launch) => Some(S::Planning),
        (S::Draft | S::Completed, A::Schedule) => Some(S::Scheduled),
        (S::Scheduled, A::Unschedule) => Some(S::Draft),
        (S::Scheduled, A::Fire) => Some(S::Planning),
        (S::Planning, A::Planned) => Some(S::Sending),
        (S::Sending, A::Settled) => Some(S::Completed),
        (S::Planning | S::Sending, A::Pause) => Some(S::Paused),
        (S::Paused, A::Resume { planning_done }) => Some(if planning_done {
            S::Sending
        } else {
            S::Planning
        }),
        (S::Scheduled | S::Planning | S::Sending | S::Paused, A::Cancel) => Some(S::Cancelled),
        _ => None,
    };
    next.ok_or(InvalidCampaignTransition { state, action })
}

/// One sender of a campaign's pool, as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolSender {
    pub sender_id: String,
    /// Sends a day (with its warm-up ramp applied for the day planned); `None`: no cap.
    pub cap: Option<u64>,
}

/// Rotation across a pool of senders under each sender's daily cap and the workspace's
/// daily cap (cold-email style): recipients go round-robin to the senders that still
/// have room today; when none has, planning moves on to the next day. The state is
/// serialisable so the planner keeps it with the run between pages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolRotation {
    pub senders: Vec<PoolSender>,
    pub workspace_cap: Option<u64>,
    /// Days after the launch day (0 = the launch day).
    pub day: u32,
    /// Assigned today, per sender (same order as `senders`).
    pub used: Vec<u64>,
    pub workspace_used: u64,
    /// The next sender to try.
    pub next: usize,
}

/// What the rotation gave one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assignment {
    /// Index into the pool.
    pub sender: usize,
    /// Days after the launch day.
    pub day: u32,
}

impl PoolRotation {
    /// A rotation over a non-empty pool.
    pub fn new(senders: Vec<PoolSender>, workspace_cap: Option<u64>) -> Self {
        let used = vec![0; senders.len()];
        Self {
            senders,
            workspace_cap,
            day: 0,
            used,
            workspace_used: 0,
            next: 0,
        }
    }

    fn has_room(&self, i: usize) -> bool {
        self.senders[i].cap.is_none_or(|c| self.used[i] < c)
    }

    fn workspace_room(&self) -> bool {
        self.workspace_cap.is_none_or(|c| self.workspace_used < c)
    }

    /// Assigns the next recipient. `None` only when no sender can ever send (every cap
    /// is zero, or the workspace cap is zero).
    pub fn assign(&mut self) -> Option<Assignment> {
        let n = self.senders.len();
        if n == 0 || self.workspace_cap == Some(0) || self.senders.iter().all(|s| s.cap == Some(0))
        {
            return None;
        }
        loop {
            if self.workspace_room() {
                for k in 0..n {
                    let i = (self.next + k) % n;
                    if self.has_room(i) {
                        self.used[i] += 1;
                        self.workspace_used += 1;
                        self.next = (i + 1) % n;
                        return Some(Assignment {
                            sender: i,
                            day: self.day,
                        });
                    }
                }
            }
            // Everyone is full today: the next day starts with fresh caps.
            self.day += 1;
            self.used.iter_mut().for_each(|u| *u = 0);
            self.workspace_used = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use CampaignAction as A;
    use CampaignState as S;

    const ACTIONS: [CampaignAction; 10] = [
        A::Launch,
        A::Schedule,
        A::Unschedule,
        A::Fire,
        A::Planned,
        A::Settled,
        A::Pause,
        A::Resume {
            planning_done: true,
        },
        A::Resume {
            planning_done: false,
        },
        A::Cancel,
    ];

    #[test]
    fn the_happy_path_is_draft_scheduled_planning_sending_completed() {
        let mut s = S::Draft;
        for (a, want) in [
            (A::Schedule, S::Scheduled),
            (A::Fire, S::Planning),
            (A::Planned, S::Sending),
            (A::Settled, S::Completed),
            (A::Launch, S::Planning),
        ] {
            s = next_state(s, a).unwrap();
            assert_eq!(s, want);
        }
    }

    #[test]
    fn pause_and_resume_return_to_where_the_run_was() {
        let p = next_state(S::Planning, A::Pause).unwrap();
        assert_eq!(p, S::Paused);
        let r = |done| {
            next_state(
                S::Paused,
                A::Resume {
                    planning_done: done,
                },
            )
            .unwrap()
        };
        assert_eq!(r(false), S::Planning);
        assert_eq!(r(true), S::Sending);
        assert!(next_state(S::Draft, A::Pause).is_err());
        assert!(next_state(S::Scheduled, A::Pause).is_err());
        assert!(
            next_state(
                S::Sending,
                A::Resume {
                    planning_done: true
                }
            )
            .is_err()
        );
    }

    #[test]
    fn cancelled_is_final_and_completed_only_relaunches() {
        for a in ACTIONS {
            assert!(next_state(S::Cancelled, a).is_err(), "{a:?}");
        }
        let allowed: Vec<_> = ACTIONS
            .into_iter()
            .filter(|a| next_state(S::Completed, *a).is_ok())
            .collect();
        assert_eq!(allowed, vec![A::Launch, A::Schedule]);
    }

    #[test]
    fn a_draft_cannot_be_cancelled_but_every_live_state_can() {
        assert!(next_state(S::Draft, A::Cancel).is_err());
        for s in [S::Scheduled, S::Planning, S::Sending, S::Paused] {
            assert_eq!(next_state(s, A::Cancel).unwrap(), S::Cancelled);
        }
    }

    #[test]
    fn only_a_scheduled_campaign_fires_or_unschedules() {
        for s in CampaignState::ALL {
            assert_eq!(next_state(s, A::Fire).is_ok(), s == S::Scheduled, "{s}");
            assert_eq!(
                next_state(s, A::Unschedule).is_ok(),
                s == S::Scheduled,
                "{s}"
            );
        }
    }

    #[test]
    fn the_transition_table_is_exactly_this() {
        let mut n = 0;
        for s in CampaignState::ALL {
            for a in ACTIONS {
                if next_state(s, a).is_ok() {
                    n += 1;
                }
            }
        }
        // launch ×3, schedule ×2, unschedule, fire, planned, settled, pause ×2,
        // resume ×2, cancel ×4.
        assert_eq!(n, 17);
    }

    #[test]
    fn only_drafts_are_editable_and_live_runs_are_not_deletable() {
        for s in CampaignState::ALL {
            assert_eq!(s.is_editable(), s == S::Draft);
        }
        for s in [S::Scheduled, S::Planning, S::Sending, S::Paused] {
            assert!(!s.is_deletable());
        }
    }

    fn pool(caps: &[Option<u64>]) -> PoolRotation {
        PoolRotation::new(
            caps.iter()
                .enumerate()
                .map(|(i, c)| PoolSender {
                    sender_id: format!("snd_{i}"),
                    cap: *c,
                })
                .collect(),
            None,
        )
    }

    #[test]
    fn rotation_round_robins_and_skips_full_senders() {
        let mut r = pool(&[Some(1), Some(3), None]);
        let got: Vec<(usize, u32)> = (0..6)
            .map(|_| r.assign().map(|a| (a.sender, a.day)).unwrap())
            .collect();
        assert_eq!(got, vec![(0, 0), (1, 0), (2, 0), (1, 0), (2, 0), (1, 0)]);
    }

    #[test]
    fn rotation_moves_to_the_next_day_when_every_cap_is_used() {
        let mut r = pool(&[Some(2), Some(1)]);
        let days: Vec<u32> = (0..7).map(|_| r.assign().unwrap().day).collect();
        assert_eq!(days, vec![0, 0, 0, 1, 1, 1, 2]);
        let mut w = PoolRotation::new(pool(&[None, None]).senders, Some(3));
        let days: Vec<u32> = (0..7).map(|_| w.assign().unwrap().day).collect();
        assert_eq!(days, vec![0, 0, 0, 1, 1, 1, 2]);
        assert!(pool(&[Some(0)]).assign().is_none());
        assert!(pool(&[]).assign().is_none());
    }

    proptest::proptest! {
        #[test]
        fn rotation_never_exceeds_any_cap(
            caps in proptest::collection::vec(proptest::option::of(0u64..20), 1..6),
            ws_cap in proptest::option::of(1u64..40),
            n in 0usize..500,
        ) {
            let mut r = PoolRotation::new(pool(&caps).senders, ws_cap);
            let mut per_day: std::collections::HashMap<(usize, u32), u64> = Default::default();
            let mut ws_day: std::collections::HashMap<u32, u64> = Default::default();
            for _ in 0..n {
                let Some(a) = r.assign() else { break };
                *per_day.entry((a.sender, a.day)).or_default() += 1;
                *ws_day.entry(a.day).or_default() += 1;
            }
            for ((s, _), used) in &per_day {
                if let Some(cap) = caps[*s] {
                    proptest::prop_assert!(*used <= cap);
                }
            }
            for used in ws_day.values() {
                proptest::prop_assert!(ws_cap.is_none_or(|c| *used <= c));
            }
        }
    }
}
