//! Verifying provider webhooks before anything is recorded.
//!
//! - [`svix`]: Resend's webhooks (Svix / Standard Webhooks): HMAC-SHA256 over
//!   `{id}.{timestamp}.{raw body}`, a 5-minute tolerance, several signatures per header.
//! - [`sns`]: Amazon SNS messages (SES events delivered through SNS): RSA signatures
//!   (SignatureVersion 1 = SHA1, 2 = SHA256) by a certificate fetched only from
//!   `https://sns.<region>.amazonaws.com/…`, and an allow-list of topic ARNs (any AWS
//!   account can produce validly signed SNS messages, so a valid signature alone proves
//!   nothing about whose topic sent it).
//!
//! Every check fails closed: a rejected webhook is a 401 and records nothing.

pub mod events;
pub mod sns;
pub mod svix;

/// Why a webhook was rejected. Safe to show to the caller: carries no secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("the timestamp is not a number of seconds")]
    BadTimestamp,
    #[error("the timestamp is outside the {0}-second tolerance")]
    StaleTimestamp(i64),
    #[error("no signature matches")]
    BadSignature,
    #[error("the webhook secret is not a whsec_ base64 secret")]
    BadSecret,
    #[error("the message is not a valid SNS message: {0}")]
    Malformed(String),
    #[error("unsupported SignatureVersion {0}")]
    UnsupportedSignatureVersion(String),
    #[error("the signing certificate URL is not an SNS certificate URL")]
    UntrustedCertUrl,
    #[error("the signing certificate could not be read: {0}")]
    BadCertificate(String),
    #[error("topic {0} is not allowed")]
    TopicNotAllowed(String),
}
