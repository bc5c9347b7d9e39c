//! Building the RFC 5322 message every provider sends.
//!
//! One function, [`build`], turns [`MessageParts`] into bytes: From / Reply-To / To with
//! display names, encoded-word subjects for non-ASCII, `multipart/alternative` when there
//! is a text part, a `Message-ID`, our correlation header `X-Mailpilot-Message-Id` (SES
//! replaces `Message-ID` with its own, so correlation never depends on ours surviving) and,
//! for mail that has one, `List-Unsubscribe` (https, and mailto when given) with
//! `List-Unsubscribe-Post: List-Unsubscribe=One-Click` (RFC 8058).

use std::time::SystemTime;

use chrono::{DateTime, Utc};
use lettre::message::header::{ContentTransferEncoding, ContentType, HeaderName, HeaderValue};
use lettre::message::{Body, Mailbox as LettreMailbox, MultiPart, SinglePart};
use lettre::{Message, message::MessageBuilder};
use serde::{Deserialize, Serialize};

/// The header carrying Mailpilot's message id.
pub const MESSAGE_ID_HEADER: &str = "X-Mailpilot-Message-Id";

/// An address with an optional display name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mailbox {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A normalised address (see `model::email`).
    pub email: String,
}

impl Mailbox {
    pub fn new(name: Option<&str>, email: &str) -> Self {
        Mailbox {
            name: name.filter(|n| !n.trim().is_empty()).map(str::to_owned),
            email: email.to_owned(),
        }
    }

    /// The domain part of the address (empty if there is no `@`).
    pub fn domain(&self) -> &str {
        self.email.rsplit_once('@').map(|(_, d)| d).unwrap_or("")
    }
}

/// The `List-Unsubscribe` targets of a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListUnsubscribe {
    /// The one-click https URL (`POST` unsubscribes, RFC 8058).
    pub url: String,
    /// An optional `mailto:` address for clients that only support mail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mailto: Option<String>,
}

/// Everything a message is built from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageParts {
    /// Mailpilot's message id (also used for the `Message-ID` local part).
    pub message_id: String,
    pub from: Mailbox,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<Mailbox>,
    pub to: Mailbox,
    pub subject: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list_unsubscribe: Option<ListUnsubscribe>,
    pub date: DateTime<Utc>,
}

impl MessageParts {
    /// The `Message-ID` we assign: `<message id@from domain>`.
    pub fn rfc_message_id(&self) -> String {
        let domain = match self.from.domain() {
            "" => "mailpilot.invalid",
            d => d,
        };
        format!("<{}@{}>", self.message_id, domain)
    }
}

/// Why a message could not be built. Carries the field, never a whole body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MimeError {
    #[error("{field} is not a valid address: {detail}")]
    Address { field: &'static str, detail: String },
    #[error("the message has neither an HTML nor a text body")]
    NoBody,
    #[error("the message could not be built: {0}")]
    Build(String),
}

fn mailbox(field: &'static str, m: &Mailbox) -> Result<LettreMailbox, MimeError> {
    let address = m
        .email
        .parse()
        .map_err(|e: lettre::address::AddressError| MimeError::Address {
            field,
            detail: e.to_string(),
        })?;
    Ok(LettreMailbox::new(m.name.clone(), address))
}

fn raw_header(name: &'static str, value: String) -> HeaderValue {
    HeaderValue::new(HeaderName::new_from_ascii_str(name), value)
}

/// Builds the RFC 5322 bytes of a message.
///
/// The same bytes as [`message`]`(parts)?.formatted()` (up to the random multipart
/// boundary; `tests::build_matches_lettres_formatting` holds them equal), written into one
/// buffer sized up front: lettre's `formatted` grows its buffer from empty and copies
/// every body once more, which for a newsletter costs about as much as encoding it.
/// lettre still writes every header.
pub fn build(parts: &MessageParts) -> Result<Vec<u8>, MimeError> {
    let bodies = bodies(parts)?;
    let part_headers = |ct: &ContentType, body: &Encoded| {
        SinglePart::builder()
            .header(ct.clone())
            .body(Body::dangerous_pre_encoded(Vec::new(), body.1))
            .headers()
            .to_string()
    };
    let size = bodies.iter().map(|(_, b)| b.0.len() + 256).sum::<usize>() + 2048;
    let mut out = Vec::with_capacity(size);
    let head = headers(parts)?;
    match bodies.as_slice() {
        [(ct, body)] => {
            let shell = head
                .singlepart(SinglePart::builder().header(ct.clone()).body(String::new()))
                .map_err(|e| MimeError::Build(e.to_string()))?;
            out.extend_from_slice(shell.headers().to_string().as_bytes());
            out.extend_from_slice(part_headers(ct, body).as_bytes());
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(&body.0);
            out.extend_from_slice(b"\r\n");
        }
        several => {
            let alternative = MultiPart::alternative().build();
            let boundary = alternative.boundary();
            out.extend_from_slice(
                head.multipart(alternative.clone())
                    .map_err(|e| MimeError::Build(e.to_string()))?
                    .headers()
                    .to_string()
                    .as_bytes(),
            );
            out.extend_from_slice(alternative.headers().to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
            for (ct, body) in several {
                out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
                out.extend_from_slice(part_headers(ct, body).as_bytes());
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(&body.0);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        }
    }
    Ok(out)
}

/// Builds the message as lettre's [`Message`] (what DKIM signing takes).
pub fn message(parts: &MessageParts) -> Result<Message, MimeError> {
    let head = headers(parts)?;
    let part = |(ct, body): (ContentType, Encoded)| {
        SinglePart::builder()
            .header(ct)
            .body(Body::dangerous_pre_encoded(body.0, body.1))
    };
    let mut bodies = bodies(parts)?.into_iter();
    let message = match (bodies.next(), bodies.next()) {
        (Some(first), Some(second)) => head.multipart(
            MultiPart::alternative()
                .singlepart(part(first))
                .singlepart(part(second)),
        ),
        (Some(only), None) => head.singlepart(part(only)),
        (None, _) => return Err(MimeError::NoBody),
    }
    .map_err(|e| MimeError::Build(e.to_string()))?;
    Ok(message)
}

/// A body encoded for the wire, and its transfer encoding.
type Encoded = (Vec<u8>, ContentTransferEncoding);

/// The bodies in their order in `multipart/alternative`: text first, HTML last (clients
/// show the last part they understand).
fn bodies(parts: &MessageParts) -> Result<Vec<(ContentType, Encoded)>, MimeError> {
    let mut out = Vec::with_capacity(2);
    if let Some(text) = &parts.text {
        out.push((ContentType::TEXT_PLAIN, body::encode(text)));
    }
    if let Some(html) = &parts.html {
        out.push((ContentType::TEXT_HTML, body::encode(html)));
    }
    if out.is_empty() {
        return Err(MimeError::NoBody);
    }
    Ok(out)
}

/// The message's own headers.
fn headers(parts: &MessageParts) -> Result<MessageBuilder, MimeError> {
    let mut builder = Message::builder()
        .from(mailbox("from", &parts.from)?)
        .to(mailbox("to", &parts.to)?)
        .subject(parts.subject.clone())
        .date(SystemTime::from(parts.date))
        .message_id(Some(parts.rfc_message_id()))
        .raw_header(raw_header(MESSAGE_ID_HEADER, parts.message_id.clone()));
    if let Some(reply_to) = &parts.reply_to {
        builder = builder.reply_to(mailbox("reply_to", reply_to)?);
    }
    if let Some(unsub) = &parts.list_unsubscribe {
        let mut value = format!("<{}>", unsub.url);
        if let Some(mailto) = &unsub.mailto {
            value.push_str(&format!(", <mailto:{mailto}>"));
        }
        builder = builder
            .raw_header(raw_header("List-Unsubscribe", value))
            .raw_header(raw_header(
                "List-Unsubscribe-Post",
                "List-Unsubscribe=One-Click".into(),
            ));
    }
    Ok(builder)
}

/// Body encoding: the same bytes lettre's `Body::new` produces (the encoding chosen by
/// `email_encoding`'s rules, line endings made CRLF, then 7bit / quoted-printable /
/// base64), in linear time. lettre inserts each missing `\r` with `String::insert`,
/// which copies the rest of the body once per line: quadratic, and most of the cost of
/// building a 40 KB newsletter. `tests::body_encoding_matches_lettre` holds the two
/// byte for byte.
mod body {
    use base64::Engine;
    use lettre::message::header::ContentTransferEncoding;

    /// RFC 2045's line limit for quoted-printable and base64 (without the CRLF).
    const LIMIT: usize = 76;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(super) enum Encoding {
        SevenBit,
        QuotedPrintable,
        Base64,
    }

    /// `email_encoding::body::Encoding::choose(s, false)` for a `&str`.
    pub(super) fn choose(s: &str) -> Encoding {
        let b = s.as_bytes();
        let mut last = 0;
        let too_long = memchr::memchr_iter(b'\n', b).any(|i| {
            let prev = std::mem::replace(&mut last, i);
            i - prev >= LIMIT
        }) || b.len() - last >= LIMIT;
        if s.is_ascii() && !too_long {
            return Encoding::SevenBit;
        }
        // Branch-free, summed in bytes per 255-byte chunk, so that it vectorises: this
        // runs over every byte of the body.
        let escaped: usize = b
            .chunks(255)
            .map(|chunk| {
                let n: u8 = chunk
                    .iter()
                    .map(|&c| u8::from((c != b'\t') & (c.wrapping_sub(b' ') > b'~' - b' ')))
                    .fold(0, u8::wrapping_add);
                usize::from(n)
            })
            .sum();
        if escaped <= b.len() / 3 {
            Encoding::QuotedPrintable
        } else {
            Encoding::Base64
        }
    }

    /// Every `\n` not preceded by `\r` gets one (lettre's `in_place_crlf_line_endings`).
    pub(super) fn crlf(s: &str) -> Vec<u8> {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len() + b.len() / 32 + 2);
        let mut from = 0;
        for i in memchr::memchr_iter(b'\n', b) {
            if i == 0 || b[i - 1] != b'\r' {
                out.extend_from_slice(&b[from..i]);
                out.push(b'\r');
                from = i;
            }
        }
        out.extend_from_slice(&b[from..]);
        out
    }

    /// The body of a text part, encoded, and its transfer encoding.
    pub(super) fn encode(s: &str) -> super::Encoded {
        match choose(s) {
            Encoding::SevenBit => (crlf(s), ContentTransferEncoding::SevenBit),
            // Reads `s` itself: a bare LF counts as the CRLF `crlf` would make of it.
            Encoding::QuotedPrintable => (
                quoted_printable(s.as_bytes()),
                ContentTransferEncoding::QuotedPrintable,
            ),
            Encoding::Base64 => (base64_lines(&crlf(s)), ContentTransferEncoding::Base64),
        }
    }

    /// `email_encoding::body::base64::encode`: 57-byte chunks, 76-character lines
    /// joined by CRLF, no CRLF after the last.
    fn base64_lines(b: &[u8]) -> Vec<u8> {
        let mut out = String::with_capacity(b.len().div_ceil(57) * 78);
        for (n, chunk) in b.chunks(LIMIT / 4 * 3).enumerate() {
            if n > 0 {
                out.push_str("\r\n");
            }
            base64::engine::general_purpose::STANDARD.encode_string(chunk, &mut out);
        }
        out.into_bytes()
    }

    const HEX: &[u8; 16] = b"0123456789ABCDEF";

    /// Bytes quoted-printable copies as they are (tab, and printable ASCII but `=`).
    const SAFE: [bool; 256] = {
        let mut t = [false; 256];
        let mut c = 0;
        while c < 256 {
            t[c] = matches!(c as u8, b'\t' | b' '..=b'<' | b'>'..=b'~');
            c += 1;
        }
        t
    };

    fn safe(c: u8) -> bool {
        SAFE[c as usize]
    }

    /// The `quoted_printable` crate's `encode` (text mode, 76 characters), with its
    /// exact line-breaking decisions, copying runs of plain bytes as slices.
    struct Qp {
        out: Vec<u8>,
        on_line: usize,
        backup: usize,
    }

    impl Qp {
        fn append(&mut self, piece: &[u8]) {
            if self.on_line + piece.len() > LIMIT {
                if self.on_line == LIMIT {
                    // The line is full: its last piece (at most 3 bytes) moves to the
                    // next line, after the soft break.
                    let mut tail = [0u8; 3];
                    let len = self.out.len() - self.backup;
                    tail[..len].copy_from_slice(&self.out[self.backup..]);
                    self.out.truncate(self.backup);
                    self.out.extend_from_slice(b"=\r\n");
                    self.out.extend_from_slice(&tail[..len]);
                    self.on_line = len;
                } else {
                    self.out.extend_from_slice(b"=\r\n");
                    self.on_line = 0;
                }
            }
            self.out.extend_from_slice(piece);
            self.on_line += piece.len();
            self.backup = self.out.len() - piece.len();
        }

        fn byte(&mut self, c: u8) {
            if safe(c) {
                self.append(&[c]);
            } else {
                self.append(&[b'=', HEX[(c >> 4) as usize], HEX[(c & 15) as usize]]);
            }
        }

        /// A hard line break (CRLF), after escaping a space or tab that would end the line.
        fn line_break(&mut self) {
            self.trailing_space();
            self.out.extend_from_slice(b"\r\n");
            self.on_line = 0;
        }

        fn trailing_space(&mut self) {
            let enc: &[u8] = match self.out.last() {
                Some(b' ') => b"=20",
                Some(b'\t') => b"=09",
                _ => return,
            };
            self.on_line -= 1;
            self.out.pop();
            self.append(enc);
        }
    }

    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    const ONES: u64 = 0x0101_0101_0101_0101;

    /// The high bit of every byte of `x` that equals `b` (exact per byte: the sums
    /// cannot carry from one byte into the next).
    fn bytes_equal(x: u64, b: u8) -> u64 {
        let t = x ^ (ONES * u64::from(b));
        !(((t & LOW7) + LOW7) | t) & HIGH
    }

    /// The high bit of every byte of the eight in `x` that quoted-printable escapes:
    /// not ASCII, a control character other than tab, DEL, or `=`.
    fn escaped_bytes(x: u64) -> u64 {
        let non_ascii = x & HIGH;
        // (b & 0x7f) + 0x60 reaches 0x80 exactly when b & 0x7f >= 0x20; at most 0xdf.
        let printable = ((x & LOW7) + ONES * 0x60) & HIGH;
        let control = !printable & !x & HIGH;
        non_ascii | (control & !bytes_equal(x, b'\t')) | bytes_equal(x, 0x7f) | bytes_equal(x, b'=')
    }

    /// How many bytes at the start of `b` quoted-printable copies as they are: sixteen
    /// bytes a step with SSE2 (part of every x86-64 CPU), then eight at a time.
    fn safe_run(b: &[u8]) -> usize {
        #[cfg(target_arch = "x86_64")]
        {
            let mut at = 0;
            for chunk in b.chunks_exact(16) {
                let escaped = sse2::escaped_mask(chunk.try_into().expect("16 bytes"));
                if escaped != 0 {
                    return at + escaped.trailing_zeros() as usize;
                }
                at += 16;
            }
            at + safe_run_swar(&b[at..])
        }
        #[cfg(not(target_arch = "x86_64"))]
        safe_run_swar(b)
    }

    #[cfg(target_arch = "x86_64")]
    mod sse2 {
        use std::arch::x86_64::{
            _mm_and_si128, _mm_andnot_si128, _mm_cmpeq_epi8, _mm_cmpgt_epi8, _mm_cmplt_epi8,
            _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
        };

        /// A bit per byte of `c` (bit k for byte k): set when quoted-printable escapes it.
        pub(super) fn escaped_mask(c: &[u8; 16]) -> u16 {
            // SAFETY: SSE2 is in the x86-64 baseline, so these instructions exist on
            // every CPU this code runs on; the unaligned load reads exactly the 16 bytes
            // of `c`.
            unsafe {
                let v = _mm_loadu_si128(c.as_ptr().cast());
                // Signed compares: bytes >= 0x80 are negative, so not in 0x20..=0x7e.
                let printable = _mm_and_si128(
                    _mm_cmpgt_epi8(v, _mm_set1_epi8(0x1f)),
                    _mm_cmplt_epi8(v, _mm_set1_epi8(0x7f)),
                );
                let plain = _mm_or_si128(
                    _mm_andnot_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8(b'=' as i8)), printable),
                    _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\t' as i8)),
                );
                !(_mm_movemask_epi8(plain) as u16)
            }
        }
    }

    /// [`safe_run`] in plain integer arithmetic, eight bytes a step, on any CPU.
    fn safe_run_swar(b: &[u8]) -> usize {
        let mut chunks = b.chunks_exact(8);
        let mut at = 0;
        for chunk in chunks.by_ref() {
            let x = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
            let escaped = escaped_bytes(x);
            if escaped != 0 {
                return at + (escaped.trailing_zeros() / 8) as usize;
            }
            at += 8;
        }
        let rest = chunks.remainder();
        at + rest.iter().position(|&c| !safe(c)).unwrap_or(rest.len())
    }

    #[test]
    fn safe_run_agrees_with_safe_for_every_byte_at_every_position() {
        for c in 0..=255u8 {
            for at in 0..40 {
                let mut b = vec![b'a'; 40];
                b[at] = c;
                let want = if safe(c) { 40 } else { at };
                assert_eq!(safe_run(&b), want, "byte {c:#04x} at {at}");
                assert_eq!(safe_run_swar(&b), want, "byte {c:#04x} at {at}");
                // Bytes after the first escaped one never change the answer.
                b.iter_mut().skip(at + 1).for_each(|x| *x = 0xff);
                let want = if safe(c) { at + 1 } else { at };
                assert_eq!(safe_run(&b), want);
                assert_eq!(safe_run_swar(&b), want);
            }
        }
    }

    /// Quoted-printable of `input` with its line endings made CRLF first (`crlf`).
    pub(super) fn quoted_printable(input: &[u8]) -> Vec<u8> {
        let mut q = Qp {
            out: Vec::with_capacity(input.len() + input.len() / 16 + 16),
            on_line: 0,
            backup: 0,
        };
        let mut was_cr = false;
        let mut i = 0;
        while i < input.len() {
            let c = input[i];
            if was_cr {
                was_cr = false;
                if c == b'\n' {
                    q.line_break();
                    i += 1;
                    continue;
                }
                q.append(b"=0D");
            }
            if c == b'\r' {
                was_cr = true;
                i += 1;
                continue;
            }
            if c == b'\n' {
                // A bare LF: what `crlf` turns into CRLF, so a line break.
                q.line_break();
                i += 1;
                continue;
            }
            if q.on_line < LIMIT && safe(c) {
                // A run of plain bytes up to the end of the line: the same as appending
                // them one by one (each its own piece), in one copy.
                let max = LIMIT - q.on_line;
                let end = i + safe_run(&input[i..(i + max).min(input.len())]);
                q.out.extend_from_slice(&input[i..end]);
                q.on_line += end - i;
                q.backup = q.out.len() - 1;
                i = end;
                continue;
            }
            q.byte(c);
            i += 1;
        }
        if was_cr {
            q.append(b"=0D");
        } else {
            q.trailing_space();
        }
        q.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts() -> MessageParts {
        MessageParts {
            message_id: "msg_01".into(),
            from: Mailbox::new(Some("Acme Team"), "news@acme.example"),
            reply_to: Some(Mailbox::new(None, "help@acme.example")),
            to: Mailbox::new(Some("Zoë"), "zoe@example.com"),
            subject: "Grüße aus Köln".into(),
            html: Some("<p>Hello</p>".into()),
            text: Some("Hello".into()),
            list_unsubscribe: Some(ListUnsubscribe {
                url: "https://t.acme.example/u/tok".into(),
                mailto: Some("unsub@acme.example".into()),
            }),
            date: DateTime::parse_from_rfc3339("2026-11-25T10:00:00Z")
                .unwrap()
                .with_timezone(&Utc),
        }
    }

    #[test]
    fn builds_a_multipart_message_with_our_headers() {
        let raw = String::from_utf8(build(&parts()).unwrap()).unwrap();
        // Long headers are folded (RFC 5322 2.2.3); compare unfolded.
        let raw = raw.replace("\r\n ", " ").replace("\r\n\t", " ");
        assert!(raw.contains("X-Mailpilot-Message-Id: msg_01\r\n"), "{raw}");
        assert!(
            raw.contains("Message-ID: <msg_01@acme.example>\r\n"),
            "{raw}"
        );
        assert!(raw.contains(
            "List-Unsubscribe: <https://t.acme.example/u/tok>, <mailto:unsub@acme.example>\r\n"
        ));
        assert!(raw.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"));
        assert!(raw.contains("multipart/alternative"));
        assert!(
            raw.contains("Subject: =?utf-8?"),
            "non-ASCII subject is encoded: {raw}"
        );
        assert!(
            raw.contains("From: \"Acme Team\" <news@acme.example>")
                || raw.contains("From: Acme Team <news@acme.example>"),
            "{raw}"
        );
    }

    #[test]
    fn rejects_a_bad_address_and_an_empty_body() {
        let mut p = parts();
        p.to.email = "not an address".into();
        assert!(matches!(
            build(&p),
            Err(MimeError::Address { field: "to", .. })
        ));
        let mut p = parts();
        p.html = None;
        p.text = None;
        assert_eq!(build(&p), Err(MimeError::NoBody));
    }

    // ---- golden tests: the built message parsed back by a MIME parser ----

    use mail_parser::MimeHeaders;

    fn parse(raw: &[u8]) -> mail_parser::Message<'_> {
        mail_parser::MessageParser::default()
            .parse(raw)
            .expect("the message parses")
    }

    fn addr(a: Option<&mail_parser::Address<'_>>) -> (Option<String>, String) {
        let a = a.and_then(|a| a.first()).expect("an address");
        (
            a.name().map(str::to_owned),
            a.address().unwrap_or_default().to_owned(),
        )
    }

    #[test]
    fn golden_multipart_message_parses_back_with_every_header() {
        let p = parts();
        let raw = build(&p).unwrap();
        let m = parse(&raw);
        assert_eq!(
            addr(m.from()),
            (Some("Acme Team".into()), "news@acme.example".into())
        );
        assert_eq!(addr(m.to()), (Some("Zoë".into()), "zoe@example.com".into()));
        assert_eq!(addr(m.reply_to()), (None, "help@acme.example".into()));
        assert_eq!(m.subject(), Some("Grüße aus Köln"));
        assert_eq!(m.message_id(), Some("msg_01@acme.example"));
        assert_eq!(m.date().map(|d| d.to_timestamp()), Some(p.date.timestamp()));
        assert_eq!(
            m.header_raw(MESSAGE_ID_HEADER).map(str::trim),
            Some("msg_01")
        );
        let unsub: String = m
            .header_raw("List-Unsubscribe")
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        assert_eq!(
            unsub,
            "<https://t.acme.example/u/tok>, <mailto:unsub@acme.example>"
        );
        assert_eq!(
            m.header_raw("List-Unsubscribe-Post").map(str::trim),
            Some("List-Unsubscribe=One-Click")
        );
        let ct = m.content_type().unwrap();
        assert_eq!(
            (ct.ctype(), ct.subtype()),
            ("multipart", Some("alternative"))
        );
        // Text first, HTML last: clients show the last part they understand.
        assert_eq!(m.text_body.first().copied(), Some(1));
        assert_eq!(m.html_body.first().copied(), Some(2));
        assert_eq!(m.body_text(0).as_deref(), Some("Hello"));
        assert_eq!(m.body_html(0).as_deref(), Some("<p>Hello</p>"));
    }

    #[test]
    fn golden_single_part_messages_and_no_unsubscribe_headers() {
        let mut p = parts();
        p.text = None;
        p.list_unsubscribe = None;
        p.reply_to = None;
        let raw = build(&p).unwrap();
        let m = parse(&raw);
        let ct = m.content_type().unwrap();
        assert_eq!((ct.ctype(), ct.subtype()), ("text", Some("html")));
        // A single-part body ends with the message's final CRLF.
        assert_eq!(
            m.body_html(0).as_deref().map(str::trim_end),
            Some("<p>Hello</p>")
        );
        assert!(m.header_raw("List-Unsubscribe").is_none());
        assert!(m.header_raw("List-Unsubscribe-Post").is_none());
        assert!(m.reply_to().is_none());

        let mut p = parts();
        p.html = None;
        let raw = build(&p).unwrap();
        let m = parse(&raw);
        let ct = m.content_type().unwrap();
        assert_eq!((ct.ctype(), ct.subtype()), ("text", Some("plain")));
        assert_eq!(m.body_text(0).as_deref().map(str::trim_end), Some("Hello"));
    }

    #[test]
    fn golden_long_and_hostile_values_survive_encoding() {
        let mut p = parts();
        p.subject = format!(
            "{} — ¡oferta! \r\nBcc: victim@example.com",
            "Grüße ".repeat(20)
        );
        p.from = Mailbox::new(Some("Acme, \"The\" Team"), "news@acme.example");
        let long_html = format!("<p>{}</p>", "ñ".repeat(5000));
        p.html = Some(long_html.clone());
        let raw = build(&p).unwrap();
        // Every line stays within RFC 5322's 998 characters.
        for line in raw.split(|b| *b == b'\n') {
            assert!(line.len() <= 1000, "a line of {} bytes", line.len());
        }
        let m = parse(&raw);
        assert!(m.header_raw("Bcc").is_none(), "no header injection");
        let subject = m.subject().unwrap();
        assert!(subject.starts_with("Grüße Grüße"), "{subject}");
        assert!(
            subject.contains("Bcc: victim@example.com"),
            "kept as text: {subject}"
        );
        assert_eq!(
            addr(m.from()),
            (
                Some("Acme, \"The\" Team".into()),
                "news@acme.example".into()
            )
        );
        assert_eq!(m.body_html(0).as_deref(), Some(long_html.as_str()));
    }

    // ---- `build` against lettre's own formatting of `message` ----

    /// The bytes with the multipart boundary (random per message) made a fixed word.
    fn without_boundary(raw: Vec<u8>) -> String {
        let raw = String::from_utf8(raw).expect("ASCII");
        match raw.split_once("boundary=\"") {
            Some((_, rest)) => {
                let boundary = rest.split('"').next().expect("closed");
                raw.replace(boundary, "BOUNDARY")
            }
            None => raw,
        }
    }

    #[test]
    fn build_matches_lettres_formatting() {
        let newsletter = include_str!("../../bench/fixtures/newsletter.html");
        let mut cases = vec![parts()];
        let mut p = parts();
        p.text = None;
        cases.push(p);
        let mut p = parts();
        p.html = None;
        p.reply_to = None;
        p.list_unsubscribe = None;
        cases.push(p);
        let mut p = parts();
        p.html = Some(newsletter.into());
        p.text = Some(format!(
            "{}\n{}",
            "Grüße ".repeat(30),
            "a line\r\n".repeat(50)
        ));
        cases.push(p);
        let mut p = parts();
        p.html = Some("€".repeat(3000));
        cases.push(p);
        for p in cases {
            let ours = without_boundary(build(&p).unwrap());
            let lettre = without_boundary(message(&p).unwrap().formatted());
            assert_eq!(ours, lettre);
        }
    }

    // ---- the body encoder against lettre's own ----

    fn lettre_body(s: &str) -> (Vec<u8>, String) {
        let b = lettre::message::Body::new(s.to_string());
        (b.clone().into_vec(), format!("{:?}", b.encoding()))
    }

    fn ours(s: &str) -> (Vec<u8>, String) {
        let (bytes, encoding) = body::encode(s);
        (bytes, format!("{encoding:?}"))
    }

    #[test]
    fn body_encoding_matches_lettre() {
        let long = "x".repeat(75);
        let cases = [
            String::new(),
            "Hello".into(),
            "a\nb\r\nc\rd\n\n".into(),
            format!("{long}\n{long}x\n"),
            format!("{long} \n{long}\t\r\n end with space "),
            "=".repeat(200),
            format!("{}=\n", "y".repeat(74)),
            format!("{} =\n", "y".repeat(73)),
            "ñ".repeat(5000),
            format!("<p>{}</p>\n{}", "Grüße ".repeat(40), "plain ".repeat(30)),
            "\r".into(),
            "a \r".into(),
            "\n".into(),
            "\n\n\r\n\r\r\n x ".repeat(30),
        ];
        for c in &cases {
            assert_eq!(ours(c), lettre_body(c), "{c:?}");
        }
        let newsletter = include_str!("../../bench/fixtures/newsletter.html");
        assert_eq!(ours(newsletter), lettre_body(newsletter));
    }

    proptest::proptest! {
        #[test]
        fn body_encoding_matches_lettre_on_any_text(
            s in "([a-z =\t\r\n.<>\"é€]{0,6}|x{70,80}| {1,3}\r?\n){0,60}"
        ) {
            proptest::prop_assert_eq!(ours(&s), lettre_body(&s));
        }

        /// Long lines of plain runs, escapes and line ends in any order: every branch of
        /// the quoted-printable line filling.
        #[test]
        fn quoted_printable_matches_lettre_on_long_lines(
            s in "([a-z<>\"/.]{0,90}|=|é|€| |\t|\r|\n|\r\n){0,120}"
        ) {
            proptest::prop_assert_eq!(ours(&s), lettre_body(&s));
        }
    }
}
