pub mod aws;
pub mod conformance;
