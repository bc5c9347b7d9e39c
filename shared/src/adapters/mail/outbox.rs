//! The outbox: every message kept as an RFC 5322 `.eml` file under
//! `$MAILPILOT_DATA/outbox/<workspace>/<message id>.eml`, the local runner's default way
//! out. A file appears whole or not at all (written to a temporary name, then linked into
//! place), and a message id is written once: a second send of the same message writes
//! nothing, answers the same [`Accepted`], and is noted in `duplicates.log` so tests can
//! count repeated sends.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{permanent, transient};
use crate::ports::provider::{Accepted, OutgoingMessage, Provider, SendError};

/// The file that records repeated sends of one message id, a line each.
pub const DUPLICATES_LOG: &str = "duplicates.log";

#[derive(Debug, Clone)]
pub struct OutboxProvider {
    dir: PathBuf,
}

impl OutboxProvider {
    /// An outbox writing into `dir` (one workspace's folder).
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }
}

/// A message id is a file name here: only ids of our own shape are accepted.
pub fn is_safe_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 100
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn write_once(dir: &Path, id: &str, raw: &[u8]) -> std::io::Result<bool> {
    std::fs::create_dir_all(dir)?;
    let target = dir.join(format!("{id}.eml"));
    if target.exists() {
        return Ok(false);
    }
    let tmp = dir.join(format!(".{id}.{}.tmp", uuid::Uuid::new_v4().simple()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(raw)?;
        f.sync_all()?;
        // A hard link fails if the target exists: two racing sends write one file.
        match std::fs::hard_link(&tmp, &target) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        }
    })();
    let _ = std::fs::remove_file(&tmp);
    result
}

fn note_duplicate(dir: &Path, id: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(DUPLICATES_LOG))?;
    writeln!(f, "{id}")
}

#[async_trait]
impl Provider for OutboxProvider {
    fn kind(&self) -> &'static str {
        "outbox"
    }

    /// No events.
    fn needs_message_pointer(&self) -> bool {
        false
    }

    async fn send(&self, message: &OutgoingMessage) -> Result<Accepted, SendError> {
        let id = message.parts.message_id.clone();
        if !is_safe_id(&id) {
            return Err(permanent(
                "bad_message_id",
                "the message id cannot name a file",
            ));
        }
        let accepted = Accepted {
            provider_message_id: message.parts.rfc_message_id(),
        };
        let dir = self.dir.clone();
        let raw = message.raw.clone();
        let written = tokio::task::spawn_blocking(move || {
            let written = write_once(&dir, &id, &raw)?;
            if !written {
                note_duplicate(&dir, &id)?;
            }
            Ok::<_, std::io::Error>(written)
        })
        .await
        .map_err(|e| transient("io", e.to_string()))?
        .map_err(|e| transient("io", e.to_string()))?;
        if !written {
            tracing::info!(message_id = %message.parts.message_id, "outbox already holds this message");
        }
        Ok(accepted)
    }

    async fn verify(&self) -> Result<(), SendError> {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir)?;
            let probe = dir.join(format!(".verify.{}.tmp", uuid::Uuid::new_v4().simple()));
            std::fs::write(&probe, b"")?;
            std::fs::remove_file(&probe)
        })
        .await
        .map_err(|e| transient("io", e.to_string()))?
        .map_err(|e| super::sender("io", format!("the outbox folder is not writable: {e}")))
    }
}

/// How many repeated sends the outbox folder has seen (lines of `duplicates.log`).
pub fn duplicate_sends(dir: &Path) -> usize {
    std::fs::File::open(dir.join(DUPLICATES_LOG))
        .map(|f| BufReader::new(f).lines().count())
        .unwrap_or(0)
}

/// One message in the outbox, as `GET /v1/outbox` lists it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OutboxEntry {
    /// Mailpilot's message id (`X-Mailpilot-Message-Id`).
    pub message_id: String,
    pub from: Option<String>,
    pub to: Option<String>,
    /// The subject, decoded.
    pub subject: Option<String>,
    pub size_bytes: u64,
    /// When the file was written.
    pub written_at: DateTime<Utc>,
    /// Where to fetch the raw `.eml` (`message/rfc822`) with the same API key.
    pub raw_url: String,
}

/// A page of outbox entries, newest first.
#[derive(Debug)]
pub struct OutboxPage {
    pub data: Vec<OutboxEntry>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("the cursor is not one this listing gave")]
    BadCursor,
    #[error("reading the outbox: {0}")]
    Io(#[from] std::io::Error),
}

fn cursor_of(nanos: u128, name: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{nanos}:{name}"))
}

fn parse_cursor(c: &str) -> Option<(u128, String)> {
    let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(c).ok()?).ok()?;
    let (n, name) = raw.split_once(':')?;
    Some((n.parse().ok()?, name.to_string()))
}

/// Lists a workspace's outbox folder, newest first, `limit` per page.
pub fn list(dir: &Path, limit: usize, cursor: Option<&str>) -> Result<OutboxPage, OutboxError> {
    let after = match cursor {
        Some(c) => Some(parse_cursor(c).ok_or(OutboxError::BadCursor)?),
        None => None,
    };
    let mut files = vec![];
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(OutboxPage {
                data: vec![],
                next_cursor: None,
            });
        }
        Err(e) => return Err(e.into()),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(id) = name.strip_suffix(".eml") else {
            continue;
        };
        if !is_safe_id(id) {
            continue;
        }
        let meta = entry.metadata()?;
        let nanos = meta
            .modified()?
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        files.push((nanos, id.to_string(), meta.len()));
    }
    // Newest first; the id breaks ties so the order is total and cursors are exact.
    files.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| b.1.cmp(&a.1)));
    let start = match &after {
        Some((n, id)) => files
            .iter()
            .position(|(fn_, fid, _)| (fn_, fid) < (n, id))
            .unwrap_or(files.len()),
        None => 0,
    };
    let page: Vec<_> = files.iter().skip(start).take(limit).collect();
    let next_cursor = (start + page.len() < files.len())
        .then(|| page.last().map(|(n, id, _)| cursor_of(*n, id)))
        .flatten();
    let mut data = vec![];
    for (nanos, id, size) in page {
        let headers = read_headers(&dir.join(format!("{id}.eml")))?;
        let get = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| decode_words(v))
        };
        let secs = (*nanos / 1_000_000_000) as i64;
        let sub = (*nanos % 1_000_000_000) as u32;
        data.push(OutboxEntry {
            message_id: id.clone(),
            from: get("From"),
            to: get("To"),
            subject: get("Subject"),
            size_bytes: *size,
            written_at: DateTime::from_timestamp(secs, sub).unwrap_or_default(),
            raw_url: format!("/v1/outbox/{id}"),
        });
    }
    Ok(OutboxPage { data, next_cursor })
}

/// The raw bytes of one message, if the folder holds it.
pub fn read(dir: &Path, message_id: &str) -> Result<Option<Vec<u8>>, OutboxError> {
    if !is_safe_id(message_id) {
        return Ok(None);
    }
    match std::fs::read(dir.join(format!("{message_id}.eml"))) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The header block of a message file, unfolded.
fn read_headers(path: &Path) -> std::io::Result<Vec<(String, String)>> {
    let f = std::fs::File::open(path)?;
    let mut headers: Vec<(String, String)> = vec![];
    for line in BufReader::new(f).split(b'\n') {
        let line = line?;
        let line = String::from_utf8_lossy(&line);
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(last) = headers.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
        } else if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    Ok(headers)
}

/// Decodes RFC 2047 encoded words (`=?utf-8?b?…?=`, `=?utf-8?q?…?=`) in a header value.
pub fn decode_words(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    let mut last_was_word = false;
    while let Some(start) = rest.find("=?") {
        let (before, after) = rest.split_at(start);
        let decoded = decode_word(after);
        // Whitespace between two encoded words is not part of the text.
        if !(last_was_word && before.trim().is_empty() && decoded.is_some()) {
            out.push_str(before);
        }
        match decoded {
            Some((text, used)) => {
                out.push_str(&text);
                rest = &after[used..];
                last_was_word = true;
            }
            None => {
                out.push_str("=?");
                rest = &after[2..];
                last_was_word = false;
            }
        }
    }
    out.push_str(rest);
    out
}

fn decode_word(s: &str) -> Option<(String, usize)> {
    let body = s.strip_prefix("=?")?;
    let (charset, body) = body.split_once('?')?;
    if !charset.eq_ignore_ascii_case("utf-8") && !charset.eq_ignore_ascii_case("us-ascii") {
        return None;
    }
    let (enc, body) = body.split_once('?')?;
    let end = body.find("?=")?;
    let text = &body[..end];
    let bytes = match enc {
        "b" | "B" => STANDARD.decode(text).ok()?,
        "q" | "Q" => {
            let mut out = vec![];
            let b = text.as_bytes();
            let mut i = 0;
            while i < b.len() {
                match b[i] {
                    b'_' => out.push(b' '),
                    b'=' if i + 2 < b.len() => {
                        out.push(
                            u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).ok()?, 16)
                                .ok()?,
                        );
                        i += 2;
                    }
                    c => out.push(c),
                }
                i += 1;
            }
            out
        }
        _ => return None,
    };
    let used = 2 + charset.len() + 1 + enc.len() + 1 + end + 2;
    Some((String::from_utf8(bytes).ok()?, used))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mime::{Mailbox, MessageParts, build};

    fn message(id: &str, subject: &str) -> OutgoingMessage {
        let parts = MessageParts {
            message_id: id.into(),
            from: Mailbox::new(Some("Acme"), "news@acme.example"),
            reply_to: None,
            to: Mailbox::new(None, "zoe@example.com"),
            subject: subject.into(),
            html: None,
            text: Some("Hello".into()),
            list_unsubscribe: None,
            date: Utc::now(),
        };
        OutgoingMessage {
            raw: build(&parts).unwrap(),
            parts,
            idempotency_key: id.into(),
            tags: vec![],
        }
    }

    #[tokio::test]
    async fn a_message_id_is_written_once_and_repeats_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = OutboxProvider::new(dir.path().join("ws_1"));
        let first = outbox.send(&message("msg_a", "Hi")).await.unwrap();
        let mut again = message("msg_a", "Changed");
        again.raw = b"Subject: other\r\n\r\nx".to_vec();
        assert_eq!(outbox.send(&again).await.unwrap(), first);
        let raw = read(&dir.path().join("ws_1"), "msg_a").unwrap().unwrap();
        assert!(String::from_utf8_lossy(&raw).contains("Subject: Hi"));
        assert_eq!(duplicate_sends(&dir.path().join("ws_1")), 1);
        outbox.verify().await.unwrap();
    }

    #[tokio::test]
    async fn the_listing_is_newest_first_paged_and_decodes_subjects() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("ws_1");
        let outbox = OutboxProvider::new(ws.clone());
        for i in 0..5 {
            outbox
                .send(&message(&format!("msg_{i}"), &format!("Grüße {i}")))
                .await
                .unwrap();
            // Distinct modification times on coarse file systems.
            std::thread::sleep(std::time::Duration::from_millis(15));
        }
        let p1 = list(&ws, 2, None).unwrap();
        assert_eq!(
            p1.data
                .iter()
                .map(|e| e.message_id.as_str())
                .collect::<Vec<_>>(),
            ["msg_4", "msg_3"]
        );
        assert_eq!(p1.data[0].subject.as_deref(), Some("Grüße 4"));
        assert_eq!(p1.data[0].to.as_deref(), Some("zoe@example.com"));
        let p2 = list(&ws, 2, p1.next_cursor.as_deref()).unwrap();
        let p3 = list(&ws, 2, p2.next_cursor.as_deref()).unwrap();
        assert_eq!(p3.data.len(), 1);
        assert_eq!(p3.data[0].message_id, "msg_0");
        assert!(p3.next_cursor.is_none());
        assert!(matches!(
            list(&ws, 2, Some("@@")),
            Err(OutboxError::BadCursor)
        ));
        assert!(
            list(&dir.path().join("none"), 2, None)
                .unwrap()
                .data
                .is_empty()
        );
    }

    #[test]
    fn ids_that_are_not_file_names_are_refused() {
        assert!(is_safe_id("msg_01abc"));
        assert!(!is_safe_id("../etc/passwd"));
        assert!(!is_safe_id(""));
        assert!(!is_safe_id("a/b"));
    }

    #[test]
    fn encoded_words_decode() {
        assert_eq!(decode_words("=?utf-8?b?R3LDvMOfZQ==?="), "Grüße");
        assert_eq!(
            decode_words("=?utf-8?q?Gr=C3=BC=C3=9Fe_aus?= Köln"),
            "Grüße aus Köln"
        );
        assert_eq!(decode_words("=?utf-8?b?QQ==?= =?utf-8?b?Qg==?="), "AB");
        assert_eq!(decode_words("plain =? text"), "plain =? text");
    }
}
