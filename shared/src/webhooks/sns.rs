//! Amazon SNS message verification (SES events delivered through an SNS topic).
//!
//! Following AWS's "Verifying the signatures of Amazon SNS messages":
//! 1. the topic must be one of ours ([`SnsVerifier::allowed_topics`]): SNS signs every
//!    account's messages with the same certificates, so the signature alone does not say
//!    whose topic sent a message;
//! 2. `SigningCertURL` must be `https://sns.<region>.amazonaws.com/….pem` (anything else
//!    could serve an attacker's certificate); it is fetched over TLS and cached;
//! 3. the canonical string to sign is rebuilt from the fields (`Key\nValue\n` in a fixed
//!    order per message type) and checked against `Signature` with the certificate's RSA
//!    key: SHA1 for `SignatureVersion` 1, SHA256 for 2;
//! 4. a message older than [`SnsVerifier::max_age`] is rejected as stale (redelivered
//!    messages within the window are made harmless by the recorder's idempotency on
//!    `MessageId`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use aws_lc_rs::signature::{
    RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY, RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey,
};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use x509_cert::Certificate;
use x509_cert::der::DecodePem;

use super::WebhookError;

/// The kinds of SNS message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SnsType {
    Notification,
    SubscriptionConfirmation,
    UnsubscribeConfirmation,
}

/// An SNS message as POSTed to an HTTPS subscription.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SnsMessage {
    #[serde(rename = "Type")]
    pub kind: SnsType,
    pub message_id: String,
    pub topic_arn: String,
    #[serde(default)]
    pub subject: Option<String>,
    pub message: String,
    pub timestamp: String,
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default, rename = "SubscribeURL")]
    pub subscribe_url: Option<String>,
    pub signature_version: String,
    pub signature: String,
    #[serde(rename = "SigningCertURL")]
    pub signing_cert_url: String,
}

impl SnsMessage {
    /// Parses the JSON body of an SNS HTTP(S) delivery.
    pub fn parse(body: &[u8]) -> Result<Self, WebhookError> {
        serde_json::from_slice(body).map_err(|e| WebhookError::Malformed(e.to_string()))
    }

    /// The canonical string SNS signs for this message.
    pub fn string_to_sign(&self) -> Result<String, WebhookError> {
        let mut out = String::with_capacity(self.message.len() + 512);
        let mut field = |name: &str, value: &str| {
            out.push_str(name);
            out.push('\n');
            out.push_str(value);
            out.push('\n');
        };
        let kind = match self.kind {
            SnsType::Notification => "Notification",
            SnsType::SubscriptionConfirmation => "SubscriptionConfirmation",
            SnsType::UnsubscribeConfirmation => "UnsubscribeConfirmation",
        };
        field("Message", &self.message);
        field("MessageId", &self.message_id);
        match self.kind {
            SnsType::Notification => {
                if let Some(subject) = &self.subject {
                    field("Subject", subject);
                }
            }
            SnsType::SubscriptionConfirmation | SnsType::UnsubscribeConfirmation => {
                let url = self
                    .subscribe_url
                    .as_deref()
                    .ok_or_else(|| WebhookError::Malformed("SubscribeURL is missing".into()))?;
                field("SubscribeURL", url);
            }
        }
        field("Timestamp", &self.timestamp);
        if self.kind != SnsType::Notification {
            let token = self
                .token
                .as_deref()
                .ok_or_else(|| WebhookError::Malformed("Token is missing".into()))?;
            field("Token", token);
        }
        field("TopicArn", &self.topic_arn);
        field("Type", kind);
        Ok(out)
    }

    /// Checks the signature against a PEM certificate.
    pub fn verify_with_certificate(&self, cert_pem: &[u8]) -> Result<(), WebhookError> {
        let algorithm: &'static dyn aws_lc_rs::signature::VerificationAlgorithm =
            match self.signature_version.as_str() {
                "1" => &RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
                "2" => &RSA_PKCS1_2048_8192_SHA256,
                other => return Err(WebhookError::UnsupportedSignatureVersion(other.into())),
            };
        let cert = Certificate::from_pem(cert_pem)
            .map_err(|e| WebhookError::BadCertificate(e.to_string()))?;
        let spki = &cert.tbs_certificate().subject_public_key_info();
        let key_bits = spki.subject_public_key.raw_bytes();
        let signature = STANDARD
            .decode(self.signature.trim())
            .map_err(|_| WebhookError::BadSignature)?;
        UnparsedPublicKey::new(algorithm, key_bits)
            .verify(self.string_to_sign()?.as_bytes(), &signature)
            .map_err(|_| WebhookError::BadSignature)
    }
}

/// Accepts only `https://sns.<region>.amazonaws.com/<path>.pem` (no user info, no port).
pub fn check_cert_url(url: &str) -> Result<(), WebhookError> {
    let parsed = url::Url::parse(url).map_err(|_| WebhookError::UntrustedCertUrl)?;
    let host_ok = parsed.host_str().is_some_and(is_sns_host);
    if parsed.scheme() != "https"
        || !host_ok
        || parsed.port().is_some()
        || !parsed.username().is_empty()
        || parsed.password().is_some()
        || !parsed.path().ends_with(".pem")
        || parsed.query().is_some()
    {
        return Err(WebhookError::UntrustedCertUrl);
    }
    Ok(())
}

/// `sns.<region>.amazonaws.com`, region being lowercase letters, digits and dashes.
pub fn is_sns_host(host: &str) -> bool {
    let Some(region) = host
        .strip_prefix("sns.")
        .and_then(|rest| rest.strip_suffix(".amazonaws.com"))
    else {
        return false;
    };
    !region.is_empty()
        && region.len() <= 32
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && region.bytes().any(|b| b.is_ascii_lowercase())
}

/// Where signing certificates come from.
#[async_trait]
pub trait CertFetcher: Send + Sync {
    /// The PEM bytes at an already-checked URL.
    async fn fetch(&self, url: &str) -> Result<Vec<u8>, String>;
}

/// Fetches certificates over HTTPS (reqwest, TLS-verified) and keeps them in memory.
pub struct HttpCertFetcher {
    client: reqwest::Client,
    cache: Mutex<HashMap<String, Vec<u8>>>,
}

impl HttpCertFetcher {
    pub fn new() -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("a TLS client can be built");
        HttpCertFetcher {
            client,
            cache: Mutex::new(HashMap::new()),
        }
    }
}

impl Default for HttpCertFetcher {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl CertFetcher for HttpCertFetcher {
    async fn fetch(&self, url: &str) -> Result<Vec<u8>, String> {
        if let Some(pem) = self.cache.lock().expect("cert cache").get(url) {
            return Ok(pem.clone());
        }
        let response = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status()));
        }
        let pem = response.bytes().await.map_err(|e| e.to_string())?.to_vec();
        if pem.len() > 64 * 1024 {
            return Err("certificate larger than 64 KiB".into());
        }
        self.cache
            .lock()
            .expect("cert cache")
            .insert(url.to_owned(), pem.clone());
        Ok(pem)
    }
}

/// Verifies SNS deliveries for one set of allowed topics.
pub struct SnsVerifier<F> {
    pub allowed_topics: Vec<String>,
    pub max_age: chrono::Duration,
    pub fetcher: F,
}

impl<F: CertFetcher> SnsVerifier<F> {
    pub fn new(allowed_topics: Vec<String>, fetcher: F) -> Self {
        SnsVerifier {
            allowed_topics,
            max_age: chrono::Duration::hours(1),
            fetcher,
        }
    }

    /// Parses and verifies a delivery at time `now`; returns the message only if every
    /// check passed.
    pub async fn verify(
        &self,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<SnsMessage, WebhookError> {
        let message = SnsMessage::parse(body)?;
        if !self.allowed_topics.iter().any(|t| t == &message.topic_arn) {
            return Err(WebhookError::TopicNotAllowed(message.topic_arn));
        }
        let sent = DateTime::parse_from_rfc3339(&message.timestamp)
            .map_err(|_| WebhookError::BadTimestamp)?
            .with_timezone(&Utc);
        if now - sent > self.max_age || sent - now > chrono::Duration::minutes(5) {
            return Err(WebhookError::StaleTimestamp(self.max_age.num_seconds()));
        }
        check_cert_url(&message.signing_cert_url)?;
        if let Some(url) = &message.subscribe_url {
            check_subscribe_url(url)?;
        }
        let pem = self
            .fetcher
            .fetch(&message.signing_cert_url)
            .await
            .map_err(WebhookError::BadCertificate)?;
        message.verify_with_certificate(&pem)?;
        Ok(message)
    }
}

/// A `SubscribeURL` is only ever visited on an SNS host over https.
pub fn check_subscribe_url(url: &str) -> Result<(), WebhookError> {
    let parsed = url::Url::parse(url).map_err(|_| WebhookError::UntrustedCertUrl)?;
    if parsed.scheme() != "https"
        || !parsed.host_str().is_some_and(is_sns_host)
        || parsed.port().is_some()
        || !parsed.username().is_empty()
    {
        return Err(WebhookError::UntrustedCertUrl);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CERT: &[u8] = include_bytes!("testdata/test-signer.pem");
    const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:mailpilot-ses-events";

    struct Fixed(Vec<u8>);

    #[async_trait]
    impl CertFetcher for Fixed {
        async fn fetch(&self, _url: &str) -> Result<Vec<u8>, String> {
            Ok(self.0.clone())
        }
    }

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/src/webhooks/testdata/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-25T16:10:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn verifier() -> SnsVerifier<Fixed> {
        SnsVerifier::new(vec![TOPIC.into()], Fixed(CERT.to_vec()))
    }

    #[tokio::test]
    async fn accepts_signature_versions_1_and_2_and_confirmations() {
        for name in [
            "sns-notification-v1.json",
            "sns-notification-v2.json",
            "sns-notification-nosubject-v2.json",
            "sns-subscription-confirmation-v1.json",
        ] {
            let msg = verifier()
                .verify(&fixture(name), now())
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(msg.topic_arn, TOPIC);
        }
    }

    fn edit(name: &str, f: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
        let mut v: serde_json::Value = serde_json::from_slice(&fixture(name)).unwrap();
        f(&mut v);
        serde_json::to_vec(&v).unwrap()
    }

    #[tokio::test]
    async fn rejects_tampered_fields() {
        for field in ["Message", "MessageId", "Subject", "Timestamp", "Type"] {
            let body = edit("sns-notification-v2.json", |v| {
                let value = match field {
                    "Type" => "UnsubscribeConfirmation".to_string(),
                    "Timestamp" => "2026-11-25T16:00:01.000Z".to_string(),
                    _ => format!("{}x", v[field].as_str().unwrap()),
                };
                v[field] = value.into();
            });
            let err = verifier().verify(&body, now()).await.unwrap_err();
            assert!(
                matches!(err, WebhookError::BadSignature | WebhookError::Malformed(_)),
                "{field}: {err:?}"
            );
        }
        // Removing the subject changes the string to sign.
        let body = edit("sns-notification-v2.json", |v| {
            v.as_object_mut().unwrap().remove("Subject");
        });
        assert_eq!(
            verifier().verify(&body, now()).await.unwrap_err(),
            WebhookError::BadSignature
        );
        // A v1 signature presented as v2 fails (the hash differs).
        let body = edit("sns-notification-v1.json", |v| {
            v["SignatureVersion"] = "2".into()
        });
        assert_eq!(
            verifier().verify(&body, now()).await.unwrap_err(),
            WebhookError::BadSignature
        );
        let body = edit("sns-notification-v1.json", |v| {
            v["SignatureVersion"] = "3".into()
        });
        assert_eq!(
            verifier().verify(&body, now()).await.unwrap_err(),
            WebhookError::UnsupportedSignatureVersion("3".into())
        );
    }

    #[tokio::test]
    async fn rejects_other_topics_stale_messages_and_foreign_certificates() {
        let v = SnsVerifier::new(
            vec!["arn:aws:sns:us-east-1:999999999999:other".into()],
            Fixed(CERT.to_vec()),
        );
        let err = v
            .verify(&fixture("sns-notification-v2.json"), now())
            .await
            .unwrap_err();
        assert!(matches!(err, WebhookError::TopicNotAllowed(_)));
        let late = now() + chrono::Duration::hours(2);
        assert!(matches!(
            verifier()
                .verify(&fixture("sns-notification-v2.json"), late)
                .await,
            Err(WebhookError::StaleTimestamp(_))
        ));
        for url in [
            "http://sns.us-east-1.amazonaws.com/cert.pem",
            "https://sns.us-east-1.amazonaws.com.evil.example/cert.pem",
            "https://evil.example/sns.us-east-1.amazonaws.com/cert.pem",
            "https://sns.us-east-1.amazonaws.com@evil.example/cert.pem",
            "https://user@sns.us-east-1.amazonaws.com/cert.pem",
            "https://sns.us-east-1.amazonaws.com:8443/cert.pem",
            "https://sns..amazonaws.com/cert.pem",
            "https://s3.amazonaws.com/cert.pem",
            "https://sns.us-east-1.amazonaws.com/cert.txt",
        ] {
            let body = edit("sns-notification-v2.json", |v| {
                v["SigningCertURL"] = url.into()
            });
            assert_eq!(
                verifier().verify(&body, now()).await.unwrap_err(),
                WebhookError::UntrustedCertUrl,
                "{url}"
            );
        }
        check_cert_url("https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-abc.pem")
            .unwrap();
        let body = edit("sns-subscription-confirmation-v1.json", |v| {
            v["SubscribeURL"] = "https://evil.example/confirm".into()
        });
        assert_eq!(
            verifier().verify(&body, now()).await.unwrap_err(),
            WebhookError::UntrustedCertUrl
        );
        assert!(matches!(
            verifier().verify(b"not json", now()).await,
            Err(WebhookError::Malformed(_))
        ));
        let garbage = SnsVerifier::new(
            vec![TOPIC.into()],
            Fixed(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_vec()),
        );
        assert!(matches!(
            garbage
                .verify(&fixture("sns-notification-v2.json"), now())
                .await,
            Err(WebhookError::BadCertificate(_))
        ));
    }
}
