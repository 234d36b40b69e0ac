//! A `dkron-executor-NAME` plugin as a job's executor: its config travels as the job wrote it
//! (strings), `timeout` is enforced by the host, and the streamed output goes into the same
//! bounded capture as a shell job's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::{mpsc, Notify};

use crate::capture::TailBuffer;
use crate::config::{self, Config};
use crate::godur::format_go_duration;
use crate::job::{unix_nanos, EndReason, Outcome};
use crate::plugin::codec::Frame;
use crate::plugin::host::PluginHost;
use crate::plugin::supervisor::CallSink;
use crate::plugin::{FailureKind, Kind, PluginFailure};
use crate::run::OutputFn;

#[derive(Debug, Clone)]
pub struct PluginExecutor {
    pub name: String,
    pub config: HashMap<String, String>,
    /// `executor_config.timeout` when it is a Go duration: the host cancels the call after it.
    /// Other forms are the plugin's business (Dkron's http executor takes seconds).
    pub timeout: Option<Duration>,
    /// `executor_config.payload`, sent as the call's body as written.
    pub payload: Vec<u8>,
}

impl PluginExecutor {
    pub fn parse(name: &str, c: &Config<'_>) -> config::Result<Self> {
        Ok(Self {
            name: name.to_string(),
            config: c.map().clone(),
            timeout: c.duration("timeout").unwrap_or(None),
            payload: c.get("payload").unwrap_or_default().as_bytes().to_vec(),
        })
    }
}

/// A chunk of streamed output: (is stderr, bytes).
pub type Chunk = (bool, Vec<u8>);

/// Where an executor call's output and end go, from whichever thread the host delivers them on.
struct Call {
    state: Mutex<CallState>,
    done: Notify,
    /// Chunks for the caller's `on_output`, delivered on the run's own thread.
    chunks: Option<mpsc::UnboundedSender<Chunk>>,
}

struct CallState {
    capture: TailBuffer,
    result: Option<Result<Frame, PluginFailure>>,
}

impl CallSink for Call {
    fn output(&self, stderr: bool, data: &[u8]) {
        let mut s = self.state.lock().unwrap();
        if s.result.is_some() {
            return;
        }
        s.capture.write(data);
        if let Some(tx) = &self.chunks {
            let _ = tx.send((stderr, data.to_vec()));
        }
    }

    fn finish(&self, result: Result<Frame, PluginFailure>) {
        let mut s = self.state.lock().unwrap();
        if s.result.is_some() {
            return;
        }
        if let Ok(frame) = &result {
            // The answer's body is the rest of the output, after what was streamed.
            s.capture.write(&frame.body);
            if let (Some(tx), false) = (&self.chunks, frame.body.is_empty()) {
                let _ = tx.send((false, frame.body.clone()));
            }
        }
        s.result = Some(result);
        drop(s);
        self.done.notify_one();
    }
}

/// What a run of the plugin needs besides its plan.
pub struct Attempt<'a> {
    pub host: &'a PluginHost,
    pub job_name: &'a str,
    pub output_limit: usize,
    /// Kills the call (cancel, interrupt, shutdown).
    pub stop: &'a Notify,
    pub shutdown: &'a Notify,
    pub on_output: Option<&'a OutputFn>,
}

impl PluginExecutor {
    /// One call of the plugin, to its end; streamed chunks go to `on_output` on this task.
    pub async fn run(&self, a: Attempt<'_>) -> Outcome {
        let started_ns = unix_nanos();
        let (tx, mut rx) = match a.on_output {
            Some(_) => {
                let (tx, rx) = mpsc::unbounded_channel();
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        let call = Arc::new(Call {
            state: Mutex::new(CallState { capture: TailBuffer::new(a.output_limit), result: None }),
            done: Notify::new(),
            chunks: tx,
        });
        let mut header = Map::new();
        header.insert("type".into(), Value::from("execute"));
        header.insert("job_name".into(), Value::from(a.job_name));
        let config = self.config.iter().map(|(k, v)| (k.clone(), Value::from(v.as_str()))).collect();
        header.insert("config".into(), Value::Object(config));
        let pid = a.host.pid(Kind::Executor, &self.name);
        match a.host.call(Kind::Executor, &self.name, header, self.payload.clone(), self.timeout, call.clone()) {
            Err(failure) => call.finish(Err(failure)),
            Ok(handle) => {
                let stopped = async {
                    tokio::select! {
                        _ = a.stop.notified() => {}
                        _ = a.shutdown.notified() => {}
                    }
                };
                tokio::pin!(stopped);
                let mut cancelled = false;
                loop {
                    tokio::select! {
                        _ = call.done.notified() => break,
                        Some((stderr, chunk)) = next_chunk(rx.as_mut()) => {
                            if let Some(f) = a.on_output {
                                f(stderr, &chunk);
                            }
                        }
                        _ = &mut stopped, if !cancelled => {
                            cancelled = true;
                            handle.cancel();
                        }
                    }
                }
            }
        }
        // Chunks that arrived before the end are delivered before the run returns.
        if let (Some(rx), Some(f)) = (rx.as_mut(), a.on_output) {
            while let Ok((stderr, chunk)) = rx.try_recv() {
                f(stderr, &chunk);
            }
        }
        let mut s = call.state.lock().unwrap();
        let result = s.result.take().expect("finished");
        self.outcome(&s.capture, result, a.job_name, pid, started_ns)
    }

    fn outcome(&self, capture: &TailBuffer, result: Result<Frame, PluginFailure>, job: &str, pid: Option<u32>, started_ns: u128) -> Outcome {
        let label = format!("plugin executor '{}'", self.name);
        let (error, reason, exit_code) = match &result {
            Ok(frame) => {
                let code = frame.header.get("exit_code").and_then(Value::as_i64).and_then(|c| i32::try_from(c).ok());
                // Dkron's executors fail only through `error`; a non-zero exit code without one
                // fails too, with the shell executor's text, so success never sits beside it.
                let err = match (frame.str_field("error").filter(|e| !e.is_empty()), code) {
                    (Some(e), _) => Some(e.to_string()),
                    (None, Some(c)) if c != 0 => Some(format!("exit status {c}")),
                    (None, _) => None,
                };
                (err, EndReason::Exited, code)
            }
            Err(f) => match f.kind {
                FailureKind::Timeout => {
                    let limit = format_go_duration(self.timeout.unwrap_or_default());
                    let msg = format!("{label}: Job '{job}' execution time exceeding defined timeout {limit}. Job was cancelled");
                    (Some(msg), EndReason::TimedOut, None)
                }
                FailureKind::Cancelled | FailureKind::Stopped => {
                    (Some(crate::job::cancelled_message(&label, job)), EndReason::Cancelled, None)
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
            usage: Default::default(),
            pid,
            exit_code,
            truncated: capture.truncated(),
            output,
            output_total: capture.total(),
            error,
            reason,
            started_ns,
            finished_ns: unix_nanos(),
            // Executor plugins' output is not spooled: processors get the in-memory tail.
            spool: None,
            spool_complete: false,
            spool_error: None,
        }
    }
}

async fn next_chunk(rx: Option<&mut mpsc::UnboundedReceiver<Chunk>>) -> Option<Chunk> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
