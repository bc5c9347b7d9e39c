//! Lambda entry point: EventBridge Scheduler (every minute) → the dispatcher.
//! Environment: `MAILPILOT_TABLE`, `MAILPILOT_SEND_QUEUE_URL`, `MAILPILOT_PRIORITY_QUEUE_URL`.

use anyhow::Context;
use lambda_runtime::{LambdaEvent, service_fn};
use mailpilot_shared::adapters::aws::queue::SqsQueue;
use mailpilot_shared::adapters::aws::store::DynamoStore;
use mailpilot_shared::ports::clock::SystemClock;

fn env(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| format!("{name} is not set"))
}

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
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), env("MAILPILOT_TABLE")?);
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let bulk = SqsQueue::new(sqs.clone(), env("MAILPILOT_SEND_QUEUE_URL")?);
    let priority = SqsQueue::new(sqs, env("MAILPILOT_PRIORITY_QUEUE_URL")?);
    let (store, bulk, priority) = (&store, &bulk, &priority);
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            let report = dispatch::handle(event.payload, store, bulk, priority, &SystemClock)
                .await
                .map_err(|e| lambda_runtime::Error::from(e.to_string()))?;
            Ok::<_, lambda_runtime::Error>(serde_json::to_value(report)?)
        },
    ))
    .await
}
