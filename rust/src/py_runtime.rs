//! Binding of the run pipeline: `JobPlan` (a job's executor and chain, parsed once: building it
//! validates the job) and `Runtime` (one per Executor: `run` crosses into Rust once per run,
//! `start` hands asyncio one completion per run).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use dkron_exec_core::chain::log::Host as LogHost;
use dkron_exec_core::config::Config;
use dkron_exec_core::executors::shell::ShellConfig;
use dkron_exec_core::engine::{CompletionQueue as CoreQueue, Handle};
use dkron_exec_core::execution::Execution;
use dkron_exec_core::job::DEFAULT_OUTPUT_LIMIT;
use dkron_exec_core::plan::JobPlan as CorePlan;
use dkron_exec_core::plugin::host::HostConfig;
use dkron_exec_core::plugin::Kind;
use dkron_exec_core::run::{OutputFn, Recorder, Refused, RunControl, Runtime as CoreRuntime, Settings};
use dkron_exec_core::cgroup::Memory;
use dkron_exec_core::isolation::{Isolation, Report};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use pyo3::sync::PyOnceLock;

use crate::errors::{guard, job_error, ConcurrencyError, ExecutorClosedError};
use crate::py_execution::{from_py, to_py};
use crate::py_store::SqliteStore;
use crate::{seconds, SIGNAL_POLL};

/// A job's executor and chain with every config parsed; raises JobError naming the field.
#[pyclass(module = "dkron_exec._core", name = "JobPlan", frozen)]
pub struct JobPlan {
    inner: Arc<CorePlan>,
}

#[pymethods]
impl JobPlan {
    #[new]
    #[pyo3(signature = (name, executor, executor_config, processors, *, retries = 0, forbid = false))]
    fn new(
        name: &str,
        executor: &str,
        executor_config: HashMap<String, String>,
        processors: Vec<(String, HashMap<String, String>)>,
        retries: u32,
        forbid: bool,
    ) -> PyResult<Self> {
        let plan = guard(|| CorePlan::parse(name, executor, &executor_config, &processors, retries, forbid).map_err(|e| job_error(&e)))?;
        Ok(Self { inner: Arc::new(plan) })
    }

    #[getter]
    fn name(&self) -> &str {
        &self.inner.name
    }

    /// Bytes of complete output the job's steps want spooled (0: the tail is enough).
    #[getter]
    fn spool_limit(&self) -> u64 {
        self.inner.spool_limit()
    }

    /// Whether a step or the executor is a plugin (the Executor then looks for plugins).
    #[getter]
    fn needs_plugins(&self) -> bool {
        self.inner.needs_plugins()
    }

    /// The processors, in order.
    #[getter]
    fn processors(&self) -> Vec<String> {
        self.inner.steps.iter().map(|s| s.name.clone()).collect()
    }
}

/// A plugin's output line: (plugin, stream, line).
type LogLine = (String, &'static str, String);

/// (command, shell, env, cwd, timeout seconds, mem_limit, su, payload, keep_daemons)
type ShellTuple =
    (String, bool, Vec<(String, String)>, Option<String>, Option<f64>, Option<u64>, Option<(String, Option<String>)>, Option<Vec<u8>>, bool);

/// The shell executor's `executor_config` as the runtime parses it (JobError naming the key).
#[pyfunction]
fn parse_shell_config(config: HashMap<String, String>) -> PyResult<ShellTuple> {
    let c = guard(|| ShellConfig::parse(&Config::new(&config, "executor_config")).map_err(|e| job_error(&e)))?;
    let cwd = c.cwd.map(|p| p.to_string_lossy().into_owned());
    Ok((c.command, c.shell, c.env, cwd, c.timeout.map(|t| t.as_secs_f64()), c.mem_limit, c.su, c.payload, c.keep_daemons))
}

/// The log step's host side: Python's own stdout/stderr buffers, and `logging`.
struct PythonLogHost;

static LOG_RECORD: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

impl LogHost for PythonLogHost {
    fn flush_stdio(&self, fd: i32) {
        Python::attach(|py| {
            let name = if fd == 1 { "stdout" } else { "stderr" };
            if let Ok(stream) = py.import("sys").and_then(|sys| sys.getattr(name)) {
                if !stream.is_none() {
                    let _ = stream.call_method0("flush");
                }
            }
        });
    }

    fn log_record(&self, success: bool, job: &str, key: &str, block: &[u8]) {
        Python::attach(|py| {
            let emit = LOG_RECORD.get_or_try_init(py, || -> PyResult<_> {
                Ok(py.import("dkron_exec.executor")?.getattr("_log_record")?.unbind())
            });
            let text = String::from_utf8_lossy(block);
            if let Err(err) = emit.and_then(|f| f.bind(py).call1((success, job, key, text.as_ref()))) {
                err.write_unraisable(py, None);
            }
        });
    }

    fn warning(&self, logger: &str, message: &str) {
        Python::attach(|py| {
            let logged = py
                .import("logging")
                .and_then(|logging| logging.call_method1("getLogger", (logger,)))
                .and_then(|log| log.call_method1("warning", ("%s", message)));
            if let Err(err) = logged {
                err.write_unraisable(py, None);
            }
        });
    }
}

/// A store written in Python (the `Store` protocol) as the runtime's recorder: `put` is called
/// with the GIL, from the thread that finished the run.
struct PythonStore(Py<PyAny>);

impl Recorder for PythonStore {
    fn record(&self, execution: &Execution) -> Result<(), String> {
        Python::attach(|py| {
            let record = to_py(py, execution)?;
            self.0.bind(py).call_method1("put", (record,)).map(|_| ())
        })
        .map_err(|err| err.to_string())
    }
}

fn output_fn(callback: Option<Py<PyAny>>) -> Option<Arc<OutputFn>> {
    let callback = callback?;
    Some(Arc::new(move |is_stderr: bool, chunk: &[u8]| {
        Python::attach(|py| {
            let bytes = pyo3::types::PyBytes::new(py, chunk);
            if let Err(err) = callback.bind(py).call1((bytes, is_stderr)) {
                err.write_unraisable(py, Some(callback.bind(py)));
            }
        });
    }))
}

fn refused(r: Refused) -> PyErr {
    match r {
        Refused::Closed => ExecutorClosedError::new_err(r.to_string()),
        Refused::Concurrent(_) => ConcurrencyError::new_err(r.to_string()),
    }
}

#[pyclass(module = "dkron_exec._core", name = "Runtime", frozen)]
pub struct Runtime {
    inner: Arc<CoreRuntime>,
}

#[pymethods]
impl Runtime {
    #[new]
    #[pyo3(signature = (*, node_name, store = None, output_limit = DEFAULT_OUTPUT_LIMIT, pipe_grace = 1.0, spool_dir = None,
                        retry_backoff = 0.5, worker_threads = 1, plugin_timeout = Some(30.0), plugin_start_timeout = 10.0,
                        cgroups = true))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        node_name: String,
        store: Option<Bound<'_, PyAny>>,
        output_limit: usize,
        pipe_grace: f64,
        spool_dir: Option<PathBuf>,
        retry_backoff: f64,
        worker_threads: usize,
        plugin_timeout: Option<f64>,
        plugin_start_timeout: f64,
        cgroups: bool,
    ) -> PyResult<Self> {
        let settings = Settings {
            node_name,
            output_limit,
            pipe_grace: seconds(Some(pipe_grace), "pipe_grace")?.unwrap_or_default(),
            spool_dir,
            retry_backoff: seconds(Some(retry_backoff), "retry_backoff")?.unwrap_or_default(),
            plugin_timeout: seconds(plugin_timeout, "plugin_timeout")?,
            cgroups,
        };
        let host_config =
            HostConfig { start_timeout: seconds(Some(plugin_start_timeout), "plugin_start_timeout")?.unwrap_or_default(), ..HostConfig::default() };
        // The SQLite store is written from Rust; any other store through its `put`.
        let recorder: Option<Arc<dyn Recorder>> = match store {
            None => None,
            Some(s) => match s.cast::<SqliteStore>() {
                Ok(sqlite) => Some(sqlite.get().inner()),
                Err(_) => Some(Arc::new(PythonStore(s.unbind()))),
            },
        };
        let inner = CoreRuntime::new(settings, worker_threads, host_config, recorder, Arc::new(PythonLogHost))?;
        Ok(Self { inner: Arc::new(inner) })
    }

    /// Makes a plugin file known (`kind` is "processor" or "executor").
    fn register_plugin(&self, kind: &str, name: &str, path: PathBuf) -> PyResult<()> {
        let kind = Kind::parse(kind).ok_or_else(|| PyValueError::new_err(format!("kind must be 'processor' or 'executor', got {kind:?}")))?;
        Ok(self.inner.register_plugin(kind, name, path)?)
    }

    /// Remembers why a plugin file was refused (`kind` as above): runs naming it record why.
    fn refuse_plugin(&self, kind: &str, name: &str, why: &str) -> PyResult<()> {
        let kind = Kind::parse(kind).ok_or_else(|| PyValueError::new_err(format!("kind must be 'processor' or 'executor', got {kind:?}")))?;
        self.inner.refuse_plugin(kind, name, why);
        Ok(())
    }

    /// Runs the plan to its end on this thread, GIL released; returns the final execution and
    /// the exception a signal handler raised meanwhile (Ctrl-C), for the caller to raise after
    /// storing. Raises ConcurrencyError / ExecutorClosedError when the run is refused.
    #[pyo3(signature = (plan, on_output = None))]
    fn run<'py>(&self, py: Python<'py>, plan: &JobPlan, on_output: Option<Py<PyAny>>) -> PyResult<(Bound<'py, PyAny>, Option<PyErr>)> {
        let control = self.inner.claim(&plan.inner).map_err(refused)?;
        let output = output_fn(on_output);
        // The first exception a signal handler raises (Ctrl-C); asked from this thread only.
        let raised: std::sync::Mutex<Option<PyErr>> = std::sync::Mutex::new(None);
        let rt = self.inner.clone();
        let result = py.detach(|| {
            guard(|| {
                let interrupted = || {
                    Python::attach(|py| match py.check_signals() {
                        Ok(()) => false,
                        Err(err) => {
                            raised.lock().unwrap().get_or_insert(err);
                            true
                        }
                    })
                };
                rt.run_here(&plan.inner, control, output, SIGNAL_POLL, interrupted).map_err(PyErr::from)
            })
        });
        let (execution, _) = result?;
        Ok((to_py(py, &execution)?, raised.into_inner().unwrap()))
    }

    /// Starts the run on the engine's thread; when it ends `token` is pushed to `queue`.
    #[pyo3(signature = (plan, queue, token, on_output = None))]
    fn start(&self, plan: &JobPlan, queue: &CompletionQueue, token: u64, on_output: Option<Py<PyAny>>) -> PyResult<RunHandle> {
        let control = self.inner.claim(&plan.inner).map_err(refused)?;
        let handle = self.inner.start(&plan.inner, control.clone(), output_fn(on_output), Some((queue.inner.clone(), token)))?;
        Ok(RunHandle { handle, control })
    }

    /// Passes `execution` through the plan's processors (nothing is run or stored). With
    /// `repeat`, the chain runs that many times on copies whose keys end `-<i>` (benchmarks).
    #[pyo3(signature = (plan, execution, repeat = 1))]
    fn process<'py>(&self, py: Python<'py>, plan: &JobPlan, execution: &Bound<'py, PyAny>, repeat: usize) -> PyResult<Bound<'py, PyAny>> {
        let record = from_py(execution)?;
        let rt = self.inner.clone();
        let done = py.detach(|| guard(|| Ok(rt.process_repeated(&plan.inner, record, repeat.max(1)))))?;
        to_py(py, &done)
    }

    /// Kills the runs of `job_name` in flight and stops their retries; how many there were.
    fn cancel(&self, job_name: &str) -> usize {
        self.inner.cancel(job_name)
    }

    /// Runs in flight.
    fn in_flight(&self) -> usize {
        self.inner.in_flight()
    }

    /// How this runtime contains its jobs (see `isolation_dict`).
    fn isolation<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let iso = self.inner.isolation();
        isolation_dict(py, &iso.report(), iso.watchdog_pid())
    }

    /// Plugin output lines as (plugin, stream, line); waits up to `timeout`. None once closed.
    #[pyo3(signature = (timeout = 0.0))]
    fn drain_logs(&self, py: Python<'_>, timeout: f64) -> PyResult<Option<Vec<LogLine>>> {
        let timeout = seconds(Some(timeout), "timeout")?.unwrap_or_default();
        let Some(host) = self.inner.plugins() else { return Ok(None) };
        let logs = host.logs();
        let lines = py.detach(|| logs.drain(timeout));
        Ok(lines.map(|ls| ls.into_iter().map(|l| (l.plugin, l.stream, l.line)).collect()))
    }

    /// The pid of a plugin's process while it runs.
    fn plugin_pid(&self, py: Python<'_>, kind: &str, name: &str) -> PyResult<Option<u32>> {
        let kind = Kind::parse(kind).ok_or_else(|| PyValueError::new_err(format!("bad kind {kind:?}")))?;
        let Some(plugins) = self.inner.plugins() else { return Ok(None) };
        Ok(py.detach(|| plugins.pid(kind, name)))
    }

    /// Kills every job still running, waits up to `grace` seconds for their executions to be
    /// recorded, stops the plugins. Idempotent.
    #[pyo3(signature = (grace = 10.0))]
    fn close(&self, py: Python<'_>, grace: f64) -> PyResult<()> {
        let grace = seconds(Some(grace), "grace")?.unwrap_or(Duration::ZERO);
        let rt = self.inner.clone();
        py.detach(|| rt.close(grace));
        Ok(())
    }
}

/// The isolation report as a dict: mode, cgroup, memory, kill, mem_limit, cpu_time,
/// peak_memory, fallback_reason, watchdog_pid.
fn isolation_dict<'py>(py: Python<'py>, r: &Report, watchdog_pid: Option<u32>) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("mode", r.mode)?;
    d.set_item("cgroup", r.cgroup.as_ref().map(|p| p.display().to_string()))?;
    d.set_item("memory", r.memory.as_str())?;
    d.set_item("kill", r.kill())?;
    d.set_item("mem_limit", r.mem_limit())?;
    d.set_item("cpu_time", r.cgroup.is_some())?;
    d.set_item("peak_memory", r.memory != Memory::None)?;
    d.set_item("fallback_reason", r.fallback_reason.as_deref())?;
    d.set_item("watchdog_pid", watchdog_pid)?;
    Ok(d)
}

/// What a new Executor would get (made and removed at once): the doctor's question.
#[pyfunction]
#[pyo3(signature = (cgroups = true))]
fn probe_isolation(py: Python<'_>, cgroups: bool) -> PyResult<Bound<'_, PyDict>> {
    let iso = py.detach(|| Isolation::new(cgroups));
    isolation_dict(py, &iso.report(), None)
}

/// A run started with `Runtime.start`.
#[pyclass(module = "dkron_exec._core", name = "RunHandle", frozen)]
pub struct RunHandle {
    handle: Handle<Execution>,
    control: Arc<RunControl>,
}

#[pymethods]
impl RunHandle {
    /// The final execution once the run has ended (once: later calls return None).
    fn take<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.handle.take().map(|e| to_py(py, &e)).transpose()
    }

    fn done(&self) -> bool {
        self.handle.done()
    }

    /// The caller gave up (a cancelled task): the job is killed, and the run records its
    /// execution as interrupted by itself. Never blocks.
    fn interrupt(&self) {
        self.control.interrupt();
    }

    /// Blocks (GIL released) until the run ends or `timeout` seconds pass; True once it ended.
    #[pyo3(signature = (timeout = None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let timeout = seconds(timeout, "timeout")?;
        Ok(py.detach(|| self.handle.wait(timeout)))
    }
}

/// Tokens of finished runs behind one file descriptor, for an event loop waiting on many runs.
#[pyclass(module = "dkron_exec._core", name = "CompletionQueue", frozen)]
pub struct CompletionQueue {
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

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<JobPlan>()?;
    m.add_class::<Runtime>()?;
    m.add_class::<RunHandle>()?;
    m.add_class::<CompletionQueue>()?;
    m.add_function(wrap_pyfunction!(parse_shell_config, m)?)?;
    m.add_function(wrap_pyfunction!(probe_isolation, m)?)?;
    m.add("DEFAULT_OUTPUT_LIMIT", DEFAULT_OUTPUT_LIMIT)?;
    Ok(())
}
