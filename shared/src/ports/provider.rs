//! The delivery port: one trait every provider (Amazon SES v2, Resend, SMTP, outbox, and the
//! test doubles) implements, and the one error vocabulary the sender acts on.
//!
//! The sender builds the message once ([`crate::mime::build`]) and hands the provider both
//! the raw RFC 5322 bytes (SES, SMTP and the outbox send those, so our headers survive) and
//! the parts (Resend's API takes fields, not MIME).

use std::time::Duration;

use async_trait::async_trait;

use crate::mime::MessageParts;

/// A message ready to hand to a provider.
#[derive(Debug, Clone)]
pub struct OutgoingMessage {
    /// The parts the raw bytes were built from.
    pub parts: MessageParts,
    /// The RFC 5322 message ([`crate::mime::build`]).
    pub raw: Vec<u8>,
    /// Stable per message across retries: providers that honour it (Resend's
    /// `Idempotency-Key`) deliver at most once however often we call.
    pub idempotency_key: String,
    /// Provider tags carrying our ids (SES message tags), e.g. `("mp_ws", "ws_…")`.
    pub tags: Vec<(String, String)>,
}

/// The provider accepted the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The provider's id for the message (SES `MessageId`, Resend `id`, SMTP queue id or
    /// our Message-ID when the server names none). Events are correlated through it.
    pub provider_message_id: String,
}

/// Why a provider did not accept a message, classified for the sender.
///
/// `code` is the provider's own short code (`MessageRejected`, `550`, `validation_error`),
/// used in failure reasons (`permanent:<code>`); `detail` is the provider's message, which
/// never contains a credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Nothing was sent; trying again later may work (network error, 4xx SMTP reply, 5xx API).
    #[error("transient provider error {code}: {detail}")]
    Transient {
        code: String,
        detail: String,
        retry_after: Option<Duration>,
    },
    /// The provider's rate or quota was exceeded; nothing was sent.
    #[error("provider throttled the send ({code})")]
    Throttled {
        code: String,
        retry_after: Option<Duration>,
    },
    /// This message will never be accepted (bad recipient, 5xx SMTP reply, too large).
    #[error("permanent provider error {code}: {detail}")]
    Permanent { code: String, detail: String },
    /// The sender itself cannot send (unverified identity, sandbox, account suspended,
    /// sending paused, bad credentials): pause the sender rather than fail each message.
    #[error("sender-level provider error {code}: {detail}")]
    Sender { code: String, detail: String },
}

impl SendError {
    /// The failure reason recorded on a message this error ends (API-CONVENTIONS.md).
    pub fn reason(&self) -> String {
        match self {
            SendError::Permanent { code, .. } => format!("permanent:{code}"),
            SendError::Sender { .. } => "sender_paused".into(),
            SendError::Transient { .. } | SendError::Throttled { .. } => {
                "transient_exhausted".into()
            }
        }
    }

    /// How long the provider asked us to wait, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            SendError::Transient { retry_after, .. } | SendError::Throttled { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }
}

/// A delivery provider.
#[async_trait]
pub trait Provider: Send + Sync {
    /// Short name for logs and metrics: `ses`, `resend`, `smtp`, `outbox`, ….
    fn kind(&self) -> &'static str;

    /// Whether a repeated [`Provider::send`] with the same idempotency key is guaranteed to
    /// deliver at most once (Resend within its key window). Only then may a message whose
    /// outcome is unknown after a crash be sent again automatically.
    fn deduplicates(&self) -> bool {
        false
    }

    /// Whether the provider's delivery events can name our message only through the
    /// provider's message id (they do not echo our `mp_ws`/`mp_msg` tags or our
    /// `X-Mailpilot-Message-Id` header). Then the sender writes a pointer item from that
    /// id to the message, in the same transaction as `sent`. Providers without events
    /// (SMTP, outbox) and those that echo our tags say `false`: no pointer, one write
    /// less per message.
    fn needs_message_pointer(&self) -> bool {
        true
    }

    /// Sends one message.
    async fn send(&self, message: &OutgoingMessage) -> Result<Accepted, SendError>;

    /// Checks the connection works (credentials, reachability) without sending mail.
    async fn verify(&self) -> Result<(), SendError>;
}
