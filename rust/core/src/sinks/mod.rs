//! Where processors put an execution's output (pure Rust; the Python binding is a thin layer).

pub mod files;
pub mod log;
pub mod syslog;
