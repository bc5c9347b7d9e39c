//! Svix / Standard Webhooks signature verification (Resend's webhooks).
//!
//! The secret is `whsec_<base64 key>`; the signed content is
//! `{webhook id}.{timestamp}.{raw body}` (the raw bytes as received: decode API Gateway's
//! `isBase64Encoded` body first); the signature header holds one or more space-separated
//! `v1,<base64 HMAC-SHA256>` entries, any of which may match (secret rotation). Timestamps
//! more than [`TOLERANCE_SECS`] away from now, in either direction, are rejected so a
//! captured request cannot be replayed later.

use aws_lc_rs::{constant_time, hmac};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::WebhookError;

/// Allowed distance between the webhook's timestamp and now.
pub const TOLERANCE_SECS: i64 = 5 * 60;

/// The three headers of a Svix webhook (`svix-*`, or the Standard Webhooks `webhook-*`).
#[derive(Debug, Clone, Copy)]
pub struct SvixHeaders<'a> {
    pub id: &'a str,
    pub timestamp: &'a str,
    pub signature: &'a str,
}

impl<'a> SvixHeaders<'a> {
    /// Reads the headers through `get` (a case-insensitive header lookup), accepting
    /// both the `svix-` and the `webhook-` prefix.
    pub fn from_lookup(get: impl Fn(&str) -> Option<&'a str>) -> Result<Self, WebhookError> {
        let pick = |a: &'static str, b: &str| {
            get(a)
                .or_else(|| get(b))
                .ok_or(WebhookError::MissingHeader(a))
        };
        Ok(SvixHeaders {
            id: pick("svix-id", "webhook-id")?,
            timestamp: pick("svix-timestamp", "webhook-timestamp")?,
            signature: pick("svix-signature", "webhook-signature")?,
        })
    }
}

/// A parsed `whsec_` secret.
#[derive(Clone)]
pub struct SvixSecret(hmac::Key);

impl std::fmt::Debug for SvixSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SvixSecret(********)")
    }
}

impl SvixSecret {
    /// Parses `whsec_<base64>` (the prefix is optional, as Svix's libraries accept).
    pub fn parse(secret: &str) -> Result<Self, WebhookError> {
        let b64 = secret
            .trim()
            .strip_prefix("whsec_")
            .unwrap_or(secret.trim());
        let key = STANDARD.decode(b64).map_err(|_| WebhookError::BadSecret)?;
        if key.is_empty() {
            return Err(WebhookError::BadSecret);
        }
        Ok(SvixSecret(hmac::Key::new(hmac::HMAC_SHA256, &key)))
    }

    /// The `v1,<base64>` signature of a payload (what a sender puts in the header).
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let tag = hmac::sign(&self.0, &signed_content(id, &timestamp.to_string(), body));
        format!("v1,{}", STANDARD.encode(tag.as_ref()))
    }

    /// Verifies a webhook at time `now` (Unix seconds).
    pub fn verify(
        &self,
        headers: &SvixHeaders<'_>,
        body: &[u8],
        now: i64,
    ) -> Result<(), WebhookError> {
        let ts: i64 = headers
            .timestamp
            .trim()
            .parse()
            .map_err(|_| WebhookError::BadTimestamp)?;
        if (now - ts).abs() > TOLERANCE_SECS {
            return Err(WebhookError::StaleTimestamp(TOLERANCE_SECS));
        }
        let expected = hmac::sign(
            &self.0,
            &signed_content(headers.id, headers.timestamp.trim(), body),
        );
        let matches = headers.signature.split_whitespace().any(|entry| {
            let Some(("v1", sig)) = entry.split_once(',') else {
                return false;
            };
            match STANDARD.decode(sig) {
                Ok(sig) => constant_time::verify_slices_are_equal(&sig, expected.as_ref()).is_ok(),
                Err(_) => false,
            }
        });
        if matches {
            Ok(())
        } else {
            Err(WebhookError::BadSignature)
        }
    }
}

fn signed_content(id: &str, timestamp: &str, body: &[u8]) -> Vec<u8> {
    let mut content = Vec::with_capacity(id.len() + timestamp.len() + body.len() + 2);
    content.extend_from_slice(id.as_bytes());
    content.push(b'.');
    content.extend_from_slice(timestamp.as_bytes());
    content.push(b'.');
    content.extend_from_slice(body);
    content
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example from Svix's documentation (docs.svix.com, "Verifying payloads manually").
    const DOC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const DOC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const DOC_TS: &str = "1614265330";
    const DOC_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const DOC_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn headers<'a>(id: &'a str, ts: &'a str, sig: &'a str) -> SvixHeaders<'a> {
        SvixHeaders {
            id,
            timestamp: ts,
            signature: sig,
        }
    }

    #[test]
    fn verifies_the_documented_example() {
        let secret = SvixSecret::parse(DOC_SECRET).unwrap();
        let now = 1614265330;
        secret
            .verify(&headers(DOC_ID, DOC_TS, DOC_SIG), DOC_BODY, now)
            .unwrap();
        assert_eq!(secret.sign(DOC_ID, now, DOC_BODY), DOC_SIG);
    }

    #[test]
    fn any_of_several_signatures_may_match() {
        let secret = SvixSecret::parse(DOC_SECRET).unwrap();
        let sig = format!("v1,AAAA v2,whatever {DOC_SIG}");
        secret
            .verify(&headers(DOC_ID, DOC_TS, &sig), DOC_BODY, 1614265330)
            .unwrap();
    }

    #[test]
    fn rejects_tampering_replay_and_wrong_keys() {
        let secret = SvixSecret::parse(DOC_SECRET).unwrap();
        let now = 1614265330;
        let h = headers(DOC_ID, DOC_TS, DOC_SIG);
        assert_eq!(
            secret.verify(&h, br#"{"test": 2432232315}"#, now),
            Err(WebhookError::BadSignature)
        );
        assert_eq!(
            secret.verify(&headers("msg_other", DOC_TS, DOC_SIG), DOC_BODY, now),
            Err(WebhookError::BadSignature)
        );
        // Same signature, a shifted timestamp: the timestamp is signed.
        assert_eq!(
            secret.verify(&headers(DOC_ID, "1614265331", DOC_SIG), DOC_BODY, now),
            Err(WebhookError::BadSignature)
        );
        // A replay six minutes later, and a timestamp from the future.
        assert_eq!(
            secret.verify(&h, DOC_BODY, now + 360),
            Err(WebhookError::StaleTimestamp(300))
        );
        assert_eq!(
            secret.verify(&h, DOC_BODY, now - 360),
            Err(WebhookError::StaleTimestamp(300))
        );
        assert!(secret.verify(&h, DOC_BODY, now + 299).is_ok());
        let other = SvixSecret::parse("whsec_c2VjcmV0LW9mLWFub3RoZXItZW5kcG9pbnQ=").unwrap();
        assert_eq!(
            other.verify(&h, DOC_BODY, now),
            Err(WebhookError::BadSignature)
        );
        assert_eq!(
            secret.verify(&headers(DOC_ID, "soon", DOC_SIG), DOC_BODY, now),
            Err(WebhookError::BadTimestamp)
        );
        assert_eq!(
            secret.verify(&headers(DOC_ID, DOC_TS, "v1,not-base64!"), DOC_BODY, now),
            Err(WebhookError::BadSignature)
        );
        assert_eq!(
            secret.verify(&headers(DOC_ID, DOC_TS, ""), DOC_BODY, now),
            Err(WebhookError::BadSignature)
        );
    }

    #[test]
    fn rejects_bad_secrets_and_missing_headers() {
        assert!(SvixSecret::parse("whsec_!!!").is_err());
        assert!(SvixSecret::parse("whsec_").is_err());
        let get = |name: &str| match name {
            "webhook-id" => Some("m"),
            "webhook-timestamp" => Some("1"),
            _ => None,
        };
        assert_eq!(
            SvixHeaders::from_lookup(get).err(),
            Some(WebhookError::MissingHeader("svix-signature"))
        );
        assert!(format!("{:?}", SvixSecret::parse(DOC_SECRET).unwrap()).contains("********"));
    }
}
