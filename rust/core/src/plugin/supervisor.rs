//! One task per plugin: starts the process on first use, does the handshake, multiplexes calls
//! by request id, enforces timeouts, and restarts a crashed plugin (with backoff) when the next
//! call comes. Every failure of the process fails the calls in flight with an error naming the
//! plugin, and the process is killed.

use std::collections::{HashMap, VecDeque};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Child;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{sleep_until, timeout, Instant};

use super::codec::{self, header, CodecError, Frame};
use super::logs::{LineSplitter, LogQueue};
use super::spawn::{self, Launched};
use super::{FailureKind, PluginFailure, PluginSpec, PROTOCOL_VERSIONS};

/// Where a call's streamed output and final answer go.
pub trait CallSink: Send + Sync {
    fn output(&self, stderr: bool, data: &[u8]);
    fn finish(&self, result: Result<Frame, PluginFailure>);
}

pub enum Cmd {
    Call { id: u64, header: Map<String, Value>, body: Vec<u8>, timeout: Option<Duration>, sink: Arc<dyn CallSink> },
    Cancel { id: u64 },
    Pid { reply: std::sync::mpsc::Sender<Option<u32>> },
    Stop { grace: Duration, done: std::sync::mpsc::Sender<()> },
}

enum Incoming {
    Frame(Frame),
    Broken(CodecError),
    Eof,
}

/// Lines of stderr kept to explain a failure.
const STDERR_TAIL: usize = 10;
const LINE_MAX: usize = 64 * 1024;

struct Pending {
    id: u64,
    header: Map<String, Value>,
    body: Vec<u8>,
    deadline: Option<Instant>,
    timeout: Option<Duration>,
    sink: Arc<dyn CallSink>,
}

struct Running {
    child: Child,
    pid: u32,
    writer: mpsc::UnboundedSender<Vec<u8>>,
    ready: bool,
    start_deadline: Instant,
    max_in_flight: usize,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    stderr_done: Option<oneshot::Receiver<()>>,
}

pub struct Supervisor {
    spec: Arc<PluginSpec>,
    logs: Arc<LogQueue>,
    cmds: mpsc::UnboundedReceiver<Cmd>,
    incoming_tx: mpsc::UnboundedSender<(u64, Incoming)>,
    incoming: mpsc::UnboundedReceiver<(u64, Incoming)>,
    /// Bumped at every launch, so messages from a dead instance's reader are ignored.
    generation: u64,
    proc: Option<Running>,
    failures: u32,
    retry_at: Option<Instant>,
    queued: VecDeque<Pending>,
    in_flight: HashMap<u64, Pending>,
    /// Calls we gave up on and sent `cancel` for: the plugin must answer by the deadline.
    cancelled: HashMap<u64, Instant>,
}

enum Event {
    Cmd(Option<Cmd>),
    Incoming(u64, Incoming),
    Exited(std::io::Result<ExitStatus>),
    Tick,
}

async fn wait_child(proc: Option<&mut Running>) -> std::io::Result<ExitStatus> {
    match proc {
        Some(p) => p.child.wait().await,
        None => std::future::pending().await,
    }
}

async fn at(deadline: Option<Instant>) {
    match deadline {
        Some(d) => sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn describe_status(status: &std::io::Result<ExitStatus>) -> String {
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(c), _) => format!("exit status {c}"),
            (_, Some(sig)) => format!("killed by signal {sig}"),
            _ => s.to_string(),
        },
        Err(e) => format!("status unknown: {e}"),
    }
}

impl Supervisor {
    pub fn new(spec: Arc<PluginSpec>, logs: Arc<LogQueue>, cmds: mpsc::UnboundedReceiver<Cmd>) -> Self {
        let (incoming_tx, incoming) = mpsc::unbounded_channel();
        Self {
            spec,
            logs,
            cmds,
            incoming_tx,
            incoming,
            generation: 0,
            proc: None,
            failures: 0,
            retry_at: None,
            queued: VecDeque::new(),
            in_flight: HashMap::new(),
            cancelled: HashMap::new(),
        }
    }

    pub async fn run(mut self) {
        loop {
            let deadline = self.next_deadline();
            let event = tokio::select! {
                cmd = self.cmds.recv() => Event::Cmd(cmd),
                Some((generation, inc)) = self.incoming.recv() => Event::Incoming(generation, inc),
                status = wait_child(self.proc.as_mut()) => Event::Exited(status),
                _ = at(deadline) => Event::Tick,
            };
            match event {
                Event::Cmd(None) => {
                    self.stop(self.spec.stop_grace).await;
                    return;
                }
                Event::Cmd(Some(Cmd::Stop { grace, done })) => {
                    self.stop(grace).await;
                    let _ = done.send(());
                    return;
                }
                Event::Cmd(Some(cmd)) => self.on_cmd(cmd),
                Event::Incoming(generation, inc) if generation == self.generation => self.on_incoming(inc).await,
                Event::Incoming(..) => {}
                Event::Exited(status) => self.on_exit(status).await,
                Event::Tick => self.on_tick().await,
            }
            self.pump().await;
        }
    }

    fn who(&self) -> String {
        format!("plugin {} '{}' ({})", self.spec.kind.as_str(), self.spec.name, self.spec.path.display())
    }

    fn failure(&self, kind: FailureKind, what: impl std::fmt::Display) -> PluginFailure {
        PluginFailure { kind, message: format!("{}: {what}", self.who()) }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |d: Option<Instant>| {
            if let Some(d) = d {
                next = Some(next.map_or(d, |n| n.min(d)));
            }
        };
        if let Some(p) = &self.proc {
            if !p.ready {
                consider(Some(p.start_deadline));
            }
        } else if !self.queued.is_empty() {
            consider(self.retry_at);
        }
        for p in self.queued.iter().chain(self.in_flight.values()) {
            consider(p.deadline);
        }
        for d in self.cancelled.values() {
            consider(Some(*d));
        }
        next
    }

    fn on_cmd(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Call { id, header, body, timeout, sink } => {
                let deadline = timeout.map(|t| Instant::now() + t);
                self.queued.push_back(Pending { id, header, body, deadline, timeout, sink });
            }
            Cmd::Cancel { id } => {
                if let Some(pos) = self.queued.iter().position(|p| p.id == id) {
                    let p = self.queued.remove(pos).unwrap();
                    p.sink.finish(Err(self.failure(FailureKind::Cancelled, "the call was cancelled")));
                } else if let Some(p) = self.in_flight.remove(&id) {
                    p.sink.finish(Err(self.failure(FailureKind::Cancelled, "the call was cancelled")));
                    self.send_cancel(id);
                }
            }
            Cmd::Pid { reply } => {
                let _ = reply.send(self.proc.as_ref().map(|p| p.pid));
            }
            Cmd::Stop { .. } => unreachable!("handled in run"),
        }
    }

    fn send_cancel(&mut self, id: u64) {
        if let Some(p) = &self.proc {
            if let Ok(bytes) = codec::encode(&header([("type", json!("cancel")), ("id", json!(id))]), &[], usize::MAX) {
                let _ = p.writer.send(bytes);
            }
            self.cancelled.insert(id, Instant::now() + self.spec.cancel_grace);
        }
    }

    async fn on_tick(&mut self) {
        let now = Instant::now();
        if let Some(p) = &self.proc {
            if !p.ready && now >= p.start_deadline {
                let why = format!("did not complete the handshake within {:?}; killed", self.spec.start_timeout);
                self.fail_process(FailureKind::Start, why).await;
                return;
            }
        }
        if self.cancelled.values().any(|d| now >= *d) {
            let why = format!(
                "hung: did not answer a timed-out or cancelled call within {:?} of the cancel; killed",
                self.spec.cancel_grace
            );
            self.fail_process(FailureKind::Timeout, why).await;
            return;
        }
        let expired_q: Vec<Pending> = {
            let (gone, keep): (Vec<_>, Vec<_>) =
                self.queued.drain(..).partition(|p| p.deadline.is_some_and(|d| now >= d));
            self.queued = keep.into();
            gone
        };
        for p in expired_q {
            let why = format!("call timed out after {:?} (the plugin was not ready)", p.timeout.unwrap_or_default());
            p.sink.finish(Err(self.failure(FailureKind::Timeout, why)));
        }
        let expired: Vec<u64> =
            self.in_flight.values().filter(|p| p.deadline.is_some_and(|d| now >= d)).map(|p| p.id).collect();
        for id in expired {
            let p = self.in_flight.remove(&id).unwrap();
            let why = format!("call timed out after {:?}", p.timeout.unwrap_or_default());
            p.sink.finish(Err(self.failure(FailureKind::Timeout, why)));
            self.send_cancel(id);
        }
    }

    /// Starts the process when calls wait for it, and sends queued calls up to the plugin's limit.
    async fn pump(&mut self) {
        if self.proc.is_none() && !self.queued.is_empty() {
            if self.retry_at.is_some_and(|r| Instant::now() < r) {
                return;
            }
            if let Err(e) = self.launch() {
                let failure = self.failure(FailureKind::Start, format!("could not be started: {e}"));
                self.note_failure();
                self.fail_all(&failure);
            }
            return;
        }
        let Some(p) = &self.proc else { return };
        if !p.ready {
            return;
        }
        while self.in_flight.len() < p.max_in_flight {
            let Some(mut call) = self.queued.pop_front() else { break };
            call.header.insert("id".into(), json!(call.id));
            match codec::encode(&call.header, &call.body, self.spec.max_frame) {
                Ok(bytes) => {
                    call.body = Vec::new();
                    let _ = p.writer.send(bytes);
                    self.in_flight.insert(call.id, call);
                }
                Err(e) => call.sink.finish(Err(self.failure(FailureKind::Protocol, format!("request not sent: {e}")))),
            }
        }
    }

    fn launch(&mut self) -> std::io::Result<()> {
        let Launched { mut child, channel, pid } =
            spawn::launch(&self.spec.path, self.spec.kind, &self.spec.name, self.spec.max_frame)?;
        self.generation += 1;
        let generation = self.generation;
        let (mut reader, mut writer) = channel.into_split();
        let (wtx, mut wrx) = mpsc::unbounded_channel::<Vec<u8>>();
        tokio::spawn(async move {
            while let Some(bytes) = wrx.recv().await {
                if writer.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            // Dropping the writer half shuts down our side: the plugin reads EOF.
        });
        let itx = self.incoming_tx.clone();
        let max = self.spec.max_frame;
        tokio::spawn(async move {
            loop {
                let inc = match codec::read_frame(&mut reader, max).await {
                    Ok(Some(f)) => Incoming::Frame(f),
                    Ok(None) => Incoming::Eof,
                    Err(e) => Incoming::Broken(e),
                };
                let last = !matches!(inc, Incoming::Frame(_));
                if itx.send((generation, inc)).is_err() || last {
                    return;
                }
            }
        });
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        if let Some(out) = child.stdout.take() {
            tokio::spawn(pump_lines(out, self.logs.clone(), self.spec.name.clone(), "stdout", None, None));
        }
        let (done_tx, done_rx) = oneshot::channel();
        if let Some(err) = child.stderr.take() {
            let t = Some(tail.clone());
            tokio::spawn(pump_lines(err, self.logs.clone(), self.spec.name.clone(), "stderr", t, Some(done_tx)));
        }
        self.proc = Some(Running {
            child,
            pid,
            writer: wtx,
            ready: false,
            start_deadline: Instant::now() + self.spec.start_timeout,
            max_in_flight: 1,
            stderr_tail: tail,
            stderr_done: Some(done_rx),
        });
        Ok(())
    }

    async fn on_incoming(&mut self, inc: Incoming) {
        let frame = match inc {
            Incoming::Frame(f) => f,
            Incoming::Broken(e) => return self.fail_process(FailureKind::Protocol, format!("{e}; killed")).await,
            Incoming::Eof => {
                // Usually the plugin is exiting: give it a moment, so the error can say how.
                let exited = match self.proc.as_mut() {
                    Some(p) => timeout(Duration::from_millis(500), p.child.wait()).await.ok(),
                    None => None,
                };
                return match exited {
                    Some(status) => self.on_exit(status).await,
                    None => self.fail_process(FailureKind::Crashed, "closed the RPC channel; killed").await,
                };
            }
        };
        let ready = self.proc.as_ref().is_some_and(|p| p.ready);
        if !ready {
            return self.on_hello(frame).await;
        }
        match frame.kind() {
            "output" => {
                if let Some(p) = frame.id().and_then(|id| self.in_flight.get(&id)) {
                    p.sink.output(frame.str_field("stream") == Some("stderr"), &frame.body);
                }
            }
            "result" | "error" => {
                let Some(id) = frame.id() else {
                    return self.fail_process(FailureKind::Protocol, "answer without an id; killed").await;
                };
                self.cancelled.remove(&id);
                if let Some(p) = self.in_flight.remove(&id) {
                    if frame.kind() == "result" {
                        self.failures = 0;
                        p.sink.finish(Ok(frame));
                    } else {
                        let msg = frame.str_field("message").unwrap_or("(no message)").to_string();
                        p.sink.finish(Err(self.failure(FailureKind::Remote, msg)));
                    }
                }
            }
            // Unknown types are ignored: later protocol versions may add messages.
            _ => {}
        }
    }

    async fn on_hello(&mut self, frame: Frame) {
        if frame.kind() != "hello" {
            let why = format!("sent {:?} before the handshake; killed", frame.kind());
            return self.fail_process(FailureKind::Protocol, why).await;
        }
        let version = frame.header.get("protocol").and_then(Value::as_u64).unwrap_or(0);
        if !PROTOCOL_VERSIONS.iter().any(|v| u64::from(*v) == version) {
            let why = format!("speaks protocol version {version}, the host offers {PROTOCOL_VERSIONS:?}; killed");
            return self.fail_process(FailureKind::Protocol, why).await;
        }
        let kind = frame.str_field("plugin_type").unwrap_or("");
        if kind != self.spec.kind.as_str() {
            let why = format!("says it is a {kind:?} plugin, expected {:?}; killed", self.spec.kind.as_str());
            return self.fail_process(FailureKind::Protocol, why).await;
        }
        if let Some(name) = frame.str_field("name") {
            if name != self.spec.name {
                let note = format!("plugin file named '{}' calls itself '{name}'", self.spec.name);
                self.logs.push(&self.spec.name, "host", note);
            }
        }
        let limit = frame.header.get("max_in_flight").and_then(Value::as_u64).unwrap_or(1).clamp(1, 4096) as usize;
        let welcome =
            header([("type", json!("welcome")), ("protocol", json!(version)), ("max_frame", json!(self.spec.max_frame))]);
        if let Some(p) = self.proc.as_mut() {
            p.ready = true;
            p.max_in_flight = limit;
            if let Ok(bytes) = codec::encode(&welcome, &[], usize::MAX) {
                let _ = p.writer.send(bytes);
            }
        }
    }

    async fn on_exit(&mut self, status: std::io::Result<ExitStatus>) {
        let Some(mut p) = self.proc.take() else { return };
        self.generation += 1;
        let when = if p.ready { "exited" } else { "exited before the handshake" };
        let why = format!("{when} ({})", describe_status(&status));
        let kind = if p.ready { FailureKind::Crashed } else { FailureKind::Start };
        // The group may still hold children of the plugin.
        spawn::kill_group(p.pid);
        let failure = self.failure(kind, format!("{why}{}", stderr_note(&mut p).await));
        self.note_failure();
        self.fail_all(&failure);
    }

    /// Kills the process (and its group) and fails every call waiting on it.
    async fn fail_process(&mut self, kind: FailureKind, why: impl std::fmt::Display) {
        let Some(mut p) = self.proc.take() else { return };
        self.generation += 1;
        spawn::kill_group(p.pid);
        let _ = p.child.start_kill();
        let status = match timeout(Duration::from_secs(2), p.child.wait()).await {
            Ok(s) => describe_status(&s),
            Err(_) => "did not die".into(),
        };
        let failure = self.failure(kind, format!("{why} ({status}){}", stderr_note(&mut p).await));
        self.logs.push(&self.spec.name, "host", failure.message.clone());
        self.note_failure();
        self.fail_all(&failure);
    }

    fn note_failure(&mut self) {
        self.failures += 1;
        // The first restart is immediate; repeated failures back off exponentially.
        let delay = if self.failures <= 1 {
            Duration::ZERO
        } else {
            (Duration::from_millis(100) * 2u32.saturating_pow(self.failures - 2)).min(self.spec.backoff_max)
        };
        self.retry_at = Some(Instant::now() + delay);
    }

    fn fail_all(&mut self, failure: &PluginFailure) {
        self.cancelled.clear();
        for (_, p) in self.in_flight.drain() {
            p.sink.finish(Err(failure.clone()));
        }
        for p in self.queued.drain(..) {
            p.sink.finish(Err(failure.clone()));
        }
    }

    /// Polite stop: `shutdown`, EOF, `grace` to exit, then SIGKILL to the group.
    async fn stop(&mut self, grace: Duration) {
        let failure = self.failure(FailureKind::Stopped, "the plugin host is shutting down");
        self.fail_all(&failure);
        let Some(mut p) = self.proc.take() else { return };
        self.generation += 1;
        if let Ok(bytes) = codec::encode(&header([("type", json!("shutdown"))]), &[], usize::MAX) {
            let _ = p.writer.send(bytes);
        }
        drop(p.writer);
        if timeout(grace, p.child.wait()).await.is_err() {
            spawn::kill_group(p.pid);
            let _ = p.child.start_kill();
            let _ = timeout(Duration::from_secs(2), p.child.wait()).await;
        } else {
            spawn::kill_group(p.pid);
        }
    }
}

/// The last stderr lines, to put in an error message (waits briefly for stderr to drain).
async fn stderr_note(p: &mut Running) -> String {
    if let Some(done) = p.stderr_done.take() {
        let _ = timeout(Duration::from_millis(300), done).await;
    }
    let tail = p.stderr_tail.lock().unwrap();
    if tail.is_empty() {
        String::new()
    } else {
        format!("; its last stderr lines: {}", tail.iter().cloned().collect::<Vec<_>>().join(" | "))
    }
}

async fn pump_lines<R: AsyncRead + Unpin>(
    mut r: R,
    logs: Arc<LogQueue>,
    name: String,
    stream: &'static str,
    tail: Option<Arc<Mutex<VecDeque<String>>>>,
    done: Option<oneshot::Sender<()>>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut lines = LineSplitter::default();
    let mut emit = |line: String| {
        if let Some(t) = &tail {
            let mut t = t.lock().unwrap();
            if t.len() >= STDERR_TAIL {
                t.pop_front();
            }
            t.push_back(line.clone());
        }
        logs.push(&name, stream, line);
    };
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => lines.feed(&buf[..n], LINE_MAX, &mut emit),
        }
    }
    lines.finish(&mut emit);
    if let Some(d) = done {
        let _ = d.send(());
    }
}
