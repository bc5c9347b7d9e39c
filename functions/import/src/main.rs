//! Lambda entry point: S3 ObjectCreated events and import-queue messages.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    mailpilot_shared::adapters::aws::lambda::init_tracing();
    let env = import::env_from_env().await?;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let env = env.clone();
        async move {
            let now_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            let left = Duration::from_millis(event.context.deadline.saturating_sub(now_ms));
            let deadline = Instant::now() + left.saturating_sub(import::DEADLINE_MARGIN);
            import::handle(&env, event.payload, Some(deadline))
                .await
                .map_err(lambda_runtime::Error::from)
        }
    }))
    .await
}
