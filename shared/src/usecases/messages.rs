//! Messages: the record every email has before it is sent, its transitions (one
//! conditional write each, checked by the state machine in `model::message`), and the
//! transactional send (`POST /v1/send`).
//!
//! A message item is small (ids, state, reason, subject, timeline): content lives in the
//! queue record for transactional sends (and in the template for campaigns), because
//! DynamoDB bills an update by the larger of the item's sizes before and after.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::send::Directory;
use super::templates::{self, Content as TemplateContent};
use super::{Paged, from_item, to_item};
use crate::error::{AppError, AppResult, FieldError};
use crate::keys;
use crate::mime::MessageParts;
use crate::model::links::LinkKeys;
use crate::model::message::{FailReason, SkipReason};
use crate::model::message::{InvalidTransition, MessageState, Transition, next_state, reason_of};
use crate::model::{EmailAddress, Id};
use crate::ports::clock::Clock;
use crate::ports::queue::{Lane, Queue};
use crate::ports::store::{Cond, Key, Query, Store, StoreError, TTL, TxAction, Update, val};

/// How long message items are kept (their `ttl`); aggregates stay. Default 400 days.
pub const DEFAULT_RETENTION_DAYS: i64 = 400;
/// Timeline entries kept per message (the first and the latest ones).
const MAX_TIMELINE: usize = 40;
/// Largest inline content (subject + html + text): an SQS record holds 256 KB.
pub const MAX_CONTENT_BYTES: usize = 200 * 1024;

/// One step of a message's life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TimelineEntry {
    pub state: MessageState,
    pub at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Inline content with `{{name}}` string variables (what bulk messages are planned
/// with); rendered through the templates pipeline like everything else
/// ([`RenderSpec::from`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Content {
    pub subject: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// `{{name}}` values substituted into subject, html (escaped) and text.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variables: BTreeMap<String, String>,
}

/// What a message renders from, through `templates::render_message`: a stored
/// template version, or inline subject / html / text; with the recipient's variables.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RenderSpec {
    /// A stored template (`tpl_…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_id: Option<String>,
    /// Its version: `POST /v1/send` pins the published one when the send is accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    /// Inline content instead of a template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline: Option<InlineContent>,
    /// The recipient's variables (a contact's fields and attributes, then the send's
    /// `variables` over them).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub variables: serde_json::Map<String, serde_json::Value>,
    /// Rewrite links and add the open pixel.
    #[serde(default)]
    pub tracking: bool,
}

/// Inline subject, html and text (Handlebars); at least one of html and text.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct InlineContent {
    pub subject: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

impl InlineContent {
    /// The renderer's source. Text-only content gets an HTML stand-in (the text,
    /// escaped, in a `<pre>`) that the renderer needs and [`render`] drops again.
    pub fn source(&self) -> crate::render::Source {
        let html = match (&self.html, &self.text) {
            (Some(h), _) => h.clone(),
            (None, Some(t)) => format!("<pre>{}</pre>", escape_html(t)),
            (None, None) => String::new(),
        };
        crate::render::Source {
            format: crate::render::Format::Handlebars,
            subject: self.subject.clone(),
            preheader: None,
            html,
            text: self.text.clone(),
        }
    }
}

impl From<&Content> for RenderSpec {
    fn from(c: &Content) -> Self {
        RenderSpec {
            inline: Some(InlineContent {
                subject: c.subject.clone(),
                html: c.html.clone(),
                text: c.text.clone(),
            }),
            variables: c
                .variables
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect(),
            ..RenderSpec::default()
        }
    }
}

impl RenderSpec {
    /// The templates renderer's view of it.
    pub fn content<'a>(
        &'a self,
        source: &'a Option<crate::render::Source>,
    ) -> Option<TemplateContent<'a>> {
        match (&self.template_id, source) {
            (Some(t), _) => Some(TemplateContent::Stored {
                template_id: t,
                version: self.version,
            }),
            (None, Some(src)) => Some(TemplateContent::Inline(src)),
            (None, None) => None,
        }
    }
}

/// The stored message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MessageRecord {
    pub id: String,
    pub workspace_id: String,
    pub state: MessageState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub lane: Lane,
    pub sender_id: String,
    pub to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact_id: Option<String>,
    /// The recipient's time zone, for windows in the recipient's zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    pub subject: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Content kept with the message (bulk messages planned with inline content).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
    /// What the message renders from, kept with the message (bulk messages planned
    /// from a template); wins over `content`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub render: Option<RenderSpec>,
    /// When a planned or deferred message is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_at: Option<DateTime<Utc>>,
    /// Provider attempts so far (transient failures count).
    #[serde(default)]
    pub attempts: u32,
    /// A retried message is not sent before this (backoff, even under duplicate records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<DateTime<Utc>>,
    /// The current claim: a random token and when its lease ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_until: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_message_id: Option<String>,
    #[serde(default)]
    pub retried: bool,
    pub timeline: Vec<TimelineEntry>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Optimistic concurrency: every transition is conditional on it.
    pub version: u64,
}

/// A message as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Message {
    pub id: String,
    pub state: MessageState,
    /// `skipped` / `failed` / `deferred` reason (API-CONVENTIONS.md's vocabulary).
    pub reason: Option<String>,
    /// `transactional` (`POST /v1/send`) or `bulk`.
    pub kind: String,
    pub sender_id: String,
    pub to: String,
    pub contact_id: Option<String>,
    pub subject: String,
    pub tags: BTreeMap<String, String>,
    pub due_at: Option<DateTime<Utc>>,
    pub attempts: u32,
    pub provider: Option<String>,
    pub provider_message_id: Option<String>,
    /// Every state change with its time and reason, oldest first.
    pub timeline: Vec<TimelineEntry>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<MessageRecord> for Message {
    fn from(r: MessageRecord) -> Self {
        Message {
            id: r.id,
            state: r.state,
            reason: r.reason,
            kind: match r.lane {
                Lane::Priority => "transactional".into(),
                Lane::Bulk => "bulk".into(),
            },
            sender_id: r.sender_id,
            to: r.to,
            contact_id: r.contact_id,
            subject: r.subject,
            tags: r.tags,
            due_at: r.due_at,
            attempts: r.attempts,
            provider: r.provider,
            provider_message_id: r.provider_message_id,
            timeline: r.timeline,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// The body of a send-queue record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendRecord {
    pub ws: String,
    pub msg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
    /// A transactional message's content (template or inline, and its variables).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub render: Option<RenderSpec>,
}

pub fn pk(ws: &str) -> String {
    keys::ws(ws, keys::MESSAGES)
}

pub fn key(ws: &str, id: &str) -> Key {
    Key::new(pk(ws), id)
}

fn ttl_of(created: DateTime<Utc>, retention_days: i64) -> i64 {
    (created + Duration::days(retention_days)).timestamp()
}

/// A new message record (not yet written).
#[allow(clippy::too_many_arguments)]
pub fn new_record(
    ws: &str,
    id: String,
    lane: Lane,
    state: MessageState,
    sender_id: &str,
    to: &str,
    contact_id: Option<String>,
    subject: &str,
    now: DateTime<Utc>,
) -> MessageRecord {
    MessageRecord {
        id,
        workspace_id: ws.to_string(),
        state,
        reason: None,
        lane,
        sender_id: sender_id.to_string(),
        to: to.to_string(),
        contact_id,
        time_zone: None,
        subject: subject.to_string(),
        tags: BTreeMap::new(),
        content: None,
        render: None,
        due_at: None,
        attempts: 0,
        not_before: None,
        claim: None,
        lease_until: None,
        provider: None,
        provider_message_id: None,
        retried: false,
        timeline: vec![TimelineEntry {
            state,
            at: now,
            reason: None,
        }],
        created_at: now,
        updated_at: now,
        version: 1,
    }
}

/// Writes a new message (fails with 409 if the id exists: planning is idempotent).
pub async fn insert(store: &dyn Store, m: &MessageRecord, retention_days: i64) -> AppResult<()> {
    let mut item = to_item(&pk(&m.workspace_id), &m.id, m)?;
    item.insert(TTL.into(), val::n(ttl_of(m.created_at, retention_days)));
    match store.put(item, Some(Cond::ItemNotExists)).await {
        Ok(()) => Ok(()),
        Err(StoreError::ConditionFailed) => Err(AppError::conflict("/id", "the message exists")),
        Err(e) => Err(e.into()),
    }
}

pub async fn load(store: &dyn Store, ws: &str, id: &str) -> AppResult<Option<MessageRecord>> {
    match store.get(&key(ws, id)).await? {
        Some(item) => Ok(Some(from_item(item)?)),
        None => Ok(None),
    }
}

/// Why a transition was not written.
#[derive(Debug, thiserror::Error)]
pub enum TransitionError {
    /// Someone else changed the message first (read it again).
    #[error("the message changed concurrently")]
    Conflict,
    #[error(transparent)]
    Invalid(#[from] InvalidTransition),
    #[error(transparent)]
    App(#[from] AppError),
}

impl From<StoreError> for TransitionError {
    fn from(e: StoreError) -> Self {
        if e.is_condition_failed() {
            TransitionError::Conflict
        } else {
            TransitionError::App(e.into())
        }
    }
}

/// Applies a transition: the state machine decides the next state, `edit` sets the
/// fields that go with it, and one conditional update (on the version read) writes it.
pub async fn transition(
    store: &dyn Store,
    m: &MessageRecord,
    t: Transition,
    now: DateTime<Utc>,
    edit: impl FnOnce(&mut MessageRecord),
) -> Result<MessageRecord, TransitionError> {
    let (next, action) = transition_action(m, t, now, edit)?;
    let TxAction::Update { key, update, cond } = action else {
        return Err(TransitionError::App(AppError::internal("not an update")));
    };
    store.update(&key, update, cond).await?;
    after_transition(store, m, &next, now).await;
    Ok(next)
}

/// What a written transition moves besides the message: a campaign message its run's
/// counters (once per batch inside the sender), a message that became `sent` the
/// analytics counters. Call it once the transition is written.
pub async fn after_transition(
    store: &dyn Store,
    before: &MessageRecord,
    next: &MessageRecord,
    now: DateTime<Utc>,
) {
    super::campaigns::note_transition(store, before, next).await;
    if next.state == MessageState::Sent && before.state != MessageState::Sent {
        super::analytics::note_sent(store, next, now).await;
    }
    if next.state == MessageState::Failed && before.state != MessageState::Failed {
        let class = FailReason::class_of(next.reason.as_deref().unwrap_or("unknown"));
        let _ = FAILURES.try_with(|f| *f.borrow_mut().entry(class.to_string()).or_default() += 1);
    }
}

/// Messages moved to `failed`, by the class of their reason (`permanent`,
/// `transient_exhausted`, `unknown_outcome`, `dead_letter`, `sender_paused`).
pub type FailureTally = BTreeMap<String, u64>;

tokio::task_local! {
    static FAILURES: std::cell::RefCell<FailureTally>;
}

/// Runs `f` and tallies the messages its transitions moved to `failed`, by class (the
/// send function's metrics; outside such a scope nothing is tallied).
pub async fn tallying_failures<F: std::future::Future>(f: F) -> (F::Output, FailureTally) {
    FAILURES
        .scope(std::cell::RefCell::new(FailureTally::new()), async {
            let out = f.await;
            (out, FAILURES.with(|t| std::mem::take(&mut *t.borrow_mut())))
        })
        .await
}

/// A transition as a transaction action (conditional on the version read), for a
/// caller that writes it together with another item; the caller then calls
/// `after_transition` once it is written.
pub fn transition_action(
    m: &MessageRecord,
    t: Transition,
    now: DateTime<Utc>,
    edit: impl FnOnce(&mut MessageRecord),
) -> Result<(MessageRecord, TxAction), TransitionError> {
    let failure = m.reason.as_deref().and_then(FailReason::parse);
    let state = next_state(m.state, &t, failure.as_ref(), m.retried)?;
    let mut next = m.clone();
    next.state = state;
    next.reason = reason_of(&t);
    next.updated_at = now;
    next.version = m.version + 1;
    if state != MessageState::Sending {
        next.claim = None;
        next.lease_until = None;
    }
    edit(&mut next);
    next.timeline.push(TimelineEntry {
        state,
        at: now,
        reason: next.reason.clone(),
    });
    if next.timeline.len() > MAX_TIMELINE {
        // Keep the first entry (creation) and the latest ones.
        let cut = next.timeline.len() - MAX_TIMELINE + 1;
        next.timeline.drain(1..=cut);
    }
    let mut update = Update::new();
    let enc = |v: &dyn erased::Enc| v.enc();
    for (attr, value) in [
        ("state", enc(&next.state)),
        ("subject", enc(&next.subject)),
        ("timeline", enc(&next.timeline)),
        ("updated_at", enc(&next.updated_at)),
        ("version", enc(&next.version)),
        ("attempts", enc(&next.attempts)),
        ("retried", enc(&next.retried)),
    ] {
        update = update.set(attr, value?);
    }
    for (attr, value) in [
        ("reason", next.reason.as_ref().map(|v| enc(v))),
        ("due_at", next.due_at.as_ref().map(|v| enc(v))),
        ("not_before", next.not_before.as_ref().map(|v| enc(v))),
        ("claim", next.claim.as_ref().map(|v| enc(v))),
        ("lease_until", next.lease_until.as_ref().map(|v| enc(v))),
        ("provider", next.provider.as_ref().map(|v| enc(v))),
        (
            "provider_message_id",
            next.provider_message_id.as_ref().map(|v| enc(v)),
        ),
    ] {
        update = match value {
            Some(v) => update.set(attr, v?),
            None => update.remove(attr),
        };
    }
    let cond = Cond::eq("version", val::n(m.version as i64));
    let action = TxAction::Update {
        key: key(&m.workspace_id, &m.id),
        update,
        cond: Some(cond),
    };
    Ok((next, action))
}

/// serde → one attribute value, for any serialisable field.
mod erased {
    use crate::error::AppResult;
    use crate::ports::store::Value;

    pub trait Enc {
        fn enc(&self) -> AppResult<Value>;
    }

    impl<T: serde::Serialize> Enc for T {
        fn enc(&self) -> AppResult<Value> {
            Ok(serde_dynamo::to_attribute_value(self)?)
        }
    }
}

// ---- the API ----------------------------------------------------------------------

/// `POST /v1/send`: one message to one address or contact, now: a stored template
/// (`template_id`, its published version or a pinned `version`) or inline `subject` and
/// `html` and/or `text`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    /// The sender profile (`/v1/senders`).
    pub sender_id: String,
    /// The recipient's address; or give `contact_id`.
    #[serde(default)]
    #[schema(format = Email)]
    pub to: Option<String>,
    #[serde(default)]
    pub contact_id: Option<String>,
    /// A stored template (`/v1/templates`); or give inline `subject` and `html`/`text`.
    #[serde(default)]
    pub template_id: Option<String>,
    /// The template version to send (default: the published one, pinned when the send
    /// is accepted).
    #[serde(default)]
    #[schema(minimum = 1)]
    pub version: Option<u32>,
    /// Inline subject (Handlebars), with `html` and/or `text`; not with `template_id`.
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 998,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x1f\x7f-\x9f\s][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub subject: Option<String>,
    #[serde(default)]
    pub html: Option<String>,
    #[serde(default)]
    pub text: Option<String>,
    /// Template variables (`{{name}}`, `{{order.total}}`, `{{#each items}}`…); with
    /// `contact_id` they go over the contact's own (`first_name`, `attributes`…).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub variables: Option<serde_json::Map<String, serde_json::Value>>,
    /// Up to 10 tags (`[A-Za-z0-9_-]{1,64}` names and values), passed to the provider.
    #[serde(default)]
    pub tags: Option<BTreeMap<String, String>>,
    /// Rewrite links for click tracking and add the open pixel (default false).
    #[serde(default)]
    pub tracking: Option<bool>,
}

fn tag_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn pointer_escape(k: &str) -> String {
    k.replace('~', "~0").replace('/', "~1")
}

/// What the transactional path needs.
pub struct SendDeps<'a> {
    pub store: &'a dyn Store,
    pub directory: &'a dyn Directory,
    pub priority: &'a dyn Queue,
    pub clock: &'a dyn Clock,
    pub retention_days: i64,
}

/// Largest send-queue record body (SQS takes 256 KiB).
const MAX_RECORD_BYTES: usize = 250 * 1024;

/// Checks what a send renders from: the template exists and has the version (pins the
/// published one), or the inline content compiles. Errors name the request's fields.
async fn check_render(store: &dyn Store, ws: &str, spec: &mut RenderSpec) -> AppResult<()> {
    if let Some(t) = &spec.template_id {
        let content = TemplateContent::Stored {
            template_id: t,
            version: spec.version,
        };
        return match templates::prepare(store, ws, &content).await {
            Ok((_, v)) => {
                spec.version = v;
                Ok(())
            }
            Err(AppError::NotFound) if spec.version.is_some() => {
                // The template or the pinned version: say which.
                match templates::get(store, ws, t).await {
                    Ok(_) => Err(AppError::invalid("/version", "no such version")),
                    Err(AppError::NotFound) => {
                        Err(AppError::invalid("/template_id", "no such template"))
                    }
                    Err(e) => Err(e),
                }
            }
            Err(AppError::NotFound) => Err(AppError::invalid("/template_id", "no such template")),
            Err(e) => Err(e),
        };
    }
    if let Some(inline) = &spec.inline {
        let src = inline.source();
        templates::prepare(store, ws, &TemplateContent::Inline(&src)).await?;
    }
    Ok(())
}

/// Records a transactional message and hands it to the high-priority queue. A
/// suppressed address answers with the message already `skipped`.
pub async fn send_transactional(
    deps: &SendDeps<'_>,
    ws: &str,
    req: SendRequest,
) -> AppResult<Message> {
    let mut errors = Vec::new();
    let inline_given = req.subject.is_some() || req.html.is_some() || req.text.is_some();
    let mut spec = RenderSpec {
        tracking: req.tracking.unwrap_or(false),
        ..RenderSpec::default()
    };
    match &req.template_id {
        Some(t) => {
            if inline_given {
                let field = if req.subject.is_some() {
                    "/subject"
                } else if req.html.is_some() {
                    "/html"
                } else {
                    "/text"
                };
                errors.push(FieldError::new(
                    field,
                    "give either template_id or inline subject, html and text",
                ));
            }
            if t.is_empty() || t.len() > 100 {
                errors.push(FieldError::new("/template_id", "no such template"));
            }
            if req.version == Some(0) {
                errors.push(FieldError::new("/version", "versions count from 1"));
            }
            spec.template_id = Some(t.clone());
            spec.version = req.version;
        }
        None => {
            if req.version.is_some() {
                errors.push(FieldError::new("/version", "only with template_id"));
            }
            match &req.subject {
                None => errors.push(FieldError::new(
                    "/subject",
                    "give template_id, or subject with html and/or text",
                )),
                Some(subject) => {
                    if let Err(r) = crate::model::parse_text(subject, 998) {
                        errors.push(FieldError::new("/subject", r));
                    }
                }
            }
            if req.html.is_none() && req.text.is_none() {
                errors.push(FieldError::new("/html", "give html, text or both"));
            }
            let size = req.subject.as_ref().map_or(0, String::len)
                + req.html.as_ref().map_or(0, String::len)
                + req.text.as_ref().map_or(0, String::len);
            if size > MAX_CONTENT_BYTES {
                return Err(AppError::PayloadTooLarge(format!(
                    "subject, html and text hold {size} bytes; at most {MAX_CONTENT_BYTES} are allowed"
                )));
            }
            spec.inline = Some(InlineContent {
                subject: req.subject.clone().unwrap_or_default(),
                html: req.html.clone(),
                text: req.text.clone(),
            });
        }
    }
    let tags = req.tags.unwrap_or_default();
    if tags.len() > 10 {
        errors.push(FieldError::new("/tags", "at most 10 tags"));
    }
    for (k, v) in &tags {
        if !tag_ok(k) || !tag_ok(v) {
            errors.push(FieldError::new(
                format!("/tags/{}", pointer_escape(k)),
                "names and values are 1-64 characters of A-Z a-z 0-9 _ -",
            ));
        }
    }
    let now = deps.clock.now();
    let (to, contact_id, time_zone) = match (&req.to, &req.contact_id) {
        (Some(_), Some(_)) | (None, None) => {
            errors.push(FieldError::new(
                "/to",
                "give exactly one of to and contact_id",
            ));
            (None, None, None)
        }
        (Some(to), None) => match EmailAddress::parse(to) {
            Ok(e) => (Some(e.as_str().to_string()), None, None),
            Err(reason) => {
                errors.push(FieldError::new("/to", format!("{to:?} {reason}")));
                (None, None, None)
            }
        },
        (None, Some(id)) => match super::contacts::get(deps.store, ws, id).await {
            Ok(c) => {
                spec.variables = templates::contact_variables(&c);
                (Some(c.email), Some(c.id), c.time_zone)
            }
            Err(AppError::NotFound) => {
                errors.push(FieldError::new("/contact_id", "no such contact"));
                (None, None, None)
            }
            Err(e) => return Err(e),
        },
    };
    spec.variables.extend(req.variables.unwrap_or_default());
    let sender_ok = !req.sender_id.is_empty() && req.sender_id.len() <= 100;
    let route = if sender_ok {
        deps.directory.route(ws, &req.sender_id).await?
    } else {
        None
    };
    if route.is_none() {
        errors.push(FieldError::new("/sender_id", "no such sender"));
    }
    if !errors.is_empty() {
        return Err(AppError::Invalid(errors));
    }
    check_render(deps.store, ws, &mut spec).await?;
    let Some(to) = to else {
        return Err(AppError::internal("validated fields are missing"));
    };
    let id = Id::generate(Id::MESSAGE);
    // The subject as written (inline) until `sent` records the rendered one.
    let subject = spec
        .inline
        .as_ref()
        .map(|i| i.subject.clone())
        .unwrap_or_default();
    let mut m = new_record(
        ws,
        id,
        Lane::Priority,
        MessageState::Queued,
        &req.sender_id,
        &to,
        contact_id,
        &subject,
        now,
    );
    m.time_zone = time_zone;
    m.tags = tags;
    let record = SendRecord {
        ws: ws.to_string(),
        msg: m.id.clone(),
        content: None,
        render: Some(spec),
    };
    let body = serde_json::to_string(&record).map_err(AppError::internal)?;
    if body.len() > MAX_RECORD_BYTES {
        return Err(AppError::PayloadTooLarge(format!(
            "the message with its variables takes {} bytes; at most {MAX_RECORD_BYTES} are allowed",
            body.len()
        )));
    }
    if let Some(reason) = super::suppressions::reason_for(deps.store, ws, &to).await? {
        let skip = SkipReason::from_suppression(reason);
        m.state = MessageState::Skipped;
        m.reason = Some(skip.as_str().into());
        m.timeline[0] = TimelineEntry {
            state: MessageState::Skipped,
            at: now,
            reason: m.reason.clone(),
        };
        insert(deps.store, &m, deps.retention_days).await?;
        return Ok(m.into());
    }
    insert(deps.store, &m, deps.retention_days).await?;
    if let Err(e) = deps.priority.send_batch(vec![body]).await {
        // Not queued: take the message back so nothing waits forever, and let the
        // client retry (with its Idempotency-Key).
        tracing::warn!(error = %e, "enqueueing a transactional message failed");
        let _ = deps.store.delete(&key(ws, &m.id), None).await;
        return Err(AppError::Store(StoreError::Throttled));
    }
    Ok(m.into())
}

/// One message with its timeline.
pub async fn get(store: &dyn Store, ws: &str, id: &str) -> AppResult<Message> {
    if !Id::is_valid(Id::MESSAGE, id) {
        return Err(AppError::NotFound);
    }
    load(store, ws, id)
        .await?
        .map(Message::from)
        .ok_or(AppError::NotFound)
}

/// The workspace's messages (by id), optionally in one state. Reads at most 20 pages
/// of the partition per call; a page may come back short with a cursor to go on.
pub async fn list(
    store: &dyn Store,
    ws: &str,
    state: Option<MessageState>,
    limit: usize,
    cursor: Option<String>,
) -> AppResult<Paged<Message>> {
    list_query(store, Query::partition(pk(ws)), state, limit, cursor).await
}

/// The messages a query of message items finds (the workspace's partition, a run's
/// index partition), optionally only those in one state: at most 20 pages per call, so
/// a page may come back short with a cursor to go on.
pub async fn list_query(
    store: &dyn Store,
    query: Query,
    state: Option<MessageState>,
    limit: usize,
    mut cursor: Option<String>,
) -> AppResult<Paged<Message>> {
    let mut data = Vec::new();
    for _ in 0..20 {
        let page = store
            .query(
                query
                    .clone()
                    .limit(limit - data.len())
                    .cursor(cursor.take()),
            )
            .await?;
        for item in page.items {
            let m: MessageRecord = from_item(item)?;
            if state.is_none_or(|s| s == m.state) {
                data.push(m.into());
            }
        }
        cursor = page.cursor;
        if data.len() >= limit || cursor.is_none() {
            break;
        }
    }
    Ok(Paged {
        data,
        next_cursor: cursor,
    })
}

// ---- rendering -----------------------------------------------------------------

fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Everything rendering a message needs besides the message and the store.
pub struct Composer {
    pub link_keys: Arc<LinkKeys>,
    /// The platform's public base URL for links (`https://…`, no trailing slash); a
    /// workspace's own `public_url` wins over it.
    pub public_url: String,
}

/// Builds the parts of a message: `templates::render_message` (the engine's one
/// rendering path: a stored version or inline content, the recipient's variables, the
/// signed unsubscribe URL for `List-Unsubscribe`, tracked links when asked), the
/// sender's addresses. Text-only inline content stays text-only.
pub async fn render(
    store: &dyn Store,
    composer: &Composer,
    m: &MessageRecord,
    spec: &RenderSpec,
    from: &crate::mime::Mailbox,
    reply_to: Option<&crate::mime::Mailbox>,
    now: DateTime<Utc>,
) -> AppResult<MessageParts> {
    let source = spec.inline.as_ref().map(InlineContent::source);
    let content = spec
        .content(&source)
        .ok_or_else(|| AppError::invalid("/template_id", "the message has no content"))?;
    let rendered = templates::render_message(
        store,
        &templates::MessageContext {
            workspace_id: &m.workspace_id,
            content,
            recipient: templates::Recipient::Data(&spec.variables),
            campaign: None,
            message_id: &m.id,
            tracking: spec.tracking,
            public_url: &composer.public_url,
            keys: &composer.link_keys,
        },
    )
    .await?;
    let text_only = spec.inline.as_ref().is_some_and(|i| i.html.is_none());
    Ok(parts_of(m, rendered, from, reply_to, now, text_only))
}

/// The MIME parts of a rendered message (`text_only`: inline content without HTML).
pub fn parts_of(
    m: &MessageRecord,
    rendered: templates::RenderedMessage,
    from: &crate::mime::Mailbox,
    reply_to: Option<&crate::mime::Mailbox>,
    now: DateTime<Utc>,
    text_only: bool,
) -> MessageParts {
    MessageParts {
        message_id: m.id.clone(),
        from: from.clone(),
        reply_to: reply_to.cloned(),
        to: crate::mime::Mailbox::new(None, &m.to),
        list_unsubscribe: Some(rendered.list_unsubscribe(None)),
        subject: rendered.subject,
        html: (!text_only).then_some(rendered.html),
        text: Some(rendered.text).filter(|t| !t.trim().is_empty()),
        date: now,
    }
}

// ---- planning (bulk) -------------------------------------------------------------

/// A bulk message to plan: the campaigns planner builds these (ids from
/// `model::message::message_id_for(run, contact)`).
#[derive(Debug, Clone)]
pub struct Planned {
    pub id: String,
    pub sender_id: String,
    pub to: String,
    pub contact_id: Option<String>,
    pub time_zone: Option<String>,
    pub content: Content,
    pub due: DateTime<Utc>,
}

/// Writes planned messages and files them in the due index. A message that exists
/// already (planning the same page twice) is left as it is.
pub async fn plan(
    store: &dyn Store,
    ws: &str,
    planned: Vec<Planned>,
    now: DateTime<Utc>,
    retention_days: i64,
) -> AppResult<usize> {
    let mut entries = Vec::with_capacity(planned.len());
    for p in planned {
        let mut m = new_record(
            ws,
            p.id,
            Lane::Bulk,
            MessageState::Planned,
            &p.sender_id,
            &p.to,
            p.contact_id,
            &p.content.subject,
            now,
        );
        m.time_zone = p.time_zone;
        m.due_at = Some(p.due);
        m.content = Some(p.content);
        match insert(store, &m, retention_days).await {
            Ok(()) => {}
            Err(AppError::Conflict { .. }) => continue,
            Err(e) => return Err(e),
        }
        entries.push(super::dispatch::DueEntry {
            ws: ws.to_string(),
            message_id: m.id,
            lane: Lane::Bulk,
            due: p.due,
        });
    }
    super::dispatch::schedule(store, &entries, now).await?;
    Ok(entries.len())
}

#[cfg(all(test, feature = "local"))]
mod tests {
    use super::*;
    use crate::adapters::local::store::RedbStore;

    #[tokio::test]
    async fn failures_are_tallied_by_class_inside_the_scope_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("db.redb")).unwrap();
        let now = Utc::now();
        let mut ms = Vec::new();
        for i in 0..4 {
            let m = new_record(
                "ws_01JQ0000000000000000000000",
                format!("msg_01JQ000000000000000000000{i}"),
                Lane::Bulk,
                MessageState::Queued,
                "snd_1",
                "ana@example.com",
                None,
                "Hi",
                now,
            );
            insert(&store, &m, 400).await.unwrap();
            ms.push(m);
        }
        let fail = |m: &MessageRecord, r: FailReason| {
            let m = m.clone();
            let store = &store;
            async move {
                transition(store, &m, Transition::Fail(r), now, |_| {})
                    .await
                    .unwrap()
            }
        };
        let ((), tally) = tallying_failures(async {
            fail(&ms[0], FailReason::Permanent("550".into())).await;
            fail(&ms[1], FailReason::Permanent("no_content".into())).await;
            fail(&ms[2], FailReason::TransientExhausted).await;
        })
        .await;
        assert_eq!(
            tally,
            FailureTally::from([
                ("permanent".to_string(), 2),
                ("transient_exhausted".to_string(), 1)
            ])
        );
        // Outside a scope a failure is not tallied (and nothing breaks).
        fail(&ms[3], FailReason::UnknownOutcome).await;
        let ((), tally) = tallying_failures(async {}).await;
        assert!(tally.is_empty());
    }
}
