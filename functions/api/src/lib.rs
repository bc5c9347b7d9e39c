//! The API function: the shared axum router under `lambda_http`, over DynamoDB.

use std::sync::Arc;

use anyhow::Result;
use mailpilot_shared::adapters::aws::blobs::S3Blobs;
use mailpilot_shared::adapters::aws::lambda;
use mailpilot_shared::adapters::aws::queue::{SqsQueue, SqsStarter};
use mailpilot_shared::adapters::aws::scheduler::EventBridgeScheduler;
use mailpilot_shared::http::{self, AppState, Config, JobDriver, Sending};
use mailpilot_shared::model::links::{LinkKeys, LinkKeysError};
use mailpilot_shared::ports::clock::SystemClock;
use mailpilot_shared::ports::queue::Queue;
use mailpilot_shared::ports::store::Store;
use mailpilot_shared::ratelimit::RateLimiter;
use mailpilot_shared::secrets::{Sealer, SecretsDoc};
use mailpilot_shared::usecases::imports::{ImportEnv, ImportSettings};
use mailpilot_shared::usecases::providers::Providers;
use mailpilot_shared::usecases::send::StoreDirectory;

/// The router over a store and the secrets (what `main` serves, and tests call).
pub fn app(store: Arc<dyn Store>, secrets: &SecretsDoc, key_rate: u32) -> Result<axum::Router> {
    app_with_imports(store, secrets, key_rate, None)
}

/// The router with the import routes wired to S3 and the import queue.
pub fn app_with_imports(
    store: Arc<dyn Store>,
    secrets: &SecretsDoc,
    key_rate: u32,
    imports: Option<Arc<ImportEnv>>,
) -> Result<axum::Router> {
    Ok(http::router(state(store, secrets, key_rate, imports)?))
}

/// The API's state (the router's), before `POST /v1/send` is wired to a queue.
pub fn state(
    store: Arc<dyn Store>,
    secrets: &SecretsDoc,
    key_rate: u32,
    imports: Option<Arc<ImportEnv>>,
) -> Result<AppState> {
    let link_keys = match secrets.link_keys() {
        Ok(k) => k,
        // A deployment whose secret has no link_keys yet still serves the API; previews
        // sign with throwaway keys (their links lead nowhere) until link_keys is added.
        Err(LinkKeysError::Missing) => {
            tracing::warn!("the secret has no link_keys: previews use throwaway keys");
            LinkKeys::generate()
        }
        Err(e) => return Err(anyhow::Error::new(e).context("the secret's link_keys")),
    };
    let config = Config {
        admin_token: secrets.admin_token.clone(),
        sealer: Sealer::new(&secrets.encryption_key),
        // Nothing runs after a Lambda answers: each poll of a job advances it.
        jobs: JobDriver::OnPoll,
        cache_keys: false,
        // No outbox in AWS: mail leaves through SES, Resend or SMTP connections.
        providers: Providers::new(Sealer::new(&secrets.encryption_key), None),
        link_keys: Arc::new(link_keys),
        // Unset: links use https on the request's host (the API's own domain).
        public_url: std::env::var("MAILPILOT_PUBLIC_URL")
            .ok()
            .filter(|u| !u.is_empty()),
    };
    let limiter = RateLimiter::store(key_rate, store.clone());
    Ok(AppState::with_imports(store, config, limiter, imports))
}

/// Enables `POST /v1/send`: transactional messages go to the high-priority queue.
pub fn enable_sending(state: &AppState, priority: Arc<dyn Queue>, retention_days: i64) {
    let directory = Arc::new(StoreDirectory::new(
        state.store.clone(),
        state.config.providers.clone(),
    ));
    state.set_sending(Sending {
        directory,
        priority,
        clock: Arc::new(SystemClock),
        retention_days,
    });
}

/// Enables the campaign actions (launch, schedule, pause, resume, cancel, retry,
/// preflight): planning tasks go to the planning queue, scheduled starts to
/// EventBridge Scheduler.
pub fn enable_campaigns(
    state: &AppState,
    planning: Arc<dyn Queue>,
    scheduler: Arc<dyn mailpilot_shared::ports::scheduler::Scheduler>,
) {
    let directory = Arc::new(StoreDirectory::new(
        state.store.clone(),
        state.config.providers.clone(),
    ));
    state.set_campaign_ports(mailpilot_shared::http::campaigns::CampaignPorts {
        planning,
        scheduler,
        directory,
    });
}

/// Builds the app from the function's environment: `MAILPILOT_TABLE`,
/// `MAILPILOT_SECRETS_ARN`, `MAILPILOT_PRIORITY_QUEUE_URL`, `MAILPILOT_KEY_RATE` (default
/// 100), `MAILPILOT_RETENTION_DAYS` (default 400), and for imports
/// `MAILPILOT_UPLOADS_BUCKET` and `MAILPILOT_IMPORT_QUEUE_URL`, and for campaigns
/// `MAILPILOT_PLANNING_QUEUE_URL`, `MAILPILOT_PLANNING_QUEUE_ARN`,
/// `MAILPILOT_SCHEDULE_GROUP` and `MAILPILOT_SCHEDULER_ROLE_ARN` (without them campaign
/// actions answer 503).
pub async fn app_from_env() -> Result<axum::Router> {
    let key_rate = lambda::env_or("MAILPILOT_KEY_RATE", 100);
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let store = lambda::store_from_env(&sdk)?;
    let secrets = lambda::secrets_from_env(&sdk).await?;
    let bucket = std::env::var("MAILPILOT_UPLOADS_BUCKET").ok();
    let queue = std::env::var("MAILPILOT_IMPORT_QUEUE_URL").ok();
    let imports = match (bucket, queue, sdk.credentials_provider()) {
        (Some(bucket), Some(queue), Some(credentials)) => Some(Arc::new(ImportEnv {
            store: store.clone(),
            blobs: Arc::new(S3Blobs::new(
                aws_sdk_s3::Client::new(&sdk),
                bucket,
                credentials,
                None,
            )),
            starter: Arc::new(SqsStarter::new(aws_sdk_sqs::Client::new(&sdk), queue)),
            settings: ImportSettings::from_env(),
        })),
        _ => None,
    };
    let state = state(store, &secrets, key_rate, imports)?;
    let queue_url = lambda::env("MAILPILOT_PRIORITY_QUEUE_URL")?;
    let retention_days = lambda::retention_days();
    let priority = Arc::new(SqsQueue::new(aws_sdk_sqs::Client::new(&sdk), queue_url));
    enable_sending(&state, priority, retention_days);
    let planning_url = std::env::var("MAILPILOT_PLANNING_QUEUE_URL").ok();
    let planning_arn = std::env::var("MAILPILOT_PLANNING_QUEUE_ARN").ok();
    let group = std::env::var("MAILPILOT_SCHEDULE_GROUP").ok();
    let role = std::env::var("MAILPILOT_SCHEDULER_ROLE_ARN").ok();
    if let (Some(url), Some(arn), Some(group), Some(role)) =
        (planning_url, planning_arn, group, role)
    {
        enable_campaigns(
            &state,
            Arc::new(SqsQueue::new(aws_sdk_sqs::Client::new(&sdk), url)),
            Arc::new(EventBridgeScheduler::new(
                aws_sdk_scheduler::Client::new(&sdk),
                group,
                arn,
                role,
            )),
        );
    }
    Ok(http::router(state))
}
