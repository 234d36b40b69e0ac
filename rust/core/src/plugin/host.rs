//! The registry of plugins and the synchronous API the binding uses. The host owns one thread
//! running a current-thread tokio runtime: every plugin process is forked from that thread (so
//! its death signal fires only when the host goes away), and every plugin's supervisor task runs
//! there. Callers on other threads only send commands and wait on their own slots.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};

use super::codec::{Frame, MAX_FRAME};
use super::logs::LogQueue;
use super::supervisor::{CallSink, Cmd, Supervisor};
use super::{FailureKind, Kind, PluginFailure, PluginSpec};

#[derive(Debug, Clone)]
pub struct HostConfig {
    pub start_timeout: Duration,
    pub cancel_grace: Duration,
    pub stop_grace: Duration,
    pub backoff_max: Duration,
    pub max_frame: usize,
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            start_timeout: Duration::from_secs(10),
            cancel_grace: Duration::from_secs(1),
            stop_grace: Duration::from_secs(2),
            backoff_max: Duration::from_secs(5),
            max_frame: MAX_FRAME,
        }
    }
}

struct Entry {
    spec: Arc<PluginSpec>,
    tx: Option<mpsc::UnboundedSender<Cmd>>,
}

pub struct PluginHost {
    handle: Handle,
    thread: Mutex<Option<JoinHandle<()>>>,
    quit: Mutex<Option<oneshot::Sender<()>>>,
    plugins: Mutex<HashMap<(Kind, String), Entry>>,
    logs: Arc<LogQueue>,
    next_id: AtomicU64,
    config: HostConfig,
}

/// A call in flight, for cancelling it.
#[derive(Clone)]
pub struct CallRef {
    tx: mpsc::UnboundedSender<Cmd>,
    pub id: u64,
}

impl CallRef {
    pub fn cancel(&self) {
        let _ = self.tx.send(Cmd::Cancel { id: self.id });
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
                    // Dropping the runtime drops every task; children are kill_on_drop.
                }
            }
        })?;
        let handle = handle_rx.recv().map_err(|_| std::io::Error::other("the plugin host thread died"))??;
        Ok(Self {
            handle,
            thread: Mutex::new(Some(thread)),
            quit: Mutex::new(Some(quit_tx)),
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
    /// plugin (its process is stopped).
    pub fn register(&self, kind: Kind, name: &str, path: PathBuf) {
        let mut plugins = self.plugins.lock().unwrap();
        let key = (kind, name.to_string());
        if plugins.get(&key).is_some_and(|e| e.spec.path == path) {
            return;
        }
        let c = &self.config;
        let spec = PluginSpec {
            kind,
            name: name.to_string(),
            path,
            start_timeout: c.start_timeout,
            cancel_grace: c.cancel_grace,
            stop_grace: c.stop_grace,
            backoff_max: c.backoff_max,
            max_frame: c.max_frame,
        };
        // Replacing drops the old sender: its supervisor stops its process.
        plugins.insert(key, Entry { spec: Arc::new(spec), tx: None });
    }

    fn sender(&self, kind: Kind, name: &str) -> Result<mpsc::UnboundedSender<Cmd>, PluginFailure> {
        let mut plugins = self.plugins.lock().unwrap();
        let Some(entry) = plugins.get_mut(&(kind, name.to_string())) else {
            return Err(PluginFailure {
                kind: FailureKind::Start,
                message: format!("no {} plugin named '{name}' is registered", kind.as_str()),
            });
        };
        if let Some(tx) = &entry.tx {
            if !tx.is_closed() {
                return Ok(tx.clone());
            }
        }
        if self.quit.lock().unwrap().is_none() {
            return Err(PluginFailure { kind: FailureKind::Stopped, message: "the plugin host is closed".into() });
        }
        let (tx, rx) = mpsc::unbounded_channel();
        self.handle.spawn(Supervisor::new(entry.spec.clone(), self.logs.clone(), rx).run());
        entry.tx = Some(tx.clone());
        Ok(tx)
    }

    /// Sends a call; its output and answer go to `sink`. The plugin starts if it is not running.
    pub fn call(
        &self,
        kind: Kind,
        name: &str,
        header: Map<String, Value>,
        body: Vec<u8>,
        timeout: Option<Duration>,
        sink: Arc<dyn CallSink>,
    ) -> Result<CallRef, PluginFailure> {
        let tx = self.sender(kind, name)?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        tx.send(Cmd::Call { id, header, body, timeout, sink: sink.clone() }).map_err(|_| PluginFailure {
            kind: FailureKind::Stopped,
            message: format!("plugin {} '{name}': its supervisor is gone", kind.as_str()),
        })?;
        Ok(CallRef { tx, id })
    }

    /// A call that blocks until the answer, the timeout, or a failure.
    pub fn call_blocking(
        &self,
        kind: Kind,
        name: &str,
        header: Map<String, Value>,
        body: Vec<u8>,
        timeout: Option<Duration>,
    ) -> Result<Frame, PluginFailure> {
        let slot = Arc::new(CallSlot::default());
        self.call(kind, name, header, body, timeout, slot.clone())?;
        slot.wait(None).expect("waited without a limit")
    }

    /// The pid of the plugin's running process, if it runs.
    pub fn pid(&self, kind: Kind, name: &str) -> Option<u32> {
        let tx = self.plugins.lock().unwrap().get(&(kind, name.to_string()))?.tx.clone()?;
        let (reply, rx) = std::sync::mpsc::channel();
        tx.send(Cmd::Pid { reply }).ok()?;
        rx.recv_timeout(Duration::from_secs(5)).ok().flatten()
    }

    /// Stops one plugin's process (it starts again on its next call).
    pub fn stop(&self, kind: Kind, name: &str, grace: Duration) {
        let tx = self.plugins.lock().unwrap().get_mut(&(kind, name.to_string())).and_then(|e| e.tx.take());
        if let Some(tx) = tx {
            let (done, rx) = std::sync::mpsc::channel();
            if tx.send(Cmd::Stop { grace, done }).is_ok() {
                let _ = rx.recv_timeout(grace + Duration::from_secs(3));
            }
        }
    }

    /// Stops every plugin (shutdown, `grace`, SIGKILL) and the host thread. Idempotent.
    pub fn close(&self, grace: Duration) {
        let Some(quit) = self.quit.lock().unwrap().take() else { return };
        let senders: Vec<_> = self.plugins.lock().unwrap().values_mut().filter_map(|e| e.tx.take()).collect();
        let waits: Vec<_> = senders
            .into_iter()
            .filter_map(|tx| {
                let (done, rx) = std::sync::mpsc::channel();
                tx.send(Cmd::Stop { grace, done }).ok().map(|_| rx)
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

impl Drop for PluginHost {
    fn drop(&mut self) {
        self.close(self.config.stop_grace);
    }
}

/// A slot one blocking caller waits on.
#[derive(Default)]
pub struct CallSlot {
    result: Mutex<Option<Result<Frame, PluginFailure>>>,
    ready: Condvar,
}

impl CallSlot {
    /// The answer, or None if `timeout` passed first.
    pub fn wait(&self, timeout: Option<Duration>) -> Option<Result<Frame, PluginFailure>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut r = self.result.lock().unwrap();
        while r.is_none() {
            match deadline {
                None => r = self.ready.wait(r).unwrap(),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return None;
                    }
                    r = self.ready.wait_timeout(r, d - now).unwrap().0;
                }
            }
        }
        r.take()
    }
}

impl CallSink for CallSlot {
    fn output(&self, _stderr: bool, _data: &[u8]) {}

    fn finish(&self, result: Result<Frame, PluginFailure>) {
        *self.result.lock().unwrap() = Some(result);
        self.ready.notify_all();
    }
}
