//! Blobs in S3: ranged GETs (an import continues from a byte offset), and the presigned
//! POST form a client uploads with. aws-sdk-s3 presigns only PUTs, which cannot cap
//! the size, so the SigV4 POST policy (with `content-length-range`) is built here.

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{ProvideCredentials, SharedCredentialsProvider};
use aws_sdk_s3::primitives::ByteStream;
use base64::Engine;
use chrono::{Duration, Utc};
use futures::StreamExt;
use sha2::{Digest, Sha256};

use crate::ports::blobs::{BlobBody, BlobError, BlobReader, BlobResult, Blobs, UploadForm};

/// How long a presigned upload form stays valid.
const FORM_TTL_MINUTES: i64 = 60;

pub struct S3Blobs {
    client: Client,
    bucket: String,
    /// Signs upload forms (the SDK's own config does not expose its provider).
    credentials: SharedCredentialsProvider,
    /// Where forms are posted: `https://<bucket>.s3.<region>.amazonaws.com/`, or
    /// `<endpoint>/<bucket>` (path style) when the client has an endpoint override.
    form_url: String,
}

impl S3Blobs {
    /// `endpoint`: the endpoint override the client was built with, if any (the
    /// emulator in tests).
    pub fn new(
        client: Client,
        bucket: impl Into<String>,
        credentials: SharedCredentialsProvider,
        endpoint: Option<&str>,
    ) -> Self {
        let bucket = bucket.into();
        let region = client
            .config()
            .region()
            .map(|r| r.to_string())
            .unwrap_or_else(|| "us-east-1".into());
        let form_url = match endpoint {
            Some(e) => format!("{}/{bucket}", e.trim_end_matches('/')),
            None => format!("https://{bucket}.s3.{region}.amazonaws.com/"),
        };
        Self {
            client,
            bucket,
            credentials,
            form_url,
        }
    }

    fn region(&self) -> String {
        self.client
            .config()
            .region()
            .map(|r| r.to_string())
            .unwrap_or_else(|| "us-east-1".into())
    }
}

fn unavailable(e: impl std::fmt::Display) -> BlobError {
    BlobError::unavailable(e.to_string())
}

#[async_trait]
impl Blobs for S3Blobs {
    async fn size(&self, key: &str) -> BlobResult<Option<u64>> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => Ok(Some(out.content_length().unwrap_or(0).max(0) as u64)),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
            Err(e) => Err(unavailable(aws_sdk_s3::error::DisplayErrorContext(e))),
        }
    }

    async fn read_from(&self, key: &str, offset: u64) -> BlobResult<BlobReader> {
        let size = self.size(key).await?.ok_or(BlobError::NotFound)?;
        if offset >= size {
            // A range past the end is an error in S3; past the end is simply empty here.
            return Ok(Box::pin(tokio::io::empty()));
        }
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .range(format!("bytes={offset}-"))
            .send()
            .await
            .map_err(|e| match e.as_service_error() {
                Some(s) if s.is_no_such_key() => BlobError::NotFound,
                _ => unavailable(aws_sdk_s3::error::DisplayErrorContext(e)),
            })?;
        Ok(Box::pin(out.body.into_async_read()))
    }

    async fn put(&self, key: &str, mut body: BlobBody, max: u64) -> BlobResult<u64> {
        // Only inline uploads come through here (at most 4 MB): buffering is fine.
        let mut data = Vec::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(unavailable)?;
            if (data.len() + chunk.len()) as u64 > max {
                return Err(BlobError::TooLarge(max));
            }
            data.extend_from_slice(&chunk);
        }
        let size = data.len() as u64;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(data))
            .send()
            .await
            .map_err(|e| unavailable(aws_sdk_s3::error::DisplayErrorContext(e)))?;
        Ok(size)
    }

    async fn delete(&self, key: &str) -> BlobResult<()> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| unavailable(aws_sdk_s3::error::DisplayErrorContext(e)))?;
        Ok(())
    }

    async fn upload_form(&self, key: &str, max: u64) -> BlobResult<Option<UploadForm>> {
        let creds = self
            .credentials
            .provide_credentials()
            .await
            .map_err(unavailable)?;
        let policy = PostPolicy {
            bucket: &self.bucket,
            key,
            max_bytes: max,
            region: &self.region(),
            access_key_id: creds.access_key_id(),
            secret_access_key: creds.secret_access_key(),
            session_token: creds.session_token(),
            now: Utc::now(),
        };
        Ok(Some(policy.form(&self.form_url)))
    }
}

/// A SigV4-signed S3 POST policy.
pub struct PostPolicy<'a> {
    pub bucket: &'a str,
    pub key: &'a str,
    pub max_bytes: u64,
    pub region: &'a str,
    pub access_key_id: &'a str,
    pub secret_access_key: &'a str,
    pub session_token: Option<&'a str>,
    pub now: chrono::DateTime<Utc>,
}

impl PostPolicy<'_> {
    /// The form: S3 checks the policy's conditions (this key only, at most
    /// `max_bytes`, before the expiry) against what is posted.
    pub fn form(&self, url: &str) -> UploadForm {
        let date = self.now.format("%Y%m%d").to_string();
        let amz_date = self.now.format("%Y%m%dT%H%M%SZ").to_string();
        let expires = self.now + Duration::minutes(FORM_TTL_MINUTES);
        let credential = format!(
            "{}/{date}/{}/s3/aws4_request",
            self.access_key_id, self.region
        );
        let mut conditions = vec![
            serde_json::json!({"bucket": self.bucket}),
            serde_json::json!({"key": self.key}),
            serde_json::json!(["content-length-range", 0, self.max_bytes]),
            serde_json::json!({"x-amz-algorithm": "AWS4-HMAC-SHA256"}),
            serde_json::json!({"x-amz-credential": credential}),
            serde_json::json!({"x-amz-date": amz_date}),
        ];
        if let Some(t) = self.session_token {
            conditions.push(serde_json::json!({"x-amz-security-token": t}));
        }
        let policy = serde_json::json!({
            "expiration": expires.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
            "conditions": conditions,
        });
        let policy_b64 = base64::engine::general_purpose::STANDARD.encode(policy.to_string());
        let key = signing_key(self.secret_access_key, &date, self.region, "s3");
        let signature = hex::encode(hmac_sha256(&key, policy_b64.as_bytes()));
        let mut fields = BTreeMap::new();
        fields.insert("key".to_string(), self.key.to_string());
        fields.insert("x-amz-algorithm".into(), "AWS4-HMAC-SHA256".into());
        fields.insert("x-amz-credential".into(), credential);
        fields.insert("x-amz-date".into(), amz_date);
        if let Some(t) = self.session_token {
            fields.insert("x-amz-security-token".into(), t.to_string());
        }
        fields.insert("policy".into(), policy_b64);
        fields.insert("x-amz-signature".into(), signature);
        UploadForm {
            url: url.to_string(),
            fields,
            expires_at: expires,
        }
    }
}

/// SigV4's signing key: HMAC chain over the date, region, service and `aws4_request`.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let k_date = hmac_sha256(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac_sha256(&k_date, region.as_bytes());
    let k_service = hmac_sha256(&k_region, service.as_bytes());
    hmac_sha256(&k_service, b"aws4_request")
}

/// HMAC-SHA256 (RFC 2104).
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let ipad: Vec<u8> = block.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = block.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::new()
        .chain_update(&ipad)
        .chain_update(data)
        .finalize();
    Sha256::new()
        .chain_update(&opad)
        .chain_update(inner)
        .finalize()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let long_key = [0xaau8; 131];
        assert_eq!(
            hex::encode(hmac_sha256(
                &long_key,
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn the_policy_caps_the_size_and_names_the_key() {
        let p = PostPolicy {
            bucket: "uploads",
            key: "imports/ws_1/imp_2",
            max_bytes: 1000,
            region: "eu-west-1",
            access_key_id: "AKID",
            secret_access_key: "secret",
            session_token: Some("token"),
            now: chrono::DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z")
                .unwrap()
                .with_timezone(&Utc),
        };
        let form = p.form("https://uploads.s3.eu-west-1.amazonaws.com/");
        let policy = base64::engine::general_purpose::STANDARD
            .decode(&form.fields["policy"])
            .unwrap();
        let policy: serde_json::Value = serde_json::from_slice(&policy).unwrap();
        assert_eq!(policy["expiration"], "2026-01-02T04:04:05.000Z");
        let conds = policy["conditions"].as_array().unwrap();
        assert!(conds.contains(&serde_json::json!(["content-length-range", 0, 1000])));
        assert!(conds.contains(&serde_json::json!({"key": "imports/ws_1/imp_2"})));
        assert_eq!(
            form.fields["x-amz-credential"],
            "AKID/20260102/eu-west-1/s3/aws4_request"
        );
        assert_eq!(form.fields["x-amz-security-token"], "token");
        let key = signing_key("secret", "20260102", "eu-west-1", "s3");
        assert_eq!(
            form.fields["x-amz-signature"],
            hex::encode(hmac_sha256(&key, form.fields["policy"].as_bytes()))
        );
    }
}
