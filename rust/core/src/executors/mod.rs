//! Executors: what turns a job's `executor_config` into a run. The shell executor hands the
//! engine a `JobSpec`; plugin executors are called on the plugin host.

pub mod shell;
