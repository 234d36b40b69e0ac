//! dkron-exec-core: the parts of dkron_exec that must be fast and that need no Python.
//!
//! `engine` supervises job processes (`job`) on a small tokio runtime; `capture` bounds their
//! output and `spool` keeps what outgrows it on disk; `proctree` finds and kills whole process
//! trees, `isolation` (`cgroup`, `watchdog`) makes sure nothing a job starts outlives it; `sinks` are the built-in processors' writers; `plugin` hosts plugin processes; `store`
//! keeps executions (SQLite).

pub mod capture;
pub mod cgroup;
pub mod chain;
pub mod config;
pub mod engine;
pub mod execution;
pub mod executors;
pub mod godur;
pub mod goval;
pub mod isolation;
pub mod job;
pub mod plan;
pub mod plugin;
pub mod proctree;
pub mod run;
pub mod sinks;
pub mod spawn;
pub mod spool;
pub mod store;
pub mod watchdog;
