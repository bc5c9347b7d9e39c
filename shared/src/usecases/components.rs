//! Components: named reusable blocks (header, footer, button, product card…) with
//! declared parameters, used in templates as `{{> name key=value}}`. A component's name
//! is unique in its workspace (a name item written in the same transaction). Changing a
//! component changes the templates saved after it: each template version keeps a
//! snapshot of the components it used, so nothing already saved (or sending) moves.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};
use utoipa::ToSchema;

use super::{Paged, from_item, page_of, to_item};
use crate::error::{AppError, AppResult, FieldError};
use crate::keys;
use crate::model::Id;
use crate::model::links::LinkKeys;
use crate::ports::store::{Cond, Key, Query, Store, TxAction};
use crate::render::components::{
    self, Arg, ComponentDef, Format, ParamDef, check_param_name, check_value,
};
use crate::render::html::{Token, tokenize};
use crate::render::{self, LinkContext, Source};

/// Longest component body, in bytes.
pub const MAX_BODY: usize = 64 * 1024;
/// Most parameters one component declares.
pub const MAX_PARAMS: usize = 32;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Component {
    pub id: String,
    /// Used as `{{> name …}}`: 1 to 64 of `[a-z0-9_-]`, starting with a letter or digit.
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub format: Format,
    /// HTML (or an MJML fragment) with Handlebars; parameters appear as `{{name}}`.
    pub body: String,
    pub parameters: Vec<ParamDef>,
    /// Goes up by one on every change; template versions record the one they used.
    pub version: u32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Component {
    pub fn def(&self) -> ComponentDef {
        ComponentDef {
            name: self.name.clone(),
            format: self.format,
            body: self.body.clone(),
            parameters: self.parameters.clone(),
        }
    }
}

/// `POST /v1/components` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateComponent {
    #[schema(pattern = r"^[a-z0-9][a-z0-9_-]{0,63}$")]
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
    #[schema(max_length = 65536)]
    pub body: String,
    #[serde(default)]
    #[schema(max_items = 32)]
    pub parameters: Vec<ParamDef>,
}

/// `PATCH /v1/components/{id}` body: only the fields present change.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct ComponentPatch {
    #[serde(default)]
    #[schema(pattern = r"^[a-z0-9][a-z0-9_-]{0,63}$")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "crate::serde_util::double_option")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 2000, pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x1f\x7f-\x9f\s][^\x00-\x1f\x7f-\x9f]*$")]
    pub description: Option<Option<String>>,
    #[serde(default)]
    pub format: Option<Format>,
    #[serde(default)]
    #[schema(max_length = 65536)]
    pub body: Option<String>,
    #[serde(default)]
    #[schema(max_items = 32)]
    pub parameters: Option<Vec<ParamDef>>,
}

/// `POST /v1/components/{id}/preview` body.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct ComponentPreviewRequest {
    /// Parameter values (literals), checked against the declarations.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub params: Map<String, Json>,
    /// Other variables the body uses (sample values are used for the rest).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub data: Map<String, Json>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ComponentPreview {
    pub html: String,
    pub missing_variables: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct NamePointer {
    component_id: String,
}

fn components_pk(ws: &str) -> String {
    keys::ws(ws, keys::COMPONENTS)
}

fn names_pk(ws: &str) -> String {
    keys::ws(ws, keys::COMPONENT_NAMES)
}

fn check_name(name: &str) -> Result<(), &'static str> {
    let ok = (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err("must be 1 to 64 of a-z, 0-9, _ and -, starting with a letter or digit")
    }
}

fn check_parameters(params: &[ParamDef], errors: &mut Vec<FieldError>) {
    if params.len() > MAX_PARAMS {
        errors.push(FieldError::new(
            "/parameters",
            format!("at most {MAX_PARAMS} parameters"),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for (i, p) in params.iter().enumerate() {
        if let Err(reason) = check_param_name(&p.name) {
            errors.push(FieldError::new(format!("/parameters/{i}/name"), reason));
        }
        if !seen.insert(p.name.as_str()) {
            errors.push(FieldError::new(
                format!("/parameters/{i}/name"),
                "is declared twice",
            ));
        }
        if let Some(d) = &p.default
            && let Err(reason) = check_value(p.kind, d)
        {
            errors.push(FieldError::new(format!("/parameters/{i}/default"), reason));
        }
    }
}

fn check_body(body: &str, errors: &mut Vec<FieldError>) {
    if body.len() > MAX_BODY {
        errors.push(FieldError::new("/body", "must be at most 64 KB"));
        return;
    }
    if let Err(e) = handlebars::Template::compile(body) {
        let (line, column) = e
            .pos()
            .map_or((None, None), |(l, c)| (Some(l as u32), Some(c as u32)));
        errors.push(
            FieldError::new("/body", format!("template syntax: {}", e.reason())).at(line, column),
        );
    }
    if let Err(e) = components::find_uses(body) {
        let (line, column) = render::html::line_col(body, e.offset);
        errors.push(FieldError::new("/body", e.message).at(Some(line), Some(column)));
    }
}

fn check_description(d: &str, errors: &mut Vec<FieldError>) {
    if let Err(reason) = crate::model::parse_text(d, 2000) {
        errors.push(FieldError::new("/description", reason));
    }
}

fn name_taken() -> AppError {
    AppError::conflict(
        "/name",
        "a component with this name exists in the workspace",
    )
}

pub async fn create(store: &dyn Store, ws: &str, input: CreateComponent) -> AppResult<Component> {
    let mut errors = vec![];
    if let Err(reason) = check_name(&input.name) {
        errors.push(FieldError::new("/name", reason));
    }
    if let Some(d) = &input.description {
        check_description(d, &mut errors);
    }
    check_body(&input.body, &mut errors);
    check_parameters(&input.parameters, &mut errors);
    if !errors.is_empty() {
        return Err(AppError::Invalid(errors));
    }
    let now = Utc::now();
    let c = Component {
        id: Id::generate(Id::COMPONENT),
        name: input.name,
        description: input.description.map(|d| d.trim().to_string()),
        format: input.format,
        body: input.body,
        parameters: input.parameters,
        version: 1,
        created_at: now,
        updated_at: now,
    };
    store
        .transact(vec![
            TxAction::Put {
                item: to_item(&components_pk(ws), &c.id, &c)?,
                cond: Some(Cond::ItemNotExists),
            },
            TxAction::Put {
                item: to_item(
                    &names_pk(ws),
                    &c.name,
                    &NamePointer {
                        component_id: c.id.clone(),
                    },
                )?,
                cond: Some(Cond::ItemNotExists),
            },
        ])
        .await
        .map_err(|e| {
            if e.is_condition_failed() {
                name_taken()
            } else {
                e.into()
            }
        })?;
    Ok(c)
}

pub async fn get(store: &dyn Store, ws: &str, id: &str) -> AppResult<Component> {
    if !Id::is_valid(Id::COMPONENT, id) {
        return Err(AppError::NotFound);
    }
    let item = store
        .get(&Key::new(components_pk(ws), id))
        .await?
        .ok_or(AppError::NotFound)?;
    from_item(item)
}

pub async fn list(
    store: &dyn Store,
    ws: &str,
    limit: usize,
    cursor: Option<String>,
) -> AppResult<Paged<Component>> {
    page_of(store, &components_pk(ws), limit, cursor).await
}

/// Every component of the workspace by name (what a template save expands from).
pub async fn all_by_name(store: &dyn Store, ws: &str) -> AppResult<HashMap<String, Component>> {
    let mut out = HashMap::new();
    let mut cursor = None;
    loop {
        let page = store
            .query(
                Query::partition(components_pk(ws))
                    .limit(200)
                    .cursor(cursor),
            )
            .await?;
        for item in page.items {
            let c: Component = from_item(item)?;
            out.insert(c.name.clone(), c);
        }
        match page.cursor {
            Some(c) => cursor = Some(c),
            None => return Ok(out),
        }
    }
}

pub async fn patch(
    store: &dyn Store,
    ws: &str,
    id: &str,
    patch: ComponentPatch,
) -> AppResult<Component> {
    let old = get(store, ws, id).await?;
    let mut errors = vec![];
    let mut c = old.clone();
    if let Some(name) = patch.name {
        if let Err(reason) = check_name(&name) {
            errors.push(FieldError::new("/name", reason));
        }
        c.name = name;
    }
    match patch.description {
        Some(Some(d)) => {
            check_description(&d, &mut errors);
            c.description = Some(d.trim().to_string());
        }
        Some(None) => c.description = None,
        None => {}
    }
    if let Some(f) = patch.format {
        c.format = f;
    }
    if let Some(body) = patch.body {
        check_body(&body, &mut errors);
        c.body = body;
    }
    if let Some(params) = patch.parameters {
        check_parameters(&params, &mut errors);
        c.parameters = params;
    }
    if !errors.is_empty() {
        return Err(AppError::Invalid(errors));
    }
    c.version = old.version + 1;
    c.updated_at = Utc::now();
    let mut actions = vec![TxAction::Put {
        item: to_item(&components_pk(ws), &c.id, &c)?,
        // Lost updates are refused: the version read is the version replaced.
        cond: Some(Cond::eq(
            "version",
            crate::ports::store::val::n(old.version as i64),
        )),
    }];
    if c.name != old.name {
        actions.push(TxAction::Delete {
            key: Key::new(names_pk(ws), &old.name),
            cond: None,
        });
        actions.push(TxAction::Put {
            item: to_item(
                &names_pk(ws),
                &c.name,
                &NamePointer {
                    component_id: c.id.clone(),
                },
            )?,
            cond: Some(Cond::ItemNotExists),
        });
    }
    match store.transact(actions).await {
        Ok(()) => Ok(c),
        Err(e) if e.is_condition_failed() => {
            // Either the name is taken or someone changed the component meanwhile.
            let now = get(store, ws, id).await?;
            if now.version != old.version {
                Err(AppError::conflict(
                    "/",
                    "the component changed while this update ran; read it and try again",
                ))
            } else {
                Err(name_taken())
            }
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn delete(store: &dyn Store, ws: &str, id: &str) -> AppResult<()> {
    let c = get(store, ws, id).await?;
    store
        .transact(vec![
            TxAction::Delete {
                key: Key::new(components_pk(ws), id),
                cond: Some(Cond::ItemExists),
            },
            TxAction::Delete {
                key: Key::new(names_pk(ws), &c.name),
                cond: None,
            },
        ])
        .await
        .map_err(|e| {
            if e.is_condition_failed() {
                AppError::NotFound
            } else {
                e.into()
            }
        })
}

/// Wraps an MJML fragment in the smallest document that compiles.
fn mjml_document(fragment: &str) -> String {
    let first = tokenize(fragment).into_iter().find_map(|t| match t {
        Token::Tag(t) if !t.closing => Some(t.name),
        _ => None,
    });
    let (open, close) = match first.as_deref() {
        Some("mjml") => ("", ""),
        Some("mj-body") => ("<mjml>", "</mjml>"),
        Some("mj-section" | "mj-wrapper" | "mj-hero") => ("<mjml><mj-body>", "</mj-body></mjml>"),
        Some("mj-column" | "mj-group") => (
            "<mjml><mj-body><mj-section>",
            "</mj-section></mj-body></mjml>",
        ),
        _ => (
            "<mjml><mj-body><mj-section><mj-column>",
            "</mj-column></mj-section></mj-body></mjml>",
        ),
    };
    format!("{open}{fragment}{close}")
}

/// Renders a component with sample parameters: a missing required parameter (or one of
/// the wrong type) is a 422 naming `/params/<name>`.
pub async fn preview(
    store: &dyn Store,
    ws: &str,
    id: &str,
    req: ComponentPreviewRequest,
    keys: &LinkKeys,
    base_url: &str,
) -> AppResult<ComponentPreview> {
    let c = get(store, ws, id).await?;
    let mut errors = vec![];
    for key in req.params.keys() {
        if !c.parameters.iter().any(|p| &p.name == key) {
            errors.push(FieldError::new(
                format!("/params/{key}"),
                format!("is not a parameter of {}", c.name),
            ));
        }
    }
    for p in &c.parameters {
        match req.params.get(&p.name) {
            Some(v) => {
                if let Err(reason) = check_value(p.kind, v) {
                    errors.push(FieldError::new(format!("/params/{}", p.name), reason));
                }
            }
            None if p.required && p.default.is_none() => errors.push(FieldError::new(
                format!("/params/{}", p.name),
                "is required",
            )),
            None => {}
        }
    }
    if !errors.is_empty() {
        return Err(AppError::Invalid(errors));
    }
    let args: BTreeMap<String, Arg> = req
        .params
        .into_iter()
        .map(|(k, v)| (k, Arg::Literal(v)))
        .collect();
    let mut call = format!("{{{{> {}", c.name);
    for (k, v) in &args {
        if let Arg::Literal(v) = v {
            call.push_str(&format!(" {k}={v}"));
        }
    }
    call.push_str("}}");
    let html = match c.format {
        Format::Handlebars => call,
        Format::Mjml => mjml_document(&call),
    };
    let all = all_by_name(store, ws).await?;
    let lookup = |name: &str| all.get(name).map(Component::def);
    let compiled = render::compile(
        &Source {
            format: c.format,
            subject: String::new(),
            preheader: None,
            html,
            text: Some(String::new()),
        },
        &lookup,
    )
    .map_err(|problems| {
        AppError::Invalid(
            problems
                .into_iter()
                .map(|p| FieldError::new("/body", p.reason))
                .collect(),
        )
    })?;
    let prepared = compiled.prepare().map_err(AppError::internal)?;
    let mut vars = render::sample_variables();
    vars.extend(req.data);
    let rendered = prepared
        .render(
            vars,
            LinkContext {
                keys,
                workspace_id: ws,
                message_id: "preview",
                base_url,
                track: false,
            },
        )
        .map_err(|e| AppError::invalid("/data", format!("the component does not render: {e}")))?;
    Ok(ComponentPreview {
        html: rendered.html,
        missing_variables: rendered.missing,
    })
}
