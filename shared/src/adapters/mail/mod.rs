//! Delivery adapters: one [`crate::ports::provider::Provider`] per way out. Each maps its
//! provider's answers to the port's classes (transient, throttled, permanent, sender);
//! docs/providers.md has the table and its sources.

pub mod outbox;
pub mod resend;
#[cfg(feature = "ses")]
pub mod ses;
pub mod smtp;
#[cfg(feature = "test-providers")]
pub mod testing;

use std::sync::Arc;

use async_trait::async_trait;

use crate::ports::provider::{Accepted, DeliveryStatus, OutgoingMessage, Provider, SendError};

/// A shared provider is a provider (so wrappers can hold an `Arc` and tests keep a handle).
#[async_trait]
impl<P: Provider + ?Sized> Provider for Arc<P> {
    fn kind(&self) -> &'static str {
        (**self).kind()
    }

    fn deduplicates(&self) -> bool {
        (**self).deduplicates()
    }

    fn needs_message_pointer(&self) -> bool {
        (**self).needs_message_pointer()
    }

    fn polls_status(&self) -> bool {
        (**self).polls_status()
    }

    async fn status(&self, provider_message_id: &str) -> Result<DeliveryStatus, SendError> {
        (**self).status(provider_message_id).await
    }

    async fn send(&self, message: &OutgoingMessage) -> Result<Accepted, SendError> {
        (**self).send(message).await
    }

    async fn verify(&self) -> Result<(), SendError> {
        (**self).verify().await
    }
}

pub(crate) fn transient(code: impl Into<String>, detail: impl Into<String>) -> SendError {
    SendError::Transient {
        code: code.into(),
        detail: truncate(detail.into()),
        retry_after: None,
    }
}

pub(crate) fn permanent(code: impl Into<String>, detail: impl Into<String>) -> SendError {
    SendError::Permanent {
        code: code.into(),
        detail: truncate(detail.into()),
    }
}

pub(crate) fn sender(code: impl Into<String>, detail: impl Into<String>) -> SendError {
    SendError::Sender {
        code: code.into(),
        detail: truncate(detail.into()),
    }
}

/// Provider messages are kept short in records and logs.
fn truncate(s: String) -> String {
    if s.chars().count() <= 500 {
        s
    } else {
        s.chars().take(500).collect::<String>() + "…"
    }
}
