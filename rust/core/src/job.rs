//! Running one job process: spawn it in a process group of its own, feed its stdin, drain stdout
//! and stderr into one bounded buffer, and end the whole tree on timeout, memory limit or cancel.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::Notify;
use tokio::time::{sleep_until, Instant};

use crate::capture::TailBuffer;
use crate::cgroup::Usage;
use crate::isolation::Containment;
use crate::spool::{Capture, SpoolSpec};
use crate::godur::format_go_duration;
use crate::proctree;

/// Bytes of output kept in memory per execution: Dkron's 256,000.
pub const DEFAULT_OUTPUT_LIMIT: usize = 256_000;

/// What to run and under which limits. Built by the Python layer from a validated job.
#[derive(Debug, Clone)]
pub struct JobSpec {
    pub argv: Vec<String>,
    /// Added to (and overriding) the host's environment.
    pub env: Vec<(String, String)>,
    pub cwd: Option<PathBuf>,
    pub stdin: Option<Vec<u8>>,
    pub timeout: Option<Duration>,
    /// Bytes of resident memory for the whole process tree.
    pub mem_limit: Option<u64>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Bytes of output kept in memory (the tail).
    pub output_limit: usize,
    /// How long to keep reading after the job's leader exited, for children that still hold the
    /// pipes. Go calls this WaitDelay; Dkron has none and hangs (#1483).
    pub pipe_grace: Duration,
    /// How often the memory of the tree is measured.
    pub mem_poll: Duration,
    /// The command as the user wrote it, quoted in messages.
    pub label: String,
    /// The job's name: a cancelled run's message names the job (empty: the label stands in).
    pub job_name: String,
    /// Keep the complete output on disk once it outgrows `output_limit`.
    pub spool: Option<SpoolSpec>,
    /// Leave what the job started running when the job ends on its own (`keep_daemons`).
    pub keep_daemons: bool,
    /// The run's cgroup or marker; None: the process group (and descendants) only.
    pub containment: Option<Arc<Containment>>,
}

impl JobSpec {
    pub fn new(argv: Vec<String>) -> Self {
        let label = argv.join(" ");
        Self {
            argv,
            env: Vec::new(),
            cwd: None,
            stdin: None,
            timeout: None,
            mem_limit: None,
            uid: None,
            gid: None,
            output_limit: DEFAULT_OUTPUT_LIMIT,
            pipe_grace: Duration::from_secs(1),
            mem_poll: Duration::from_millis(250),
            label,
            job_name: String::new(),
            spool: None,
            keep_daemons: false,
            containment: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    Exited,
    TimedOut,
    MemoryLimit,
    Cancelled,
    SpawnFailed,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Exited => "exited",
            EndReason::TimedOut => "timeout",
            EndReason::MemoryLimit => "mem_limit",
            EndReason::Cancelled => "cancelled",
            EndReason::SpawnFailed => "spawn_failed",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub pid: Option<u32>,
    /// The exit code, or minus the signal number that ended the leader; None if it never ran.
    pub exit_code: Option<i32>,
    /// The tail of stdout and stderr (in arrival order), with the error line last.
    pub output: Vec<u8>,
    /// Bytes the job wrote in all.
    pub output_total: u64,
    pub truncated: bool,
    pub error: Option<String>,
    pub reason: EndReason,
    pub started_ns: u128,
    pub finished_ns: u128,
    /// The complete output (error line included), when it was spooled to disk.
    pub spool: Option<PathBuf>,
    /// False when `SpoolSpec::limit` cut the spool short.
    pub spool_complete: bool,
    /// Why spooling failed, if it did (the tail is still kept).
    pub spool_error: Option<String>,
    /// CPU time and peak memory of the whole job, where its cgroup told them.
    pub usage: Usage,
}

impl Outcome {
    pub fn success(&self) -> bool {
        self.error.is_none()
    }
}

pub fn unix_nanos() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

/// A started job: its leader, and the read end of the one pipe its stdout and stderr share.
pub struct Started {
    pub child: crate::spawn::Child,
    /// The job's stdin, when it has a payload.
    pub stdin: Option<pipe::Sender>,
    pub output: pipe::Receiver,
}

/// The pipe's capacity: a job writing a burst fills it without waiting for us, which saves a
/// pair of context switches per 64 KiB (the default). The kernel may refuse; that costs nothing.
const OUTPUT_PIPE_SIZE: i32 = 1 << 20;

fn output_pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: fds is a valid two-element array; on success both fds are ours.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fcntl on the pipe we just made. Only our end is non-blocking (tokio reads it); the
    // job's end stays as a job expects it.
    unsafe {
        libc::fcntl(fds[0], libc::F_SETPIPE_SZ, OUTPUT_PIPE_SIZE);
        libc::fcntl(fds[0], libc::F_SETFL, libc::O_NONBLOCK);
    }
    // SAFETY: pipe2 succeeded, so these are open fds owned by no one else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Starts the job's leader (`spawn.rs`: in its own process group, in its run's cgroup if it has
/// one, before its first instruction). Must run inside a tokio runtime context.
pub fn spawn(spec: &JobSpec) -> std::io::Result<Started> {
    let (program, _) = spec
        .argv
        .split_first()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty command"))?;
    // stdout and stderr share one pipe, as they share Dkron's buffer: the output keeps the order
    // in which the job wrote it, and each run costs one pipe fewer.
    let (read_end, write_end) = output_pipe()?;
    let (stdin_child, stdin) = match spec.stdin {
        Some(_) => {
            let (r, w) = stdin_pipe()?;
            (Some(r), Some(pipe::Sender::from_owned_fd_unchecked(w)?))
        }
        None => (None, None),
    };
    let mut env = spec.env.clone();
    let mut cgroup_procs = Vec::new();
    if let Some(c) = &spec.containment {
        if !c.marker.is_empty() {
            env.push((crate::proctree::MARKER_VAR.to_string(), c.marker.clone()));
        }
        cgroup_procs = c.procs_fds();
    }
    let plan = crate::spawn::Plan {
        program: program.clone(),
        argv: spec.argv.clone(),
        env,
        cwd: spec.cwd.clone(),
        uid: spec.uid,
        gid: spec.gid,
        stdin: stdin_child,
        output: write_end,
        cgroup_procs,
    };
    // The plan (holding our copy of the write end) is consumed: EOF on the read end means every
    // process holding the job's output has closed it.
    let child = crate::spawn::spawn(plan)?;
    if let (Some(c), Some(pid)) = (&spec.containment, child.id()) {
        c.started(pid as i32);
    }
    // The read end is a pipe and non-blocking (output_pipe): no need for tokio to check it again.
    Ok(Started { child, stdin, output: pipe::Receiver::from_owned_fd_unchecked(read_end)? })
}

/// The job's stdin: the read end for the job (blocking, as a job expects), the write end ours
/// (non-blocking, for tokio).
fn stdin_pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: fds is a valid two-element array; on success both fds are ours.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: only our end becomes non-blocking.
    unsafe { libc::fcntl(fds[1], libc::F_SETFL, libc::O_NONBLOCK) };
    // SAFETY: pipe2 succeeded, so these are open fds owned by no one else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// An outcome for a job that could not be started.
pub fn spawn_failure(spec: &JobSpec, err: &std::io::Error, started_ns: u128) -> Outcome {
    let error = format!("shell: could not start job '{}': {}", spec.label, spawn_cause(spec, err));
    bare_outcome(spec.output_limit, error, EndReason::SpawnFailed, None, started_ns)
}

/// The one text of a cancelled run (`Executor.cancel`, Ctrl-C, a cancelled asyncio task alike):
/// both its `error` and its output's last line.
pub fn cancelled_message(executor_label: &str, job_name: &str) -> String {
    format!("{executor_label}: Job '{job_name}' was cancelled. Job was killed")
}

/// What a failed spawn was about: exec reports a missing cwd as ENOENT, exactly as a missing
/// program, so the cwd is checked first and named when it is the cause.
pub fn spawn_cause(spec: &JobSpec, err: &std::io::Error) -> String {
    use std::os::unix::ffi::OsStrExt;
    if let Some(cwd) = &spec.cwd {
        let shown = cwd.display();
        match std::fs::metadata(cwd) {
            Err(e) => return format!("cwd '{shown}': {e}"),
            Ok(m) if !m.is_dir() => return format!("cwd '{shown}' is not a directory"),
            Ok(_) => {
                let path = std::ffi::CString::new(cwd.as_os_str().as_bytes()).unwrap_or_default();
                // SAFETY: a valid NUL-terminated path; access(2) only reads it.
                if spec.uid.is_none() && unsafe { libc::access(path.as_ptr(), libc::X_OK) } != 0 {
                    return format!("cwd '{shown}': {}", std::io::Error::last_os_error());
                }
            }
        }
    }
    let program = spec.argv.first().map(String::as_str).unwrap_or_default();
    match err.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => format!("program '{program}': {err}"),
        _ => err.to_string(),
    }
}

/// An outcome with nothing but an error: the job did not run, or its supervision was lost.
pub fn bare_outcome(
    output_limit: usize,
    error: String,
    reason: EndReason,
    pid: Option<u32>,
    started_ns: u128,
) -> Outcome {
    let mut tail = TailBuffer::new(output_limit);
    let output = tail_with_error(&mut tail, &error);
    Outcome {
        pid,
        exit_code: None,
        output,
        output_total: 0,
        truncated: false,
        error: Some(error),
        reason,
        started_ns,
        finished_ns: unix_nanos(),
        spool: None,
        spool_complete: false,
        spool_error: None,
        usage: Usage::default(),
    }
}

fn error_line(error: &str) -> Vec<u8> {
    let mut line = error.as_bytes().to_vec();
    line.push(b'\n');
    line
}

fn tail_with_error(tail: &mut TailBuffer, error: &str) -> Vec<u8> {
    tail.contents_with_trailer(&error_line(error))
}

/// Reads into `buf`'s spare capacity (never zeroed: most jobs write far less than a buffer).
async fn read_some<R: AsyncRead + Unpin>(r: Option<&mut R>, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    match r {
        Some(r) => {
            buf.clear();
            r.read_buf(buf).await
        }
        None => std::future::pending().await,
    }
}

async fn write_some<W: AsyncWrite + Unpin>(w: Option<&mut W>, data: &[u8]) -> std::io::Result<usize> {
    match w {
        Some(w) if !data.is_empty() => w.write(data).await,
        Some(_) => Ok(0),
        None => std::future::pending().await,
    }
}

async fn tick(interval: Option<&mut tokio::time::Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn at(deadline: Option<Instant>) {
    match deadline {
        Some(d) => sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Supervises a started job to its end. `cancel` (one job) and `shutdown` (every job of the
/// engine) both kill the whole tree.
pub async fn supervise(
    started: Started,
    mut spec: JobSpec,
    started_ns: u128,
    cancel: Arc<Notify>,
    shutdown: Arc<Notify>,
) -> Outcome {
    let Started { mut child, stdin, output } = started;
    let pid = child.id();
    let leader = pid.map(|p| p as i32).unwrap_or(0);
    // The payload is written from the same loop that drains the output, a piece at a time, so a
    // job that reads slowly (or never) cannot block the draining, and no task outlives the job.
    let mut stdin = stdin;
    let payload = spec.stdin.take().unwrap_or_default();
    let mut written = 0usize;
    let mut output = Some(output);
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut capture = Capture::new(spec.output_limit, spec.spool.clone());

    let timeout_at = spec.timeout.map(|t| Instant::now() + t);
    let contain = spec.containment.clone().unwrap_or_else(|| Arc::new(Containment::process_group("", spec.keep_daemons)));
    // A limit the kernel enforces is still watched (cheaply: one counter) so that one process
    // killed by the kernel ends the whole job, reported as mem_limit.
    // That counter is one small file: read it often.
    let mem_poll = if contain.kernel_limit() { spec.mem_poll.min(Duration::from_millis(50)) } else { spec.mem_poll };
    let mut mem_interval = spec.mem_limit.map(|_| tokio::time::interval(mem_poll));
    let mut status: Option<ExitStatus> = None;
    let mut reason = EndReason::Exited;
    let mut mem_seen: u64 = 0;
    let mut killed = false;
    let mut drain_until: Option<Instant> = None;

    let kill = |why: EndReason, reason: &mut EndReason, killed: &mut bool| {
        if !*killed {
            contain.kill(leader);
            *killed = true;
            *reason = why;
        }
    };

    // Made once and polled across iterations: re-creating them each time the loop turns (once
    // per chunk of output) would re-register timers and waiters for nothing.
    let wait = child.wait();
    let cancelled = cancel.notified();
    let shutting_down = shutdown.notified();
    let deadline = at(timeout_at);
    tokio::pin!(wait, cancelled, shutting_down, deadline);
    loop {
        if status.is_some() && output.is_none() {
            break;
        }
        let running = status.is_none();
        tokio::select! {
            r = write_some(stdin.as_mut(), &payload[written..]) => match r {
                Ok(n) if n > 0 => {
                    written += n;
                    if written == payload.len() {
                        stdin = None; // closes the pipe: the job sees EOF
                    }
                }
                // All written, or the job closed its end (EPIPE): it wants no more.
                _ => stdin = None,
            },
            r = read_some(output.as_mut(), &mut buf) => match r {
                Ok(n) if n > 0 => capture.write(&buf),
                _ => output = None,
            },
            s = &mut wait, if running => {
                status = s.ok();
                if status.is_none() {
                    // wait() itself failed: nothing more will be learned about this child.
                    break;
                }
                // Killed jobs get a short grace: whatever still holds the pipes is an escapee.
                let grace = if killed { Duration::from_millis(200) } else { spec.pipe_grace };
                drain_until = Some(Instant::now() + grace);
            }
            _ = &mut deadline, if running && !killed => {
                kill(EndReason::TimedOut, &mut reason, &mut killed);
            }
            _ = tick(mem_interval.as_mut()), if running && !killed => {
                if contain.kernel_limit() {
                    if contain.oom_killed() {
                        kill(EndReason::MemoryLimit, &mut reason, &mut killed);
                    }
                } else {
                    let used = contain.rss(leader);
                    mem_seen = mem_seen.max(used);
                    if spec.mem_limit.is_some_and(|limit| used > limit) {
                        kill(EndReason::MemoryLimit, &mut reason, &mut killed);
                    }
                }
            }
            _ = &mut cancelled, if running && !killed => {
                kill(EndReason::Cancelled, &mut reason, &mut killed);
            }
            _ = &mut shutting_down, if running && !killed => {
                kill(EndReason::Cancelled, &mut reason, &mut killed);
            }
            _ = at(drain_until) => break,
        }
    }
    if killed && contain.cgroup().is_none() {
        // Anything forked between the kill and the leader's exit (a cgroup has no such gap).
        proctree::kill_job(leader, leader);
    }
    // Whatever the job left behind dies now (unless it keeps its daemons), and its cgroup says
    // what the job used.
    let usage = contain.finish(leader, killed).await;
    if usage.oom_killed && !killed {
        // The kernel enforced the limit before the next check saw it.
        reason = EndReason::MemoryLimit;
    }

    let exit_code = status.map(exit_code_of);
    let error = match reason {
        EndReason::TimedOut => Some(format!(
            "shell: Job '{}' execution time exceeding defined timeout {}. Job was killed",
            spec.label,
            format_go_duration(spec.timeout.unwrap_or_default())
        )),
        EndReason::MemoryLimit if contain.kernel_limit() => Some(format!(
            "shell: Job '{}' exceeded its memory limit of {} bytes (enforced by the kernel's memory cgroup). Job was killed",
            spec.label,
            spec.mem_limit.unwrap_or_default(),
        )),
        EndReason::MemoryLimit => Some(format!(
            "shell: Job '{}' exceeded its memory limit of {} bytes (the process tree used {} bytes). Job was killed",
            spec.label,
            spec.mem_limit.unwrap_or_default(),
            mem_seen
        )),
        EndReason::Cancelled => Some(cancelled_message("shell", if spec.job_name.is_empty() { &spec.label } else { &spec.job_name })),
        EndReason::Exited | EndReason::SpawnFailed => match status {
            None => Some("shell: lost track of the job's process".to_string()),
            Some(s) => status_error(s),
        },
    };
    let trailer = error.as_deref().map(error_line);
    let finished = capture.finish(trailer.as_deref());
    Outcome {
        pid,
        exit_code,
        output: finished.output,
        output_total: finished.total,
        truncated: finished.truncated,
        error,
        reason,
        started_ns,
        finished_ns: unix_nanos(),
        spool: finished.spool,
        spool_complete: finished.spool_complete,
        spool_error: finished.spool_error,
        usage,
    }
}

fn exit_code_of(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.code().unwrap_or_else(|| -status.signal().unwrap_or(0))
}

/// Go's `exec.ExitError` text, which Dkron stores as the execution's error.
fn status_error(status: ExitStatus) -> Option<String> {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        return (code != 0).then(|| format!("exit status {code}"));
    }
    let sig = status.signal().unwrap_or(0);
    Some(format!("signal: {}", signal_name(sig)))
}

fn signal_name(sig: i32) -> String {
    // The names Go prints for the common signals.
    match sig {
        libc::SIGHUP => "hangup".into(),
        libc::SIGINT => "interrupt".into(),
        libc::SIGQUIT => "quit".into(),
        libc::SIGABRT => "aborted".into(),
        libc::SIGKILL => "killed".into(),
        libc::SIGSEGV => "segmentation fault".into(),
        libc::SIGPIPE => "broken pipe".into(),
        libc::SIGTERM => "terminated".into(),
        libc::SIGBUS => "bus error".into(),
        other => format!("signal {other}"),
    }
}
