//! The events port: where the tracking handler hands its events to the recorder without
//! waiting for it (an SQS events queue in AWS, a channel in the local runner).

use std::sync::Arc;

use async_trait::async_trait;

use crate::model::tracking::TrackEvent;
use crate::ports::queue::{Queue, QueueError};

#[async_trait]
pub trait EventSink: Send + Sync {
    /// Hands one event over; `Err` when it could not be accepted.
    async fn emit(&self, event: TrackEvent) -> Result<(), QueueError>;
}

/// Events as JSON records of a queue (SQS in AWS).
pub struct QueueSink(pub Arc<dyn Queue>);

#[async_trait]
impl EventSink for QueueSink {
    async fn emit(&self, event: TrackEvent) -> Result<(), QueueError> {
        let body = serde_json::to_string(&event).map_err(QueueError::unavailable)?;
        self.0.send_batch(vec![body]).await
    }
}

/// Events into an in-process channel (the runner's recorder task reads it).
pub struct ChannelSink(pub tokio::sync::mpsc::Sender<TrackEvent>);

#[async_trait]
impl EventSink for ChannelSink {
    async fn emit(&self, event: TrackEvent) -> Result<(), QueueError> {
        self.0
            .send(event)
            .await
            .map_err(|_| QueueError::unavailable("the recorder has stopped"))
    }
}
