//! `Execution` across the boundary: the Rust record becomes a `dkron_exec.Execution` in one call
//! (`Execution._from_core`, a tuple in `_CORE_FIELDS` order), and back (`_to_core`).

use dkron_exec_core::execution::Execution;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyTuple};

static FROM_CORE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// A `dkron_exec.Execution` with the record's fields.
pub fn to_py<'py>(py: Python<'py>, e: &Execution) -> PyResult<Bound<'py, PyAny>> {
    let started = e.started_ns.into_pyobject(py)?.into_any();
    let finished = e.finished_ns.into_pyobject(py)?.into_any();
    build(py, e, started, finished, PyBytes::new(py, &e.output).into_any())
}

/// The execution a processor step returned for `base` (the Python object it was given, and its
/// record and output): what did not change is shared with `base` instead of built again (the
/// times, which cost most to build, and an output passed through unchanged).
pub fn to_py_after<'py>(
    py: Python<'py>,
    e: &Execution,
    base: &Bound<'py, PyAny>,
    base_record: &Execution,
    base_output: (&Bound<'py, PyAny>, &[u8]),
) -> PyResult<Bound<'py, PyAny>> {
    let started = if e.started_ns == base_record.started_ns {
        base.getattr("started_at")?
    } else {
        e.started_ns.into_pyobject(py)?.into_any()
    };
    let finished = if e.finished_ns == base_record.finished_ns {
        base.getattr("finished_at")?
    } else {
        e.finished_ns.into_pyobject(py)?.into_any()
    };
    let output = if e.output == base_output.1 && base_output.0.is_instance_of::<PyBytes>() {
        base_output.0.clone()
    } else {
        PyBytes::new(py, &e.output).into_any()
    };
    build(py, e, started, finished, output)
}

/// `_from_core` of the fields; `started` and `finished` are ns or ready datetimes.
fn build<'py>(
    py: Python<'py>,
    e: &Execution,
    started: Bound<'py, PyAny>,
    finished: Bound<'py, PyAny>,
    output: Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let from_core = FROM_CORE.get_or_try_init(py, || -> PyResult<_> {
        Ok(py.import("dkron_exec.execution")?.getattr("Execution")?.getattr("_from_core")?.unbind())
    })?;
    let fields = PyTuple::new(
        py,
        [
            e.job_name.as_str().into_pyobject(py)?.into_any(),
            e.key.as_str().into_pyobject(py)?.into_any(),
            started,
            finished,
            e.success.into_pyobject(py)?.to_owned().into_any(),
            output,
            e.node_name.as_str().into_pyobject(py)?.into_any(),
            e.group.into_pyobject(py)?.into_any(),
            e.attempt.into_pyobject(py)?.into_any(),
            e.exit_code.into_pyobject(py)?.into_any(),
            e.error.as_deref().into_pyobject(py)?.into_any(),
            e.output_truncated.into_pyobject(py)?.to_owned().into_any(),
            e.output_size.into_pyobject(py)?.into_any(),
            e.processor_errors.clone().into_pyobject(py)?.into_any(),
            e.cpu_time_us.into_pyobject(py)?.into_any(),
            e.peak_memory.into_pyobject(py)?.into_any(),
        ],
    )?;
    from_core.bind(py).call1((fields,))
}

/// The record of a `dkron_exec.Execution` (anything with its `_to_core`) without its output,
/// and the output object (usually `bytes`, whose buffer the
/// caller may borrow instead of copying it).
pub fn from_py_parts<'py>(obj: &Bound<'py, PyAny>) -> PyResult<(Execution, Bound<'py, PyAny>)> {
    let t = obj.call_method0("_to_core")?.cast_into::<PyTuple>()?;
    let record = Execution {
        job_name: t.get_item(0)?.extract()?,
        key: t.get_item(1)?.extract()?,
        started_ns: t.get_item(2)?.extract()?,
        finished_ns: t.get_item(3)?.extract()?,
        success: t.get_item(4)?.extract()?,
        output: Vec::new(),
        node_name: t.get_item(6)?.extract()?,
        group: t.get_item(7)?.extract()?,
        attempt: t.get_item(8)?.extract()?,
        exit_code: t.get_item(9)?.extract()?,
        error: t.get_item(10)?.extract()?,
        output_truncated: t.get_item(11)?.extract()?,
        output_size: t.get_item(12)?.extract()?,
        processor_errors: t.get_item(13)?.extract()?,
        cpu_time_us: t.get_item(14)?.extract()?,
        peak_memory: t.get_item(15)?.extract()?,
    };
    Ok((record, t.get_item(5)?))
}

/// The bytes behind an output object: borrowed from a `bytes`, else copied into `copy`.
/// (Extracting a Vec<u8> from `bytes` would go byte by byte: ~1 ms for 256 KiB.)
pub fn output_bytes<'a>(output: &'a Bound<'_, PyAny>, copy: &'a mut Vec<u8>) -> PyResult<&'a [u8]> {
    if let Ok(b) = output.cast::<PyBytes>() {
        return Ok(b.as_bytes());
    }
    *copy = output.extract()?;
    Ok(copy)
}

/// The whole record of a `dkron_exec.Execution`, its output copied once (for Rust to own).
pub fn from_py(obj: &Bound<'_, PyAny>) -> PyResult<Execution> {
    let (mut record, output) = from_py_parts(obj)?;
    record.output = match output.cast::<PyBytes>() {
        Ok(b) => b.as_bytes().to_vec(),
        Err(_) => output.extract()?,
    };
    Ok(record)
}
