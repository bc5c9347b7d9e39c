//! AWS adapters: DynamoDB, SQS (send lanes, the import queue), S3 (uploads), Secrets Manager,
//! EventBridge Scheduler (campaign starts); `lambda`, what every function's entry point
//! sets up.

pub mod blobs;
pub mod import_queue;
pub mod lambda;
pub mod queue;
pub mod scheduler;
pub mod secrets;
pub mod store;
pub mod table;
