//! Where processors put an execution's output. Pure Rust: the Python binding is a thin layer.

pub mod files;
pub mod log;
