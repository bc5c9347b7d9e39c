//! Campaigns: a broadcast to lists from one sender or a pool of senders. A draft is
//! edited freely; each launch is a **run** that pins the content and audience, is
//! planned page by page from the planning queue (`usecases::planner`), and is sent by
//! the engine's dispatcher and sender. Pause, resume and cancel act on the current run;
//! the counters of a run are kept per batch (never by scanning its messages).
//!
//! Keys (docs/campaigns.md): the campaign `ws#<ws>#campaigns / <campaign>`; a run
//! `ws#<ws>#cruns / <campaign>#<run>`; run counters `ws#<ws>#counters / run#<run>#<shard>`;
//! a run's messages are the engine's message items, found by the `gsi1` entry
//! `ws#<ws>#run#<run>` (listing only: no correctness hangs on it).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, Utc};
use rand::Rng;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::messages::{Content, MAX_CONTENT_BYTES, MessageRecord};
use super::{Paged, from_item, lists, page_of, to_item};
use crate::error::{AppError, AppResult, FieldError};
use crate::keys;
use crate::model::Id;
use crate::model::campaign::{CampaignAction, CampaignState, next_state};
use crate::model::message::{MessageState, SkipReason};
use crate::ports::store::{
    Cond, Index, ItemExt, Key, Query, SortKeyCond, Store, StoreError, TxAction, Update, val,
};

/// Target and exclusion lists per campaign.
pub const MAX_LISTS: usize = 20;
/// Senders in a pool.
pub const MAX_SENDERS: usize = 50;
/// Counter items per run: the sender adds once per batch to a random shard.
pub const COUNTER_SHARDS: u32 = 8;
/// Message tags that tie a message to its campaign and run (also passed to providers).
pub const TAG_CAMPAIGN: &str = "mp_campaign";
pub const TAG_RUN: &str = "mp_run";

// ---- records ----------------------------------------------------------------------

/// The stored campaign.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CampaignRecord {
    pub id: String,
    pub name: String,
    pub state: CampaignState,
    pub sender_ids: Vec<String>,
    pub list_ids: Vec<String>,
    #[serde(default)]
    pub exclude_list_ids: Vec<String>,
    /// The template that sends (its `template_version`, else the version published at
    /// launch); exclusive with the inline `subject`/`html`/`text`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_version: Option<u32>,
    /// Inline content (empty subject with a template).
    #[serde(default)]
    pub subject: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    pub tracking: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_at: Option<DateTime<Utc>>,
    /// The run launched last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    #[serde(default)]
    pub runs: u32,
    /// Why it is paused: `manual` (`POST /pause`) or `sender_health:<rate>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
}

/// One launch of a campaign: what it pinned, and how far planning got.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: String,
    pub campaign_id: String,
    pub workspace_id: String,
    /// 1 for the first launch.
    pub number: u32,
    pub sender_ids: Vec<String>,
    pub list_ids: Vec<String>,
    pub exclude_list_ids: Vec<String>,
    /// Inline content; with a template only its subject (the version's, for listings).
    pub content: Content,
    /// The template version pinned at launch (inline content when `None`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<PinnedTemplate>,
    pub tracking: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_for: Option<DateTime<Utc>>,
    /// Name of the pending one-time schedule (deleted after it fired or on cancel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_name: Option<String>,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// Planning progress: the page to plan next, the target list and the cursor in it.
    #[serde(default)]
    pub page: u64,
    #[serde(default)]
    pub list_index: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    #[serde(default)]
    pub planning_done: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planned_at: Option<DateTime<Utc>>,
    /// The sender pool's rotation state (kept between pages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<crate::model::campaign::PoolRotation>,
    /// Per connection: when the next message may be due (pacing under the rate).
    #[serde(default)]
    pub pace: BTreeMap<String, DateTime<Utc>>,
    /// The latest due time planned (a floor for the ETA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_due: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<CampaignState>,
}

/// A template version a run sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PinnedTemplate {
    pub template_id: String,
    pub version: u32,
}

pub fn campaigns_pk(ws: &str) -> String {
    keys::ws(ws, keys::CAMPAIGNS)
}

pub fn campaign_key(ws: &str, id: &str) -> Key {
    Key::new(campaigns_pk(ws), id)
}

pub fn runs_pk(ws: &str) -> String {
    keys::ws(ws, keys::CAMPAIGN_RUNS)
}

pub fn run_key(ws: &str, campaign_id: &str, run_id: &str) -> Key {
    Key::new(runs_pk(ws), format!("{campaign_id}#{run_id}"))
}

/// The `gsi1` partition that lists a run's messages.
pub fn run_messages_gsi(ws: &str, run_id: &str) -> String {
    keys::ws(ws, &format!("run#{run_id}"))
}

fn counter_pk(ws: &str) -> String {
    keys::ws(ws, keys::COUNTERS)
}

fn counter_key(ws: &str, run_id: &str, shard: u32) -> Key {
    Key::new(counter_pk(ws), format!("run#{run_id}#{shard}"))
}

// ---- the API's shapes -----------------------------------------------------------------

/// `POST /v1/campaigns` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCampaign {
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// One sender (`/v1/senders`); or give `sender_ids` for a pool.
    #[serde(default)]
    pub sender_id: Option<String>,
    /// A pool of 1 to 50 senders: recipients rotate across them under each one's daily
    /// cap and sending window, and under the workspace's cap.
    #[serde(default)]
    #[schema(max_items = 50)]
    pub sender_ids: Option<Vec<String>>,
    /// 1 to 20 target lists; a contact in several gets one message.
    #[schema(min_items = 1, max_items = 20)]
    pub list_ids: Vec<String>,
    /// Up to 20 lists whose members are left out.
    #[serde(default)]
    #[schema(max_items = 20)]
    pub exclude_list_ids: Option<Vec<String>>,
    /// A template (`/v1/templates`) instead of inline content: the campaign sends its
    /// `template_version`, or the version published when it launches (pinned then).
    #[serde(default)]
    pub template_id: Option<String>,
    #[serde(default)]
    #[schema(minimum = 1)]
    pub template_version: Option<u32>,
    /// Inline content (with `html`, `text` or both) when no `template_id` is given.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 998)]
    pub subject: Option<String>,
    #[serde(default)]
    pub html: Option<String>,
    #[serde(default)]
    pub text: Option<String>,
    /// Open and click tracking (default on).
    #[serde(default)]
    pub tracking: Option<bool>,
    /// Launch at this time (RFC 3339) when `POST /launch` gives none.
    #[serde(default)]
    pub scheduled_at: Option<DateTime<Utc>>,
}

/// `PATCH /v1/campaigns/{id}` body (drafts only).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CampaignPatch {
    #[serde(default)]
    #[schema(min_length = 1, max_length = 200)]
    pub name: Option<String>,
    #[serde(default)]
    pub sender_id: Option<String>,
    #[serde(default)]
    #[schema(max_items = 50)]
    pub sender_ids: Option<Vec<String>>,
    #[serde(default)]
    #[schema(min_items = 1, max_items = 20)]
    pub list_ids: Option<Vec<String>>,
    #[serde(default)]
    #[schema(max_items = 20)]
    pub exclude_list_ids: Option<Vec<String>>,
    /// Setting a template clears the inline content; `null` goes back to inline content
    /// (give `subject` and `html`/`text` with it).
    #[serde(default, deserialize_with = "crate::serde_util::double_option")]
    #[schema(value_type = Option<String>)]
    pub template_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "crate::serde_util::double_option")]
    #[schema(value_type = Option<u32>, minimum = 1)]
    pub template_version: Option<Option<u32>>,
    /// Setting inline content (`subject`, `html`, `text`) clears the template.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 998)]
    pub subject: Option<String>,
    #[serde(default, deserialize_with = "crate::serde_util::double_option")]
    #[schema(value_type = Option<String>)]
    pub html: Option<Option<String>>,
    #[serde(default, deserialize_with = "crate::serde_util::double_option")]
    #[schema(value_type = Option<String>)]
    pub text: Option<Option<String>>,
    #[serde(default)]
    pub tracking: Option<bool>,
    #[serde(default, deserialize_with = "crate::serde_util::double_option")]
    #[schema(value_type = Option<DateTime<Utc>>)]
    pub scheduled_at: Option<Option<DateTime<Utc>>>,
}

/// `POST /v1/campaigns/{id}/launch` body (optional).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LaunchRequest {
    /// Start at this time instead of now (a one-time schedule, UTC).
    #[serde(default)]
    pub at: Option<DateTime<Utc>>,
}

/// Counts of one run, kept per batch.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct RunCounts {
    /// Members of the target lists read so far (a contact in two lists counts twice).
    pub members: i64,
    /// Left out by an exclusion list.
    pub excluded: i64,
    /// Members still waiting for double opt-in.
    pub pending_opt_in: i64,
    /// Message items planned (one per recipient).
    pub messages: i64,
    /// Not yet settled: planned, queued, sending or deferred.
    pub in_flight: i64,
    /// Handed to a provider (including those with delivery facts since).
    pub sent: i64,
    pub failed: i64,
    /// Skipped messages (duplicates across lists have no message and are not here).
    pub skipped: i64,
    /// Skips by reason, `duplicate` included.
    pub skip_reasons: BTreeMap<String, i64>,
    /// Failures by class (`permanent`, `transient_exhausted`, `unknown_outcome`, …).
    pub failure_reasons: BTreeMap<String, i64>,
}

/// A run as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunStatus {
    pub id: String,
    pub number: u32,
    /// `scheduled`, `planning`, `sending`, `paused`, `completed` or `cancelled`.
    pub state: CampaignState,
    pub scheduled_for: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub planning_done: bool,
    pub planned_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    /// The template version the run sends (`null`: inline content).
    pub template: Option<PinnedTemplate>,
    pub counts: RunCounts,
    /// Settled messages over all messages (0 to 1; 0 while nothing is planned).
    pub progress: f64,
    /// When the last message should be settled, from the rate so far and the latest due
    /// time planned (windows, caps). `null` before sending starts or once ended.
    pub eta: Option<DateTime<Utc>>,
}

/// A campaign as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Campaign {
    pub id: String,
    pub name: String,
    pub state: CampaignState,
    pub sender_ids: Vec<String>,
    pub list_ids: Vec<String>,
    pub exclude_list_ids: Vec<String>,
    pub template_id: Option<String>,
    /// The pinned version; `null`: the version published at launch.
    pub template_version: Option<u32>,
    pub subject: Option<String>,
    pub html: Option<String>,
    pub text: Option<String>,
    pub tracking: bool,
    pub scheduled_at: Option<DateTime<Utc>>,
    /// The run launched last.
    pub run_id: Option<String>,
    /// Runs, newest first, with their counts (on `GET /v1/campaigns/{id}` and actions;
    /// empty in lists).
    pub runs: Vec<RunStatus>,
    /// While paused: `manual`, or `sender_health:complaint_rate` /
    /// `sender_health:hard_bounce_rate` when the sender's health paused it.
    pub pause_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<CampaignRecord> for Campaign {
    fn from(r: CampaignRecord) -> Self {
        Campaign {
            id: r.id,
            name: r.name,
            state: r.state,
            sender_ids: r.sender_ids,
            list_ids: r.list_ids,
            exclude_list_ids: r.exclude_list_ids,
            template_id: r.template_id,
            template_version: r.template_version,
            subject: (!r.subject.is_empty()).then_some(r.subject),
            html: r.html,
            text: r.text,
            tracking: r.tracking,
            scheduled_at: r.scheduled_at,
            run_id: r.run_id,
            runs: vec![],
            pause_reason: r.pause_reason,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

// ---- validation -----------------------------------------------------------------------

fn sender_id_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn check_senders(
    single: Option<&String>,
    pool: Option<&Vec<String>>,
    errors: &mut Vec<FieldError>,
) -> Option<Vec<String>> {
    match (single, pool) {
        (Some(_), Some(_)) => {
            errors.push(FieldError::new(
                "/sender_ids",
                "give sender_id or sender_ids, not both",
            ));
            None
        }
        (Some(s), None) => {
            if sender_id_ok(s) {
                Some(vec![s.clone()])
            } else {
                errors.push(FieldError::new("/sender_id", "not a sender id"));
                None
            }
        }
        (None, Some(pool)) => {
            if pool.is_empty() || pool.len() > MAX_SENDERS {
                errors.push(FieldError::new("/sender_ids", "must hold 1 to 50 senders"));
                return None;
            }
            let mut seen = std::collections::HashSet::new();
            let mut ok = true;
            for (i, s) in pool.iter().enumerate() {
                if !sender_id_ok(s) {
                    errors.push(FieldError::new(
                        format!("/sender_ids/{i}"),
                        "not a sender id",
                    ));
                    ok = false;
                } else if !seen.insert(s) {
                    errors.push(FieldError::new(format!("/sender_ids/{i}"), "listed twice"));
                    ok = false;
                }
            }
            ok.then(|| pool.clone())
        }
        (None, None) => None,
    }
}

async fn check_lists(
    store: &dyn Store,
    ws: &str,
    field: &str,
    ids: &[String],
    required: bool,
    errors: &mut Vec<FieldError>,
) -> AppResult<()> {
    if (required && ids.is_empty()) || ids.len() > MAX_LISTS {
        let min = if required { 1 } else { 0 };
        errors.push(FieldError::new(
            field,
            format!("must hold {min} to {MAX_LISTS} list ids"),
        ));
        return Ok(());
    }
    let mut seen = std::collections::HashSet::new();
    for (i, id) in ids.iter().enumerate() {
        if !seen.insert(id) {
            errors.push(FieldError::new(format!("{field}/{i}"), "listed twice"));
            continue;
        }
        match lists::get(store, ws, id).await {
            Ok(_) => {}
            Err(AppError::NotFound) => {
                errors.push(FieldError::new(format!("{field}/{i}"), "no such list"))
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Template or inline content: exactly one of them, the template of this workspace.
async fn check_body(
    store: &dyn Store,
    ws: &str,
    c: &CampaignRecord,
    errors: &mut Vec<FieldError>,
) -> AppResult<()> {
    let Some(tid) = &c.template_id else {
        if c.template_version.is_some() {
            errors.push(FieldError::new(
                "/template_version",
                "give template_id with a template_version",
            ));
        }
        if c.subject.is_empty() && c.html.is_none() && c.text.is_none() {
            errors.push(FieldError::new(
                "/template_id",
                "give template_id, or subject with html, text or both",
            ));
            return Ok(());
        }
        return check_content(&c.subject, c.html.as_deref(), c.text.as_deref(), errors);
    };
    if !c.subject.is_empty() || c.html.is_some() || c.text.is_some() {
        let field = if !c.subject.is_empty() {
            "/subject"
        } else if c.html.is_some() {
            "/html"
        } else {
            "/text"
        };
        errors.push(FieldError::new(
            field,
            "a campaign with template_id takes no inline content",
        ));
    }
    match super::templates::get(store, ws, tid).await {
        Ok(t) => match c.template_version {
            Some(v) if v == 0 || v > t.latest_version => errors.push(FieldError::new(
                "/template_version",
                format!(
                    "must be a version of this template (1 to {})",
                    t.latest_version
                ),
            )),
            _ => {}
        },
        Err(AppError::NotFound) => {
            errors.push(FieldError::new("/template_id", "no such template"));
        }
        Err(e) => return Err(e),
    }
    Ok(())
}

fn check_content(
    subject: &str,
    html: Option<&str>,
    text: Option<&str>,
    errors: &mut Vec<FieldError>,
) -> AppResult<()> {
    if let Err(r) = crate::model::parse_text(subject, 998) {
        errors.push(FieldError::new("/subject", r));
    }
    if html.is_none() && text.is_none() {
        errors.push(FieldError::new("/html", "give html, text or both"));
    }
    let size = subject.len() + html.map_or(0, str::len) + text.map_or(0, str::len);
    if size > MAX_CONTENT_BYTES {
        return Err(AppError::PayloadTooLarge(format!(
            "subject, html and text hold {size} bytes; at most {MAX_CONTENT_BYTES} are allowed"
        )));
    }
    Ok(())
}

fn cross_check_lists(targets: &[String], excluded: &[String], errors: &mut Vec<FieldError>) {
    for (i, id) in excluded.iter().enumerate() {
        if targets.contains(id) {
            errors.push(FieldError::new(
                format!("/exclude_list_ids/{i}"),
                "is also a target list",
            ));
        }
    }
}

// ---- CRUD -------------------------------------------------------------------------------

pub async fn create(store: &dyn Store, ws: &str, input: CreateCampaign) -> AppResult<Campaign> {
    let mut errors = vec![];
    let name = crate::model::parse_text(&input.name, 200)
        .map_err(|r| errors.push(FieldError::new("/name", r)))
        .ok();
    let senders = check_senders(
        input.sender_id.as_ref(),
        input.sender_ids.as_ref(),
        &mut errors,
    );
    if input.sender_id.is_none() && input.sender_ids.is_none() {
        errors.push(FieldError::new(
            "/sender_id",
            "give sender_id or sender_ids",
        ));
    }
    check_lists(store, ws, "/list_ids", &input.list_ids, true, &mut errors).await?;
    let excluded = input.exclude_list_ids.unwrap_or_default();
    check_lists(
        store,
        ws,
        "/exclude_list_ids",
        &excluded,
        false,
        &mut errors,
    )
    .await?;
    cross_check_lists(&input.list_ids, &excluded, &mut errors);
    let now = Utc::now();
    let mut c = CampaignRecord {
        id: Id::generate(Id::CAMPAIGN),
        name: String::new(),
        state: CampaignState::Draft,
        sender_ids: vec![],
        list_ids: input.list_ids,
        exclude_list_ids: excluded,
        template_id: input.template_id,
        template_version: input.template_version,
        subject: input
            .subject
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
        html: input.html,
        text: input.text,
        tracking: input.tracking.unwrap_or(true),
        scheduled_at: input.scheduled_at,
        run_id: None,
        runs: 0,
        pause_reason: None,
        created_at: now,
        updated_at: now,
        version: 1,
    };
    check_body(store, ws, &c, &mut errors).await?;
    if !errors.is_empty() {
        return Err(AppError::Invalid(errors));
    }
    let (Some(name), Some(sender_ids)) = (name, senders) else {
        return Err(AppError::internal("validated fields are missing"));
    };
    c.name = name;
    c.sender_ids = sender_ids;
    store
        .put(
            to_item(&campaigns_pk(ws), &c.id, &c)?,
            Some(Cond::ItemNotExists),
        )
        .await?;
    Ok(c.into())
}

pub async fn load(store: &dyn Store, ws: &str, id: &str) -> AppResult<CampaignRecord> {
    if !Id::is_valid(Id::CAMPAIGN, id) {
        return Err(AppError::NotFound);
    }
    let item = store
        .get(&campaign_key(ws, id))
        .await?
        .ok_or(AppError::NotFound)?;
    from_item(item)
}

pub async fn load_run(
    store: &dyn Store,
    ws: &str,
    campaign_id: &str,
    run_id: &str,
) -> AppResult<Option<RunRecord>> {
    match store.get(&run_key(ws, campaign_id, run_id)).await? {
        Some(item) => Ok(Some(from_item(item)?)),
        None => Ok(None),
    }
}

/// A campaign with the status of its runs (newest first, at most 20).
pub async fn get(store: &dyn Store, ws: &str, id: &str) -> AppResult<Campaign> {
    let c = load(store, ws, id).await?;
    with_runs(store, ws, c).await
}

async fn with_runs(store: &dyn Store, ws: &str, c: CampaignRecord) -> AppResult<Campaign> {
    let page = store
        .query(
            Query::partition(runs_pk(ws))
                .sk(SortKeyCond::BeginsWith(format!("{}#", c.id)))
                .limit(20),
        )
        .await?;
    let mut runs = Vec::new();
    for item in page.items {
        let run: RunRecord = from_item(item)?;
        let state = if Some(&run.id) == c.run_id.as_ref() {
            c.state
        } else {
            run.ended.unwrap_or(CampaignState::Completed)
        };
        let counts = counts(store, ws, &run.id).await?;
        runs.push(status_of(&run, state, counts, Utc::now()));
    }
    runs.sort_by_key(|r| std::cmp::Reverse(r.number));
    let mut out = Campaign::from(c);
    out.runs = runs;
    Ok(out)
}

pub async fn list(
    store: &dyn Store,
    ws: &str,
    limit: usize,
    cursor: Option<String>,
) -> AppResult<Paged<Campaign>> {
    let page: Paged<CampaignRecord> = page_of(store, &campaigns_pk(ws), limit, cursor).await?;
    Ok(Paged {
        data: page.data.into_iter().map(Campaign::from).collect(),
        next_cursor: page.next_cursor,
    })
}

fn not_in_state(c: &CampaignRecord, what: &str) -> AppError {
    AppError::conflict("/state", format!("a {} campaign cannot {what}", c.state))
}

pub async fn patch(
    store: &dyn Store,
    ws: &str,
    id: &str,
    patch: CampaignPatch,
) -> AppResult<Campaign> {
    let mut c = load(store, ws, id).await?;
    if !c.state.is_editable() {
        return Err(not_in_state(&c, "be edited (only drafts can)"));
    }
    let mut errors = vec![];
    if let Some(name) = &patch.name {
        match crate::model::parse_text(name, 200) {
            Ok(n) => c.name = n,
            Err(r) => errors.push(FieldError::new("/name", r)),
        }
    }
    if (patch.sender_id.is_some() || patch.sender_ids.is_some())
        && let Some(s) = check_senders(
            patch.sender_id.as_ref(),
            patch.sender_ids.as_ref(),
            &mut errors,
        )
    {
        c.sender_ids = s;
    }
    if let Some(ids) = patch.list_ids {
        check_lists(store, ws, "/list_ids", &ids, true, &mut errors).await?;
        c.list_ids = ids;
    }
    if let Some(ids) = patch.exclude_list_ids {
        check_lists(store, ws, "/exclude_list_ids", &ids, false, &mut errors).await?;
        c.exclude_list_ids = ids;
    }
    cross_check_lists(&c.list_ids, &c.exclude_list_ids, &mut errors);
    let inline = patch.subject.is_some() || patch.html.is_some() || patch.text.is_some();
    match (&patch.template_id, inline) {
        (Some(Some(_)), true) => errors.push(FieldError::new(
            "/template_id",
            "give a template or inline content, not both",
        )),
        (Some(Some(_)), false) => {
            c.subject = String::new();
            c.html = None;
            c.text = None;
        }
        (_, true) => {
            c.template_id = None;
            c.template_version = None;
        }
        _ => {}
    }
    if let Some(t) = patch.template_id {
        if t.as_ref() != c.template_id.as_ref() {
            c.template_version = None;
        }
        c.template_id = t;
    }
    if let Some(v) = patch.template_version {
        c.template_version = v;
    }
    if let Some(s) = patch.subject {
        c.subject = s.trim().to_string();
    }
    if let Some(h) = patch.html {
        c.html = h;
    }
    if let Some(t) = patch.text {
        c.text = t;
    }
    check_body(store, ws, &c, &mut errors).await?;
    if let Some(t) = patch.tracking {
        c.tracking = t;
    }
    if let Some(at) = patch.scheduled_at {
        c.scheduled_at = at;
    }
    if !errors.is_empty() {
        return Err(AppError::Invalid(errors));
    }
    save(store, ws, &mut c).await?;
    Ok(c.into())
}

/// Writes a changed campaign, conditional on the version read (409 on a race).
async fn save(store: &dyn Store, ws: &str, c: &mut CampaignRecord) -> AppResult<()> {
    let read = c.version;
    c.version += 1;
    c.updated_at = Utc::now();
    match store
        .put(
            to_item(&campaigns_pk(ws), &c.id, c)?,
            Some(Cond::eq("version", val::n(read))),
        )
        .await
    {
        Ok(()) => Ok(()),
        Err(StoreError::ConditionFailed) => Err(AppError::conflict(
            "/version",
            "the campaign changed concurrently; read it again",
        )),
        Err(e) => Err(e.into()),
    }
}

fn save_action(ws: &str, c: &mut CampaignRecord) -> AppResult<TxAction> {
    let read = c.version;
    c.version += 1;
    c.updated_at = Utc::now();
    Ok(TxAction::Put {
        item: to_item(&campaigns_pk(ws), &c.id, c)?,
        cond: Some(Cond::eq("version", val::n(read))),
    })
}

/// Deletes a draft, completed or cancelled campaign with its runs (its messages stay
/// until their retention ends).
pub async fn delete(store: &dyn Store, ws: &str, id: &str) -> AppResult<()> {
    let c = load(store, ws, id).await?;
    if !c.state.is_deletable() {
        return Err(not_in_state(&c, "be deleted (cancel it first)"));
    }
    match store
        .delete(
            &campaign_key(ws, id),
            Some(Cond::eq("version", val::n(c.version))),
        )
        .await
    {
        Ok(_) => {}
        Err(StoreError::ConditionFailed) => {
            return Err(AppError::conflict(
                "/version",
                "the campaign changed concurrently; read it again",
            ));
        }
        Err(e) => return Err(e.into()),
    }
    loop {
        let page = store
            .query(
                Query::partition(runs_pk(ws))
                    .sk(SortKeyCond::BeginsWith(format!("{id}#")))
                    .limit(25),
            )
            .await?;
        if page.items.is_empty() {
            return Ok(());
        }
        let ops = page
            .items
            .iter()
            .filter_map(Key::of)
            .map(crate::ports::store::BatchOp::Delete)
            .collect();
        store.batch_write(ops).await?;
    }
}

// ---- lifecycle ------------------------------------------------------------------------

/// What launching needs besides the store: where planning tasks go and the scheduler.
pub struct LaunchDeps<'a> {
    pub store: &'a dyn Store,
    pub planning: &'a dyn crate::ports::queue::Queue,
    pub scheduler: &'a dyn crate::ports::scheduler::Scheduler,
    pub now: DateTime<Utc>,
}

/// A planning-queue record: plan page `page` of a run (or, with `sweep`, walk the run's
/// messages for a cancel, a resume or a retry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanTask {
    pub ws: String,
    pub campaign: String,
    pub run: String,
    #[serde(default)]
    pub page: u64,
    /// Set on the scheduled start: the campaign moves `scheduled → planning` first.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fire: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sweep: Option<Sweep>,
}

/// A walk over a run's messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sweep {
    pub kind: SweepKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SweepKind {
    /// Every unsettled message → `skipped(cancelled)`.
    Cancel,
    /// Messages parked while paused go back to the due index.
    Resume,
    /// `failed → queued` once (never `unknown_outcome`).
    RetryFailed,
}

pub async fn enqueue(queue: &dyn crate::ports::queue::Queue, task: &PlanTask) -> AppResult<()> {
    let body = serde_json::to_string(task).map_err(AppError::internal)?;
    queue
        .send_batch(vec![body])
        .await
        .map_err(|e| AppError::internal(format!("enqueueing a planning task: {e}")))
}

/// The schedule's name for a run (EventBridge Scheduler names: 1-64 of `[0-9a-zA-Z-_.]`).
pub fn schedule_name(run_id: &str) -> String {
    format!("mailpilot-{run_id}")
}

/// Launches a run now, or schedules it (`at`, else the campaign's `scheduled_at`, when in
/// the future). Answers with the campaign and its runs.
pub async fn launch(
    deps: &LaunchDeps<'_>,
    ws: &str,
    id: &str,
    req: LaunchRequest,
) -> AppResult<Campaign> {
    let store = deps.store;
    let mut c = load(store, ws, id).await?;
    let at = req.at.or(c.scheduled_at).filter(|t| *t > deps.now);
    if req.at.is_some_and(|t| t <= deps.now) {
        return Err(AppError::invalid("/at", "must be in the future"));
    }
    let action = if at.is_some() {
        CampaignAction::Schedule
    } else {
        CampaignAction::Launch
    };
    let next = next_state(c.state, action).map_err(|_| not_in_state(&c, "be launched"))?;
    // A scheduled campaign launched now: its pending schedule goes.
    let replaced = if c.state == CampaignState::Scheduled {
        match &c.run_id {
            Some(r) => load_run(store, ws, &c.id, r).await?,
            None => None,
        }
    } else {
        None
    };
    // Lists may have been deleted since the draft was written.
    let mut errors = vec![];
    check_lists(store, ws, "/list_ids", &c.list_ids, true, &mut errors).await?;
    check_lists(
        store,
        ws,
        "/exclude_list_ids",
        &c.exclude_list_ids,
        false,
        &mut errors,
    )
    .await?;
    let template = match &c.template_id {
        Some(tid) => Some(pin_template(store, ws, tid, c.template_version, &mut errors).await?),
        None => None,
    };
    if !errors.is_empty() {
        return Err(AppError::Invalid(errors));
    }
    let template = template.flatten();
    let mut actions = Vec::new();
    let run = match replaced {
        // Launching a scheduled run now keeps the run and drops its schedule.
        Some(mut run) => {
            if let Some(name) = run.schedule_name.take() {
                deps.scheduler.delete(&name).await?;
            }
            run.started_at = Some(deps.now);
            actions.push(TxAction::Put {
                item: to_item(&runs_pk(ws), &format!("{}#{}", c.id, run.id), &run)?,
                cond: Some(Cond::ItemExists),
            });
            run
        }
        None => {
            let run_id = Id::generate(Id::RUN);
            let run = RunRecord {
                id: run_id.clone(),
                campaign_id: c.id.clone(),
                workspace_id: ws.to_string(),
                number: c.runs + 1,
                sender_ids: c.sender_ids.clone(),
                list_ids: c.list_ids.clone(),
                exclude_list_ids: c.exclude_list_ids.clone(),
                content: match &template {
                    Some((_, subject)) => Content {
                        subject: subject.clone(),
                        html: None,
                        text: None,
                        variables: BTreeMap::new(),
                    },
                    None => Content {
                        subject: c.subject.clone(),
                        html: c.html.clone(),
                        text: c.text.clone(),
                        variables: BTreeMap::new(),
                    },
                },
                template: template.map(|(t, _)| t),
                tracking: c.tracking,
                scheduled_for: at,
                schedule_name: at.map(|_| schedule_name(&run_id)),
                created_at: deps.now,
                started_at: at.is_none().then_some(deps.now),
                page: 0,
                list_index: 0,
                cursor: None,
                planning_done: false,
                planned_at: None,
                rotation: None,
                pace: BTreeMap::new(),
                last_due: None,
                ended_at: None,
                ended: None,
            };
            c.runs += 1;
            c.run_id = Some(run_id);
            actions.push(TxAction::Put {
                item: to_item(&runs_pk(ws), &format!("{}#{}", c.id, run.id), &run)?,
                cond: Some(Cond::ItemNotExists),
            });
            run
        }
    };
    c.state = next;
    actions.push(save_action(ws, &mut c)?);
    store.transact(actions).await.map_err(|e| {
        if e.is_condition_failed() {
            AppError::conflict(
                "/version",
                "the campaign changed concurrently; read it again",
            )
        } else {
            e.into()
        }
    })?;
    let task = PlanTask {
        ws: ws.to_string(),
        campaign: c.id.clone(),
        run: run.id.clone(),
        page: 0,
        fire: at.is_some(),
        sweep: None,
    };
    match (at, &run.schedule_name) {
        (Some(at), Some(name)) => {
            let body = serde_json::to_string(&task).map_err(AppError::internal)?;
            deps.scheduler.create_at(name, at, &body).await?;
        }
        _ => enqueue(deps.planning, &task).await?,
    }
    with_runs(store, ws, c).await
}

/// The version a launch pins (the given one, else the published one) and its subject;
/// `None` with the reason in `errors`.
async fn pin_template(
    store: &dyn Store,
    ws: &str,
    tid: &str,
    version: Option<u32>,
    errors: &mut Vec<FieldError>,
) -> AppResult<Option<(PinnedTemplate, String)>> {
    let t = match super::templates::get(store, ws, tid).await {
        Ok(t) => t,
        Err(AppError::NotFound) => {
            errors.push(FieldError::new("/template_id", "no such template"));
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let v = match version {
        Some(v) => v,
        None if t.published_version == 0 => {
            errors.push(FieldError::new(
                "/template_id",
                "the template has no published version; publish one or pin template_version",
            ));
            return Ok(None);
        }
        None => t.published_version,
    };
    match super::templates::get_version(store, ws, tid, v).await {
        Ok(tv) => Ok(Some((
            PinnedTemplate {
                template_id: tid.to_string(),
                version: v,
            },
            tv.subject,
        ))),
        Err(AppError::NotFound) => {
            errors.push(FieldError::new(
                "/template_version",
                "this template has no such version",
            ));
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// `POST /v1/campaigns/{id}/test` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestSendRequest {
    /// Where the test copy goes.
    #[schema(format = Email)]
    pub to: String,
    /// Render with this contact's variables (default: the contact with the address `to`,
    /// else only `email`).
    #[serde(default)]
    pub contact_id: Option<String>,
}

/// The tag that marks a test copy (value: the campaign id). Test copies carry no
/// `mp_campaign`/`mp_run` tags: they are not the run's messages and not in its counts.
pub const TAG_TEST: &str = "mp_campaign_test";

/// Sends one copy of the campaign, rendered as a launch now would render it (the
/// template version it would pin, or its inline content), to `to` through the
/// transactional path (`messages::send_transactional`: suppressions apply), from the
/// pool's first sender, subject prefixed `[Test] ` and tagged [`TAG_TEST`].
pub async fn send_test(
    deps: &super::messages::SendDeps<'_>,
    ws: &str,
    id: &str,
    req: TestSendRequest,
    composer: &super::messages::Composer,
) -> AppResult<super::messages::Message> {
    let store = deps.store;
    let c = load(store, ws, id).await?;
    let to = crate::model::EmailAddress::parse(&req.to)
        .map_err(|_| AppError::invalid("/to", "not an email address"))?;
    let contact = match &req.contact_id {
        Some(cid) => Some(
            super::contacts::get(store, ws, cid)
                .await
                .map_err(|e| match e {
                    AppError::NotFound => AppError::invalid("/contact_id", "no such contact"),
                    other => other,
                })?,
        ),
        None => super::contacts::get_by_email(store, ws, to.as_str())
            .await
            .ok(),
    };
    let sender_id = c
        .sender_ids
        .first()
        .cloned()
        .ok_or_else(|| AppError::invalid("/sender_ids", "the campaign has no sender"))?;
    let (subject, html, text) = match &c.template_id {
        None => (c.subject.clone(), c.html.clone(), c.text.clone()),
        Some(tid) => {
            let mut errors = vec![];
            let pinned = pin_template(store, ws, tid, c.template_version, &mut errors).await?;
            let Some((pinned, _)) = pinned else {
                return Err(AppError::Invalid(errors));
            };
            let mut data = serde_json::Map::new();
            data.insert("email".into(), to.as_str().into());
            let recipient = match &contact {
                Some(ct) => super::templates::Recipient::Contact(ct),
                None => super::templates::Recipient::Data(&data),
            };
            let run = RunRecord {
                number: c.runs + 1,
                ..test_run(&c, ws)
            };
            let vars = campaign_variables(&c, &run);
            let r = super::templates::render_message(
                store,
                &super::templates::MessageContext {
                    workspace_id: ws,
                    content: super::templates::Content::Stored {
                        template_id: &pinned.template_id,
                        version: Some(pinned.version),
                    },
                    recipient,
                    campaign: Some(&vars),
                    message_id: "test",
                    tracking: false,
                    public_url: &composer.public_url,
                    keys: &composer.link_keys,
                },
            )
            .await?;
            (r.subject, Some(r.html), Some(r.text))
        }
    };
    let subject = format!("[Test] {subject}");
    let subject: String = if subject.chars().count() > 998 {
        subject.chars().take(998).collect()
    } else {
        subject
    };
    super::messages::send_transactional(
        deps,
        ws,
        super::messages::SendRequest {
            sender_id,
            to: Some(to.as_str().to_string()),
            contact_id: None,
            template_id: None,
            version: None,
            subject: Some(subject),
            html,
            text,
            variables: None,
            tracking: None,
            tags: Some(BTreeMap::from([(TAG_TEST.to_string(), c.id.clone())])),
        },
    )
    .await
}

/// A stand-in run for rendering outside a run (test copies).
fn test_run(c: &CampaignRecord, ws: &str) -> RunRecord {
    RunRecord {
        id: "test".into(),
        campaign_id: c.id.clone(),
        workspace_id: ws.to_string(),
        number: 0,
        sender_ids: c.sender_ids.clone(),
        list_ids: vec![],
        exclude_list_ids: vec![],
        content: Content {
            subject: c.subject.clone(),
            html: None,
            text: None,
            variables: BTreeMap::new(),
        },
        template: None,
        tracking: false,
        scheduled_for: None,
        schedule_name: None,
        created_at: Utc::now(),
        started_at: None,
        page: 0,
        list_index: 0,
        cursor: None,
        planning_done: false,
        planned_at: None,
        rotation: None,
        pace: BTreeMap::new(),
        last_due: None,
        ended_at: None,
        ended: None,
    }
}

/// Takes a pending schedule back: the campaign is a draft again.
pub async fn unschedule(deps: &LaunchDeps<'_>, ws: &str, id: &str) -> AppResult<Campaign> {
    let mut c = load(deps.store, ws, id).await?;
    c.state = next_state(c.state, CampaignAction::Unschedule)
        .map_err(|_| not_in_state(&c, "be unscheduled"))?;
    let run = match &c.run_id {
        Some(r) => load_run(deps.store, ws, &c.id, r).await?,
        None => None,
    };
    if let Some(name) = run.as_ref().and_then(|r| r.schedule_name.as_ref()) {
        deps.scheduler.delete(name).await?;
    }
    let mut actions = vec![];
    if let Some(run) = run {
        // The run never started: it goes, and the campaign forgets it.
        actions.push(TxAction::Delete {
            key: run_key(ws, &c.id, &run.id),
            cond: None,
        });
        c.runs = c.runs.saturating_sub(1);
        c.run_id = None;
    }
    actions.push(save_action(ws, &mut c)?);
    deps.store.transact(actions).await?;
    with_runs(deps.store, ws, c).await
}

/// Pauses the current run: planning stops after its page, the sender parks the run's
/// messages it receives (they wait, deferred, until resume).
pub async fn pause(store: &dyn Store, ws: &str, id: &str) -> AppResult<Campaign> {
    pause_because(store, ws, id, "manual").await
}

/// Pauses with a reason the API shows (`manual`, `sender_health:…`).
pub async fn pause_because(
    store: &dyn Store,
    ws: &str,
    id: &str,
    reason: &str,
) -> AppResult<Campaign> {
    let mut c = load(store, ws, id).await?;
    c.state =
        next_state(c.state, CampaignAction::Pause).map_err(|_| not_in_state(&c, "be paused"))?;
    c.pause_reason = Some(reason.to_string());
    save(store, ws, &mut c).await?;
    with_runs(store, ws, c).await
}

/// Resumes: planning goes on from its page, parked messages go back to the due index.
pub async fn resume(deps: &LaunchDeps<'_>, ws: &str, id: &str) -> AppResult<Campaign> {
    let mut c = load(deps.store, ws, id).await?;
    let run = current_run(deps.store, ws, &c).await?;
    c.state = next_state(
        c.state,
        CampaignAction::Resume {
            planning_done: run.planning_done,
        },
    )
    .map_err(|_| not_in_state(&c, "be resumed"))?;
    c.pause_reason = None;
    save(deps.store, ws, &mut c).await?;
    let base = PlanTask {
        ws: ws.to_string(),
        campaign: c.id.clone(),
        run: run.id.clone(),
        page: run.page,
        fire: false,
        sweep: None,
    };
    if !run.planning_done {
        enqueue(deps.planning, &base).await?;
    }
    enqueue(
        deps.planning,
        &PlanTask {
            sweep: Some(Sweep {
                kind: SweepKind::Resume,
                cursor: None,
            }),
            ..base
        },
    )
    .await?;
    with_runs(deps.store, ws, c).await
}

/// Cancels: a pending schedule is deleted, planning stops, and every unsent message of
/// the run ends `skipped(cancelled)` (a sweep over the run's messages; the sender skips
/// any it receives first).
pub async fn cancel(deps: &LaunchDeps<'_>, ws: &str, id: &str) -> AppResult<Campaign> {
    let mut c = load(deps.store, ws, id).await?;
    c.state = next_state(c.state, CampaignAction::Cancel)
        .map_err(|_| not_in_state(&c, "be cancelled"))?;
    let mut run = current_run(deps.store, ws, &c).await?;
    if let Some(name) = run.schedule_name.take() {
        deps.scheduler.delete(&name).await?;
    }
    run.ended = Some(CampaignState::Cancelled);
    run.ended_at = Some(deps.now);
    let actions = vec![
        TxAction::Put {
            item: to_item(&runs_pk(ws), &format!("{}#{}", c.id, run.id), &run)?,
            cond: Some(Cond::ItemExists),
        },
        save_action(ws, &mut c)?,
    ];
    deps.store.transact(actions).await.map_err(|e| {
        if e.is_condition_failed() {
            AppError::conflict(
                "/version",
                "the campaign changed concurrently; read it again",
            )
        } else {
            e.into()
        }
    })?;
    enqueue(
        deps.planning,
        &PlanTask {
            ws: ws.to_string(),
            campaign: c.id.clone(),
            run: run.id.clone(),
            page: run.page,
            fire: false,
            sweep: Some(Sweep {
                kind: SweepKind::Cancel,
                cursor: None,
            }),
        },
    )
    .await?;
    with_runs(deps.store, ws, c).await
}

/// Re-queues the current run's failed messages, once each (never `unknown_outcome`).
pub async fn retry_failed(deps: &LaunchDeps<'_>, ws: &str, id: &str) -> AppResult<Campaign> {
    let c = load(deps.store, ws, id).await?;
    if !matches!(
        c.state,
        CampaignState::Sending | CampaignState::Completed | CampaignState::Paused
    ) {
        return Err(not_in_state(&c, "retry failed messages"));
    }
    let run = current_run(deps.store, ws, &c).await?;
    let mut c = c;
    if c.state == CampaignState::Completed && counts(deps.store, ws, &run.id).await?.failed > 0 {
        // The run is sending again; the sweep's end completes it if nothing was retryable.
        c.state = CampaignState::Sending;
        save(deps.store, ws, &mut c).await?;
    }
    enqueue(
        deps.planning,
        &PlanTask {
            ws: ws.to_string(),
            campaign: c.id.clone(),
            run: run.id.clone(),
            page: run.page,
            fire: false,
            sweep: Some(Sweep {
                kind: SweepKind::RetryFailed,
                cursor: None,
            }),
        },
    )
    .await?;
    with_runs(deps.store, ws, c).await
}

async fn current_run(store: &dyn Store, ws: &str, c: &CampaignRecord) -> AppResult<RunRecord> {
    let run_id = c
        .run_id
        .as_ref()
        .ok_or_else(|| not_in_state(c, "do this without a run"))?;
    load_run(store, ws, &c.id, run_id)
        .await?
        .ok_or_else(|| AppError::internal("the campaign's run is missing"))
}

/// A run's messages (by id), optionally in one state; reads at most 20 index pages.
pub async fn messages(
    store: &dyn Store,
    ws: &str,
    id: &str,
    state: Option<MessageState>,
    limit: usize,
    cursor: Option<String>,
) -> AppResult<Paged<super::messages::Message>> {
    let c = load(store, ws, id).await?;
    let Some(run_id) = c.run_id else {
        return Ok(Paged {
            data: vec![],
            next_cursor: None,
        });
    };
    let query = Query::index(Index::Gsi1, run_messages_gsi(ws, &run_id));
    super::messages::list_query(store, query, state, limit, cursor).await
}

// ---- counters ---------------------------------------------------------------------------

/// Attribute names of the run counters.
pub mod attr {
    pub const MEMBERS: &str = "members";
    pub const EXCLUDED: &str = "excluded";
    pub const PENDING: &str = "pending_opt_in";
    pub const MESSAGES: &str = "messages";
    pub const SENT: &str = "sent";
    pub const FAILED: &str = "failed";
    pub const SKIPPED: &str = "skipped";

    /// `r_<reason>` with `:` written as `__` (attribute names stay simple).
    pub fn skip(reason: &str) -> String {
        format!("r_{}", reason.replace(':', "__"))
    }

    /// `f_<class>`: the failure's class (`permanent:550` → `permanent`).
    pub fn failure(reason: &str) -> String {
        format!("f_{}", crate::model::message::FailReason::class_of(reason))
    }
}

/// Adds deltas to one random shard of a run's counters (one write).
pub async fn add_counts(
    store: &dyn Store,
    ws: &str,
    run_id: &str,
    deltas: &BTreeMap<String, i64>,
) -> AppResult<()> {
    let shard = rand::rng().random_range(0..COUNTER_SHARDS);
    if let Some(update) = counts_update(deltas) {
        store
            .update(&counter_key(ws, run_id, shard), update, None)
            .await?;
    }
    Ok(())
}

/// The counter update for deltas (planning writes it inside its transactions).
pub fn counts_update(deltas: &BTreeMap<String, i64>) -> Option<Update> {
    let mut update = Update::new();
    let mut any = false;
    for (k, v) in deltas {
        if *v != 0 {
            update = update.add(k.clone(), *v);
            any = true;
        }
    }
    any.then_some(update)
}

pub fn planner_counter_key(ws: &str, run_id: &str) -> Key {
    counter_key(ws, run_id, 0)
}

/// Sums a run's counter shards.
pub async fn counts(store: &dyn Store, ws: &str, run_id: &str) -> AppResult<RunCounts> {
    let page = store
        .query(
            Query::partition(counter_pk(ws))
                .sk(SortKeyCond::BeginsWith(format!("run#{run_id}#")))
                .limit(COUNTER_SHARDS as usize),
        )
        .await?;
    let mut sums: BTreeMap<String, i64> = BTreeMap::new();
    for item in &page.items {
        for (k, _) in item.iter() {
            if let Some(n) = item.num_attr(k) {
                *sums.entry(k.clone()).or_default() += n;
            }
        }
    }
    Ok(counts_from(&sums))
}

fn counts_from(sums: &BTreeMap<String, i64>) -> RunCounts {
    let get = |k: &str| sums.get(k).copied().unwrap_or(0);
    let mut c = RunCounts {
        members: get(attr::MEMBERS),
        excluded: get(attr::EXCLUDED),
        pending_opt_in: get(attr::PENDING),
        messages: get(attr::MESSAGES),
        sent: get(attr::SENT),
        failed: get(attr::FAILED),
        skipped: get(attr::SKIPPED),
        ..Default::default()
    };
    c.in_flight = (c.messages - c.sent - c.failed - c.skipped).max(0);
    for (k, v) in sums {
        if *v == 0 {
            continue;
        }
        if let Some(r) = k.strip_prefix("r_") {
            c.skip_reasons.insert(r.replace("__", ":"), *v);
        } else if let Some(f) = k.strip_prefix("f_") {
            c.failure_reasons.insert(f.to_string(), *v);
        }
    }
    c
}

fn status_of(
    run: &RunRecord,
    state: CampaignState,
    counts: RunCounts,
    now: DateTime<Utc>,
) -> RunStatus {
    let settled = counts.sent + counts.failed + counts.skipped;
    let progress = if counts.messages > 0 {
        settled as f64 / counts.messages as f64
    } else {
        0.0
    };
    let eta = match (state, run.started_at) {
        (CampaignState::Planning | CampaignState::Sending, Some(started)) if settled > 0 => {
            let elapsed = (now - started).num_milliseconds().max(1) as f64;
            let rate = settled as f64 / elapsed; // per ms
            let remaining = counts.in_flight as f64;
            let by_rate = now + Duration::milliseconds((remaining / rate) as i64);
            Some(run.last_due.map_or(by_rate, |d| d.max(by_rate)))
        }
        (CampaignState::Planning | CampaignState::Sending, _) => run.last_due,
        _ => None,
    };
    RunStatus {
        id: run.id.clone(),
        number: run.number,
        state,
        scheduled_for: run.scheduled_for,
        started_at: run.started_at,
        planning_done: run.planning_done,
        planned_at: run.planned_at,
        template: run.template.clone(),
        ended_at: run.ended_at,
        counts,
        progress,
        eta,
    }
}

/// The run is over when planning is done and every message is settled: the campaign
/// moves `sending → completed` (a conditional write; several callers may try).
pub async fn complete_if_settled(
    store: &dyn Store,
    ws: &str,
    campaign_id: &str,
    run_id: &str,
) -> AppResult<bool> {
    let c = load(store, ws, campaign_id).await?;
    if c.state != CampaignState::Sending || c.run_id.as_deref() != Some(run_id) {
        return Ok(false);
    }
    let Some(mut run) = load_run(store, ws, campaign_id, run_id).await? else {
        return Ok(false);
    };
    if !run.planning_done {
        return Ok(false);
    }
    let n = counts(store, ws, run_id).await?;
    if n.in_flight > 0 {
        return Ok(false);
    }
    let mut c = c;
    c.state = CampaignState::Completed;
    run.ended = Some(CampaignState::Completed);
    run.ended_at = Some(Utc::now());
    let actions = vec![
        TxAction::Put {
            item: to_item(&runs_pk(ws), &format!("{campaign_id}#{run_id}"), &run)?,
            cond: Some(Cond::ItemExists),
        },
        save_action(ws, &mut c)?,
    ];
    match store.transact(actions).await {
        Ok(()) => Ok(true),
        Err(e) if e.is_condition_failed() => Ok(false),
        Err(e) => Err(e.into()),
    }
}

// ---- the sender's hooks -----------------------------------------------------------------

/// The counting bucket of a message state: what `sent`/`failed`/`skipped` count.
fn bucket(state: MessageState) -> Option<&'static str> {
    match state {
        MessageState::Sent
        | MessageState::Delivered
        | MessageState::Bounced
        | MessageState::Complained => Some(attr::SENT),
        MessageState::Failed => Some(attr::FAILED),
        MessageState::Skipped => Some(attr::SKIPPED),
        _ => None,
    }
}

fn reason_attr(state: MessageState, reason: Option<&str>) -> Option<String> {
    match (state, reason) {
        (MessageState::Skipped, Some(r)) => Some(attr::skip(r)),
        (MessageState::Failed, Some(r)) => Some(attr::failure(r)),
        _ => None,
    }
}

/// The counter deltas of one message transition (empty when nothing counted moved).
pub fn transition_deltas(prev: &MessageRecord, next: &MessageRecord) -> BTreeMap<String, i64> {
    let mut d = BTreeMap::new();
    let before = (
        bucket(prev.state),
        reason_attr(prev.state, prev.reason.as_deref()),
    );
    let after = (
        bucket(next.state),
        reason_attr(next.state, next.reason.as_deref()),
    );
    if before == after {
        return d;
    }
    if let Some(b) = before.0 {
        *d.entry(b.to_string()).or_default() -= 1;
    }
    if let Some(r) = before.1 {
        *d.entry(r).or_default() -= 1;
    }
    if let Some(b) = after.0 {
        *d.entry(b.to_string()).or_default() += 1;
    }
    if let Some(r) = after.1 {
        *d.entry(r).or_default() += 1;
    }
    d.retain(|_, v| *v != 0);
    d
}

type Tally = HashMap<(String, String, String), BTreeMap<String, i64>>;

tokio::task_local! {
    static TALLY: RefCell<Tally>;
}

/// Records the counter change of a campaign message's transition: inside [`counting`]
/// it is added to the batch's tally; outside, written at once.
pub async fn note_transition(store: &dyn Store, prev: &MessageRecord, next: &MessageRecord) {
    let (Some(campaign), Some(run)) = (next.tags.get(TAG_CAMPAIGN), next.tags.get(TAG_RUN)) else {
        return;
    };
    let deltas = transition_deltas(prev, next);
    if deltas.is_empty() {
        return;
    }
    let key = (next.workspace_id.clone(), campaign.clone(), run.clone());
    let tallied = TALLY
        .try_with(|t| {
            let mut t = t.borrow_mut();
            let entry = t.entry(key.clone()).or_default();
            for (k, v) in &deltas {
                *entry.entry(k.clone()).or_default() += v;
            }
        })
        .is_ok();
    if !tallied {
        flush(store, HashMap::from([(key, deltas)])).await;
    }
}

/// Runs `f` with a tally: the counter changes of every campaign message it transitions
/// are written once per run at the end (one write per run per batch), and a run whose
/// messages are all settled completes. The analytics' sent counters are batched the
/// same way ([`super::analytics::batching`]).
pub async fn counting<F: std::future::Future>(store: &dyn Store, f: F) -> F::Output {
    let (out, tally) = TALLY
        .scope(RefCell::new(Tally::new()), async {
            // Boxed: a sender batch's future is large, and nested scopes would hold it
            // on the caller's stack (a stack overflow in a test thread).
            let out = super::analytics::batching(store, Box::pin(f)).await;
            let tally = TALLY.with(|t| std::mem::take(&mut *t.borrow_mut()));
            (out, tally)
        })
        .await;
    flush(store, tally).await;
    out
}

async fn flush(store: &dyn Store, tally: Tally) {
    for ((ws, campaign, run), deltas) in tally {
        if let Err(e) = add_counts(store, &ws, &run, &deltas).await {
            tracing::warn!(error = %e, run, "updating a run's counters failed");
            continue;
        }
        if let Err(e) = complete_if_settled(store, &ws, &campaign, &run).await {
            tracing::warn!(error = %e, run, "completing a run failed");
        }
    }
}

/// What a run's messages are made of, prepared once per run and batch.
pub enum RunContent {
    /// The run's inline content (sent as written, `{{name}}` placeholders as the
    /// engine's composer fills them).
    Inline(Content),
    /// The pinned template version, parsed, with what every render of it shares.
    Template {
        prepared: std::sync::Arc<crate::render::Prepared>,
        pinned: PinnedTemplate,
        workspace: Box<super::workspaces::Workspace>,
        /// `{{campaign.name}}`, `{{campaign.id}}`, `{{campaign.run}}`.
        campaign: serde_json::Map<String, serde_json::Value>,
        tracking: bool,
    },
}

impl std::fmt::Debug for RunContent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunContent::Inline(c) => f.debug_tuple("Inline").field(&c.subject).finish(),
            RunContent::Template { pinned, .. } => f.debug_tuple("Template").field(pinned).finish(),
        }
    }
}

/// Why a campaign message could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenderFailure {
    /// Fail the message with this permanent reason (`contact_deleted`, `render`).
    Permanent(&'static str),
    /// A store error: hand the message back.
    Retry,
}

impl RunContent {
    /// The content of one message: inline as is, or the template rendered for the
    /// message's contact through `templates::render_prepared` (the same code as
    /// `templates::render_message`, without re-reading the workspace and the version
    /// per message). Reads the contact.
    pub async fn for_message(
        &self,
        store: &dyn Store,
        composer: &super::messages::Composer,
        m: &MessageRecord,
    ) -> Result<Content, RenderFailure> {
        match self {
            RunContent::Inline(c) => Ok(c.clone()),
            RunContent::Template { .. } => {
                let r = self.render(store, composer, m).await?;
                Ok(Content {
                    subject: r.subject,
                    html: Some(r.html),
                    text: Some(r.text),
                    variables: BTreeMap::new(),
                })
            }
        }
    }

    /// A template run's render for one message (inline content: `Permanent("render")`).
    pub async fn render(
        &self,
        store: &dyn Store,
        composer: &super::messages::Composer,
        m: &MessageRecord,
    ) -> Result<super::templates::RenderedMessage, RenderFailure> {
        let (prepared, pinned, workspace, campaign, tracking) = match self {
            RunContent::Inline(_) => return Err(RenderFailure::Permanent("render")),
            RunContent::Template {
                prepared,
                pinned,
                workspace,
                campaign,
                tracking,
            } => (prepared, pinned, workspace, campaign, *tracking),
        };
        use super::templates::{self, MessageContext, Recipient};
        let contact = match &m.contact_id {
            Some(cid) => match super::contacts::get(store, &m.workspace_id, cid).await {
                Ok(c) => c,
                Err(AppError::NotFound) => return Err(RenderFailure::Permanent("contact_deleted")),
                Err(e) => {
                    tracing::warn!(error = %e, "reading a campaign recipient failed");
                    return Err(RenderFailure::Retry);
                }
            },
            None => return Err(RenderFailure::Permanent("contact_deleted")),
        };
        let vars = templates::variables(&Recipient::Contact(&contact), workspace, Some(campaign));
        let ctx = MessageContext {
            workspace_id: &m.workspace_id,
            content: templates::Content::Stored {
                template_id: &pinned.template_id,
                version: Some(pinned.version),
            },
            recipient: Recipient::Contact(&contact),
            campaign: Some(campaign),
            message_id: &m.id,
            tracking,
            public_url: &composer.public_url,
            keys: &composer.link_keys,
        };
        let base = templates::base_url(workspace, &composer.public_url);
        match templates::render_prepared(prepared, vars, &ctx, base, Some(pinned.version)) {
            Ok(r) => Ok(r),
            Err(e) => {
                tracing::warn!(error = %e, message = %m.id, "rendering a campaign message failed");
                Err(RenderFailure::Permanent("render"))
            }
        }
    }
}

/// Campaign variables of a run's renders.
pub fn campaign_variables(
    c: &CampaignRecord,
    run: &RunRecord,
) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    m.insert("id".into(), c.id.clone().into());
    m.insert("name".into(), c.name.clone().into());
    m.insert("run".into(), run.number.into());
    m
}

/// Prepares a run's content (template: the workspace and the parsed version).
pub async fn run_content(
    store: &dyn Store,
    c: &CampaignRecord,
    run: RunRecord,
) -> AppResult<RunContent> {
    let Some(pinned) = run.template.clone() else {
        return Ok(RunContent::Inline(run.content));
    };
    let ws = &run.workspace_id;
    let workspace = super::workspaces::get_workspace(store, ws).await?;
    let prepared =
        super::templates::prepared_version(store, ws, &pinned.template_id, pinned.version).await?;
    Ok(RunContent::Template {
        prepared,
        pinned,
        workspace: Box::new(workspace),
        campaign: campaign_variables(c, &run),
        tracking: run.tracking,
    })
}

/// What the sender must do with a campaign's message.
#[derive(Debug, Clone)]
pub enum Gate {
    /// Send it with the run's pinned content (`RunContent::for_message`).
    Send(std::sync::Arc<RunContent>),
    /// Paused: park it until resume.
    Park,
    /// Cancelled: skip it.
    Cancel,
}

/// Looks up the gate of each (workspace, campaign, run) once per batch.
pub async fn gates(
    store: &dyn Store,
    wanted: Vec<(String, String, String)>,
) -> HashMap<(String, String, String), Gate> {
    let mut out = HashMap::new();
    for key in wanted {
        if out.contains_key(&key) {
            continue;
        }
        let (ws, campaign, run) = &key;
        let gate = async {
            let c = load(store, ws, campaign).await?;
            let r = load_run(store, ws, campaign, run).await?;
            Ok::<_, AppError>(match (c.state, r) {
                (_, None) => Gate::Cancel,
                (_, Some(r)) if r.ended == Some(CampaignState::Cancelled) => Gate::Cancel,
                (CampaignState::Cancelled, Some(_)) => Gate::Cancel,
                (CampaignState::Paused, Some(_)) if c.run_id.as_ref() == Some(run) => Gate::Park,
                (_, Some(r)) => Gate::Send(std::sync::Arc::new(run_content(store, &c, r).await?)),
            })
        }
        .await;
        match gate {
            Ok(g) => {
                out.insert(key, g);
            }
            // A deleted campaign sends nothing more; a store error leaves it out (the
            // sender hands such messages back).
            Err(AppError::NotFound) => {
                out.insert(key, Gate::Cancel);
            }
            Err(e) => tracing::warn!(error = %e, "reading a campaign's state failed"),
        }
    }
    out
}

/// The skip a cancelled campaign's message takes.
pub const CANCELLED: SkipReason = SkipReason::Cancelled;

/// Parked messages wait this long before the due index hands them to the sender again
/// (a resume re-files them at once; this is the safety net).
pub const PARK_SECS: i64 = 3600;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::queue::Lane;

    fn rec(state: MessageState, reason: Option<&str>) -> MessageRecord {
        let mut m = super::super::messages::new_record(
            "ws_1",
            "msg_1".into(),
            Lane::Bulk,
            state,
            "snd",
            "a@b.c",
            None,
            "s",
            Utc::now(),
        );
        m.reason = reason.map(str::to_string);
        m
    }

    #[test]
    fn deltas_count_each_message_once_in_its_bucket() {
        let d = transition_deltas(
            &rec(MessageState::Sending, None),
            &rec(MessageState::Sent, None),
        );
        assert_eq!(d, BTreeMap::from([("sent".into(), 1)]));
        let d = transition_deltas(
            &rec(MessageState::Sending, None),
            &rec(MessageState::Skipped, Some("collision:already_sent")),
        );
        assert_eq!(
            d,
            BTreeMap::from([
                ("r_collision__already_sent".into(), 1),
                ("skipped".into(), 1)
            ])
        );
        // A delivery fact keeps the message in `sent`.
        let d = transition_deltas(
            &rec(MessageState::Sent, None),
            &rec(MessageState::Delivered, None),
        );
        assert!(d.is_empty());
        // retry-failed takes it out of `failed`.
        let d = transition_deltas(
            &rec(MessageState::Failed, Some("permanent:550")),
            &rec(MessageState::Queued, None),
        );
        assert_eq!(
            d,
            BTreeMap::from([("f_permanent".into(), -1), ("failed".into(), -1)])
        );
        let sums = BTreeMap::from([
            ("messages".to_string(), 10),
            ("sent".to_string(), 4),
            ("skipped".to_string(), 2),
            ("r_collision__already_sent".to_string(), 2),
            ("r_duplicate".to_string(), 3),
        ]);
        let c = counts_from(&sums);
        assert_eq!(c.in_flight, 4);
        assert_eq!(c.skip_reasons["collision:already_sent"], 2);
        assert_eq!(c.skip_reasons["duplicate"], 3);
    }
}
