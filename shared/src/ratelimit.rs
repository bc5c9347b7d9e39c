//! Per-API-key rate limits. The runner keeps a token bucket per key in memory (rate
//! per second, burst twice that); in AWS, where many Lambda instances serve one key, a
//! fixed-window counter item per key and second is shared through the store.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use tokio::sync::Mutex;

use crate::keys;
use crate::ports::store::{ItemExt, Key, Store, Update, Value};

pub enum RateLimiter {
    Off,
    Memory {
        rate: f64,
        buckets: Mutex<HashMap<String, (f64, Instant)>>,
    },
    Store {
        rate: i64,
        store: Arc<dyn Store>,
    },
}

/// The limiter's answer: go on, or wait this many seconds.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    RetryAfter(u64),
}

impl RateLimiter {
    pub fn memory(rate_per_sec: u32) -> Self {
        if rate_per_sec == 0 {
            return RateLimiter::Off;
        }
        RateLimiter::Memory {
            rate: rate_per_sec as f64,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    pub fn store(rate_per_sec: u32, store: Arc<dyn Store>) -> Self {
        if rate_per_sec == 0 {
            return RateLimiter::Off;
        }
        RateLimiter::Store {
            rate: rate_per_sec as i64,
            store,
        }
    }

    pub async fn check(&self, workspace_id: &str, key_id: &str) -> Verdict {
        match self {
            RateLimiter::Off => Verdict::Allow,
            RateLimiter::Memory { rate, buckets } => {
                let burst = rate * 2.0;
                let now = Instant::now();
                let mut map = buckets.lock().await;
                let (tokens, last) = map.entry(key_id.to_string()).or_insert((burst, now));
                *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * rate).min(burst);
                *last = now;
                if *tokens >= 1.0 {
                    *tokens -= 1.0;
                    Verdict::Allow
                } else {
                    Verdict::RetryAfter(((1.0 - *tokens) / rate).ceil().max(1.0) as u64)
                }
            }
            RateLimiter::Store { rate, store } => {
                let second = Utc::now().timestamp();
                let key = Key::new(
                    keys::ws(workspace_id, "ratelimit"),
                    format!("{key_id}#{second}"),
                );
                let update = Update::new()
                    .add("count", 1)
                    .set("ttl", Value::N((second + 120).to_string()));
                match store.update(&key, update, None).await {
                    Ok(item) if item.num_attr("count").unwrap_or(0) > *rate * 2 => {
                        Verdict::RetryAfter(1)
                    }
                    // A limiter that cannot count lets the request through: the API
                    // stays up when the counter item is throttled.
                    _ => Verdict::Allow,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bucket_allows_a_burst_then_asks_to_wait() {
        let l = RateLimiter::memory(2);
        for _ in 0..4 {
            assert_eq!(l.check("ws", "k").await, Verdict::Allow);
        }
        assert!(matches!(l.check("ws", "k").await, Verdict::RetryAfter(_)));
        assert_eq!(l.check("ws", "other").await, Verdict::Allow);
        assert_eq!(
            RateLimiter::memory(0).check("ws", "k").await,
            Verdict::Allow
        );
    }
}
