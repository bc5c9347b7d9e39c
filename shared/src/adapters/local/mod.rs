//! Local adapters: the embedded store (redb).

mod codec;
mod eval;
pub mod store;
