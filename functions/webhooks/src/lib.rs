//! The webhooks function: provider events in, over two triggers.
//!
//! - API Gateway (`/webhooks/*`): the shared router's webhook routes (Resend's Svix
//!   signatures, SES through SNS), answered with the router's status codes;
//! - SQS (SES events published to EventBridge, routed by a rule to a queue): each record
//!   on its own, a partial batch response naming exactly the records to retry; a record
//!   that is not an SES event fails alone (and ends in the DLQ after its retries).

use std::sync::Arc;

use mailpilot_shared::lambda_events;
pub use mailpilot_shared::lambda_events::{
    BatchResponse, ItemFailure, SqsAttributes, SqsEvent, SqsRecord,
};
use mailpilot_shared::metrics;
use mailpilot_shared::ports::clock::Clock;
use mailpilot_shared::ports::store::Store;
use mailpilot_shared::usecases::provider_events::{self, EventConfig, Origin, Recorded};
use mailpilot_shared::webhooks::events::{self, EventParseError};

/// The SQS side: SES events from our own account's event bus.
pub struct EventsHandler {
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub config: EventConfig,
}

impl EventsHandler {
    pub async fn handle(&self, event: SqsEvent) -> BatchResponse {
        let mut out = BatchResponse::default();
        let now = self.clock.now();
        for record in &event.records {
            if let Some(sent) = record.attributes.sent_millis() {
                metrics::emit(
                    "webhooks",
                    &[("Source", "ses-eventbridge")],
                    &[(
                        "QueueLag",
                        (now.timestamp_millis() - sent).max(0) as f64,
                        metrics::Unit::Milliseconds,
                    )],
                );
            }
            if !self.handle_record(record, now).await {
                out.fail(&record.message_id);
            }
        }
        out
    }

    /// `true` when the record is done with (applied, duplicate, ignored).
    async fn handle_record(&self, record: &SqsRecord, now: chrono::DateTime<chrono::Utc>) -> bool {
        let evs = match events::parse_ses_eventbridge(&record.body) {
            Ok(evs) => evs,
            Err(EventParseError::Unhandled(kind)) => {
                tracing::debug!(kind, "SES event type not handled");
                return true;
            }
            Err(e) => {
                tracing::error!(record = %record.message_id, error = %e, "not an SES event");
                metrics::count(
                    "webhooks",
                    "ProviderEventFailures",
                    &[("Class", "malformed")],
                );
                return false;
            }
        };
        for ev in &evs {
            match provider_events::record(
                self.store.as_ref(),
                now,
                &self.config,
                Origin::Account,
                ev,
            )
            .await
            {
                Ok(r) => {
                    let outcome = match r {
                        Recorded::Applied { .. } => "applied",
                        Recorded::Duplicate => "duplicate",
                        Recorded::Unmatched => "unmatched",
                    };
                    metrics::count(
                        "webhooks",
                        "ProviderEvents",
                        &[("Provider", "ses"), ("Outcome", outcome)],
                    );
                }
                Err(e) => {
                    tracing::warn!(record = %record.message_id, error = %e, "recording an SES event failed");
                    metrics::count("webhooks", "ProviderEventFailures", &[("Class", "store")]);
                    return false;
                }
            }
        }
        true
    }
}

/// The router side: the shared router with the webhook routes enabled.
pub fn router(
    store: Arc<dyn Store>,
    secrets: &mailpilot_shared::secrets::SecretsDoc,
    clock: Arc<dyn Clock>,
    certs: Arc<dyn mailpilot_shared::webhooks::sns::CertFetcher>,
    config: EventConfig,
) -> axum::Router {
    use mailpilot_shared::http::{self, AppState, Config, JobDriver};
    use mailpilot_shared::secrets::Sealer;
    let sealer = Sealer::new(&secrets.encryption_key);
    let state = AppState::new(
        store.clone(),
        Config {
            admin_token: None,
            sealer: sealer.clone(),
            jobs: JobDriver::OnPoll,
            cache_keys: false,
            providers: mailpilot_shared::usecases::providers::Providers::new(sealer, None),
            // This function signs no links (API Gateway sends it /webhooks/* only).
            link_keys: Arc::new(mailpilot_shared::model::links::LinkKeys::generate()),
            public_url: None,
        },
        mailpilot_shared::ratelimit::RateLimiter::memory(0),
    );
    state.set_webhooks(http::webhooks::WebhookPorts {
        certs,
        clock,
        events: config,
    });
    http::router(state)
}

/// One invocation: an SQS batch (it has `Records`) or an API Gateway request.
pub async fn dispatch(
    events: &EventsHandler,
    router: &axum::Router,
    payload: serde_json::Value,
    context: lambda_http::Context,
) -> Result<serde_json::Value, lambda_http::Error> {
    use lambda_http::tower::Service;
    if lambda_events::is_sqs_batch(&payload) {
        let batch: SqsEvent = serde_json::from_value(payload)?;
        return Ok(serde_json::to_value(events.handle(batch).await)?);
    }
    let request: lambda_http::request::LambdaRequest = serde_json::from_value(payload)?;
    let mut adapter = lambda_http::Adapter::from(router.clone());
    let response = adapter
        .call(lambda_http::LambdaEvent::new(request, context))
        .await?;
    Ok(serde_json::to_value(response)?)
}
