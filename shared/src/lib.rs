//! Mailpilot's domain crate.
//!
//! - `model`: the pure model and rules (no I/O, no async, no AWS types);
//! - `usecases`: what the product does, orchestrated through ports;
//! - `ports`: the small capability traits (storage, …);
//! - `adapters`: one folder per world (`aws`, `local`), behind cargo features;
//! - `http`: the HTTP surface (router, auth, problem+json, idempotency, OpenAPI);
//! - `lambda_events`: the SQS batch and partial-batch-response shapes of the functions.

pub mod adapters;
pub mod error;
pub mod http;
pub mod keys;
pub mod lambda_events;
pub mod metrics;
pub mod mime;
pub mod model;
pub mod ports;
pub mod ratelimit;
pub mod render;
pub mod schema;
pub mod secrets;
pub mod serde_util;
pub mod usecases;
pub mod webhooks;
