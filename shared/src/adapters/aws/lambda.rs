//! What every Lambda entry point (`functions/*/src/main.rs`) does first: JSON logs for
//! CloudWatch, settings from the environment, the secrets document and the table.

use std::str::FromStr;
use std::sync::Arc;

use super::secrets::SecretsError;
use super::store::DynamoStore;
use crate::ports::store::Store;
use crate::secrets::SecretsDoc;

/// A function that cannot start.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{0} is not set")]
    Missing(String),
    #[error("loading the secrets: {0}")]
    Secrets(#[from] SecretsError),
}

/// JSON log lines without timestamps (CloudWatch stamps them), filtered by `RUST_LOG`
/// (default `info`).
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_current_span(false)
        .without_time()
        .init();
}

/// A required variable.
pub fn env(name: &str) -> Result<String, SetupError> {
    std::env::var(name).map_err(|_| SetupError::Missing(name.to_string()))
}

/// An optional variable, `default` when unset or not a `T`.
pub fn env_or<T: FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `MAILPILOT_RETENTION_DAYS` (how long messages and their events are kept), default
/// [`DEFAULT_RETENTION_DAYS`](crate::usecases::messages::DEFAULT_RETENTION_DAYS); a
/// value that is not a positive number counts as unset.
pub fn retention_days() -> i64 {
    std::env::var("MAILPILOT_RETENTION_DAYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|d: &i64| *d > 0)
        .unwrap_or(crate::usecases::messages::DEFAULT_RETENTION_DAYS)
}

/// The secrets document `MAILPILOT_SECRETS_ARN` names.
pub async fn secrets_from_env(sdk: &aws_config::SdkConfig) -> Result<SecretsDoc, SetupError> {
    let id = env("MAILPILOT_SECRETS_ARN")?;
    Ok(super::secrets::load(&aws_sdk_secretsmanager::Client::new(sdk), &id).await?)
}

/// The DynamoDB store over the table `MAILPILOT_TABLE` names.
pub fn store_from_env(sdk: &aws_config::SdkConfig) -> Result<Arc<dyn Store>, SetupError> {
    Ok(Arc::new(DynamoStore::new(
        aws_sdk_dynamodb::Client::new(sdk),
        env("MAILPILOT_TABLE")?,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_variable_is_named() {
        let e = env("MAILPILOT_TEST_SURELY_UNSET_VARIABLE").unwrap_err();
        assert_eq!(
            e.to_string(),
            "MAILPILOT_TEST_SURELY_UNSET_VARIABLE is not set"
        );
        assert_eq!(env_or("MAILPILOT_TEST_SURELY_UNSET_VARIABLE", 7u32), 7);
    }
}
