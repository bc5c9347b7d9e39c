//! Local adapters: the embedded store (redb) and the in-process queue.

/// The on-disk encodings of keys and items (public for the raw-redb benchmark).
pub mod codec;
mod eval;
pub mod queue;
pub mod store;
