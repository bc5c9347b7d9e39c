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
use lettre::Message;
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Mailbox as LettreMailbox, MultiPart, SinglePart};
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
pub fn build(parts: &MessageParts) -> Result<Vec<u8>, MimeError> {
    Ok(message(parts)?.formatted())
}

/// Builds the message as lettre's [`Message`] (what DKIM signing takes).
pub fn message(parts: &MessageParts) -> Result<Message, MimeError> {
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
    let part =
        |ct: ContentType, body: &str| SinglePart::builder().header(ct).body(body::encode(body));
    let message = match (&parts.text, &parts.html) {
        (Some(text), Some(html)) => builder.multipart(
            MultiPart::alternative()
                .singlepart(part(ContentType::TEXT_PLAIN, text))
                .singlepart(part(ContentType::TEXT_HTML, html)),
        ),
        (None, Some(html)) => builder.singlepart(part(ContentType::TEXT_HTML, html)),
        (Some(text), None) => builder.singlepart(part(ContentType::TEXT_PLAIN, text)),
        (None, None) => return Err(MimeError::NoBody),
    }
    .map_err(|e| MimeError::Build(e.to_string()))?;
    Ok(message)
}

/// Body encoding: the same bytes lettre's `Body::new` produces (the encoding chosen by
/// `email_encoding`'s rules, line endings made CRLF, then 7bit / quoted-printable /
/// base64), in linear time. lettre inserts each missing `\r` with `String::insert`,
/// which copies the rest of the body once per line: quadratic, and most of the cost of
/// building a 40 KB newsletter. `tests::body_encoding_matches_lettre` holds the two
/// byte for byte.
mod body {
    use base64::Engine;
    use lettre::message::Body;
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
        let too_long = memchr_lf(b).any(|i| {
            let prev = std::mem::replace(&mut last, i);
            i - prev >= LIMIT
        }) || b.len() - last >= LIMIT;
        if s.is_ascii() && !too_long {
            return Encoding::SevenBit;
        }
        let escaped = b
            .iter()
            .filter(|&&c| !matches!(c, b'\t' | b' '..=b'~'))
            .count();
        if escaped <= b.len() / 3 {
            Encoding::QuotedPrintable
        } else {
            Encoding::Base64
        }
    }

    fn memchr_lf(b: &[u8]) -> impl Iterator<Item = usize> + '_ {
        b.iter()
            .enumerate()
            .filter_map(|(i, &c)| (c == b'\n').then_some(i))
    }

    /// Every `\n` not preceded by `\r` gets one (lettre's `in_place_crlf_line_endings`).
    pub(super) fn crlf(s: &str) -> Vec<u8> {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len() + b.len() / 32 + 2);
        let mut from = 0;
        for (i, &c) in b.iter().enumerate() {
            if c == b'\n' && (i == 0 || b[i - 1] != b'\r') {
                out.extend_from_slice(&b[from..i]);
                out.push(b'\r');
                from = i;
            }
        }
        out.extend_from_slice(&b[from..]);
        out
    }

    /// The body of a text part, encoded.
    pub(super) fn encode(s: &str) -> Body {
        let encoding = choose(s);
        let buf = crlf(s);
        match encoding {
            Encoding::SevenBit => {
                Body::dangerous_pre_encoded(buf, ContentTransferEncoding::SevenBit)
            }
            Encoding::QuotedPrintable => Body::dangerous_pre_encoded(
                quoted_printable(&buf),
                ContentTransferEncoding::QuotedPrintable,
            ),
            Encoding::Base64 => {
                Body::dangerous_pre_encoded(base64_lines(&buf), ContentTransferEncoding::Base64)
            }
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

    fn safe(c: u8) -> bool {
        matches!(c, b'\t' | b' '..=b'<' | b'>'..=b'~')
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
                    self.on_line = self.out.len() - self.backup;
                    let at = self.backup;
                    self.out.splice(at..at, *b"=\r\n");
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
                    q.trailing_space();
                    q.out.extend_from_slice(b"\r\n");
                    q.on_line = 0;
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
            if LIMIT - q.on_line >= 3 && safe(c) {
                let max = LIMIT - q.on_line - 2;
                let end = input[i..]
                    .iter()
                    .take(max)
                    .position(|&b| !safe(b))
                    .map_or((i + max).min(input.len()), |p| i + p);
                q.out.extend_from_slice(&input[i..end]);
                q.on_line += end - i;
                q.backup = q.out.len();
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

    // ---- the body encoder against lettre's own ----

    fn lettre_body(s: &str) -> (Vec<u8>, String) {
        let b = lettre::message::Body::new(s.to_string());
        (b.clone().into_vec(), format!("{:?}", b.encoding()))
    }

    fn ours(s: &str) -> (Vec<u8>, String) {
        let b = body::encode(s);
        (b.clone().into_vec(), format!("{:?}", b.encoding()))
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
    }
}
