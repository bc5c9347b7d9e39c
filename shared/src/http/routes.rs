//! Route handlers: each one reads the request, calls one use case, and writes the
//! answer. Every route carries its OpenAPI description; error answers are added to
//! every operation by `openapi::ApiDoc`.

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::extract::{ApiJson, ListQuery, Pagination, PathPair, PathParam};
use crate::error::{AppError, AppResult};
use crate::model::{ContactStatus, SuppressionReason};
use crate::usecases::components::{
    self, Component, ComponentPatch, ComponentPreview, ComponentPreviewRequest, CreateComponent,
};
use crate::usecases::contacts::{
    Contact, ContactCreate, ContactFilter, ContactInput, ContactUpsert,
};
use crate::usecases::jobs::{self, Job};
use crate::usecases::lists::{
    self, CreateList, List, ListPatch, Member, MembersChange, MembersChanged,
};
use crate::usecases::suppressions::{self, AddSuppression, Suppression};
use crate::usecases::templates::{
    self, CreateTemplate, Preview, PreviewRequest, PublishRequest, Template, TemplateDetail,
    TemplateDiff, TemplatePatch, TemplateVersion, VersionSummary,
};
use crate::usecases::workspaces::{
    self, ApiKey, CreateApiKey, CreateWorkspace, CreatedApiKey, CreatedWorkspace, Principal,
    Workspace, WorkspacePatch,
};
use crate::usecases::{Paged, contacts};

macro_rules! page_schema {
    ($name:ident, $t:ty) => {
        /// A page of results and the cursor to the next page (`null` on the last).
        #[derive(Debug, Serialize, Deserialize, ToSchema)]
        pub struct $name {
            pub data: Vec<$t>,
            pub next_cursor: Option<String>,
        }
        impl From<Paged<$t>> for $name {
            fn from(p: Paged<$t>) -> Self {
                Self {
                    data: p.data,
                    next_cursor: p.next_cursor,
                }
            }
        }
    };
}
page_schema!(ContactPage, Contact);
page_schema!(ListPage, List);
page_schema!(MemberPage, Member);
page_schema!(SuppressionPage, Suppression);
page_schema!(ApiKeyPage, ApiKey);
page_schema!(JobPage, Job);
page_schema!(TemplatePage, Template);
page_schema!(VersionPage, VersionSummary);
page_schema!(ComponentPage, Component);

pub(crate) fn created<T: Serialize>(location: String, body: T) -> Response {
    let mut res = (StatusCode::CREATED, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    res
}

/// Percent-encodes a value for one path segment (RFC 3986 unreserved characters and
/// `@` stay as they are), so a `Location` built from user data points where it says.
fn path_segment(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn ws(p: &Principal) -> &str {
    &p.workspace_id
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct Health {
    pub status: String,
}

/// Liveness.
#[utoipa::path(get, path = "/health", tag = "meta", security(()), responses((status = 200, body = Health)))]
pub async fn health() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

pub async fn not_found() -> AppError {
    AppError::NotFound
}

// ---- workspaces -------------------------------------------------------------------

/// Create a workspace and its first API key (admin token required).
#[utoipa::path(post, path = "/v1/workspaces", tag = "workspaces", request_body = CreateWorkspace,
    responses((status = 201, body = CreatedWorkspace)))]
pub async fn create_workspace(
    State(s): State<AppState>,
    ApiJson(input): ApiJson<CreateWorkspace>,
) -> AppResult<Response> {
    let created = workspaces::create_workspace(s.store(), input).await?;
    if s.config.providers.outbox_root().is_some() {
        // The local runner: the new workspace can send to the outbox at once.
        crate::usecases::senders::ensure_local_sender(s.store(), &created.workspace_id).await?;
    }
    Ok(created_ws(created))
}

fn created_ws(c: CreatedWorkspace) -> Response {
    created("/v1/workspace".into(), c)
}

/// The caller's workspace.
#[utoipa::path(get, path = "/v1/workspace", tag = "workspaces", responses((status = 200, body = Workspace)))]
pub async fn get_workspace(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
) -> AppResult<Json<Workspace>> {
    Ok(Json(workspaces::get_workspace(s.store(), ws(&p)).await?))
}

/// Update the workspace's name and sending identity.
#[utoipa::path(patch, path = "/v1/workspace", tag = "workspaces", request_body = WorkspacePatch,
    responses((status = 200, body = Workspace)))]
pub async fn patch_workspace(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    ApiJson(patch): ApiJson<WorkspacePatch>,
) -> AppResult<Json<Workspace>> {
    Ok(Json(
        workspaces::patch_workspace(s.store(), ws(&p), patch).await?,
    ))
}

/// Delete every item of the workspace except the workspace itself, its API keys and
/// this job. Answers with the job to poll.
#[utoipa::path(delete, path = "/v1/workspace/data", tag = "workspaces", responses((status = 202, body = Job)))]
pub async fn delete_workspace_data(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
) -> AppResult<Response> {
    let job = jobs::start_delete_workspace_data(s.store(), ws(&p)).await?;
    s.drive_job(ws(&p), &job.id);
    let mut res = (StatusCode::ACCEPTED, Json(&job)).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/v1/jobs/{}", job.id)) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    Ok(res)
}

// ---- jobs -------------------------------------------------------------------------

/// The workspace's jobs.
#[utoipa::path(get, path = "/v1/jobs", tag = "jobs", params(Pagination), responses((status = 200, body = JobPage)))]
pub async fn list_jobs(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    q: ListQuery,
) -> AppResult<Json<JobPage>> {
    Ok(Json(
        jobs::list(s.store(), ws(&p), q.limit, q.cursor)
            .await?
            .into(),
    ))
}

/// One job, with its progress.
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs", params(("id" = String, Path)),
    responses((status = 200, body = Job)))]
pub async fn get_job(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam(id): PathParam,
) -> AppResult<Json<Job>> {
    let job = jobs::get(s.store(), ws(&p), &id).await?;
    if s.config.jobs == super::JobDriver::OnPoll && job.status == jobs::JobStatus::Running {
        return Ok(Json(jobs::advance(s.store(), ws(&p), &id, 20).await?));
    }
    Ok(Json(job))
}

// ---- API keys ---------------------------------------------------------------------

/// Create an API key; the key is shown in this answer only.
#[utoipa::path(post, path = "/v1/api-keys", tag = "api-keys", request_body = CreateApiKey,
    responses((status = 201, body = CreatedApiKey)))]
pub async fn create_api_key(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    ApiJson(input): ApiJson<CreateApiKey>,
) -> AppResult<Response> {
    let key = workspaces::create_api_key(s.store(), ws(&p), input).await?;
    Ok(created(format!("/v1/api-keys/{}", key.id), key))
}

/// The workspace's API keys (never the secrets).
#[utoipa::path(get, path = "/v1/api-keys", tag = "api-keys", params(Pagination), responses((status = 200, body = ApiKeyPage)))]
pub async fn list_api_keys(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    q: ListQuery,
) -> AppResult<Json<ApiKeyPage>> {
    Ok(Json(
        workspaces::list_api_keys(s.store(), ws(&p), q.limit, q.cursor)
            .await?
            .into(),
    ))
}

/// One API key.
#[utoipa::path(get, path = "/v1/api-keys/{id}", tag = "api-keys", params(("id" = String, Path)),
    responses((status = 200, body = ApiKey)))]
pub async fn get_api_key(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam(id): PathParam,
) -> AppResult<Json<ApiKey>> {
    Ok(Json(workspaces::get_api_key(s.store(), ws(&p), &id).await?))
}

/// Revoke an API key: it stops working at once.
#[utoipa::path(delete, path = "/v1/api-keys/{id}", tag = "api-keys", params(("id" = String, Path)),
    responses((status = 204)))]
pub async fn revoke_api_key(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam(id): PathParam,
) -> AppResult<StatusCode> {
    if id == p.key_id {
        return Err(AppError::conflict(
            "id",
            "this is the key making the request; revoke it with another key",
        ));
    }
    workspaces::revoke_api_key(s.store(), ws(&p), &id).await?;
    s.keys.clear();
    Ok(StatusCode::NO_CONTENT)
}

// ---- contacts ---------------------------------------------------------------------

/// Create a contact (a duplicate email is 409).
#[utoipa::path(post, path = "/v1/contacts", tag = "contacts", request_body = ContactCreate,
    responses((status = 201, body = Contact)))]
pub async fn create_contact(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    ApiJson(input): ApiJson<ContactCreate>,
) -> AppResult<Response> {
    let c = contacts::create(s.store(), ws(&p), input.into()).await?;
    Ok(created(format!("/v1/contacts/{}", c.id), c))
}

/// List contacts, optionally a list's members or those with a status.
#[utoipa::path(get, path = "/v1/contacts", tag = "contacts",
    params(Pagination,
        ("list_id" = Option<String>, Query, description = "Only members of this list"),
        ("status" = Option<ContactStatus>, Query, description = "Only contacts with this status")),
    responses((status = 200, body = ContactPage)))]
pub async fn list_contacts(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    q: ListQuery,
) -> AppResult<Json<ContactPage>> {
    let status = match q.params.get("status") {
        None => None,
        Some(v) => Some(
            serde_json::from_value::<ContactStatus>(serde_json::Value::String(v.clone())).map_err(
                |_| {
                    AppError::bad_request(
                        "status",
                        "must be active, unsubscribed, bounced, complained or suppressed",
                    )
                },
            )?,
        ),
    };
    let filter = ContactFilter {
        list_id: q.params.get("list_id").cloned(),
        status,
    };
    Ok(Json(
        contacts::list(s.store(), ws(&p), &filter, q.limit, q.cursor)
            .await?
            .into(),
    ))
}

/// One contact.
#[utoipa::path(get, path = "/v1/contacts/{id}", tag = "contacts", params(("id" = String, Path)),
    responses((status = 200, body = Contact)))]
pub async fn get_contact(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam(id): PathParam,
) -> AppResult<Json<Contact>> {
    Ok(Json(contacts::get(s.store(), ws(&p), &id).await?))
}

/// Change some of a contact's fields (`null` clears one).
#[utoipa::path(patch, path = "/v1/contacts/{id}", tag = "contacts", params(("id" = String, Path)),
    request_body = ContactInput, responses((status = 200, body = Contact)))]
pub async fn patch_contact(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam(id): PathParam,
    ApiJson(input): ApiJson<ContactInput>,
) -> AppResult<Json<Contact>> {
    Ok(Json(contacts::patch(s.store(), ws(&p), &id, input).await?))
}

/// Delete a contact (its suppression, if any, stays).
#[utoipa::path(delete, path = "/v1/contacts/{id}", tag = "contacts", params(("id" = String, Path)),
    responses((status = 204)))]
pub async fn delete_contact(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam(id): PathParam,
) -> AppResult<StatusCode> {
    contacts::delete(s.store(), ws(&p), &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Look a contact up by email.
#[utoipa::path(get, path = "/v1/contacts/by-email/{email}", tag = "contacts", params(("email" = String, Path, format = Email)),
    responses((status = 200, body = Contact)))]
pub async fn get_contact_by_email(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam(email): PathParam,
) -> AppResult<Json<Contact>> {
    Ok(Json(
        contacts::get_by_email(s.store(), ws(&p), &email).await?,
    ))
}

/// Create or update the contact with this email.
#[utoipa::path(put, path = "/v1/contacts/by-email/{email}", tag = "contacts", params(("email" = String, Path, format = Email)),
    request_body = ContactUpsert,
    responses((status = 200, body = Contact, description = "Updated"), (status = 201, body = Contact, description = "Created")))]
pub async fn upsert_contact_by_email(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam(email): PathParam,
    ApiJson(input): ApiJson<ContactUpsert>,
) -> AppResult<Response> {
    let (c, was_created) = contacts::upsert_by_email(s.store(), ws(&p), &email, input).await?;
    if was_created {
        Ok(created(format!("/v1/contacts/{}", c.id), c))
    } else {
        Ok(Json(c).into_response())
    }
}

/// Look a contact up by the id in your own system.
#[utoipa::path(get, path = "/v1/contacts/by-external-id/{external_id}", tag = "contacts",
    params(("external_id" = String, Path)), responses((status = 200, body = Contact)))]
pub async fn get_contact_by_external_id(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam(ext): PathParam,
) -> AppResult<Json<Contact>> {
    Ok(Json(
        contacts::get_by_external_id(s.store(), ws(&p), &ext).await?,
    ))
}

// ---- lists ------------------------------------------------------------------------

/// Create a list.
#[utoipa::path(post, path = "/v1/lists", tag = "lists", request_body = CreateList, responses((status = 201, body = List)))]
pub async fn create_list(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    ApiJson(input): ApiJson<CreateList>,
) -> AppResult<Response> {
    let l = lists::create(s.store(), ws(&p), input).await?;
    Ok(created(format!("/v1/lists/{}", l.id), l))
}

/// The workspace's lists.
#[utoipa::path(get, path = "/v1/lists", tag = "lists", params(Pagination), responses((status = 200, body = ListPage)))]
pub async fn list_lists(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    q: ListQuery,
) -> AppResult<Json<ListPage>> {
    Ok(Json(
        lists::list(s.store(), ws(&p), q.limit, q.cursor)
            .await?
            .into(),
    ))
}

/// One list, with its member count.
#[utoipa::path(get, path = "/v1/lists/{id}", tag = "lists", params(("id" = String, Path)), responses((status = 200, body = List)))]
pub async fn get_list(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam(id): PathParam,
) -> AppResult<Json<List>> {
    Ok(Json(lists::get(s.store(), ws(&p), &id).await?))
}

/// Rename a list or change its settings.
#[utoipa::path(patch, path = "/v1/lists/{id}", tag = "lists", params(("id" = String, Path)), request_body = ListPatch,
    responses((status = 200, body = List)))]
pub async fn patch_list(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam(id): PathParam,
    ApiJson(patch): ApiJson<ListPatch>,
) -> AppResult<Json<List>> {
    Ok(Json(lists::patch(s.store(), ws(&p), &id, patch).await?))
}

/// Delete a list and its memberships (the contacts stay).
#[utoipa::path(delete, path = "/v1/lists/{id}", tag = "lists", params(("id" = String, Path)), responses((status = 204)))]
pub async fn delete_list(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam(id): PathParam,
) -> AppResult<StatusCode> {
    lists::delete(s.store(), ws(&p), &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A list's members, paged.
#[utoipa::path(get, path = "/v1/lists/{id}/members", tag = "lists", params(("id" = String, Path), Pagination),
    responses((status = 200, body = MemberPage)))]
pub async fn list_members(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam(id): PathParam,
    q: ListQuery,
) -> AppResult<Json<MemberPage>> {
    Ok(Json(
        lists::members(s.store(), ws(&p), &id, q.limit, q.cursor)
            .await?
            .into(),
    ))
}

/// Add up to 1,000 contacts to a list, with a result per contact.
#[utoipa::path(post, path = "/v1/lists/{id}/members", tag = "lists", params(("id" = String, Path)),
    request_body = MembersChange, responses((status = 200, body = MembersChanged)))]
pub async fn add_members(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam(id): PathParam,
    ApiJson(change): ApiJson<MembersChange>,
) -> AppResult<Json<MembersChanged>> {
    Ok(Json(
        lists::add_members(s.store(), ws(&p), &id, change).await?,
    ))
}

/// Remove up to 1,000 contacts from a list, with a result per contact.
#[utoipa::path(post, path = "/v1/lists/{id}/members/remove", tag = "lists", params(("id" = String, Path)),
    request_body = MembersChange, responses((status = 200, body = MembersChanged)))]
pub async fn remove_members(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam(id): PathParam,
    ApiJson(change): ApiJson<MembersChange>,
) -> AppResult<Json<MembersChanged>> {
    Ok(Json(
        lists::remove_members(s.store(), ws(&p), &id, change).await?,
    ))
}

// ---- suppressions -----------------------------------------------------------------

/// Suppress an address (already suppressed: 200 with the existing suppression).
#[utoipa::path(post, path = "/v1/suppressions", tag = "suppressions", request_body = AddSuppression,
    responses((status = 201, body = Suppression, description = "Suppressed"), (status = 200, body = Suppression, description = "Already suppressed")))]
pub async fn add_suppression(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    ApiJson(input): ApiJson<AddSuppression>,
) -> AppResult<Response> {
    let (sup, new) = suppressions::add(s.store(), ws(&p), input).await?;
    if new {
        Ok(created(
            format!("/v1/suppressions/{}", path_segment(&sup.email)),
            sup,
        ))
    } else {
        Ok(Json(sup).into_response())
    }
}

/// Suppressed addresses, optionally of one reason.
#[utoipa::path(get, path = "/v1/suppressions", tag = "suppressions",
    params(Pagination, ("reason" = Option<SuppressionReason>, Query)), responses((status = 200, body = SuppressionPage)))]
pub async fn list_suppressions(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    q: ListQuery,
) -> AppResult<Json<SuppressionPage>> {
    let reason = match q.params.get("reason") {
        None => None,
        Some(v) => Some(
            serde_json::from_value::<SuppressionReason>(serde_json::Value::String(v.clone()))
                .map_err(|_| {
                    AppError::bad_request(
                        "reason",
                        "must be unsubscribed, hard_bounce, complaint or manual",
                    )
                })?,
        ),
    };
    Ok(Json(
        suppressions::list(s.store(), ws(&p), reason, q.limit, q.cursor)
            .await?
            .into(),
    ))
}

/// One address's suppression.
#[utoipa::path(get, path = "/v1/suppressions/{email}", tag = "suppressions", params(("email" = String, Path, format = Email)),
    responses((status = 200, body = Suppression)))]
pub async fn get_suppression(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam(email): PathParam,
) -> AppResult<Json<Suppression>> {
    Ok(Json(suppressions::get(s.store(), ws(&p), &email).await?))
}

/// Lift an address's suppression.
#[utoipa::path(delete, path = "/v1/suppressions/{email}", tag = "suppressions", params(("email" = String, Path, format = Email)),
    responses((status = 204)))]
pub async fn remove_suppression(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam(email): PathParam,
) -> AppResult<StatusCode> {
    suppressions::remove(s.store(), ws(&p), &email).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- templates ----------------------------------------------------------------------

/// The base URL links use when the workspace has none of its own: the configured one,
/// else (Lambda without `MAILPILOT_PUBLIC_URL`) https on the request's host.
pub(crate) fn platform_url(s: &AppState, headers: &axum::http::HeaderMap) -> String {
    if let Some(u) = &s.config.public_url {
        return u.trim_end_matches('/').to_string();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or("localhost");
    format!("https://{host}")
}

/// Create a template; its first version is published unless `publish` is false.
#[utoipa::path(post, path = "/v1/templates", tag = "templates", request_body = CreateTemplate,
    responses((status = 201, body = TemplateDetail)))]
pub async fn create_template(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    ApiJson(input): ApiJson<CreateTemplate>,
) -> AppResult<Response> {
    let t = templates::create(s.store(), ws(&p), input).await?;
    Ok(created(format!("/v1/templates/{}", t.template.id), t))
}

/// The workspace's templates.
#[utoipa::path(get, path = "/v1/templates", tag = "templates", params(Pagination), responses((status = 200, body = TemplatePage)))]
pub async fn list_templates(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    q: ListQuery,
) -> AppResult<Json<TemplatePage>> {
    Ok(Json(
        templates::list(s.store(), ws(&p), q.limit, q.cursor)
            .await?
            .into(),
    ))
}

/// One template with its newest version.
#[utoipa::path(get, path = "/v1/templates/{id}", tag = "templates", params(("id" = String, Path)),
    responses((status = 200, body = TemplateDetail)))]
pub async fn get_template(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam(id): PathParam,
) -> AppResult<Json<TemplateDetail>> {
    Ok(Json(templates::get_detail(s.store(), ws(&p), &id).await?))
}

/// Save a new version (any content field) and/or rename; `publish: true` publishes it.
#[utoipa::path(patch, path = "/v1/templates/{id}", tag = "templates", params(("id" = String, Path)),
    request_body = TemplatePatch, responses((status = 200, body = TemplateDetail)))]
pub async fn update_template(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam(id): PathParam,
    ApiJson(patch): ApiJson<TemplatePatch>,
) -> AppResult<Json<TemplateDetail>> {
    Ok(Json(
        templates::update(s.store(), ws(&p), &id, patch).await?,
    ))
}

/// Delete a template and all its versions.
#[utoipa::path(delete, path = "/v1/templates/{id}", tag = "templates", params(("id" = String, Path)),
    responses((status = 204)))]
pub async fn delete_template(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam(id): PathParam,
) -> AppResult<StatusCode> {
    templates::delete(s.store(), ws(&p), &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A template's versions, oldest first.
#[utoipa::path(get, path = "/v1/templates/{id}/versions", tag = "templates", params(("id" = String, Path), Pagination),
    responses((status = 200, body = VersionPage)))]
pub async fn list_template_versions(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam(id): PathParam,
    q: ListQuery,
) -> AppResult<Json<VersionPage>> {
    Ok(Json(
        templates::list_versions(s.store(), ws(&p), &id, q.limit, q.cursor)
            .await?
            .into(),
    ))
}

/// One version, with the components it used and its links and warnings.
#[utoipa::path(get, path = "/v1/templates/{id}/versions/{version}", tag = "templates",
    params(("id" = String, Path), ("version" = u32, Path, minimum = 1)),
    responses((status = 200, body = TemplateVersion)))]
pub async fn get_template_version(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    PathPair(id, version): PathPair,
) -> AppResult<Json<TemplateVersion>> {
    let v = templates::parse_version(&version).ok_or(AppError::NotFound)?;
    Ok(Json(
        templates::get_version(s.store(), ws(&p), &id, v).await?,
    ))
}

/// Diff two versions (default: the published one, or the previous one, against the newest).
#[utoipa::path(get, path = "/v1/templates/{id}/diff", tag = "templates",
    params(("id" = String, Path),
        ("from" = Option<u32>, Query, minimum = 1, description = "Default: the published version (or the one before `to`)"),
        ("to" = Option<u32>, Query, minimum = 1, description = "Default: the newest version")),
    responses((status = 200, body = TemplateDiff)))]
pub async fn diff_template(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam(id): PathParam,
    q: ListQuery,
) -> AppResult<Json<TemplateDiff>> {
    let bound = |name: &str| -> AppResult<Option<u32>> {
        match q.params.get(name) {
            None => Ok(None),
            Some(v) => templates::parse_version(v)
                .map(Some)
                .ok_or_else(|| AppError::bad_request(name, "must be a version number (1 or more)")),
        }
    };
    let (from, to) = (bound("from")?, bound("to")?);
    Ok(Json(
        templates::diff(s.store(), ws(&p), &id, from, to).await?,
    ))
}

/// Publish a version: sends without a pinned version use it from now on.
#[utoipa::path(post, path = "/v1/templates/{id}/publish", tag = "templates", params(("id" = String, Path)),
    request_body = PublishRequest, responses((status = 200, body = Template)))]
pub async fn publish_template(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam(id): PathParam,
    ApiJson(req): ApiJson<PublishRequest>,
) -> AppResult<Json<Template>> {
    Ok(Json(templates::publish(s.store(), ws(&p), &id, req).await?))
}

/// Render a version for a contact or sample data: subject, HTML, text, missing
/// variables and warnings.
#[utoipa::path(post, path = "/v1/templates/{id}/preview", tag = "templates", params(("id" = String, Path)),
    request_body = PreviewRequest, responses((status = 200, body = Preview)))]
pub async fn preview_template(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    headers: axum::http::HeaderMap,
    PathParam(id): PathParam,
    ApiJson(req): ApiJson<PreviewRequest>,
) -> AppResult<Json<Preview>> {
    let base = platform_url(&s, &headers);
    Ok(Json(
        templates::preview(s.store(), ws(&p), &id, req, &s.config.link_keys, &base).await?,
    ))
}

// ---- components -------------------------------------------------------------------------

/// Create a component (its name is unique in the workspace).
#[utoipa::path(post, path = "/v1/components", tag = "components", request_body = CreateComponent,
    responses((status = 201, body = Component)))]
pub async fn create_component(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    ApiJson(input): ApiJson<CreateComponent>,
) -> AppResult<Response> {
    let c = components::create(s.store(), ws(&p), input).await?;
    Ok(created(format!("/v1/components/{}", c.id), c))
}

/// The workspace's components.
#[utoipa::path(get, path = "/v1/components", tag = "components", params(Pagination), responses((status = 200, body = ComponentPage)))]
pub async fn list_components(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    q: ListQuery,
) -> AppResult<Json<ComponentPage>> {
    Ok(Json(
        components::list(s.store(), ws(&p), q.limit, q.cursor)
            .await?
            .into(),
    ))
}

/// One component.
#[utoipa::path(get, path = "/v1/components/{id}", tag = "components", params(("id" = String, Path)),
    responses((status = 200, body = Component)))]
pub async fn get_component(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam(id): PathParam,
) -> AppResult<Json<Component>> {
    Ok(Json(components::get(s.store(), ws(&p), &id).await?))
}

/// Change a component; template versions saved before keep their snapshot.
#[utoipa::path(patch, path = "/v1/components/{id}", tag = "components", params(("id" = String, Path)),
    request_body = ComponentPatch, responses((status = 200, body = Component)))]
pub async fn patch_component(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam(id): PathParam,
    ApiJson(patch): ApiJson<ComponentPatch>,
) -> AppResult<Json<Component>> {
    Ok(Json(
        components::patch(s.store(), ws(&p), &id, patch).await?,
    ))
}

/// Delete a component (saved template versions keep their snapshot of it).
#[utoipa::path(delete, path = "/v1/components/{id}", tag = "components", params(("id" = String, Path)),
    responses((status = 204)))]
pub async fn delete_component(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam(id): PathParam,
) -> AppResult<StatusCode> {
    components::delete(s.store(), ws(&p), &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Render a component with sample parameters (a missing required one is a 422).
#[utoipa::path(post, path = "/v1/components/{id}/preview", tag = "components", params(("id" = String, Path)),
    request_body = ComponentPreviewRequest, responses((status = 200, body = ComponentPreview)))]
pub async fn preview_component(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    headers: axum::http::HeaderMap,
    PathParam(id): PathParam,
    ApiJson(req): ApiJson<ComponentPreviewRequest>,
) -> AppResult<Json<ComponentPreview>> {
    let base = platform_url(&s, &headers);
    Ok(Json(
        components::preview(s.store(), ws(&p), &id, req, &s.config.link_keys, &base).await?,
    ))
}

#[cfg(test)]
mod tests {
    use super::path_segment;

    #[test]
    fn path_segments_escape_slashes_and_non_ascii() {
        assert_eq!(path_segment("a/b@x.example"), "a%2Fb@x.example");
        assert_eq!(path_segment("ü?#"), "%C3%BC%3F%23");
    }
}
