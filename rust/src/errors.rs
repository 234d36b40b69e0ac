//! The exceptions of `dkron_exec.errors`, raised from Rust, and the guard that keeps a Rust panic
//! from reaching Python as `PanicException` (a BaseException that `except Exception` misses).

use std::panic::{catch_unwind, AssertUnwindSafe};

use dkron_exec_core::config::ConfigError;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

pyo3::import_exception!(dkron_exec.errors, JobError);
pyo3::import_exception!(dkron_exec.errors, ConcurrencyError);
pyo3::import_exception!(dkron_exec.errors, ExecutorClosedError);

/// `JobError(field, value, reason)`.
pub fn job_error(e: &ConfigError) -> PyErr {
    JobError::new_err((e.field.clone(), e.value.clone(), e.reason.clone()))
}

/// Runs `f`; a panic becomes a RuntimeError that says it is a bug.
pub fn guard<T>(f: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("(no message)");
        Err(PyRuntimeError::new_err(format!("dkron_exec internal error (please report it): {what}")))
    })
}
