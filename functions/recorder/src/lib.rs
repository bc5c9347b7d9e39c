//! The recorder function: an SQS batch of tracking events (from the track function) →
//! `usecases::tracking::record_events` → a partial batch response. A record that does
//! not parse fails alone (and reaches the DLQ after the queue's retries); a store error
//! fails the batch's records, which SQS redelivers: recording is idempotent per event id.

use std::sync::Arc;

pub use mailpilot_shared::lambda_events::{BatchResponse, ItemFailure, SqsEvent, SqsRecord};
use mailpilot_shared::model::tracking::TrackEvent;
use mailpilot_shared::ports::store::Store;
use mailpilot_shared::usecases::tracking::{RecorderConfig, record_events};

pub struct Handler {
    pub store: Arc<dyn Store>,
    pub config: RecorderConfig,
}

impl Handler {
    pub async fn handle(&self, event: SqsEvent) -> BatchResponse {
        let mut failures = Vec::new();
        let mut events = Vec::new();
        let mut ids = Vec::new();
        for r in event.records {
            match serde_json::from_str::<TrackEvent>(&r.body) {
                Ok(e) => {
                    events.push(e);
                    ids.push(r.message_id);
                }
                Err(e) => {
                    tracing::warn!(error = %e, record = %r.message_id, "an events-queue record does not parse");
                    failures.push(r.message_id);
                }
            }
        }
        if let Err(e) = record_events(self.store.as_ref(), &self.config, &events).await {
            tracing::warn!(error = %e, events = events.len(), "recording tracking events failed; the batch is retried");
            failures.extend(ids);
        }
        BatchResponse::failing(failures)
    }
}
