//! Lambda entry point: SQS batches → the sender. Environment: `MAILPILOT_TABLE`,
//! `MAILPILOT_SECRETS_ARN`, `MAILPILOT_PUBLIC_URL`, `MAILPILOT_SEND_QUEUE_URL` /
//! `_ARN`, `MAILPILOT_PRIORITY_QUEUE_URL` / `_ARN`, `MAILPILOT_DEAD_LETTER_QUEUE_ARNS`
//! (comma-separated).

use std::sync::Arc;

use anyhow::Context;
use lambda_runtime::{LambdaEvent, service_fn};
use mailpilot_shared::adapters::aws::lambda::{self, env};
use mailpilot_shared::adapters::aws::queue::SqsQueue;
use mailpilot_shared::ports::clock::SystemClock;
use mailpilot_shared::secrets::Sealer;
use mailpilot_shared::usecases::messages::Composer;
use mailpilot_shared::usecases::providers::Providers;
use mailpilot_shared::usecases::send::{SendConfig, StoreDirectory};
use send::{Handler, Source, SqsEvent};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda::init_tracing();
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let secrets = lambda::secrets_from_env(&sdk).await?;
    let store = lambda::store_from_env(&sdk)?;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let handler = Handler {
        store: store.clone(),
        directory: Arc::new(StoreDirectory::new(
            store,
            Providers::new(Sealer::new(&secrets.encryption_key), None),
        )),
        clock: Arc::new(SystemClock),
        composer: Composer {
            link_keys: Arc::new(secrets.link_keys().context("link-signing keys")?),
            public_url: env("MAILPILOT_PUBLIC_URL")?,
        },
        config: SendConfig::default(),
        bulk: Source {
            arn: env("MAILPILOT_SEND_QUEUE_ARN")?,
            queue: Arc::new(SqsQueue::new(sqs.clone(), env("MAILPILOT_SEND_QUEUE_URL")?)),
        },
        priority: Source {
            arn: env("MAILPILOT_PRIORITY_QUEUE_ARN")?,
            queue: Arc::new(SqsQueue::new(sqs, env("MAILPILOT_PRIORITY_QUEUE_URL")?)),
        },
        dead_letter_arns: env("MAILPILOT_DEAD_LETTER_QUEUE_ARNS")?
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
    };
    let handler = &handler;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        Ok::<_, lambda_runtime::Error>(handler.handle(event.payload).await)
    }))
    .await
}
