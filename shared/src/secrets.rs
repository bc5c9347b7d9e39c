//! Secrets: the AES key that encrypts secrets at rest (e.g. stored idempotent
//! responses, which may hold a new API key), the link-signing keys and the admin token.
//! The runner generates them into its data dir on first start; in AWS they come from
//! one Secrets Manager secret read once at cold start. Never logged, never returned.

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::links::{LinkKeys, LinkKeysError};

/// The secrets as stored (a JSON document: the runner's `secrets.json`, or the value of
/// the AWS secret). Any string works as `encryption_key`: the AES key is its SHA-256.
#[derive(Clone, Serialize, Deserialize)]
pub struct SecretsDoc {
    pub encryption_key: String,
    /// `kid1:secret1,kid2:secret2`: the first signs, all verify.
    #[serde(default)]
    pub link_keys: Option<String>,
    #[serde(default)]
    pub admin_token: Option<String>,
}

impl SecretsDoc {
    /// Fresh random secrets (the runner's first start).
    pub fn generate() -> Self {
        let mut k = [0u8; 32];
        rand::rng().fill_bytes(&mut k);
        let mut l = [0u8; 32];
        rand::rng().fill_bytes(&mut l);
        Self {
            encryption_key: hex::encode(k),
            link_keys: Some(format!("k1:{}", hex::encode(l))),
            admin_token: None,
        }
    }

    /// The link-signing keys, parsed from the `MAILPILOT_LINK_KEYS`-style text in
    /// `link_keys` (`kid1:secret1,kid2:secret2`: the first signs, all verify).
    pub fn link_keys(&self) -> Result<LinkKeys, LinkKeysError> {
        LinkKeys::parse(self.link_keys.as_deref().ok_or(LinkKeysError::Missing)?)
    }
}

impl fmt::Debug for SecretsDoc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretsDoc(<redacted>)")
    }
}

/// Encrypts and decrypts small secrets with AES-256-GCM (random 96-bit nonce).
#[derive(Clone)]
pub struct Sealer {
    cipher: Aes256Gcm,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sealer(<redacted>)")
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the sealed value does not decrypt")]
pub struct OpenError;

impl Sealer {
    pub fn new(encryption_key: &str) -> Self {
        let key = Sha256::digest(encryption_key.as_bytes());
        let cipher = Aes256Gcm::new(&key);
        Self { cipher }
    }

    /// base64(nonce ‖ ciphertext ‖ tag).
    pub fn seal(&self, plaintext: &[u8]) -> String {
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        // Encryption with a valid key and nonce cannot fail for in-memory buffers.
        let ct = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), plaintext)
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend(ct);
        STANDARD.encode(out)
    }

    pub fn open(&self, sealed: &str) -> Result<Vec<u8>, OpenError> {
        let raw = STANDARD.decode(sealed).map_err(|_| OpenError)?;
        if raw.len() < 12 {
            return Err(OpenError);
        }
        let (nonce, ct) = raw.split_at(12);
        self.cipher
            .decrypt(Nonce::from_slice(nonce), ct)
            .map_err(|_| OpenError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_round_trip_and_resist_tampering() {
        let s = Sealer::new("k");
        let sealed = s.seal(b"api key mp_123");
        assert!(!sealed.contains("mp_123"));
        assert_eq!(s.open(&sealed).unwrap(), b"api key mp_123");
        assert!(Sealer::new("other").open(&sealed).is_err());
        let mut raw = STANDARD.decode(&sealed).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        assert!(s.open(&STANDARD.encode(raw)).is_err());
    }

    #[test]
    fn debug_output_never_shows_secrets() {
        let d = SecretsDoc::generate();
        assert!(!format!("{d:?}").contains(&d.encryption_key));
    }
}
