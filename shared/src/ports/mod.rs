//! Ports: the small capability traits the use cases talk through.

pub mod blobs;
pub mod provider;
pub mod store;
