//! Sender profiles: who mail is from (name, address, reply-to), which provider connection
//! carries it, and the sender's rules — its time zone, a daily cap with an optional
//! warm-up ramp, and a sending window (`model::sender`). A sender-level provider error
//! (unverified identity, suspended account, bad credentials) pauses the profile
//! ([`pause`]); clearing `paused` with a PATCH resumes it.

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Paged, from_item, page_of, to_item};
use crate::error::{AppError, AppResult, FieldError};
use crate::keys;
use crate::mime::Mailbox;
use crate::model::sender::{DailyCap, RuleError, SendingWindow, WarmUpSpec, WindowSpec};
use crate::model::{EmailAddress, Id, TimeZone};
use crate::ports::store::{Cond, ItemExt, Key, Query, Store, StoreError};

/// Why a sender is paused: the provider's sender-level error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Pause {
    /// The provider's code (`AccountSuspended`, `535`, `MessageRejected`…).
    pub code: String,
    pub detail: String,
    pub at: DateTime<Utc>,
}

/// A sender profile.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SenderProfile {
    pub id: String,
    #[serde(default)]
    pub from_name: Option<String>,
    /// Normalised address mail is from.
    pub from_email: String,
    #[serde(default)]
    pub reply_to: Option<String>,
    /// The provider connection this sender sends through.
    pub connection_id: String,
    /// IANA zone of the sender: its cap day and, by default, its window.
    pub time_zone: String,
    /// Most messages a local day; none = no cap.
    #[serde(default)]
    pub daily_cap: Option<u64>,
    #[serde(default)]
    pub warm_up: Option<WarmUpSpec>,
    /// When the sender may send; none = any time.
    #[serde(default)]
    pub window: Option<WindowSpec>,
    /// Set when a provider refused the sender itself; nothing is sent until cleared.
    #[serde(default)]
    pub paused: Option<Pause>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl SenderProfile {
    /// The sender's zone (UTC if the stored name ever stops parsing).
    pub fn tz(&self) -> Tz {
        self.time_zone.parse().unwrap_or(chrono_tz::UTC)
    }

    /// The parsed sending window, if any (validated at save).
    pub fn window(&self) -> Option<SendingWindow> {
        self.window
            .as_ref()
            .and_then(|w| SendingWindow::parse(w, self.tz()).ok())
    }

    /// The parsed daily cap, if any (validated at save).
    pub fn daily_cap(&self) -> Option<DailyCap> {
        self.daily_cap
            .and_then(|c| DailyCap::parse(c, self.warm_up.as_ref()).ok())
    }

    /// The cap on the sender's local `day` (`None` = no cap).
    pub fn cap_on(&self, day: NaiveDate) -> Option<u64> {
        self.daily_cap().map(|c| c.cap_on(day))
    }

    /// The day a counter counts `now` in: the sender's local date.
    pub fn cap_day(&self, now: DateTime<Utc>) -> NaiveDate {
        crate::model::sender::cap_day(now, self.tz())
    }

    /// When mail to a recipient in `recipient_tz` may go out: `now` or the next opening.
    pub fn next_opening(&self, now: DateTime<Utc>, recipient_tz: Option<Tz>) -> DateTime<Utc> {
        self.window()
            .map_or(now, |w| w.next_opening(now, recipient_tz))
    }

    pub fn from_mailbox(&self) -> Mailbox {
        Mailbox::new(self.from_name.as_deref(), &self.from_email)
    }

    pub fn reply_to_mailbox(&self) -> Option<Mailbox> {
        self.reply_to.as_deref().map(|r| Mailbox::new(None, r))
    }
}

/// `POST /v1/senders` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateSender {
    #[serde(default)]
    #[schema(min_length = 1, max_length = 200)]
    pub from_name: Option<String>,
    #[schema(min_length = 3, max_length = 254)]
    pub from_email: String,
    #[serde(default)]
    #[schema(min_length = 3, max_length = 254)]
    pub reply_to: Option<String>,
    pub connection_id: String,
    /// IANA zone; `UTC` when unset.
    #[serde(default)]
    #[schema(value_type = Option<crate::schema::TimeZoneName>)]
    pub time_zone: Option<String>,
    #[serde(default)]
    #[schema(minimum = 1, maximum = 100000000)]
    pub daily_cap: Option<u64>,
    /// Needs `daily_cap` (the ramp grows up to it).
    #[serde(default)]
    pub warm_up: Option<WarmUpSpec>,
    #[serde(default)]
    pub window: Option<WindowSpec>,
}

/// `PATCH /v1/senders/{id}` body: absent fields stay, `null` clears an optional one.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct SenderPatch {
    #[serde(default, deserialize_with = "crate::serde_util::double_option")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 200)]
    pub from_name: Option<Option<String>>,
    #[serde(default)]
    #[schema(min_length = 3, max_length = 254)]
    pub from_email: Option<String>,
    #[serde(default, deserialize_with = "crate::serde_util::double_option")]
    #[schema(value_type = Option<String>, min_length = 3, max_length = 254)]
    pub reply_to: Option<Option<String>>,
    #[serde(default)]
    pub connection_id: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<crate::schema::TimeZoneName>)]
    pub time_zone: Option<String>,
    #[serde(default, deserialize_with = "crate::serde_util::double_option")]
    #[schema(value_type = Option<u64>, minimum = 1, maximum = 100000000)]
    pub daily_cap: Option<Option<u64>>,
    #[serde(default, deserialize_with = "crate::serde_util::double_option")]
    #[schema(value_type = Option<WarmUpSpec>)]
    pub warm_up: Option<Option<WarmUpSpec>>,
    #[serde(default, deserialize_with = "crate::serde_util::double_option")]
    #[schema(value_type = Option<WindowSpec>)]
    pub window: Option<Option<WindowSpec>>,
    /// Only `null` is accepted: resumes a paused sender.
    #[serde(default, deserialize_with = "crate::serde_util::double_option")]
    #[schema(value_type = Option<Pause>)]
    pub paused: Option<Option<serde_json::Value>>,
}

fn senders_pk(ws: &str) -> String {
    keys::ws(ws, keys::SENDERS)
}

fn push_rules(prefix: &str, errs: Vec<RuleError>, errors: &mut Vec<FieldError>) {
    for e in errs {
        let field = if e.field == "daily_cap" {
            "/daily_cap".to_string()
        } else if let Some(rest) = e.field.strip_prefix("warm_up/") {
            format!("/warm_up/{rest}")
        } else {
            format!("{prefix}/{}", e.field)
        };
        errors.push(FieldError::new(field, e.reason));
    }
}

/// Checks the whole profile as it would be saved.
async fn validate(
    store: &dyn Store,
    ws: &str,
    s: &mut SenderProfile,
    errors: &mut Vec<FieldError>,
) -> AppResult<()> {
    if let Some(n) = &s.from_name {
        match crate::model::parse_text(n, 200) {
            Ok(t) => s.from_name = Some(t),
            Err(reason) => errors.push(FieldError::new("/from_name", reason)),
        }
    }
    match EmailAddress::parse(&s.from_email) {
        Ok(e) => s.from_email = e.as_str().to_string(),
        Err(e) => errors.push(FieldError::new("/from_email", e.to_string())),
    }
    if let Some(r) = &s.reply_to {
        match EmailAddress::parse(r) {
            Ok(e) => s.reply_to = Some(e.as_str().to_string()),
            Err(e) => errors.push(FieldError::new("/reply_to", e.to_string())),
        }
    }
    let tz = match TimeZone::parse(&s.time_zone) {
        Ok(tz) => {
            s.time_zone = tz.as_str().to_string();
            s.tz()
        }
        Err(reason) => {
            errors.push(FieldError::new("/time_zone", reason));
            chrono_tz::UTC
        }
    };
    match (s.daily_cap, &s.warm_up) {
        (Some(cap), w) => {
            if let Err(errs) = DailyCap::parse(cap, w.as_ref()) {
                push_rules("", errs, errors);
            }
        }
        (None, Some(_)) => errors.push(FieldError::new(
            "/warm_up",
            "needs daily_cap: the ramp grows up to it",
        )),
        (None, None) => {}
    }
    if let Some(w) = &s.window {
        match SendingWindow::parse(w, tz) {
            Ok(parsed) => s.window = Some(parsed.spec()),
            Err(errs) => push_rules("/window", errs, errors),
        }
    }
    match super::providers::get(store, ws, &s.connection_id).await {
        Ok(_) => {}
        Err(AppError::NotFound) => errors.push(FieldError::new(
            "/connection_id",
            "is not a provider connection of this workspace",
        )),
        Err(e) => return Err(e),
    }
    Ok(())
}

pub async fn create(store: &dyn Store, ws: &str, input: CreateSender) -> AppResult<SenderProfile> {
    let now = Utc::now();
    let mut sender = SenderProfile {
        id: Id::generate(Id::SENDER),
        from_name: input.from_name,
        from_email: input.from_email,
        reply_to: input.reply_to,
        connection_id: input.connection_id,
        time_zone: input.time_zone.unwrap_or_else(|| "UTC".into()),
        daily_cap: input.daily_cap,
        warm_up: input.warm_up,
        window: input.window,
        paused: None,
        created_at: now,
        updated_at: now,
    };
    let mut errors = vec![];
    validate(store, ws, &mut sender, &mut errors).await?;
    if !errors.is_empty() {
        return Err(AppError::Invalid(errors));
    }
    store
        .put(
            to_item(&senders_pk(ws), &sender.id, &sender)?,
            Some(Cond::ItemNotExists),
        )
        .await?;
    Ok(sender)
}

/// Loads a sender profile of workspace `ws` (404 for another workspace's id).
pub async fn get(store: &dyn Store, ws: &str, id: &str) -> AppResult<SenderProfile> {
    if !Id::is_valid(Id::SENDER, id) {
        return Err(AppError::NotFound);
    }
    let item = store
        .get(&Key::new(senders_pk(ws), id))
        .await?
        .ok_or(AppError::NotFound)?;
    from_item(item)
}

pub async fn list(
    store: &dyn Store,
    ws: &str,
    limit: usize,
    cursor: Option<String>,
) -> AppResult<Paged<SenderProfile>> {
    page_of(store, &senders_pk(ws), limit, cursor).await
}

/// Replaces the stored profile if nobody changed it since `before`.
async fn save(
    store: &dyn Store,
    ws: &str,
    s: &SenderProfile,
    before: DateTime<Utc>,
) -> AppResult<()> {
    let cond = Cond::eq("updated_at", serde_dynamo::to_attribute_value(before)?);
    match store
        .put(to_item(&senders_pk(ws), &s.id, s)?, Some(cond))
        .await
    {
        Ok(()) => Ok(()),
        Err(StoreError::ConditionFailed) => Err(AppError::conflict(
            "/",
            "the sender changed while this request ran; read it and try again",
        )),
        Err(e) => Err(e.into()),
    }
}

pub async fn patch(
    store: &dyn Store,
    ws: &str,
    id: &str,
    patch: SenderPatch,
) -> AppResult<SenderProfile> {
    let mut s = get(store, ws, id).await?;
    let before = s.updated_at;
    let mut errors = vec![];
    if let Some(v) = patch.from_name {
        s.from_name = v;
    }
    if let Some(v) = patch.from_email {
        s.from_email = v;
    }
    if let Some(v) = patch.reply_to {
        s.reply_to = v;
    }
    if let Some(v) = patch.connection_id {
        s.connection_id = v;
    }
    if let Some(v) = patch.time_zone {
        s.time_zone = v;
    }
    if let Some(v) = patch.daily_cap {
        s.daily_cap = v;
    }
    if let Some(v) = patch.warm_up {
        s.warm_up = v;
    }
    if let Some(v) = patch.window {
        s.window = v;
    }
    match patch.paused {
        Some(None) => s.paused = None,
        Some(Some(_)) => errors.push(FieldError::new(
            "/paused",
            "can only be set to null (resume); providers pause a sender",
        )),
        None => {}
    }
    validate(store, ws, &mut s, &mut errors).await?;
    if !errors.is_empty() {
        return Err(AppError::Invalid(errors));
    }
    s.updated_at = Utc::now().max(before + chrono::Duration::microseconds(1));
    save(store, ws, &s, before).await?;
    Ok(s)
}

pub async fn delete(store: &dyn Store, ws: &str, id: &str) -> AppResult<()> {
    get(store, ws, id).await?;
    match store
        .delete(&Key::new(senders_pk(ws), id), Some(Cond::ItemExists))
        .await
    {
        Ok(_) => Ok(()),
        Err(StoreError::ConditionFailed) => Err(AppError::NotFound),
        Err(e) => Err(e.into()),
    }
}

/// Pauses a sender after a sender-level provider error (the sender calls this). A
/// sender already paused keeps its first reason. Returns the profile as it now is.
pub async fn pause(
    store: &dyn Store,
    ws: &str,
    id: &str,
    code: &str,
    detail: &str,
) -> AppResult<SenderProfile> {
    for _ in 0..5 {
        let mut s = get(store, ws, id).await?;
        if s.paused.is_some() {
            return Ok(s);
        }
        let before = s.updated_at;
        s.paused = Some(Pause {
            code: code.chars().take(200).collect(),
            detail: detail.chars().take(1000).collect(),
            at: Utc::now(),
        });
        s.updated_at = Utc::now().max(before + chrono::Duration::microseconds(1));
        match save(store, ws, &s, before).await {
            Ok(()) => return Ok(s),
            Err(AppError::Conflict { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(AppError::internal("pausing the sender kept conflicting"))
}

/// Ids of the workspace's senders using a connection.
pub async fn using_connection(
    store: &dyn Store,
    ws: &str,
    connection_id: &str,
) -> AppResult<Vec<String>> {
    let mut out = vec![];
    let mut cursor = None;
    loop {
        let page = store
            .query(Query::partition(senders_pk(ws)).limit(200).cursor(cursor))
            .await?;
        for item in &page.items {
            if item.str_attr("connection_id") == Some(connection_id)
                && let Some(id) = item.str_attr("sk")
            {
                out.push(id.to_string());
            }
        }
        match page.cursor {
            Some(c) => cursor = Some(c),
            None => return Ok(out),
        }
    }
}

/// The id of the sender the local runner gives every workspace.
pub const LOCAL_SENDER_ID: &str = "sp_00000000000000000000000000";

/// Creates the workspace's default sender on the local outbox if it is missing (the
/// local runner). Idempotent.
pub async fn ensure_local_sender(store: &dyn Store, ws: &str) -> AppResult<SenderProfile> {
    let conn = super::providers::ensure_local_outbox(store, ws).await?;
    let now = Utc::now();
    let sender = SenderProfile {
        id: LOCAL_SENDER_ID.into(),
        from_name: Some("Mailpilot".into()),
        from_email: "hello@mailpilot.localhost".into(),
        reply_to: None,
        connection_id: conn.id,
        time_zone: "UTC".into(),
        daily_cap: None,
        warm_up: None,
        window: None,
        paused: None,
        created_at: now,
        updated_at: now,
    };
    match store
        .put(
            to_item(&senders_pk(ws), &sender.id, &sender)?,
            Some(Cond::ItemNotExists),
        )
        .await
    {
        Ok(()) => Ok(sender),
        Err(StoreError::ConditionFailed) => get(store, ws, LOCAL_SENDER_ID).await,
        Err(e) => Err(e.into()),
    }
}
