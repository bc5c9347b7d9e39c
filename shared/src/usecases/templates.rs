//! Templates: versioned subject / preheader / HTML (Handlebars, or MJML + Handlebars) /
//! text, with reusable components; preview; publish; and **rendering one message** —
//! the entry point the delivery engine calls ([`render_message`]).
//!
//! Every save creates a new immutable version: components expanded (and snapshotted),
//! MJML compiled, the links that will be rewritten found, the text part derived, the
//! warnings listed. A template's `published_version` is what a send without a pinned
//! version uses; publishing only moves that pointer. A campaign pins the version it
//! launched with. Compiled versions are parsed once per process and cached (they never
//! change), so a send does the Handlebars fill-in, the link signing and nothing else.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json, json};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::components::{self, Component};
use super::contacts::Contact;
use super::workspaces::{self, Workspace};
use super::{Paged, from_item, to_item};
use crate::error::{AppError, AppResult, FieldError};
use crate::keys;
use crate::mime::ListUnsubscribe;
use crate::model::Id;
use crate::model::links::LinkKeys;
use crate::ports::store::{Cond, Key, Query, Store, TxAction, Value};
use crate::render::{
    self, Compiled, ComponentDef, Format, LinkContext, LinkInfo, ParamDef, Prepared, Source,
    Warning,
};

/// Longest HTML source, in bytes (the compiled version must fit DynamoDB's 400 KB item).
pub const MAX_HTML: usize = 100 * 1024;
/// Longest text source, in bytes.
pub const MAX_TEXT: usize = 50 * 1024;
/// Longest subject and preheader, in characters.
pub const MAX_SUBJECT: usize = 998;

/// A template: its name and which version sends.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Template {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// The newest version's number (versions count from 1).
    pub latest_version: u32,
    /// The version a send without a pinned version uses.
    pub published_version: u32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The components a version used, as they were when it was saved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ComponentSnapshot {
    pub id: String,
    pub name: String,
    /// The component's version at the time.
    pub version: u32,
    pub format: Format,
    pub body: String,
    pub parameters: Vec<ParamDef>,
}

/// One immutable version, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredVersion {
    template_id: String,
    version: u32,
    source: Source,
    components: Vec<ComponentSnapshot>,
    compiled: Compiled,
    created_at: DateTime<Utc>,
}

/// One version as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TemplateVersion {
    pub template_id: String,
    pub version: u32,
    pub format: Format,
    pub subject: String,
    pub preheader: Option<String>,
    pub html: String,
    /// The text part as written; `null` when it is derived from the HTML.
    pub text: Option<String>,
    /// The text part that sends (written or derived), as a template.
    pub text_template: String,
    pub components: Vec<ComponentSnapshot>,
    /// Every link of the compiled HTML in order; `index` is what click tokens carry.
    pub links: Vec<LinkInfo>,
    /// Root variables the version uses.
    pub variables: Vec<String>,
    pub warnings: Vec<Warning>,
    pub created_at: DateTime<Utc>,
}

impl From<StoredVersion> for TemplateVersion {
    fn from(v: StoredVersion) -> Self {
        Self {
            template_id: v.template_id,
            version: v.version,
            format: v.source.format,
            subject: v.source.subject,
            preheader: v.source.preheader,
            html: v.source.html,
            text: v.source.text,
            text_template: v.compiled.text,
            components: v.components,
            links: v.compiled.links,
            variables: v.compiled.variables,
            warnings: v.compiled.warnings,
            created_at: v.created_at,
        }
    }
}

/// A version in a list (without its bodies).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VersionSummary {
    pub version: u32,
    pub subject: String,
    pub format: Format,
    /// Names of the components it used.
    pub components: Vec<String>,
    pub warnings: Vec<Warning>,
    pub created_at: DateTime<Utc>,
}

/// A template with its newest version.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TemplateDetail {
    #[serde(flatten)]
    pub template: Template,
    pub latest: TemplateVersion,
}

/// `POST /v1/templates` body. Version 1 is published at once unless `publish` is false.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateTemplate {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x1f\x7f-\x9f\s][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub name: String,
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 2000,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x1f\x7f-\x9f\s][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub description: Option<String>,
    #[serde(default)]
    pub format: Format,
    #[schema(min_length = 1, max_length = 998)]
    pub subject: String,
    #[serde(default)]
    #[schema(max_length = 998)]
    pub preheader: Option<String>,
    #[schema(min_length = 1, max_length = 102400)]
    pub html: String,
    #[serde(default)]
    #[schema(max_length = 51200)]
    pub text: Option<String>,
    #[serde(default)]
    pub publish: Option<bool>,
}

/// `PATCH /v1/templates/{id}` body. Any of `format`, `subject`, `preheader`, `html`,
/// `text` saves a new version (the others carried over from the newest); `name` and
/// `description` change the template only. `publish: true` publishes the new version.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct TemplatePatch {
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x1f\x7f-\x9f\s][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "crate::serde_util::double_option")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 2000, pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x1f\x7f-\x9f\s][^\x00-\x1f\x7f-\x9f]*$")]
    pub description: Option<Option<String>>,
    #[serde(default)]
    pub format: Option<Format>,
    #[serde(default)]
    #[schema(min_length = 1, max_length = 998)]
    pub subject: Option<String>,
    #[serde(default, deserialize_with = "crate::serde_util::double_option")]
    #[schema(value_type = Option<String>, max_length = 998)]
    pub preheader: Option<Option<String>>,
    #[serde(default)]
    #[schema(min_length = 1, max_length = 102400)]
    pub html: Option<String>,
    #[serde(default, deserialize_with = "crate::serde_util::double_option")]
    #[schema(value_type = Option<String>, max_length = 51200)]
    pub text: Option<Option<String>>,
    #[serde(default)]
    pub publish: Option<bool>,
}

/// `POST /v1/templates/{id}/publish` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct PublishRequest {
    #[schema(minimum = 1)]
    pub version: u32,
}

/// `POST /v1/templates/{id}/preview` body: a contact, or sample data, or neither (sample
/// values).
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct PreviewRequest {
    #[serde(default)]
    pub contact_id: Option<String>,
    /// Variables as a contact would have them (`first_name`, `attributes`…), merged over
    /// the contact's when both are given.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub data: Option<Map<String, Json>>,
    /// Default: the newest version.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub version: Option<u32>,
    /// Show links rewritten and the pixel as a tracked send would (default false).
    #[serde(default)]
    pub tracking: Option<bool>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub campaign: Option<Map<String, Json>>,
}

/// A rendered preview of a template version (`TemplatePreview` in the OpenAPI: the
/// import preview is `Preview`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = TemplatePreview)]
pub struct Preview {
    pub version: u32,
    pub subject: String,
    pub html: String,
    pub text: String,
    pub missing_variables: Vec<String>,
    pub warnings: Vec<Warning>,
}

/// What changed between two versions.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TemplateDiff {
    pub from: u32,
    pub to: u32,
    /// One entry per changed field (`subject`, `preheader`, `html`, `text`, `format`),
    /// as a unified diff.
    pub changes: Vec<FieldDiff>,
    /// Components added, removed or changed (by name).
    pub components: Vec<ComponentChange>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FieldDiff {
    pub field: String,
    pub diff: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ComponentChange {
    pub name: String,
    /// `added`, `removed` or `changed`.
    pub change: String,
}

// ---- keys ---------------------------------------------------------------------------

fn templates_pk(ws: &str) -> String {
    keys::ws(ws, keys::TEMPLATES)
}

fn version_sk(v: u32) -> String {
    format!("{v:06}")
}

// ---- validation and compiling -----------------------------------------------------------

fn check_text(field: &str, v: &str, max: usize, errors: &mut Vec<FieldError>) {
    if let Err(reason) = crate::model::parse_text(v, max) {
        errors.push(FieldError::new(field, reason));
    }
}

fn check_source(src: &Source, errors: &mut Vec<FieldError>) {
    if src.subject.trim().is_empty() || src.subject.chars().count() > MAX_SUBJECT {
        errors.push(FieldError::new("/subject", "must be 1 to 998 characters"));
    }
    if src.subject.contains(['\r', '\n']) {
        errors.push(FieldError::new("/subject", "must be one line"));
    }
    if let Some(p) = &src.preheader
        && p.chars().count() > MAX_SUBJECT
    {
        errors.push(FieldError::new(
            "/preheader",
            "must be at most 998 characters",
        ));
    }
    if src.html.trim().is_empty() || src.html.len() > MAX_HTML {
        errors.push(FieldError::new("/html", "must be 1 byte to 100 KB"));
    }
    if let Some(t) = &src.text
        && t.len() > MAX_TEXT
    {
        errors.push(FieldError::new("/text", "must be at most 50 KB"));
    }
}

/// Keys that sign nothing real: for the sample render at save.
fn sample_keys() -> &'static LinkKeys {
    static K: OnceLock<LinkKeys> = OnceLock::new();
    K.get_or_init(LinkKeys::generate)
}

/// Compiles a source against the workspace's components; invalid → 422 with every
/// problem. Returns the compiled version and the components it used.
fn compile_source(
    src: &Source,
    all: &HashMap<String, Component>,
) -> AppResult<(Compiled, Vec<ComponentSnapshot>)> {
    let lookup = |name: &str| all.get(name).map(Component::def);
    let mut compiled = render::compile(src, &lookup).map_err(|problems| {
        AppError::Invalid(
            problems
                .into_iter()
                .map(|p| FieldError::new(p.field, p.reason).at(p.line, p.column))
                .collect(),
        )
    })?;
    // Render once with sample data and tracking on: a render error is a problem now,
    // and the size Gmail sees is known.
    let prepared = compiled.prepare().map_err(AppError::internal)?;
    let sample = prepared
        .render(
            render::sample_variables(),
            LinkContext {
                keys: sample_keys(),
                workspace_id: "ws_sample",
                message_id: "msg_00000000000000000000000000",
                base_url: "https://mailpilot.example",
                track: true,
            },
        )
        .map_err(|e| {
            let (line, column) = (e.line_no.map(|l| l as u32), e.column_no.map(|c| c as u32));
            AppError::Invalid(vec![
                FieldError::new("/html", format!("does not render: {}", e.reason()))
                    .at(line, column),
            ])
        })?;
    compiled.warnings.extend(render::size_warning(&sample.html));
    let mut used: Vec<ComponentSnapshot> = vec![];
    for name in used_components(src, all) {
        if let Some(c) = all.get(&name) {
            used.push(ComponentSnapshot {
                id: c.id.clone(),
                name: c.name.clone(),
                version: c.version,
                format: c.format,
                body: c.body.clone(),
                parameters: c.parameters.clone(),
            });
        }
    }
    Ok((compiled, used))
}

/// Names of the components a source uses, nested ones included.
fn used_components(src: &Source, all: &HashMap<String, Component>) -> Vec<String> {
    let lookup = |name: &str| all.get(name).map(Component::def);
    render::components::expand(&src.html, src.format, &lookup)
        .map(|e| e.used)
        .unwrap_or_default()
}

// ---- use cases ------------------------------------------------------------------------

pub async fn create(
    store: &dyn Store,
    ws: &str,
    input: CreateTemplate,
) -> AppResult<TemplateDetail> {
    let mut errors = vec![];
    check_text("/name", &input.name, 200, &mut errors);
    if let Some(d) = &input.description {
        check_text("/description", d, 2000, &mut errors);
    }
    let src = Source {
        format: input.format,
        subject: input.subject,
        preheader: input.preheader.filter(|p| !p.is_empty()),
        html: input.html,
        text: input.text.filter(|t| !t.is_empty()),
    };
    check_source(&src, &mut errors);
    if !errors.is_empty() {
        return Err(AppError::Invalid(errors));
    }
    let all = components::all_by_name(store, ws).await?;
    let (compiled, used) = compile_source(&src, &all)?;
    let now = Utc::now();
    let template = Template {
        id: Id::generate(Id::TEMPLATE),
        name: input.name.trim().to_string(),
        description: input.description.map(|d| d.trim().to_string()),
        latest_version: 1,
        published_version: if input.publish == Some(false) { 0 } else { 1 },
        created_at: now,
        updated_at: now,
    };
    let version = StoredVersion {
        template_id: template.id.clone(),
        version: 1,
        source: src,
        components: used,
        compiled,
        created_at: now,
    };
    store
        .transact(vec![
            TxAction::Put {
                item: to_item(&templates_pk(ws), &template.id, &template)?,
                cond: Some(Cond::ItemNotExists),
            },
            TxAction::Put {
                item: to_item(
                    &keys::template_versions(ws, &template.id),
                    &version_sk(1),
                    &version,
                )?,
                cond: Some(Cond::ItemNotExists),
            },
        ])
        .await?;
    Ok(TemplateDetail {
        template,
        latest: version.into(),
    })
}

pub async fn get(store: &dyn Store, ws: &str, id: &str) -> AppResult<Template> {
    if !Id::is_valid(Id::TEMPLATE, id) {
        return Err(AppError::NotFound);
    }
    let item = store
        .get(&Key::new(templates_pk(ws), id))
        .await?
        .ok_or(AppError::NotFound)?;
    from_item(item)
}

async fn stored_version(store: &dyn Store, ws: &str, id: &str, v: u32) -> AppResult<StoredVersion> {
    let item = store
        .get(&Key::new(keys::template_versions(ws, id), version_sk(v)))
        .await?
        .ok_or(AppError::NotFound)?;
    from_item(item)
}

pub async fn get_detail(store: &dyn Store, ws: &str, id: &str) -> AppResult<TemplateDetail> {
    let template = get(store, ws, id).await?;
    let latest = stored_version(store, ws, id, template.latest_version).await?;
    Ok(TemplateDetail {
        template,
        latest: latest.into(),
    })
}

pub async fn list(
    store: &dyn Store,
    ws: &str,
    limit: usize,
    cursor: Option<String>,
) -> AppResult<Paged<Template>> {
    super::page_of(store, &templates_pk(ws), limit, cursor).await
}

pub async fn update(
    store: &dyn Store,
    ws: &str,
    id: &str,
    patch: TemplatePatch,
) -> AppResult<TemplateDetail> {
    let template = get(store, ws, id).await?;
    let latest = stored_version(store, ws, id, template.latest_version).await?;
    let mut errors = vec![];
    let mut next = template.clone();
    if let Some(name) = &patch.name {
        check_text("/name", name, 200, &mut errors);
        next.name = name.trim().to_string();
    }
    match &patch.description {
        Some(Some(d)) => {
            check_text("/description", d, 2000, &mut errors);
            next.description = Some(d.trim().to_string());
        }
        Some(None) => next.description = None,
        None => {}
    }
    let content_changed = patch.format.is_some()
        || patch.subject.is_some()
        || patch.preheader.is_some()
        || patch.html.is_some()
        || patch.text.is_some();
    let mut src = latest.source.clone();
    if let Some(f) = patch.format {
        src.format = f;
    }
    if let Some(s) = patch.subject {
        src.subject = s;
    }
    if let Some(p) = patch.preheader {
        src.preheader = p.filter(|p| !p.is_empty());
    }
    if let Some(h) = patch.html {
        src.html = h;
    }
    if let Some(t) = patch.text {
        src.text = t.filter(|t| !t.is_empty());
    }
    if content_changed {
        check_source(&src, &mut errors);
    }
    if !errors.is_empty() {
        return Err(AppError::Invalid(errors));
    }
    let now = Utc::now();
    next.updated_at = now;
    let mut actions = vec![];
    let mut latest_out = latest;
    if content_changed {
        let all = components::all_by_name(store, ws).await?;
        let (compiled, used) = compile_source(&src, &all)?;
        let v = template.latest_version + 1;
        next.latest_version = v;
        let version = StoredVersion {
            template_id: id.to_string(),
            version: v,
            source: src,
            components: used,
            compiled,
            created_at: now,
        };
        actions.push(TxAction::Put {
            item: to_item(&keys::template_versions(ws, id), &version_sk(v), &version)?,
            cond: Some(Cond::ItemNotExists),
        });
        latest_out = version;
    }
    if patch.publish == Some(true) {
        next.published_version = next.latest_version;
    }
    actions.push(TxAction::Put {
        item: to_item(&templates_pk(ws), id, &next)?,
        // Two saves at once cannot both become version N+1.
        cond: Some(Cond::eq(
            "latest_version",
            crate::ports::store::val::n(template.latest_version as i64),
        )),
    });
    store.transact(actions).await.map_err(|e| {
        if e.is_condition_failed() {
            AppError::conflict(
                "/",
                "the template changed while this update ran; read it and try again",
            )
        } else {
            e.into()
        }
    })?;
    Ok(TemplateDetail {
        template: next,
        latest: latest_out.into(),
    })
}

pub async fn delete(store: &dyn Store, ws: &str, id: &str) -> AppResult<()> {
    get(store, ws, id).await?;
    store
        .delete(&Key::new(templates_pk(ws), id), Some(Cond::ItemExists))
        .await
        .map_err(|e| {
            if e.is_condition_failed() {
                AppError::NotFound
            } else {
                e.into()
            }
        })?;
    let pk = keys::template_versions(ws, id);
    loop {
        let page = store.query(Query::partition(&pk).limit(25)).await?;
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

pub async fn list_versions(
    store: &dyn Store,
    ws: &str,
    id: &str,
    limit: usize,
    cursor: Option<String>,
) -> AppResult<Paged<VersionSummary>> {
    get(store, ws, id).await?;
    let page = store
        .query(
            Query::partition(keys::template_versions(ws, id))
                .limit(limit)
                .cursor(cursor),
        )
        .await?;
    let data = page
        .items
        .into_iter()
        .map(|item| {
            let v: StoredVersion = from_item(item)?;
            Ok(VersionSummary {
                version: v.version,
                subject: v.source.subject,
                format: v.source.format,
                components: v.components.into_iter().map(|c| c.name).collect(),
                warnings: v.compiled.warnings,
                created_at: v.created_at,
            })
        })
        .collect::<AppResult<_>>()?;
    Ok(Paged {
        data,
        next_cursor: page.cursor,
    })
}

/// Parses a version number from a path or query parameter (not a number → not found).
pub fn parse_version(s: &str) -> Option<u32> {
    s.parse().ok().filter(|v| *v >= 1)
}

pub async fn get_version(
    store: &dyn Store,
    ws: &str,
    id: &str,
    v: u32,
) -> AppResult<TemplateVersion> {
    get(store, ws, id).await?;
    Ok(stored_version(store, ws, id, v).await?.into())
}

/// Moves the published pointer to an existing version.
pub async fn publish(
    store: &dyn Store,
    ws: &str,
    id: &str,
    req: PublishRequest,
) -> AppResult<Template> {
    let template = get(store, ws, id).await?;
    if req.version == 0 || req.version > template.latest_version {
        return Err(AppError::invalid(
            "/version",
            format!(
                "must be a version of this template (1 to {})",
                template.latest_version
            ),
        ));
    }
    let item = store
        .update(
            &Key::new(templates_pk(ws), id),
            crate::ports::store::Update::new()
                .set(
                    "published_version",
                    crate::ports::store::val::n(req.version as i64),
                )
                .set("updated_at", Value::S(Utc::now().to_rfc3339())),
            Some(Cond::ItemExists),
        )
        .await
        .map_err(|e| {
            if e.is_condition_failed() {
                AppError::NotFound
            } else {
                e.into()
            }
        })?;
    from_item(item)
}

/// Compares two versions (default: the published one, or the one before the newest,
/// against the newest).
pub async fn diff(
    store: &dyn Store,
    ws: &str,
    id: &str,
    from: Option<u32>,
    to: Option<u32>,
) -> AppResult<TemplateDiff> {
    let template = get(store, ws, id).await?;
    let to = to.unwrap_or(template.latest_version);
    let from = from.unwrap_or(
        if template.published_version >= 1 && template.published_version != to {
            template.published_version
        } else {
            to.saturating_sub(1).max(1)
        },
    );
    let a = stored_version(store, ws, id, from).await?;
    let b = stored_version(store, ws, id, to).await?;
    let (an, bn) = (format!("v{from}"), format!("v{to}"));
    let mut changes = vec![];
    let fields: [(&str, String, String); 5] = [
        (
            "format",
            format!("{:?}\n", a.source.format).to_lowercase(),
            format!("{:?}\n", b.source.format).to_lowercase(),
        ),
        (
            "subject",
            a.source.subject.clone(),
            b.source.subject.clone(),
        ),
        (
            "preheader",
            a.source.preheader.clone().unwrap_or_default(),
            b.source.preheader.clone().unwrap_or_default(),
        ),
        ("html", a.source.html.clone(), b.source.html.clone()),
        (
            "text",
            a.source.text.clone().unwrap_or_default(),
            b.source.text.clone().unwrap_or_default(),
        ),
    ];
    for (field, x, y) in fields {
        let d = render::diff::unified(&x, &y, &an, &bn);
        if !d.is_empty() {
            changes.push(FieldDiff {
                field: field.into(),
                diff: d,
            });
        }
    }
    let mut components = vec![];
    for c in &a.components {
        match b.components.iter().find(|d| d.name == c.name) {
            None => components.push(ComponentChange {
                name: c.name.clone(),
                change: "removed".into(),
            }),
            Some(d) if d != c => components.push(ComponentChange {
                name: c.name.clone(),
                change: "changed".into(),
            }),
            _ => {}
        }
    }
    for d in &b.components {
        if !a.components.iter().any(|c| c.name == d.name) {
            components.push(ComponentChange {
                name: d.name.clone(),
                change: "added".into(),
            });
        }
    }
    Ok(TemplateDiff {
        from,
        to,
        changes,
        components,
    })
}

// ---- rendering: the delivery engine's entry point ------------------------------------------

/// Whose variables fill the template.
pub enum Recipient<'a> {
    /// A stored contact: its fields (`email`, `first_name`, `last_name`, `time_zone`,
    /// `locale`, `external_id`, `id`) and `attributes`.
    Contact(&'a Contact),
    /// Variables given directly (`POST /v1/send` data, previews), same shape.
    Data(&'a Map<String, Json>),
}

/// What to render: a stored template (pinned version, or the published one when
/// `None`), or content given inline (rendered through the same pipeline).
pub enum Content<'a> {
    Stored {
        template_id: &'a str,
        version: Option<u32>,
    },
    Inline(&'a Source),
}

/// Everything one message's render needs besides the store.
pub struct MessageContext<'a> {
    pub workspace_id: &'a str,
    pub content: Content<'a>,
    pub recipient: Recipient<'a>,
    /// Campaign variables (`{{campaign.name}}`…), if any.
    pub campaign: Option<&'a Map<String, Json>>,
    /// Mailpilot's message id: it goes into every link token.
    pub message_id: &'a str,
    /// Rewrite links and add the open pixel (false: links stay as written).
    pub tracking: bool,
    /// The platform's public base URL (`MAILPILOT_PUBLIC_URL`, else the runner's
    /// address); the workspace's own `public_url` wins over it.
    pub public_url: &'a str,
    pub keys: &'a LinkKeys,
}

/// One message's rendered content: what `mime::MessageParts` needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedMessage {
    /// The template version rendered (`None` for inline content).
    pub version: Option<u32>,
    pub subject: String,
    /// Links rewritten and the pixel added when tracking is on.
    pub html: String,
    pub text: String,
    /// `{base}/u/{token}`: for the `List-Unsubscribe` header (one-click POST works on it).
    pub unsubscribe_url: String,
    /// Variables the template uses that the recipient did not have.
    pub missing_variables: Vec<String>,
}

impl RenderedMessage {
    /// The `List-Unsubscribe` targets for `mime::MessageParts`.
    pub fn list_unsubscribe(&self, mailto: Option<String>) -> ListUnsubscribe {
        ListUnsubscribe {
            url: self.unsubscribe_url.clone(),
            mailto,
        }
    }
}

/// Parsed versions, by `ws/template/version` (immutable, so never stale) and inline
/// content by hash. Bounded: when full, it starts over.
fn cache() -> &'static Mutex<HashMap<String, Arc<Prepared>>> {
    static C: OnceLock<Mutex<HashMap<String, Arc<Prepared>>>> = OnceLock::new();
    C.get_or_init(|| Mutex::new(HashMap::new()))
}

const CACHE_MAX: usize = 1024;

fn cached(key: &str) -> Option<Arc<Prepared>> {
    cache().lock().ok()?.get(key).cloned()
}

fn remember(key: String, p: Arc<Prepared>) {
    if let Ok(mut c) = cache().lock() {
        if c.len() >= CACHE_MAX {
            c.clear();
        }
        c.insert(key, p);
    }
}

/// The parsed form of a stored version, from the cache or the store.
pub async fn prepared_version(
    store: &dyn Store,
    ws: &str,
    id: &str,
    v: u32,
) -> AppResult<Arc<Prepared>> {
    let key = format!("{ws}/{id}/{v}");
    if let Some(p) = cached(&key) {
        return Ok(p);
    }
    let stored = stored_version(store, ws, id, v).await?;
    let p = Arc::new(stored.compiled.prepare().map_err(AppError::internal)?);
    remember(key, p.clone());
    Ok(p)
}

/// The parsed form of inline content, compiled against the workspace's components.
async fn prepared_inline(store: &dyn Store, ws: &str, src: &Source) -> AppResult<Arc<Prepared>> {
    let mut h = Sha256::new();
    for part in [
        format!("{:?}", src.format).as_str(),
        &src.subject,
        src.preheader.as_deref().unwrap_or("\u{0}"),
        &src.html,
        src.text.as_deref().unwrap_or("\u{0}"),
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    let key = format!("{ws}/inline/{}", hex::encode(h.finalize()));
    if let Some(p) = cached(&key) {
        return Ok(p);
    }
    let mut errors = vec![];
    check_source(src, &mut errors);
    if !errors.is_empty() {
        return Err(AppError::Invalid(errors));
    }
    let all = if render::components::find_uses(&src.html).is_ok_and(|u| u.is_empty()) {
        HashMap::new()
    } else {
        components::all_by_name(store, ws).await?
    };
    let lookup = |name: &str| -> Option<ComponentDef> { all.get(name).map(Component::def) };
    let compiled = render::compile(src, &lookup).map_err(|problems| {
        AppError::Invalid(
            problems
                .into_iter()
                .map(|p| FieldError::new(p.field, p.reason).at(p.line, p.column))
                .collect(),
        )
    })?;
    let p = Arc::new(compiled.prepare().map_err(AppError::internal)?);
    remember(key, p.clone());
    Ok(p)
}

/// A contact's variables: `id`, `email`, `first_name`, `last_name`, `time_zone`,
/// `locale`, `external_id` (when set) and `attributes`.
pub fn contact_variables(c: &Contact) -> Map<String, Json> {
    let mut m = Map::with_capacity(12);
    m.insert("id".into(), Json::String(c.id.clone()));
    m.insert("email".into(), Json::String(c.email.clone()));
    for (k, v) in [
        ("first_name", &c.first_name),
        ("last_name", &c.last_name),
        ("time_zone", &c.time_zone),
        ("locale", &c.locale),
        ("external_id", &c.external_id),
    ] {
        if let Some(v) = v {
            m.insert(k.into(), Json::String(v.clone()));
        }
    }
    m.insert("attributes".into(), Json::Object(c.attributes.clone()));
    m
}

/// The variables of one render: the recipient's, the workspace's and the campaign's.
pub fn variables(
    recipient: &Recipient<'_>,
    workspace: &Workspace,
    campaign: Option<&Map<String, Json>>,
) -> Map<String, Json> {
    let mut vars = match recipient {
        Recipient::Contact(c) => contact_variables(c),
        Recipient::Data(d) => (*d).clone(),
    };
    vars.insert(
        "workspace".into(),
        json!({
            "name": workspace.name,
            "company_name": workspace.company_name,
            "postal_address": workspace.postal_address,
        }),
    );
    if let Some(c) = campaign {
        vars.insert("campaign".into(), Json::Object(c.clone()));
    }
    vars
}

/// The base URL links use: the workspace's own, else the platform's.
pub fn base_url<'a>(workspace: &'a Workspace, platform: &'a str) -> &'a str {
    workspace
        .public_url
        .as_deref()
        .unwrap_or(platform)
        .trim_end_matches('/')
}

/// **The delivery engine's entry point.** Renders one message: subject, HTML (links
/// rewritten to `/t/c/{token}` and the `/t/o/{token}` pixel added when tracking is on),
/// text, the unsubscribe URL (`/u/{token}`) and the variables that were missing.
///
/// Reads the workspace (company name, postal address, public URL), the template when
/// no version is pinned (its published pointer), and the version itself only on a
/// cache miss. A template never published and not pinned is a 422.
pub async fn render_message(
    store: &dyn Store,
    m: &MessageContext<'_>,
) -> AppResult<RenderedMessage> {
    let workspace = workspaces::get_workspace(store, m.workspace_id).await?;
    let (prepared, version) = prepare(store, m.workspace_id, &m.content).await?;
    let vars = variables(&m.recipient, &workspace, m.campaign);
    render_prepared(
        &prepared,
        vars,
        m,
        base_url(&workspace, m.public_url),
        version,
    )
}

/// The parsed form of what a message renders from, and the version it is: the pinned
/// version, the published one when none is pinned, or `None` for inline content. What
/// `render_message` does before it renders; `POST /v1/send` calls it to check a send
/// (422s: `/template_id` never published, inline content that does not compile).
pub async fn prepare(
    store: &dyn Store,
    ws: &str,
    content: &Content<'_>,
) -> AppResult<(Arc<Prepared>, Option<u32>)> {
    match content {
        Content::Stored {
            template_id,
            version,
        } => {
            let v = match version {
                Some(v) => *v,
                None => {
                    let t = get(store, ws, template_id).await?;
                    if t.published_version == 0 {
                        return Err(AppError::invalid(
                            "/template_id",
                            "the template has no published version; publish one or pin a version",
                        ));
                    }
                    t.published_version
                }
            };
            Ok((prepared_version(store, ws, template_id, v).await?, Some(v)))
        }
        Content::Inline(src) => Ok((prepared_inline(store, ws, src).await?, None)),
    }
}

/// Renders an already prepared version (what `render_message` does after its reads;
/// the benchmark measures this).
pub fn render_prepared(
    prepared: &Prepared,
    vars: Map<String, Json>,
    m: &MessageContext<'_>,
    base_url: &str,
    version: Option<u32>,
) -> AppResult<RenderedMessage> {
    let r = prepared
        .render(
            vars,
            LinkContext {
                keys: m.keys,
                workspace_id: m.workspace_id,
                message_id: m.message_id,
                base_url,
                track: m.tracking,
            },
        )
        .map_err(|e| {
            AppError::invalid(
                "/data",
                format!(
                    "the template does not render for this recipient: {}",
                    e.reason()
                ),
            )
        })?;
    Ok(RenderedMessage {
        version,
        subject: r.subject,
        html: r.html,
        text: r.text,
        unsubscribe_url: r.unsubscribe_url,
        missing_variables: r.missing,
    })
}

/// `POST /v1/templates/{id}/preview`.
pub async fn preview(
    store: &dyn Store,
    ws: &str,
    id: &str,
    req: PreviewRequest,
    keys: &LinkKeys,
    public_url: &str,
) -> AppResult<Preview> {
    let template = get(store, ws, id).await?;
    let v = req.version.unwrap_or(template.latest_version);
    let stored = stored_version(store, ws, id, v)
        .await
        .map_err(|e| match e {
            AppError::NotFound => {
                AppError::invalid("/version", "this template has no such version")
            }
            other => other,
        })?;
    let contact = match &req.contact_id {
        Some(cid) => Some(
            super::contacts::get(store, ws, cid)
                .await
                .map_err(|e| match e {
                    AppError::NotFound => {
                        AppError::invalid("/contact_id", "no such contact in this workspace")
                    }
                    other => other,
                })?,
        ),
        None => None,
    };
    let workspace = workspaces::get_workspace(store, ws).await?;
    let mut vars = match (&contact, &req.data) {
        (Some(c), _) => variables(&Recipient::Contact(c), &workspace, None),
        (None, Some(d)) => variables(&Recipient::Data(d), &workspace, None),
        (None, None) => {
            let mut s = render::sample_variables();
            s.remove("workspace");
            variables(&Recipient::Data(&s), &workspace, None)
        }
    };
    if let (Some(_), Some(d)) = (&contact, &req.data) {
        for (k, v) in d {
            vars.insert(k.clone(), v.clone());
        }
    }
    if let Some(c) = &req.campaign {
        vars.insert("campaign".into(), Json::Object(c.clone()));
    }
    let prepared = prepared_version(store, ws, id, v).await?;
    let m = MessageContext {
        workspace_id: ws,
        content: Content::Stored {
            template_id: id,
            version: Some(v),
        },
        recipient: Recipient::Data(&Map::new()),
        campaign: None,
        message_id: "preview",
        tracking: req.tracking.unwrap_or(false),
        public_url,
        keys,
    };
    let r = render_prepared(
        &prepared,
        vars,
        &m,
        base_url(&workspace, public_url),
        Some(v),
    )?;
    let mut warnings = stored.compiled.warnings.clone();
    warnings.retain(|w| w.code != "html_too_large");
    warnings.extend(render::size_warning(&r.html));
    Ok(Preview {
        version: v,
        subject: r.subject,
        html: r.html,
        text: r.text,
        missing_variables: r.missing_variables,
        warnings,
    })
}

// ---- starter content ------------------------------------------------------------------------

/// Seeds a new workspace with the starter components and templates
/// (see `starter.rs`). Runs once, right after the workspace is created.
pub async fn seed_starter_content(store: &dyn Store, ws: &str) -> AppResult<()> {
    for c in super::starter::components() {
        match components::create(store, ws, c).await {
            Ok(_) => {}
            // Already seeded (a retried creation): keep what is there.
            Err(AppError::Conflict { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    for t in super::starter::templates() {
        create(store, ws, t).await?;
    }
    Ok(())
}
