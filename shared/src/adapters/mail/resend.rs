//! Resend (https://resend.com/docs/api-reference/emails/send-email): `POST /emails` with
//! the message's fields (Resend takes fields, not MIME, so our headers go in `headers`),
//! its `Idempotency-Key` on every send (the message's own key, so a retry within 24 hours
//! is delivered once: this provider [`deduplicates`](Provider::deduplicates)).
//!
//! Answers: 2xx → accepted; 429 → throttled (with `Retry-After`); 401/403 → the sender
//! (bad or restricted key, unverified domain); 409 `concurrent_idempotent_requests` →
//! transient; other 4xx → permanent (`validation_error`, `invalid_idempotent_request`…);
//! 5xx and network errors → transient.
//!
//! Status (https://resend.com/docs/api-reference/emails/retrieve-email): `GET
//! /emails/{id}` answers the email with its `last_event`; errors are classed as for sends
//! (404 → permanent: the id is not this account's). A connection without a webhook secret
//! [`polls_status`](Provider::polls_status): nothing else would tell us what became of
//! its mail.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{permanent, sender, transient};
use crate::mime::{MESSAGE_ID_HEADER, Mailbox};
use crate::ports::provider::{Accepted, DeliveryStatus, OutgoingMessage, Provider, SendError};

pub const DEFAULT_BASE_URL: &str = "https://api.resend.com";

pub struct ResendProvider {
    client: reqwest::Client,
    base_url: String,
    api_key: String,
    /// No webhook reaches us: delivery facts come from polling [`Provider::status`].
    polled: bool,
}

impl fmt::Debug for ResendProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResendProvider")
            .field("base_url", &self.base_url)
            .field("api_key", &"<redacted>")
            .field("polled", &self.polled)
            .finish()
    }
}

#[derive(Deserialize)]
struct ResendError {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Deserialize)]
struct Sent {
    id: String,
}

#[derive(Deserialize)]
struct Retrieved {
    #[serde(default)]
    last_event: Option<String>,
}

/// Resend's `last_event` as a delivery status; `None` for a value we do not know (asked
/// again later).
pub fn status_of(last_event: &str) -> Option<DeliveryStatus> {
    Some(match last_event {
        "queued" | "scheduled" | "sent" => DeliveryStatus::Accepted,
        "delivered" | "opened" | "clicked" => DeliveryStatus::Delivered,
        "bounced" => DeliveryStatus::Bounced,
        "complained" => DeliveryStatus::Complained,
        "delivery_delayed" => DeliveryStatus::Delayed,
        "failed" | "canceled" | "cancelled" => DeliveryStatus::Failed,
        _ => return None,
    })
}

/// `Name <address>` with the name quoted when it needs to be (RFC 5322 3.2.4).
fn address(m: &Mailbox) -> String {
    match &m.name {
        None => m.email.clone(),
        Some(n) => {
            let plain = n
                .chars()
                .all(|c| c.is_alphanumeric() || " !#$%&'*+-/=?^_`{|}~".contains(c));
            if plain {
                format!("{n} <{}>", m.email)
            } else {
                let escaped = n.replace('\\', "\\\\").replace('"', "\\\"");
                format!("\"{escaped}\" <{}>", m.email)
            }
        }
    }
}

/// `Retry-After` in seconds or as an HTTP date.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    (at.with_timezone(&chrono::Utc) - chrono::Utc::now())
        .to_std()
        .ok()
}

impl ResendProvider {
    /// A client for Resend's API at `base_url` (its public API when `None`).
    pub fn new(base_url: Option<&str>, api_key: &str) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        Self {
            client,
            base_url: base_url
                .unwrap_or(DEFAULT_BASE_URL)
                .trim_end_matches('/')
                .to_string(),
            api_key: api_key.to_string(),
            polled: false,
        }
    }

    /// Marks the connection as one without a webhook: its mail is polled for status.
    pub fn polled(mut self, polled: bool) -> Self {
        self.polled = polled;
        self
    }

    fn body(message: &OutgoingMessage) -> Value {
        let p = &message.parts;
        let mut headers = serde_json::Map::new();
        headers.insert(MESSAGE_ID_HEADER.into(), json!(p.message_id));
        if let Some(u) = &p.list_unsubscribe {
            let mut value = format!("<{}>", u.url);
            if let Some(m) = &u.mailto {
                value.push_str(&format!(", <mailto:{m}>"));
            }
            headers.insert("List-Unsubscribe".into(), json!(value));
            headers.insert(
                "List-Unsubscribe-Post".into(),
                json!("List-Unsubscribe=One-Click"),
            );
        }
        let mut body = json!({
            "from": address(&p.from),
            "to": [address(&p.to)],
            "subject": p.subject,
            "headers": headers,
            "tags": message.tags.iter().map(|(k, v)| json!({"name": k, "value": v})).collect::<Vec<_>>(),
        });
        if let Some(r) = &p.reply_to {
            body["reply_to"] = json!(address(r));
        }
        if let Some(h) = &p.html {
            body["html"] = json!(h);
        }
        if let Some(t) = &p.text {
            body["text"] = json!(t);
        }
        body
    }

    async fn classify(response: reqwest::Response) -> SendError {
        let status = response.status();
        let wait = retry_after(response.headers());
        let err: ResendError = response.json().await.unwrap_or(ResendError {
            name: None,
            message: None,
        });
        let code = err.name.unwrap_or_else(|| status.as_u16().to_string());
        let detail = err
            .message
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("").to_string());
        classify_status(status, code, detail, wait)
    }
}

fn classify_status(
    status: StatusCode,
    code: String,
    detail: String,
    wait: Option<Duration>,
) -> SendError {
    match status.as_u16() {
        429 => SendError::Throttled {
            code,
            retry_after: wait,
        },
        401 | 403 => sender(code, detail),
        409 if code == "concurrent_idempotent_requests" => SendError::Transient {
            code,
            detail,
            retry_after: wait.or(Some(Duration::from_secs(1))),
        },
        408 => transient(code, detail),
        400..=499 => permanent(code, detail),
        _ => SendError::Transient {
            code,
            detail,
            retry_after: wait,
        },
    }
}

fn network(e: reqwest::Error) -> SendError {
    let code = if e.is_timeout() { "timeout" } else { "network" };
    transient(code, e.to_string())
}

#[async_trait]
impl Provider for ResendProvider {
    fn kind(&self) -> &'static str {
        "resend"
    }

    fn deduplicates(&self) -> bool {
        true
    }

    /// With a webhook, events that lack our tags find the message through the pointer;
    /// a polled connection gets no events (its poll entry names the message instead).
    fn needs_message_pointer(&self) -> bool {
        !self.polled
    }

    fn polls_status(&self) -> bool {
        self.polled
    }

    async fn status(&self, provider_message_id: &str) -> Result<DeliveryStatus, SendError> {
        let id: String = provider_message_id
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
            .collect();
        if id.is_empty() || id.len() != provider_message_id.len() {
            return Err(permanent("invalid_id", "not a Resend email id"));
        }
        let response = self
            .client
            .get(format!("{}/emails/{id}", self.base_url))
            .bearer_auth(&self.api_key)
            .send()
            .await
            .map_err(network)?;
        if !response.status().is_success() {
            return Err(Self::classify(response).await);
        }
        let email: Retrieved = response
            .json()
            .await
            .map_err(|e| transient("bad_response", e.to_string()))?;
        let last = email.last_event.unwrap_or_default();
        status_of(&last).ok_or_else(|| {
            transient(
                "unknown_last_event",
                format!("last_event {last:?} is not one we know"),
            )
        })
    }

    async fn send(&self, message: &OutgoingMessage) -> Result<Accepted, SendError> {
        let response = self
            .client
            .post(format!("{}/emails", self.base_url))
            .bearer_auth(&self.api_key)
            .header("Idempotency-Key", &message.idempotency_key)
            .json(&Self::body(message))
            .send()
            .await
            .map_err(network)?;
        if !response.status().is_success() {
            return Err(Self::classify(response).await);
        }
        let sent: Sent = response
            .json()
            .await
            .map_err(|e| transient("bad_response", e.to_string()))?;
        Ok(Accepted {
            provider_message_id: sent.id,
        })
    }

    /// Lists domains: a full-access key answers 200, a sending-only key
    /// `restricted_api_key` (valid, but may only send); anything else is classified.
    async fn verify(&self) -> Result<(), SendError> {
        let response = self
            .client
            .get(format!("{}/domains", self.base_url))
            .bearer_auth(&self.api_key)
            .send()
            .await
            .map_err(network)?;
        if response.status().is_success() {
            return Ok(());
        }
        match Self::classify(response).await {
            SendError::Sender { code, .. } if code == "restricted_api_key" => Ok(()),
            e => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_classes() {
        let c = |s: u16, code: &str| {
            classify_status(
                StatusCode::from_u16(s).unwrap(),
                code.into(),
                "d".into(),
                Some(Duration::from_secs(3)),
            )
        };
        assert_eq!(
            c(429, "rate_limit_exceeded"),
            SendError::Throttled {
                code: "rate_limit_exceeded".into(),
                retry_after: Some(Duration::from_secs(3))
            }
        );
        assert!(matches!(
            c(401, "missing_api_key"),
            SendError::Sender { .. }
        ));
        assert!(matches!(
            c(403, "validation_error"),
            SendError::Sender { .. }
        ));
        assert!(matches!(
            c(422, "validation_error"),
            SendError::Permanent { .. }
        ));
        assert!(matches!(
            c(409, "invalid_idempotent_request"),
            SendError::Permanent { .. }
        ));
        assert!(matches!(
            c(409, "concurrent_idempotent_requests"),
            SendError::Transient { .. }
        ));
        assert!(matches!(
            c(500, "internal_server_error"),
            SendError::Transient { .. }
        ));
        assert!(matches!(c(503, "503"), SendError::Transient { .. }));
    }

    #[test]
    fn last_events_map_to_statuses() {
        assert_eq!(status_of("sent"), Some(DeliveryStatus::Accepted));
        assert_eq!(status_of("clicked"), Some(DeliveryStatus::Delivered));
        assert_eq!(status_of("bounced"), Some(DeliveryStatus::Bounced));
        assert_eq!(status_of("complained"), Some(DeliveryStatus::Complained));
        assert_eq!(status_of("delivery_delayed"), Some(DeliveryStatus::Delayed));
        assert_eq!(status_of("failed"), Some(DeliveryStatus::Failed));
        assert_eq!(status_of("something_new"), None);
        assert!(!DeliveryStatus::Delayed.is_final());
        assert!(DeliveryStatus::Bounced.is_final());
    }

    #[test]
    fn display_names_are_quoted_when_needed() {
        assert_eq!(
            address(&Mailbox::new(Some("Acme Team"), "a@b.example")),
            "Acme Team <a@b.example>"
        );
        assert_eq!(
            address(&Mailbox::new(Some("Acme, \"Inc\""), "a@b.example")),
            "\"Acme, \\\"Inc\\\"\" <a@b.example>"
        );
        assert_eq!(address(&Mailbox::new(None, "a@b.example")), "a@b.example");
    }
}
