//! Test doubles for the delivery engine: a provider that records what it accepted (the
//! "outbox" the fault suite counts), with a share of sends failing transiently,
//! permanently or throttled, and a share "crashing" the process right after the
//! provider accepted (a panic: nothing after it runs, as with a killed process).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use mailpilot_shared::mime::Mailbox;
use mailpilot_shared::ports::provider::{Accepted, OutgoingMessage, Provider, SendError};
use mailpilot_shared::usecases::send::Route;
use rand::Rng;

/// The message every simulated crash panics with (tests silence it).
pub const CRASH: &str = "simulated crash between send and record";

#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    pub transient: f64,
    pub permanent: f64,
    pub throttled: f64,
    /// After accepting: die before the sender records it.
    pub crash: f64,
}

#[derive(Default)]
pub struct TestProvider {
    pub faults: Faults,
    /// Honour the idempotency key (at most one delivery per key), as Resend does.
    pub dedup: bool,
    /// Accepted messages per recipient address.
    pub delivered: Mutex<HashMap<String, u32>>,
    pub keys: Mutex<HashSet<String>>,
    /// Sender-level refusal (unverified identity).
    pub refuse_sender: bool,
    /// What it accepted, in order.
    pub accepted: Mutex<Vec<mailpilot_shared::mime::MessageParts>>,
}

impl TestProvider {
    pub fn new(faults: Faults) -> Self {
        Self {
            faults,
            ..Self::default()
        }
    }

    pub fn count(&self, address: &str) -> u32 {
        self.delivered
            .lock()
            .unwrap()
            .get(address)
            .copied()
            .unwrap_or(0)
    }

    pub fn total(&self) -> u64 {
        self.delivered
            .lock()
            .unwrap()
            .values()
            .map(|v| u64::from(*v))
            .sum()
    }
}

#[async_trait]
impl Provider for TestProvider {
    fn kind(&self) -> &'static str {
        "test"
    }

    fn deduplicates(&self) -> bool {
        self.dedup
    }

    async fn send(&self, message: &OutgoingMessage) -> Result<Accepted, SendError> {
        if self.refuse_sender {
            return Err(SendError::Sender {
                code: "MessageRejected".into(),
                detail: "Email address is not verified".into(),
            });
        }
        let roll: f64 = rand::rng().random();
        let f = self.faults;
        if roll < f.transient {
            return Err(SendError::Transient {
                code: "503".into(),
                detail: "try later".into(),
                retry_after: None,
            });
        }
        if roll < f.transient + f.permanent {
            return Err(SendError::Permanent {
                code: "550".into(),
                detail: "mailbox unavailable".into(),
            });
        }
        if roll < f.transient + f.permanent + f.throttled {
            return Err(SendError::Throttled {
                code: "Throttling".into(),
                retry_after: Some(Duration::from_secs(60)),
            });
        }
        let id = format!("test-{}", message.idempotency_key);
        if self.dedup
            && !self
                .keys
                .lock()
                .unwrap()
                .insert(message.idempotency_key.clone())
        {
            return Ok(Accepted {
                provider_message_id: id,
            });
        }
        *self
            .delivered
            .lock()
            .unwrap()
            .entry(message.parts.to.email.clone())
            .or_default() += 1;
        self.accepted.lock().unwrap().push(message.parts.clone());
        if rand::rng().random::<f64>() < f.crash {
            panic!("{CRASH}");
        }
        Ok(Accepted {
            provider_message_id: id,
        })
    }

    async fn verify(&self) -> Result<(), SendError> {
        Ok(())
    }
}

/// A route for `sender_id` through `provider`, no window, caps or rate.
pub fn route(sender_id: &str, provider: Arc<dyn Provider>) -> Route {
    Route {
        sender_id: sender_id.to_string(),
        from: Mailbox::new(Some("Acme"), "news@acme.example"),
        reply_to: None,
        connection_id: "conn_test".into(),
        provider,
        rate_per_sec: None,
        sender_tz: chrono_tz::UTC,
        window: None,
        sender_cap: None,
        workspace_cap: None,
        paused: false,
    }
}

/// Silences the panics of simulated crashes (they are expected), keeps all others.
pub fn quiet_simulated_crashes() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        if msg != CRASH {
            default(info);
        }
    }));
}

/// Writes a workspace record with id `ws` (the renderer reads the workspace's name,
/// footer and public URL for every message).
pub async fn put_workspace(store: &dyn mailpilot_shared::ports::store::Store, ws: &str) {
    let now = chrono::Utc::now();
    let record = mailpilot_shared::usecases::workspaces::Workspace {
        id: ws.to_string(),
        name: "Acme".into(),
        company_name: Some("Acme Inc.".into()),
        postal_address: Some("1 Main St, Springfield".into()),
        public_url: None,
        daily_cap: None,
        created_at: now,
        updated_at: now,
    };
    let (pk, sk) = mailpilot_shared::keys::workspace(ws);
    let item = mailpilot_shared::usecases::to_item(&pk, &sk, &record).unwrap();
    store.put(item, None).await.unwrap();
}
