//! Nothing a job starts outlives it. Per Executor (`Isolation`), one of two modes:
//!
//! * **cgroup**: a cgroup v2 for the Executor and one per run; the job enters its run's cgroup
//!   between fork and exec, and the run ends with `cgroup.kill` (exact: a daemon that called
//!   `setsid` and double-forked is in it too). It also gives the job's CPU time and, with a memory
//!   controller, its peak memory and a `mem_limit` the kernel enforces.
//! * **process group** (fallback, where no cgroup can be made): the job's process group, its
//!   descendants, and every process whose environment carries the run's marker
//!   (`DKRON_EXEC_RUN=<id>`); a daemon that clears its environment escapes.
//!
//! Each run gets a `Containment`. A watchdog process (`watchdog.rs`, started at the first run)
//! kills everything if the host dies.

use std::os::fd::RawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::cgroup::{self, Memory, Parent, RunCgroup, Usage};
use crate::proctree;
use crate::watchdog::Watchdog;

/// Set to `off` (or `0`, `false`, `no`) to force the process-group mode.
pub const ENV_SWITCH: &str = "DKRON_EXEC_CGROUP";

/// Whether the environment forbids cgroups.
pub fn cgroups_disabled_by_env() -> bool {
    std::env::var(ENV_SWITCH).is_ok_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "off" | "0" | "false" | "no"))
}

/// What the mode in use guarantees, for `dkron-exec doctor`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// `cgroup` or `process-group`.
    pub mode: &'static str,
    pub cgroup: Option<PathBuf>,
    pub memory: Memory,
    /// Why the process-group mode is in use.
    pub fallback_reason: Option<String>,
}

impl Report {
    pub fn kill(&self) -> &'static str {
        if self.cgroup.is_some() {
            "exact: cgroup.kill reaches every process of the job, setsid'd daemons included"
        } else {
            "process group + descendants + environment marker: a daemon that clears its environment escapes"
        }
    }

    pub fn mem_limit(&self) -> &'static str {
        match self.memory {
            Memory::V2 | Memory::V1 => "kernel-enforced",
            Memory::None => "polled every 250 ms",
        }
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

pub struct Isolation {
    parent: Option<Parent>,
    fallback_reason: Option<String>,
    /// `<pid namespace>-<host pid>-<n>`: names the cgroup, prefixes the runs' markers.
    id: String,
    next_run: AtomicU64,
    watchdog: OnceLock<Option<Watchdog>>,
    closed: AtomicBool,
    /// Serialises `close` with runs that make their cgroup at that moment.
    making: Mutex<()>,
}

impl Isolation {
    /// The cgroup mode where it can be had (and `cgroups` and the environment allow it), else
    /// the process-group mode.
    pub fn new(cgroups: bool) -> Self {
        let id = format!("{}-{}-{}", pid_namespace(), std::process::id(), NEXT_ID.fetch_add(1, Ordering::Relaxed));
        let parent = if !cgroups {
            Err("cgroups turned off (Executor(cgroups=False))".to_string())
        } else if cgroups_disabled_by_env() {
            Err(format!("cgroups turned off ({ENV_SWITCH}={})", std::env::var(ENV_SWITCH).unwrap_or_default()))
        } else {
            cgroup::Own::read().and_then(|own| Parent::create(&own, &format!("dkron-exec-{id}")))
        };
        let (parent, fallback_reason) = match parent {
            Ok(p) => {
                remove_stale(&p);
                (Some(p), None)
            }
            Err(why) => (None, Some(why)),
        };
        Self {
            parent,
            fallback_reason,
            id,
            next_run: AtomicU64::new(1),
            watchdog: OnceLock::new(),
            closed: AtomicBool::new(false),
            making: Mutex::new(()),
        }
    }

    pub fn report(&self) -> Report {
        Report {
            mode: if self.parent.is_some() { "cgroup" } else { "process-group" },
            cgroup: self.parent.as_ref().map(|p| p.dir.clone()),
            memory: self.parent.as_ref().map_or(Memory::None, |p| p.memory),
            fallback_reason: self.fallback_reason.clone(),
        }
    }

    fn watchdog(&self) -> Option<&Watchdog> {
        self.watchdog
            .get_or_init(|| {
                let p = self.parent.as_ref();
                let prefix = format!("{}-", self.id);
                let marker = p.is_none().then_some(prefix.as_str());
                Watchdog::start(p.map(|p| p.dir.as_path()), p.and_then(|p| p.memory_v1.as_deref()), marker).ok()
            })
            .as_ref()
    }

    /// The watchdog's pid, once a run started it.
    pub fn watchdog_pid(&self) -> Option<u32> {
        self.watchdog.get().and_then(|w| w.as_ref()).and_then(Watchdog::pid)
    }

    /// What one run is contained in. A run whose cgroup cannot be made (the machine ran out of
    /// something) is contained as in the process-group mode.
    pub fn contain(self: &Arc<Self>, keep_daemons: bool, mem_limit: Option<u64>) -> Containment {
        let seq = self.next_run.fetch_add(1, Ordering::Relaxed);
        // Kept daemons must survive the host too: their marker is not under the watchdog's prefix.
        let marker = if keep_daemons { format!("keep-{}-{seq}", self.id) } else { format!("{}-{seq}", self.id) };
        // Before the run's cgroup exists: a host killed from here on leaves nothing behind.
        self.watchdog();
        let cgroup = {
            let _making = self.making.lock().unwrap();
            match &self.parent {
                Some(p) if !self.closed.load(Ordering::SeqCst) => p.child(mem_limit).ok(),
                _ => None,
            }
        };
        // Without a cgroup, the daemons are looked for among the pids handed out from here on.
        let pid_mark = if cgroup.is_none() { proctree::last_pid().map(|p| (p, Instant::now())) } else { None };
        Containment {
            marker,
            cgroup,
            keep_daemons,
            isolation: Some(self.clone()),
            pgid: Mutex::new(None),
            finished: AtomicBool::new(false),
            pid_mark,
        }
    }

    /// Where this Executor's plugins live: a `plugins` cgroup beside the runs' (cgroup mode) and a
    /// marker under the watchdog's prefix, so that what a plugin starts dies with the Executor
    /// and with the host, as a job does. Starts the watchdog.
    pub fn plugin_containment(&self) -> crate::plugin::spawn::Contain {
        self.watchdog();
        let cgroup_procs = self.parent.as_ref().and_then(|p| {
            let dir = p.dir.join("plugins");
            match std::fs::create_dir(&dir) {
                Ok(()) => Some(dir.join("cgroup.procs")),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Some(dir.join("cgroup.procs")),
                Err(_) => None,
            }
        });
        crate::plugin::spawn::Contain { cgroup_procs, marker: format!("{}-plugins", self.id) }
    }

    /// Kills whatever is left in the Executor's cgroup, removes it, and stops the watchdog.
    /// Idempotent.
    pub fn close(&self) {
        let _making = self.making.lock().unwrap();
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Some(p) = &self.parent {
            let _ = std::fs::write(p.dir.join("cgroup.kill"), "1");
            p.drain_pool();
            remove_runs(p);
            p.remove();
        }
        if let Some(Some(w)) = self.watchdog.get() {
            w.stop(Duration::from_secs(2));
        }
    }
}

/// The cgroups of Executors whose host died without its watchdog (killed too, or the host died
/// before its first run): what is left in them is killed, and they are removed.
fn remove_stale(ours: &Parent) {
    let our_ns = pid_namespace();
    let dirs = [ours.dir.parent(), ours.memory_v1.as_deref().and_then(|m| m.parent())];
    for dir in dirs.into_iter().flatten() {
        let Ok(entries) = std::fs::read_dir(dir) else { continue };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("dkron-exec-")) else { continue };
            let mut parts = rest.split('-');
            let (Some(ns), Some(pid)) = (parts.next(), parts.next()) else { continue };
            // A pid means something only in its own pid namespace: a host in another container
            // sharing this hierarchy may be alive with a pid that is free here.
            if ns != our_ns || ns == "0" || std::path::Path::new("/proc").join(pid).exists() {
                continue;
            }
            let stale = entry.path();
            let _ = std::fs::write(stale.join("cgroup.kill"), "1");
            let runs = std::fs::read_dir(&stale).into_iter().flatten().flatten().filter(|e| e.path().is_dir());
            for run in runs {
                let deadline = Instant::now() + Duration::from_millis(200);
                while std::fs::remove_dir(run.path()).is_err() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            let _ = std::fs::remove_dir(&stale);
        }
    }
}

/// The inode of our pid namespace ("0" if unknown), part of every cgroup name we make.
fn pid_namespace() -> String {
    std::fs::read_link("/proc/self/ns/pid")
        .ok()
        .and_then(|l| l.to_str().and_then(|t| t.strip_prefix("pid:[")?.strip_suffix(']').map(str::to_owned)))
        .unwrap_or_else(|| "0".into())
}

/// Runs' cgroups still there (a run dropped unfinished): removed once they are empty.
fn remove_runs(p: &Parent) {
    let deadline = Instant::now() + cgroup::EMPTY_WAIT;
    for dir in [Some(&p.dir), p.memory_v1.as_ref()].into_iter().flatten() {
        let Ok(entries) = std::fs::read_dir(dir) else { continue };
        for entry in entries.flatten().filter(|e| e.path().is_dir()) {
            while std::fs::remove_dir(entry.path()).is_err() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
}

impl Drop for Isolation {
    fn drop(&mut self) {
        self.close();
    }
}

/// What one run's processes are kept in, and how the run's end kills them.
pub struct Containment {
    /// The value of `DKRON_EXEC_RUN` in the job's environment.
    pub marker: String,
    cgroup: Option<RunCgroup>,
    pub keep_daemons: bool,
    /// The Executor's isolation: its watchdog, and where the cgroup goes back.
    isolation: Option<Arc<Isolation>>,
    pgid: Mutex<Option<i32>>,
    finished: AtomicBool,
    /// The last pid handed out before the job started, and when (process-group mode).
    pid_mark: Option<(i32, Instant)>,
}

impl std::fmt::Debug for Containment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Containment").field("marker", &self.marker).field("cgroup", &self.cgroup).finish()
    }
}

impl Containment {
    /// Without an Executor: the process-group mode, no watchdog (tests, tools).
    pub fn process_group(marker: &str, keep_daemons: bool) -> Self {
        Self {
            marker: marker.to_string(),
            cgroup: None,
            keep_daemons,
            isolation: None,
            pgid: Mutex::new(None),
            finished: AtomicBool::new(false),
            pid_mark: proctree::last_pid().map(|p| (p, Instant::now())),
        }
    }

    pub fn cgroup(&self) -> Option<&RunCgroup> {
        self.cgroup.as_ref()
    }

    /// The fds the job writes "0" to before exec (empty: no cgroup).
    pub fn procs_fds(&self) -> Vec<RawFd> {
        self.cgroup.as_ref().map(RunCgroup::procs_fds).unwrap_or_default()
    }

    /// The kernel enforces the job's memory limit (no polling needed).
    pub fn kernel_limit(&self) -> bool {
        self.cgroup.as_ref().is_some_and(|c| c.limited)
    }

    /// Called once the job runs: the watchdog learns its process group (a cgroup needs no
    /// telling: the watchdog kills the Executor's whole cgroup).
    pub fn started(&self, pgid: i32) {
        if self.cgroup.is_some() {
            return;
        }
        *self.pgid.lock().unwrap() = Some(pgid);
        if let Some(w) = self.isolation.as_ref().and_then(|i| i.watchdog()) {
            w.watch(pgid);
        }
    }

    /// SIGKILLs the whole job now.
    pub fn kill(&self, leader: i32) {
        match &self.cgroup {
            Some(c) => c.kill(),
            None => {
                proctree::kill_job(leader, leader);
                if !self.marker.is_empty() {
                    proctree::kill_marked(&self.marker, self.recent_pid_mark());
                }
            }
        }
    }

    /// The pid mark, while the pids handed out since cannot have wrapped around pid_max (a job
    /// of a second cannot start tens of thousands of processes; a longer one gets a full scan).
    fn recent_pid_mark(&self) -> Option<i32> {
        self.pid_mark.filter(|(_, at)| at.elapsed() < Duration::from_secs(1)).map(|(p, _)| p)
    }

    /// Resident memory of the whole job, in bytes (for a limit the kernel does not enforce).
    pub fn rss(&self, leader: i32) -> u64 {
        match &self.cgroup {
            Some(c) => proctree::rss_of(&c.pids()),
            None => proctree::job_rss(leader, leader),
        }
    }

    /// The kernel OOM-killed a process of the job.
    pub fn oom_killed(&self) -> bool {
        self.cgroup.as_ref().is_some_and(RunCgroup::out_of_memory)
    }

    /// The end of the run: kills what is left (unless the job keeps its daemons and ended on
    /// its own), reads what the job used, and removes its cgroup.
    pub async fn finish(&self, leader: i32, killed: bool) -> Usage {
        if self.finished.swap(true, Ordering::SeqCst) {
            return Usage::default();
        }
        let keep = self.keep_daemons && !killed;
        let usage = match &self.cgroup {
            Some(c) => {
                if !keep && c.populated() {
                    c.kill();
                    let deadline = tokio::time::Instant::now() + cgroup::EMPTY_WAIT;
                    while c.populated() && tokio::time::Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
                let usage = c.usage();
                if keep {
                    c.release_to_host();
                }
                // Removed, or kept for the next run, when the containment is dropped.
                usage
            }
            None => {
                if killed {
                    self.kill(leader);
                } else if !keep {
                    // The leader is reaped: its descendants are orphans now, so the group and
                    // the marker are what is left to find them by.
                    // SAFETY: kill(2) of the job's process group; ESRCH (empty) is fine.
                    unsafe { libc::kill(-leader, libc::SIGKILL) };
                    if !self.marker.is_empty() {
                        proctree::kill_marked(&self.marker, self.recent_pid_mark());
                    }
                }
                Usage::default()
            }
        };
        self.forget();
        usage
    }

    fn forget(&self) {
        let pgid = self.pgid.lock().unwrap().take();
        let watchdog = self.isolation.as_ref().and_then(|i| i.watchdog.get()).and_then(Option::as_ref);
        if let (Some(pgid), Some(w)) = (pgid, watchdog) {
            w.forget(pgid);
        }
    }
}

impl Drop for Containment {
    /// Gives the run's cgroup back for the next run; a run dropped unfinished (its task was
    /// dropped at shutdown) is killed first.
    fn drop(&mut self) {
        let unfinished = !self.finished.swap(true, Ordering::SeqCst);
        let pgid = *self.pgid.lock().unwrap();
        match self.cgroup.take() {
            Some(c) => {
                if unfinished {
                    c.kill();
                    let deadline = Instant::now() + Duration::from_millis(500);
                    while c.populated() && Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
                match self.isolation.as_ref() {
                    Some(iso) => {
                        let _making = iso.making.lock().unwrap();
                        match &iso.parent {
                            Some(p) if !iso.closed.load(Ordering::SeqCst) => p.recycle(c),
                            _ => {
                                let _ = c.remove();
                            }
                        }
                    }
                    None => {
                        let _ = c.remove();
                    }
                }
            }
            None if !unfinished => {}
            None => {
                if let Some(pgid) = pgid {
                    proctree::kill_job(pgid, pgid);
                }
                if !self.marker.is_empty() {
                    proctree::kill_marked(&self.marker, self.recent_pid_mark());
                }
            }
        }
        self.forget();
    }
}
