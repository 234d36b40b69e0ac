//! One running plugin's channel, driven by the threads that make the calls: a caller writes its
//! request on the socket itself and, when nobody else is reading, reads the answers itself
//! (leader/follower). The reader hands other callers' answers to their slots and wakes one of
//! them to lead when it leaves. So the common case, one caller and a running plugin, costs no
//! thread hop. The supervisor only launches, watches and kills the process: a reader that meets
//! end-of-file or garbage reports it, and the supervisor fails every call with the reason.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::mpsc;

use super::codec::{self, header, CodecError, Frame};
use super::supervisor::CallSink;
use super::wire::{self, FrameReader, Read, WriteError};
use super::{FailureKind, PluginFailure};

/// The longest a blocked caller goes without looking at its deadline and its cancel flag: the
/// socket's receive and send timeouts, and every condition-variable wait.
pub const SLICE: Duration = Duration::from_millis(10);

/// What a reader tells the supervisor.
#[derive(Debug)]
pub enum Report {
    /// End of stream on the channel.
    Closed { generation: u64 },
    /// A frame that breaks the protocol, or an I/O error.
    Broken { generation: u64, error: CodecError },
    /// A call was given up; its answer is due by then, or the plugin is hung.
    CancelDue { generation: u64, due: Instant },
    /// A caller gave up on a plugin that has no cancel (go-plugin): kill it, saying why.
    GaveUp { generation: u64, kind: FailureKind, why: String },
}

/// One request on its way.
pub struct Request<'a> {
    pub id: u64,
    /// Length prefix and header (`codec::encode_head`).
    pub head: &'a [u8],
    pub body: &'a [u8],
    pub deadline: Option<Instant>,
    /// The timeout behind `deadline`, for the message.
    pub timeout: Option<Duration>,
    /// Gets the call's streamed `output` frames.
    pub sink: Option<Arc<dyn CallSink>>,
}

pub enum CallError {
    /// The channel had already failed before the call was sent: try again on a new process.
    Stale,
    Failed(PluginFailure),
}

struct Call {
    result: Option<Result<Frame, PluginFailure>>,
    wake: Arc<Condvar>,
    sink: Option<Arc<dyn CallSink>>,
}

#[derive(Default)]
struct State {
    /// The process failed: calls on this channel fail with this.
    dead: Option<PluginFailure>,
    /// A reader met end-of-file or garbage: nobody reads any more; the supervisor decides.
    broken: bool,
    /// A thread is reading (at most one).
    leading: bool,
    calls: HashMap<u64, Call>,
    /// Calls given up on (timeout, cancel), with the time their answer is due.
    cancelled: HashMap<u64, Instant>,
}

pub struct Conn {
    socket: OwnedFd,
    pub generation: u64,
    pub pid: u32,
    pub max_in_flight: usize,
    /// "plugin processor 'NAME' (PATH)", the start of every message.
    who: Arc<str>,
    cancel_grace: Duration,
    /// Frames are written whole, one thread at a time.
    writing: Mutex<()>,
    /// Held by the thread that reads.
    reader: Mutex<FrameReader>,
    state: Mutex<State>,
    /// A call ended: room for a queued one.
    room: Condvar,
    /// The plugin answered a call since it started (resets the restart backoff).
    pub answered: AtomicBool,
    reports: mpsc::UnboundedSender<Report>,
}

impl Conn {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        socket: OwnedFd,
        generation: u64,
        pid: u32,
        max_in_flight: usize,
        max_frame: usize,
        who: Arc<str>,
        cancel_grace: Duration,
        reports: mpsc::UnboundedSender<Report>,
    ) -> std::io::Result<Self> {
        wire::set_blocking_with_timeouts(socket.as_raw_fd(), SLICE)?;
        Ok(Self {
            socket,
            generation,
            pid,
            max_in_flight,
            who,
            cancel_grace,
            writing: Mutex::new(()),
            reader: Mutex::new(FrameReader::new(max_frame)),
            state: Mutex::new(State::default()),
            room: Condvar::new(),
            answered: AtomicBool::new(false),
            reports,
        })
    }

    fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    fn failure(&self, kind: FailureKind, what: impl std::fmt::Display) -> PluginFailure {
        PluginFailure { kind, message: format!("{}: {what}", self.who) }
    }

    /// Still taking calls.
    pub fn usable(&self) -> bool {
        let s = self.state.lock().unwrap();
        s.dead.is_none() && !s.broken
    }

    /// Sends the request and waits for its answer, reading the channel while nobody else does.
    /// `interrupted` is asked at least every SLICE; true cancels the call.
    pub fn call(&self, req: Request<'_>, interrupted: &mut dyn FnMut() -> bool) -> Result<Frame, CallError> {
        let wake = Arc::new(Condvar::new());
        let mut s = self.state.lock().unwrap();
        loop {
            if s.dead.is_some() || s.broken {
                return Err(CallError::Stale);
            }
            if s.calls.len() < self.max_in_flight {
                break;
            }
            // Full: wait for a call to end (a queued call has not been sent: no cancel needed).
            s = self.room.wait_timeout(s, SLICE).unwrap().0;
            drop(s);
            let gave_up = given_up(&req, interrupted);
            s = self.state.lock().unwrap();
            if let Some(kind) = gave_up {
                let why = if kind == FailureKind::Timeout {
                    format!("call timed out after {:?} (queued behind {} calls in flight)", req.timeout.unwrap_or_default(), self.max_in_flight)
                } else {
                    "the call was cancelled".into()
                };
                return Err(CallError::Failed(self.failure(kind, why)));
            }
        }
        s.calls.insert(req.id, Call { result: None, wake: wake.clone(), sink: req.sink.clone() });
        drop(s);
        let sent = {
            let _w = self.writing.lock().unwrap();
            wire::write_frame(self.fd(), req.head, req.body, req.deadline, 0)
        };
        match sent {
            Ok(()) => {}
            Err(WriteError::TimedOut { partial: false }) => {
                self.end_call(req.id);
                let why = format!("call timed out after {:?} (the plugin did not read its request)", req.timeout.unwrap_or_default());
                return Err(CallError::Failed(self.failure(FailureKind::Timeout, why)));
            }
            // Half a frame is out: the channel cannot be used any more.
            Err(WriteError::TimedOut { partial: true }) => self.mark_broken(Report::Broken {
                generation: self.generation,
                error: CodecError::Io(std::io::Error::other("hung: stopped reading in the middle of a request")),
            }),
            Err(WriteError::Io(e)) => self.mark_broken(match e.kind() {
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset => Report::Closed { generation: self.generation },
                _ => Report::Broken { generation: self.generation, error: CodecError::Io(e) },
            }),
        }
        self.wait_answer(&req, &wake, interrupted).map_err(CallError::Failed)
    }

    fn wait_answer(&self, req: &Request<'_>, wake: &Condvar, interrupted: &mut dyn FnMut() -> bool) -> Result<Frame, PluginFailure> {
        let mut s = self.state.lock().unwrap();
        loop {
            let call = s.calls.get_mut(&req.id).expect("only its caller removes a call");
            if let Some(result) = call.result.take() {
                s.calls.remove(&req.id);
                self.hand_over(&s);
                drop(s);
                self.room.notify_one();
                return result;
            }
            if !s.leading && !s.broken && s.dead.is_none() {
                s.leading = true;
                drop(s);
                self.lead(req.id);
                s = self.state.lock().unwrap();
                s.leading = false;
                if s.calls.get(&req.id).is_some_and(|c| c.result.is_some()) {
                    continue;
                }
            } else {
                s = wake.wait_timeout(s, SLICE).unwrap().0;
                if s.calls.get(&req.id).is_some_and(|c| c.result.is_some()) {
                    continue;
                }
            }
            if s.dead.is_some() {
                continue;
            }
            drop(s);
            let gave_up = given_up(req, interrupted);
            s = self.state.lock().unwrap();
            if s.calls.get(&req.id).is_some_and(|c| c.result.is_some()) {
                continue;
            }
            if let Some(kind) = gave_up {
                return Err(self.abandon(s, req, kind));
            }
        }
    }

    /// Gives a call up: its answer is no longer wanted; `cancel` is sent and the plugin has the
    /// cancel grace to answer it.
    fn abandon(&self, mut s: MutexGuard<'_, State>, req: &Request<'_>, kind: FailureKind) -> PluginFailure {
        s.calls.remove(&req.id);
        let due = Instant::now() + self.cancel_grace;
        s.cancelled.insert(req.id, due);
        self.hand_over(&s);
        drop(s);
        self.room.notify_one();
        if let Ok(head) = codec::encode(&header([("type", json!("cancel")), ("id", json!(req.id))]), &[], usize::MAX) {
            let _w = self.writing.lock().unwrap();
            let _ = wire::write_frame(self.fd(), &head, &[], Some(due), 0);
        }
        let _ = self.reports.send(Report::CancelDue { generation: self.generation, due });
        let why = match kind {
            FailureKind::Timeout => format!("call timed out after {:?}", req.timeout.unwrap_or_default()),
            _ => "the call was cancelled".into(),
        };
        self.failure(kind, why)
    }

    fn end_call(&self, id: u64) {
        let mut s = self.state.lock().unwrap();
        s.calls.remove(&id);
        self.hand_over(&s);
        drop(s);
        self.room.notify_one();
    }

    /// Wakes a caller still waiting for its answer, to read in our place.
    fn hand_over(&self, s: &State) {
        if !s.leading {
            if let Some(c) = s.calls.values().find(|c| c.result.is_none()) {
                c.wake.notify_one();
            }
        }
    }

    /// Reads until call `mine` is answered or a SLICE passes with nothing to read.
    fn lead(&self, mine: u64) {
        let mut reader = self.reader.lock().unwrap();
        loop {
            match reader.next(self.fd(), 0) {
                Ok(Read::Frame(frame)) => {
                    if self.dispatch(frame, mine) {
                        // Answers already buffered go to their callers now, without a system call.
                        loop {
                            match reader.buffered() {
                                Ok(Some(f)) => {
                                    self.dispatch(f, mine);
                                }
                                Ok(None) => return,
                                Err(error) => return self.mark_broken(Report::Broken { generation: self.generation, error }),
                            }
                        }
                    }
                }
                Ok(Read::WouldBlock) => return,
                Ok(Read::Eof) => return self.mark_broken(Report::Closed { generation: self.generation }),
                Err(error) => return self.mark_broken(Report::Broken { generation: self.generation, error }),
            }
        }
    }

    /// Hands a frame to its call; true if it answered `mine`.
    fn dispatch(&self, frame: Frame, mine: u64) -> bool {
        let Some(id) = frame.id() else {
            if matches!(frame.kind(), "result" | "error") {
                let error = CodecError::Malformed("answer without an id".into());
                self.mark_broken(Report::Broken { generation: self.generation, error });
            }
            // Unknown notifications are ignored: later protocol versions may add messages.
            return false;
        };
        let mut s = self.state.lock().unwrap();
        match frame.kind() {
            "output" => {
                let sink = s.calls.get(&id).and_then(|c| c.sink.clone());
                drop(s);
                if let Some(sink) = sink {
                    sink.output(frame.str_field("stream") == Some("stderr"), &frame.body);
                }
                false
            }
            "result" | "error" => {
                s.cancelled.remove(&id);
                let Some(call) = s.calls.get_mut(&id) else { return false };
                if call.result.is_some() {
                    return false;
                }
                call.result = Some(if frame.kind() == "result" {
                    self.answered.store(true, Ordering::Relaxed);
                    Ok(frame)
                } else {
                    let msg = frame.str_field("message").unwrap_or("(no message)").to_string();
                    Err(self.failure(FailureKind::Remote, msg))
                });
                if id != mine {
                    call.wake.notify_one();
                }
                id == mine
            }
            _ => false,
        }
    }

    fn mark_broken(&self, report: Report) {
        let mut s = self.state.lock().unwrap();
        if s.broken || s.dead.is_some() {
            return;
        }
        s.broken = true;
        drop(s);
        let _ = self.reports.send(report);
    }

    /// The process failed: every call on the channel fails with `failure`, and readers wake up.
    pub fn fail(&self, failure: &PluginFailure) {
        let mut s = self.state.lock().unwrap();
        if s.dead.is_none() {
            s.dead = Some(failure.clone());
        }
        s.cancelled.clear();
        for call in s.calls.values_mut() {
            if call.result.is_none() {
                call.result = Some(Err(failure.clone()));
                call.wake.notify_one();
            }
        }
        drop(s);
        self.room.notify_all();
        // SAFETY: shutdown on our own socket; a reader blocked in recv returns at once.
        unsafe { libc::shutdown(self.fd(), libc::SHUT_RDWR) };
    }

    /// True if a cancelled call's answer is overdue (the plugin is hung). Reads what arrived
    /// first, without blocking, when no caller is reading.
    pub fn overdue(&self, now: Instant) -> bool {
        let mut s = self.state.lock().unwrap();
        if !s.cancelled.values().any(|due| *due <= now) {
            return false;
        }
        if !s.leading && !s.broken && s.dead.is_none() {
            s.leading = true;
            drop(s);
            self.drain();
            s = self.state.lock().unwrap();
            s.leading = false;
            self.hand_over(&s);
        }
        s.cancelled.values().any(|due| *due <= now)
    }

    fn drain(&self) {
        let mut reader = self.reader.lock().unwrap();
        loop {
            match reader.next(self.fd(), libc::MSG_DONTWAIT) {
                Ok(Read::Frame(frame)) => {
                    self.dispatch(frame, 0);
                }
                Ok(Read::WouldBlock) => return,
                Ok(Read::Eof) => return self.mark_broken(Report::Closed { generation: self.generation }),
                Err(error) => return self.mark_broken(Report::Broken { generation: self.generation, error }),
            }
        }
    }

    /// Best effort, never blocks: for the host thread's own messages (shutdown).
    pub fn send_nowait(&self, head: &[u8]) {
        if let Ok(_w) = self.writing.try_lock() {
            let _ = wire::write_frame(self.fd(), head, &[], None, libc::MSG_DONTWAIT);
        }
    }

    /// Our side says it is done writing: the plugin reads end-of-file.
    pub fn close_write(&self) {
        // SAFETY: shutdown on our own socket.
        unsafe { libc::shutdown(self.fd(), libc::SHUT_WR) };
    }
}

/// Timeout or cancel; asked without holding the state lock (`interrupted` may take the GIL).
fn given_up(req: &Request<'_>, interrupted: &mut dyn FnMut() -> bool) -> Option<FailureKind> {
    if req.deadline.is_some_and(|d| Instant::now() >= d) {
        return Some(FailureKind::Timeout);
    }
    interrupted().then_some(FailureKind::Cancelled)
}
