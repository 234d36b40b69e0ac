//! Binding of the SQLite store: `_core.SqliteStore`, which `dkron_exec.SQLiteStore` wraps.
//! Every database call releases the GIL; failures raise `dkron_exec.errors.StoreError`.

use std::sync::Arc;

use dkron_exec_core::store::{SqliteStore as CoreStore, StoreError as CoreError};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyList;

use crate::errors::guard;
use crate::py_execution::{from_py, to_py};

mod errors {
    pyo3::import_exception!(dkron_exec.errors, StoreError);
}

/// The Python exception for a store failure (its message names the path and the cause).
pub(crate) fn store_error(err: CoreError) -> PyErr {
    errors::StoreError::new_err(err.to_string())
}

#[pyclass(module = "dkron_exec._core", name = "SqliteStore", frozen)]
pub(crate) struct SqliteStore {
    inner: Arc<CoreStore>,
}

impl SqliteStore {
    /// The store itself, for Rust code that writes to it (the run pipeline).
    pub(crate) fn inner(&self) -> Arc<CoreStore> {
        self.inner.clone()
    }
}

#[pymethods]
impl SqliteStore {
    #[new]
    #[pyo3(signature = (path, retention = 100))]
    fn new(py: Python<'_>, path: String, retention: i64) -> PyResult<Self> {
        let retention = usize::try_from(retention)
            .ok()
            .filter(|&r| r >= 1)
            .ok_or_else(|| PyValueError::new_err(format!("retention must be a positive integer, got {retention}")))?;
        let store = py.detach(|| guard(|| CoreStore::open(&path, retention).map_err(store_error)))?;
        Ok(Self { inner: Arc::new(store) })
    }

    #[getter]
    fn path(&self) -> &str {
        self.inner.path()
    }

    #[getter]
    fn retention(&self) -> usize {
        self.inner.retention()
    }

    /// Stores the execution; returns once it is committed.
    fn put(&self, py: Python<'_>, execution: &Bound<'_, PyAny>) -> PyResult<()> {
        let execution = from_py(execution)?;
        py.detach(|| self.inner.put(&execution)).map_err(store_error)
    }

    /// Stores all the executions in one transaction.
    fn put_many(&self, py: Python<'_>, executions: &Bound<'_, PyAny>) -> PyResult<()> {
        let executions = executions.try_iter()?.map(|e| from_py(&e?)).collect::<PyResult<Vec<_>>>()?;
        py.detach(|| self.inner.put_many(&executions)).map_err(store_error)
    }

    /// The job's executions, newest first; at most `limit`.
    #[pyo3(signature = (job_name, limit = None))]
    fn list<'py>(&self, py: Python<'py>, job_name: &str, limit: Option<i64>) -> PyResult<Bound<'py, PyList>> {
        let limit = match limit {
            None => None,
            Some(l) => Some(
                usize::try_from(l)
                    .map_err(|_| PyValueError::new_err(format!("limit must not be negative, got {l}")))?,
            ),
        };
        let found = py.detach(|| self.inner.list(job_name, limit)).map_err(store_error)?;
        PyList::new(py, found.iter().map(|e| to_py(py, e)).collect::<PyResult<Vec<_>>>()?)
    }

    fn get<'py>(&self, py: Python<'py>, job_name: &str, key: &str) -> PyResult<Option<Bound<'py, PyAny>>> {
        let found = py.detach(|| self.inner.get(job_name, key)).map_err(store_error)?;
        found.map(|e| to_py(py, &e)).transpose()
    }

    /// The names of the jobs with stored executions, sorted.
    fn job_names(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        py.detach(|| self.inner.job_names()).map_err(store_error)
    }

    /// Transactions committed so far (concurrent puts share them).
    fn transactions(&self) -> u64 {
        self.inner.transactions()
    }

    /// Closes the database; later calls raise StoreError. Idempotent.
    fn close(&self, py: Python<'_>) {
        py.detach(|| self.inner.close());
    }

    fn __repr__(&self) -> String {
        format!("SqliteStore(path={:?}, retention={})", self.inner.path(), self.inner.retention())
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<SqliteStore>()
}
