//! The engine: one small tokio runtime that supervises every running job of an executor, so many
//! jobs can be in flight without a thread each. Callers get a `RunHandle` they can block on, poll
//! through a file descriptor (for asyncio), or cancel.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;
use tokio::sync::Notify;

use crate::job::{self, JobSpec, Outcome};

pub struct Engine {
    runtime: Option<Runtime>,
    shutdown: Arc<Notify>,
    in_flight: Arc<InFlight>,
}

/// Counts running jobs, so that shutdown can wait for their supervisors to finish killing them.
#[derive(Default)]
struct InFlight {
    count: Mutex<usize>,
    idle: Condvar,
}

impl Engine {
    pub fn new(worker_threads: usize) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(worker_threads.max(1))
            // Blocking work is only the rare /proc scan; keep the pool small.
            .max_blocking_threads(2)
            .thread_name("dkron-exec-engine")
            .enable_all()
            .build()?;
        Ok(Self { runtime: Some(runtime), shutdown: Arc::new(Notify::new()), in_flight: Arc::default() })
    }

    /// Starts a job. The spawn happens on the calling thread, so it costs no thread hop; the
    /// supervision runs on the engine.
    pub fn start(&self, spec: JobSpec) -> std::io::Result<RunHandle> {
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotConnected, "the engine is shut down"))?;
        let shared = Arc::new(Shared::new());
        let started_ns = job::unix_nanos();
        let _context = runtime.enter();
        match job::spawn(&spec) {
            Err(err) => shared.complete(job::spawn_failure(&spec, &err, started_ns)),
            Ok(started) => {
                let pid = started.child.id();
                *shared.pid.lock().unwrap() = pid;
                let task_shared = shared.clone();
                let shutdown = self.shutdown.clone();
                let in_flight = self.in_flight.clone();
                *in_flight.count.lock().unwrap() += 1;
                runtime.spawn(async move {
                    let outcome =
                        job::supervise(started, spec, started_ns, task_shared.cancel.clone(), shutdown).await;
                    // Leave the count first: whoever sees the outcome must also see it gone.
                    {
                        let mut n = in_flight.count.lock().unwrap();
                        *n -= 1;
                        if *n == 0 {
                            in_flight.idle.notify_all();
                        }
                    }
                    task_shared.complete(outcome);
                });
            }
        }
        Ok(RunHandle { shared })
    }

    pub fn in_flight(&self) -> usize {
        *self.in_flight.count.lock().unwrap()
    }

    /// Kills every running job (whole trees), waits up to `grace` for their supervisors to record
    /// the outcome, then stops the runtime. Idempotent.
    pub fn shutdown(&mut self, grace: Duration) {
        let Some(runtime) = self.runtime.take() else { return };
        let deadline = Instant::now() + grace;
        let mut n = self.in_flight.count.lock().unwrap();
        while *n > 0 {
            // notify_waiters only reaches supervisors parked right now; repeat until all are gone.
            self.shutdown.notify_waiters();
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let wait = (deadline - now).min(Duration::from_millis(20));
            n = self.in_flight.idle.wait_timeout(n, wait).unwrap().0;
        }
        drop(n);
        runtime.shutdown_timeout(Duration::from_millis(100));
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shutdown(Duration::from_secs(2));
    }
}

struct Shared {
    outcome: Mutex<Option<Arc<Outcome>>>,
    done: Condvar,
    cancel: Arc<Notify>,
    pid: Mutex<Option<u32>>,
    /// A pipe whose read end becomes readable when the job is done, for event loops. Made on
    /// first request only: blocking callers never pay for it.
    wake: Mutex<Option<(OwnedFd, OwnedFd)>>,
}

impl Shared {
    fn new() -> Self {
        Self {
            outcome: Mutex::new(None),
            done: Condvar::new(),
            cancel: Arc::new(Notify::new()),
            pid: Mutex::new(None),
            wake: Mutex::new(None),
        }
    }

    fn complete(&self, outcome: Outcome) {
        *self.outcome.lock().unwrap() = Some(Arc::new(outcome));
        self.done.notify_all();
        if let Some((_, write)) = self.wake.lock().unwrap().as_ref() {
            poke(write);
        }
    }

    fn wake_fd(&self) -> std::io::Result<RawFd> {
        let mut wake = self.wake.lock().unwrap();
        if wake.is_none() {
            let pair = nonblocking_pipe()?;
            // complete() may have run before the pipe existed: it looks at `wake` only after
            // setting the outcome, and we look at the outcome only after making the pipe.
            if self.outcome.lock().unwrap().is_some() {
                poke(&pair.1);
            }
            *wake = Some(pair);
        }
        Ok(wake.as_ref().map(|(read, _)| read.as_raw_fd()).unwrap_or(-1))
    }
}

fn nonblocking_pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: fds is a valid two-element array; on success both fds are ours.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so these are open fds owned by no one else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn poke(fd: &OwnedFd) {
    // SAFETY: writing one byte from a valid buffer to our own non-blocking pipe.
    unsafe { libc::write(fd.as_raw_fd(), b"x".as_ptr().cast(), 1) };
}

#[derive(Clone)]
pub struct RunHandle {
    shared: Arc<Shared>,
}

impl RunHandle {
    /// Blocks until the job ends or `timeout` passes (None: no limit).
    pub fn wait(&self, timeout: Option<Duration>) -> Option<Arc<Outcome>> {
        let mut guard = self.shared.outcome.lock().unwrap();
        match timeout {
            None => {
                while guard.is_none() {
                    guard = self.shared.done.wait(guard).unwrap();
                }
            }
            Some(t) => {
                let deadline = Instant::now() + t;
                while guard.is_none() {
                    let now = Instant::now();
                    if now >= deadline {
                        break;
                    }
                    guard = self.shared.done.wait_timeout(guard, deadline - now).unwrap().0;
                }
            }
        }
        guard.clone()
    }

    pub fn result(&self) -> Option<Arc<Outcome>> {
        self.shared.outcome.lock().unwrap().clone()
    }

    /// Kills the job's whole tree; the outcome then says `Cancelled`. No effect once it ended.
    pub fn cancel(&self) {
        self.shared.cancel.notify_one();
    }

    pub fn pid(&self) -> Option<u32> {
        *self.shared.pid.lock().unwrap()
    }

    /// A file descriptor that is readable once the job is done (owned by the handle).
    pub fn wake_fd(&self) -> std::io::Result<RawFd> {
        self.shared.wake_fd()
    }
}
