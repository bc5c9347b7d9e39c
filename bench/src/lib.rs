//! What the benchmark binaries share: a provider that costs nothing, and the process's
//! CPU time and the machine's load (recorded beside every figure: the machine may be
//! shared).

use async_trait::async_trait;
use mailpilot_shared::ports::provider::{Accepted, OutgoingMessage, Provider, SendError};

/// Accepts every message at once (the engine's own cost, no provider).
pub struct NullProvider;

#[async_trait]
impl Provider for NullProvider {
    fn kind(&self) -> &'static str {
        "null"
    }
    fn needs_message_pointer(&self) -> bool {
        false
    }
    async fn send(&self, m: &OutgoingMessage) -> Result<Accepted, SendError> {
        Ok(Accepted {
            provider_message_id: format!("null-{}", m.idempotency_key),
        })
    }
    async fn verify(&self) -> Result<(), SendError> {
        Ok(())
    }
}

/// CPU seconds this process has used (user + system, from `/proc/self/stat`; 10 ms
/// ticks, so measure over seconds).
pub fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime: fields 14 and 15 of the line (11 and 12 after the ")").
    (ticks(11) + ticks(12)) / 100.0
}

/// The 1, 5 and 15 minute load averages.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}
