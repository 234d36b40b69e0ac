//! The processes that belong to a job: its process group plus every descendant of its leader,
//! read from `/proc`. Used to kill a whole job (a grandchild that left the group included) and to
//! measure the memory of the whole tree.

use std::collections::{HashMap, HashSet};
use std::fs;

/// One line of `/proc/<pid>/stat`, the fields we need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: i32,
    pub ppid: i32,
    pub pgrp: i32,
    /// Resident set size in pages.
    pub rss_pages: u64,
    /// Dead, waiting to be reaped by its parent: a signal can no longer do anything to it.
    pub zombie: bool,
}

/// Parses `/proc/<pid>/stat`. The command name may hold spaces and parentheses, so fields are
/// counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let pid = text[..open].trim().parse().ok()?;
    let rest: Vec<&str> = text[close + 1..].split_whitespace().collect();
    // rest[0] is the state (field 3); ppid is field 4, pgrp 5, rss 24.
    Some(ProcStat {
        pid,
        ppid: rest.get(1)?.parse().ok()?,
        pgrp: rest.get(2)?.parse().ok()?,
        rss_pages: rest.get(21)?.parse().ok()?,
        zombie: matches!(*rest.first()?, "Z" | "X"),
    })
}

/// A snapshot of every process on the machine.
pub fn snapshot() -> Vec<ProcStat> {
    let Ok(dir) = fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|entry| {
        let entry = entry.ok()?;
        let name = entry.file_name();
        let name = name.to_str()?;
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // A process may vanish between readdir and read: skip it.
        let text = fs::read_to_string(format!("/proc/{name}/stat")).ok()?;
        parse_stat(&text)
    })
    .collect()
}

/// The pids of the job led by `leader`: members of its process group (`pgid`) and every
/// descendant of the leader, wherever its group.
pub fn job_members(procs: &[ProcStat], leader: i32, pgid: i32) -> Vec<ProcStat> {
    let mut children: HashMap<i32, Vec<usize>> = HashMap::new();
    for (i, p) in procs.iter().enumerate() {
        children.entry(p.ppid).or_default().push(i);
    }
    let mut seen: HashSet<i32> = HashSet::new();
    let mut out = Vec::new();
    let mut stack: Vec<usize> = procs
        .iter()
        .enumerate()
        .filter(|(_, p)| p.pid == leader || p.pgrp == pgid)
        .map(|(i, _)| i)
        .collect();
    while let Some(i) = stack.pop() {
        let p = procs[i];
        if !seen.insert(p.pid) {
            continue;
        }
        out.push(p);
        if let Some(kids) = children.get(&p.pid) {
            stack.extend(kids.iter().copied());
        }
    }
    out
}

pub fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 { n as u64 } else { 4096 }
}

/// Resident memory of the whole job, in bytes.
pub fn job_rss(leader: i32, pgid: i32) -> u64 {
    let procs = snapshot();
    job_members(&procs, leader, pgid).iter().map(|p| p.rss_pages).sum::<u64>() * page_size()
}

/// SIGKILLs the whole job: the process group first (one call, no race with forks inside it),
/// then every descendant found outside it. Repeated until nothing new is found, so a process
/// forked during the kill is caught too.
pub fn kill_job(leader: i32, pgid: i32) {
    let own_pid = std::process::id() as i32;
    for _ in 0..5 {
        // SAFETY: kill(2) with a negative pid signals a process group; errors (ESRCH) are fine.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let procs = snapshot();
        let members: Vec<i32> = job_members(&procs, leader, pgid)
            .into_iter()
            // Zombies are dead already (a killed leader stays one until it is reaped; counting
            // it as alive would repeat the /proc scan for nothing); never signal ourselves.
            .filter(|p| !p.zombie && p.pid != own_pid)
            .map(|p| p.pid)
            .collect();
        let mut alive = 0;
        for pid in members {
            // SAFETY: as above; the pid belongs to the job's tree.
            if unsafe { libc::kill(pid, libc::SIGKILL) } == 0 {
                alive += 1;
            }
        }
        if alive == 0 {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// The environment variable that marks every process of a run (fallback mode): a daemon that
/// left the job's group and tree still carries it, unless it cleared its environment.
pub const MARKER_VAR: &str = "DKRON_EXEC_RUN";

/// Whether an environment block (`/proc/<pid>/environ`: NUL-separated) holds `MARKER_VAR=value`.
pub fn environ_has(environ: &[u8], value: &str) -> bool {
    let wanted = format!("{MARKER_VAR}={value}");
    environ.split(|&b| b == 0).any(|entry| entry == wanted.as_bytes())
}

/// Reads a whole /proc file into `buf` (reused: one large read per file instead of the small
/// probing reads of `fs::read`, which cost a scan of every process dearly).
fn read_proc_file(path: &str, buf: &mut Vec<u8>) -> Option<()> {
    use std::io::Read;
    let mut file = fs::File::open(path).ok()?;
    buf.clear();
    loop {
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(64 * 1024);
        }
        let len = buf.len();
        let spare = buf.capacity() - len;
        buf.resize(len + spare, 0);
        match file.read(&mut buf[len..]) {
            Ok(0) => {
                buf.truncate(len);
                return Some(());
            }
            Ok(n) => buf.truncate(len + n),
            Err(_) => return None,
        }
    }
}

/// The pid the kernel handed out last (in our pid namespace).
pub fn last_pid() -> Option<i32> {
    fs::read_to_string("/proc/sys/kernel/ns_last_pid").ok()?.trim().parse().ok()
}

/// The pids handed out after `since` up to `now` (pids are allocated in increasing order,
/// wrapping at pid_max), when that is a short list: every process started in between has one.
pub fn pids_since(since: i32, now: i32) -> Option<Vec<i32>> {
    const SHORT: i32 = 256;
    if now >= since {
        return (now - since <= SHORT).then(|| (since + 1..=now).collect());
    }
    // Wrapped around: the window is (since, pid_max] and [1, now].
    let max: i32 = fs::read_to_string("/proc/sys/kernel/pid_max").ok()?.trim().parse().ok()?;
    ((max - since) + now <= SHORT).then(|| (since + 1..=max).chain(1..=now).collect())
}

/// The pids whose environment carries the run's marker (never our own), among `candidates`
/// or else every process.
pub fn marked(value: &str, candidates: Option<&[i32]>) -> Vec<i32> {
    let own_pid = std::process::id() as i32;
    let all: Vec<i32> = match candidates {
        Some(pids) => pids.to_vec(),
        None => {
            let Ok(dir) = fs::read_dir("/proc") else { return Vec::new() };
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect()
        }
    };
    let mut buf = Vec::with_capacity(64 * 1024);
    all.into_iter()
        .filter(|&pid| {
            // Gone meanwhile, or not ours to read: skip it.
            pid != own_pid
                && read_proc_file(&format!("/proc/{pid}/environ"), &mut buf).is_some()
                && environ_has(&buf, value)
        })
        .collect()
}

/// SIGKILLs every process carrying the run's marker, until none is left (a process forked
/// during a round is found by the next). `since`: the last pid handed out before the run
/// started, which narrows the search to the pids handed out since, when they are few.
pub fn kill_marked(value: &str, since: Option<i32>) {
    for _ in 0..5 {
        let window = since.zip(last_pid()).and_then(|(since, now)| pids_since(since, now));
        let pids = marked(value, window.as_deref());
        let mut alive = 0;
        for pid in pids {
            // SAFETY: kill(2) on a pid that carries our run's marker; errors (ESRCH) are fine.
            if unsafe { libc::kill(pid, libc::SIGKILL) } == 0 {
                alive += 1;
            }
        }
        if alive == 0 {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// Resident memory of these processes, in bytes.
pub fn rss_of(pids: &[i32]) -> u64 {
    let pages: u64 = pids
        .iter()
        .filter_map(|pid| parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?))
        .map(|p| p.rss_pages)
        .sum();
    pages * page_size()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_pids_handed_out_since_a_mark() {
        assert_eq!(pids_since(10, 13), Some(vec![11, 12, 13]));
        assert_eq!(pids_since(10, 10), Some(vec![]));
        assert_eq!(pids_since(10, 10_000), None, "too many: scan every process");
        let max: i32 = fs::read_to_string("/proc/sys/kernel/pid_max").unwrap().trim().parse().unwrap();
        assert_eq!(pids_since(max - 1, 2), Some(vec![max, 1, 2]), "wrapped at pid_max");
        let before = last_pid().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        // None only if the machine started hundreds of processes meanwhile: then a full scan.
        if let Some(window) = pids_since(before, last_pid().unwrap()) {
            assert!(window.contains(&(child.id() as i32)), "{window:?}");
        }
        child.wait().unwrap();
    }

    #[test]
    fn the_marker_is_a_whole_entry() {
        let env = b"A=1\0DKRON_EXEC_RUN=7-1-3\0B=2\0";
        assert!(environ_has(env, "7-1-3"));
        assert!(!environ_has(env, "7-1"), "a prefix of the value is another run");
        assert!(!environ_has(b"X_DKRON_EXEC_RUN=7-1-3\0", "7-1-3"));
    }

    use super::*;

    #[test]
    fn parses_a_name_with_spaces_and_parens() {
        let line = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 5 1000 77 18446744073709551615";
        let s = parse_stat(line).unwrap();
        assert_eq!(s, ProcStat { pid: 1234, ppid: 1, pgrp: 1234, rss_pages: 77, zombie: false });
        let dead = "99 (x) Z 1 99 99 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 5 0 0 18446744073709551615";
        assert!(parse_stat(dead).unwrap().zombie);
    }

    #[test]
    fn reads_our_own_process() {
        let text = fs::read_to_string("/proc/self/stat").unwrap();
        let s = parse_stat(&text).unwrap();
        assert_eq!(s.pid as u32, std::process::id());
        assert!(s.rss_pages > 0);
    }

    #[test]
    fn members_include_descendants_outside_the_group() {
        let p = |pid, ppid, pgrp| ProcStat { pid, ppid, pgrp, rss_pages: 1, zombie: false };
        let procs = vec![
            p(10, 1, 10),  // leader
            p(11, 10, 10), // child in the group
            p(12, 11, 12), // grandchild that called setsid
            p(13, 12, 12), // its child
            p(20, 1, 20),  // unrelated
            p(21, 1, 10),  // orphan still in the group
        ];
        let mut pids: Vec<i32> = job_members(&procs, 10, 10).iter().map(|p| p.pid).collect();
        pids.sort();
        assert_eq!(pids, vec![10, 11, 12, 13, 21]);
    }
}
