//! Binding of the plugin host: `PluginHost` (register, process, execute, logs, close) and
//! `PluginRun` (an executor-plugin run with the interface of `RunHandle`). Blocking waits
//! release the GIL and poll for signals, as in lib.rs.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dkron_exec_core::plugin::codec::MAX_FRAME;
use dkron_exec_core::plugin::host::{HostConfig, PluginHost as CoreHost};
use dkron_exec_core::plugin::run::PluginRun as CoreRun;
use dkron_exec_core::plugin::serde_json::{self, Map, Value};
use dkron_exec_core::plugin::{Kind, PluginFailure};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::py_execution::{from_py_parts, output_bytes, to_py_after};
use crate::{seconds, wait_with_signals, Outcome, SIGNAL_POLL};

pyo3::import_exception!(dkron_exec.errors, PluginError);

/// (plugin, stream, line)
type LogTuple = (String, &'static str, String);
/// (is_stderr, chunk)
type ChunkTuple<'py> = (bool, Bound<'py, PyBytes>);

fn kind_of(kind: &str) -> PyResult<Kind> {
    Kind::parse(kind).ok_or_else(|| PyValueError::new_err(format!("kind must be 'processor' or 'executor', got {kind:?}")))
}

fn json_object(data: &[u8], what: &str) -> PyResult<Map<String, Value>> {
    match serde_json::from_slice::<Value>(data) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(PyValueError::new_err(format!("{what} must be a JSON object"))),
    }
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

    /// Starts an executor-plugin run. `config` is a JSON object; `stream` keeps chunks for
    /// `PluginRun.next_chunks`.
    #[pyo3(signature = (name, job_name, config, payload = Vec::new(), *, timeout = None,
                        output_limit = 256_000, stream = false))]
    #[allow(clippy::too_many_arguments)]
    fn execute(
        &self,
        py: Python<'_>,
        name: &str,
        job_name: &str,
        config: &[u8],
        payload: Vec<u8>,
        timeout: Option<f64>,
        output_limit: usize,
        stream: bool,
    ) -> PyResult<PluginRun> {
        let config = json_object(config, "config")?;
        let timeout = seconds(timeout, "timeout")?;
        let mut header = Map::new();
        header.insert("type".into(), Value::from("execute"));
        header.insert("job_name".into(), Value::from(job_name));
        header.insert("config".into(), Value::Object(config));
        let inner = self.inner.clone();
        let run = py.detach(|| -> std::io::Result<CoreRun> {
            let pid = inner.pid(Kind::Executor, name);
            let run = CoreRun::new(&format!("plugin executor '{name}'"), job_name, output_limit, timeout, stream, pid)?;
            match inner.call(Kind::Executor, name, header, payload, timeout, run.sink()) {
                Ok(call) => run.set_call(call),
                Err(f) => run.fail(f),
            }
            Ok(run)
        })?;
        Ok(PluginRun { inner: run })
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

#[pyclass(module = "dkron_exec._core", name = "PluginRun", frozen)]
pub struct PluginRun {
    inner: CoreRun,
}

#[pymethods]
impl PluginRun {
    #[pyo3(signature = (timeout = None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<Outcome>> {
        wait_with_signals(py, timeout, |slice| self.inner.wait(Some(slice)))
    }

    fn result(&self, py: Python<'_>) -> Option<Outcome> {
        self.inner.result().map(|o| Outcome::new(py, &o))
    }

    fn done(&self) -> bool {
        self.inner.result().is_some()
    }

    /// Asks the plugin to stop the run; the outcome then says "cancelled".
    fn cancel(&self) {
        self.inner.cancel();
    }

    /// Streamed (is_stderr, chunk) pairs; waits up to `timeout`. None once the run ended and
    /// every chunk was taken.
    #[pyo3(signature = (timeout = 0.05))]
    fn next_chunks<'py>(&self, py: Python<'py>, timeout: f64) -> PyResult<Option<Vec<ChunkTuple<'py>>>> {
        let timeout = seconds(Some(timeout), "timeout")?.unwrap_or(Duration::ZERO);
        let chunks = py.detach(|| self.inner.next_chunks(timeout));
        Ok(chunks.map(|cs| cs.into_iter().map(|(err, data)| (err, PyBytes::new(py, &data))).collect()))
    }

    #[getter]
    fn pid(&self) -> Option<u32> {
        self.inner.pid()
    }

    fn fileno(&self) -> i32 {
        self.inner.wake_fd()
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PluginHost>()?;
    m.add_class::<PluginRun>()?;
    m.add("PLUGIN_MAX_FRAME", MAX_FRAME)?;
    Ok(())
}
