//! Adapters, one folder per world. Each sits behind a cargo feature so a Lambda links
//! no embedded database and the local runner needs no AWS credentials.

#[cfg(feature = "aws")]
pub mod aws;
#[cfg(feature = "local")]
pub mod local;
pub mod mail;
