//! Binding of the syslog sink: config errors become `dkron_exec.errors.JobError` (field
//! `processors.syslog.<key>`), send errors `OSError`; sending releases the GIL.

use std::collections::HashMap;

use dkron_exec_core::sinks::syslog::{ConfigError, ExecutionMessage, SyslogConfig, SyslogSink as CoreSink};
use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;

fn job_error(py: Python<'_>, e: &ConfigError) -> PyErr {
    let made = py
        .import("dkron_exec.errors")
        .and_then(|m| m.getattr("JobError"))
        .and_then(|cls| cls.call1((format!("processors.syslog.{}", e.key), &e.value, &e.reason)));
    match made {
        Ok(err) => PyErr::from_value(err),
        Err(err) => err,
    }
}

fn parse(py: Python<'_>, config: &HashMap<String, String>) -> PyResult<SyslogConfig> {
    SyslogConfig::parse(config).map_err(|e| job_error(py, &e))
}

/// Checks a syslog processor config; raises JobError naming the key and value.
#[pyfunction]
fn syslog_check_config(py: Python<'_>, config: HashMap<String, String>) -> PyResult<()> {
    parse(py, &config).map(|_| ())
}

#[pyclass(module = "dkron_exec._core", name = "SyslogSink", frozen)]
struct SyslogSink {
    inner: CoreSink,
}

#[pymethods]
impl SyslogSink {
    #[new]
    fn new(py: Python<'_>, config: HashMap<String, String>) -> PyResult<Self> {
        Ok(Self { inner: CoreSink::new(parse(py, &config)?) })
    }

    /// Sends one execution (GIL released); returns the number of syslog messages written.
    #[pyo3(signature = (*, job_name, key, success, exit_code, output, timestamp_ns))]
    #[allow(clippy::too_many_arguments)]
    fn send(
        &self,
        py: Python<'_>,
        job_name: &str,
        key: &str,
        success: bool,
        exit_code: Option<i32>,
        output: &[u8],
        timestamp_ns: i64,
    ) -> PyResult<usize> {
        let msg = ExecutionMessage { job_name, key, success, exit_code, output, timestamp_ns };
        py.detach(|| self.inner.send(&msg)).map_err(|e| PyOSError::new_err(e.to_string()))
    }

    /// Closes the connection; a later send opens a new one.
    fn close(&self, py: Python<'_>) {
        py.detach(|| self.inner.close());
    }

    #[getter]
    fn destination(&self) -> String {
        self.inner.config().destination.to_string()
    }

    #[getter]
    fn connected(&self) -> bool {
        self.inner.is_connected()
    }

    fn __repr__(&self) -> String {
        format!("SyslogSink({})", self.inner.config().destination)
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<SyslogSink>()?;
    m.add_function(wrap_pyfunction!(syslog_check_config, m)?)
}
