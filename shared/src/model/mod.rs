//! The pure model: domain types that parse their input, and the rules over them.
//! No I/O, no async, no AWS types.

pub mod campaign;
pub mod contact;
pub mod csvfile;
pub mod email;
pub mod ids;
pub mod links;
pub mod message;
pub mod scope;
pub mod sender;
pub mod text;
pub mod tracking;

pub use contact::{Consent, ContactStatus, Locale, SuppressionReason, TimeZone};
pub use email::{EmailAddress, EmailError};
pub use ids::Id;
pub use scope::Scope;
pub use text::parse_text;
