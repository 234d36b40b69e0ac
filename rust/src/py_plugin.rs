//! Binding of the plugin host on its own (register, process, logs, close), for tools and
//! benchmarks; an Executor reaches its plugins through `Runtime`. Blocking waits release the GIL
//! and poll for signals, as in lib.rs.

use std::path::PathBuf;
use std::sync::Arc;

use dkron_exec_core::plugin::codec::{Frame, MAX_FRAME};
use dkron_exec_core::plugin::host::{CallSlot, HostConfig, PluginHost as CoreHost};
use dkron_exec_core::plugin::{Kind, PluginFailure};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use dkron_exec_core::plugin::serde_json::{self, Map, Value};

use crate::{seconds, SIGNAL_POLL};

/// (plugin, stream, line)
type LogTuple = (String, &'static str, String);

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
fn plugin_error(py: Python<'_>, failure: &PluginFailure) -> PyErr {
    let make = || -> PyResult<PyErr> {
        let cls = py.import("dkron_exec.errors")?.getattr("PluginError")?;
        let err = cls.call1((failure.message.clone(),))?;
        err.setattr("kind", failure.kind.as_str())?;
        Ok(PyErr::from_value(err))
    };
    make().unwrap_or_else(|e| e)
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

    /// One processor call: `fields` is a JSON object (execution, config), `body` the output.
    /// Returns the answer's header (JSON) and body. Raises PluginError.
    #[pyo3(signature = (name, fields, body, timeout = None))]
    fn process<'py>(
        &self,
        py: Python<'py>,
        name: &str,
        fields: &[u8],
        body: &[u8],
        timeout: Option<f64>,
    ) -> PyResult<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)> {
        let mut header = json_object(fields, "fields")?;
        header.insert("type".into(), Value::from("process"));
        let timeout = seconds(timeout, "timeout")?;
        let slot = Arc::new(CallSlot::default());
        let body = body.to_vec();
        let call = py
            .detach(|| self.inner.call(Kind::Processor, name, header, body, timeout, slot.clone()))
            .map_err(|f| plugin_error(py, &f))?;
        let result: Result<Frame, PluginFailure> = loop {
            if let Some(r) = py.detach(|| slot.wait(Some(SIGNAL_POLL))) {
                break r;
            }
            if let Err(e) = py.check_signals() {
                call.cancel();
                return Err(e);
            }
        };
        let frame = result.map_err(|f| plugin_error(py, &f))?;
        let head = serde_json::to_vec(&frame.header).unwrap_or_default();
        Ok((PyBytes::new(py, &head), PyBytes::new(py, &frame.body)))
    }

    /// The pid of the plugin's process while it runs.
    fn pid(&self, py: Python<'_>, kind: &str, name: &str) -> PyResult<Option<u32>> {
        let kind = kind_of(kind)?;
        Ok(py.detach(|| self.inner.pid(kind, name)))
    }

    /// Stops one plugin's process; it starts again on its next call.
    #[pyo3(signature = (kind, name, grace = 2.0))]
    fn stop(&self, py: Python<'_>, kind: &str, name: &str, grace: f64) -> PyResult<()> {
        let kind = kind_of(kind)?;
        let grace = seconds(Some(grace), "grace")?.unwrap_or_default();
        py.detach(|| self.inner.stop(kind, name, grace));
        Ok(())
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
