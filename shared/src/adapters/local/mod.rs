//! Local adapters: the embedded store (redb), the in-process queue and blobs in a folder.

pub mod blobs;

/// The on-disk encodings of keys and items (public for the raw-redb benchmark).
pub mod codec;
mod eval;
pub mod queue;
pub mod scheduler;
pub mod store;
