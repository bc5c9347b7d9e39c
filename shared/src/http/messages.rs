//! `POST /v1/send`, `GET /v1/messages/{id}`, `GET /v1/messages`.

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::extract::{ApiJson, ListQuery, Pagination, PathParam};
use crate::error::{AppError, AppResult};
use crate::model::message::MessageState;
use crate::usecases::messages::{self, Message, SendDeps, SendRequest};
use crate::usecases::workspaces::Principal;

/// A page of messages and the cursor to the next page (`null` on the last).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MessagePage {
    pub data: Vec<Message>,
    pub next_cursor: Option<String>,
}

/// Send one message now, through the high-priority lane. Answers `202` with the
/// message (`queued`, or `skipped` when the address is suppressed); follow it at
/// `GET /v1/messages/{id}`.
#[utoipa::path(post, path = "/v1/send", tag = "messages", request_body = SendRequest,
    responses((status = 202, body = Message)))]
pub async fn send(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    ApiJson(req): ApiJson<SendRequest>,
) -> AppResult<Response> {
    let Some(d) = s.sending.get() else {
        return Err(AppError::Store(
            crate::ports::store::StoreError::unavailable(
                "sending is not configured in this deployment",
            ),
        ));
    };
    let deps = SendDeps {
        store: s.store(),
        directory: d.directory.as_ref(),
        priority: d.priority.as_ref(),
        clock: d.clock.as_ref(),
        retention_days: d.retention_days,
    };
    let m = messages::send_transactional(&deps, &p.workspace_id, req).await?;
    let mut res = (StatusCode::ACCEPTED, Json(&m)).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/v1/messages/{}", m.id)) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    Ok(res)
}

/// One message with its timeline (every state change, its time and reason).
#[utoipa::path(get, path = "/v1/messages/{id}", tag = "messages", params(("id" = String, Path)),
    responses((status = 200, body = Message)))]
pub async fn get_message(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam(id): PathParam,
) -> AppResult<Json<Message>> {
    Ok(Json(messages::get(s.store(), &p.workspace_id, &id).await?))
}

/// The workspace's messages, optionally in one state. A page may hold fewer than
/// `limit` messages (even none) and still have a `next_cursor`.
#[utoipa::path(get, path = "/v1/messages", tag = "messages",
    params(Pagination, ("state" = Option<MessageState>, Query)), responses((status = 200, body = MessagePage)))]
pub async fn list_messages(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    q: ListQuery,
) -> AppResult<Json<MessagePage>> {
    let state = match q.params.get("state") {
        None => None,
        Some(v) => Some(MessageState::parse(v).ok_or_else(|| {
            AppError::bad_request(
                "state",
                "must be planned, queued, sending, sent, deferred, delivered, bounced, complained, skipped or failed",
            )
        })?),
    };
    let page = messages::list(s.store(), &p.workspace_id, state, q.limit, q.cursor).await?;
    Ok(Json(MessagePage {
        data: page.data,
        next_cursor: page.next_cursor,
    }))
}
