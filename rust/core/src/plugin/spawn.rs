//! Launching a plugin process: the RPC channel is one end of a socketpair, inherited as fd 3,
//! so the plugin's stdout and stderr stay free for whatever it prints. The environment also
//! carries go-plugin's settings, so Dkron's own plugins start the same way (`goplugin`).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::process::Stdio;

use tokio::net::UnixStream;
use tokio::process::{Child, Command};

use super::{Kind, COOKIE_KEY, COOKIE_VALUE, PROTOCOL_VERSIONS};

/// The fd number the plugin finds its end of the channel on.
pub const CHANNEL_FD: RawFd = 3;

/// How a plugin is contained beside the runs: whatever it starts (a Dkron executor's job in a
/// process group of its own, say) dies with the Executor and with the host, as a job does.
#[derive(Debug, Clone)]
pub struct Contain {
    /// The `cgroup.procs` of the Executor's plugins cgroup: the plugin joins it before exec.
    pub cgroup_procs: Option<std::path::PathBuf>,
    /// `DKRON_EXEC_RUN` for the plugin and what it starts, found by the watchdog's marker scan
    /// when there is no cgroup.
    pub marker: String,
}

pub struct Launched {
    pub child: Child,
    pub channel: UnixStream,
    pub pid: u32,
}

fn socketpair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: fds is a valid two-element array; on success both fds are ours.
    let rc = unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: socketpair succeeded, so both fds are open and owned by no one else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Starts the plugin. Must run on the plugin host's own long-lived thread, inside its runtime:
/// PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, and the host thread
/// lives as long as the host process (or the host object) does.
pub fn launch(path: &Path, kind: Kind, name: &str, max_frame: usize, contain: Option<&Contain>) -> std::io::Result<Launched> {
    let (ours, theirs) = socketpair()?;
    // Opened here, written by the child before exec (close-on-exec: the plugin never holds it).
    let procs = match contain.and_then(|c| c.cgroup_procs.as_deref()) {
        Some(p) => Some(std::fs::OpenOptions::new().write(true).open(p)?),
        None => None,
    };
    let procs_fd = procs.as_ref().map(|f| f.as_raw_fd());
    let theirs_fd = theirs.as_raw_fd();
    // SAFETY: getpid has no preconditions.
    let host_pid = unsafe { libc::getpid() };
    let mut cmd = Command::new(path);
    cmd.env(COOKIE_KEY, COOKIE_VALUE)
        .env("DKRON_EXEC_PLUGIN_FD", CHANNEL_FD.to_string())
        .env("DKRON_EXEC_PROTOCOL_VERSIONS", PROTOCOL_VERSIONS.iter().map(u32::to_string).collect::<Vec<_>>().join(","))
        .env("DKRON_EXEC_PLUGIN_TYPE", kind.as_str())
        .env("DKRON_EXEC_PLUGIN_NAME", name)
        .env("DKRON_EXEC_MAX_FRAME", max_frame.to_string())
        // go-plugin's side of the launch too: one binary of either kind starts with no config.
        .envs(super::goplugin::ENV.iter().copied())
        .envs(contain.map(|c| ("DKRON_EXEC_RUN", c.marker.as_str())))
        // Its own group: Ctrl-C in the host's terminal does not reach it, and a kill of the
        // group also ends whatever it started.
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // SAFETY: the closure only makes async-signal-safe calls (prctl, getppid, write, dup2, fcntl, _exit).
    unsafe {
        cmd.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0);
            // The host may have died between fork and prctl: then nobody will ever signal us.
            if libc::getppid() != host_pid {
                libc::_exit(1);
            }
            if let Some(fd) = procs_fd {
                if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if theirs_fd == CHANNEL_FD {
                // dup2 onto itself keeps close-on-exec: clear it by hand.
                let flags = libc::fcntl(CHANNEL_FD, libc::F_GETFD);
                libc::fcntl(CHANNEL_FD, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
            } else if libc::dup2(theirs_fd, CHANNEL_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    drop((theirs, procs));
    let pid = child.id().unwrap_or(0);
    let std_stream = std::os::unix::net::UnixStream::from(ours);
    std_stream.set_nonblocking(true)?;
    let channel = UnixStream::from_std(std_stream)?;
    Ok(Launched { child, channel, pid })
}

/// SIGKILL to the plugin's whole process group.
pub fn kill_group(pid: u32) {
    if pid > 0 {
        // SAFETY: kill has no memory-safety preconditions; the group is the plugin's own.
        unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
    }
}
