//! dkron-exec-core: the parts of dkron_exec that must be fast and that need no Python.
//!
//! `engine` supervises job processes (`job`) on a small tokio runtime; `capture` bounds their
//! output; `proctree` finds and kills whole process trees; `plugin` hosts plugin processes.

pub mod capture;
pub mod engine;
pub mod godur;
pub mod job;
pub mod plugin;
pub mod proctree;
