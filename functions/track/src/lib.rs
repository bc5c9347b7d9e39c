//! The track function: `GET /t/o/{token}`, `GET /t/c/{token}` and `GET|POST /u/{token}`
//! (shared/src/http/track.rs) under `lambda_http`. Opens and clicks go to the SQS events
//! queue (the recorder function consumes it); unsubscribe writes to DynamoDB.

use std::sync::Arc;

use anyhow::{Context, Result};
use mailpilot_shared::adapters::aws::lambda;
use mailpilot_shared::adapters::aws::queue::SqsQueue;
use mailpilot_shared::http::track::{self, TrackState};
use mailpilot_shared::model::links::LinkKeys;
use mailpilot_shared::ports::events::{EventSink, QueueSink};
use mailpilot_shared::ports::store::Store;

/// The router over its ports (what `main` serves, and tests call).
pub fn app(store: Arc<dyn Store>, keys: Arc<LinkKeys>, sink: Arc<dyn EventSink>) -> axum::Router {
    track::router(TrackState { keys, sink, store })
}

/// Builds the app from the environment: `MAILPILOT_TABLE`, `MAILPILOT_SECRETS_ARN` (the
/// link keys), `MAILPILOT_EVENTS_QUEUE_URL`.
pub async fn app_from_env() -> Result<axum::Router> {
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let secrets = lambda::secrets_from_env(&sdk).await?;
    let keys = Arc::new(secrets.link_keys().context("the secret's link_keys")?);
    let store = lambda::store_from_env(&sdk)?;
    let queue = Arc::new(SqsQueue::new(
        aws_sdk_sqs::Client::new(&sdk),
        lambda::env("MAILPILOT_EVENTS_QUEUE_URL")?,
    ));
    Ok(app(store, keys, Arc::new(QueueSink(queue))))
}
