//! Ports: the small capability traits the use cases talk through.

pub mod blobs;
pub mod clock;
pub mod events;
pub mod provider;
pub mod queue;
pub mod scheduler;
pub mod store;
