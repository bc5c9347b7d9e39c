//! `/v1/campaigns`: drafts, launch / schedule, pause / resume / cancel, status, the
//! run's messages, retry of failures and preflight.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::extract::{ApiJson, ListQuery, Pagination, PathParam};
use crate::error::{AppError, AppResult};
use crate::model::message::MessageState;
use crate::ports::clock::{Clock, SystemClock};
use crate::ports::queue::Queue;
use crate::ports::scheduler::Scheduler;
use crate::usecases::Paged;
use crate::usecases::campaigns::{
    self, Campaign, CampaignPatch, CreateCampaign, LaunchDeps, LaunchRequest, TestSendRequest,
};
use crate::usecases::messages::Message;
use crate::usecases::planner::{self, Preflight};
use crate::usecases::send::Directory;
use crate::usecases::workspaces::Principal;

/// What campaign actions need besides the store (set by the runner and the API
/// function once the planning queue exists).
#[derive(Clone)]
pub struct CampaignPorts {
    pub planning: Arc<dyn Queue>,
    pub scheduler: Arc<dyn Scheduler>,
    pub directory: Arc<dyn Directory>,
}

/// A page of campaigns.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CampaignPage {
    pub data: Vec<Campaign>,
    pub next_cursor: Option<String>,
}

/// A page of a campaign's messages.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CampaignMessagePage {
    pub data: Vec<Message>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StateFilter {
    /// Only messages in this state (`planned`, `queued`, `sent`, `skipped`, `failed`, …).
    #[serde(default)]
    pub state: Option<String>,
}

fn ports(s: &AppState) -> AppResult<&CampaignPorts> {
    s.campaign_ports().ok_or_else(|| {
        AppError::Store(crate::ports::store::StoreError::unavailable(
            "campaign sending is not configured on this server",
        ))
    })
}

fn launch_deps<'a>(s: &'a AppState, p: &'a CampaignPorts) -> LaunchDeps<'a> {
    LaunchDeps {
        store: s.store(),
        planning: p.planning.as_ref(),
        scheduler: p.scheduler.as_ref(),
        now: SystemClock.now(),
    }
}

fn ws(p: &Principal) -> &str {
    &p.workspace_id
}

/// Create a campaign (a draft).
#[utoipa::path(post, path = "/v1/campaigns", tag = "campaigns", request_body = CreateCampaign,
    responses((status = 201, body = Campaign)))]
pub async fn create_campaign(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    ApiJson(input): ApiJson<CreateCampaign>,
) -> AppResult<Response> {
    let c = campaigns::create(s.store(), ws(&p), input).await?;
    Ok(super::routes::created(format!("/v1/campaigns/{}", c.id), c))
}

/// The workspace's campaigns.
#[utoipa::path(get, path = "/v1/campaigns", tag = "campaigns", params(Pagination),
    responses((status = 200, body = CampaignPage)))]
pub async fn list_campaigns(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    q: ListQuery,
) -> AppResult<Json<CampaignPage>> {
    let page: Paged<Campaign> = campaigns::list(s.store(), ws(&p), q.limit, q.cursor).await?;
    Ok(Json(CampaignPage {
        data: page.data,
        next_cursor: page.next_cursor,
    }))
}

/// A campaign with its runs: counts by state and skip reason, progress and ETA.
#[utoipa::path(get, path = "/v1/campaigns/{id}", tag = "campaigns", params(("id" = String, Path)),
    responses((status = 200, body = Campaign)))]
pub async fn get_campaign(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam(id): PathParam,
) -> AppResult<Json<Campaign>> {
    Ok(Json(campaigns::get(s.store(), ws(&p), &id).await?))
}

/// Edit a draft (409 once launched or scheduled).
#[utoipa::path(patch, path = "/v1/campaigns/{id}", tag = "campaigns", params(("id" = String, Path)),
    request_body = CampaignPatch, responses((status = 200, body = Campaign)))]
pub async fn patch_campaign(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam(id): PathParam,
    ApiJson(patch): ApiJson<CampaignPatch>,
) -> AppResult<Json<Campaign>> {
    Ok(Json(campaigns::patch(s.store(), ws(&p), &id, patch).await?))
}

/// Delete a draft, completed or cancelled campaign.
#[utoipa::path(delete, path = "/v1/campaigns/{id}", tag = "campaigns", params(("id" = String, Path)),
    responses((status = 204)))]
pub async fn delete_campaign(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam(id): PathParam,
) -> AppResult<StatusCode> {
    campaigns::delete(s.store(), ws(&p), &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Launch a run now, or at `at` (a one-time schedule). Planning runs in the background:
/// poll the campaign for its progress.
#[utoipa::path(post, path = "/v1/campaigns/{id}/launch", tag = "campaigns", params(("id" = String, Path)),
    request_body(content = LaunchRequest, description = "Optional; `{}` launches now"),
    responses((status = 202, body = Campaign)))]
pub async fn launch_campaign(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam(id): PathParam,
    body: axum::body::Bytes,
) -> AppResult<Response> {
    let ports = ports(&s)?;
    // The body is optional: none launches now.
    let req: LaunchRequest = if body.iter().all(u8::is_ascii_whitespace) {
        LaunchRequest::default()
    } else {
        super::extract::parse_json(&body)?
    };
    let c = campaigns::launch(&launch_deps(&s, ports), ws(&p), &id, req).await?;
    Ok((StatusCode::ACCEPTED, Json(c)).into_response())
}

/// Take a pending schedule back: the campaign is a draft again.
#[utoipa::path(post, path = "/v1/campaigns/{id}/unschedule", tag = "campaigns", params(("id" = String, Path)),
    responses((status = 200, body = Campaign)))]
pub async fn unschedule_campaign(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam(id): PathParam,
) -> AppResult<Json<Campaign>> {
    let ports = ports(&s)?;
    Ok(Json(
        campaigns::unschedule(&launch_deps(&s, ports), ws(&p), &id).await?,
    ))
}

/// Pause: planning and sending stop (messages the sender receives wait, deferred).
#[utoipa::path(post, path = "/v1/campaigns/{id}/pause", tag = "campaigns", params(("id" = String, Path)),
    responses((status = 200, body = Campaign)))]
pub async fn pause_campaign(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam(id): PathParam,
) -> AppResult<Json<Campaign>> {
    Ok(Json(campaigns::pause(s.store(), ws(&p), &id).await?))
}

/// Resume a paused campaign.
#[utoipa::path(post, path = "/v1/campaigns/{id}/resume", tag = "campaigns", params(("id" = String, Path)),
    responses((status = 202, body = Campaign)))]
pub async fn resume_campaign(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam(id): PathParam,
) -> AppResult<Response> {
    let ports = ports(&s)?;
    let c = campaigns::resume(&launch_deps(&s, ports), ws(&p), &id).await?;
    Ok((StatusCode::ACCEPTED, Json(c)).into_response())
}

/// Send one rendered copy to an address (a test: through the transactional lane,
/// subject prefixed `[Test] `, tagged `mp_campaign_test`, not in the campaign's counts).
/// Answers `202` with the message; follow it at `GET /v1/messages/{id}`.
#[utoipa::path(post, path = "/v1/campaigns/{id}/test", tag = "campaigns", params(("id" = String, Path)),
    request_body = TestSendRequest, responses((status = 202, body = Message)))]
pub async fn test_campaign(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    headers: axum::http::HeaderMap,
    PathParam(id): PathParam,
    ApiJson(req): ApiJson<TestSendRequest>,
) -> AppResult<Response> {
    let Some(d) = s.sending.get() else {
        return Err(AppError::Store(
            crate::ports::store::StoreError::unavailable(
                "sending is not configured in this deployment",
            ),
        ));
    };
    let deps = crate::usecases::messages::SendDeps {
        store: s.store(),
        directory: d.directory.as_ref(),
        priority: d.priority.as_ref(),
        clock: d.clock.as_ref(),
        retention_days: d.retention_days,
    };
    let composer = crate::usecases::messages::Composer {
        link_keys: s.config.link_keys.clone(),
        public_url: super::routes::platform_url(&s, &headers),
    };
    let m = campaigns::send_test(&deps, ws(&p), &id, req, &composer).await?;
    let mut res = (StatusCode::ACCEPTED, Json(&m)).into_response();
    if let Ok(v) = axum::http::HeaderValue::from_str(&format!("/v1/messages/{}", m.id)) {
        res.headers_mut().insert(axum::http::header::LOCATION, v);
    }
    Ok(res)
}

/// Cancel: a pending schedule is deleted and every unsent message ends
/// `skipped(cancelled)` (in the background).
#[utoipa::path(post, path = "/v1/campaigns/{id}/cancel", tag = "campaigns", params(("id" = String, Path)),
    responses((status = 202, body = Campaign)))]
pub async fn cancel_campaign(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam(id): PathParam,
) -> AppResult<Response> {
    let ports = ports(&s)?;
    let c = campaigns::cancel(&launch_deps(&s, ports), ws(&p), &id).await?;
    Ok((StatusCode::ACCEPTED, Json(c)).into_response())
}

/// Send the current run's failed messages again, once each (never `unknown_outcome`).
#[utoipa::path(post, path = "/v1/campaigns/{id}/retry-failed", tag = "campaigns", params(("id" = String, Path)),
    responses((status = 202, body = Campaign)))]
pub async fn retry_failed_campaign(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam(id): PathParam,
) -> AppResult<Response> {
    let ports = ports(&s)?;
    let c = campaigns::retry_failed(&launch_deps(&s, ports), ws(&p), &id).await?;
    Ok((StatusCode::ACCEPTED, Json(c)).into_response())
}

/// The current run's messages, optionally in one state.
#[utoipa::path(get, path = "/v1/campaigns/{id}/messages", tag = "campaigns",
    params(("id" = String, Path), Pagination, StateFilter),
    responses((status = 200, body = CampaignMessagePage)))]
pub async fn list_campaign_messages(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam(id): PathParam,
    Query(filter): Query<StateFilter>,
    q: ListQuery,
) -> AppResult<Json<CampaignMessagePage>> {
    let state = match filter.state.as_deref() {
        None => None,
        Some(s) => Some(
            MessageState::parse(s)
                .ok_or_else(|| AppError::bad_request("state", "not a message state"))?,
        ),
    };
    let page = campaigns::messages(s.store(), ws(&p), &id, state, q.limit, q.cursor).await?;
    Ok(Json(CampaignMessagePage {
        data: page.data,
        next_cursor: page.next_cursor,
    }))
}

/// What a launch would do, without writing: audience, skips by reason, ETA under the
/// caps, windows and rates, estimated AWS cost, and warnings.
#[utoipa::path(post, path = "/v1/campaigns/{id}/preflight", tag = "campaigns", params(("id" = String, Path)),
    responses((status = 200, body = Preflight)))]
pub async fn preflight_campaign(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    headers: axum::http::HeaderMap,
    PathParam(id): PathParam,
) -> AppResult<Json<Preflight>> {
    let ports = ports(&s)?;
    let base = super::routes::platform_url(&s, &headers);
    Ok(Json(
        planner::preflight(
            s.store(),
            ports.directory.as_ref(),
            ws(&p),
            &id,
            SystemClock.now(),
            &s.config.link_keys,
            &base,
        )
        .await?,
    ))
}
