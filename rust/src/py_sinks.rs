//! Binding of the files and log sinks (`dkron_exec_core::sinks`): argument conversion, errors,
//! and the GIL released around every write.

use std::collections::HashMap;
use std::path::PathBuf;

use dkron_exec_core::chain::files::FilesConfig;
use dkron_exec_core::config::Config;

use dkron_exec_core::sinks::files::{self, Source, WriteError, WriteOptions};
use dkron_exec_core::sinks::log;
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

fn write_error(err: WriteError) -> PyErr {
    match &err {
        WriteError::Unsafe(u) => PyValueError::new_err(u.to_string()),
        WriteError::Refused { .. } => PyOSError::new_err(err.to_string()),
        // OSError(errno, ...) picks the subclass (PermissionError, ...) from the errno.
        WriteError::Io { op, path, source } => match source.raw_os_error() {
            Some(errno) => {
                // Rust's text ends with " (os error N)"; Python prints "[Errno N]" itself.
                let text = source.to_string();
                let text = text.split(" (os error").next().unwrap_or_default();
                PyOSError::new_err((errno, format!("cannot {op}: {text}"), path.as_os_str().to_owned()))
            }
            None => PyOSError::new_err(err.to_string()),
        },
    }
}

/// Writes `<log_dir>/[<job>/]<key>.log` atomically (mode 0644) from `output`, or streamed from the
/// file `source`; at most `max_size` bytes. Returns the path.
#[pyfunction]
#[pyo3(signature = (log_dir, key, output = None, *, job = None, source = None, max_size = None, fsync = false))]
#[allow(clippy::too_many_arguments)]
fn write_log_file(
    py: Python<'_>,
    log_dir: PathBuf,
    key: &str,
    output: Option<Bound<'_, PyBytes>>,
    job: Option<&str>,
    source: Option<PathBuf>,
    max_size: Option<u64>,
    fsync: bool,
) -> PyResult<PathBuf> {
    let opts = WriteOptions { max_size: max_size.unwrap_or(u64::MAX), fsync };
    let data = output.as_ref().map(|b| b.as_bytes());
    let src = match (data, source.as_deref()) {
        (Some(bytes), None) => Source::Bytes(bytes),
        (None, Some(path)) => Source::File(path),
        _ => return Err(PyValueError::new_err("give exactly one of output and source")),
    };
    py.detach(|| files::write_log(&log_dir, job, key, src, opts)).map_err(write_error)
}

/// Where a `files` step with `config` writes the execution `key` of `job` (the default folder as
/// the environment says now). ValueError names the config field that is invalid.
#[pyfunction]
fn files_log_path(config: HashMap<String, String>, job: &str, key: &str) -> PyResult<PathBuf> {
    let parsed = FilesConfig::parse(&Config::new(&config, "processors.files")).map_err(|e| PyValueError::new_err(e.to_string()))?;
    parsed.file_path(job, key).map_err(PyValueError::new_err)
}

/// Keeps the newest `keep` log files of `dir`; returns how many were removed.
#[pyfunction]
fn prune_log_files(py: Python<'_>, dir: PathBuf, keep: usize) -> PyResult<usize> {
    Ok(py.detach(|| files::prune(&dir, keep))?)
}

/// Dkron's BEGIN/END OUTPUT block.
#[pyfunction]
fn log_block<'py>(py: Python<'py>, job: &str, key: &str, output: &Bound<'py, PyBytes>) -> Bound<'py, PyBytes> {
    PyBytes::new(py, &log::block(job, key, output.as_bytes()))
}

/// The block written to descriptor `fd` in one `write_all`, bypassing Python's buffers.
#[pyfunction]
fn write_log_block(py: Python<'_>, fd: i32, job: &str, key: &str, output: &Bound<'_, PyBytes>) -> PyResult<()> {
    let data = output.as_bytes();
    Ok(py.detach(|| log::write_block(fd, job, key, data))?)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(write_log_file, m)?)?;
    m.add_function(wrap_pyfunction!(files_log_path, m)?)?;
    m.add_function(wrap_pyfunction!(prune_log_files, m)?)?;
    m.add_function(wrap_pyfunction!(log_block, m)?)?;
    m.add_function(wrap_pyfunction!(write_log_block, m)?)?;
    Ok(())
}
