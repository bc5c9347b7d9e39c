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
    let message = match (&parts.text, &parts.html) {
        (Some(text), Some(html)) => builder.multipart(MultiPart::alternative_plain_html(
            text.clone(),
            html.clone(),
        )),
        (None, Some(html)) => builder.singlepart(
            SinglePart::builder()
                .header(ContentType::TEXT_HTML)
                .body(html.clone()),
        ),
        (Some(text), None) => builder.singlepart(
            SinglePart::builder()
                .header(ContentType::TEXT_PLAIN)
                .body(text.clone()),
        ),
        (None, None) => return Err(MimeError::NoBody),
    }
    .map_err(|e| MimeError::Build(e.to_string()))?;
    Ok(message)
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
}
