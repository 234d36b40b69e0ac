//! The Python binding: a thin layer that converts arguments and releases the GIL around every
//! blocking call. All logic lives in `dkron-exec-core`.

mod py_execution;
mod py_sinks;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use dkron_exec_core::engine::{CompletionQueue as CoreQueue, Engine as CoreEngine, RunHandle as CoreHandle};
use dkron_exec_core::job::{JobSpec, Outcome as CoreOutcome};
use dkron_exec_core::spool::SpoolSpec;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use dkron_exec_core::engine::Notify;

mod py_syslog;
mod py_plugin;
mod py_plugin_channel;

/// How often a blocked wait wakes up to let Python handle signals (Ctrl-C).
pub(crate) const SIGNAL_POLL: Duration = Duration::from_millis(50);

/// Waits for an outcome in slices of `SIGNAL_POLL`, GIL released, handling Python's signals
/// between slices (Ctrl-C raises here); None when `timeout` seconds passed first.
pub(crate) fn wait_with_signals(
    py: Python<'_>,
    timeout: Option<f64>,
    wait: impl Fn(Duration) -> Option<Arc<CoreOutcome>> + Sync,
) -> PyResult<Option<Outcome>> {
    let deadline = seconds(timeout, "timeout")?.map(|t| std::time::Instant::now() + t);
    loop {
        let slice = match deadline {
            None => SIGNAL_POLL,
            Some(d) => d.saturating_duration_since(std::time::Instant::now()).min(SIGNAL_POLL),
        };
        if let Some(outcome) = py.detach(|| wait(slice)) {
            return Ok(Some(Outcome::new(py, &outcome)));
        }
        py.check_signals()?;
        if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
            return Ok(None);
        }
    }
}

pub(crate) fn seconds(value: Option<f64>, name: &str) -> PyResult<Option<Duration>> {
    match value {
        None => Ok(None),
        Some(v) if v.is_finite() && v >= 0.0 => Ok(Some(Duration::from_secs_f64(v))),
        Some(v) => Err(PyValueError::new_err(format!("{name} must be a non-negative number of seconds, got {v}"))),
    }
}

/// What to run and under which limits: built once by Python, then started or run.
#[pyclass(module = "dkron_exec._core", name = "Spec", frozen)]
struct Spec {
    inner: JobSpec,
}

#[pymethods]
impl Spec {
    #[new]
    #[pyo3(signature = (argv, *, env = Vec::new(), cwd = None, stdin = None, timeout = None,
                        mem_limit = None, uid = None, gid = None, output_limit = 256_000,
                        pipe_grace = 1.0, label = None, spool_dir = None, spool_limit = 0))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        argv: Vec<String>,
        env: Vec<(String, String)>,
        cwd: Option<PathBuf>,
        stdin: Option<Vec<u8>>,
        timeout: Option<f64>,
        mem_limit: Option<u64>,
        uid: Option<u32>,
        gid: Option<u32>,
        output_limit: usize,
        pipe_grace: f64,
        label: Option<String>,
        spool_dir: Option<PathBuf>,
        spool_limit: u64,
    ) -> PyResult<Self> {
        if argv.is_empty() {
            return Err(PyValueError::new_err("argv must not be empty"));
        }
        let mut spec = JobSpec::new(argv);
        spec.env = env;
        spec.cwd = cwd;
        spec.stdin = stdin;
        spec.timeout = seconds(timeout, "timeout")?;
        spec.mem_limit = mem_limit;
        spec.uid = uid;
        spec.gid = gid;
        spec.output_limit = output_limit;
        spec.pipe_grace = seconds(Some(pipe_grace), "pipe_grace")?.unwrap_or_default();
        if let Some(label) = label {
            spec.label = label;
        }
        spec.spool = spool_dir.map(|dir| SpoolSpec { dir, limit: spool_limit });
        Ok(Self { inner: spec })
    }

    #[getter]
    fn argv(&self) -> Vec<String> {
        self.inner.argv.clone()
    }
}

#[pyclass(module = "dkron_exec._core", name = "Engine", frozen)]
struct Engine {
    inner: CoreEngine,
}

#[pymethods]
impl Engine {
    #[new]
    #[pyo3(signature = (worker_threads = 1))]
    fn new(worker_threads: usize) -> PyResult<Self> {
        Ok(Self { inner: CoreEngine::new(worker_threads)? })
    }

    /// Starts a job supervised by the engine's threads; returns at once. With `queue`, `token`
    /// is pushed to it when the job ends.
    #[pyo3(signature = (spec, queue = None, token = 0))]
    fn start(&self, py: Python<'_>, spec: &Spec, queue: Option<&CompletionQueue>, token: u64) -> PyResult<RunHandle> {
        let spec = spec.inner.clone();
        let notify = queue.map(|q| (q.inner.clone(), token));
        let handle = py.detach(|| self.inner.start(spec, notify)).map_err(shut_down_or_io)?;
        Ok(RunHandle { inner: handle })
    }

    /// Runs a job to its end on this thread, GIL released. Signals are handled while it runs: if
    /// a handler raises (Ctrl-C), the job's tree is killed and that exception is returned beside
    /// the outcome, for the caller to record the execution and then raise it.
    #[pyo3(signature = (spec, cancel = None))]
    fn run(&self, py: Python<'_>, spec: &Spec, cancel: Option<&CancelToken>) -> PyResult<(Outcome, Option<PyErr>)> {
        let spec = spec.inner.clone();
        let cancel = cancel.map(|c| c.inner.clone()).unwrap_or_default();
        let mut raised: Option<PyErr> = None;
        let result = py.detach(|| {
            self.inner.run_here(spec, SIGNAL_POLL, cancel, || {
                Python::attach(|py| match py.check_signals() {
                    Ok(()) => false,
                    Err(err) => {
                        raised = Some(err);
                        true
                    }
                })
            })
        });
        let (outcome, _) = result.map_err(shut_down_or_io)?;
        Ok((Outcome::new(py, &Arc::new(outcome)), raised))
    }

    /// Jobs still running.
    fn in_flight(&self) -> usize {
        self.inner.in_flight()
    }

    /// Kills every running job and stops the engine's threads. Idempotent.
    #[pyo3(signature = (grace = 2.0))]
    fn shutdown(&self, py: Python<'_>, grace: f64) -> PyResult<()> {
        let grace = seconds(Some(grace), "grace")?.unwrap_or_default();
        py.detach(|| self.inner.shutdown(grace));
        Ok(())
    }
}

/// Cancels a job run by `Engine.run` from another thread (the job's tree is killed).
#[pyclass(module = "dkron_exec._core", name = "CancelToken", frozen)]
struct CancelToken {
    inner: Arc<Notify>,
}

#[pymethods]
impl CancelToken {
    #[new]
    fn new() -> Self {
        Self { inner: Arc::new(Notify::new()) }
    }

    /// Kills the job now, or as soon as it starts. Idempotent.
    fn cancel(&self) {
        self.inner.notify_one();
    }
}

/// Tokens of finished jobs behind one file descriptor, for an event loop waiting on many jobs.
#[pyclass(module = "dkron_exec._core", name = "CompletionQueue", frozen)]
struct CompletionQueue {
    inner: Arc<CoreQueue>,
}

#[pymethods]
impl CompletionQueue {
    #[new]
    fn new() -> PyResult<Self> {
        Ok(Self { inner: Arc::new(CoreQueue::new()?) })
    }

    /// Readable while tokens are waiting.
    fn fileno(&self) -> i32 {
        self.inner.fd()
    }

    /// Takes every waiting token.
    fn drain(&self) -> Vec<u64> {
        self.inner.drain()
    }
}

fn shut_down_or_io(err: std::io::Error) -> PyErr {
    if err.kind() == std::io::ErrorKind::NotConnected {
        PyRuntimeError::new_err("the engine is shut down")
    } else {
        err.into()
    }
}

#[pyclass(module = "dkron_exec._core", name = "RunHandle", frozen)]
struct RunHandle {
    inner: CoreHandle,
}

#[pymethods]
impl RunHandle {
    /// Blocks (GIL released) until the job ends or `timeout` seconds pass; None on timeout.
    /// Signals are handled while waiting, so Ctrl-C raises KeyboardInterrupt here.
    #[pyo3(signature = (timeout = None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<Outcome>> {
        wait_with_signals(py, timeout, |slice| self.inner.wait(Some(slice)))
    }

    /// The outcome if the job has ended, else None. Never blocks.
    fn result(&self, py: Python<'_>) -> Option<Outcome> {
        self.inner.result().map(|o| Outcome::new(py, &o))
    }

    fn done(&self) -> bool {
        self.inner.result().is_some()
    }

    /// Kills the job's whole process tree.
    fn cancel(&self) {
        self.inner.cancel();
    }

    #[getter]
    fn pid(&self) -> Option<u32> {
        self.inner.pid()
    }

    /// A file descriptor that becomes readable when the job is done (for event loops).
    fn fileno(&self) -> PyResult<i32> {
        Ok(self.inner.wake_fd()?)
    }
}

#[pyclass(module = "dkron_exec._core", name = "Outcome", frozen, get_all)]
pub(crate) struct Outcome {
    pid: Option<u32>,
    exit_code: Option<i32>,
    output: Py<PyBytes>,
    output_total: u64,
    truncated: bool,
    error: Option<String>,
    reason: &'static str,
    started_ns: u64,
    finished_ns: u64,
    spool_path: Option<String>,
    spool_complete: bool,
    spool_error: Option<String>,
}

impl Outcome {
    pub(crate) fn new(py: Python<'_>, o: &Arc<CoreOutcome>) -> Self {
        Self {
            pid: o.pid,
            exit_code: o.exit_code,
            output: PyBytes::new(py, &o.output).unbind(),
            output_total: o.output_total,
            truncated: o.truncated,
            error: o.error.clone(),
            reason: o.reason.as_str(),
            started_ns: o.started_ns as u64,
            finished_ns: o.finished_ns as u64,
            spool_path: o.spool.as_ref().map(|p| p.to_string_lossy().into_owned()),
            spool_complete: o.spool_complete,
            spool_error: o.spool_error.clone(),
        }
    }
}

#[pymethods]
impl Outcome {
    #[getter]
    fn success(&self) -> bool {
        self.error.is_none()
    }

    fn __repr__(&self) -> String {
        format!(
            "Outcome(pid={:?}, exit_code={:?}, reason={:?}, error={:?}, output_total={})",
            self.pid, self.exit_code, self.reason, self.error, self.output_total
        )
    }
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<Spec>()?;
    m.add_class::<Engine>()?;
    m.add_class::<CompletionQueue>()?;
    m.add_class::<CancelToken>()?;
    m.add_class::<RunHandle>()?;
    m.add_class::<Outcome>()?;
    py_sinks::register(m)?;
    py_syslog::register(m)?;
    py_plugin::register(m)?;
    py_plugin_channel::register(m)?;
    Ok(())
}
