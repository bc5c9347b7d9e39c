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

/// What a provider says became of a message it accepted ([`Provider::status`]): its
/// latest delivery fact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// Accepted, not yet handed to the recipient's server (Resend `queued`, `scheduled`,
    /// `sent`).
    Accepted,
    /// The recipient's server took it (Resend `delivered`; `opened` and `clicked` imply it).
    Delivered,
    /// The recipient's server refused it for good (Resend `bounced`).
    Bounced,
    /// The recipient marked it as spam (Resend `complained`).
    Complained,
    /// A temporary problem; the provider keeps trying (Resend `delivery_delayed`).
    Delayed,
    /// The provider did not send it (Resend `failed`, `canceled`).
    Failed,
}

impl DeliveryStatus {
    /// Whether nothing later will change it (polling may stop).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            DeliveryStatus::Delivered
                | DeliveryStatus::Bounced
                | DeliveryStatus::Complained
                | DeliveryStatus::Failed
        )
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

    /// Whether this connection's delivery facts must be fetched by polling
    /// [`Provider::status`] (no webhook reaches us: a Resend connection without a webhook
    /// secret). Then the sender files every message it sends in the poll index
    /// (`usecases::reconcile`), in the same transaction as `sent`.
    fn polls_status(&self) -> bool {
        false
    }

    /// The provider's latest delivery fact for a message it accepted. Errors are classed
    /// as for sends: throttled (429, with `Retry-After`) and transient → ask again later;
    /// permanent (an id the provider does not know) → stop asking. Providers without a
    /// status endpoint answer permanent `status_unsupported`.
    async fn status(&self, provider_message_id: &str) -> Result<DeliveryStatus, SendError> {
        let _ = provider_message_id;
        Err(SendError::Permanent {
            code: "status_unsupported".into(),
            detail: format!("{} has no status endpoint", self.kind()),
        })
    }

    /// Sends one message.
    async fn send(&self, message: &OutgoingMessage) -> Result<Accepted, SendError>;

    /// Checks the connection works (credentials, reachability) without sending mail.
    async fn verify(&self) -> Result<(), SendError>;
}
