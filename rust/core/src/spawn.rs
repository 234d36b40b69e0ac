//! Starting a job's leader the way `posix_spawn` does (a `vfork`: the child borrows our memory
//! until it execs, so no page table is copied), plus one step `posix_spawn` cannot do: the child
//! writes "0" to its run's `cgroup.procs` before exec, so the job is in its cgroup before its
//! first instruction. A `fork` instead (what `pre_exec` costs in std) takes milliseconds from a
//! big host such as a Python process.
//!
//! Between clone and exec the child only makes system calls on data the parent prepared; the
//! parent's thread is suspended meanwhile (CLONE_VFORK) and all signals are blocked around it.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicI32, Ordering};

use tokio::io::unix::AsyncFd;

/// What the child needs, all made before the clone.
pub struct Plan {
    pub program: String,
    pub argv: Vec<String>,
    /// Added to (and overriding) the host's environment.
    pub env: Vec<(String, String)>,
    pub cwd: Option<PathBuf>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// The child's stdin (None: /dev/null) and its stdout + stderr.
    pub stdin: Option<OwnedFd>,
    pub output: OwnedFd,
    /// `cgroup.procs` fds to write "0" to before exec.
    pub cgroup_procs: Vec<RawFd>,
}

/// The child's view of the plan: raw pointers into memory the parent keeps alive (and does not
/// touch) until the child has exec'd or exited.
#[repr(C)]
struct Raw {
    path: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    cwd: *const libc::c_char,
    stdin: RawFd,
    output: RawFd,
    cgroup_procs: *const RawFd,
    cgroup_count: usize,
    uid: i64,
    gid: i64,
    drop_groups: bool,
    mask: libc::sigset_t,
    /// errno of the step that failed (0: exec succeeded).
    error: AtomicI32,
}

fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in the command or its environment"))
}

/// The environment the job gets: ours, with `env` added (later entries win).
fn environment(env: &[(String, String)]) -> Vec<(OsString, OsString)> {
    let mut vars: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    for (k, v) in env {
        vars.retain(|(name, _)| name.as_bytes() != k.as_bytes());
        vars.push((k.into(), v.into()));
    }
    vars
}

/// Where `program` is: itself if it names a path, else the first executable file of that name
/// in the job's PATH (as `execvp` would look, but here, before the clone).
pub fn resolve(program: &str, vars: &[(OsString, OsString)]) -> io::Result<PathBuf> {
    if program.contains('/') {
        return Ok(PathBuf::from(program));
    }
    let path = vars
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| OsString::from("/usr/local/bin:/usr/bin:/bin"));
    let mut denied = false;
    for dir in path.as_bytes().split(|&b| b == b':') {
        let dir = if dir.is_empty() { Path::new(".") } else { Path::new(OsStr::from_bytes(dir)) };
        let candidate = dir.join(program);
        if !candidate.is_file() {
            continue;
        }
        let c = cstring(candidate.as_os_str().as_bytes())?;
        // SAFETY: a valid NUL-terminated path; access(2) only reads it.
        if unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0 {
            return Ok(candidate);
        }
        denied = true;
    }
    Err(io::Error::from_raw_os_error(if denied { libc::EACCES } else { libc::ENOENT }))
}

/// An fd at 3 or above (close-on-exec), so that the child's dup2 onto 0, 1 and 2 cannot clobber
/// one it still needs (a host that closed its stdin hands out fd 0).
fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // SAFETY: duplicating an fd we own; the new one is ours.
    let n = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fcntl returned a new open fd.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

const CHILD_STACK: usize = 64 * 1024;

/// Starts the plan's program; returns its pid once it has exec'd, or why it could not.
pub fn spawn(plan: Plan) -> io::Result<Child> {
    let vars = environment(&plan.env);
    let path = cstring(resolve(&plan.program, &vars)?.as_os_str().as_bytes())?;
    let argv: Vec<CString> = plan.argv.iter().map(|a| cstring(a.as_bytes())).collect::<io::Result<_>>()?;
    let envp: Vec<CString> = vars
        .into_iter()
        .map(|(k, v)| {
            let mut entry = k.into_vec();
            entry.push(b'=');
            entry.extend(v.into_vec());
            cstring(&entry)
        })
        .collect::<io::Result<_>>()?;
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut envp_ptrs: Vec<*const libc::c_char> = envp.iter().map(|e| e.as_ptr()).collect();
    envp_ptrs.push(std::ptr::null());
    let cwd = plan.cwd.as_ref().map(|c| cstring(c.as_os_str().as_bytes())).transpose()?;

    let null = match plan.stdin {
        Some(_) => None,
        None => Some(OwnedFd::from(std::fs::File::open("/dev/null")?)),
    };
    let stdin = above_stdio(plan.stdin.or(null).expect("one of the two"))?;
    let output = above_stdio(plan.output)?;

    let mut raw = Box::new(Raw {
        path: path.as_ptr(),
        argv: argv_ptrs.as_ptr(),
        envp: envp_ptrs.as_ptr(),
        cwd: cwd.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
        stdin: stdin.as_raw_fd(),
        output: output.as_raw_fd(),
        cgroup_procs: plan.cgroup_procs.as_ptr(),
        cgroup_count: plan.cgroup_procs.len(),
        uid: plan.uid.map_or(-1, i64::from),
        gid: plan.gid.map_or(-1, i64::from),
        // SAFETY: getuid cannot fail.
        drop_groups: plan.uid.is_some() && unsafe { libc::getuid() } == 0,
        // SAFETY: an all-zero sigset_t is a valid (empty) set; filled below.
        mask: unsafe { std::mem::zeroed() },
        error: AtomicI32::new(0),
    });
    let mut stack = vec![0u8; CHILD_STACK];

    // SAFETY: blocking every signal on this thread around the clone (restored right after), so
    // no handler of ours runs on the child's stack; the child restores `mask` before exec.
    let pid = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut raw.mask);
        let top = stack.as_mut_ptr().add(CHILD_STACK);
        // 16-byte alignment for the ABI.
        let top = top.sub(top as usize % 16);
        let raw_ptr: *mut Raw = &mut *raw;
        let pid = libc::clone(child_main, top.cast(), libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD, raw_ptr.cast());
        let clone_error = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &raw.mask, std::ptr::null_mut());
        if pid < 0 {
            return Err(clone_error);
        }
        pid
    };
    // The child has exec'd or exited: nothing of the plan is borrowed any more.
    let failed = raw.error.load(Ordering::SeqCst);
    if failed != 0 {
        let mut status = 0;
        // SAFETY: reaping the child that just failed to exec.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        return Err(io::Error::from_raw_os_error(failed));
    }
    drop((stack, path, argv, envp, cwd, stdin, output));
    Child::new(pid)
}

/// The child, on its own stack in our memory: system calls only.
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the parent's `Raw`, alive and untouched until we exec or exit; every call
    // below is a plain system call on values the parent prepared.
    unsafe {
        let raw = &*(arg as *const Raw);
        let fail = |raw: &Raw| -> libc::c_int {
            raw.error.store(*libc::__errno_location(), Ordering::SeqCst);
            libc::_exit(127)
        };
        // Handlers of the host mean nothing in the job: defaults (ignored signals stay ignored,
        // as exec keeps them, except SIGPIPE and SIGXFSZ, which hosts ignore for themselves).
        for sig in 1..libc::SIGRTMAX() {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) != 0 {
                continue;
            }
            let reset = old.sa_sigaction != libc::SIG_DFL
                && (old.sa_sigaction != libc::SIG_IGN || sig == libc::SIGPIPE || sig == libc::SIGXFSZ);
            if reset {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
            }
        }
        for i in 0..raw.cgroup_count {
            if libc::write(*raw.cgroup_procs.add(i), b"0".as_ptr().cast(), 1) != 1 {
                return fail(raw);
            }
        }
        // Its own process group, so that one kill(-pgid) reaches every process it starts.
        if libc::setpgid(0, 0) != 0 {
            return fail(raw);
        }
        if libc::dup2(raw.stdin, 0) < 0 || libc::dup2(raw.output, 1) < 0 || libc::dup2(raw.output, 2) < 0 {
            return fail(raw);
        }
        // Raw system calls, not glibc's setgroups/setgid/setuid: in a threaded host those
        // broadcast the change to every thread of the process (setxid), and this child shares
        // the host's memory and its thread list while the host's threads are not its own.
        if raw.drop_groups && libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) != 0 {
            return fail(raw);
        }
        if raw.gid >= 0 && libc::syscall(libc::SYS_setgid, raw.gid as libc::gid_t) != 0 {
            return fail(raw);
        }
        if raw.uid >= 0 && libc::syscall(libc::SYS_setuid, raw.uid as libc::uid_t) != 0 {
            return fail(raw);
        }
        // As the job's user: a folder that user may not enter is refused.
        if !raw.cwd.is_null() && libc::chdir(raw.cwd) != 0 {
            return fail(raw);
        }
        libc::pthread_sigmask(libc::SIG_SETMASK, &raw.mask, std::ptr::null_mut());
        libc::execve(raw.path, raw.argv, raw.envp);
        fail(raw)
    }
}

/// A started leader: its pid and a pidfd that becomes readable when it exits. Dropped before it
/// was reaped, it is killed (and reaped off this thread).
pub struct Child {
    pid: i32,
    pidfd: AsyncFd<OwnedFd>,
    reaped: bool,
}

impl Child {
    fn new(pid: i32) -> io::Result<Self> {
        let watched = (|| {
            // SAFETY: pidfd_open on our own child, which no one else reaps meanwhile.
            let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, libc::PIDFD_NONBLOCK) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: pidfd_open returned a new fd that is ours.
            let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
            // SAFETY: the OwnedFd is moved into the AsyncFd, which alone owns and closes it.
            unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }.map_err(io::Error::from)
        })();
        match watched {
            Ok(pidfd) => Ok(Self { pid, pidfd, reaped: false }),
            Err(err) => {
                // SAFETY: our child, which we could not supervise: it must not run unwatched.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, std::ptr::null_mut(), 0);
                }
                Err(err)
            }
        }
    }

    pub fn id(&self) -> Option<u32> {
        Some(self.pid as u32)
    }

    /// Waits for the leader to exit, and reaps it.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            let mut guard = self.pidfd.readable().await?;
            let mut status = 0;
            // SAFETY: reaping our own child without blocking.
            match unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) } {
                0 => guard.clear_ready(),
                n if n == self.pid => {
                    self.reaped = true;
                    return Ok(ExitStatus::from_raw(status));
                }
                _ => return Err(io::Error::last_os_error()),
            }
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.reaped {
            return;
        }
        let pid = self.pid;
        // SAFETY: our own child, not reaped yet (so the pid is still its).
        unsafe { libc::kill(pid, libc::SIGKILL) };
        // SAFETY: as above; without blocking.
        if unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) } == 0 {
            std::thread::spawn(move || {
                // SAFETY: as above; it was SIGKILLed and exits soon.
                unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_found_in_the_job_s_path() {
        let vars = vec![(OsString::from("PATH"), OsString::from("/nonexistent:/bin:/usr/bin"))];
        assert!(resolve("sh", &vars).unwrap().ends_with("sh"));
        assert_eq!(resolve("./x", &vars).unwrap(), PathBuf::from("./x"));
        assert_eq!(resolve("no-such-program-dkron", &vars).unwrap_err().kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn the_job_s_env_overrides_the_host_s() {
        let vars = environment(&[("PATH".into(), "/x".into()), ("PATH".into(), "/y".into())]);
        let paths: Vec<_> = vars.iter().filter(|(k, _)| k == "PATH").collect();
        assert_eq!(paths, vec![&(OsString::from("PATH"), OsString::from("/y"))]);
    }
}
