//! The API function: the shared axum router under `lambda_http`, over DynamoDB.

use std::sync::Arc;

use anyhow::{Context, Result};
use mailpilot_shared::adapters::aws::blobs::S3Blobs;
use mailpilot_shared::adapters::aws::queue::SqsStarter;
use mailpilot_shared::adapters::aws::store::DynamoStore;
use mailpilot_shared::http::{self, AppState, Config, JobDriver};
use mailpilot_shared::ports::store::Store;
use mailpilot_shared::ratelimit::RateLimiter;
use mailpilot_shared::secrets::{Sealer, SecretsDoc};
use mailpilot_shared::usecases::imports::{ImportEnv, ImportSettings};

/// The router over a store and the secrets (what `main` serves, and tests call).
pub fn app(store: Arc<dyn Store>, secrets: &SecretsDoc, key_rate: u32) -> axum::Router {
    app_with_imports(store, secrets, key_rate, None)
}

/// The router with the import routes wired to S3 and the import queue.
pub fn app_with_imports(
    store: Arc<dyn Store>,
    secrets: &SecretsDoc,
    key_rate: u32,
    imports: Option<Arc<ImportEnv>>,
) -> axum::Router {
    let config = Config {
        admin_token: secrets.admin_token.clone(),
        sealer: Sealer::new(&secrets.encryption_key),
        // Nothing runs after a Lambda answers: each poll of a job advances it.
        jobs: JobDriver::OnPoll,
        cache_keys: false,
    };
    let limiter = RateLimiter::store(key_rate, store.clone());
    http::router(AppState::with_imports(store, config, limiter, imports))
}

/// Builds the app from the function's environment: `MAILPILOT_TABLE`,
/// `MAILPILOT_SECRETS_ARN`, `MAILPILOT_KEY_RATE` (default 100), and for imports
/// `MAILPILOT_UPLOADS_BUCKET` and `MAILPILOT_IMPORT_QUEUE_URL`.
pub async fn app_from_env() -> Result<axum::Router> {
    let table = std::env::var("MAILPILOT_TABLE").context("MAILPILOT_TABLE is not set")?;
    let secret_id =
        std::env::var("MAILPILOT_SECRETS_ARN").context("MAILPILOT_SECRETS_ARN is not set")?;
    let key_rate = std::env::var("MAILPILOT_KEY_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let secrets = mailpilot_shared::adapters::aws::secrets::load(
        &aws_sdk_secretsmanager::Client::new(&sdk),
        &secret_id,
    )
    .await
    .context("loading the secrets")?;
    let store: Arc<dyn Store> =
        Arc::new(DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), table));
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
    Ok(app_with_imports(store, &secrets, key_rate, imports))
}
