pub mod app;
pub mod aws;
pub mod conformance;
pub mod faults;
pub mod imports;
