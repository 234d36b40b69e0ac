//! A Dkron executor plugin (go-plugin gRPC) as a connected client: HTTP/2 to the plugin's
//! socket, go-plugin's broker stream and stdio stream open for its life, and `Execute` calls.
//!
//! For each call the host serves Dkron's `StatusHelper` on a socket of its own (an abstract unix
//! socket: no file to leave behind; only processes of our own user may connect) and announces it
//! on the broker stream under a fresh id, which the request carries. The plugin dials it when it
//! first sends output: each `Update` goes to the call's sink before it is answered, so all the
//! streamed output is in by the time `Execute` returns.

use std::collections::{BTreeMap, HashMap};
use std::os::linux::net::SocketAddrExt;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::client::SendRequest;
use h2::SendStream;
use serde_json::{Map, Value};
use tokio::runtime::Handle;

use super::grpc::{self, GrpcError, Handled, Responses};
use super::life::Life;
use super::proto::{self, ConnInfo, ExecuteRequest, ExecuteResponse, StatusUpdate, StdioData};
use super::{connect_socket, park_on, Connect, Handshake, LINE_MAX};
use crate::plugin::codec::Frame;
use crate::plugin::logs::{LineSplitter, LogQueue};
use crate::plugin::supervisor::CallSink;
use crate::plugin::{FailureKind, PluginFailure};

/// Execute's path before Dkron v4.0.9 and since (same messages, renamed service).
const EXECUTE_PATHS: [&str; 2] = ["/types.Executor/Execute", "/types.v1.ExecutorService/Execute"];
/// StatusHelper's Update under both generations' names.
const UPDATE_PATHS: [&str; 2] = ["/types.StatusHelper/Update", "/types.v1.StatusHelperService/Update"];
const BROKER_PATH: &str = "/plugin.GRPCBroker/StartStream";
const STDIO_PATH: &str = "/plugin.GRPCStdio/StreamStdio";
const SHUTDOWN_PATH: &str = "/plugin.GRPCController/Shutdown";
/// The largest message taken from a plugin (ExecuteResponse carries the whole output).
const MAX_MESSAGE: usize = 64 * 1024 * 1024;
/// Added to `GoExecutor::path` once the plugin answered on that path: no more trying the other.
const KNOWN: usize = 2;
/// How much streamed output a call keeps to recognise the response's copy of it.
const STREAMED_KEPT: usize = 1024 * 1024;

pub struct GoExecutor {
    pub generation: u64,
    pub life: Life,
    send: SendRequest<Bytes>,
    broker: Mutex<SendStream<Bytes>>,
    /// Broker ids, as go-plugin counts them (from 1).
    next_id: AtomicU32,
    /// Which of EXECUTE_PATHS to call first; KNOWN is added once the plugin answered on it.
    path: AtomicUsize,
    handle: Handle,
}

impl GoExecutor {
    /// Connects (HTTP/2 on the handshake's socket) and opens the broker and stdio streams, as
    /// go-plugin's client does right after dialing. Runs on the host's runtime.
    pub async fn connect(hs: &Handshake, c: Connect) -> Result<Arc<GoExecutor>, String> {
        let socket = connect_socket(hs).await?;
        let (send, conn) = h2::client::handshake(socket).await.map_err(|e| format!("HTTP/2 handshake failed: {e}"))?;
        let on_end = c.on_end;
        tokio::spawn(async move {
            // The plugin closing its end is how it exits; the supervisor learns how from its exit.
            let _ = conn.await;
            on_end(None);
        });
        let (broker_response, broker) = grpc::start(&send, BROKER_PATH).await.map_err(|e| format!("{BROKER_PATH}: {e}"))?;
        // The plugin only sends on the broker stream for servers of its own: drained, unused.
        tokio::spawn(async move {
            if let Ok(mut r) = Responses::start(broker_response, MAX_MESSAGE).await {
                while let Ok(Some(_)) = r.next().await {}
            }
        });
        let (stdio_response, mut stdio) = grpc::start(&send, STDIO_PATH).await.map_err(|e| format!("{STDIO_PATH}: {e}"))?;
        grpc::send_message(&mut stdio, &[], true).map_err(|e| format!("{STDIO_PATH}: {e}"))?;
        tokio::spawn(pump_stdio(stdio_response, c.logs, c.name));
        Ok(Arc::new(GoExecutor {
            generation: c.generation,
            life: Life::new(c.who, c.on_give_up),
            send,
            broker: Mutex::new(broker),
            next_id: AtomicU32::new(1),
            path: AtomicUsize::new(0),
            handle: Handle::current(),
        }))
    }

    pub fn usable(&self) -> bool {
        self.life.usable()
    }

    pub fn fail(&self, failure: &PluginFailure) {
        self.life.fail(failure);
    }

    /// go-plugin's polite stop.
    pub async fn shutdown(&self) {
        let _ = grpc::unary(&self.send, SHUTDOWN_PATH, &[], MAX_MESSAGE).await;
    }

    /// One `Execute`, blocking the calling thread (a thread of the host's blocking pool): the
    /// streamed output goes to `sink`, the answer becomes a frame as our own executors answer
    /// (`error` in the header, the output not streamed yet as the body). Gives up at `deadline`
    /// or when `interrupted` says so: then the plugin is killed (Dkron's executors take no
    /// cancel) and started again for the next call.
    pub fn execute(
        self: &Arc<Self>,
        job_name: &str,
        config: BTreeMap<String, String>,
        deadline: Option<Instant>,
        timeout: Option<Duration>,
        sink: Arc<dyn CallSink>,
        interrupted: &mut dyn FnMut() -> bool,
    ) -> Result<Frame, PluginFailure> {
        let streamed = Arc::new(Streamed { sink, kept: Mutex::new(Kept::default()) });
        let request = ExecuteRequest { job_name: job_name.to_string(), config, status_server: 0 };
        let task = self.handle.spawn(self.clone().execute_async(request, streamed.clone()));
        let abort = task.abort_handle();
        let outcome = park_on(task, deadline, || {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Some((FailureKind::Timeout, format!("call timed out after {:?}; killed", timeout.unwrap_or_default())));
            }
            interrupted().then(|| (FailureKind::Cancelled, "the call was cancelled; killed".to_string()))
        });
        let result = match outcome {
            Ok(Ok(r)) => r,
            Ok(Err(join)) => return Err(self.life.failure(FailureKind::Crashed, format!("the call's task failed: {join}"))),
            Err((kind, why)) => {
                abort.abort();
                return Err(self.life.give_up(kind, why));
            }
        };
        match result {
            Ok(response) => {
                self.life.answered();
                let mut header = Map::new();
                header.insert("type".into(), Value::from("result"));
                header.insert("error".into(), Value::from(response.error));
                Ok(Frame::new(header, streamed.unstreamed(response.output)))
            }
            Err(e @ GrpcError::Status { .. }) => {
                self.life.answered();
                Err(self.life.failure(FailureKind::Remote, format!("Execute failed: {e}")))
            }
            Err(GrpcError::Protocol(e)) => Err(self.life.give_up(FailureKind::Protocol, format!("{e}; killed"))),
            // The host's part failed; the plugin is not to blame.
            Err(GrpcError::Host(e)) => Err(self.life.failure(FailureKind::Start, e)),
            Err(GrpcError::Transport(e)) => {
                Err(self.life.wait_dead(Duration::from_secs(3)).unwrap_or_else(|| self.life.failure(FailureKind::Crashed, e)))
            }
        }
    }

    /// The call on the host's runtime: StatusHelper served and announced, then `Execute` under
    /// the service name the plugin knows.
    async fn execute_async(self: Arc<Self>, mut request: ExecuteRequest, streamed: Arc<Streamed>) -> Result<ExecuteResponse, GrpcError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (address, server) = serve_status_helper(id, streamed).map_err(|e| GrpcError::Host(format!("could not serve StatusHelper for the call: {e}")))?;
        // Dropping the guard stops the server, whatever way this returns.
        let _server = AbortOnDrop(server);
        let info = ConnInfo { service_id: id, network: "unix".into(), address };
        grpc::send_message(&mut self.broker.lock().unwrap(), &info.encode(), false)?;
        request.status_server = id;
        let msg = request.encode();
        let path = self.path.load(Ordering::Relaxed);
        let first = path % KNOWN;
        let mut answer = grpc::unary(&self.send, EXECUTE_PATHS[first], &msg, MAX_MESSAGE).await;
        if path < KNOWN && unknown_service(&answer) {
            // The other generation's name: the broker still holds the announcement for this id.
            let other = 1 - first;
            answer = grpc::unary(&self.send, EXECUTE_PATHS[other], &msg, MAX_MESSAGE).await;
            if unknown_service(&answer) {
                let why = format!("serves neither {} nor {}: not a Dkron executor", EXECUTE_PATHS[0], EXECUTE_PATHS[1]);
                return Err(GrpcError::Protocol(why));
            }
            self.path.store(other + KNOWN, Ordering::Relaxed);
        } else {
            self.path.store(first + KNOWN, Ordering::Relaxed);
        }
        ExecuteResponse::decode(&answer?).map_err(|e| GrpcError::Protocol(format!("an unusable ExecuteResponse: {e}")))
    }
}

/// grpc-go's answer for a service it does not serve.
fn unknown_service<T>(answer: &Result<T, GrpcError>) -> bool {
    matches!(answer, Err(GrpcError::Status { code: grpc::UNIMPLEMENTED, message }) if message.starts_with("unknown service"))
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A call's streamed output: to the sink, and the last of it kept.
struct Streamed {
    sink: Arc<dyn CallSink>,
    kept: Mutex<Kept>,
}

#[derive(Default)]
struct Kept {
    tail: Vec<u8>,
    /// The start of the streamed output was dropped from `tail`.
    trimmed: bool,
}

impl Streamed {
    fn update(&self, u: &StatusUpdate) {
        self.sink.output(u.error, &u.output);
        let mut kept = self.kept.lock().unwrap();
        kept.tail.extend_from_slice(&u.output);
        if kept.tail.len() > 2 * STREAMED_KEPT {
            let cut = kept.tail.len() - STREAMED_KEPT;
            kept.tail.drain(..cut);
            kept.trimmed = true;
        }
    }

    /// What of the response's output was not streamed. Dkron's executors return the output they
    /// also streamed (the shell executor: the last 256000 bytes of it): that copy is dropped,
    /// and so is a copy of all of it that the response goes on from.
    fn unstreamed(&self, mut output: Vec<u8>) -> Vec<u8> {
        let kept = self.kept.lock().unwrap();
        if kept.tail.ends_with(&output) {
            Vec::new()
        } else if !kept.trimmed && output.starts_with(&kept.tail) {
            output.drain(..kept.tail.len());
            output
        } else {
            output
        }
    }
}

/// Listens for the plugin's StatusHelper connections on a fresh abstract socket; returns the
/// address as Go writes it ('@' for the abstract namespace) and the accepting task.
fn serve_status_helper(id: u32, streamed: Arc<Streamed>) -> std::io::Result<(String, tokio::task::JoinHandle<()>)> {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "dkron-exec/{}/{}/{id}/{:x}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos()
    );
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
    let listener = std::os::unix::net::UnixListener::bind_addr(&addr)?;
    listener.set_nonblocking(true)?;
    let listener = tokio::net::UnixListener::from_std(listener)?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((conn, _)) = listener.accept().await {
            // An abstract socket has no permissions: only our own user's processes are served.
            if conn.peer_cred().map(|c| c.uid()).ok() != Some(me) {
                continue;
            }
            let streamed = streamed.clone();
            conns.spawn(grpc::serve(conn, MAX_MESSAGE, move |path, msg| {
                let streamed = streamed.clone();
                async move { update(&streamed, &path, &msg) }
            }));
        }
    });
    Ok((format!("@{name}"), task))
}

fn update(streamed: &Streamed, path: &str, msg: &[u8]) -> Handled {
    if !UPDATE_PATHS.contains(&path) {
        return Err((grpc::UNIMPLEMENTED, format!("unknown method {path}")));
    }
    let u = StatusUpdate::decode(msg).map_err(|e| (13, format!("StatusUpdateRequest: {e}")))?;
    streamed.update(&u);
    Ok(proto::encode_status_response(u.output.len() as i64))
}

/// The plugin's piped os.Stdout / os.Stderr (GRPCStdio) into the log queue, line by line.
async fn pump_stdio(response: h2::client::ResponseFuture, logs: Arc<LogQueue>, name: String) {
    let Ok(mut r) = Responses::start(response, MAX_MESSAGE).await else { return };
    let mut lines: HashMap<bool, LineSplitter> = HashMap::new();
    while let Ok(Some(msg)) = r.next().await {
        let Ok(d) = StdioData::decode(&msg) else { continue };
        let stderr = d.channel == 2;
        let which = if stderr { "stderr" } else { "stdout" };
        lines.entry(stderr).or_default().feed(&d.data, LINE_MAX, |l| logs.push(&name, which, l));
    }
    for (stderr, mut l) in lines {
        let which = if stderr { "stderr" } else { "stdout" };
        l.finish(|line| logs.push(&name, which, line));
    }
}
