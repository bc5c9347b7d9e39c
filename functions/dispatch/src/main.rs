//! Lambda entry point: EventBridge Scheduler (every minute) → the dispatcher, then the
//! status poller; the planning queue (SQS) → the campaign planner (see `lib.rs`).
//! Environment: `MAILPILOT_TABLE`, `MAILPILOT_SEND_QUEUE_URL`, `MAILPILOT_PRIORITY_QUEUE_URL`;
//! for the status poller `MAILPILOT_SECRETS_ARN` (the key that opens the connections'
//! API keys) and the provider-event settings of the webhooks function
//! (`MAILPILOT_SOFT_BOUNCE_LIMIT`, `MAILPILOT_HEALTH_*`); without it, no polling;
//! for planning also `MAILPILOT_SECRETS_ARN`, `MAILPILOT_PLANNING_QUEUE_URL`,
//! `MAILPILOT_PLANNING_QUEUE_ARN`, `MAILPILOT_SCHEDULE_GROUP`, `MAILPILOT_SCHEDULER_ROLE_ARN`.

use std::sync::Arc;

use lambda_runtime::{LambdaEvent, service_fn};
use mailpilot_shared::adapters::aws::lambda::{self, env};
use mailpilot_shared::adapters::aws::queue::SqsQueue;
use mailpilot_shared::adapters::aws::scheduler::EventBridgeScheduler;
use mailpilot_shared::ports::clock::SystemClock;
use mailpilot_shared::ports::store::Store;
use mailpilot_shared::secrets::Sealer;
use mailpilot_shared::usecases::planner::PlannerDeps;
use mailpilot_shared::usecases::provider_events::EventConfig;
use mailpilot_shared::usecases::providers::Providers;
use mailpilot_shared::usecases::reconcile::ReconcileDeps;
use mailpilot_shared::usecases::send::StoreDirectory;

/// What the planning entry point needs (built when the planning variables are set).
struct Planning {
    directory: StoreDirectory,
    queue: SqsQueue,
    scheduler: EventBridgeScheduler,
}

/// Providers built from the stored connections (their secrets opened with the key in
/// `MAILPILOT_SECRETS_ARN`).
async fn providers(sdk: &aws_config::SdkConfig) -> anyhow::Result<Providers> {
    let secrets = lambda::secrets_from_env(sdk).await?;
    Ok(Providers::new(Sealer::new(&secrets.encryption_key), None))
}

async fn planning(sdk: &aws_config::SdkConfig, store: Arc<dyn Store>) -> anyhow::Result<Planning> {
    Ok(Planning {
        directory: StoreDirectory::new(store, providers(sdk).await?),
        queue: SqsQueue::new(
            aws_sdk_sqs::Client::new(sdk),
            env("MAILPILOT_PLANNING_QUEUE_URL")?,
        ),
        scheduler: EventBridgeScheduler::new(
            aws_sdk_scheduler::Client::new(sdk),
            env("MAILPILOT_SCHEDULE_GROUP")?,
            env("MAILPILOT_PLANNING_QUEUE_ARN")?,
            env("MAILPILOT_SCHEDULER_ROLE_ARN")?,
        ),
    })
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda::init_tracing();
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let store = lambda::store_from_env(&sdk)?;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let bulk = SqsQueue::new(sqs.clone(), env("MAILPILOT_SEND_QUEUE_URL")?);
    let priority = SqsQueue::new(sqs, env("MAILPILOT_PRIORITY_QUEUE_URL")?);
    // The planning function has the planning variables; the minute's dispatcher not.
    let planning = match std::env::var("MAILPILOT_PLANNING_QUEUE_URL") {
        Ok(_) => Some(planning(&sdk, store.clone()).await?),
        Err(_) => None,
    };
    // The minute's dispatcher also runs the status poller when it has the secrets.
    let poller = match (&planning, std::env::var("MAILPILOT_SECRETS_ARN")) {
        (None, Ok(_)) => Some((providers(&sdk).await?, EventConfig::from_env())),
        _ => None,
    };
    let (store, bulk, priority, planning, poller) = (&store, &bulk, &priority, &planning, &poller);
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            if dispatch::is_sqs(&event.payload) {
                let p = planning
                    .as_ref()
                    .ok_or("an SQS batch reached a function without the planning settings")?;
                let deps = PlannerDeps {
                    store: store.as_ref(),
                    directory: &p.directory,
                    planning: &p.queue,
                    send: bulk,
                    scheduler: &p.scheduler,
                    clock: &SystemClock,
                };
                let response = dispatch::plan(event.payload, &deps).await;
                return Ok::<_, lambda_runtime::Error>(serde_json::to_value(response)?);
            }
            let report =
                dispatch::handle(event.payload, store.as_ref(), bulk, priority, &SystemClock)
                    .await
                    .map_err(|e| lambda_runtime::Error::from(e.to_string()))?;
            let mut out = serde_json::to_value(report)?;
            if let Some((providers, events)) = poller {
                let deps = ReconcileDeps {
                    store: store.as_ref(),
                    providers,
                    clock: &SystemClock,
                    events,
                };
                // A failed poller run is retried by the next minute's (its checkpoint holds).
                match dispatch::reconcile(&deps).await {
                    Ok(polled) => out["reconcile"] = serde_json::to_value(polled)?,
                    Err(e) => tracing::error!(error = %e, "status poller run failed"),
                }
            }
            Ok::<_, lambda_runtime::Error>(out)
        },
    ))
    .await
}
