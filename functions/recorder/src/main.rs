//! Lambda entry point: SQS events-queue batches → the recorder. Environment:
//! `MAILPILOT_TABLE`, `MAILPILOT_RETENTION_DAYS` (event retention, default 400).

use std::sync::Arc;

use anyhow::Context;
use lambda_runtime::{LambdaEvent, service_fn};
use mailpilot_shared::adapters::aws::store::DynamoStore;
use mailpilot_shared::usecases::tracking::RecorderConfig;
use recorder::{Handler, SqsEvent};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_current_span(false)
        .without_time()
        .init();
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let table = std::env::var("MAILPILOT_TABLE").context("MAILPILOT_TABLE is not set")?;
    let retention_days = std::env::var("MAILPILOT_RETENTION_DAYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|d: &i64| *d > 0)
        .unwrap_or(mailpilot_shared::usecases::messages::DEFAULT_RETENTION_DAYS);
    let handler = Handler {
        store: Arc::new(DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), table)),
        config: RecorderConfig {
            retention_days,
            ..RecorderConfig::default()
        },
    };
    let handler = &handler;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        Ok::<_, lambda_runtime::Error>(handler.handle(event.payload).await)
    }))
    .await
}
