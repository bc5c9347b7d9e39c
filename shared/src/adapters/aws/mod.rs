//! AWS adapters: DynamoDB, S3 (uploads), SQS (the import queue).

pub mod blobs;
pub mod queue;
pub mod secrets;
pub mod store;
pub mod table;
