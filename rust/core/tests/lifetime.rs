//! Nothing a job starts outlives its run, in both modes of `isolation`: a daemon that called
//! `setsid` and left its parent dies at the end of the run, unless the job keeps its daemons;
//! the cgroup mode reports CPU time; an empty run cgroup is reused, and every cgroup is gone
//! after `close`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{alive, read_pids, run_here, runtime_with, settings, sh_plan, sh_plan_with, wait_gone};
use dkron_exec_core::isolation::Isolation;
use dkron_exec_core::run::{Runtime, Settings};

fn runtime(cgroups: bool) -> Arc<Runtime> {
    runtime_with(Settings { cgroups, ..settings() }, None)
}

/// Whether this machine gives the cgroup mode (else those tests say so and pass).
fn cgroups_here() -> bool {
    let here = Isolation::new(true).report().mode == "cgroup";
    if !here {
        eprintln!("no usable cgroup v2 here: the cgroup half of this test is skipped");
    }
    here
}

fn modes() -> Vec<bool> {
    if cgroups_here() { vec![true, false] } else { vec![false] }
}

/// A job whose daemon (setsid, parent gone, output detached) writes its pid to `file`.
fn daemon_script(file: &std::path::Path, then: &str) -> String {
    format!("setsid sh -c 'sleep 300 </dev/null >/dev/null 2>&1 & echo $! > {}'; {then}", file.display())
}

#[test]
fn a_setsid_daemon_dies_with_its_run() {
    for cgroups in modes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pid");
        let rt = runtime(cgroups);
        let e = run_here(&rt, &sh_plan("daemon", &daemon_script(&file, "sleep 0.2")));
        assert!(e.success, "{:?}", e.error);
        let pid = read_pids(&file, 1)[0];
        assert!(!alive(pid), "cgroups={cgroups}: the daemon outlived its run");
        rt.close(Duration::from_secs(5));
    }
}

#[test]
fn a_job_that_keeps_its_daemons_leaves_them_running() {
    for cgroups in modes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pid");
        let rt = runtime(cgroups);
        let plan = sh_plan_with("keeper", &daemon_script(&file, "sleep 0.2"), &[("keep_daemons", "true")]);
        let e = run_here(&rt, &plan);
        assert!(e.success, "{:?}", e.error);
        rt.close(Duration::from_secs(5));
        let pid = read_pids(&file, 1)[0];
        let kept = alive(pid);
        // SAFETY: the daemon this test started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        assert!(kept, "cgroups={cgroups}: the kept daemon died");
        assert!(wait_gone(&[pid], Duration::from_secs(5)).is_empty());
    }
}

#[test]
fn a_killed_job_loses_its_daemons_even_when_it_keeps_them() {
    for cgroups in modes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pid");
        let rt = runtime(cgroups);
        let plan = sh_plan_with("keeper", &daemon_script(&file, "sleep 30"), &[("keep_daemons", "true"), ("timeout", "300ms")]);
        let e = run_here(&rt, &plan);
        assert!(!e.success);
        let pid = read_pids(&file, 1)[0];
        assert!(!alive(pid), "cgroups={cgroups}: a timed-out job kept its daemon");
        rt.close(Duration::from_secs(5));
    }
}

#[test]
fn the_cgroup_mode_reports_cpu_time_and_removes_its_cgroups() {
    if !cgroups_here() {
        return;
    }
    let rt = runtime(true);
    let report = rt.isolation().report();
    let parent = report.cgroup.clone().unwrap();
    let e = run_here(&rt, &sh_plan("burn", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done"));
    assert!(e.success);
    assert!(e.cpu_time_us.is_some_and(|us| us > 0), "{:?}", e.cpu_time_us);
    // A second run reuses the first one's (empty) cgroup, and counts only its own CPU time.
    let idle = run_here(&rt, &sh_plan("idle", "sleep 0.1"));
    assert!(idle.cpu_time_us.unwrap() < e.cpu_time_us.unwrap(), "{:?} vs {:?}", idle.cpu_time_us, e.cpu_time_us);
    let runs: Vec<_> = std::fs::read_dir(&parent).unwrap().flatten().filter(|e| e.path().is_dir()).collect();
    assert_eq!(runs.len(), 1, "one cgroup, kept for the next run: {runs:?}");
    rt.close(Duration::from_secs(5));
    assert!(!parent.exists(), "the Executor's cgroup is left");
}

#[test]
fn the_fallback_reports_no_usage() {
    let rt = runtime(false);
    assert_eq!(rt.isolation().report().mode, "process-group");
    let e = run_here(&rt, &sh_plan("j", "true"));
    assert_eq!((e.cpu_time_us, e.peak_memory), (None, None));
    rt.close(Duration::from_secs(5));
}
