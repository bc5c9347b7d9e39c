//! Provider test doubles for the tests and benchmarks (feature `test-providers`):
//! [`NullProvider`] accepts everything and counts; [`FaultyProvider`] wraps another and
//! fails a set share of sends, deterministically from a seed.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use crate::ports::provider::{Accepted, DeliveryStatus, OutgoingMessage, Provider, SendError};

/// Accepts every message and counts them, per recipient too (so a test can tell whether
/// any address received a message twice).
#[derive(Debug, Default)]
pub struct NullProvider {
    sent: AtomicU64,
    per_recipient: Mutex<HashMap<String, u64>>,
    per_message: Mutex<HashMap<String, u64>>,
}

impl NullProvider {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Messages accepted so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// How many messages each address received.
    pub fn per_recipient(&self) -> HashMap<String, u64> {
        self.per_recipient
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }

    /// Message ids accepted more than once, with their counts.
    pub fn repeated_messages(&self) -> HashMap<String, u64> {
        self.per_message
            .lock()
            .map(|m| {
                m.iter()
                    .filter(|(_, n)| **n > 1)
                    .map(|(k, n)| (k.clone(), *n))
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[async_trait]
impl Provider for NullProvider {
    fn kind(&self) -> &'static str {
        "null"
    }

    /// No events.
    fn needs_message_pointer(&self) -> bool {
        false
    }

    async fn send(&self, message: &OutgoingMessage) -> Result<Accepted, SendError> {
        self.sent.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut m) = self.per_recipient.lock() {
            *m.entry(message.parts.to.email.clone()).or_default() += 1;
        }
        if let Ok(mut m) = self.per_message.lock() {
            *m.entry(message.parts.message_id.clone()).or_default() += 1;
        }
        Ok(Accepted {
            provider_message_id: format!("null-{}", message.parts.message_id),
        })
    }

    async fn verify(&self) -> Result<(), SendError> {
        Ok(())
    }
}

/// Shares of sends that fail, each in 0.0..=1.0 (their sum at most 1).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Faults {
    /// Fails this share of attempts as transient (decided per attempt: a retry may pass).
    pub transient: f64,
    /// Fails this share of attempts as throttled (per attempt).
    pub throttled: f64,
    /// Fails this share of messages as permanent (per message: every attempt fails).
    pub permanent: f64,
}

/// Wraps a provider and fails a deterministic share of sends. The draw is a hash of the
/// seed, the message's idempotency key and the attempt number for that key, so the same
/// seed and the same sends give the same failures, and retries draw afresh.
#[derive(Debug)]
pub struct FaultyProvider<P> {
    inner: P,
    faults: Faults,
    seed: u64,
    attempts: Mutex<HashMap<String, u64>>,
    injected: AtomicU64,
}

fn unit(parts: impl Hash) -> f64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    parts.hash(&mut h);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

impl<P: Provider> FaultyProvider<P> {
    pub fn new(inner: P, faults: Faults, seed: u64) -> Self {
        Self {
            inner,
            faults,
            seed,
            attempts: Mutex::default(),
            injected: AtomicU64::new(0),
        }
    }

    /// Failures injected so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::Relaxed)
    }

    pub fn inner(&self) -> &P {
        &self.inner
    }

    fn draw(&self, key: &str) -> Option<SendError> {
        if unit((self.seed, key, "permanent")) < self.faults.permanent {
            return Some(SendError::Permanent {
                code: "injected".into(),
                detail: "injected permanent failure".into(),
            });
        }
        let attempt = self
            .attempts
            .lock()
            .map(|mut m| {
                let n = m.entry(key.to_string()).or_default();
                *n += 1;
                *n
            })
            .unwrap_or(1);
        let u = unit((self.seed, key, attempt));
        if u < self.faults.transient {
            Some(SendError::Transient {
                code: "injected".into(),
                detail: "injected transient failure".into(),
                retry_after: None,
            })
        } else if u < self.faults.transient + self.faults.throttled {
            Some(SendError::Throttled {
                code: "injected".into(),
                retry_after: Some(Duration::from_secs(1)),
            })
        } else {
            None
        }
    }
}

#[async_trait]
impl<P: Provider> Provider for FaultyProvider<P> {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn deduplicates(&self) -> bool {
        self.inner.deduplicates()
    }

    fn needs_message_pointer(&self) -> bool {
        self.inner.needs_message_pointer()
    }

    fn polls_status(&self) -> bool {
        self.inner.polls_status()
    }

    async fn status(&self, provider_message_id: &str) -> Result<DeliveryStatus, SendError> {
        self.inner.status(provider_message_id).await
    }

    async fn send(&self, message: &OutgoingMessage) -> Result<Accepted, SendError> {
        if let Some(e) = self.draw(&message.idempotency_key) {
            self.injected.fetch_add(1, Ordering::Relaxed);
            return Err(e);
        }
        self.inner.send(message).await
    }

    async fn verify(&self) -> Result<(), SendError> {
        self.inner.verify().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mime::{Mailbox, MessageParts};

    fn message(i: usize) -> OutgoingMessage {
        let parts = MessageParts {
            message_id: format!("msg_{i}"),
            from: Mailbox::new(None, "a@b.example"),
            reply_to: None,
            to: Mailbox::new(None, &format!("r{i}@x.example")),
            subject: "s".into(),
            html: None,
            text: Some("t".into()),
            list_unsubscribe: None,
            date: chrono::Utc::now(),
        };
        OutgoingMessage {
            raw: vec![],
            idempotency_key: parts.message_id.clone(),
            parts,
            tags: vec![],
        }
    }

    #[tokio::test]
    async fn faults_are_deterministic_and_near_their_shares() {
        let faults = Faults {
            transient: 0.1,
            throttled: 0.05,
            permanent: 0.02,
        };
        let run = |seed| async move {
            let p = FaultyProvider::new(NullProvider::new(), faults, seed);
            let mut outcomes = vec![];
            for i in 0..4000 {
                outcomes.push(match p.send(&message(i)).await {
                    Ok(_) => 'o',
                    Err(SendError::Transient { .. }) => 't',
                    Err(SendError::Throttled { .. }) => 'h',
                    Err(SendError::Permanent { .. }) => 'p',
                    Err(SendError::Sender { .. }) => 's',
                });
            }
            (outcomes, p.inner().sent())
        };
        let (a, sent) = run(7).await;
        let (b, _) = run(7).await;
        assert_eq!(a, b, "same seed, same failures");
        assert_ne!(a, run(8).await.0);
        let share = |c| a.iter().filter(|x| **x == c).count() as f64 / 4000.0;
        assert!((share('t') - 0.098).abs() < 0.03, "{}", share('t'));
        assert!((share('h') - 0.049).abs() < 0.02, "{}", share('h'));
        assert!((share('p') - 0.02).abs() < 0.01, "{}", share('p'));
        assert_eq!(sent as usize, a.iter().filter(|x| **x == 'o').count());
    }

    #[tokio::test]
    async fn a_retry_draws_again_but_a_permanent_failure_stays() {
        let p = FaultyProvider::new(
            NullProvider::new(),
            Faults {
                transient: 0.5,
                throttled: 0.0,
                permanent: 0.0,
            },
            1,
        );
        let m = message(1);
        let mut ok = false;
        for _ in 0..64 {
            ok |= p.send(&m).await.is_ok();
        }
        assert!(ok, "some attempt passes");
        let p = FaultyProvider::new(
            NullProvider::new(),
            Faults {
                transient: 0.0,
                throttled: 0.0,
                permanent: 1.0,
            },
            1,
        );
        for _ in 0..3 {
            assert!(matches!(p.send(&m).await, Err(SendError::Permanent { .. })));
        }
    }

    #[tokio::test]
    async fn the_null_provider_counts_per_recipient() {
        let p = NullProvider::new();
        p.send(&message(1)).await.unwrap();
        p.send(&message(1)).await.unwrap();
        p.send(&message(2)).await.unwrap();
        assert_eq!(p.sent(), 3);
        assert_eq!(p.per_recipient()["r1@x.example"], 2);
        assert_eq!(p.repeated_messages().len(), 1);
    }
}
