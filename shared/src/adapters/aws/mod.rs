//! AWS adapters: DynamoDB.

pub mod secrets;
pub mod store;
pub mod table;
