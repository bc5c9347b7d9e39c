//! AWS adapters: DynamoDB, SQS, Secrets Manager.

pub mod queue;
pub mod secrets;
pub mod store;
pub mod table;
