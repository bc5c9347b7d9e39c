//! The HTTP surface, once: router, auth, problem+json errors, idempotency, cursors and
//! the OpenAPI document. Served by functions/api in Lambda and by the runner locally.

pub mod analytics;
pub mod auth;
pub mod campaigns;
pub mod delivery;
pub mod extract;
pub mod idempotency;
pub mod imports;
pub mod messages;
pub mod openapi;
pub mod problem;
pub mod routes;
pub mod track;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use axum::routing::{delete, get, post, put};

use crate::model::links::LinkKeys;
use crate::ports::clock::Clock;
use crate::ports::queue::Queue;
use crate::ports::store::Store;
use crate::ratelimit::RateLimiter;
use crate::secrets::Sealer;
use crate::usecases::imports::ImportEnv;
use crate::usecases::jobs;
use crate::usecases::send::Directory;

/// Inline request bodies are capped at 4 MB (API Gateway base64-encodes bodies and
/// Lambda takes 6 MB).
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// How jobs make progress: the runner drives them in background tasks; in Lambda, where
/// nothing runs after the answer, each poll of the job advances it by a bounded slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobDriver {
    Background,
    OnPoll,
}

pub struct Config {
    /// Guards `POST /v1/workspaces`; `None` disables it.
    pub admin_token: Option<String>,
    pub sealer: Sealer,
    pub jobs: JobDriver,
    /// Remember resolved API keys in memory. Only for a process that sees every
    /// revocation (the runner): revoking clears the cache, so a revoked key stops at
    /// once. Lambda instances cannot see each other's revocations and do not cache.
    pub cache_keys: bool,
    /// Builds providers for connections (and knows the local outbox folder, if any).
    pub providers: crate::usecases::providers::Providers,
    /// The link-signing keys (`MAILPILOT_LINK_KEYS`, or the secrets document's).
    pub link_keys: Arc<LinkKeys>,
    /// The platform's public base URL for links (`MAILPILOT_PUBLIC_URL`, else the
    /// runner's address). `None` (Lambda without the variable): the request's host,
    /// over https. A workspace's own `public_url` wins over both.
    pub public_url: Option<String>,
}

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub store: Arc<dyn Store>,
    /// The import use cases' ports (blobs, starter); `None` leaves imports out.
    pub imports: Option<Arc<ImportEnv>>,
    pub config: Config,
    pub limiter: RateLimiter,
    pub(crate) keys: auth::KeyCache,
    /// Planning queue, scheduler and sender directory for campaign actions.
    campaigns: std::sync::OnceLock<campaigns::CampaignPorts>,
    /// What `POST /v1/send` needs; set once at start ([`AppState::set_sending`]).
    pub sending: std::sync::OnceLock<Sending>,
}

/// The delivery engine's side of the API: sender profiles and the high-priority queue.
pub struct Sending {
    pub directory: Arc<dyn Directory>,
    pub priority: Arc<dyn Queue>,
    pub clock: Arc<dyn Clock>,
    /// Message retention in days (items carry a TTL).
    pub retention_days: i64,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    pub fn new(store: Arc<dyn Store>, config: Config, limiter: RateLimiter) -> Self {
        Self::with_imports(store, config, limiter, None)
    }

    pub fn with_imports(
        store: Arc<dyn Store>,
        config: Config,
        limiter: RateLimiter,
        imports: Option<Arc<ImportEnv>>,
    ) -> Self {
        Self(Arc::new(Inner {
            store,
            imports,
            config,
            limiter,
            keys: auth::KeyCache::default(),
            campaigns: std::sync::OnceLock::new(),
            sending: std::sync::OnceLock::new(),
        }))
    }

    /// Enables campaign actions (launch, pause, …); set once at start.
    pub fn set_campaign_ports(&self, ports: campaigns::CampaignPorts) {
        let _ = self.0.campaigns.set(ports);
    }

    pub fn campaign_ports(&self) -> Option<&campaigns::CampaignPorts> {
        self.0.campaigns.get()
    }

    /// Enables `POST /v1/send` (once; a second call is ignored).
    pub fn set_sending(&self, sending: Sending) {
        let _ = self.0.sending.set(sending);
    }

    pub fn store(&self) -> &dyn Store {
        self.0.store.as_ref()
    }

    /// Lets a job make progress according to the driver.
    pub fn drive_job(&self, ws: &str, job_id: &str) {
        if self.config.jobs == JobDriver::Background {
            tokio::spawn(drive_to_end(
                self.0.store.clone(),
                ws.to_string(),
                job_id.to_string(),
            ));
        }
    }
}

/// Runs a job to its end (the runner's background worker).
pub async fn drive_to_end(store: Arc<dyn Store>, ws: String, job_id: String) {
    loop {
        match jobs::advance(store.as_ref(), &ws, &job_id, 10).await {
            Ok(job) if job.status == jobs::JobStatus::Completed => return,
            Ok(_) => tokio::task::yield_now().await,
            Err(crate::error::AppError::NotFound) => return,
            Err(e) => {
                tracing::warn!(error = %e, job_id, "job step failed; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    }
}

/// `/v1/campaigns` (issue 7).
fn campaign_routes() -> Router<AppState> {
    use campaigns::*;
    Router::new()
        .route("/v1/campaigns", get(list_campaigns).post(create_campaign))
        .route(
            "/v1/campaigns/{id}",
            get(get_campaign)
                .patch(patch_campaign)
                .delete(delete_campaign),
        )
        .route("/v1/campaigns/{id}/launch", post(launch_campaign))
        .route("/v1/campaigns/{id}/unschedule", post(unschedule_campaign))
        .route("/v1/campaigns/{id}/pause", post(pause_campaign))
        .route("/v1/campaigns/{id}/resume", post(resume_campaign))
        .route("/v1/campaigns/{id}/cancel", post(cancel_campaign))
        .route(
            "/v1/campaigns/{id}/retry-failed",
            post(retry_failed_campaign),
        )
        .route("/v1/campaigns/{id}/preflight", post(preflight_campaign))
        .route("/v1/campaigns/{id}/messages", get(list_campaign_messages))
        .route(
            "/v1/campaigns/{id}/resend",
            post(analytics::resend_campaign),
        )
}

/// Provider connections, sender profiles and the outbox (`http::delivery`).
fn delivery_routes() -> Router<AppState> {
    use delivery::*;
    Router::new()
        .route("/v1/providers", get(list_providers).post(create_provider))
        .route(
            "/v1/providers/{id}",
            get(get_provider)
                .patch(patch_provider)
                .delete(delete_provider),
        )
        .route("/v1/providers/{id}/verify", post(verify_provider))
        .route("/v1/senders", get(list_senders).post(create_sender))
        .route(
            "/v1/senders/{id}",
            get(get_sender).patch(patch_sender).delete(delete_sender),
        )
        .route("/v1/outbox", get(list_outbox))
        .route("/v1/outbox/{message_id}", get(get_outbox_message))
}

/// The whole HTTP API.
pub fn router(state: AppState) -> Router {
    use routes::*;
    let keyed = Router::new()
        .route("/v1/workspace", get(get_workspace).patch(patch_workspace))
        .route("/v1/workspace/data", delete(delete_workspace_data))
        .route("/v1/jobs", get(list_jobs))
        .route("/v1/jobs/{id}", get(get_job))
        .route("/v1/api-keys", get(list_api_keys).post(create_api_key))
        .route("/v1/api-keys/{id}", get(get_api_key).delete(revoke_api_key))
        .route("/v1/contacts", get(list_contacts).post(create_contact))
        .route(
            "/v1/contacts/{id}",
            get(get_contact).patch(patch_contact).delete(delete_contact),
        )
        .route(
            "/v1/contacts/by-email/{email}",
            get(get_contact_by_email).put(upsert_contact_by_email),
        )
        .route(
            "/v1/contacts/by-external-id/{external_id}",
            get(get_contact_by_external_id),
        )
        .route("/v1/lists", get(list_lists).post(create_list))
        .route(
            "/v1/lists/{id}",
            get(get_list).patch(patch_list).delete(delete_list),
        )
        .route(
            "/v1/lists/{id}/members",
            get(list_members).post(add_members),
        )
        .route("/v1/lists/{id}/members/remove", post(remove_members))
        .route(
            "/v1/suppressions",
            get(list_suppressions).post(add_suppression),
        )
        .route(
            "/v1/suppressions/{email}",
            get(get_suppression).delete(remove_suppression),
        )
        .merge(campaign_routes())
        .route("/v1/analytics/overview", get(analytics::overview))
        .route("/v1/analytics/daily", get(analytics::daily))
        .route("/v1/analytics/campaigns/{id}", get(analytics::campaign))
        .route(
            "/v1/analytics/campaigns/{id}/links",
            get(analytics::campaign_links),
        )
        .route("/v1/send", post(messages::send))
        .route("/v1/messages", get(messages::list_messages))
        .route("/v1/messages/{id}", get(messages::get_message))
        .merge(delivery_routes())
        .route("/v1/templates", get(list_templates).post(create_template))
        .route(
            "/v1/templates/{id}",
            get(get_template)
                .patch(update_template)
                .delete(delete_template),
        )
        .route("/v1/templates/{id}/versions", get(list_template_versions))
        .route(
            "/v1/templates/{id}/versions/{version}",
            get(get_template_version),
        )
        .route("/v1/templates/{id}/diff", get(diff_template))
        .route("/v1/templates/{id}/publish", post(publish_template))
        .route("/v1/templates/{id}/preview", post(preview_template))
        .route(
            "/v1/components",
            get(list_components).post(create_component),
        )
        .route(
            "/v1/components/{id}",
            get(get_component)
                .patch(patch_component)
                .delete(delete_component),
        )
        .route("/v1/components/{id}/preview", post(preview_component))
        .route(
            "/v1/imports",
            get(imports::list_imports).post(imports::create_import),
        )
        .route(
            "/v1/imports/{id}",
            get(imports::get_import).delete(imports::revert_import),
        )
        .route("/v1/imports/{id}/file", put(imports::upload_file))
        .route("/v1/imports/{id}/preview", post(imports::preview_import))
        .route("/v1/imports/{id}/commit", post(imports::commit_import))
        .route("/v1/imports/{id}/errors", get(imports::import_errors))
        .layer(from_fn_with_state(state.clone(), idempotency::middleware))
        .layer(from_fn_with_state(state.clone(), auth::api_key));
    let admin = Router::new()
        .route("/v1/workspaces", post(create_workspace))
        .layer(from_fn_with_state(state.clone(), idempotency::middleware))
        .layer(from_fn_with_state(state.clone(), auth::admin));
    Router::new()
        .merge(keyed)
        .merge(admin)
        .route("/openapi.json", get(openapi::serve))
        .route("/health", get(health))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}
