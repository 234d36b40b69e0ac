//! The watchdog: a tiny `/bin/sh` process per Executor that outlives a host killed with SIGKILL
//! just long enough to kill the host's jobs. It reads a pipe from the host; the host writes one
//! line per job process group it starts (`+PGID`) and ends (`-PGID`). End of file means the host
//! is gone (or closed the Executor): it kills the Executor's cgroup, the groups it was told of,
//! and every process whose environment carries the Executor's marker prefix, removes the
//! cgroups, and exits. It holds no fd of any job (it is started with stdin, /dev/null and nothing
//! else) and no job holds its pipe (close-on-exec), so the end of file comes exactly when the
//! host's last copy of the write end closes.

use std::fs::File;
use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use std::os::unix::process::CommandExt;

/// `$1` the Executor's v2 cgroup (or -), `$2` its v1 memory cgroup (or -), `$3` the marker
/// prefix of its jobs' environments (or -).
const SCRIPT: &str = r#"
trap '' INT HUP
cg=$1 v1=$2 prefix=$3 groups=' '
while read -r op pgid; do
  case $op$groups in
    +*) groups="$groups$pgid " ;;
    -*" $pgid "*) groups="${groups%% $pgid *} ${groups#* $pgid }" ;;
  esac
done
[ "$cg" = - ] || echo 1 > "$cg/cgroup.kill" 2>/dev/null
for g in $groups; do kill -s KILL -- "-$g" 2>/dev/null; done
if [ "$prefix" != - ]; then
  for round in 1 2; do
    for f in $(grep -lzs "^DKRON_EXEC_RUN=$prefix" /proc/[0-9]*/environ); do
      p=${f#/proc/}; kill -s KILL "${p%/environ}" 2>/dev/null
    done
  done
fi
if [ "$cg" != - ]; then
  n=0
  while [ $n -lt 200 ] && grep -qs 'populated 1' "$cg/cgroup.events"; do sleep 0.01; n=$((n+1)); done
  for d in "$cg"/*/; do [ -d "$d" ] && rmdir "$d" 2>/dev/null; done
  rmdir "$cg" 2>/dev/null
fi
if [ "$v1" != - ]; then
  for d in "$v1"/*/; do [ -d "$d" ] && rmdir "$d" 2>/dev/null; done
  rmdir "$v1" 2>/dev/null
fi
exit 0
"#;

pub struct Watchdog {
    child: Mutex<Option<Child>>,
    pipe: Mutex<Option<File>>,
}

fn cloexec_pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: fds is a valid two-element array; on success both fds are ours.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so these are open fds owned by no one else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn arg(p: Option<&Path>) -> String {
    p.map_or_else(|| "-".to_string(), |p| p.display().to_string())
}

impl Watchdog {
    pub fn start(cgroup: Option<&Path>, memory_v1: Option<&Path>, marker_prefix: Option<&str>) -> std::io::Result<Self> {
        let (read, write) = cloexec_pipe()?;
        let child = Command::new("/bin/sh")
            .args(["-c", SCRIPT, "dkron-exec-watchdog"])
            .args([arg(cgroup), arg(memory_v1), marker_prefix.unwrap_or("-").to_string()])
            .env_remove("DKRON_EXEC_RUN")
            .stdin(Stdio::from(read))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own group: a Ctrl-C at the terminal is for the host, not for it.
            .process_group(0)
            .spawn()?;
        Ok(Self { child: Mutex::new(Some(child)), pipe: Mutex::new(Some(File::from(write))) })
    }

    fn send(&self, line: &str) {
        if let Some(pipe) = self.pipe.lock().unwrap().as_mut() {
            let _ = pipe.write_all(line.as_bytes());
        }
    }

    /// A job's process group, to kill if the host dies.
    pub fn watch(&self, pgid: i32) {
        self.send(&format!("+ {pgid}\n"));
    }

    pub fn forget(&self, pgid: i32) {
        self.send(&format!("- {pgid}\n"));
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.lock().unwrap().as_ref().map(Child::id)
    }

    /// Closes the pipe (the watchdog cleans up what is left, which is nothing after a normal
    /// close) and waits up to `grace` for it to exit; it is killed after that.
    pub fn stop(&self, grace: Duration) {
        drop(self.pipe.lock().unwrap().take());
        let Some(mut child) = self.child.lock().unwrap().take() else { return };
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(2));
    }
}
