//! Binding of the syslog sink: config errors become `dkron_exec.errors.JobError` (field
//! `processors.syslog.<key>`), send errors `OSError`; sending releases the GIL.

use std::collections::HashMap;

use dkron_exec_core::config::Config;
use dkron_exec_core::sinks::syslog::{ExecutionMessage, SyslogConfig, SyslogSink as CoreSink, FIELD_PREFIX};
use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;

use crate::errors::{guard, job_error};

fn parse(config: &HashMap<String, String>) -> PyResult<SyslogConfig> {
    guard(|| SyslogConfig::parse(&Config::new(config, FIELD_PREFIX)).map_err(|e| job_error(&e)))
}

/// Checks a syslog processor config; raises JobError naming the key and value.
#[pyfunction]
fn syslog_check_config(config: HashMap<String, String>) -> PyResult<()> {
    parse(&config).map(|_| ())
}

#[pyclass(module = "dkron_exec._core", name = "SyslogSink", frozen)]
struct SyslogSink {
    inner: CoreSink,
}

#[pymethods]
impl SyslogSink {
    #[new]
    fn new(config: HashMap<String, String>) -> PyResult<Self> {
        Ok(Self { inner: CoreSink::new(parse(&config)?) })
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

    /// Closes the connection (a later send opens a new one), after trying to deliver the RELP
    /// messages still waiting; returns what could not be delivered (dropped), or None.
    fn close(&self, py: Python<'_>) -> Option<String> {
        py.detach(|| self.inner.close())
    }

    /// RELP: how many messages wait in the resend queue.
    #[getter]
    fn waiting(&self) -> usize {
        self.inner.waiting()
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
