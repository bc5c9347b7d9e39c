//! Lambda entry point: API Gateway requests to `/webhooks/*` and SQS batches of SES
//! events → `webhooks::dispatch`. Environment: `MAILPILOT_TABLE`, `MAILPILOT_SECRETS_ARN`,
//! `MAILPILOT_SOFT_BOUNCE_LIMIT` (default 3), `MAILPILOT_HEALTH_COMPLAINT_RATE` (0.003),
//! `MAILPILOT_HEALTH_BOUNCE_RATE` (0.05), `MAILPILOT_HEALTH_MIN_VOLUME` (500).

use std::sync::Arc;

use anyhow::Context;
use lambda_http::{LambdaEvent, service_fn};
use mailpilot_shared::adapters::aws::store::DynamoStore;
use mailpilot_shared::ports::clock::{Clock, SystemClock};
use mailpilot_shared::ports::store::Store;
use mailpilot_shared::usecases::provider_events::EventConfig;
use mailpilot_shared::webhooks::sns::HttpCertFetcher;
use webhooks::EventsHandler;

fn env(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| format!("{name} is not set"))
}

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_current_span(false)
        .without_time()
        .init();
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let secrets = mailpilot_shared::adapters::aws::secrets::load(
        &aws_sdk_secretsmanager::Client::new(&sdk),
        &env("MAILPILOT_SECRETS_ARN")?,
    )
    .await
    .context("loading the secrets")?;
    let store: Arc<dyn Store> = Arc::new(DynamoStore::new(
        aws_sdk_dynamodb::Client::new(&sdk),
        env("MAILPILOT_TABLE")?,
    ));
    let config = EventConfig::from_env();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let router = webhooks::router(
        store.clone(),
        &secrets,
        clock.clone(),
        Arc::new(HttpCertFetcher::new()),
        config.clone(),
    );
    let events = EventsHandler {
        store,
        clock,
        config,
    };
    let (events, router) = (&events, &router);
    lambda_http::lambda_runtime::run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            webhooks::dispatch(events, router, event.payload, event.context).await
        },
    ))
    .await
}
