//! One run of a job, from spawn to stored record: the attempts (with Dkron's retry backoff), each
//! run by its executor, passed through the job's chain and recorded in the store. A `Runtime` is
//! what an `Executor` owns: the engine, the plugin host, the syslog connections, the store.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::chain::files::FilesStep;
use crate::chain::log::{self, LogStep};
use crate::chain::syslog::{Sinks, SyslogStep};
use crate::chain::{Chain, ChainStep, Missing, Processed, Step, StepContext};
use crate::engine::{CompletionQueue, Engine, Handle};
use crate::execution::{make_key, Execution};
use crate::executors::{plugin, ExecutorPlan};
use crate::isolation::Isolation;
use crate::job::{self, unix_nanos, Outcome};
use crate::plan::{JobPlan, StepKind};
use crate::plugin::host::{HostConfig, PluginHost};
use crate::plugin::Kind;
use crate::spool::SpoolSpec;

/// Where finished executions go: the SQLite store, or a store of the embedding program.
pub trait Recorder: Send + Sync {
    fn record(&self, execution: &Execution) -> Result<(), String>;

    /// Several executions that finished together, in one transaction where the store has them;
    /// one result per execution.
    fn record_many(&self, executions: &[Execution]) -> Vec<Result<(), String>> {
        executions.iter().map(|e| self.record(e)).collect()
    }
}

impl Recorder for crate::store::SqliteStore {
    fn record(&self, execution: &Execution) -> Result<(), String> {
        self.put(execution).map_err(|e| e.to_string())
    }

    fn record_many(&self, executions: &[Execution]) -> Vec<Result<(), String>> {
        match self.put_many(executions) {
            Ok(()) => executions.iter().map(|_| Ok(())).collect(),
            // All or nothing failed: each on its own, so one bad record fails alone.
            Err(_) => executions.iter().map(|e| self.record(e)).collect(),
        }
    }
}

/// One execution waiting for the batch writer, and where its result goes.
type Pending = (Execution, tokio::sync::oneshot::Sender<(Execution, Result<(), String>)>);

/// Records the executions of runs started on the engine (asyncio). Runs that finish in the same
/// turn of the engine queue their executions; the writer takes everything queued and records it
/// in one transaction, so N runs finishing together cost one commit, not N.
struct BatchWriter {
    queue: tokio::sync::mpsc::UnboundedSender<Pending>,
}

impl BatchWriter {
    fn start(engine: &Engine, recorder: Arc<dyn Recorder>) -> Option<Self> {
        let (queue, mut incoming) = tokio::sync::mpsc::unbounded_channel::<Pending>();
        let writer = async move {
            let mut batch = Vec::new();
            while incoming.recv_many(&mut batch, 1024).await > 0 {
                // Let the runs that are ready to finish right now queue theirs too: the writer was
                // woken by the first and would otherwise commit it alone.
                tokio::task::yield_now().await;
                while let Ok(more) = incoming.try_recv() {
                    batch.push(more);
                }
                let (executions, replies): (Vec<Execution>, Vec<_>) = batch.drain(..).unzip();
                // Off the engine's thread: a store may wait (SQLite on another process's lock, a
                // Python store on the GIL), and the runs in flight must not wait with it.
                let store = recorder.clone();
                let written = tokio::task::spawn_blocking(move || {
                    let results = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| store.record_many(&executions)))
                        .unwrap_or_else(|panic| {
                            let why = format!("internal error (please report it): {}", crate::chain::panic_message(&*panic));
                            executions.iter().map(|_| Err(why.clone())).collect()
                        });
                    (executions, results)
                });
                // The blocking task cannot panic (caught above); a join error means shutdown.
                let Ok((executions, results)) = written.await else { return };
                for ((execution, result), reply) in executions.into_iter().zip(results).zip(replies) {
                    let _ = reply.send((execution, result));
                }
            }
        };
        engine.spawn_service(writer).ok().map(|_| Self { queue })
    }

    /// Records the execution with whatever else is queued; the store's error is returned.
    async fn record(&self, execution: Execution) -> (Execution, Result<(), String>) {
        let (reply, result) = tokio::sync::oneshot::channel();
        if let Err(refused) = self.queue.send((execution, reply)) {
            let (execution, _) = refused.0;
            return (execution, Err("the store writer has stopped".into()));
        }
        // The writer drops a queued execution only when the engine itself drops this run too.
        result.await.unwrap_or_else(|_| (Execution::default(), Err("the store writer has stopped".into())))
    }
}

/// Streamed output for the caller: (is stderr, chunk).
pub type OutputFn = dyn Fn(bool, &[u8]) + Send + Sync;

#[derive(Debug, Clone)]
pub struct Settings {
    pub node_name: String,
    /// Bytes of output kept in memory per execution (the tail).
    pub output_limit: usize,
    pub pipe_grace: Duration,
    /// Where output that outgrows `output_limit` is spooled for steps that want all of it.
    pub spool_dir: Option<PathBuf>,
    /// The base of Dkron's retry delay.
    pub retry_backoff: Duration,
    /// Bounds each plugin processor call.
    pub plugin_timeout: Option<Duration>,
    /// Contain each run in a cgroup where the machine allows it (else its process group).
    pub cgroups: bool,
}

/// Why a run was refused before it started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    Closed,
    /// `concurrency: forbid` and a run of the job is in flight.
    Concurrent(String),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Closed => f.write_str("this Executor is closed"),
            Self::Concurrent(job) => write!(f, "job '{job}' is already running and its concurrency is 'forbid'"),
        }
    }
}

/// One run in flight: how `cancel` (from any thread) and an interrupt reach it.
pub struct RunControl {
    job: String,
    cancelled: AtomicBool,
    stop: Arc<Notify>,
}

impl RunControl {
    /// Kills the attempt running now (or the next as it starts) and stops the retries.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
        self.stop.notify_one();
    }

    /// The caller gave up (Ctrl-C, a cancelled task): a cancel like any other, recorded in the
    /// same words.
    pub fn interrupt(&self) {
        self.cancel();
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }
}

pub struct Runtime {
    pub engine: Engine,
    /// Made when the first plugin is registered: a runtime without plugins has no host thread.
    plugins: Mutex<Option<Arc<PluginHost>>>,
    plugin_config: HostConfig,
    plugin_names: RwLock<HashSet<(Kind, String)>>,
    /// Plugins found on disk but refused (world-writable...), with why: a job naming one records it.
    refused_plugins: RwLock<HashMap<(Kind, String), String>>,
    recorder: Option<Arc<dyn Recorder>>,
    /// The recorder's writer for runs on the engine (batched); blocking runs record themselves.
    batch: Option<BatchWriter>,
    settings: Settings,
    sinks: Sinks,
    log_host: Arc<dyn log::Host>,
    runs: Mutex<HashMap<String, Vec<Arc<RunControl>>>>,
    isolation: Arc<Isolation>,
}

/// Dkron's backoff before attempt `attempt + 1`: `(log2(elapsed / base) + attempt) * base`, with
/// the logarithm floored at zero (Dkron's integer log2 makes short runs retry at once).
pub fn retry_delay(base: Duration, attempt: u32, elapsed: Duration) -> Duration {
    if base.is_zero() {
        return Duration::ZERO;
    }
    let runs = (elapsed.as_secs_f64() / base.as_secs_f64()).max(1.0);
    base.mul_f64(runs.log2() + f64::from(attempt))
}

impl Runtime {
    pub fn new(
        settings: Settings,
        worker_threads: usize,
        plugin_config: HostConfig,
        recorder: Option<Arc<dyn Recorder>>,
        log_host: Arc<dyn log::Host>,
    ) -> std::io::Result<Self> {
        let engine = Engine::new(worker_threads)?;
        let batch = recorder.clone().and_then(|r| BatchWriter::start(&engine, r));
        let isolation = Arc::new(Isolation::new(settings.cgroups));
        Ok(Self {
            isolation,
            engine,
            batch,
            plugins: Mutex::default(),
            plugin_config,
            plugin_names: RwLock::default(),
            refused_plugins: RwLock::default(),
            recorder,
            settings,
            sinks: Sinks::default(),
            log_host,
            runs: Mutex::default(),
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// How this runtime contains its jobs (cgroup or process group), and the watchdog.
    pub fn isolation(&self) -> &Arc<Isolation> {
        &self.isolation
    }

    /// Makes a plugin file known under its kind and name (a later one replaces it).
    pub fn register_plugin(&self, kind: Kind, name: &str, path: PathBuf) -> std::io::Result<()> {
        let mut host = self.plugins.lock().unwrap();
        if host.is_none() {
            let config = HostConfig { contain: Some(self.isolation.plugin_containment()), ..self.plugin_config.clone() };
            *host = Some(Arc::new(PluginHost::new(config)?));
        }
        host.as_ref().expect("just made").register(kind, name, path);
        self.plugin_names.write().unwrap().insert((kind, name.to_string()));
        Ok(())
    }

    /// The plugin host, once a plugin was registered.
    pub fn plugins(&self) -> Option<Arc<PluginHost>> {
        self.plugins.lock().unwrap().clone()
    }

    /// Remembers why a plugin file of that kind and name was not registered, for the error of
    /// the runs that name it.
    pub fn refuse_plugin(&self, kind: Kind, name: &str, why: &str) {
        self.refused_plugins.write().unwrap().insert((kind, name.to_string()), why.to_string());
    }

    /// Why a plugin was refused, if it was.
    fn refusal(&self, kind: Kind, name: &str) -> Option<String> {
        self.refused_plugins.read().unwrap().get(&(kind, name.to_string())).cloned()
    }

    pub fn has_plugin(&self, kind: Kind, name: &str) -> bool {
        self.plugin_names.read().unwrap().contains(&(kind, name.to_string()))
    }

    /// Registers a run of the plan (for `cancel` and `close`), enforcing `forbid` for this runtime.
    pub fn claim(&self, plan: &JobPlan) -> Result<Arc<RunControl>, Refused> {
        if self.engine.is_closed() {
            return Err(Refused::Closed);
        }
        let mut runs = self.runs.lock().unwrap();
        let running = runs.entry(plan.name.clone()).or_default();
        if plan.forbid && !running.is_empty() {
            return Err(Refused::Concurrent(plan.name.clone()));
        }
        let control = Arc::new(RunControl {
            job: plan.name.clone(),
            cancelled: AtomicBool::new(false),
            stop: Arc::new(Notify::new()),
        });
        running.push(control.clone());
        Ok(control)
    }

    fn release(&self, control: &Arc<RunControl>) {
        let mut runs = self.runs.lock().unwrap();
        if let Some(running) = runs.get_mut(&control.job) {
            running.retain(|c| !Arc::ptr_eq(c, control));
            if running.is_empty() {
                runs.remove(&control.job);
            }
        }
    }

    /// Kills the runs of `job` in flight and stops their retries; returns how many there were.
    pub fn cancel(&self, job: &str) -> usize {
        let runs: Vec<Arc<RunControl>> = self.runs.lock().unwrap().get(job).cloned().unwrap_or_default();
        runs.iter().for_each(|c| c.cancel());
        runs.len()
    }

    /// Runs the plan to its end on the calling thread (no thread hop). `interrupted` is asked
    /// every `poll`; when it says yes the run is interrupted and still completes and records its
    /// execution; the flag says so.
    pub fn run_here(
        self: &Arc<Self>,
        plan: &Arc<JobPlan>,
        control: Arc<RunControl>,
        on_output: Option<Arc<OutputFn>>,
        poll: Duration,
        interrupted: impl Fn() -> bool,
    ) -> std::io::Result<(Execution, bool)> {
        let give_up = control.clone();
        // Released however the run ends (a panic included), so `forbid` never sees a ghost run.
        let _claim = Claim(self, &control);
        // A step that waits (a plugin call) runs on this thread too: it asks the same question.
        let step_stop = || {
            let gave_up = !control.is_cancelled() && interrupted();
            if gave_up {
                control.interrupt();
            }
            control.is_cancelled() || self.engine.is_closed()
        };
        let run = self.run(plan, &control, on_output.as_deref(), Some(&step_stop));
        self.engine.block_on_here(run, poll, &interrupted, move || give_up.interrupt())
    }

    /// Starts the run on the engine's runtime; its end pushes `token` to `queue`.
    pub fn start(
        self: &Arc<Self>,
        plan: &Arc<JobPlan>,
        control: Arc<RunControl>,
        on_output: Option<Arc<OutputFn>>,
        notify: Option<(Arc<CompletionQueue>, u64)>,
    ) -> std::io::Result<Handle<Execution>> {
        let (rt, plan, ctl) = (self.clone(), plan.clone(), control.clone());
        let run = async move {
            let execution = rt.run::<fn() -> bool>(&plan, &ctl, on_output.as_deref(), None).await;
            rt.release(&ctl);
            execution
        };
        let (rt, ctl) = (self.clone(), control.clone());
        let lost = move || {
            rt.release(&ctl);
            rt.unstarted(&ctl.job, 0, 1, unix_nanos(), "the run was dropped: the Executor shut down".into())
        };
        self.engine.spawn(run, notify, lost).inspect_err(|_| self.release(&control))
    }

    /// The attempts of one run. With `inline` (the caller's thread), the chain runs on this
    /// thread whatever its steps, and its waiting steps ask `inline` whether to stop; without,
    /// a chain whose steps may block moves to the blocking pool.
    async fn run<S: Fn() -> bool>(
        self: &Arc<Self>,
        plan: &Arc<JobPlan>,
        control: &Arc<RunControl>,
        on_output: Option<&OutputFn>,
        inline: Option<&S>,
    ) -> Execution {
        let group = unix_nanos() as i64;
        let chain = Arc::new(self.bind(plan));
        let mut attempt = 1;
        loop {
            let began = Instant::now();
            let (execution, spool) = self.attempt(plan, control, group, attempt, on_output).await;
            let execution = match inline {
                Some(stop) => self.process_chain(&chain, execution, spool, stop),
                None if !chain.may_block() => self.process_chain(&chain, execution, spool, &|| control.is_cancelled()),
                None => {
                    let (rt, chain2, ctl) = (self.clone(), chain.clone(), control.clone());
                    let stop = move || ctl.is_cancelled() || rt.engine.is_closed();
                    let rt = self.clone();
                    let blocking = tokio::task::spawn_blocking(move || rt.process_chain(&chain2, execution, spool, &stop));
                    match blocking.await {
                        Ok(e) => e,
                        Err(join) => self.unstarted(&plan.name, group, attempt, unix_nanos(), format!("the chain failed: {join}")),
                    }
                }
            };
            let execution = self.record(execution, inline.is_none()).await;
            if execution.success || attempt > plan.retries || control.is_cancelled() || self.engine.is_closed() {
                return execution;
            }
            let delay = retry_delay(self.settings.retry_backoff, attempt, began.elapsed());
            let shutdown = self.engine.shutdown_signal();
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = control.stop.notified() => return execution,
                _ = shutdown.notified() => return execution,
            }
            attempt += 1;
        }
    }

    /// One attempt by the job's executor; the spool of its complete output, if one was made.
    async fn attempt(
        &self,
        plan: &JobPlan,
        control: &RunControl,
        group: i64,
        attempt: u32,
        on_output: Option<&OutputFn>,
    ) -> (Execution, Option<(PathBuf, bool)>) {
        let s = &self.settings;
        let shutdown = self.engine.shutdown_signal();
        let outcome = match &plan.executor {
            ExecutorPlan::Shell(config) => {
                let started_ns = unix_nanos();
                let mut spec = match config.to_spec(&plan.name) {
                    Ok(spec) => spec,
                    Err(why) => return (self.unstarted(&plan.name, group, attempt, started_ns, why), None),
                };
                spec.output_limit = s.output_limit;
                spec.pipe_grace = s.pipe_grace;
                let limit = plan.spool_limit();
                spec.spool = s.spool_dir.clone().filter(|_| limit > 0).map(|dir| SpoolSpec { dir, limit });
                spec.containment = Some(Arc::new(self.isolation.contain(spec.keep_daemons, spec.mem_limit)));
                match job::spawn(&spec) {
                    Err(err) => job::spawn_failure(&spec, &err, started_ns),
                    Ok(started) => job::supervise(started, spec, started_ns, control.stop.clone(), shutdown).await,
                }
            }
            ExecutorPlan::Plugin(p) => {
                let Some(host) = self.plugins().filter(|_| self.has_plugin(Kind::Executor, &p.name)) else {
                    let why = match self.refusal(Kind::Executor, &p.name) {
                        Some(refused) => format!("executor '{}' is not available: its plugin was refused: {refused}", p.name),
                        None => format!("executor '{}' is not available: no dkron-executor-{} plugin is installed", p.name, p.name),
                    };
                    return (self.unstarted(&plan.name, group, attempt, unix_nanos(), why), None);
                };
                let a = plugin::Attempt {
                    host: &host,
                    job_name: &plan.name,
                    output_limit: s.output_limit,
                    stop: &control.stop,
                    shutdown: &shutdown,
                    on_output,
                };
                p.run(a).await
            }
        };
        // A cancelled run's executor already named the job in its error and output's last line,
        // in the same words however it was cancelled.
        let spool = outcome.spool.clone().map(|p| (p, outcome.spool_complete));
        (self.execution(&plan.name, group, attempt, outcome), spool)
    }

    fn execution(&self, job: &str, group: i64, attempt: u32, o: Outcome) -> Execution {
        let node = &self.settings.node_name;
        let started_ns = o.started_ns as i64;
        let error = o.error;
        Execution {
            job_name: job.to_string(),
            key: make_key(started_ns, node),
            started_ns,
            finished_ns: Some(o.finished_ns as i64),
            success: error.is_none(),
            output: o.output,
            node_name: node.clone(),
            group,
            attempt,
            exit_code: o.exit_code,
            error,
            output_truncated: o.truncated,
            output_size: o.output_total,
            processor_errors: o.spool_error.map(|e| vec![format!("spool: {e}")]).unwrap_or_default(),
            cpu_time_us: o.usage.cpu_time_us,
            peak_memory: o.usage.peak_memory,
        }
    }

    /// The execution of an attempt that could not even start.
    fn unstarted(&self, job: &str, group: i64, attempt: u32, started_ns: u128, why: String) -> Execution {
        let mut output = why.clone().into_bytes();
        output.push(b'\n');
        let node = &self.settings.node_name;
        Execution {
            job_name: job.to_string(),
            key: make_key(started_ns as i64, node),
            started_ns: started_ns as i64,
            finished_ns: Some(unix_nanos() as i64),
            success: false,
            output,
            node_name: node.clone(),
            group,
            attempt,
            error: Some(why),
            ..Default::default()
        }
    }

    /// The chain (its failures are recorded on the execution), then the spool is removed.
    fn process_chain(&self, chain: &Chain, execution: Execution, spool: Option<(PathBuf, bool)>, stop: &dyn Fn() -> bool) -> Execution {
        let ctx = StepContext {
            node_name: &self.settings.node_name,
            full_output: spool.as_ref().map(|(path, complete)| (path.as_path(), *complete)),
            stop,
        };
        let execution = chain.run(execution, &ctx);
        if let Some((path, _)) = spool {
            let _ = std::fs::remove_file(path);
        }
        execution
    }

    /// The store gets the execution, always; its failure is recorded on the execution. On the
    /// engine (`batched`), executions that finish together share one transaction.
    async fn record(&self, mut execution: Execution, batched: bool) -> Execution {
        let result = match (&self.recorder, &self.batch) {
            (None, _) => return execution,
            (Some(_), Some(batch)) if batched => {
                let (recorded, result) = batch.record(execution).await;
                execution = recorded;
                result
            }
            (Some(recorder), _) => recorder.record(&execution),
        };
        if let Err(why) = result {
            execution.processor_errors.push(format!("store: {why}"));
        }
        execution
    }

    /// Passes an execution through the plan's chain, without running or storing anything.
    pub fn process(&self, plan: &JobPlan, execution: Execution) -> Execution {
        self.process_repeated(plan, execution, 1)
    }

    /// `process` `repeat` times, the i-th copy's key ending `-<i>` (from the second on): what a
    /// benchmark needs to time the steps themselves. Returns the last result.
    pub fn process_repeated(&self, plan: &JobPlan, execution: Execution, repeat: usize) -> Execution {
        let ctx = StepContext::new(&self.settings.node_name);
        let chain = self.bind(plan);
        let mut last = chain.run(execution.clone(), &ctx);
        for i in 1..repeat {
            let copy = Execution { key: format!("{}-{i}", execution.key), ..execution.clone() };
            last = chain.run(copy, &ctx);
        }
        last
    }

    /// The plan's steps, bound to this runtime's sinks and plugins.
    pub fn bind(&self, plan: &JobPlan) -> Chain {
        let host = self.plugins();
        let steps = plan.steps.iter().map(|s| {
            let step: Arc<dyn Step> = match &s.kind {
                StepKind::Files(c) => Arc::new(FilesStep::new(c.clone())),
                StepKind::Log(c) => Arc::new(LogStep::new(c.clone(), self.log_host.clone())),
                StepKind::Syslog(c) => Arc::new(SyslogStep::new(self.sinks.get(c))),
                StepKind::Plugin(config) => match host.as_ref().filter(|_| self.has_plugin(Kind::Processor, &s.name)) {
                    Some(host) => Arc::new(PluginStep {
                        host: host.clone(),
                        name: s.name.clone(),
                        config: config.clone(),
                        timeout: self.settings.plugin_timeout,
                    }),
                    None => Arc::new(Missing { refused: self.refusal(Kind::Processor, &s.name) }),
                },
            };
            ChainStep { name: s.name.clone(), forward: s.forward, step }
        });
        Chain { steps: steps.collect() }
    }

    pub fn in_flight(&self) -> usize {
        self.engine.in_flight()
    }

    /// Kills every job still running, waits up to `grace` for their executions to be recorded,
    /// then stops the plugins and closes the syslog connections. Idempotent.
    pub fn close(&self, grace: Duration) {
        self.engine.shutdown(grace);
        if let Some(host) = self.plugins() {
            host.close(Duration::from_secs(2));
        }
        // After the runs and the plugins' polite stop: what a dropped run or a plugin left in the
        // Executor's cgroup (or, without one, under its marker) dies here.
        self.isolation.close();
        for report in self.sinks.close() {
            self.log_host.warning("dkron_exec.processors.syslog", &report);
        }
    }
}

/// A claimed run, released when dropped.
struct Claim<'a>(&'a Runtime, &'a Arc<RunControl>);

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.0.release(self.1);
    }
}

/// A `dkron-processor-NAME` plugin as a chain step.
struct PluginStep {
    host: Arc<PluginHost>,
    name: String,
    config: HashMap<String, String>,
    timeout: Option<Duration>,
}

impl Step for PluginStep {
    fn process(&self, e: &Execution, ctx: &StepContext<'_>) -> Result<Processed, String> {
        let mut config = self.config.clone();
        config.insert("reporting_node".into(), ctx.node_name.to_string());
        let mut stop = || (ctx.stop)();
        self.host
            .process_interruptible(&self.name, e, &e.output, &config, self.timeout, &mut stop)
            .map(Processed::Replaced)
            .map_err(|f| f.message)
    }

    fn may_block(&self) -> bool {
        true
    }
}
