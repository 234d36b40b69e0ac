//! Control groups as the kernel shows them in files: where cgroup v2 (and the v1 memory
//! controller) are mounted, which cgroup we are in, and a job's own cgroup: made before the job
//! starts, killed whole at its end (`cgroup.kill` reaches a daemon that called `setsid` too),
//! read for what the job used, then removed.

use std::fs;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// The mount point of the hierarchy whose filesystem type is `fstype` (and, for v1, which
/// carries `controller`), and the root of the mount, from `/proc/self/mountinfo` text.
fn find_mount(mountinfo: &str, fstype: &str, controller: Option<&str>) -> Option<(PathBuf, String)> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let left: Vec<&str> = left.split(' ').collect();
        let right: Vec<&str> = right.split(' ').collect();
        if right.first() != Some(&fstype) {
            return None;
        }
        if let Some(c) = controller {
            // v1 names its controllers in the super options: "rw,memory".
            if !right.get(2)?.split(',').any(|o| o == c) {
                return None;
            }
        }
        Some((PathBuf::from(*left.get(4)?), left.get(3)?.to_string()))
    })
}

/// Our cgroup in the v2 hierarchy (`0::/path`), or in the v1 hierarchy of `controller`.
fn own_path(proc_cgroup: &str, controller: Option<&str>) -> Option<String> {
    proc_cgroup.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (id, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let wanted = match controller {
            None => id == "0" && controllers.is_empty(),
            Some(c) => controllers.split(',').any(|x| x == c),
        };
        wanted.then(|| path.to_string())
    })
}

/// The folder of cgroup `path` under a mount whose root is `root` (a cgroup namespace or a bind
/// mount shows a subtree: its root is then a prefix of the paths).
fn folder(mount: &Path, root: &str, path: &str) -> PathBuf {
    let rel = path.strip_prefix(root.trim_end_matches('/')).unwrap_or(path);
    mount.join(rel.trim_start_matches('/'))
}

/// Where our own cgroups are: the v2 one and, if that controller is mounted, the v1 memory one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Own {
    pub v2: PathBuf,
    pub memory_v1: Option<PathBuf>,
    /// Where the v2 hierarchy is mounted (nothing above it is a cgroup).
    pub mount: PathBuf,
}

impl Own {
    /// From the texts of `/proc/self/mountinfo` and `/proc/self/cgroup`.
    pub fn parse(mountinfo: &str, proc_cgroup: &str) -> Option<Own> {
        let (mount, root) = find_mount(mountinfo, "cgroup2", None)?;
        let v2 = folder(&mount, &root, &own_path(proc_cgroup, None)?);
        let memory_v1 = find_mount(mountinfo, "cgroup", Some("memory"))
            .and_then(|(mount, root)| Some(folder(&mount, &root, &own_path(proc_cgroup, Some("memory"))?)));
        Some(Own { v2, memory_v1, mount })
    }

    pub fn read() -> Result<Own, String> {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").map_err(|e| format!("/proc/self/mountinfo: {e}"))?;
        let cgroup = fs::read_to_string("/proc/self/cgroup").map_err(|e| format!("/proc/self/cgroup: {e}"))?;
        Own::parse(&mountinfo, &cgroup).ok_or_else(|| "no cgroup v2 hierarchy is mounted (/proc/self/mountinfo)".to_string())
    }
}

/// Which memory accounting a job's cgroup gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Memory {
    /// The v2 memory controller: `memory.peak`, `memory.max`, `memory.events`.
    V2,
    /// A v1 memory cgroup beside the v2 one: `memory.max_usage_in_bytes`, `memory.limit_in_bytes`.
    V1,
    None,
}

impl Memory {
    pub fn as_str(self) -> &'static str {
        match self {
            Memory::V2 => "v2",
            Memory::V1 => "v1",
            Memory::None => "none",
        }
    }
}

/// One Executor's cgroup (and v1 memory cgroup), under which each run gets one of its own.
#[derive(Debug)]
pub struct Parent {
    pub dir: PathBuf,
    pub memory_v1: Option<PathBuf>,
    pub memory: Memory,
    /// Where a kept daemon goes when its run's cgroup is removed.
    pub own: Own,
    next: AtomicU64,
    /// Empty run cgroups, ready for the next runs.
    pool: Mutex<Vec<RunCgroup>>,
}

/// Run cgroups kept for reuse: as many as runs were in flight at once, up to this.
const POOL_MAX: usize = 64;

fn write_file(path: &Path, text: &str) -> io::Result<()> {
    fs::OpenOptions::new().write(true).open(path)?.write_all(text.as_bytes())
}

fn explain(path: &Path, e: io::Error) -> String {
    format!("{}: {e}", path.display())
}

impl Parent {
    /// Makes `name` under our own cgroup, or beside it (where we may create one): it must offer
    /// `cgroup.kill` (Linux 5.14). Memory accounting is the best the machine has.
    pub fn create(own: &Own, name: &str) -> Result<Parent, String> {
        let mut tried = Vec::new();
        let beside = own.v2.parent().filter(|_| own.v2 != own.mount);
        let candidates = [Some(own.v2.join(name)), beside.map(|p| p.join(name))];
        let mut made = None;
        for dir in candidates.into_iter().flatten() {
            match fs::create_dir(&dir) {
                Ok(()) => {
                    made = Some(dir);
                    break;
                }
                Err(e) => tried.push(explain(&dir, e)),
            }
        }
        let Some(dir) = made else { return Err(format!("cannot create a cgroup: {}", tried.join("; "))) };
        if !dir.join("cgroup.kill").exists() {
            let _ = fs::remove_dir(&dir);
            return Err(format!("{} has no cgroup.kill (Linux 5.14 or later is needed)", dir.display()));
        }
        let controllers = fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
        let v2_memory = controllers.split_whitespace().any(|c| c == "memory")
            && write_file(&dir.join("cgroup.subtree_control"), "+memory").is_ok();
        let (memory, memory_v1) = if v2_memory {
            (Memory::V2, None)
        } else {
            match own.memory_v1.as_ref().map(|m| m.join(name)) {
                Some(m) if fs::create_dir(&m).is_ok() => (Memory::V1, Some(m)),
                _ => (Memory::None, None),
            }
        };
        Ok(Parent { dir, memory_v1, memory, own: own.clone(), next: AtomicU64::new(1), pool: Mutex::new(Vec::new()) })
    }

    /// A cgroup for one run, with `mem_limit` set where the kernel can enforce it: an empty one
    /// a finished run gave back (no mkdir, no rmdir: half the cost of a short job's cgroup), or a
    /// new one.
    pub fn child(&self, mem_limit: Option<u64>) -> io::Result<RunCgroup> {
        let pooled = self.pool.lock().unwrap().pop();
        let mut run = match pooled {
            Some(run) => run,
            None => self.new_child()?,
        };
        run.set_limit(mem_limit);
        run.start();
        Ok(run)
    }

    fn new_child(&self) -> io::Result<RunCgroup> {
        let name = format!("run-{}", self.next.fetch_add(1, Ordering::Relaxed));
        let dir = self.dir.join(&name);
        fs::create_dir(&dir)?;
        let mut run = RunCgroup {
            procs: None,
            files: None,
            memory_v1: None,
            memory_v1_procs: None,
            memory: self.memory,
            limited: false,
            limit: None,
            cpu_start: 0,
            oom_start: 0,
            own: self.own.clone(),
            dir,
        };
        run.procs = Some(open_procs(&run.dir)?);
        if let Some(parent_v1) = &self.memory_v1 {
            let m = parent_v1.join(&name);
            if let Err(e) = fs::create_dir(&m) {
                let _ = run.remove();
                return Err(e);
            }
            run.memory_v1 = Some(m.clone());
            run.memory_v1_procs = Some(open_procs(&m)?);
        }
        let peak = match (self.memory, &run.memory_v1) {
            (Memory::V2, _) => fs::File::open(run.dir.join("memory.peak")).ok(),
            (Memory::V1, Some(m)) => fs::OpenOptions::new().read(true).write(true).open(m.join("memory.max_usage_in_bytes")).ok(),
            _ => None,
        };
        run.files = Some(Files {
            cpu_stat: fs::File::open(run.dir.join("cpu.stat"))?,
            events: fs::File::open(run.dir.join("cgroup.events"))?,
            peak,
        });
        Ok(run)
    }

    /// Takes back a finished run's cgroup for the next run, if it is empty and can be reset;
    /// else removes it.
    pub fn recycle(&self, run: RunCgroup) {
        // v2's memory.peak cannot be reset for every reader: such cgroups are not reused.
        if run.memory != Memory::V2 && !run.populated() {
            let mut pool = self.pool.lock().unwrap();
            if pool.len() < POOL_MAX {
                pool.push(run);
                return;
            }
        }
        let _ = run.remove();
    }

    /// Removes the pooled cgroups.
    pub fn drain_pool(&self) {
        for run in self.pool.lock().unwrap().drain(..) {
            let _ = run.remove();
        }
    }

    /// Removes the (empty) cgroups; the runs' own are gone already.
    pub fn remove(&self) {
        let _ = fs::remove_dir(&self.dir);
        if let Some(m) = &self.memory_v1 {
            let _ = fs::remove_dir(m);
        }
    }
}

fn open_procs(dir: &Path) -> io::Result<OwnedFd> {
    // Opened by the host (as root): the kernel checks the opener's rights when the job moves
    // itself in after a `su`. O_CLOEXEC: the job never sees it.
    Ok(fs::OpenOptions::new().write(true).open(dir.join("cgroup.procs"))?.into())
}

/// A run cgroup's files read at every run, kept open (each read is then one pread).
#[derive(Debug)]
struct Files {
    cpu_stat: fs::File,
    events: fs::File,
    /// v2 `memory.peak`, or v1 `memory.max_usage_in_bytes` (reset by writing 0).
    peak: Option<fs::File>,
}

/// A kernfs file's current text: a read at offset 0 makes it anew.
fn pread_text(file: &fs::File) -> Option<String> {
    use std::os::unix::fs::FileExt;
    let mut buf = [0u8; 1024];
    let n = file.read_at(&mut buf, 0).ok()?;
    String::from_utf8(buf[..n].to_vec()).ok()
}

/// The cgroup of one run.
#[derive(Debug)]
pub struct RunCgroup {
    pub dir: PathBuf,
    files: Option<Files>,
    pub memory_v1: Option<PathBuf>,
    procs: Option<OwnedFd>,
    memory_v1_procs: Option<OwnedFd>,
    memory: Memory,
    /// The kernel enforces the job's `mem_limit`.
    pub limited: bool,
    /// The limit written to the cgroup (a reused cgroup keeps the last run's until changed).
    limit: Option<u64>,
    /// Counters at the start of this run (a reused cgroup keeps counting from earlier runs).
    cpu_start: u64,
    oom_start: u64,
    own: Own,
}

/// What a job used, read from its cgroup before it is removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub cpu_time_us: Option<u64>,
    pub peak_memory: Option<u64>,
    /// The kernel OOM-killed a process of the job (its memory limit).
    pub oom_killed: bool,
}

/// The value of `key` in a flat-keyed file (`cpu.stat`, `memory.events`, `cgroup.events`).
pub fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

fn read_keyed(path: &Path, key: &str) -> Option<u64> {
    keyed(&fs::read_to_string(path).ok()?, key)
}

impl RunCgroup {
    /// The fds a job writes "0" to between fork and exec, which moves it into this cgroup before
    /// its first instruction.
    pub fn procs_fds(&self) -> Vec<RawFd> {
        [&self.procs, &self.memory_v1_procs].into_iter().flatten().map(|fd| fd.as_raw_fd()).collect()
    }

    /// SIGKILLs every process in the cgroup, wherever its session or parent.
    pub fn kill(&self) {
        let _ = write_file(&self.dir.join("cgroup.kill"), "1");
    }

    /// Whether any process is still in the cgroup.
    pub fn populated(&self) -> bool {
        self.files.as_ref().and_then(|f| pread_text(&f.events)).and_then(|t| keyed(&t, "populated")).is_none_or(|n| n != 0)
    }

    fn cpu_usage(&self) -> Option<u64> {
        self.files.as_ref().and_then(|f| pread_text(&f.cpu_stat)).and_then(|t| keyed(&t, "usage_usec"))
    }

    pub fn pids(&self) -> Vec<i32> {
        fs::read_to_string(self.dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    fn oom_kills(&self) -> u64 {
        match (self.memory, &self.memory_v1) {
            (Memory::V2, _) => read_keyed(&self.dir.join("memory.events"), "oom_kill").unwrap_or(0),
            (Memory::V1, Some(m)) => read_keyed(&m.join("memory.oom_control"), "oom_kill").unwrap_or(0),
            _ => 0,
        }
    }

    /// The job hit its memory limit: the kernel OOM-killed it (v2, the whole cgroup at once),
    /// or paused it at the limit (v1).
    pub fn out_of_memory(&self) -> bool {
        match (self.memory, &self.memory_v1) {
            (Memory::V2, _) => self.oom_kills() > self.oom_start,
            (Memory::V1, Some(m)) => fs::read_to_string(m.join("memory.oom_control")).is_ok_and(|t| {
                keyed(&t, "under_oom").unwrap_or(0) > 0 || keyed(&t, "oom_kill").unwrap_or(0) > self.oom_start
            }),
            _ => false,
        }
    }

    /// Sets (or lifts) the memory limit, where the kernel can enforce it.
    fn set_limit(&mut self, mem_limit: Option<u64>) {
        if mem_limit == self.limit {
            return;
        }
        let text = mem_limit.map_or_else(|| "-1".to_string(), |l| l.to_string());
        self.limited = match (self.memory, &self.memory_v1) {
            (Memory::V2, _) => {
                // The whole job is OOM-killed as one (not only its largest process).
                let _ = write_file(&self.dir.join("memory.oom.group"), "1");
                let _ = write_file(&self.dir.join("memory.swap.max"), "0");
                let max = mem_limit.map_or_else(|| "max".to_string(), |l| l.to_string());
                write_file(&self.dir.join("memory.max"), &max).is_ok() && mem_limit.is_some()
            }
            (Memory::V1, Some(m)) => {
                // memsw (memory + swap: no swapping past the limit) may never be below the
                // memory limit: lifted first, set last. Absent without swap accounting.
                let _ = write_file(&m.join("memory.memsw.limit_in_bytes"), "-1");
                let ok = write_file(&m.join("memory.limit_in_bytes"), &text).is_ok();
                let _ = write_file(&m.join("memory.memsw.limit_in_bytes"), &text);
                // v1 has no oom.group: instead of killing one process (the job's shell would go
                // on), the kernel pauses the job at its limit (`under_oom`), and the run kills
                // all of it.
                let _ = write_file(&m.join("memory.oom_control"), if mem_limit.is_some() { "1" } else { "0" });
                ok && mem_limit.is_some()
            }
            _ => false,
        };
        self.limit = mem_limit;
    }

    /// Takes the counters' values before the job starts, and resets the peak.
    fn start(&mut self) {
        self.cpu_start = self.cpu_usage().unwrap_or(0);
        // Only a limited job can hit its limit: the counter is read for those alone.
        self.oom_start = if self.limited { self.oom_kills() } else { 0 };
        if let (Memory::V1, Some(peak)) = (self.memory, self.files.as_ref().and_then(|f| f.peak.as_ref())) {
            use std::os::unix::fs::FileExt;
            let _ = peak.write_at(b"0", 0);
        }
    }

    pub fn usage(&self) -> Usage {
        let peak = self.files.as_ref().and_then(|f| f.peak.as_ref());
        Usage {
            // Every v2 cgroup has cpu.stat's usage_usec, with or without the cpu controller.
            cpu_time_us: self.cpu_usage().map(|u| u.saturating_sub(self.cpu_start)),
            peak_memory: peak.and_then(pread_text).and_then(|t| t.trim().parse().ok()),
            oom_killed: self.limited && self.out_of_memory(),
        }
    }

    /// Moves what is left of the job to the host's own cgroups (a daemon the job keeps), so that
    /// its cgroup can go. Bounded: a process forking as fast as we move it stays.
    pub fn release_to_host(&self) {
        for _ in 0..20 {
            let pids = self.pids();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                let _ = write_file(&self.own.v2.join("cgroup.procs"), &pid.to_string());
                if let Some(own_v1) = &self.own.memory_v1 {
                    let _ = write_file(&own_v1.join("cgroup.procs"), &pid.to_string());
                }
            }
        }
    }

    /// Removes the cgroup (the kernel refuses while a process is in it).
    pub fn remove(&self) -> io::Result<()> {
        let v2 = fs::remove_dir(&self.dir);
        if let Some(m) = &self.memory_v1 {
            let _ = fs::remove_dir(m);
        }
        v2
    }
}

/// How long the end of a run waits for a killed cgroup to empty (the kernel is quick; a process
/// stuck in uninterruptible sleep is not).
pub const EMPTY_WAIT: Duration = Duration::from_secs(2);

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn finds_a_hybrid_machine_s_hierarchies() {
        let cgroup = "4:memory:/sandbox/abc\n1:cpu:/\n0::/\n";
        let own = Own::parse(MOUNTINFO, cgroup).unwrap();
        assert_eq!(own.v2, PathBuf::from("/sys/fs/cgroup/unified"));
        assert_eq!(own.memory_v1, Some(PathBuf::from("/sys/fs/cgroup/memory/sandbox/abc")));
    }

    #[test]
    fn finds_a_pure_v2_machine_s_hierarchy() {
        let mountinfo = "29 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        let own = Own::parse(mountinfo, "0::/user.slice/session-2.scope\n").unwrap();
        assert_eq!(own.v2, PathBuf::from("/sys/fs/cgroup/user.slice/session-2.scope"));
        assert_eq!(own.memory_v1, None);
        // A mount of a subtree (a namespace's view): its root is a prefix of our path.
        let sub = "29 23 0:26 /ns /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(Own::parse(sub, "0::/ns/job\n").unwrap().v2, PathBuf::from("/sys/fs/cgroup/job"));
    }

    #[test]
    fn no_v2_hierarchy_means_no_cgroup_mode() {
        let v1_only = "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        assert_eq!(Own::parse(v1_only, "4:memory:/\n"), None);
        assert_eq!(Own::parse(MOUNTINFO, "4:memory:/\n"), None, "no 0:: line");
    }

    #[test]
    fn reads_flat_keyed_files() {
        let stat = "usage_usec 1234\nuser_usec 1000\nsystem_usec 234\n";
        assert_eq!(keyed(stat, "usage_usec"), Some(1234));
        assert_eq!(keyed(stat, "user"), None);
        assert_eq!(keyed("populated 0\nfrozen 0\n", "populated"), Some(0));
        assert_eq!(keyed("oom_control 0\nunder_oom 0\noom_kill 3\n", "oom_kill"), Some(3));
    }
}
