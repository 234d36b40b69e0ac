//! The engine: one small tokio runtime that supervises every running job of an executor, so many
//! jobs can be in flight without a thread each. Callers get a `RunHandle` they can block on, poll
//! through a file descriptor (for asyncio), or cancel. A blocking caller can instead run a job on
//! its own thread (`run_here`), which saves the hops between threads.

use std::cell::RefCell;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;
pub use tokio::sync::Notify;

use crate::job::{self, JobSpec, Outcome};

pub struct Engine {
    /// Taken (write lock) only when the engine shuts down; `start` holds a read lock briefly.
    runtime: RwLock<Option<Runtime>>,
    closed: AtomicBool,
    shutdown: Arc<Notify>,
    in_flight: Arc<InFlight>,
}

fn shut_down_error() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::NotConnected, "the engine is shut down")
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
        Ok(Self {
            runtime: RwLock::new(Some(runtime)),
            closed: AtomicBool::new(false),
            shutdown: Arc::new(Notify::new()),
            in_flight: Arc::default(),
        })
    }

    /// Starts a job and returns at once. The spawn itself happens on the engine's thread too, so
    /// a caller juggling many jobs (an event loop) keeps working while the kernel forks.
    /// With `notify`, the token is pushed to that queue when the job ends.
    pub fn start(&self, spec: JobSpec, notify: Option<(Arc<CompletionQueue>, u64)>) -> std::io::Result<RunHandle> {
        let guard = self.runtime.read().unwrap();
        let runtime = guard.as_ref().filter(|_| !self.closed.load(Ordering::SeqCst)).ok_or_else(shut_down_error)?;
        let shared = Arc::new(Shared::new(notify));
        let counted = InFlightGuard::enter(&self.in_flight);
        if self.closed.load(Ordering::SeqCst) {
            // A shutdown began after our check: it may not have seen us in the count.
            shared.cancel.notify_one();
        }
        let lost = LostSupervision::new(&shared, &spec);
        let task_shared = shared.clone();
        let shutdown = self.shutdown.clone();
        runtime.spawn(async move {
            let started_ns = job::unix_nanos();
            let outcome = match job::spawn(&spec) {
                Err(err) => job::spawn_failure(&spec, &err, started_ns),
                Ok(started) => {
                    *task_shared.pid.lock().unwrap() = started.child.id();
                    let cancel = task_shared.cancel.clone();
                    job::supervise(started, spec, started_ns, cancel, shutdown).await
                }
            };
            // Leave the count first: whoever sees the outcome must also see it gone.
            drop(counted);
            lost.complete(outcome);
        });
        Ok(RunHandle { shared })
    }

    /// Runs a job to its end on the calling thread, on a small runtime of that thread's own: no
    /// thread hop between spawning, supervising and returning, which is what a blocking caller
    /// wants. Every `poll` interval `interrupted` is asked whether to give up; when it says yes
    /// the job's tree is killed and its outcome (Cancelled) is still returned, with `true`.
    /// `cancel` (notified from any thread) kills the job as `RunHandle::cancel` does.
    pub fn run_here(
        &self,
        spec: JobSpec,
        poll: Duration,
        cancel: Arc<Notify>,
        mut interrupted: impl FnMut() -> bool,
    ) -> std::io::Result<(Outcome, bool)> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(shut_down_error());
        }
        LOCAL_RUNTIME.with(|cell| {
            let mut slot = cell.borrow_mut();
            if slot.is_none() {
                *slot = Some(tokio::runtime::Builder::new_current_thread().enable_all().build()?);
            }
            let runtime = slot.as_ref().expect("just made");
            let started_ns = job::unix_nanos();
            let _context = runtime.enter();
            let started = match job::spawn(&spec) {
                Ok(started) => started,
                Err(err) => return Ok((job::spawn_failure(&spec, &err, started_ns), false)),
            };
            let _counted = InFlightGuard::enter(&self.in_flight);
            if self.closed.load(Ordering::SeqCst) {
                // A shutdown began between our check and our count: it may not wait for us.
                cancel.notify_one();
            }
            let mut run = Box::pin(job::supervise(started, spec, started_ns, cancel.clone(), self.shutdown.clone()));
            let mut gave_up = false;
            loop {
                if let Ok(outcome) = runtime.block_on(tokio::time::timeout(poll, &mut run)) {
                    return Ok((outcome, gave_up));
                }
                if !gave_up && interrupted() {
                    gave_up = true;
                    cancel.notify_one();
                }
            }
        })
    }

    pub fn in_flight(&self) -> usize {
        *self.in_flight.count.lock().unwrap()
    }

    /// Kills every running job (whole trees), waits up to `grace` for their supervisors to record
    /// the outcome, then stops the runtime. Idempotent.
    pub fn shutdown(&self, grace: Duration) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
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
        if let Some(runtime) = self.runtime.write().unwrap().take() {
            runtime.shutdown_timeout(Duration::from_millis(100));
        }
    }
}

/// Completes a handle whose supervising task was dropped unfinished (the runtime shut down under
/// it), so that nobody waits forever; the job's tree is killed.
struct LostSupervision {
    shared: Option<Arc<Shared>>,
    output_limit: usize,
    label: String,
}

impl LostSupervision {
    fn new(shared: &Arc<Shared>, spec: &JobSpec) -> Self {
        Self { shared: Some(shared.clone()), output_limit: spec.output_limit, label: spec.label.clone() }
    }

    fn complete(mut self, outcome: Outcome) {
        if let Some(shared) = self.shared.take() {
            shared.complete(outcome);
        }
    }
}

impl Drop for LostSupervision {
    fn drop(&mut self) {
        let Some(shared) = self.shared.take() else { return };
        let pid = *shared.pid.lock().unwrap();
        if let Some(pid) = pid {
            crate::proctree::kill_job(pid as i32, pid as i32);
        }
        let error = format!("shell: Job '{}' was cancelled: the engine shut down. Job was killed", self.label);
        let now = job::unix_nanos();
        shared.complete(job::bare_outcome(self.output_limit, error, job::EndReason::Cancelled, pid, now));
    }
}

thread_local! {
    /// The runtime `run_here` drives on this thread (made on first use).
    static LOCAL_RUNTIME: RefCell<Option<Runtime>> = const { RefCell::new(None) };
}

/// One running job in the count; leaves it (and wakes a waiting shutdown) when dropped.
struct InFlightGuard(Arc<InFlight>);

impl InFlightGuard {
    fn enter(in_flight: &Arc<InFlight>) -> Self {
        *in_flight.count.lock().unwrap() += 1;
        Self(in_flight.clone())
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        let mut n = self.0.count.lock().unwrap();
        *n -= 1;
        if *n == 0 {
            self.0.idle.notify_all();
        }
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
    /// Where to report the end, for callers that wait on many jobs through one queue.
    notify: Option<(Arc<CompletionQueue>, u64)>,
}

impl Shared {
    fn new(notify: Option<(Arc<CompletionQueue>, u64)>) -> Self {
        Self {
            outcome: Mutex::new(None),
            done: Condvar::new(),
            cancel: Arc::new(Notify::new()),
            pid: Mutex::new(None),
            wake: Mutex::new(None),
            notify,
        }
    }

    fn complete(&self, outcome: Outcome) {
        *self.outcome.lock().unwrap() = Some(Arc::new(outcome));
        self.done.notify_all();
        if let Some((_, write)) = self.wake.lock().unwrap().as_ref() {
            poke(write);
        }
        if let Some((queue, token)) = &self.notify {
            queue.push(*token);
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

/// Tokens of finished jobs, with one file descriptor that is readable while any are waiting: an
/// event loop watching hundreds of jobs registers one reader, not one per job.
pub struct CompletionQueue {
    tokens: Mutex<Vec<u64>>,
    read: OwnedFd,
    write: OwnedFd,
}

impl CompletionQueue {
    pub fn new() -> std::io::Result<Self> {
        let (read, write) = nonblocking_pipe()?;
        Ok(Self { tokens: Mutex::new(Vec::new()), read, write })
    }

    pub fn fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    fn push(&self, token: u64) {
        let mut tokens = self.tokens.lock().unwrap();
        // The pipe holds a byte exactly while the queue is not empty.
        if tokens.is_empty() {
            poke(&self.write);
        }
        tokens.push(token);
    }

    /// Takes every waiting token and empties the pipe.
    pub fn drain(&self) -> Vec<u64> {
        let mut tokens = self.tokens.lock().unwrap();
        let mut sink = [0u8; 64];
        // SAFETY: reading into a valid buffer from our own non-blocking pipe, until it is empty.
        while unsafe { libc::read(self.read.as_raw_fd(), sink.as_mut_ptr().cast(), sink.len()) } > 0 {}
        std::mem::take(&mut *tokens)
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
