//! Routes for the ways mail goes out: provider connections (`/v1/providers`), sender
//! profiles (`/v1/senders`) and the local outbox (`/v1/outbox`). Their OpenAPI part is
//! [`DeliveryDoc`], merged into the document by `openapi::json`.

use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use super::AppState;
use super::extract::{ApiJson, ListQuery, Pagination, PathParam};
use super::openapi::Conventions;
use crate::adapters::mail::outbox::{self, OutboxEntry, OutboxError};
use crate::error::{AppError, AppResult};
use crate::usecases::Paged;
use crate::usecases::providers::{
    self, CreateProvider, ProviderPatch, ProviderView, SettingsView, Verification,
};
use crate::usecases::senders::{self, CreateSender, SenderPatch, SenderProfile};
use crate::usecases::workspaces::Principal;

#[derive(OpenApi)]
#[openapi(
    paths(
        create_provider, list_providers, get_provider, patch_provider, delete_provider, verify_provider,
        create_sender, list_senders, get_sender, patch_sender, delete_sender,
        list_outbox, get_outbox_message,
    ),
    components(schemas(SettingsView)),
    modifiers(&Conventions)
)]
pub struct DeliveryDoc;

/// A page of provider connections.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProviderPage {
    pub data: Vec<ProviderView>,
    pub next_cursor: Option<String>,
}

/// A page of sender profiles.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SenderPage {
    pub data: Vec<SenderProfile>,
    pub next_cursor: Option<String>,
}

impl From<Paged<SenderProfile>> for SenderPage {
    fn from(p: Paged<SenderProfile>) -> Self {
        Self {
            data: p.data,
            next_cursor: p.next_cursor,
        }
    }
}

/// A page of outbox messages, newest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OutboxPage {
    pub data: Vec<OutboxEntry>,
    pub next_cursor: Option<String>,
}

fn ws(p: &Principal) -> &str {
    &p.workspace_id
}

fn created<T: Serialize>(location: String, body: T) -> Response {
    let mut res = (StatusCode::CREATED, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    res
}

// ---- provider connections ---------------------------------------------------------

/// Create a provider connection. Secrets are stored encrypted and never shown again.
#[utoipa::path(post, path = "/v1/providers", tag = "providers", request_body = CreateProvider,
    responses((status = 201, body = ProviderView)))]
pub async fn create_provider(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    ApiJson(input): ApiJson<CreateProvider>,
) -> AppResult<Response> {
    let conn = providers::create(s.store(), &s.config.providers, ws(&p), input).await?;
    Ok(created(
        format!("/v1/providers/{}", conn.id),
        ProviderView::from(&conn),
    ))
}

/// The workspace's provider connections (secrets redacted).
#[utoipa::path(get, path = "/v1/providers", tag = "providers", params(Pagination),
    responses((status = 200, body = ProviderPage)))]
pub async fn list_providers(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    q: ListQuery,
) -> AppResult<Json<ProviderPage>> {
    let page = providers::list(s.store(), ws(&p), q.limit, q.cursor).await?;
    Ok(Json(ProviderPage {
        data: page.data.iter().map(ProviderView::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// One provider connection (secrets redacted).
#[utoipa::path(get, path = "/v1/providers/{id}", tag = "providers", params(("id" = String, Path)),
    responses((status = 200, body = ProviderView)))]
pub async fn get_provider(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam(id): PathParam,
) -> AppResult<Json<ProviderView>> {
    let conn = providers::get(s.store(), ws(&p), &id).await?;
    Ok(Json(ProviderView::from(&conn)))
}

/// Change a connection's name, rate or settings (`settings.kind` must stay the same; a
/// secret given replaces the stored one).
#[utoipa::path(patch, path = "/v1/providers/{id}", tag = "providers", params(("id" = String, Path)),
    request_body = ProviderPatch, responses((status = 200, body = ProviderView)))]
pub async fn patch_provider(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam(id): PathParam,
    ApiJson(patch): ApiJson<ProviderPatch>,
) -> AppResult<Json<ProviderView>> {
    let conn = providers::patch(s.store(), &s.config.providers, ws(&p), &id, patch).await?;
    Ok(Json(ProviderView::from(&conn)))
}

/// Delete a connection (409 while a sender profile uses it).
#[utoipa::path(delete, path = "/v1/providers/{id}", tag = "providers", params(("id" = String, Path)),
    responses((status = 204)))]
pub async fn delete_provider(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam(id): PathParam,
) -> AppResult<StatusCode> {
    providers::delete(s.store(), ws(&p), &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Check the connection's credentials with the provider, without sending mail. A
/// provider's refusal is an answer (`ok: false` with its class and code), not an error.
#[utoipa::path(post, path = "/v1/providers/{id}/verify", tag = "providers", params(("id" = String, Path)),
    responses((status = 200, body = Verification)))]
pub async fn verify_provider(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam(id): PathParam,
) -> AppResult<Json<Verification>> {
    Ok(Json(
        providers::verify(s.store(), &s.config.providers, ws(&p), &id).await?,
    ))
}

// ---- sender profiles --------------------------------------------------------------

/// Create a sender profile on one of the workspace's connections.
#[utoipa::path(post, path = "/v1/senders", tag = "senders", request_body = CreateSender,
    responses((status = 201, body = SenderProfile)))]
pub async fn create_sender(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    ApiJson(input): ApiJson<CreateSender>,
) -> AppResult<Response> {
    let sender = senders::create(s.store(), ws(&p), input).await?;
    Ok(created(format!("/v1/senders/{}", sender.id), sender))
}

/// The workspace's sender profiles.
#[utoipa::path(get, path = "/v1/senders", tag = "senders", params(Pagination),
    responses((status = 200, body = SenderPage)))]
pub async fn list_senders(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    q: ListQuery,
) -> AppResult<Json<SenderPage>> {
    Ok(Json(
        senders::list(s.store(), ws(&p), q.limit, q.cursor)
            .await?
            .into(),
    ))
}

/// One sender profile.
#[utoipa::path(get, path = "/v1/senders/{id}", tag = "senders", params(("id" = String, Path)),
    responses((status = 200, body = SenderProfile)))]
pub async fn get_sender(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam(id): PathParam,
) -> AppResult<Json<SenderProfile>> {
    Ok(Json(senders::get(s.store(), ws(&p), &id).await?))
}

/// Change a sender profile; `"paused": null` resumes a paused sender.
#[utoipa::path(patch, path = "/v1/senders/{id}", tag = "senders", params(("id" = String, Path)),
    request_body = SenderPatch, responses((status = 200, body = SenderProfile)))]
pub async fn patch_sender(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam(id): PathParam,
    ApiJson(patch): ApiJson<SenderPatch>,
) -> AppResult<Json<SenderProfile>> {
    Ok(Json(senders::patch(s.store(), ws(&p), &id, patch).await?))
}

/// Delete a sender profile.
#[utoipa::path(delete, path = "/v1/senders/{id}", tag = "senders", params(("id" = String, Path)),
    responses((status = 204)))]
pub async fn delete_sender(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam(id): PathParam,
) -> AppResult<StatusCode> {
    senders::delete(s.store(), ws(&p), &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- outbox -----------------------------------------------------------------------

fn outbox_dir(s: &AppState, p: &Principal) -> AppResult<std::path::PathBuf> {
    // Only the local runner has an outbox; elsewhere the route does not exist.
    s.config
        .providers
        .outbox_root()
        .map(|root| root.join(ws(p)))
        .ok_or(AppError::NotFound)
}

fn outbox_error(e: OutboxError) -> AppError {
    match e {
        OutboxError::BadCursor => {
            AppError::bad_request("cursor", "is not a cursor this listing gave")
        }
        OutboxError::Io(e) => AppError::internal(format!("reading the outbox: {e}")),
    }
}

/// The workspace's outbox (local runner): messages kept as `.eml` files, newest first.
#[utoipa::path(get, path = "/v1/outbox", tag = "outbox", params(Pagination),
    responses((status = 200, body = OutboxPage)))]
pub async fn list_outbox(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    q: ListQuery,
) -> AppResult<Json<OutboxPage>> {
    let dir = outbox_dir(&s, &p)?;
    let page =
        tokio::task::spawn_blocking(move || outbox::list(&dir, q.limit, q.cursor.as_deref()))
            .await
            .map_err(AppError::internal)?
            .map_err(outbox_error)?;
    Ok(Json(OutboxPage {
        data: page.data,
        next_cursor: page.next_cursor,
    }))
}

/// One outbox message as its raw RFC 5322 bytes (`message/rfc822`).
#[utoipa::path(get, path = "/v1/outbox/{message_id}", tag = "outbox", params(("message_id" = String, Path)),
    responses((status = 200, content_type = "message/rfc822", body = String, description = "The .eml file")))]
pub async fn get_outbox_message(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam(id): PathParam,
) -> AppResult<Response> {
    let dir = outbox_dir(&s, &p)?;
    let raw = tokio::task::spawn_blocking(move || outbox::read(&dir, &id))
        .await
        .map_err(AppError::internal)?
        .map_err(outbox_error)?
        .ok_or(AppError::NotFound)?;
    Ok(([(header::CONTENT_TYPE, "message/rfc822")], Body::from(raw)).into_response())
}
