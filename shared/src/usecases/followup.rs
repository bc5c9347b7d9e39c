//! Resend to non-openers (`POST /v1/campaigns/{id}/resend`): a follow-up campaign, a
//! draft, for the recipients of the campaign's latest run who have no human open.
//!
//! The follow-up targets a new list ("<name> — non-openers") holding those contacts, so
//! it plans, sends, counts and can be edited like any campaign; the caller launches it.
//! Left out: messages never sent (skipped, failed, still in flight), bounced or
//! complained ones, and recipients who unsubscribed from the message. Suppressions are
//! checked again when the follow-up sends. Machine opens (Apple MPP) do not count as
//! opens here: those recipients get the follow-up.

use serde::Deserialize;
use utoipa::ToSchema;

use super::campaigns::{self, Campaign, CreateCampaign};
use super::lists::{self, CreateList, MembersChange};
use crate::error::{AppError, AppResult, FieldError};
use crate::model::message::MessageState;
use crate::ports::store::{Index, Query, Store};

/// `POST /v1/campaigns/{id}/resend` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResendRequest {
    /// The follow-up's subject (a new one: the first did not get opened).
    #[schema(min_length = 1, max_length = 998)]
    pub subject: String,
    /// The follow-up's name; default "<name> (resend)".
    #[serde(default)]
    #[schema(min_length = 1, max_length = 200)]
    pub name: Option<String>,
}

/// Contacts of a run with no human open (message ids are unique per contact and run).
pub async fn non_openers(store: &dyn Store, ws: &str, run_id: &str) -> AppResult<Vec<String>> {
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .query(
                Query::index(Index::Gsi1, campaigns::run_messages_gsi(ws, run_id))
                    .limit(500)
                    .cursor(cursor.take()),
            )
            .await?;
        for item in page.items {
            if item.contains_key(super::analytics::first::HUMAN_OPEN)
                || item.contains_key("unsubscribed_at")
            {
                continue;
            }
            let m: super::messages::MessageRecord = super::from_item(item)?;
            let reached = matches!(m.state, MessageState::Sent | MessageState::Delivered);
            if let (true, Some(c)) = (reached, m.contact_id) {
                out.push(c);
            }
        }
        match page.cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Creates the follow-up draft (and its list). 409 when the campaign has not sent yet.
pub async fn resend(
    store: &dyn Store,
    ws: &str,
    campaign_id: &str,
    input: ResendRequest,
) -> AppResult<Campaign> {
    let c = campaigns::load(store, ws, campaign_id).await?;
    let Some(run_id) = c.run_id.clone() else {
        return Err(AppError::conflict(
            "/id",
            "the campaign has not been sent yet",
        ));
    };
    let subject = input.subject.trim();
    if subject.is_empty() || input.subject.len() > 998 {
        return Err(AppError::Invalid(vec![FieldError::new(
            "/subject",
            "must be 1 to 998 characters",
        )]));
    }
    if subject == c.subject.trim() {
        return Err(AppError::invalid(
            "/subject",
            "give the follow-up a new subject",
        ));
    }
    let name = match input.name {
        Some(n) => n,
        None => truncate(&format!("{} (resend)", c.name), 200),
    };
    crate::model::parse_text(&name, 200).map_err(|r| AppError::invalid("/name", r))?;
    let contacts = non_openers(store, ws, &run_id).await?;
    if contacts.is_empty() {
        return Err(AppError::conflict(
            "/id",
            "every recipient of the campaign opened it (or cannot be sent to)",
        ));
    }
    let list = lists::create(
        store,
        ws,
        CreateList {
            name: truncate(&format!("{} — non-openers", c.name), 200),
            description: Some(format!("Recipients of campaign {} with no open", c.id)),
            double_opt_in: false,
        },
    )
    .await?;
    for chunk in contacts.chunks(1000) {
        lists::add_members(
            store,
            ws,
            &list.id,
            MembersChange {
                contact_ids: chunk.to_vec(),
            },
        )
        .await?;
    }
    campaigns::create(
        store,
        ws,
        CreateCampaign {
            name,
            sender_id: None,
            sender_ids: Some(c.sender_ids.clone()),
            list_ids: vec![list.id],
            exclude_list_ids: Some(c.exclude_list_ids.clone()),
            subject: subject.to_string(),
            html: c.html.clone(),
            text: c.text.clone(),
            tracking: Some(c.tracking),
            scheduled_at: None,
        },
    )
    .await
}

fn truncate(s: &str, max_chars: usize) -> String {
    s.chars().take(max_chars).collect()
}
