//! Replies: inbound mail (SES receiving through SNS, Resend's `email.received` webhook)
//! whose `In-Reply-To` or `References` names one of our messages gets a `replied` entry
//! on that message's timeline.
//!
//! A Message-ID matches when its local part is one of our message ids (`<msg_…@domain>`,
//! the id we assign) or a provider's message id we hold a pointer for: SES replaces our
//! Message-ID with `<{SES MessageId}@{region}.amazonses.com>`, and the SES MessageId is
//! exactly what the sender stored as the provider pointer (`provmsg#ses#<id>`), so no
//! extra write is needed at send time. Only messages of the workspace that owns the
//! receiving connection are ever touched.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::messages::{self, MessageRecord};
use super::provider_events::{self, Recorded};
use crate::error::AppResult;
use crate::keys;
use crate::model::Id;
use crate::ports::store::{ItemExt, Key, Store};

/// The Message-IDs a reply refers to, most specific first: `In-Reply-To`, then
/// `References` from the last (the direct parent) to the first.
pub fn referenced_ids(in_reply_to: Option<&str>, references: Option<&str>) -> Vec<String> {
    let ids = |s: &str| -> Vec<String> {
        s.split(|c: char| c.is_whitespace() || c == ',')
            .map(|t| {
                t.trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_string()
            })
            .filter(|t| t.contains('@') && t.len() <= 998)
            .collect()
    };
    let mut out = in_reply_to.map(ids).unwrap_or_default();
    for id in references.map(ids).unwrap_or_default().into_iter().rev() {
        if !out.contains(&id) {
            out.push(id);
        }
    }
    out.truncate(20);
    out
}

/// The message a Message-ID names, if it is one of this workspace's.
async fn message_for(
    store: &dyn Store,
    ws: &str,
    rfc_id: &str,
) -> AppResult<Option<MessageRecord>> {
    let Some((local, _domain)) = rfc_id.rsplit_once('@') else {
        return Ok(None);
    };
    if Id::is_valid("msg", local) {
        return messages::load(store, ws, local).await;
    }
    for provider in ["ses", "resend"] {
        let (pk, sk) = keys::provider_message(provider, local);
        if let Some(p) = store.get(&Key::new(pk, sk)).await?
            && p.str_attr("ws") == Some(ws)
            && let Some(msg) = p.str_attr("msg")
        {
            return messages::load(store, ws, msg).await;
        }
    }
    Ok(None)
}

/// Records a reply (once per inbound message id) on the first referenced message found.
pub async fn record_reply(
    store: &dyn Store,
    now: DateTime<Utc>,
    ws: &str,
    inbound_id: &str,
    referenced: &[String],
) -> AppResult<Recorded> {
    let mut found = None;
    for id in referenced {
        if let Some(m) = message_for(store, ws, id).await? {
            found = Some(m);
            break;
        }
    }
    let Some(m) = found else {
        return Ok(Recorded::Unmatched);
    };
    let Some(claim) = provider_events::claim(
        store,
        now,
        messages::DEFAULT_RETENTION_DAYS,
        &m,
        "reply",
        inbound_id,
    )
    .await?
    else {
        return Ok(Recorded::Duplicate);
    };
    if let Err(e) = provider_events::note_on(store, now, &m, "replied".into()).await {
        provider_events::unclaim(store, &claim).await;
        return Err(e);
    }
    provider_events::count(store, now, &m, super::analytics::Fact::Replied).await;
    Ok(Recorded::Applied {
        workspace_id: m.workspace_id,
        message_id: m.id,
    })
}

fn header(headers: Option<&Value>, name: &str) -> Option<String> {
    match headers? {
        Value::Array(items) => items.iter().find_map(|h| {
            (h.get("name")?.as_str()?.eq_ignore_ascii_case(name))
                .then(|| h.get("value")?.as_str().map(str::to_owned))
                .flatten()
        }),
        Value::Object(map) => map
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v.as_str().map(str::to_owned)),
        _ => None,
    }
}

/// An SES receipt notification (`notificationType: Received`, SNS action).
pub async fn record_ses_receipt(
    store: &dyn Store,
    now: DateTime<Utc>,
    ws: &str,
    sns_message_id: &str,
    v: &Value,
) -> AppResult<Recorded> {
    let headers = v.pointer("/mail/headers");
    let inbound = v
        .pointer("/mail/messageId")
        .and_then(Value::as_str)
        .unwrap_or(sns_message_id);
    let refs = referenced_ids(
        header(headers, "In-Reply-To").as_deref(),
        header(headers, "References").as_deref(),
    );
    record_reply(store, now, ws, inbound, &refs).await
}

/// Resend's `email.received` webhook (headers as a list or a map, or the fields
/// `in_reply_to` / `references`).
pub async fn record_resend_inbound(
    store: &dyn Store,
    now: DateTime<Utc>,
    ws: &str,
    svix_id: &str,
    v: &Value,
) -> AppResult<Recorded> {
    let data = v.get("data");
    let headers = data.and_then(|d| d.get("headers"));
    let field = |name: &str| {
        data.and_then(|d| d.get(name)).and_then(|x| match x {
            Value::String(s) => Some(s.clone()),
            Value::Array(items) => Some(
                items
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            _ => None,
        })
    };
    let in_reply_to = header(headers, "In-Reply-To").or_else(|| field("in_reply_to"));
    let references = header(headers, "References").or_else(|| field("references"));
    let inbound = data
        .and_then(|d| d.get("email_id"))
        .and_then(Value::as_str)
        .unwrap_or(svix_id);
    let refs = referenced_ids(in_reply_to.as_deref(), references.as_deref());
    record_reply(store, now, ws, inbound, &refs).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_reply_to_first_then_references_from_the_parent() {
        assert_eq!(
            referenced_ids(
                Some("<b@x>"),
                Some("<a@x> <0100019a-ses@eu-west-1.amazonses.com>\r\n <b@x>")
            ),
            vec!["b@x", "0100019a-ses@eu-west-1.amazonses.com", "a@x"]
        );
        assert!(referenced_ids(Some("garbage"), None).is_empty());
        assert!(referenced_ids(None, None).is_empty());
    }
}
