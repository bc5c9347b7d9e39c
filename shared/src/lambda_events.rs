//! The Lambda event shapes the SQS-triggered functions share (dispatch's planning
//! queue, recorder, send, webhooks): the fields of an SQS batch they read and the
//! partial batch response (`ReportBatchItemFailures`) they answer. Plain serde types,
//! no AWS dependency (any feature set compiles them).

use serde::{Deserialize, Serialize};

/// An SQS batch (the fields the handlers read; the others are ignored).
#[derive(Debug, Default, Deserialize)]
pub struct SqsEvent {
    #[serde(rename = "Records", default)]
    pub records: Vec<SqsRecord>,
}

/// One record of an SQS batch.
#[derive(Debug, Deserialize)]
pub struct SqsRecord {
    #[serde(rename = "messageId")]
    pub message_id: String,
    /// To change the record's visibility (the sender's delayed retries).
    #[serde(rename = "receiptHandle", default)]
    pub receipt_handle: String,
    #[serde(default)]
    pub body: String,
    /// The queue the record came from (the sender tells its lanes and DLQs apart by it).
    #[serde(rename = "eventSourceARN", default)]
    pub event_source_arn: String,
    #[serde(default)]
    pub attributes: SqsAttributes,
}

#[derive(Debug, Default, Deserialize)]
pub struct SqsAttributes {
    /// Milliseconds since the epoch when the queue received the record (queue lag).
    #[serde(rename = "SentTimestamp", default)]
    pub sent_timestamp: Option<String>,
}

impl SqsAttributes {
    /// `SentTimestamp` as milliseconds since the epoch, when present and numeric.
    pub fn sent_millis(&self) -> Option<i64> {
        self.sent_timestamp.as_deref()?.parse().ok()
    }
}

/// The partial batch response (`ReportBatchItemFailures`).
#[derive(Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct BatchResponse {
    #[serde(rename = "batchItemFailures")]
    pub batch_item_failures: Vec<ItemFailure>,
}

impl BatchResponse {
    /// The response naming these records (by `messageId`) as failed.
    pub fn failing<I: IntoIterator<Item = String>>(ids: I) -> Self {
        Self {
            batch_item_failures: ids
                .into_iter()
                .map(|item_identifier| ItemFailure { item_identifier })
                .collect(),
        }
    }

    /// Names one more record as failed.
    pub fn fail(&mut self, id: &str) {
        self.batch_item_failures.push(ItemFailure {
            item_identifier: id.to_string(),
        });
    }
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ItemFailure {
    #[serde(rename = "itemIdentifier")]
    pub item_identifier: String,
}

/// Is this event an SQS batch (it has a `Records` array) rather than another trigger's
/// (a schedule's, an API Gateway request)?
pub fn is_sqs_batch(event: &serde_json::Value) -> bool {
    event.get("Records").is_some_and(|r| r.is_array())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_a_record_and_writes_the_partial_response() {
        let ev: SqsEvent = serde_json::from_value(json!({"Records": [
            {"messageId": "m1", "receiptHandle": "r1", "body": "{}",
             "eventSourceARN": "arn:aws:sqs:us-east-1:1:q",
             "attributes": {"SentTimestamp": "1795600000000"}, "eventSource": "aws:sqs"},
            {"messageId": "m2"}
        ]}))
        .unwrap();
        assert_eq!(ev.records[0].receipt_handle, "r1");
        assert_eq!(ev.records[0].event_source_arn, "arn:aws:sqs:us-east-1:1:q");
        assert_eq!(
            ev.records[0].attributes.sent_millis(),
            Some(1_795_600_000_000)
        );
        assert_eq!(ev.records[1].body, "");
        assert_eq!(ev.records[1].attributes.sent_millis(), None);
        let mut out = BatchResponse::failing(["m1".to_string()]);
        out.fail("m2");
        assert_eq!(
            serde_json::to_value(&out).unwrap(),
            json!({"batchItemFailures": [{"itemIdentifier": "m1"}, {"itemIdentifier": "m2"}]})
        );
        assert!(is_sqs_batch(&json!({"Records": []})));
        assert!(!is_sqs_batch(&json!({"version": "2.0"})));
        assert!(!is_sqs_batch(&json!({"Records": 1})));
    }
}
