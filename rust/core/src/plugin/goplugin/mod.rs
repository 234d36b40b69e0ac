//! Dkron's own plugins (hashicorp/go-plugin), beside our protocol: the handshake line a plugin
//! prints on stdout, the net/rpc processor client (`gob` over `yamux`, `netrpc` framing), and
//! the gRPC executor client (`executor`: `proto` over `grpc` on HTTP/2).
//!
//! The supervisor launches every plugin with both our environment and go-plugin's; a plugin
//! that prints a go-plugin handshake line instead of saying hello on fd 3 is connected here.

pub mod executor;
pub mod gob;
pub mod grpc;
pub mod life;
pub mod netrpc;
pub mod proto;
pub mod yamux;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UnixStream;

use self::gob::{DkronExecution, Timestamp};
pub use self::life::{GiveUp, Life};
use self::netrpc::{RpcError, RpcStream};
use self::yamux::{Session, Stream};
use super::conn::SLICE;
use super::logs::{LineSplitter, LogQueue};
use super::{FailureKind, PluginFailure};
use crate::execution::Execution;

/// go-plugin's environment: the port range only matters to plugins on Windows. The multiplexed
/// gRPC broker and automatic mTLS, which Dkron does not use either, are turned off even when the
/// host's own environment asks for them (a plugin inherits it).
pub const ENV: &[(&str, &str)] = &[
    ("PLUGIN_PROTOCOL_VERSIONS", "1"),
    ("PLUGIN_MIN_PORT", "0"),
    ("PLUGIN_MAX_PORT", "0"),
    ("PLUGIN_MULTIPLEX_GRPC", ""),
    ("PLUGIN_CLIENT_CERT", ""),
];

/// Lines longer than this are cut (as for the plugin's real stdout and stderr).
const LINE_MAX: usize = 64 * 1024;

/// A go-plugin handshake line: `CORE|APP|NETWORK|ADDRESS|PROTOCOL|CERT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    pub network: String,
    pub address: String,
    pub protocol: String,
}

/// A first stdout line that tries to be a handshake line: a number, then the field separator.
/// (A plugin of ours may print before its hello on fd 3; such lines are output.)
pub fn looks_like_handshake(line: &str) -> bool {
    line.split_once('|').is_some_and(|(core, _)| !core.is_empty() && core.bytes().all(|b| b.is_ascii_digit()))
}

/// Parses the line as go-plugin's client does (at least 4 fields; a missing protocol means
/// netrpc), and accepts only what this host speaks: core 1, app 1, a unix socket.
pub fn parse_handshake(line: &str) -> Result<Handshake, String> {
    let parts: Vec<&str> = line.trim_end().split('|').collect();
    if parts.len() < 4 {
        return Err(format!("a go-plugin handshake line has at least 4 '|'-separated fields, got {}", parts.len()));
    }
    if parts[0] != "1" {
        return Err(format!("go-plugin core protocol version {:?}, this host speaks 1", parts[0]));
    }
    if parts[1] != "1" {
        return Err(format!("Dkron plugin protocol version {:?}, this host speaks 1", parts[1]));
    }
    if parts[2] != "unix" {
        return Err(format!("network {:?}, this host connects to \"unix\" sockets only", parts[2]));
    }
    if parts[3].is_empty() {
        return Err("an empty socket address".into());
    }
    let protocol = parts.get(4).copied().filter(|p| !p.is_empty()).unwrap_or("netrpc");
    if protocol != "netrpc" && protocol != "grpc" {
        return Err(format!("protocol {protocol:?}, expected \"netrpc\" or \"grpc\""));
    }
    Ok(Handshake { network: parts[2].into(), address: parts[3].into(), protocol: protocol.into() })
}

/// A connected go-plugin processor. Calls are serialised: one in flight per plugin.
pub struct GoClient {
    pub generation: u64,
    session: Session,
    control: tokio::sync::Mutex<RpcStream>,
    plugin: Arc<tokio::sync::Mutex<RpcStream>>,
    pub life: Life,
}

/// What the supervisor gives `connect`.
pub struct Connect {
    pub generation: u64,
    pub who: Arc<str>,
    pub name: String,
    pub logs: Arc<LogQueue>,
    /// Told once how the session ended (None: the socket closed cleanly).
    pub on_end: Box<dyn FnOnce(Option<String>) + Send>,
    pub on_give_up: GiveUp,
}

impl GoClient {
    /// Connects to the socket, opens go-plugin's streams in its order (control, stdout,
    /// stderr), dispenses "processor" and opens the broker stream it names. Runs on the host's
    /// runtime.
    pub async fn connect(hs: &Handshake, c: Connect) -> Result<Arc<GoClient>, String> {
        let socket = connect_socket(hs).await?;
        let session = Session::start(socket, c.on_end)?;
        let mut control = RpcStream::new(session.open()?);
        for stream in ["stdout", "stderr"] {
            tokio::spawn(pump(session.open()?, c.logs.clone(), c.name.clone(), stream));
        }
        let id = netrpc::dispense(&mut control, "processor").await.map_err(|e| format!("Dispenser.Dispense(\"processor\") failed: {}", describe(&e)))?;
        let mut broker = session.open()?;
        broker.write_all(&id.to_le_bytes()).await?;
        let ack = broker.read_exact(4).await?;
        let ack = u32::from_le_bytes([ack[0], ack[1], ack[2], ack[3]]);
        if ack != id {
            return Err(format!("the broker acknowledged stream id {ack}, expected {id}"));
        }
        Ok(Arc::new(GoClient {
            generation: c.generation,
            session,
            control: tokio::sync::Mutex::new(control),
            plugin: Arc::new(tokio::sync::Mutex::new(RpcStream::new(broker))),
            life: Life::new(c.who, c.on_give_up),
        }))
    }

    fn failure(&self, kind: FailureKind, what: impl std::fmt::Display) -> PluginFailure {
        self.life.failure(kind, what)
    }

    pub fn usable(&self) -> bool {
        self.life.usable()
    }

    /// The process failed: calls fail with `failure`.
    pub fn fail(&self, failure: &PluginFailure) {
        self.life.fail(failure);
        self.session.close();
    }

    /// Best effort `Control.Quit`, for a polite stop.
    pub async fn quit(&self) {
        let mut control = self.control.lock().await;
        let _ = netrpc::quit(&mut control).await;
    }

    /// One `Plugin.Process` call, blocking the calling thread (not a runtime thread). Gives up
    /// at `deadline` or when `interrupted` says so: then the plugin is killed (there is no
    /// cancel in Dkron's protocol) and this waits, briefly, until the supervisor has done it.
    pub fn process(
        &self,
        execution: &Execution,
        output: &[u8],
        config: &HashMap<String, String>,
        deadline: Option<Instant>,
        timeout: Option<Duration>,
        interrupted: &mut dyn FnMut() -> bool,
    ) -> Result<Execution, PluginFailure> {
        let args = to_dkron(execution, output);
        let mut config: BTreeMap<String, String> = config.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        // Dkron's agent adds the reporting node to every processor's config.
        config.entry("reporting_node".into()).or_insert_with(|| execution.node_name.clone());
        // The call runs on this thread: it only waits on channels the session's tasks (on the
        // host's runtime thread) feed, so no runtime is needed here, and no hop.
        let plugin = self.plugin.clone();
        let call = async move {
            let mut stream = plugin.lock().await;
            stream.call("Plugin.Process", |enc, out| netrpc::encode_process(enc, out, &args, &config)).await
        };
        let outcome = park_on(call, deadline, || {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Some((FailureKind::Timeout, format!("call timed out after {:?}; killed", timeout.unwrap_or_default())));
            }
            interrupted().then(|| (FailureKind::Cancelled, "the call was cancelled; killed".to_string()))
        });
        let result = match outcome {
            Ok(r) => r,
            Err((kind, why)) => return Err(self.give_up(kind, why)),
        };
        match result {
            Ok(value) => {
                self.life.answered();
                let back = gob::execution_of(value).map_err(|e| self.give_up(FailureKind::Protocol, format!("answered with an unusable Execution: {e}; killed")))?;
                Ok(from_dkron(execution, back))
            }
            // Dkron's processors have no error result; net/rpc reports a panic or a bad call.
            Err(RpcError::Remote(e)) => {
                self.life.answered();
                Err(self.failure(FailureKind::Remote, format!("Plugin.Process failed: {e}")))
            }
            Err(RpcError::Protocol(e)) => Err(self.give_up(FailureKind::Protocol, format!("{e}; killed"))),
            Err(RpcError::Io(e)) => Err(self.life.wait_dead(Duration::from_secs(3)).unwrap_or_else(|| self.failure(FailureKind::Crashed, e))),
        }
    }

    fn give_up(&self, kind: FailureKind, why: String) -> PluginFailure {
        self.life.give_up(kind, why)
    }
}

/// Connects to the socket a handshake line names, then removes its name: it is no longer
/// needed, and a plugin that is SIGKILLed leaves it behind. Only a socket is removed (the path
/// comes from the plugin).
pub async fn connect_socket(hs: &Handshake) -> Result<UnixStream, String> {
    let socket = UnixStream::connect(&hs.address).await.map_err(|e| format!("could not connect to {}: {e}", hs.address))?;
    if std::fs::symlink_metadata(&hs.address).is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type())) {
        let _ = std::fs::remove_file(&hs.address);
    }
    Ok(socket)
}

/// Wakes the thread parked in `park_on`.
struct Unpark(std::thread::Thread);

impl std::task::Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Polls `fut` on this thread until it is ready, parking in between; asks `give_up` at least
/// every SLICE (and at `deadline`), and stops when it says why.
pub(crate) fn park_on<F: std::future::Future, E>(fut: F, deadline: Option<Instant>, mut give_up: impl FnMut() -> Option<E>) -> Result<F::Output, E> {
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let std::task::Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return Ok(v);
        }
        if let Some(why) = give_up() {
            return Err(why);
        }
        std::thread::park_timeout(deadline.map_or(SLICE, |d| d.saturating_duration_since(Instant::now()).min(SLICE)));
    }
}

fn describe(e: &RpcError) -> String {
    match e {
        RpcError::Io(s) | RpcError::Protocol(s) | RpcError::Remote(s) => s.clone(),
    }
}

/// Our execution as Dkron's processors receive it.
pub fn to_dkron(ex: &Execution, output: &[u8]) -> DkronExecution {
    DkronExecution {
        job_name: ex.job_name.clone(),
        success: ex.success,
        output: output.to_vec(),
        node_name: ex.node_name.clone(),
        group: ex.group,
        attempt: ex.attempt,
        started_at: Some(Timestamp::from_ns(ex.started_ns)),
        finished_at: ex.finished_ns.map(Timestamp::from_ns),
    }
}

/// The processor's answer over a copy of what it was given: Dkron's fields from the answer, our
/// own (key, exit code, error, output accounting, processor errors) kept. A start time the
/// answer leaves out stays as it was; a finish time left out becomes none.
pub fn from_dkron(before: &Execution, back: DkronExecution) -> Execution {
    let mut ex = before.clone_without_output();
    ex.job_name = back.job_name;
    ex.success = back.success;
    ex.output = back.output;
    ex.node_name = back.node_name;
    ex.group = back.group;
    ex.attempt = back.attempt;
    if let Some(ts) = back.started_at {
        ex.started_ns = ts.to_ns();
    }
    ex.finished_ns = back.finished_at.map(Timestamp::to_ns);
    ex
}

/// A go-plugin stdio stream (the plugin's piped os.Stdout / os.Stderr) into the log queue.
async fn pump(mut stream: Stream, logs: Arc<LogQueue>, name: String, which: &'static str) {
    let mut lines = LineSplitter::default();
    while let Some(chunk) = stream.read_chunk().await {
        lines.feed(&chunk, LINE_MAX, |l| logs.push(&name, which, l));
    }
    lines.finish(|l| logs.push(&name, which, l));
}
