//! The registry of plugins and the blocking API the binding and the chain use. The host owns one
//! thread running a current-thread tokio runtime: every plugin process is forked from that thread
//! (so its death signal fires only when the host goes away), and every plugin's supervisor task
//! runs there. Calls do not go through that thread: a caller takes the plugin's ready channel and
//! writes and reads it itself (`conn`); only starting a process needs the supervisor.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};

use super::codec::{self, Frame, MAX_FRAME};
use super::conn::{CallError, Request, SLICE};
use super::logs::LogQueue;
use super::supervisor::{CallSink, Cmd, Published, Ready, Supervisor};
use super::{FailureKind, Kind, PluginFailure, PluginSpec};
use crate::execution::Execution;

#[derive(Debug, Clone)]
pub struct HostConfig {
    pub start_timeout: Duration,
    pub cancel_grace: Duration,
    pub stop_grace: Duration,
    pub backoff_max: Duration,
    pub max_frame: usize,
    /// Where plugins are contained with the runs (set by the runtime from its isolation).
    pub contain: Option<super::spawn::Contain>,
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            start_timeout: Duration::from_secs(10),
            cancel_grace: Duration::from_secs(1),
            stop_grace: Duration::from_secs(2),
            backoff_max: Duration::from_secs(5),
            max_frame: MAX_FRAME,
            contain: None,
        }
    }
}

/// A registered plugin: its supervisor, and the channel it publishes once the process is ready.
struct Plugin {
    spec: Arc<PluginSpec>,
    who: String,
    published: Arc<Published>,
    cmds: mpsc::UnboundedSender<Cmd>,
}

impl Plugin {
    fn failure(&self, kind: FailureKind, what: impl std::fmt::Display) -> PluginFailure {
        PluginFailure { kind, message: format!("{}: {what}", self.who) }
    }

    /// The ready channel: the published one, or (hop to the host thread) a new process.
    fn conn(
        &self,
        deadline: Option<Instant>,
        timeout: Option<Duration>,
        interrupted: &mut dyn FnMut() -> bool,
    ) -> Result<Ready, PluginFailure> {
        if let Some(conn) = self.published.conn.lock().unwrap().clone() {
            if conn.usable() {
                return Ok(conn);
            }
        }
        let stopped = || self.failure(FailureKind::Stopped, "the plugin host is shutting down");
        let (reply, answer) = std::sync::mpsc::channel();
        self.cmds.send(Cmd::Want { reply, deadline }).map_err(|_| stopped())?;
        loop {
            let slice = deadline.map_or(SLICE, |d| d.saturating_duration_since(Instant::now()).min(SLICE));
            match answer.recv_timeout(slice) {
                Ok(result) => return result,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return Err(stopped()),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                let why = format!("call timed out after {:?}: the plugin had not completed its handshake", timeout.unwrap_or_default());
                return Err(self.failure(FailureKind::Timeout, why));
            }
            if interrupted() {
                return Err(self.failure(FailureKind::Cancelled, "the call was cancelled"));
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn call(
        &self,
        id: u64,
        head: &[u8],
        body: &[u8],
        clock: Clock,
        timeout: Option<Duration>,
        sink: Option<Arc<dyn CallSink>>,
        interrupted: &mut dyn FnMut() -> bool,
    ) -> Result<Frame, PluginFailure> {
        // A channel that failed just before the call was sent is retried on the next process.
        for _ in 0..3 {
            let wait = match clock {
                Clock::FromCall(deadline) => deadline,
                Clock::FromReady => None,
            };
            let conn = match self.conn(wait, timeout, interrupted)? {
                Ready::Ours(conn) => conn,
                Ready::Go(_) => {
                    let why = "is a Dkron go-plugin processor: it only takes process calls";
                    return Err(self.failure(FailureKind::Protocol, why));
                }
                Ready::GoExec(_) => {
                    let why = "is a Dkron go-plugin executor: it only takes execute calls";
                    return Err(self.failure(FailureKind::Protocol, why));
                }
            };
            let deadline = match clock {
                Clock::FromCall(deadline) => deadline,
                Clock::FromReady => timeout.map(|t| Instant::now() + t),
            };
            let req = Request { id, head, body, deadline, timeout, sink: sink.clone() };
            match conn.call(req, interrupted) {
                Ok(frame) => return Ok(frame),
                Err(CallError::Failed(failure)) => return Err(failure),
                Err(CallError::Stale) => {}
            }
        }
        Err(self.failure(FailureKind::Crashed, "the plugin kept failing before the call could be sent"))
    }
}

/// When a call's timeout starts. A processor call's `plugin_timeout` covers the plugin's start-up
/// (a plugin that has not said hello by then is killed); an executor's timeout is the job's, as in
/// Dkron, so it starts once the plugin is ready (start-up is bounded by the start timeout).
#[derive(Debug, Clone, Copy)]
enum Clock {
    /// The deadline, set when the call was made.
    FromCall(Option<Instant>),
    FromReady,
}

pub struct PluginHost {
    handle: Handle,
    thread: Mutex<Option<JoinHandle<()>>>,
    quit: Mutex<Option<oneshot::Sender<()>>>,
    closed: AtomicBool,
    plugins: Mutex<HashMap<(Kind, String), Arc<Plugin>>>,
    logs: Arc<LogQueue>,
    next_id: AtomicU64,
    config: HostConfig,
}

/// A call in flight, for cancelling it.
#[derive(Clone)]
pub struct CallRef {
    cancelled: Arc<AtomicBool>,
    pub id: u64,
}

impl CallRef {
    /// The call fails with "cancelled" (within a few milliseconds) and the plugin is sent `cancel`.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }
}


impl PluginHost {
    pub fn new(config: HostConfig) -> std::io::Result<Self> {
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let (quit_tx, quit_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new().name("dkron-exec-plugins".into()).spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
            match runtime {
                Err(e) => {
                    let _ = handle_tx.send(Err(e));
                }
                Ok(rt) => {
                    let _ = handle_tx.send(Ok(rt.handle().clone()));
                    rt.block_on(async {
                        let _ = quit_rx.await;
                    });
                    // Every task is dropped (children are kill_on_drop); calls driven by the
                    // blocking pool have been failed by the stop and end within a slice.
                    rt.shutdown_timeout(Duration::from_secs(1));
                }
            }
        })?;
        let handle = handle_rx.recv().map_err(|_| std::io::Error::other("the plugin host thread died"))??;
        Ok(Self {
            handle,
            thread: Mutex::new(Some(thread)),
            quit: Mutex::new(Some(quit_tx)),
            closed: AtomicBool::new(false),
            plugins: Mutex::new(HashMap::new()),
            logs: Arc::new(LogQueue::default()),
            next_id: AtomicU64::new(1),
            config,
        })
    }

    pub fn logs(&self) -> Arc<LogQueue> {
        self.logs.clone()
    }

    /// Makes a plugin known. Registering another path under the same name replaces the old
    /// plugin (its process is stopped once no call uses it any more).
    pub fn register(&self, kind: Kind, name: &str, path: PathBuf) {
        let mut plugins = self.plugins.lock().unwrap();
        let key = (kind, name.to_string());
        if plugins.get(&key).is_some_and(|p| p.spec.path == path) || self.closed.load(Ordering::Relaxed) {
            return;
        }
        let c = &self.config;
        let spec = Arc::new(PluginSpec {
            kind,
            name: name.to_string(),
            path,
            start_timeout: c.start_timeout,
            cancel_grace: c.cancel_grace,
            stop_grace: c.stop_grace,
            backoff_max: c.backoff_max,
            max_frame: c.max_frame,
            contain: c.contain.clone(),
        });
        let who = format!("plugin {} '{}' ({})", kind.as_str(), spec.name, spec.path.display());
        let published = Arc::new(Published::default());
        let (cmds, rx) = mpsc::unbounded_channel();
        self.handle.spawn(Supervisor::new(spec.clone(), self.logs.clone(), published.clone(), rx).run());
        // Replacing drops the old plugin: its supervisor stops its process when the last call ends.
        plugins.insert(key, Arc::new(Plugin { spec, who, published, cmds }));
    }

    fn plugin(&self, kind: Kind, name: &str) -> Result<Arc<Plugin>, PluginFailure> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(PluginFailure { kind: FailureKind::Stopped, message: "the plugin host is closed".into() });
        }
        self.plugins.lock().unwrap().get(&(kind, name.to_string())).cloned().ok_or_else(|| PluginFailure {
            kind: FailureKind::Start,
            message: format!("no {} plugin named '{name}' is registered", kind.as_str()),
        })
    }

    /// One processor call, blocking the calling thread. Must not be called from inside a tokio
    /// runtime. The answer is merged into a copy of `execution` (docs/PROTOCOL.md §4.2).
    pub fn process(
        &self,
        name: &str,
        execution: &Execution,
        config: &HashMap<String, String>,
        timeout: Option<Duration>,
    ) -> Result<Execution, PluginFailure> {
        self.process_interruptible(name, execution, &execution.output, config, timeout, &mut || false)
    }

    /// `process` with the output given apart (`execution.output` is not read: the binding lends
    /// a Python buffer), asking `interrupted` at least every few milliseconds while it waits;
    /// true cancels the call (Ctrl-C in the binding).
    pub fn process_interruptible(
        &self,
        name: &str,
        execution: &Execution,
        output: &[u8],
        config: &HashMap<String, String>,
        timeout: Option<Duration>,
        interrupted: &mut dyn FnMut() -> bool,
    ) -> Result<Execution, PluginFailure> {
        let plugin = self.plugin(Kind::Processor, name)?;
        let deadline = timeout.map(|t| Instant::now() + t);
        let answer = match process_go(&plugin, execution, output, config, deadline, timeout, interrupted) {
            Some(result) => result,
            None => self.process_ours(&plugin, execution, output, config, deadline, timeout, interrupted),
        };
        let mut next = answer?;
        let changed = next.keep_identity_of(execution);
        if !changed.is_empty() {
            next.processor_errors.push(format!(
                "{name}: the answer changed {}, which identify the execution and are the host's; kept the host's",
                changed.join(", ")
            ));
        }
        Ok(next)
    }

    #[allow(clippy::too_many_arguments)]
    fn process_ours(
        &self,
        plugin: &Plugin,
        execution: &Execution,
        output: &[u8],
        config: &HashMap<String, String>,
        deadline: Option<Instant>,
        timeout: Option<Duration>,
        interrupted: &mut dyn FnMut() -> bool,
    ) -> Result<Execution, PluginFailure> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let head = codec::execution_head("process", id, execution, Some(config))
            .and_then(|head| codec::finish_head(head, output.len(), self.config.max_frame))
            .map_err(|e| plugin.failure(FailureKind::Protocol, format!("request not sent: {e}")))?;
        let Frame { header, body } = plugin.call(id, &head, output, Clock::FromCall(deadline), timeout, None, interrupted)?;
        let mut next = execution.clone_without_output();
        let empty = Map::new();
        let fields = match header.get("execution") {
            Some(Value::Object(fields)) => fields,
            None | Some(Value::Null) => &empty,
            Some(other) => {
                let why = format!("answered with an execution that is not an object: {other}");
                return Err(plugin.failure(FailureKind::Protocol, why));
            }
        };
        next.merge_protocol_fields(fields, body)
            .map_err(|e| plugin.failure(FailureKind::Protocol, format!("answered with an unusable execution: {e}")))?;
        Ok(next)
    }

    /// Sends a call; its output and answer go to `sink` (from any thread). The plugin starts if
    /// it is not running. The call is driven by a thread of the host's blocking pool.
    pub fn call(
        &self,
        kind: Kind,
        name: &str,
        mut header: Map<String, Value>,
        body: Vec<u8>,
        timeout: Option<Duration>,
        sink: Arc<dyn CallSink>,
    ) -> Result<CallRef, PluginFailure> {
        let plugin = self.plugin(kind, name)?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let cancelled = Arc::new(AtomicBool::new(false));
        let flag = cancelled.clone();
        let max = self.config.max_frame;
        self.handle.spawn_blocking(move || {
            let interrupted = &mut || flag.load(Ordering::Relaxed);
            if let Some(result) = execute_go(&plugin, &header, timeout, &sink, interrupted) {
                sink.finish(result);
                return;
            }
            header.insert("id".into(), Value::from(id));
            let head = serde_json::to_vec(&header)
                .map_err(|e| codec::CodecError::Malformed(e.to_string()))
                .and_then(|h| codec::encode_head(&h, body.len(), max))
                .map_err(|e| plugin.failure(FailureKind::Protocol, format!("request not sent: {e}")));
            let result = head.and_then(|head| {
                plugin.call(id, &head, &body, Clock::FromReady, timeout, Some(sink.clone()), interrupted)
            });
            sink.finish(result);
        });
        Ok(CallRef { cancelled, id })
    }

    /// The pid of the plugin's running process, if it runs.
    pub fn pid(&self, kind: Kind, name: &str) -> Option<u32> {
        let plugin = self.plugins.lock().unwrap().get(&(kind, name.to_string())).cloned()?;
        let pid = plugin.published.pid.load(Ordering::Relaxed);
        (pid != 0).then_some(pid)
    }

    /// Stops every plugin (shutdown, `grace`, SIGKILL) and the host thread. Idempotent.
    pub fn close(&self, grace: Duration) {
        let Some(quit) = self.quit.lock().unwrap().take() else { return };
        self.closed.store(true, Ordering::Relaxed);
        let plugins: Vec<_> = self.plugins.lock().unwrap().drain().map(|(_, p)| p).collect();
        let waits: Vec<_> = plugins
            .iter()
            .filter_map(|p| {
                let (done, rx) = std::sync::mpsc::channel();
                p.cmds.send(Cmd::Stop { grace, done }).ok().map(|_| rx)
            })
            .collect();
        let deadline = Instant::now() + grace + Duration::from_secs(3);
        for rx in waits {
            let _ = rx.recv_timeout(deadline.saturating_duration_since(Instant::now()));
        }
        let _ = quit.send(());
        if let Some(t) = self.thread.lock().unwrap().take() {
            let _ = t.join();
        }
        self.logs.close();
    }
}

/// A process call on a Dkron go-plugin processor, or None when the plugin speaks our protocol
/// (or has not started yet and turns out to speak it). Starts the plugin if it is not running;
/// a channel that failed before the call was sent is retried on the next process.
fn process_go(
    plugin: &Plugin,
    execution: &Execution,
    output: &[u8],
    config: &HashMap<String, String>,
    deadline: Option<Instant>,
    timeout: Option<Duration>,
    interrupted: &mut dyn FnMut() -> bool,
) -> Option<Result<Execution, PluginFailure>> {
    for _ in 0..3 {
        let client = match plugin.conn(deadline, timeout, interrupted) {
            Ok(Ready::Go(client)) => client,
            Ok(Ready::Ours(_) | Ready::GoExec(_)) => return None,
            Err(failure) => return Some(Err(failure)),
        };
        if client.usable() {
            return Some(client.process(execution, output, config, deadline, timeout, interrupted));
        }
    }
    Some(Err(plugin.failure(FailureKind::Crashed, "the plugin kept failing before the call could be sent")))
}

/// An execute call on a Dkron go-plugin executor (job name and config taken from the call's
/// header), or None when the plugin is not one. Starts the plugin if it is not running (bounded
/// by the start timeout); as for our executors, the job's timeout runs from when it is ready. A
/// client that failed before the call was sent is retried on the next process.
fn execute_go(
    plugin: &Plugin,
    header: &Map<String, Value>,
    timeout: Option<Duration>,
    sink: &Arc<dyn CallSink>,
    interrupted: &mut dyn FnMut() -> bool,
) -> Option<Result<Frame, PluginFailure>> {
    for _ in 0..3 {
        let client = match plugin.conn(None, timeout, interrupted) {
            Ok(Ready::GoExec(client)) => client,
            Ok(Ready::Ours(_) | Ready::Go(_)) => return None,
            Err(failure) => return Some(Err(failure)),
        };
        if client.usable() {
            let job_name = header.get("job_name").and_then(Value::as_str).unwrap_or_default();
            // Dkron sends the executor config as a map of strings.
            let config = match header.get("config") {
                Some(Value::Object(c)) => c.iter().map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_string))).collect(),
                _ => Default::default(),
            };
            let deadline = timeout.map(|t| Instant::now() + t);
            return Some(client.execute(job_name, config, deadline, timeout, sink.clone(), interrupted));
        }
    }
    Some(Err(plugin.failure(FailureKind::Crashed, "the plugin kept failing before the call could be sent")))
}

impl Drop for PluginHost {
    fn drop(&mut self) {
        self.close(self.config.stop_grace);
    }
}
