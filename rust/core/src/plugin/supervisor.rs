//! One task per plugin, on the host thread: starts the process when a caller wants it (so every
//! plugin is forked from that thread), does the handshake, and publishes the ready channel
//! (`conn::Conn`) that callers then use by themselves. It watches the process: an exit, a broken
//! channel reported by a reader, or a cancelled call left unanswered past the grace kills the
//! process group and fails the calls in flight with an error naming the plugin. The next caller
//! gets a new process, after a backoff if the plugin keeps failing.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::process::Child;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{sleep_until, timeout, Instant};

use super::codec::{self, header, CodecError, Frame};
use super::conn::{Conn, Report};
use super::goplugin::executor::GoExecutor;
use super::goplugin::{self, GoClient};
use super::logs::{LineSplitter, LogQueue};
use super::spawn::{self, Launched};
use super::{FailureKind, PluginFailure, PluginSpec, PROTOCOL_VERSIONS};

/// Where a call's streamed output and final answer go. Called from whichever thread reads.
pub trait CallSink: Send + Sync {
    fn output(&self, stderr: bool, data: &[u8]);
    fn finish(&self, result: Result<Frame, PluginFailure>);
}

/// A plugin ready for calls: one of ours, or one of Dkron's (a go-plugin net/rpc processor or
/// gRPC executor).
#[derive(Clone)]
pub enum Ready {
    Ours(Arc<Conn>),
    Go(Arc<GoClient>),
    GoExec(Arc<GoExecutor>),
}

impl Ready {
    pub fn usable(&self) -> bool {
        match self {
            Ready::Ours(c) => c.usable(),
            Ready::Go(c) => c.usable(),
            Ready::GoExec(c) => c.usable(),
        }
    }
    pub fn generation(&self) -> u64 {
        match self {
            Ready::Ours(c) => c.generation,
            Ready::Go(c) => c.generation,
            Ready::GoExec(c) => c.generation,
        }
    }
    fn answered(&self) -> bool {
        match self {
            Ready::Ours(c) => c.answered.load(Ordering::Relaxed),
            Ready::Go(c) => c.life.answered.load(Ordering::Relaxed),
            Ready::GoExec(c) => c.life.answered.load(Ordering::Relaxed),
        }
    }
    fn fail(&self, failure: &PluginFailure) {
        match self {
            Ready::Ours(c) => c.fail(failure),
            Ready::Go(c) => c.fail(failure),
            Ready::GoExec(c) => c.fail(failure),
        }
    }
}

pub type ConnReply = std::sync::mpsc::Sender<Result<Ready, PluginFailure>>;

pub enum Cmd {
    /// A caller wants a ready channel: the running one, or a new process. A process that has
    /// not completed its handshake by the caller's `deadline` is killed then: a plugin that never
    /// says hello costs the call that waited for it, not every call until the start timeout.
    Want { reply: ConnReply, deadline: Option<std::time::Instant> },
    Stop { grace: Duration, done: std::sync::mpsc::Sender<()> },
}

/// What callers read without asking the supervisor.
#[derive(Default)]
pub struct Published {
    pub conn: Mutex<Option<Ready>>,
    pub pid: AtomicU32,
}

/// Lines of stderr kept to explain a failure.
const STDERR_TAIL: usize = 10;
const LINE_MAX: usize = 64 * 1024;

type Hello = (u64, UnixStream, Result<Option<Frame>, CodecError>);
/// The first stdout line of a launch: a go-plugin handshake line, or just output.
type FirstLine = (u64, String);

struct Running {
    child: Child,
    pid: u32,
    generation: u64,
    /// None until the handshake is done.
    conn: Option<Ready>,
    /// The first line on stdout, to quote when the handshake never comes.
    first_line: Option<String>,
    started: Instant,
    start_deadline: Instant,
    /// Killed only by its start timeout, not at a waiting call's deadline.
    patient: bool,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    stderr_done: Option<oneshot::Receiver<()>>,
}

pub struct Supervisor {
    spec: Arc<PluginSpec>,
    who: Arc<str>,
    logs: Arc<LogQueue>,
    published: Arc<Published>,
    cmds: mpsc::UnboundedReceiver<Cmd>,
    reports_tx: mpsc::UnboundedSender<Report>,
    reports: mpsc::UnboundedReceiver<Report>,
    hellos_tx: mpsc::UnboundedSender<Hello>,
    hellos: mpsc::UnboundedReceiver<Hello>,
    lines_tx: mpsc::UnboundedSender<FirstLine>,
    lines: mpsc::UnboundedReceiver<FirstLine>,
    /// Bumped at every launch, so news about a dead instance is ignored.
    generation: u64,
    proc: Option<Running>,
    failures: u32,
    retry_at: Option<Instant>,
    waiters: Vec<ConnReply>,
    /// The earliest deadline of the calls waiting for the current start-up.
    waiter_deadline: Option<Instant>,
    /// The last process was killed at a waiting call's deadline: the next one gets its whole start
    /// timeout, so a plugin slower to start than `plugin_timeout` cannot be killed forever.
    next_start_patient: bool,
    /// When answers to cancelled calls are due (the plugin is hung if one is still missing).
    cancel_due: Vec<Instant>,
}

enum Event {
    Cmd(Option<Cmd>),
    Report(Report),
    Hello(Hello),
    FirstLine(FirstLine),
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
    pub fn new(spec: Arc<PluginSpec>, logs: Arc<LogQueue>, published: Arc<Published>, cmds: mpsc::UnboundedReceiver<Cmd>) -> Self {
        let (reports_tx, reports) = mpsc::unbounded_channel();
        let (hellos_tx, hellos) = mpsc::unbounded_channel();
        let (lines_tx, lines) = mpsc::unbounded_channel();
        let who = format!("plugin {} '{}' ({})", spec.kind.as_str(), spec.name, spec.path.display()).into();
        Self {
            spec,
            who,
            logs,
            published,
            cmds,
            reports_tx,
            reports,
            hellos_tx,
            hellos,
            lines_tx,
            lines,
            generation: 0,
            proc: None,
            failures: 0,
            retry_at: None,
            waiters: Vec::new(),
            waiter_deadline: None,
            next_start_patient: false,
            cancel_due: Vec::new(),
        }
    }

    pub async fn run(mut self) {
        loop {
            let deadline = self.next_deadline();
            let event = tokio::select! {
                cmd = self.cmds.recv() => Event::Cmd(cmd),
                Some(report) = self.reports.recv() => Event::Report(report),
                Some(hello) = self.hellos.recv() => Event::Hello(hello),
                Some(line) = self.lines.recv() => Event::FirstLine(line),
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
                Event::Cmd(Some(Cmd::Want { reply, deadline })) => self.on_want(reply, deadline),
                Event::Report(report) => self.on_report(report).await,
                Event::Hello((generation, stream, frame)) if generation == self.generation => {
                    self.on_hello(stream, frame).await
                }
                Event::Hello(_) => {}
                Event::FirstLine((generation, line)) if generation == self.generation => self.on_first_line(line).await,
                Event::FirstLine(_) => {}
                Event::Exited(status) => self.on_exit(status).await,
                Event::Tick => self.on_tick().await,
            }
            self.pump();
        }
    }

    fn failure(&self, kind: FailureKind, what: impl std::fmt::Display) -> PluginFailure {
        PluginFailure { kind, message: format!("{}: {what}", self.who) }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let handshake = self.proc.as_ref().filter(|p| p.conn.is_none()).map(|p| match self.waiter_deadline {
            Some(d) if !p.patient => d.min(p.start_deadline),
            _ => p.start_deadline,
        });
        let retry = if self.proc.is_none() && !self.waiters.is_empty() { self.retry_at } else { None };
        [handshake, retry, self.cancel_due.iter().min().copied()].into_iter().flatten().min()
    }

    fn on_want(&mut self, reply: ConnReply, deadline: Option<std::time::Instant>) {
        match self.proc.as_ref().and_then(|p| p.conn.as_ref()) {
            Some(ready) if ready.usable() => {
                let _ = reply.send(Ok(ready.clone()));
            }
            _ => {
                self.waiters.push(reply);
                if let Some(d) = deadline.map(Instant::from_std) {
                    self.waiter_deadline = Some(self.waiter_deadline.map_or(d, |w| w.min(d)));
                }
            }
        }
    }

    async fn on_report(&mut self, report: Report) {
        let current = self.proc.as_ref().map(|p| p.generation);
        match report {
            Report::CancelDue { generation, due } if Some(generation) == current => self.cancel_due.push(due.into()),
            Report::Broken { generation, error } if Some(generation) == current => {
                self.fail_process(FailureKind::Protocol, format!("{error}; killed")).await
            }
            Report::GaveUp { generation, kind, why } if Some(generation) == current => self.fail_process(kind, why).await,
            Report::Closed { generation } if Some(generation) == current => {
                // Usually the plugin is exiting: give it a moment, so the error can say how.
                let exited = match self.proc.as_mut() {
                    Some(p) => timeout(Duration::from_millis(500), p.child.wait()).await.ok(),
                    None => None,
                };
                match exited {
                    Some(status) => self.on_exit(status).await,
                    None => self.fail_process(FailureKind::Crashed, "closed the RPC channel; killed").await,
                }
            }
            _ => {}
        }
    }

    async fn on_tick(&mut self) {
        let now = Instant::now();
        if let Some(p) = &self.proc {
            if p.conn.is_none() && now >= p.start_deadline {
                let first = match &p.first_line {
                    Some(line) => format!("its first stdout line was {line:?}"),
                    None => "it printed nothing on stdout".into(),
                };
                let why = format!(
                    "did not complete the handshake within {:?} (no hello on fd 3 and no go-plugin handshake line; {first}); killed",
                    self.spec.start_timeout
                );
                self.fail_process(FailureKind::Start, why).await;
                return;
            }
            if p.conn.is_none() && !p.patient && self.waiter_deadline.is_some_and(|d| now >= d) {
                let waited = now.saturating_duration_since(p.started);
                self.next_start_patient = true;
                let why = format!("did not complete the handshake by the deadline of the call waiting for it ({waited:.1?} after start); killed");
                self.fail_process(FailureKind::Timeout, why).await;
                return;
            }
        }
        if self.cancel_due.iter().any(|d| *d <= now) {
            self.cancel_due.retain(|d| *d > now);
            let hung = match self.proc.as_ref().and_then(|p| p.conn.as_ref()) {
                Some(Ready::Ours(c)) => c.overdue(now.into_std()),
                _ => false,
            };
            if hung {
                let why = format!(
                    "hung: did not answer a timed-out or cancelled call within {:?} of the cancel; killed",
                    self.spec.cancel_grace
                );
                self.fail_process(FailureKind::Timeout, why).await;
            }
        }
    }

    /// Starts the process when callers wait for one (after the backoff).
    fn pump(&mut self) {
        if self.proc.is_some() || self.waiters.is_empty() || self.retry_at.is_some_and(|r| Instant::now() < r) {
            return;
        }
        if let Err(e) = self.launch() {
            let failure = self.failure(FailureKind::Start, format!("could not be started: {e}"));
            self.note_failure(false);
            self.fail_waiters(&failure);
        }
    }

    fn launch(&mut self) -> std::io::Result<()> {
        let Launched { mut child, channel, pid } =
            spawn::launch(&self.spec.path, self.spec.kind, &self.spec.name, self.spec.max_frame, self.spec.contain.as_ref())?;
        self.generation += 1;
        let generation = self.generation;
        let hellos = self.hellos_tx.clone();
        let max = self.spec.max_frame;
        tokio::spawn(async move {
            let mut stream = channel;
            let hello = codec::read_frame(&mut stream, max).await;
            let _ = hellos.send((generation, stream, hello));
        });
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        if let Some(out) = child.stdout.take() {
            let first = Some((generation, self.lines_tx.clone()));
            tokio::spawn(pump_lines(out, self.logs.clone(), self.spec.name.clone(), "stdout", None, None, first));
        }
        let (done_tx, done_rx) = oneshot::channel();
        if let Some(err) = child.stderr.take() {
            let t = Some(tail.clone());
            tokio::spawn(pump_lines(err, self.logs.clone(), self.spec.name.clone(), "stderr", t, Some(done_tx), None));
        }
        self.published.pid.store(pid, Ordering::Relaxed);
        self.proc = Some(Running {
            child,
            pid,
            generation,
            conn: None,
            first_line: None,
            started: Instant::now(),
            patient: std::mem::take(&mut self.next_start_patient),
            start_deadline: Instant::now() + self.spec.start_timeout,
            stderr_tail: tail,
            stderr_done: Some(done_rx),
        });
        Ok(())
    }

    async fn on_hello(&mut self, mut stream: UnixStream, frame: Result<Option<Frame>, CodecError>) {
        let frame = match frame {
            Ok(Some(f)) => f,
            Ok(None) => {
                // The plugin closed the channel: it is exiting; its exit says how.
                let exited = match self.proc.as_mut() {
                    Some(p) => timeout(Duration::from_millis(500), p.child.wait()).await.ok(),
                    None => None,
                };
                return match exited {
                    Some(status) => self.on_exit(status).await,
                    None => self.fail_process(FailureKind::Start, "closed the RPC channel before the handshake; killed").await,
                };
            }
            Err(e) => return self.fail_process(FailureKind::Protocol, format!("{e}; killed")).await,
        };
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
        let bytes = codec::encode(&welcome, &[], usize::MAX).expect("a small header");
        if let Err(e) = stream.write_all(&bytes).await {
            return self.fail_process(FailureKind::Crashed, format!("the channel failed at the handshake: {e}; killed")).await;
        }
        let conn = stream.into_std().map(OwnedFd::from).and_then(|fd| {
            let p = self.proc.as_ref().expect("a hello comes from a running process");
            Conn::new(fd, p.generation, p.pid, limit, self.spec.max_frame, self.who.clone(), self.spec.cancel_grace, self.reports_tx.clone())
        });
        match conn {
            Ok(c) => self.ready(Ready::Ours(Arc::new(c))),
            Err(e) => self.fail_process(FailureKind::Start, format!("the channel could not be set up: {e}; killed")).await,
        }
    }

    /// The handshake is done: publish the channel and hand it to the callers waiting.
    fn ready(&mut self, ready: Ready) {
        if let Some(p) = self.proc.as_mut() {
            p.conn = Some(ready.clone());
        }
        *self.published.conn.lock().unwrap() = Some(ready.clone());
        self.waiter_deadline = None;
        self.next_start_patient = false;
        for reply in self.waiters.drain(..) {
            let _ = reply.send(Ok(ready.clone()));
        }
    }

    /// The first stdout line: a go-plugin handshake line starts Dkron's protocol; any other
    /// line is output (kept, to explain a handshake that never comes).
    async fn on_first_line(&mut self, line: String) {
        let Some(p) = self.proc.as_mut() else { return };
        if p.conn.is_some() {
            return;
        }
        p.first_line = Some(line.clone());
        if !goplugin::looks_like_handshake(&line) {
            return;
        }
        let hs = match goplugin::parse_handshake(&line) {
            Ok(hs) => hs,
            Err(e) => {
                let why = format!("printed a malformed go-plugin handshake line {line:?} ({e}); killed");
                return self.fail_process(FailureKind::Start, why).await;
            }
        };
        // Dkron's processors speak net/rpc, its executors gRPC (as Dkron allows them).
        let expected = match self.spec.kind {
            super::Kind::Processor => "netrpc",
            super::Kind::Executor => "grpc",
        };
        if hs.protocol != expected {
            let why = format!(
                "is a Dkron go-plugin {} speaking {}: Dkron's {}s speak {expected}; killed",
                self.spec.kind.as_str(),
                hs.protocol,
                self.spec.kind.as_str()
            );
            return self.fail_process(FailureKind::Start, why).await;
        }
        let generation = p.generation;
        let deadline = p.start_deadline;
        let (ends, gives_up) = (self.reports_tx.clone(), self.reports_tx.clone());
        let connect = goplugin::Connect {
            generation,
            who: self.who.clone(),
            name: self.spec.name.clone(),
            logs: self.logs.clone(),
            on_end: Box::new(move |error| {
                let report = match error {
                    None => Report::Closed { generation },
                    Some(e) => Report::Broken { generation, error: CodecError::Malformed(e) },
                };
                let _ = ends.send(report);
            }),
            on_give_up: Box::new(move |kind, why| {
                let _ = gives_up.send(Report::GaveUp { generation, kind, why });
            }),
        };
        let connecting = async {
            match self.spec.kind {
                super::Kind::Processor => GoClient::connect(&hs, connect).await.map(Ready::Go),
                super::Kind::Executor => GoExecutor::connect(&hs, connect).await.map(Ready::GoExec),
            }
        };
        match tokio::time::timeout_at(deadline, connecting).await {
            Ok(Ok(ready)) => self.ready(ready),
            Ok(Err(e)) => self.fail_process(FailureKind::Start, format!("go-plugin handshake failed: {e}; killed")).await,
            Err(_) => {
                let why = format!("did not complete the go-plugin handshake within {:?}; killed", self.spec.start_timeout);
                self.fail_process(FailureKind::Start, why).await
            }
        }
    }

    async fn on_exit(&mut self, status: std::io::Result<ExitStatus>) {
        let Some(mut p) = self.take_proc() else { return };
        let when = if p.conn.is_some() { "exited" } else { "exited before the handshake" };
        let why = format!("{when} ({})", describe_status(&status));
        let kind = if p.conn.is_some() { FailureKind::Crashed } else { FailureKind::Start };
        // The group may still hold children of the plugin.
        spawn::kill_group(p.pid);
        let failure = self.failure(kind, format!("{why}{}", stderr_note(&mut p).await));
        self.finish_proc(&p, &failure);
    }

    /// Kills the process (and its group) and fails every call on it.
    async fn fail_process(&mut self, kind: FailureKind, why: impl std::fmt::Display) {
        let Some(mut p) = self.take_proc() else { return };
        spawn::kill_group(p.pid);
        let _ = p.child.start_kill();
        let status = match timeout(Duration::from_secs(2), p.child.wait()).await {
            Ok(s) => describe_status(&s),
            Err(_) => "did not die".into(),
        };
        let failure = self.failure(kind, format!("{why} ({status}){}", stderr_note(&mut p).await));
        self.logs.push(&self.spec.name, "host", failure.message.clone());
        self.finish_proc(&p, &failure);
    }

    /// The process is gone: nobody gets its channel any more.
    fn take_proc(&mut self) -> Option<Running> {
        let p = self.proc.take()?;
        self.generation += 1;
        self.cancel_due.clear();
        self.published.pid.store(0, Ordering::Relaxed);
        let mut published = self.published.conn.lock().unwrap();
        if published.as_ref().is_some_and(|c| c.generation() == p.generation) {
            *published = None;
        }
        Some(p)
    }

    fn finish_proc(&mut self, p: &Running, failure: &PluginFailure) {
        let answered = p.conn.as_ref().is_some_and(Ready::answered);
        if let Some(conn) = &p.conn {
            conn.fail(failure);
        }
        self.note_failure(answered);
        self.fail_waiters(failure);
    }

    fn note_failure(&mut self, answered_since_start: bool) {
        // A plugin that answered calls is not crash-looping: its first restart is immediate.
        if answered_since_start {
            self.failures = 0;
        }
        self.failures += 1;
        // The first restart is immediate; repeated failures back off exponentially.
        let delay = if self.failures <= 1 {
            Duration::ZERO
        } else {
            (Duration::from_millis(100) * 2u32.saturating_pow(self.failures - 2)).min(self.spec.backoff_max)
        };
        self.retry_at = Some(Instant::now() + delay);
    }

    /// Callers waiting for a process fail with the reason it failed.
    fn fail_waiters(&mut self, failure: &PluginFailure) {
        self.waiter_deadline = None;
        for reply in self.waiters.drain(..) {
            let _ = reply.send(Err(failure.clone()));
        }
    }

    /// Polite stop: `shutdown`, EOF, `grace` to exit, then SIGKILL to the group.
    async fn stop(&mut self, grace: Duration) {
        let failure = self.failure(FailureKind::Stopped, "the plugin host is shutting down");
        self.fail_waiters(&failure);
        let Some(mut p) = self.take_proc() else { return };
        match &p.conn {
            Some(Ready::Ours(conn)) => {
                if let Ok(bytes) = codec::encode(&header([("type", json!("shutdown"))]), &[], usize::MAX) {
                    conn.send_nowait(&bytes);
                }
                conn.close_write();
                conn.fail(&failure);
            }
            Some(Ready::Go(client)) => {
                // go-plugin's polite stop: Control.Quit, then the same grace and kill.
                let _ = timeout(grace, client.quit()).await;
                client.fail(&failure);
            }
            Some(Ready::GoExec(client)) => {
                // go-plugin's polite stop over gRPC: GRPCController.Shutdown.
                let _ = timeout(grace, client.shutdown()).await;
                client.fail(&failure);
            }
            None => {}
        }
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
    mut first: Option<(u64, mpsc::UnboundedSender<FirstLine>)>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut lines = LineSplitter::default();
    let mut emit = |line: String| {
        // The supervisor sees the first line; a go-plugin handshake line is not output.
        if let Some((generation, to)) = first.take() {
            let handshake = goplugin::looks_like_handshake(&line);
            let _ = to.send((generation, line.clone()));
            if handshake {
                return;
            }
        }
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
