//! Sinks: where processors send an execution's output (pure Rust, shared by threads).

pub mod syslog;
