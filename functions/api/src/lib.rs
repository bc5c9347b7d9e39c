//! The API function: the shared axum router under `lambda_http`, over DynamoDB.

use std::sync::Arc;

use anyhow::{Context, Result};
use mailpilot_shared::adapters::aws::store::DynamoStore;
use mailpilot_shared::http::{self, AppState, Config, JobDriver};
use mailpilot_shared::model::links::{LinkKeys, LinkKeysError};
use mailpilot_shared::ports::store::Store;
use mailpilot_shared::ratelimit::RateLimiter;
use mailpilot_shared::secrets::{Sealer, SecretsDoc};

/// The router over a store and the secrets (what `main` serves, and tests call).
pub fn app(store: Arc<dyn Store>, secrets: &SecretsDoc, key_rate: u32) -> Result<axum::Router> {
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
        link_keys: Arc::new(link_keys),
        // Unset: links use https on the request's host (the API's own domain).
        public_url: std::env::var("MAILPILOT_PUBLIC_URL")
            .ok()
            .filter(|u| !u.is_empty()),
    };
    let limiter = RateLimiter::store(key_rate, store.clone());
    Ok(http::router(AppState::new(store, config, limiter)))
}

/// Builds the app from the function's environment: `MAILPILOT_TABLE`,
/// `MAILPILOT_SECRETS_ARN`, `MAILPILOT_KEY_RATE` (default 100).
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
    app(store, &secrets, key_rate)
}
