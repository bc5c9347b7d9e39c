//! The queue port: what the dispatcher and the sender need from a message queue with
//! SQS's semantics (at-least-once delivery, visibility timeout, receive count,
//! dead-letter queue after `maxReceiveCount`).
//!
//! Two adapters: `adapters::aws::queue::SqsQueue` (aws-sdk-sqs) and
//! `adapters::local::queue::LocalQueue` (in process, optionally persisted, with a
//! fault mode that delivers some records twice). Receiving and deleting are the
//! trigger's business in Lambda (the SQS event source), so they are not in the port.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// SendMessageBatch takes at most 10 entries.
pub const MAX_SEND_BATCH: usize = 10;
/// SQS's longest visibility timeout: 12 hours.
pub const MAX_VISIBILITY_SECS: u64 = 12 * 60 * 60;

/// The two send lanes: bulk mail, and transactional mail that no broadcast delays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lane {
    Bulk,
    Priority,
}

impl Lane {
    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Bulk => "bulk",
            Lane::Priority => "priority",
        }
    }
}

/// Why a queue call failed; every queue error is worth retrying later.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("the batch holds {0} records; at most 10 are allowed")]
    BatchTooLarge(usize),
    /// The receipt is unknown or stale (the record was deleted or received again).
    #[error("the receipt handle is not valid")]
    BadReceipt,
    #[error("the queue is unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl QueueError {
    pub fn unavailable(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        QueueError::Unavailable(e.into())
    }
}

/// One record as a consumer receives it.
#[derive(Debug, Clone)]
pub struct Received {
    /// The queue's id of the record (SQS `messageId`): what a batch response names.
    pub id: String,
    /// The handle for deleting it or changing its visibility.
    pub receipt: String,
    pub body: String,
    /// How often it has been received, this time included.
    pub receive_count: u32,
}

/// A queue to send to and to adjust visibility on.
#[async_trait]
pub trait Queue: Send + Sync {
    /// SendMessageBatch: at most [`MAX_SEND_BATCH`] bodies; all or an error.
    async fn send_batch(&self, bodies: Vec<String>) -> Result<(), QueueError>;

    /// ChangeMessageVisibility: the record becomes visible again after `secs`
    /// (at most [`MAX_VISIBILITY_SECS`]).
    async fn change_visibility(&self, receipt: &str, secs: u64) -> Result<(), QueueError>;
}
