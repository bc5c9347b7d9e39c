//! Provider delivery events, normalised: Amazon SES (event publishing JSON, delivered
//! through EventBridge → SQS or through SNS) and Resend (webhooks).
//!
//! Parsing is separate from verification (see [`super::svix`] and [`super::sns`]): only a
//! verified payload is parsed, and parsing never fails the whole batch — a payload that is
//! not a delivery event is an error for that payload alone.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::mime::MESSAGE_ID_HEADER;

/// Tag names Mailpilot puts on every provider send (SES message tags, Resend tags).
pub const TAG_WORKSPACE: &str = "mp_ws";
pub const TAG_MESSAGE: &str = "mp_msg";

/// How a bounce is classed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BounceClass {
    /// The address does not exist or will never accept mail: suppress at once.
    Permanent,
    /// Mailbox full, message too large, temporary failure: counts toward the soft limit.
    Transient,
    /// The provider could not tell.
    Undetermined,
}

/// What happened, per provider event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventKind {
    /// The provider accepted the message for sending.
    Send,
    Delivered,
    Bounced {
        class: BounceClass,
        sub_type: String,
        diagnostic: Option<String>,
    },
    Complained {
        feedback_type: Option<String>,
    },
    /// The provider refused to send it (SES: virus detected).
    Rejected {
        reason: String,
    },
    DeliveryDelayed {
        delay_type: String,
    },
    RenderingFailed {
        error: String,
    },
}

/// One normalised event about one recipient of one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderEvent {
    /// `ses` or `resend`.
    pub provider: String,
    /// Unique per event and stable across redeliveries (the EventBridge event id, the SNS
    /// message id, the Svix message id), suffixed with the recipient when one delivery
    /// event names several: the recorder's idempotency key.
    pub event_id: String,
    pub kind: EventKind,
    /// The provider's message id (SES `mail.messageId`, Resend `email_id`).
    pub provider_message_id: String,
    /// Our message id, from our tag or our header when the provider echoes it.
    pub message_id: Option<String>,
    /// Our workspace id, from our tag.
    pub workspace_id: Option<String>,
    /// The recipient this event is about (normalised lowercase).
    pub recipient: Option<String>,
    pub at: DateTime<Utc>,
}

/// Why a payload is not a usable event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventParseError {
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("missing field {0}")]
    Missing(&'static str),
    #[error("event type {0:?} is not handled")]
    Unhandled(String),
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

fn time_at(v: &Value, pointer: &str) -> Option<DateTime<Utc>> {
    str_at(v, pointer)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

fn ses_tag(mail: &Value, name: &str) -> Option<String> {
    match mail.pointer(&format!("/tags/{name}"))? {
        Value::Array(values) => values.first()?.as_str().map(str::to_owned),
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

fn header_value(headers: Option<&Value>, name: &str) -> Option<String> {
    headers?.as_array()?.iter().find_map(|h| {
        let n = h.get("name")?.as_str()?;
        n.eq_ignore_ascii_case(name)
            .then(|| h.get("value")?.as_str().map(|s| s.trim().to_owned()))
            .flatten()
    })
}

fn recipients(list: Option<&Value>, field: Option<&str>) -> Vec<String> {
    list.and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|r| match field {
                    Some(f) => r.get(f).and_then(Value::as_str),
                    None => r.as_str(),
                })
                .map(|s| s.trim().to_ascii_lowercase())
                .collect()
        })
        .unwrap_or_default()
}

/// Parses one SES event-publishing record (the `detail` of an EventBridge event, or the
/// `Message` of an SNS notification). `envelope_id` is the EventBridge or SNS id.
pub fn parse_ses(envelope_id: &str, event: &Value) -> Result<Vec<ProviderEvent>, EventParseError> {
    let event_type = str_at(event, "/eventType")
        .or_else(|| str_at(event, "/notificationType"))
        .ok_or(EventParseError::Missing("eventType"))?;
    let mail = event.get("mail").ok_or(EventParseError::Missing("mail"))?;
    let provider_message_id = str_at(mail, "/messageId")
        .ok_or(EventParseError::Missing("mail.messageId"))?
        .to_owned();
    let message_id =
        ses_tag(mail, TAG_MESSAGE).or_else(|| header_value(mail.get("headers"), MESSAGE_ID_HEADER));
    let workspace_id = ses_tag(mail, TAG_WORKSPACE);
    let mail_time = time_at(mail, "/timestamp");
    let (kind, recipients, at) = match event_type {
        "Send" => (
            EventKind::Send,
            recipients(mail.get("destination"), None),
            mail_time,
        ),
        "Delivery" => (
            EventKind::Delivered,
            recipients(event.pointer("/delivery/recipients"), None),
            time_at(event, "/delivery/timestamp"),
        ),
        "Bounce" => {
            let class = match str_at(event, "/bounce/bounceType") {
                Some("Permanent") => BounceClass::Permanent,
                Some("Transient") => BounceClass::Transient,
                _ => BounceClass::Undetermined,
            };
            let sub_type = str_at(event, "/bounce/bounceSubType")
                .unwrap_or("")
                .to_owned();
            let list = event.pointer("/bounce/bouncedRecipients");
            let diagnostic = list
                .and_then(|l| l.get(0))
                .and_then(|r| r.get("diagnosticCode").or_else(|| r.get("status")))
                .and_then(Value::as_str)
                .map(str::to_owned);
            (
                EventKind::Bounced {
                    class,
                    sub_type,
                    diagnostic,
                },
                recipients(list, Some("emailAddress")),
                time_at(event, "/bounce/timestamp"),
            )
        }
        "Complaint" => (
            EventKind::Complained {
                feedback_type: str_at(event, "/complaint/complaintFeedbackType").map(str::to_owned),
            },
            recipients(
                event.pointer("/complaint/complainedRecipients"),
                Some("emailAddress"),
            ),
            time_at(event, "/complaint/timestamp"),
        ),
        "Reject" => (
            EventKind::Rejected {
                reason: str_at(event, "/reject/reason")
                    .unwrap_or("rejected")
                    .to_owned(),
            },
            recipients(mail.get("destination"), None),
            mail_time,
        ),
        "DeliveryDelay" => (
            EventKind::DeliveryDelayed {
                delay_type: str_at(event, "/deliveryDelay/delayType")
                    .unwrap_or("")
                    .to_owned(),
            },
            recipients(
                event.pointer("/deliveryDelay/delayedRecipients"),
                Some("emailAddress"),
            ),
            time_at(event, "/deliveryDelay/timestamp"),
        ),
        "Rendering Failure" => (
            EventKind::RenderingFailed {
                error: str_at(event, "/failure/errorMessage")
                    .unwrap_or("")
                    .to_owned(),
            },
            recipients(mail.get("destination"), None),
            mail_time,
        ),
        other => return Err(EventParseError::Unhandled(other.to_owned())),
    };
    let at = at
        .or(mail_time)
        .ok_or(EventParseError::Missing("timestamp"))?;
    Ok(expand(
        "ses",
        envelope_id,
        kind,
        provider_message_id,
        message_id,
        workspace_id,
        recipients,
        at,
    ))
}

/// Parses one SES event delivered by EventBridge (the body of an SQS record).
pub fn parse_ses_eventbridge(body: &str) -> Result<Vec<ProviderEvent>, EventParseError> {
    let v: Value =
        serde_json::from_str(body).map_err(|e| EventParseError::NotJson(e.to_string()))?;
    let id = str_at(&v, "/id").ok_or(EventParseError::Missing("id"))?;
    let detail = v.get("detail").ok_or(EventParseError::Missing("detail"))?;
    parse_ses(id, detail)
}

/// Parses a verified Resend webhook; `svix_id` is its `svix-id` header.
pub fn parse_resend(svix_id: &str, body: &[u8]) -> Result<Vec<ProviderEvent>, EventParseError> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| EventParseError::NotJson(e.to_string()))?;
    let event_type = str_at(&v, "/type").ok_or(EventParseError::Missing("type"))?;
    let data = v.get("data").ok_or(EventParseError::Missing("data"))?;
    let provider_message_id = str_at(data, "/email_id")
        .ok_or(EventParseError::Missing("data.email_id"))?
        .to_owned();
    let tag = |name: &str| match data.get("tags") {
        Some(Value::Object(map)) => map.get(name).and_then(Value::as_str).map(str::to_owned),
        Some(Value::Array(items)) => items.iter().find_map(|t| {
            (t.get("name")?.as_str()? == name)
                .then(|| t.get("value")?.as_str().map(str::to_owned))
                .flatten()
        }),
        _ => None,
    };
    let message_id =
        tag(TAG_MESSAGE).or_else(|| header_value(data.get("headers"), MESSAGE_ID_HEADER));
    let workspace_id = tag(TAG_WORKSPACE);
    let kind = match event_type {
        "email.sent" => EventKind::Send,
        "email.delivered" => EventKind::Delivered,
        "email.bounced" => EventKind::Bounced {
            class: match str_at(data, "/bounce/type") {
                Some("Permanent") => BounceClass::Permanent,
                Some("Transient") => BounceClass::Transient,
                _ => BounceClass::Undetermined,
            },
            sub_type: str_at(data, "/bounce/subType").unwrap_or("").to_owned(),
            diagnostic: str_at(data, "/bounce/message").map(str::to_owned),
        },
        "email.complained" => EventKind::Complained {
            feedback_type: None,
        },
        "email.delivery_delayed" => EventKind::DeliveryDelayed {
            delay_type: "delivery_delayed".into(),
        },
        other => return Err(EventParseError::Unhandled(other.to_owned())),
    };
    let at = time_at(&v, "/created_at").ok_or(EventParseError::Missing("created_at"))?;
    Ok(expand(
        "resend",
        svix_id,
        kind,
        provider_message_id,
        message_id,
        workspace_id,
        recipients(data.get("to"), None),
        at,
    ))
}

#[allow(clippy::too_many_arguments)]
fn expand(
    provider: &str,
    envelope_id: &str,
    kind: EventKind,
    provider_message_id: String,
    message_id: Option<String>,
    workspace_id: Option<String>,
    recipients: Vec<String>,
    at: DateTime<Utc>,
) -> Vec<ProviderEvent> {
    let one = |recipient: Option<String>, event_id: String| ProviderEvent {
        provider: provider.to_owned(),
        event_id,
        kind: kind.clone(),
        provider_message_id: provider_message_id.clone(),
        message_id: message_id.clone(),
        workspace_id: workspace_id.clone(),
        recipient,
        at,
    };
    match recipients.len() {
        0 => vec![one(None, envelope_id.to_owned())],
        1 => vec![one(recipients.into_iter().next(), envelope_id.to_owned())],
        _ => recipients
            .into_iter()
            .map(|r| {
                let id = format!("{envelope_id}:{r}");
                one(Some(r), id)
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event_file(name: &str) -> String {
        std::fs::read_to_string(format!("{}/../events/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    #[test]
    fn every_ses_sample_event_parses_with_our_ids() {
        let batch: Value =
            serde_json::from_str(&event_file("sqs-ses-eventbridge-events.json")).unwrap();
        let mut kinds = Vec::new();
        for record in batch["Records"].as_array().unwrap() {
            let events = parse_ses_eventbridge(record["body"].as_str().unwrap()).unwrap();
            assert_eq!(events.len(), 1);
            let e = &events[0];
            assert_eq!(e.provider_message_id, "0100019a-ses-0001");
            assert_eq!(
                e.message_id.as_deref(),
                Some("msg_01JQ0000000000000000000000")
            );
            assert_eq!(
                e.workspace_id.as_deref(),
                Some("ws_01JQ0000000000000000000000")
            );
            assert!(e.event_id.starts_with("5d2f6b2e-"));
            kinds.push(e.kind.clone());
        }
        assert_eq!(kinds.len(), 9);
        assert!(kinds.contains(&EventKind::Bounced {
            class: BounceClass::Permanent,
            sub_type: "General".into(),
            diagnostic: Some("smtp; 550 5.1.1 user unknown".into())
        }));
        assert!(kinds.iter().any(|k| matches!(
            k,
            EventKind::Bounced {
                class: BounceClass::Transient,
                ..
            }
        )));
        assert!(kinds.iter().any(|k| matches!(
            k,
            EventKind::Bounced {
                class: BounceClass::Undetermined,
                ..
            }
        )));
        assert!(kinds.contains(&EventKind::Complained {
            feedback_type: Some("abuse".into())
        }));
        assert!(
            kinds
                .iter()
                .any(|k| matches!(k, EventKind::RenderingFailed { .. }))
        );
        assert!(
            kinds
                .iter()
                .any(|k| matches!(k, EventKind::DeliveryDelayed { .. }))
        );
        assert!(kinds.contains(&EventKind::Rejected {
            reason: "Bad content".into()
        }));
    }

    #[test]
    fn the_header_is_the_fallback_and_several_recipients_get_distinct_ids() {
        let mut v: Value = serde_json::from_str(&event_file("ses-event-delivery.json")).unwrap();
        v["mail"]["tags"] = serde_json::json!({});
        v["delivery"]["recipients"] = serde_json::json!(["A@example.com", "b@example.com"]);
        let events = parse_ses("sns-1", &v).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(
            events[0].message_id.as_deref(),
            Some("msg_01JQ0000000000000000000000")
        );
        assert_eq!(events[0].recipient.as_deref(), Some("a@example.com"));
        assert_ne!(events[0].event_id, events[1].event_id);
        assert!(matches!(
            parse_ses(
                "x",
                &serde_json::json!({"eventType": "Open", "mail": {"messageId": "m"}})
            ),
            Err(EventParseError::Unhandled(_))
        ));
        assert!(matches!(
            parse_ses_eventbridge("{"),
            Err(EventParseError::NotJson(_))
        ));
        assert!(matches!(
            parse_ses("x", &serde_json::json!({"eventType": "Send"})),
            Err(EventParseError::Missing("mail"))
        ));
    }

    #[test]
    fn every_resend_sample_webhook_parses() {
        for (file, expect_msg) in [
            (
                "resend-webhook-delivered.json",
                Some("msg_01JQ0000000000000000000000"),
            ),
            (
                "resend-webhook-bounced.json",
                Some("msg_01JQ0000000000000000000001"),
            ),
            (
                "resend-webhook-complained.json",
                Some("msg_01JQ0000000000000000000002"),
            ),
            ("resend-webhook-delivery-delayed.json", None),
        ] {
            let events = parse_resend("msg_svix_1", event_file(file).as_bytes()).unwrap();
            assert_eq!(events.len(), 1, "{file}");
            assert_eq!(events[0].message_id.as_deref(), expect_msg, "{file}");
            assert_eq!(events[0].event_id, "msg_svix_1");
        }
        let bounced =
            parse_resend("s", event_file("resend-webhook-bounced.json").as_bytes()).unwrap();
        assert!(matches!(
            bounced[0].kind,
            EventKind::Bounced {
                class: BounceClass::Permanent,
                ..
            }
        ));
        assert_eq!(bounced[0].recipient.as_deref(), Some("gone@example.com"));
        assert!(matches!(
            parse_resend("s", br#"{"type":"contact.created","created_at":"2026-11-25T16:00:00Z","data":{"email_id":"e"}}"#),
            Err(EventParseError::Unhandled(_))
        ));
    }
}
