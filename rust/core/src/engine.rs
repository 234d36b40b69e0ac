//! The engine: one small tokio runtime on which every run of an executor that was *started*
//! (asyncio) lives, and a runtime per calling thread for runs that block their caller, so a
//! blocking run never hops threads. Both count the runs in flight and share one shutdown signal,
//! which kills every job's process tree.

use std::cell::RefCell;
use std::future::Future;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;
pub use tokio::sync::Notify;

pub struct Engine {
    /// Taken (write lock) only when the engine shuts down; `spawn` holds a read lock briefly.
    runtime: RwLock<Option<Runtime>>,
    closed: AtomicBool,
    shutdown: Arc<Notify>,
    in_flight: Arc<InFlight>,
}

fn shut_down_error() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::NotConnected, "the engine is shut down")
}

/// Counts running runs, so that shutdown can wait for them to finish killing their jobs.
#[derive(Default)]
struct InFlight {
    count: Mutex<usize>,
    idle: Condvar,
}

impl Engine {
    pub fn new(worker_threads: usize) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(worker_threads.max(1))
            // Chains with plugin steps run here (each may wait on its plugin): enough for many
            // concurrent calls, idle threads leave after 10 s.
            .max_blocking_threads(64)
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

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Notified (to every waiter) while the engine shuts down: whatever runs must end.
    pub fn shutdown_signal(&self) -> Arc<Notify> {
        self.shutdown.clone()
    }

    /// Runs `run` on the engine's runtime and returns at once. When it ends its result goes to
    /// the handle and, with `notify`, `token` to that queue. If the runtime drops it unfinished
    /// (it shut down), `lost()` makes the result instead, so no one waits forever.
    pub fn spawn<T, F>(
        &self,
        run: F,
        notify: Option<(Arc<CompletionQueue>, u64)>,
        lost: impl FnOnce() -> T + Send + 'static,
    ) -> std::io::Result<Handle<T>>
    where
        T: Send + 'static,
        F: Future<Output = T> + Send + 'static,
    {
        let guard = self.runtime.read().unwrap();
        let runtime = guard.as_ref().filter(|_| !self.is_closed()).ok_or_else(shut_down_error)?;
        let shared = Arc::new(Shared::new(notify));
        let counted = InFlightGuard::enter(&self.in_flight);
        let mut completer = Completer { shared: Some(shared.clone()), lost: Some(lost) };
        runtime.spawn(async move {
            let result = run.await;
            // Leave the count first: whoever sees the result must also see it gone.
            drop(counted);
            completer.complete(result);
        });
        Ok(Handle { shared })
    }

    /// Runs a background service of the runtime (not a run: not counted in flight); it is
    /// dropped when the engine shuts down.
    pub fn spawn_service(&self, service: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        let guard = self.runtime.read().unwrap();
        let runtime = guard.as_ref().filter(|_| !self.is_closed()).ok_or_else(shut_down_error)?;
        runtime.spawn(service);
        Ok(())
    }

    /// Drives `run` to its end on the calling thread, on a small runtime of that thread's own.
    /// Every `poll` interval `interrupted` is asked whether the caller gives up (Ctrl-C); the
    /// first time it says yes, `give_up` is called (it should make `run` end soon) and the
    /// result is still awaited; the flag says whether that happened.
    pub fn block_on_here<T>(
        &self,
        run: impl Future<Output = T>,
        poll: Duration,
        mut interrupted: impl FnMut() -> bool,
        give_up: impl FnOnce(),
    ) -> std::io::Result<(T, bool)> {
        if self.is_closed() {
            return Err(shut_down_error());
        }
        let _counted = InFlightGuard::enter(&self.in_flight);
        LOCAL_RUNTIME.with(|cell| {
            let mut slot = cell.borrow_mut();
            if slot.is_none() {
                *slot = Some(tokio::runtime::Builder::new_current_thread().enable_all().build()?);
            }
            let runtime = slot.as_ref().expect("just made");
            // Timers are made outside block_on: they need the runtime's context.
            let _context = runtime.enter();
            let mut run = std::pin::pin!(run);
            let mut give_up = Some(give_up);
            loop {
                if let Ok(result) = runtime.block_on(tokio::time::timeout(poll, &mut run)) {
                    return Ok((result, give_up.is_none()));
                }
                if give_up.is_some() && interrupted() {
                    (give_up.take().expect("checked"))();
                }
            }
        })
    }

    pub fn in_flight(&self) -> usize {
        *self.in_flight.count.lock().unwrap()
    }

    /// Kills every running job (whole trees), waits up to `grace` for the runs to record their
    /// executions, then stops the runtime. Idempotent.
    pub fn shutdown(&self, grace: Duration) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        // On one of the engine's own threads (the last owner went away in a run's task), waiting
        // would stall the very runs being waited for: signal them and stop at once.
        let inside = tokio::runtime::Handle::try_current().is_ok();
        let deadline = Instant::now() + if inside { Duration::ZERO } else { grace };
        let mut n = self.in_flight.count.lock().unwrap();
        while *n > 0 {
            // notify_waiters only reaches tasks parked right now; repeat until all are gone.
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
            if inside {
                // A runtime cannot wait for itself.
                runtime.shutdown_background();
            } else {
                runtime.shutdown_timeout(Duration::from_millis(100));
            }
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shutdown(Duration::from_secs(2));
    }
}

/// Completes a handle exactly once: with the run's result, or with `lost()` if the task was
/// dropped unfinished.
struct Completer<T, L: FnOnce() -> T> {
    shared: Option<Arc<Shared<T>>>,
    lost: Option<L>,
}

impl<T, L: FnOnce() -> T> Completer<T, L> {
    fn complete(&mut self, result: T) {
        if let Some(shared) = self.shared.take() {
            shared.complete(result);
        }
    }
}

impl<T, L: FnOnce() -> T> Drop for Completer<T, L> {
    fn drop(&mut self) {
        if let (Some(shared), Some(lost)) = (self.shared.take(), self.lost.take()) {
            shared.complete(lost());
        }
    }
}

thread_local! {
    /// The runtime `block_on_here` drives on this thread (made on first use).
    static LOCAL_RUNTIME: RefCell<Option<Runtime>> = const { RefCell::new(None) };
}

/// One running run in the count; leaves it (and wakes a waiting shutdown) when dropped.
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

struct Shared<T> {
    result: Mutex<Slot<T>>,
    done: Condvar,
    /// Where to report the end, for callers that wait on many runs through one queue.
    notify: Option<(Arc<CompletionQueue>, u64)>,
}

enum Slot<T> {
    Running,
    Done(T),
    Taken,
}

impl<T> Shared<T> {
    fn new(notify: Option<(Arc<CompletionQueue>, u64)>) -> Self {
        Self { result: Mutex::new(Slot::Running), done: Condvar::new(), notify }
    }

    fn complete(&self, result: T) {
        *self.result.lock().unwrap() = Slot::Done(result);
        self.done.notify_all();
        if let Some((queue, token)) = &self.notify {
            queue.push(*token);
        }
    }
}

/// Tokens of finished runs, with one file descriptor that is readable while any are waiting: an
/// event loop watching hundreds of runs registers one reader, not one per run.
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

/// The result of a run started with `Engine::spawn`.
pub struct Handle<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Handle<T> {
    /// Blocks until the run ends or `timeout` passes (None: no limit); true once it has ended.
    pub fn wait(&self, timeout: Option<Duration>) -> bool {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut slot = self.shared.result.lock().unwrap();
        while matches!(*slot, Slot::Running) {
            match deadline {
                None => slot = self.shared.done.wait(slot).unwrap(),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return false;
                    }
                    slot = self.shared.done.wait_timeout(slot, d - now).unwrap().0;
                }
            }
        }
        true
    }

    pub fn done(&self) -> bool {
        !matches!(*self.shared.result.lock().unwrap(), Slot::Running)
    }

    /// The result, once: None while running, and after it was taken.
    pub fn take(&self) -> Option<T> {
        let mut slot = self.shared.result.lock().unwrap();
        match std::mem::replace(&mut *slot, Slot::Taken) {
            Slot::Done(result) => Some(result),
            other => {
                *slot = other;
                None
            }
        }
    }
}
