//! AWS adapters: DynamoDB.

pub mod store;
pub mod table;
pub mod secrets;
