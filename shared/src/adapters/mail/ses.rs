//! Amazon SES v2 `SendEmail` with raw MIME content (our headers survive), the
//! connection's configuration set, and message tags carrying our ids (SES events carry
//! them back).
//!
//! Errors (https://docs.aws.amazon.com/ses/latest/APIReference-V2/API_SendEmail.html):
//! `TooManyRequestsException`, `LimitExceededException`, `Throttling(Exception)` and
//! quota errors → throttled (SES drops the message: nothing was sent);
//! `MessageRejected` for an unverified identity or a sandboxed account,
//! `AccountSuspendedException`, `SendingPausedException`,
//! `MailFromDomainNotVerifiedException`, `NotFoundException` (the configuration set) and
//! credential errors → the sender; other `MessageRejected` (content) and
//! `BadRequestException` → permanent; 5xx, timeouts and network errors → transient.
//! Messages over 40 MB are permanent before any call.

use std::fmt;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_sdk_sesv2::config::{Credentials, Region};
use aws_sdk_sesv2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sesv2::primitives::Blob;
use aws_sdk_sesv2::types::{Destination, EmailContent, MessageTag, RawMessage};

use super::{permanent, sender, transient};
use crate::ports::provider::{Accepted, OutgoingMessage, Provider, SendError};

/// SES v2's largest message, attachments included.
pub const MAX_MESSAGE_BYTES: usize = 40 * 1024 * 1024;

pub struct SesProvider {
    client: aws_sdk_sesv2::Client,
    configuration_set: Option<String>,
}

impl fmt::Debug for SesProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SesProvider")
            .field("configuration_set", &self.configuration_set)
            .finish_non_exhaustive()
    }
}

impl SesProvider {
    /// A client for `region`, with static credentials when given, else the default chain
    /// (the function's role). `AWS_ENDPOINT_URL` is honoured (tests point it at moto).
    pub async fn connect(
        region: &str,
        configuration_set: Option<String>,
        credentials: Option<(String, String)>,
    ) -> Self {
        let mut loader =
            aws_config::defaults(BehaviorVersion::latest()).region(Region::new(region.to_string()));
        if let Some((id, secret)) = credentials {
            loader = loader.credentials_provider(Credentials::new(
                id,
                secret,
                None,
                None,
                "mailpilot-connection",
            ));
        }
        let config = loader.load().await;
        Self {
            client: aws_sdk_sesv2::Client::new(&config),
            configuration_set,
        }
    }

    /// A provider over a ready client (tests).
    pub fn with_client(client: aws_sdk_sesv2::Client, configuration_set: Option<String>) -> Self {
        Self {
            client,
            configuration_set,
        }
    }
}

/// Classifies an SES error by its code and HTTP status.
pub fn classify(code: Option<&str>, message: Option<&str>, status: Option<u16>) -> SendError {
    let detail = message.unwrap_or("").to_string();
    let Some(code) = code else {
        return match status {
            Some(s) if (400..500).contains(&s) && s != 408 && s != 429 => {
                permanent(s.to_string(), detail)
            }
            Some(429) => SendError::Throttled {
                code: "429".into(),
                retry_after: None,
            },
            Some(s) => transient(s.to_string(), detail),
            None => transient("network", detail),
        };
    };
    let lower = detail.to_ascii_lowercase();
    match code {
        "TooManyRequestsException"
        | "LimitExceededException"
        | "Throttling"
        | "ThrottlingException"
        | "MaxSendRateExceeded"
        | "DailyQuotaExceeded" => SendError::Throttled {
            code: code.into(),
            retry_after: None,
        },
        // The sending identity is not (yet) allowed: unverified, sandboxed, or not
        // authorised (moto words it "Did not have authority to send from").
        "MessageRejected"
            if [
                "not verified",
                "sandbox",
                "not authorized",
                "authority to send",
            ]
            .iter()
            .any(|p| lower.contains(p)) =>
        {
            sender(code, detail)
        }
        "AccountSuspendedException"
        | "SendingPausedException"
        | "MailFromDomainNotVerifiedException"
        | "NotFoundException"
        | "InvalidClientTokenId"
        | "UnrecognizedClientException"
        | "SignatureDoesNotMatch"
        | "AccessDeniedException"
        | "AccessDenied"
        | "ExpiredToken"
        | "ExpiredTokenException" => sender(code, detail),
        "MessageRejected" | "BadRequestException" | "ValidationException" => {
            permanent(code, detail)
        }
        _ => match status {
            Some(s) if s >= 500 => transient(code, detail),
            Some(s) if (400..500).contains(&s) => permanent(code, detail),
            _ => transient(code, detail),
        },
    }
}

fn classify_sdk<E: ProvideErrorMetadata + std::error::Error + 'static>(
    e: &SdkError<E>,
) -> SendError {
    let status = e.raw_response().map(|r| r.status().as_u16());
    match e {
        SdkError::ServiceError(se) => classify(se.err().code(), se.err().message(), status),
        SdkError::TimeoutError(_) => transient("timeout", e.to_string()),
        SdkError::DispatchFailure(_) => transient("network", e.to_string()),
        SdkError::ResponseError(_) => transient("bad_response", e.to_string()),
        _ => match e.code() {
            Some(_) => classify(e.code(), e.message(), status),
            None => transient("network", e.to_string()),
        },
    }
}

#[async_trait]
impl Provider for SesProvider {
    fn kind(&self) -> &'static str {
        "ses"
    }

    /// Event publishing through a configuration set echoes our message tags in every
    /// event; without one, events come only from identity notifications, which do not.
    fn needs_message_pointer(&self) -> bool {
        self.configuration_set.is_none()
    }

    async fn send(&self, message: &OutgoingMessage) -> Result<Accepted, SendError> {
        if message.raw.len() > MAX_MESSAGE_BYTES {
            return Err(permanent(
                "MessageTooLarge",
                format!(
                    "the message is {} bytes; SES takes at most {MAX_MESSAGE_BYTES}",
                    message.raw.len()
                ),
            ));
        }
        let raw = RawMessage::builder()
            .data(Blob::new(message.raw.clone()))
            .build()
            .map_err(|e| permanent("bad_message", e.to_string()))?;
        let mut tags = vec![];
        for (name, value) in &message.tags {
            tags.push(
                MessageTag::builder()
                    .name(name)
                    .value(value)
                    .build()
                    .map_err(|e| permanent("bad_tag", e.to_string()))?,
            );
        }
        let out = self
            .client
            .send_email()
            .from_email_address(message.parts.from.email.clone())
            .destination(
                Destination::builder()
                    .to_addresses(message.parts.to.email.clone())
                    .build(),
            )
            .content(EmailContent::builder().raw(raw).build())
            .set_configuration_set_name(self.configuration_set.clone())
            .set_email_tags((!tags.is_empty()).then_some(tags))
            .send()
            .await
            .map_err(|e| classify_sdk(&e))?;
        Ok(Accepted {
            provider_message_id: out.message_id().unwrap_or_default().to_string(),
        })
    }

    async fn verify(&self) -> Result<(), SendError> {
        self.client
            .list_email_identities()
            .page_size(1)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify_sdk(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ses_codes_map_to_classes() {
        let c = |code, msg| classify(Some(code), Some(msg), Some(400));
        assert!(matches!(
            c("TooManyRequestsException", ""),
            SendError::Throttled { .. }
        ));
        assert!(matches!(
            c("LimitExceededException", ""),
            SendError::Throttled { .. }
        ));
        assert!(matches!(
            c("ThrottlingException", "Maximum sending rate exceeded."),
            SendError::Throttled { .. }
        ));
        assert!(matches!(
            c(
                "MessageRejected",
                "Email address is not verified. The following identities failed the check"
            ),
            SendError::Sender { .. }
        ));
        assert!(matches!(
            c("MessageRejected", "Message contains a virus"),
            SendError::Permanent { .. }
        ));
        assert!(matches!(
            c("AccountSuspendedException", ""),
            SendError::Sender { .. }
        ));
        assert!(matches!(
            c("SendingPausedException", ""),
            SendError::Sender { .. }
        ));
        assert!(matches!(
            c("MailFromDomainNotVerifiedException", ""),
            SendError::Sender { .. }
        ));
        assert!(matches!(
            c("BadRequestException", ""),
            SendError::Permanent { .. }
        ));
        assert!(matches!(
            classify(Some("InternalFailure"), None, Some(500)),
            SendError::Transient { .. }
        ));
        assert!(matches!(
            classify(None, None, None),
            SendError::Transient { .. }
        ));
    }
}
