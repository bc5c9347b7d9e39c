//! Lambda entry point: SQS events-queue batches → the recorder. Environment:
//! `MAILPILOT_TABLE`, `MAILPILOT_RETENTION_DAYS` (event retention, default 400).

use lambda_runtime::{LambdaEvent, service_fn};
use mailpilot_shared::adapters::aws::lambda;
use mailpilot_shared::usecases::tracking::RecorderConfig;
use recorder::{Handler, SqsEvent};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda::init_tracing();
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let handler = Handler {
        store: lambda::store_from_env(&sdk)?,
        config: RecorderConfig {
            retention_days: lambda::retention_days(),
            ..RecorderConfig::default()
        },
    };
    let handler = &handler;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        Ok::<_, lambda_runtime::Error>(handler.handle(event.payload).await)
    }))
    .await
}
