//! Lambda entry point: API Gateway requests to `/webhooks/*` and SQS batches of SES
//! events → `webhooks::dispatch`. Environment: `MAILPILOT_TABLE`, `MAILPILOT_SECRETS_ARN`,
//! `MAILPILOT_SOFT_BOUNCE_LIMIT` (default 3), `MAILPILOT_HEALTH_COMPLAINT_RATE` (0.003),
//! `MAILPILOT_HEALTH_BOUNCE_RATE` (0.05), `MAILPILOT_HEALTH_MIN_VOLUME` (500).

use std::sync::Arc;

use lambda_http::{LambdaEvent, service_fn};
use mailpilot_shared::adapters::aws::lambda;
use mailpilot_shared::ports::clock::{Clock, SystemClock};
use mailpilot_shared::usecases::provider_events::EventConfig;
use mailpilot_shared::webhooks::sns::HttpCertFetcher;
use webhooks::EventsHandler;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    lambda::init_tracing();
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let secrets = lambda::secrets_from_env(&sdk).await?;
    let store = lambda::store_from_env(&sdk)?;
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
