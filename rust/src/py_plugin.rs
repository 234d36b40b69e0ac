//! Binding of the plugin host on its own (register, process, logs, close), for tools and
//! benchmarks; an Executor reaches its plugins through `Runtime`. Blocking waits release the GIL
//! and poll for signals, as in lib.rs.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use dkron_exec_core::plugin::codec::MAX_FRAME;
use dkron_exec_core::plugin::host::{HostConfig, PluginHost as CoreHost};
use dkron_exec_core::plugin::{Kind, PluginFailure};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::py_execution::{from_py_parts, output_bytes, to_py_after};
use crate::{seconds, SIGNAL_POLL};

pyo3::import_exception!(dkron_exec.errors, PluginError);

/// (plugin, stream, line)
type LogTuple = (String, &'static str, String);

fn kind_of(kind: &str) -> PyResult<Kind> {
    Kind::parse(kind).ok_or_else(|| PyValueError::new_err(format!("kind must be 'processor' or 'executor', got {kind:?}")))
}


/// dkron_exec.errors.PluginError, with `kind` set to the failure's kind.
pub(crate) fn plugin_error(py: Python<'_>, failure: &PluginFailure) -> PyErr {
    let err = PluginError::new_err(failure.message.clone());
    if let Err(e) = err.value(py).setattr("kind", failure.kind.as_str()) {
        return e;
    }
    err
}

#[pyclass(module = "dkron_exec._core", name = "PluginHost", frozen)]
pub struct PluginHost {
    inner: Arc<CoreHost>,
}

#[pymethods]
impl PluginHost {
    #[new]
    #[pyo3(signature = (*, start_timeout = 10.0, cancel_grace = 1.0, stop_grace = 2.0, backoff_max = 5.0,
                        max_frame = 67_108_864))]
    fn new(start_timeout: f64, cancel_grace: f64, stop_grace: f64, backoff_max: f64, max_frame: usize) -> PyResult<Self> {
        let secs = |v: f64, name: &str| seconds(Some(v), name).map(Option::unwrap_or_default);
        let config = HostConfig {
            start_timeout: secs(start_timeout, "start_timeout")?,
            cancel_grace: secs(cancel_grace, "cancel_grace")?,
            stop_grace: secs(stop_grace, "stop_grace")?,
            backoff_max: secs(backoff_max, "backoff_max")?,
            max_frame: max_frame.clamp(64, u32::MAX as usize),
            // A bare host (tests, benches) has no Executor to be contained with.
            contain: None,
        };
        Ok(Self { inner: Arc::new(CoreHost::new(config)?) })
    }

    fn register(&self, kind: &str, name: &str, path: PathBuf) -> PyResult<()> {
        self.inner.register(kind_of(kind)?, name, path);
        Ok(())
    }

    /// One processor call: the answer merged into a copy of `execution`. The GIL is released
    /// while it waits; Ctrl-C cancels the call. Raises PluginError.
    #[pyo3(signature = (name, execution, config, timeout = None))]
    fn process<'py>(
        &self,
        py: Python<'py>,
        name: &str,
        execution: &Bound<'py, PyAny>,
        config: HashMap<String, String>,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        // The output is borrowed from the `bytes` object (immutable, kept alive by `execution`)
        // while the GIL is released, not copied.
        let (record, output_obj) = from_py_parts(execution)?;
        let mut copy = Vec::new();
        let output = output_bytes(&output_obj, &mut copy)?;
        let timeout = seconds(timeout, "timeout")?;
        let mut signal: Option<PyErr> = None;
        let mut checked = Instant::now();
        let mut interrupted = || {
            if checked.elapsed() < SIGNAL_POLL {
                return false;
            }
            checked = Instant::now();
            match Python::attach(|py| py.check_signals()) {
                Ok(()) => false,
                Err(e) => {
                    signal = Some(e);
                    true
                }
            }
        };
        let result = py.detach(|| self.inner.process_interruptible(name, &record, output, &config, timeout, &mut interrupted));
        match result {
            Ok(next) => to_py_after(py, &next, execution, &record, (&output_obj, output)),
            Err(failure) => Err(signal.take().unwrap_or_else(|| plugin_error(py, &failure))),
        }
    }

    /// The pid of the plugin's process while it runs.
    fn pid(&self, py: Python<'_>, kind: &str, name: &str) -> PyResult<Option<u32>> {
        let kind = kind_of(kind)?;
        Ok(py.detach(|| self.inner.pid(kind, name)))
    }

    /// Plugin output lines as (plugin, stream, line); waits up to `timeout`. None once closed.
    #[pyo3(signature = (timeout = 0.0))]
    fn drain_logs(&self, py: Python<'_>, timeout: f64) -> PyResult<Option<Vec<LogTuple>>> {
        let timeout = seconds(Some(timeout), "timeout")?.unwrap_or_default();
        let logs = self.inner.logs();
        let lines = py.detach(|| logs.drain(timeout));
        Ok(lines.map(|ls| ls.into_iter().map(|l| (l.plugin, l.stream, l.line)).collect()))
    }

    /// Stops every plugin: `shutdown`, `grace` seconds, then SIGKILL. Idempotent.
    #[pyo3(signature = (grace = 2.0))]
    fn close(&self, py: Python<'_>, grace: f64) -> PyResult<()> {
        let grace = seconds(Some(grace), "grace")?.unwrap_or_default();
        py.detach(|| self.inner.close(grace));
        Ok(())
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PluginHost>()?;
    m.add("PLUGIN_MAX_FRAME", MAX_FRAME)?;
    Ok(())
}
