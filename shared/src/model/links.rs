//! Signed tokens for the links in mail: click (`/t/c/{token}`), open pixel (`/t/o/{token}`)
//! and unsubscribe (`/u/{token}`).
//!
//! A token is a compact JWT signed with HS256, carrying a `kid` header (no `typ`) and the
//! shortest claims that let the tracking handler act without a database read:
//!
//! ```text
//! header: {"alg":"HS256","kid":"k1"}
//! claims: {"w":"ws_…","m":"msg_…","k":"c","i":3,"u":"https://example.com/x"}
//!          w = workspace id, m = message id, k = kind ("c" click | "o" open | "u" unsubscribe),
//!          i = link index and u = destination URL (click only, both required there)
//! ```
//!
//! Tokens never expire: links in old mail must keep working for years. Security comes from
//! the keys: [`LinkKeys`] is parsed from `MAILPILOT_LINK_KEYS`-style text
//! (`kid1:secret1,kid2:secret2`); the first key signs, all keys verify, and removing a kid
//! retires every token signed with it.

use std::collections::HashSet;
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};

/// Shortest accepted secret, in bytes (HS256's key should be at least the hash size).
pub const MIN_SECRET_LEN: usize = 32;
/// Longest accepted kid, in characters.
pub const MAX_KID_LEN: usize = 16;
/// Longest destination URL a click token may carry, in bytes.
pub const MAX_URL_LEN: usize = 8 * 1024;
/// Longest token [`LinkKeys::verify`] looks at; anything longer is malformed without
/// further work (a click token for a [`MAX_URL_LEN`] URL stays well below this).
pub const MAX_TOKEN_LEN: usize = 32 * 1024;

/// What a link token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkToken {
    /// A rewritten link: the `link_index`-th rewritable link of the message, leading to `url`.
    Click {
        workspace_id: String,
        message_id: String,
        link_index: u32,
        url: String,
    },
    /// The open-tracking pixel.
    Open {
        workspace_id: String,
        message_id: String,
    },
    /// The unsubscribe link (and the `List-Unsubscribe` one-click URL).
    Unsubscribe {
        workspace_id: String,
        message_id: String,
    },
}

/// Why `MAILPILOT_LINK_KEYS`-style text was rejected. Never carries a secret (nor a kid
/// that fails the kid rules, which might be a secret pasted in the wrong place).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkKeysError {
    #[error("no link-signing keys are configured")]
    Missing,
    #[error("the link-signing key list is empty (expected kid1:secret1,kid2:secret2)")]
    Empty,
    #[error("link-signing key entry {entry} has no ':' between kid and secret")]
    MissingColon { entry: usize },
    #[error("link-signing key entry {entry} has an empty kid")]
    EmptyKid { entry: usize },
    #[error("link-signing key entry {entry} has a kid longer than {MAX_KID_LEN} characters")]
    KidTooLong { entry: usize },
    #[error("link-signing key entry {entry} has a kid with characters outside [A-Za-z0-9_-]")]
    KidInvalidChars { entry: usize },
    #[error(
        "link-signing key {kid:?} has a secret of {len} bytes; at least {MIN_SECRET_LEN} are required"
    )]
    SecretTooShort { kid: String, len: usize },
    #[error("link-signing key {kid:?} is listed twice")]
    DuplicateKid { kid: String },
}

/// Why a token could not be signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    #[error("a click token's URL must be an absolute http or https URL without control characters")]
    UrlNotHttp,
    #[error("a click token's URL is longer than {MAX_URL_LEN} bytes")]
    UrlTooLong,
    #[error("the token could not be encoded")]
    Encode,
}

/// Why a token was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not three base64url parts, a header that is not a JSON object, an undecodable
    /// signature, or longer than [`MAX_TOKEN_LEN`].
    #[error("the token is malformed")]
    Malformed,
    /// Any `alg` other than HS256, including `none` and a missing `alg`.
    #[error("the token's algorithm is not HS256")]
    UnsupportedAlgorithm,
    #[error("the token has no kid")]
    MissingKid,
    /// A kid that is not (or no longer) listed: a retired key.
    #[error("the token's kid is unknown or retired")]
    UnknownKid,
    /// Header or claims tampered with, or signed with another secret.
    #[error("the token's signature does not verify")]
    BadSignature,
    /// Correctly signed, but the claims don't parse or contradict each other.
    #[error("the token's claims are invalid: {0}")]
    InvalidClaims(&'static str),
}

struct Key {
    kid: String,
    secret: String,
    /// The HMAC key, derived once: signing a link is then two hash passes over the
    /// token, not a key set-up per link.
    mac: aws_lc_rs::hmac::Key,
    decoding: DecodingKey,
}

impl Key {
    fn new(kid: String, secret: String) -> Self {
        let mac = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
        let decoding = DecodingKey::from_secret(secret.as_bytes());
        Self {
            kid,
            secret,
            mac,
            decoding,
        }
    }
}

/// The link-signing keys: the first signs, all verify.
pub struct LinkKeys {
    signing: Key,
    /// The signing key's JWT header, base64url-encoded once.
    header_b64: String,
    verifying_only: Vec<Key>,
    validation: Validation,
}

impl fmt::Debug for LinkKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinkKeys")
            .field("signing_kid", &self.signing.kid)
            .field("kids", &self.kids().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl LinkKeys {
    /// Parses `kid1:secret1,kid2:secret2`. Whitespace around entries and empty entries
    /// (e.g. a trailing comma) are ignored; the secret is everything after the first `:`
    /// and is used as-is (its UTF-8 bytes are the HMAC key).
    pub fn parse(text: &str) -> Result<Self, LinkKeysError> {
        let mut keys: Vec<Key> = Vec::new();
        let mut seen = HashSet::new();
        let entries = text.split(',').map(str::trim).filter(|e| !e.is_empty());
        for (n, entry) in entries.enumerate() {
            let entry_no = n + 1;
            let (kid, secret) = entry
                .split_once(':')
                .ok_or(LinkKeysError::MissingColon { entry: entry_no })?;
            if kid.is_empty() {
                return Err(LinkKeysError::EmptyKid { entry: entry_no });
            }
            if kid.chars().count() > MAX_KID_LEN {
                return Err(LinkKeysError::KidTooLong { entry: entry_no });
            }
            if !kid
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(LinkKeysError::KidInvalidChars { entry: entry_no });
            }
            if secret.len() < MIN_SECRET_LEN {
                return Err(LinkKeysError::SecretTooShort {
                    kid: kid.to_owned(),
                    len: secret.len(),
                });
            }
            if !seen.insert(kid) {
                return Err(LinkKeysError::DuplicateKid {
                    kid: kid.to_owned(),
                });
            }
            keys.push(Key::new(kid.to_owned(), secret.to_owned()));
        }
        let mut keys = keys.into_iter();
        let signing = keys.next().ok_or(LinkKeysError::Empty)?;
        Ok(Self::from_keys(signing, keys.collect()))
    }

    /// Fresh keys for a first start: kid `k1` with a random 32-byte secret in hex.
    /// Persist them with [`LinkKeys::to_config`].
    pub fn generate() -> Self {
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        Self::from_keys(Key::new("k1".to_owned(), hex::encode(secret)), Vec::new())
    }

    fn from_keys(signing: Key, verifying_only: Vec<Key>) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        // Link tokens carry no registered claims at all: nothing is required, nothing expires.
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        let header_b64 =
            URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"HS256","kid":"{}"}}"#, signing.kid));
        Self {
            signing,
            header_b64,
            verifying_only,
            validation,
        }
    }

    /// The keys back as `MAILPILOT_LINK_KEYS` text, secrets included: for writing the
    /// secrets file, never for logs.
    pub fn to_config(&self) -> String {
        self.all()
            .map(|k| format!("{}:{}", k.kid, k.secret))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The kid that signs new tokens.
    pub fn signing_kid(&self) -> &str {
        &self.signing.kid
    }

    /// Every kid that verifies, the signing one first.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.all().map(|k| k.kid.as_str())
    }

    fn all(&self) -> impl Iterator<Item = &Key> {
        std::iter::once(&self.signing).chain(self.verifying_only.iter())
    }

    /// Signs a token with the first key. A click's URL must be an absolute http(s) URL
    /// (so that every token signed here verifies).
    pub fn sign(&self, token: &LinkToken) -> Result<String, SignError> {
        let claims = ClaimsOut::from_token(token)?;
        self.sign_claims(&claims)
    }

    /// Signs a click token from borrowed parts (the send path signs one per link, so it
    /// avoids building an owned [`LinkToken`]).
    pub fn sign_click(
        &self,
        workspace_id: &str,
        message_id: &str,
        link_index: u32,
        url: &str,
    ) -> Result<String, SignError> {
        if url.len() > MAX_URL_LEN {
            return Err(SignError::UrlTooLong);
        }
        if !is_http_url(url) {
            return Err(SignError::UrlNotHttp);
        }
        self.sign_claims(&ClaimsOut {
            w: workspace_id,
            m: message_id,
            k: "c",
            i: Some(link_index),
            u: Some(url),
        })
    }

    /// Signs an open (`"o"`) or unsubscribe (`"u"`) token from borrowed parts.
    pub fn sign_message(
        &self,
        workspace_id: &str,
        message_id: &str,
        unsubscribe: bool,
    ) -> Result<String, SignError> {
        self.sign_claims(&ClaimsOut {
            w: workspace_id,
            m: message_id,
            k: if unsubscribe { "u" } else { "o" },
            i: None,
            u: None,
        })
    }

    /// `base64url(header).base64url(claims).base64url(HMAC)`, the header encoded once
    /// per key set: the same bytes `jsonwebtoken::encode` would produce.
    fn sign_claims(&self, claims: &ClaimsOut<'_>) -> Result<String, SignError> {
        let json = serde_json::to_vec(claims).map_err(|_| SignError::Encode)?;
        let mut token =
            String::with_capacity(self.header_b64.len() + 2 + json.len() * 4 / 3 + 4 + 43);
        token.push_str(&self.header_b64);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&json, &mut token);
        // HS256: HMAC-SHA256 over `header.claims`, base64url without padding.
        let sig = aws_lc_rs::hmac::sign(&self.signing.mac, token.as_bytes());
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(sig.as_ref(), &mut token);
        Ok(token)
    }

    /// Verifies a token and returns what it says.
    pub fn verify(&self, token: &str) -> Result<LinkToken, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(header), Some(_), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let header = URL_SAFE_NO_PAD
            .decode(header)
            .map_err(|_| TokenError::Malformed)?;
        let raw: RawHeader = serde_json::from_slice(&header).map_err(|_| TokenError::Malformed)?;
        if raw.alg.as_deref() != Some("HS256") {
            return Err(TokenError::UnsupportedAlgorithm);
        }
        // Whatever jsonwebtoken fails on from here on is the signature or the claims.
        serde_json::from_slice::<Header>(&header).map_err(|_| TokenError::Malformed)?;
        let kid = raw.kid.ok_or(TokenError::MissingKid)?;
        let key = self
            .all()
            .find(|k| k.kid == kid)
            .ok_or(TokenError::UnknownKid)?;
        let data = jsonwebtoken::decode::<ClaimsIn>(token, &key.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => TokenError::BadSignature,
                ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
                    TokenError::UnsupportedAlgorithm
                }
                ErrorKind::Json(_) => TokenError::InvalidClaims("the claims do not parse"),
                _ => TokenError::Malformed,
            })?;
        data.claims.into_token()
    }
}

#[derive(Deserialize)]
struct RawHeader {
    #[serde(default)]
    alg: Option<String>,
    #[serde(default)]
    kid: Option<String>,
}

#[derive(Serialize)]
struct ClaimsOut<'a> {
    w: &'a str,
    m: &'a str,
    k: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    i: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    u: Option<&'a str>,
}

impl<'a> ClaimsOut<'a> {
    fn from_token(token: &'a LinkToken) -> Result<Self, SignError> {
        Ok(match token {
            LinkToken::Click {
                workspace_id,
                message_id,
                link_index,
                url,
            } => {
                if url.len() > MAX_URL_LEN {
                    return Err(SignError::UrlTooLong);
                }
                if !is_http_url(url) {
                    return Err(SignError::UrlNotHttp);
                }
                Self {
                    w: workspace_id,
                    m: message_id,
                    k: "c",
                    i: Some(*link_index),
                    u: Some(url.as_str()),
                }
            }
            LinkToken::Open {
                workspace_id,
                message_id,
            } => Self {
                w: workspace_id,
                m: message_id,
                k: "o",
                i: None,
                u: None,
            },
            LinkToken::Unsubscribe {
                workspace_id,
                message_id,
            } => Self {
                w: workspace_id,
                m: message_id,
                k: "u",
                i: None,
                u: None,
            },
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClaimsIn {
    w: String,
    m: String,
    k: String,
    #[serde(default)]
    i: Option<u32>,
    #[serde(default)]
    u: Option<String>,
}

impl ClaimsIn {
    fn into_token(self) -> Result<LinkToken, TokenError> {
        let Self {
            w: workspace_id,
            m: message_id,
            k,
            i,
            u,
        } = self;
        match (k.as_str(), i, u) {
            ("c", Some(link_index), Some(url)) => {
                if !is_http_url(&url) {
                    return Err(TokenError::InvalidClaims("the url is not http or https"));
                }
                Ok(LinkToken::Click {
                    workspace_id,
                    message_id,
                    link_index,
                    url,
                })
            }
            ("c", _, _) => Err(TokenError::InvalidClaims(
                "a click needs a url and a link index",
            )),
            ("o", None, None) => Ok(LinkToken::Open {
                workspace_id,
                message_id,
            }),
            ("u", None, None) => Ok(LinkToken::Unsubscribe {
                workspace_id,
                message_id,
            }),
            ("o" | "u", _, _) => Err(TokenError::InvalidClaims(
                "only a click carries a url and a link index",
            )),
            _ => Err(TokenError::InvalidClaims("unknown kind")),
        }
    }
}

/// An absolute `http://` or `https://` URL (scheme case-insensitive) with a non-empty
/// authority free of whitespace, and no control characters anywhere.
fn is_http_url(url: &str) -> bool {
    let strip = |prefix: &str| {
        url.get(..prefix.len())
            .filter(|head| head.eq_ignore_ascii_case(prefix))
            .and_then(|_| url.get(prefix.len()..))
    };
    let Some(rest) = strip("https://").or_else(|| strip("http://")) else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    !authority.is_empty()
        && !authority.contains(char::is_whitespace)
        && !url.contains(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::EncodingKey;
    use proptest::prelude::*;

    const S1: &str = "0123456789abcdef0123456789abcdef-one";
    const S2: &str = "0123456789abcdef0123456789abcdef-two";
    const S3: &str = "0123456789abcdef0123456789abcdef-three";

    fn keys(text: &str) -> LinkKeys {
        LinkKeys::parse(text).unwrap()
    }

    fn click(url: &str) -> LinkToken {
        LinkToken::Click {
            workspace_id: "ws_5x0abcdefghjkmnpqrstvwxyz0".into(),
            message_id: "msg_5x0abcdefghjkmnpqrstvwxyz0".into(),
            link_index: 3,
            url: url.into(),
        }
    }

    fn b64(json: &str) -> String {
        URL_SAFE_NO_PAD.encode(json)
    }

    /// Signs arbitrary header and claims JSON by hand with HMAC-SHA256 and `secret`.
    fn hand_signed(header: &str, claims: &str, secret: &str) -> String {
        let message = format!("{}.{}", b64(header), b64(claims));
        let sig = jsonwebtoken::crypto::sign(
            message.as_bytes(),
            &EncodingKey::from_secret(secret.as_bytes()),
            Algorithm::HS256,
        )
        .unwrap();
        format!("{message}.{sig}")
    }

    // ---- LinkKeys parsing ----

    #[test]
    fn parses_keys_first_signs_all_verify() {
        let k = keys(&format!(" k2:{S2} , k1:{S1},"));
        assert_eq!(k.signing_kid(), "k2");
        assert_eq!(k.kids().collect::<Vec<_>>(), ["k2", "k1"]);
        assert_eq!(k.to_config(), format!("k2:{S2},k1:{S1}"));
        // A secret may contain ':' (everything after the first one).
        let k = keys("a_B-9:0123456789:abcdef0123456789abcdef0123456789");
        assert_eq!(k.signing_kid(), "a_B-9");
    }

    #[test]
    fn rejects_an_empty_list() {
        for text in ["", "   ", ",", " , ,"] {
            assert_eq!(LinkKeys::parse(text).unwrap_err(), LinkKeysError::Empty);
        }
    }

    #[test]
    fn rejects_an_entry_without_colon() {
        let err = LinkKeys::parse(&format!("k1:{S1},{S2}")).unwrap_err();
        assert_eq!(err, LinkKeysError::MissingColon { entry: 2 });
        assert!(!err.to_string().contains(S2));
    }

    #[test]
    fn rejects_an_empty_kid() {
        let err = LinkKeys::parse(&format!(":{S1}")).unwrap_err();
        assert_eq!(err, LinkKeysError::EmptyKid { entry: 1 });
    }

    #[test]
    fn rejects_a_kid_with_bad_characters() {
        for kid in ["k 1", "k.1", "k/1", "ké", "k+1"] {
            let err = LinkKeys::parse(&format!("{kid}:{S1}")).unwrap_err();
            assert_eq!(err, LinkKeysError::KidInvalidChars { entry: 1 }, "{kid}");
        }
    }

    #[test]
    fn rejects_a_kid_longer_than_16() {
        assert!(LinkKeys::parse(&format!("{}:{S1}", "a".repeat(16))).is_ok());
        let err = LinkKeys::parse(&format!("{}:{S1}", "a".repeat(17))).unwrap_err();
        assert_eq!(err, LinkKeysError::KidTooLong { entry: 1 });
    }

    #[test]
    fn rejects_a_short_secret() {
        let short = "x".repeat(31);
        let err = LinkKeys::parse(&format!("k1:{S1},k2:{short}")).unwrap_err();
        assert_eq!(
            err,
            LinkKeysError::SecretTooShort {
                kid: "k2".into(),
                len: 31
            }
        );
        assert!(!err.to_string().contains(&short));
        assert!(LinkKeys::parse("k1:").is_err());
        assert!(LinkKeys::parse(&format!("k1:{}", "x".repeat(32))).is_ok());
    }

    #[test]
    fn rejects_a_duplicate_kid() {
        let err = LinkKeys::parse(&format!("k1:{S1},k2:{S2},k1:{S3}")).unwrap_err();
        assert_eq!(err, LinkKeysError::DuplicateKid { kid: "k1".into() });
    }

    #[test]
    fn debug_never_shows_secrets() {
        let k = keys(&format!("k2:{S2},k1:{S1}"));
        let debug = format!("{k:?} {k:#?}");
        assert!(debug.contains("k2") && debug.contains("k1"));
        assert!(!debug.contains(S1) && !debug.contains(S2));
        assert!(!debug.contains("0123456789abcdef"));
        let g = LinkKeys::generate();
        let secret = g.to_config().split_once(':').unwrap().1.to_owned();
        assert!(!format!("{g:?}").contains(&secret));
    }

    #[test]
    fn generated_keys_are_k1_with_a_random_hex_secret() {
        let a = LinkKeys::generate();
        let b = LinkKeys::generate();
        assert_eq!(a.signing_kid(), "k1");
        let config = a.to_config();
        let (kid, secret) = config.split_once(':').unwrap();
        assert_eq!(kid, "k1");
        assert_eq!(secret.len(), 64);
        assert!(secret.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(config, b.to_config());
        // What generate() produces parses back, and its tokens verify after the round trip.
        let t = a.sign(&click("https://example.com/")).unwrap();
        assert!(keys(&config).verify(&t).is_ok());
        assert_eq!(
            keys(&config).verify(&b.sign(&click("https://e.com/")).unwrap()),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn secrets_doc_link_keys_parse_and_missing_ones_are_an_error() {
        let d = crate::secrets::SecretsDoc::generate();
        let keys = d.link_keys().unwrap();
        assert_eq!(keys.signing_kid(), "k1");
        assert_eq!(Some(keys.to_config()), d.link_keys);
        let none = crate::secrets::SecretsDoc {
            link_keys: None,
            ..d.clone()
        };
        assert_eq!(none.link_keys().unwrap_err(), LinkKeysError::Missing);
        let bad = crate::secrets::SecretsDoc {
            link_keys: Some("k1:short".into()),
            ..d
        };
        assert!(matches!(
            bad.link_keys(),
            Err(LinkKeysError::SecretTooShort { .. })
        ));
    }

    // ---- Signing ----

    #[test]
    fn tokens_are_short_and_carry_only_alg_and_kid() {
        let k = LinkKeys::generate();
        let url = "https://www.example.com/products/spring-sale?utm_source=mail";
        assert_eq!(url.len(), 60);
        let t = k.sign(&click(url)).unwrap();
        let header = t.split('.').next().unwrap();
        assert_eq!(
            URL_SAFE_NO_PAD.decode(header).unwrap(),
            br#"{"alg":"HS256","kid":"k1"}"#
        );
        let open = k
            .sign(&LinkToken::Open {
                workspace_id: "ws_5x0abcdefghjkmnpqrstvwxyz0".into(),
                message_id: "msg_5x0abcdefghjkmnpqrstvwxyz0".into(),
            })
            .unwrap();
        println!(
            "click token for a 60-char URL: {} chars; open token: {} chars",
            t.len(),
            open.len()
        );
        // header 35 + claims 207 (155 JSON bytes) + signature 43 + 2 dots; any growth (a `typ`
        // header, longer claim names) shows up here.
        assert_eq!(t.len(), 287);
        assert_eq!(open.len(), 190);
    }

    #[test]
    fn only_http_urls_are_signed() {
        let k = LinkKeys::generate();
        for url in [
            "javascript:alert(1)",
            "mailto:a@b.c",
            "//evil.com/",
            "https://",
            "https:///path",
            "ftp://example.com/",
            "https://exa mple.com/",
            "https://example.com/\r\nSet-Cookie: x",
            "https://example.com/\u{85}",
        ] {
            assert_eq!(k.sign(&click(url)), Err(SignError::UrlNotHttp), "{url:?}");
        }
        for url in [
            "HTTPS://Example.com",
            "http://a",
            "https://a.b?q=1",
            "http://a#x",
        ] {
            assert!(k.sign(&click(url)).is_ok(), "{url:?}");
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert_eq!(k.sign(&click(&long)), Err(SignError::UrlTooLong));
    }

    // ---- Verification: what is rejected ----

    #[test]
    fn rejects_malformed_tokens() {
        let k = keys(&format!("k1:{S1}"));
        let good = k.sign(&click("https://example.com/")).unwrap();
        let (head, sig) = good.rsplit_once('.').unwrap();
        for bad in [
            String::new(),
            "garbage".into(),
            "a.b".into(),
            head.to_owned(),
            format!("{good}.x"),
            format!("{good}."),
            format!("!!.{}", good.split_once('.').unwrap().1),
            format!("{}.{}.sig", b64("not json"), b64("{}")),
            format!("{}.{}.sig", b64("[1]"), b64("{}")),
            format!("{}.{}.sig", b64(r#"{"alg":"HS256","kid":7}"#), b64("{}")),
            format!(
                "{}.{}.sig",
                b64(r#"{"alg":"HS256","kid":"k1","typ":7}"#),
                b64("{}")
            ),
            format!("{head}.{}", &sig[2..]),
            format!("{head}.*{}", &sig[1..]),
            "a".repeat(MAX_TOKEN_LEN + 1),
        ] {
            assert_eq!(k.verify(&bad), Err(TokenError::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn rejects_alg_none_and_other_algorithms() {
        let k = keys(&format!("k1:{S1}"));
        let claims = r#"{"w":"ws_1","m":"msg_1","k":"o"}"#;
        // alg: none, built by hand, with an empty and with a copied signature.
        let none = format!("{}.{}.", b64(r#"{"alg":"none","kid":"k1"}"#), b64(claims));
        assert_eq!(k.verify(&none), Err(TokenError::UnsupportedAlgorithm));
        let good = hand_signed(r#"{"alg":"HS256","kid":"k1"}"#, claims, S1);
        let sig = good.rsplit_once('.').unwrap().1;
        assert_eq!(
            k.verify(&good),
            Ok(LinkToken::Open {
                workspace_id: "ws_1".into(),
                message_id: "msg_1".into()
            })
        );
        for header in [
            r#"{"alg":"none","kid":"k1"}"#,
            r#"{"alg":"None","kid":"k1"}"#,
            r#"{"alg":"hs256","kid":"k1"}"#,
            r#"{"kid":"k1"}"#,
            r#"{"alg":null,"kid":"k1"}"#,
        ] {
            let t = format!("{}.{}.{sig}", b64(header), b64(claims));
            assert_eq!(
                k.verify(&t),
                Err(TokenError::UnsupportedAlgorithm),
                "{header}"
            );
        }
        // A genuine HS512 / HS384 token over the same secret is still refused.
        for alg in [Algorithm::HS384, Algorithm::HS512] {
            let mut header = Header::new(alg);
            header.kid = Some("k1".into());
            let claims = serde_json::json!({"w": "ws_1", "m": "msg_1", "k": "o"});
            let t =
                jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(S1.as_bytes()))
                    .unwrap();
            assert_eq!(
                k.verify(&t),
                Err(TokenError::UnsupportedAlgorithm),
                "{alg:?}"
            );
        }
    }

    #[test]
    fn rejects_missing_and_unknown_kids() {
        let k = keys(&format!("k1:{S1}"));
        let claims = r#"{"w":"ws_1","m":"msg_1","k":"o"}"#;
        let t = hand_signed(r#"{"alg":"HS256"}"#, claims, S1);
        assert_eq!(k.verify(&t), Err(TokenError::MissingKid));
        let t = hand_signed(r#"{"alg":"HS256","kid":"k9"}"#, claims, S1);
        assert_eq!(k.verify(&t), Err(TokenError::UnknownKid));
    }

    #[test]
    fn rejects_bad_signatures() {
        let k = keys(&format!("k1:{S1},k2:{S2}"));
        let good = k.sign(&click("https://example.com/")).unwrap();
        let parts: Vec<&str> = good.split('.').collect();
        // Tampered payload: another URL, same header and signature.
        let payload = b64(
            r#"{"w":"ws_5x0abcdefghjkmnpqrstvwxyz0","m":"msg_5x0abcdefghjkmnpqrstvwxyz0","k":"c","i":3,"u":"https://evil.com/"}"#,
        );
        let t = format!("{}.{payload}.{}", parts[0], parts[2]);
        assert_eq!(k.verify(&t), Err(TokenError::BadSignature));
        // Tampered header: pointed at the other listed key.
        let t = format!(
            "{}.{}.{}",
            b64(r#"{"alg":"HS256","kid":"k2"}"#),
            parts[1],
            parts[2]
        );
        assert_eq!(k.verify(&t), Err(TokenError::BadSignature));
        // Tampered header: same meaning, different bytes (a typ added).
        let t = format!(
            "{}.{}.{}",
            b64(r#"{"alg":"HS256","kid":"k1","typ":"JWT"}"#),
            parts[1],
            parts[2]
        );
        assert_eq!(k.verify(&t), Err(TokenError::BadSignature));
        // Wrong key: same kid, another secret.
        let other = keys(&format!("k1:{S3}"));
        assert_eq!(other.verify(&good), Err(TokenError::BadSignature));
        // The signature of another token.
        let t2 = k.sign(&click("https://example.com/other")).unwrap();
        let t = format!(
            "{}.{}.{}",
            parts[0],
            parts[1],
            t2.rsplit_once('.').unwrap().1
        );
        assert_eq!(k.verify(&t), Err(TokenError::BadSignature));
    }

    #[test]
    fn a_non_canonical_signature_encoding_is_rejected() {
        // 32 signature bytes are 43 base64url characters; the last carries 2 data bits and
        // 4 zero bits. Setting one of those zero bits decodes to the same bytes under a
        // lenient decoder; the strict one (base64's default) must refuse it.
        let k = keys(&format!("k1:{S1}"));
        let good = k.sign(&click("https://example.com/")).unwrap();
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let last = *good.as_bytes().last().unwrap();
        let pos = alphabet.iter().position(|&c| c == last).unwrap();
        let twin = alphabet[pos ^ 1] as char;
        let t = format!("{}{twin}", &good[..good.len() - 1]);
        assert!(k.verify(&t).is_err());
    }

    #[test]
    fn rejects_inconsistent_claims_even_when_signed() {
        let k = keys(&format!("k1:{S1}"));
        let h = r#"{"alg":"HS256","kid":"k1"}"#;
        for claims in [
            r#"{"w":"ws_1","m":"msg_1","k":"c","i":1}"#,
            r#"{"w":"ws_1","m":"msg_1","k":"c","u":"https://a.com/"}"#,
            r#"{"w":"ws_1","m":"msg_1","k":"c","i":1,"u":"javascript:alert(1)"}"#,
            r#"{"w":"ws_1","m":"msg_1","k":"c","i":1,"u":"//evil.com"}"#,
            r#"{"w":"ws_1","m":"msg_1","k":"o","i":1}"#,
            r#"{"w":"ws_1","m":"msg_1","k":"u","u":"https://a.com/"}"#,
            r#"{"w":"ws_1","m":"msg_1","k":"x"}"#,
            r#"{"w":"ws_1","m":"msg_1","k":"c","i":-1,"u":"https://a.com/"}"#,
            r#"{"w":"ws_1","m":"msg_1","k":"c","i":"1","u":"https://a.com/"}"#,
            r#"{"w":"ws_1","k":"o"}"#,
            r#"{"w":"ws_1","m":"msg_1","k":"o","exp":1}"#,
            r#"{"w":"ws_1","m":"msg_1","k":"o","w":"ws_2"}"#,
            r#"["ws_1"]"#,
            "not json",
        ] {
            let t = hand_signed(h, claims, S1);
            assert!(
                matches!(k.verify(&t), Err(TokenError::InvalidClaims(_))),
                "{claims}: {:?}",
                k.verify(&t)
            );
        }
    }

    #[test]
    fn open_and_unsubscribe_tokens_round_trip() {
        let k = LinkKeys::generate();
        for t in [
            LinkToken::Open {
                workspace_id: "ws_a".into(),
                message_id: "msg_b".into(),
            },
            LinkToken::Unsubscribe {
                workspace_id: "ws_a".into(),
                message_id: "msg_b".into(),
            },
        ] {
            assert_eq!(k.verify(&k.sign(&t).unwrap()), Ok(t));
        }
    }

    // ---- Properties ----

    fn id(prefix: &'static str) -> impl Strategy<Value = String> {
        "[0-9a-hjkmnp-tv-z]{26}".prop_map(move |body| format!("{prefix}_{body}"))
    }

    /// Absolute http(s) URLs: hosts (with an optional port or userinfo-free IDN-ish
    /// label), unicode paths, query strings and fragments, plus long ones up to 2 KB.
    fn http_url() -> impl Strategy<Value = String> {
        let scheme = prop_oneof!["http", "https", "HTTPS"];
        let host = prop_oneof![
            "[a-z0-9-]{1,20}(\\.[a-z]{2,6}){1,2}",
            "[\\p{L}]{1,10}\\.[a-z]{2,4}",
            "[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}",
        ];
        let port = prop::option::of(1u16..);
        let path = prop::collection::vec("[^\\p{Cc}/?#]{0,24}", 0..6);
        let query = prop::collection::vec(("[^\\p{Cc}&=#]{1,12}", "[^\\p{Cc}&#]{0,24}"), 0..5);
        let fragment = prop::option::of("[^\\p{Cc}]{0,16}");
        let normal = (scheme, host, port, path, query, fragment).prop_map(
            |(scheme, host, port, path, query, fragment)| {
                let mut url = format!("{scheme}://{host}");
                if let Some(port) = port {
                    url.push_str(&format!(":{port}"));
                }
                for seg in path {
                    url.push('/');
                    url.push_str(&seg);
                }
                if !query.is_empty() {
                    let q: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    url.push('?');
                    url.push_str(&q.join("&"));
                }
                if let Some(f) = fragment {
                    url.push('#');
                    url.push_str(&f);
                }
                url
            },
        );
        let long = ("[a-z]{1,12}\\.com", "[^\\p{Cc}]{0,2100}").prop_map(|(host, tail)| {
            let mut url = format!("https://{host}/{tail}");
            while url.len() > 2048 {
                url.pop();
            }
            url
        });
        prop_oneof![3 => normal, 1 => long]
    }

    fn any_token() -> impl Strategy<Value = LinkToken> {
        prop_oneof![
            3 => (id("ws"), id("msg"), any::<u32>(), http_url()).prop_map(|(w, m, i, u)| {
                LinkToken::Click { workspace_id: w, message_id: m, link_index: i, url: u }
            }),
            1 => (id("ws"), id("msg")).prop_map(|(w, m)| LinkToken::Open {
                workspace_id: w,
                message_id: m
            }),
            1 => (id("ws"), id("msg")).prop_map(|(w, m)| LinkToken::Unsubscribe {
                workspace_id: w,
                message_id: m
            }),
        ]
    }

    fn secret() -> impl Strategy<Value = String> {
        "[A-Za-z0-9]{32,64}"
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn every_signed_click_verifies_back_exactly(
            w in id("ws"), m in id("msg"), i in any::<u32>(), url in http_url(),
        ) {
            let k = keys(&format!("k1:{S1}"));
            let token = LinkToken::Click {
                workspace_id: w, message_id: m, link_index: i, url,
            };
            let signed = k.sign(&token).unwrap();
            prop_assert!(signed.len() <= MAX_TOKEN_LEN);
            prop_assert!(signed.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)));
            prop_assert_eq!(k.verify(&signed), Ok(token));
        }

        /// Every single-character change of a token is rejected. Strictly: jsonwebtoken and
        /// our header check decode with base64's URL_SAFE_NO_PAD, which refuses
        /// non-canonical trailing bits, so no flip can be "harmless" (a changed header or
        /// payload byte breaks the HMAC, a changed signature byte too, a non-canonical
        /// last character fails decoding, and any other character is not base64url).
        #[test]
        fn flipping_any_character_is_rejected(
            token in any_token(),
            pos in any::<prop::sample::Index>(),
            replacement in prop_oneof![
                prop::sample::select(
                    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ ".to_vec()
                ).prop_map(char::from),
                any::<char>(),
            ],
        ) {
            let k = keys(&format!("k1:{S1}"));
            let signed = k.sign(&token).unwrap();
            let chars: Vec<char> = signed.chars().collect();
            let pos = pos.index(chars.len());
            prop_assume!(chars[pos] != replacement);
            let mut flipped = chars.clone();
            flipped[pos] = replacement;
            let flipped: String = flipped.into_iter().collect();
            let result = k.verify(&flipped);
            prop_assert!(result.is_err(), "{} -> {:?}", flipped, result);
        }

        #[test]
        fn retired_keys_fail_and_listed_keys_keep_verifying(
            token in any_token(), s1 in secret(), s2 in secret(), s3 in secret(),
        ) {
            let all = keys(&format!("k1:{s1},k2:{s2},k3:{s3}"));
            let by = |kid: &str, s: &str| keys(&format!("{kid}:{s}")).sign(&token).unwrap();
            let (t1, t2, t3) = (by("k1", &s1), by("k2", &s2), by("k3", &s3));
            for t in [&t1, &t2, &t3] {
                prop_assert_eq!(all.verify(t), Ok(token.clone()));
            }
            // Retire k2.
            let retired = keys(&format!("k1:{s1},k3:{s3}"));
            prop_assert_eq!(retired.verify(&t2), Err(TokenError::UnknownKid));
            prop_assert_eq!(retired.verify(&t1), Ok(token.clone()));
            prop_assert_eq!(retired.verify(&t3), Ok(token.clone()));
        }

        #[test]
        fn a_new_first_key_signs_while_old_tokens_verify(
            token in any_token(), old in secret(), new in secret(),
        ) {
            let before = keys(&format!("old:{old}"));
            let old_token = before.sign(&token).unwrap();
            let rotated = keys(&format!("new:{new},old:{old}"));
            let new_token = rotated.sign(&token).unwrap();
            prop_assert_eq!(rotated.signing_kid(), "new");
            prop_assert_ne!(&new_token, &old_token);
            let header = URL_SAFE_NO_PAD.decode(new_token.split('.').next().unwrap()).unwrap();
            prop_assert_eq!(header, br#"{"alg":"HS256","kid":"new"}"#.to_vec());
            prop_assert_eq!(rotated.verify(&old_token), Ok(token.clone()));
            prop_assert_eq!(rotated.verify(&new_token), Ok(token.clone()));
            // Before the rotation reaches a verifier, the new kid is simply unknown.
            prop_assert_eq!(before.verify(&new_token), Err(TokenError::UnknownKid));
            // Once the old key is retired, only its tokens stop working.
            let after = keys(&format!("new:{new}"));
            prop_assert_eq!(after.verify(&old_token), Err(TokenError::UnknownKid));
            prop_assert_eq!(after.verify(&new_token), Ok(token));
        }
    }
}
