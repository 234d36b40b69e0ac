//! The Python binding: a thin layer that converts arguments, releases the GIL around every
//! blocking call and polls for signals while it waits. All logic lives in `dkron-exec-core`.

mod errors;
mod py_execution;
mod py_plugin;
mod py_plugin_channel;
mod py_runtime;
mod py_sinks;
mod py_syslog;
mod py_store;

use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

/// How often a blocked wait wakes up to let Python handle signals (Ctrl-C).
pub(crate) const SIGNAL_POLL: Duration = Duration::from_millis(50);

pub(crate) fn seconds(value: Option<f64>, name: &str) -> PyResult<Option<Duration>> {
    match value {
        None => Ok(None),
        Some(v) if v.is_finite() && (0.0..=1e9).contains(&v) => Ok(Some(Duration::from_secs_f64(v))),
        Some(v) => Err(PyValueError::new_err(format!("{name} must be a non-negative number of seconds, got {v}"))),
    }
}

/// Go's `time.ParseDuration`, in nanoseconds; ValueError naming the problem.
#[pyfunction]
fn parse_go_duration(text: &str) -> PyResult<i64> {
    dkron_exec_core::goval::parse_duration(text).map_err(|why| PyValueError::new_err(format!("{why} (got {text:?})")))
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("BUILTIN_EXECUTORS", dkron_exec_core::executors::BUILTIN.to_vec())?;
    m.add("BUILTIN_PROCESSORS", dkron_exec_core::plan::BUILTIN_PROCESSORS.to_vec())?;
    m.add("SHELL_KEYS", dkron_exec_core::executors::shell::ShellConfig::KEYS.to_vec())?;
    m.add_function(wrap_pyfunction!(parse_go_duration, m)?)?;
    py_runtime::register(m)?;
    py_sinks::register(m)?;
    py_syslog::register(m)?;
    py_plugin::register(m)?;
    py_plugin_channel::register(m)?;
    py_store::register(m)?;
    Ok(())
}
