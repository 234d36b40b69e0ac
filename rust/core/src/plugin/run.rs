//! A run of an executor plugin, shaped like the engine's `RunHandle`: the streamed output goes
//! into the same bounded tail buffer, and the end becomes a `job::Outcome`.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::codec::Frame;
use super::host::CallRef;
use super::supervisor::CallSink;
use super::{FailureKind, PluginFailure};
use crate::capture::TailBuffer;
use crate::godur::format_go_duration;
use crate::job::{unix_nanos, EndReason, Outcome};

/// A chunk of streamed output: (is stderr, bytes).
pub type Chunk = (bool, Vec<u8>);

struct State {
    capture: TailBuffer,
    chunks: VecDeque<Chunk>,
    outcome: Option<Arc<Outcome>>,
}

pub struct RunShared {
    state: Mutex<State>,
    changed: Condvar,
    /// Keep chunks for `next_chunks` (someone wants a live stream).
    stream: bool,
    started_ns: u128,
    job_name: String,
    plugin: String,
    timeout: Option<Duration>,
    pid: Option<u32>,
    call: OnceLock<CallRef>,
    wake_read: OwnedFd,
    wake_write: OwnedFd,
}

#[derive(Clone)]
pub struct PluginRun {
    shared: Arc<RunShared>,
}

impl PluginRun {
    pub fn new(
        plugin: &str,
        job_name: &str,
        output_limit: usize,
        timeout: Option<Duration>,
        stream: bool,
        pid: Option<u32>,
    ) -> std::io::Result<Self> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: fds is a valid two-element array; on success both fds are ours.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so these are open fds owned by no one else.
        let (wake_read, wake_write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let shared = RunShared {
            state: Mutex::new(State { capture: TailBuffer::new(output_limit), chunks: VecDeque::new(), outcome: None }),
            changed: Condvar::new(),
            stream,
            started_ns: unix_nanos(),
            job_name: job_name.to_string(),
            plugin: plugin.to_string(),
            timeout,
            pid,
            call: OnceLock::new(),
            wake_read,
            wake_write,
        };
        Ok(Self { shared: Arc::new(shared) })
    }

    pub fn sink(&self) -> Arc<dyn CallSink> {
        self.shared.clone()
    }

    pub fn set_call(&self, call: CallRef) {
        let _ = self.shared.call.set(call);
    }

    /// Ends the run at once with `failure` (the call could not even be sent).
    pub fn fail(&self, failure: PluginFailure) {
        self.shared.finish(Err(failure));
    }

    pub fn wait(&self, timeout: Option<Duration>) -> Option<Arc<Outcome>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut s = self.shared.state.lock().unwrap();
        while s.outcome.is_none() {
            match deadline {
                None => s = self.shared.changed.wait(s).unwrap(),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        break;
                    }
                    s = self.shared.changed.wait_timeout(s, d - now).unwrap().0;
                }
            }
        }
        s.outcome.clone()
    }

    pub fn result(&self) -> Option<Arc<Outcome>> {
        self.shared.state.lock().unwrap().outcome.clone()
    }

    /// Streamed chunks not yet taken; waits up to `timeout` for some. None once the run ended
    /// and every chunk was taken.
    pub fn next_chunks(&self, timeout: Duration) -> Option<Vec<Chunk>> {
        let deadline = Instant::now() + timeout;
        let mut s = self.shared.state.lock().unwrap();
        while s.chunks.is_empty() && s.outcome.is_none() {
            let now = Instant::now();
            if now >= deadline {
                return Some(Vec::new());
            }
            s = self.shared.changed.wait_timeout(s, deadline - now).unwrap().0;
        }
        if s.chunks.is_empty() {
            return None;
        }
        Some(s.chunks.drain(..).collect())
    }

    pub fn cancel(&self) {
        if let Some(call) = self.shared.call.get() {
            call.cancel();
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.shared.pid
    }

    pub fn wake_fd(&self) -> RawFd {
        self.shared.wake_read.as_raw_fd()
    }
}

impl RunShared {
    fn outcome(&self, capture: &TailBuffer, result: Result<Frame, PluginFailure>) -> Outcome {
        let (error, reason, exit_code) = match &result {
            Ok(frame) => {
                let err = frame.str_field("error").filter(|e| !e.is_empty()).map(str::to_string);
                let code = frame.header.get("exit_code").and_then(Value::as_i64).map(|c| c as i32);
                (err, EndReason::Exited, code)
            }
            Err(f) => match f.kind {
                FailureKind::Timeout => {
                    let limit = format_go_duration(self.timeout.unwrap_or_default());
                    let msg = format!(
                        "{}: Job '{}' execution time exceeding defined timeout {limit}. Job was cancelled",
                        self.plugin, self.job_name
                    );
                    (Some(msg), EndReason::TimedOut, None)
                }
                FailureKind::Cancelled => {
                    let msg = format!("{}: Job '{}' was cancelled", self.plugin, self.job_name);
                    (Some(msg), EndReason::Cancelled, None)
                }
                FailureKind::Start => (Some(f.message.clone()), EndReason::SpawnFailed, None),
                _ => (Some(f.message.clone()), EndReason::Exited, None),
            },
        };
        let output = match &error {
            Some(e) => capture.contents_with_trailer(format!("{e}\n").as_bytes()),
            None => capture.contents(),
        };
        Outcome {
            pid: self.pid,
            exit_code,
            truncated: capture.truncated(),
            output,
            output_total: capture.total(),
            error,
            reason,
            started_ns: self.started_ns,
            finished_ns: unix_nanos(),
            // Executor plugins' output is not spooled: processors get the in-memory tail.
            spool: None,
            spool_complete: false,
            spool_error: None,
        }
    }
}

impl CallSink for RunShared {
    fn output(&self, stderr: bool, data: &[u8]) {
        let mut s = self.state.lock().unwrap();
        if s.outcome.is_some() {
            return;
        }
        s.capture.write(data);
        if self.stream {
            s.chunks.push_back((stderr, data.to_vec()));
        }
        drop(s);
        self.changed.notify_all();
    }

    fn finish(&self, result: Result<Frame, PluginFailure>) {
        let mut s = self.state.lock().unwrap();
        if s.outcome.is_some() {
            return;
        }
        if let Ok(frame) = &result {
            // The answer's body is the rest of the output, after what was streamed.
            let body = frame.body.clone();
            s.capture.write(&body);
            if self.stream && !body.is_empty() {
                s.chunks.push_back((false, body));
            }
        }
        let outcome = self.outcome(&s.capture, result);
        s.outcome = Some(Arc::new(outcome));
        drop(s);
        self.changed.notify_all();
        // SAFETY: writing one byte from a valid buffer to our own non-blocking pipe.
        unsafe { libc::write(self.wake_write.as_raw_fd(), b"x".as_ptr().cast(), 1) };
    }
}
