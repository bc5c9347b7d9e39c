//! The queue port on Amazon SQS (aws-sdk-sqs): SendMessageBatch (10 per call, failed
//! entries retried) and ChangeMessageVisibility. Receiving and deleting belong to the
//! Lambda event source mapping, which deletes the records a batch response does not
//! name as failed.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;

use crate::ports::queue::{MAX_SEND_BATCH, MAX_VISIBILITY_SECS, Queue, QueueError};

/// One SQS queue, by URL.
#[derive(Debug, Clone)]
pub struct SqsQueue {
    client: Client,
    url: String,
}

impl SqsQueue {
    pub fn new(client: Client, url: impl Into<String>) -> Self {
        Self {
            client,
            url: url.into(),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}

fn unavailable(e: impl std::error::Error + Send + Sync + 'static) -> QueueError {
    QueueError::unavailable(e)
}

#[async_trait]
impl Queue for SqsQueue {
    async fn send_batch(&self, bodies: Vec<String>) -> Result<(), QueueError> {
        if bodies.len() > MAX_SEND_BATCH {
            return Err(QueueError::BatchTooLarge(bodies.len()));
        }
        let mut pending: Vec<(String, String)> = bodies
            .into_iter()
            .enumerate()
            .map(|(i, b)| (i.to_string(), b))
            .collect();
        for attempt in 0..5u32 {
            if pending.is_empty() {
                return Ok(());
            }
            let entries = pending
                .iter()
                .map(|(id, body)| {
                    SendMessageBatchRequestEntry::builder()
                        .id(id)
                        .message_body(body)
                        .build()
                        .map_err(unavailable)
                })
                .collect::<Result<Vec<_>, _>>()?;
            let out = self
                .client
                .send_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| {
                    QueueError::unavailable(aws_sdk_sqs::error::DisplayErrorContext(e).to_string())
                })?;
            let failed: Vec<String> = out.failed().iter().map(|f| f.id().to_string()).collect();
            if let Some(f) = out.failed().iter().find(|f| f.sender_fault()) {
                return Err(QueueError::unavailable(format!(
                    "SQS refused a record: {} {}",
                    f.code(),
                    f.message().unwrap_or_default()
                )));
            }
            pending.retain(|(id, _)| failed.contains(id));
            if !pending.is_empty() {
                tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
            }
        }
        Err(QueueError::unavailable(format!(
            "{} records could not be sent",
            pending.len()
        )))
    }

    async fn change_visibility(&self, receipt: &str, secs: u64) -> Result<(), QueueError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .visibility_timeout(secs.min(MAX_VISIBILITY_SECS) as i32)
            .send()
            .await
            .map_err(|e| {
                QueueError::unavailable(aws_sdk_sqs::error::DisplayErrorContext(e).to_string())
            })?;
        Ok(())
    }
}

// The import function's starter lives beside it (one SQS message per import hop).
pub use super::import_queue::{ImportMessage, SqsStarter};
