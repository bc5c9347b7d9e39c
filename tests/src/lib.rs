pub mod app;
pub mod aws;
pub mod conformance;
pub mod delivery;
pub mod faults;
pub mod imports;
