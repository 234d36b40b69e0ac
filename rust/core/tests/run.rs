//! The run pipeline against real processes, through `run::Runtime`: what one run records, the
//! limits that end it, who may stop it (cancel, the caller giving up, close), retries, `forbid`,
//! and many runs started at once.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{alive, read_pids, run_here, runtime, runtime_with, settings, sh_plan, sh_plan_with, wait_gone, Collect, NODE, POLL};
use dkron_exec_core::engine::CompletionQueue;
use dkron_exec_core::plan::JobPlan;
use dkron_exec_core::run::{Recorder, Refused, Settings};

fn plan(name: &str, config: &[(&str, &str)], retries: u32, forbid: bool) -> Arc<JobPlan> {
    Arc::new(JobPlan::parse(name, "shell", &common::map(config), &[], retries, forbid).unwrap())
}

// -- one run ---------------------------------------------------------------------------------

#[test]
fn a_run_here_of_echo_is_recorded_with_dkrons_key() {
    let collect = Arc::new(Collect::default());
    let rt = runtime_with(settings(), Some(collect.clone() as Arc<dyn Recorder>));
    let e = run_here(&rt, &plan("echo", &[("command", "/bin/echo hello")], 0, false));
    assert_eq!(e.output, b"hello\n");
    assert_eq!((e.exit_code, e.error.as_deref(), e.success), (Some(0), None, true));
    assert_eq!(e.key, format!("{}-{NODE}", e.started_ns));
    assert_eq!((e.job_name.as_str(), e.node_name.as_str(), e.attempt), ("echo", NODE, 1));
    assert!(e.finished_ns.unwrap() >= e.started_ns && e.group > 0);
    assert_eq!((e.output_truncated, e.output_size), (false, 6));
    assert!(e.processor_errors.is_empty());
    assert_eq!(collect.taken(), vec![e]);
    assert_eq!(rt.in_flight(), 0);
}

#[test]
fn an_exit_status_is_the_error_and_ends_the_output() {
    let rt = runtime();
    let e = run_here(&rt, &sh_plan("fails", "echo out; echo err >&2; exit 3"));
    assert!(!e.success);
    assert_eq!(e.exit_code, Some(3));
    assert_eq!(e.error.as_deref(), Some("exit status 3"));
    // stdout and stderr share one pipe: the output keeps the order they were written in.
    assert_eq!(e.output, b"out\nerr\nexit status 3\n");
}

#[test]
fn a_missing_program_is_a_recorded_failure() {
    let rt = runtime();
    let e = run_here(&rt, &plan("missing", &[("command", "/nonexistent/prog")], 0, false));
    assert!(!e.success && e.exit_code.is_none());
    let error = e.error.unwrap();
    assert!(error.contains("could not start"), "{error}");
    assert!(e.output.ends_with(format!("{error}\n").as_bytes()));
}

#[test]
fn output_over_the_limit_keeps_the_tail_and_the_error_line() {
    let rt = runtime_with(Settings { output_limit: 1000, ..settings() }, None);
    let e = run_here(&rt, &sh_plan("big", "seq 1 100000; exit 1"));
    assert!(e.output_truncated);
    assert_eq!(e.output.len(), 1000);
    let text = String::from_utf8_lossy(&e.output);
    assert!(text.ends_with("99999\n100000\nexit status 1\n"), "{text}");
    let written: usize = (1..=100_000).map(|i: u32| i.to_string().len() + 1).sum();
    assert_eq!(e.output_size, written as u64);
}

#[test]
fn timeout_kills_a_grandchild_that_ignores_sigterm_and_holds_the_pipe() {
    let tmp = tempfile::tempdir().unwrap();
    let pidfile = tmp.path().join("pids");
    let pidfile = pidfile.display();
    let script = format!("sh -c 'trap \"\" TERM; echo $$ >> {pidfile}; exec sleep 60' & echo $$ >> {pidfile}; sleep 60");
    let rt = runtime();
    let t0 = Instant::now();
    let e = run_here(&rt, &sh_plan_with("slow", &script, &[("timeout", "1s")]));
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    assert!(!e.success);
    let error = e.error.unwrap();
    assert_eq!(error, format!("shell: Job '{script}' execution time exceeding defined timeout 1s. Job was killed"));
    assert!(e.output.ends_with(format!("{error}\n").as_bytes()));
    let pids = read_pids(&tmp.path().join("pids"), 2);
    assert_eq!(pids.len(), 2);
    assert_eq!(wait_gone(&pids, Duration::from_secs(1)), Vec::<i32>::new());
}

#[test]
fn an_escaped_grandchild_holding_the_pipe_does_not_hang_a_finished_job() {
    let rt = runtime_with(Settings { pipe_grace: Duration::from_millis(300), ..settings() }, None);
    let t0 = Instant::now();
    let e = run_here(&rt, &sh_plan("escape", "setsid sleep 30 & echo started"));
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    assert!(e.success, "{:?}", e.error);
    assert_eq!(e.output, b"started\n");
}

#[test]
fn memory_limit_kills_the_tree() {
    let rt = runtime();
    // A child (not the leader) grows to ~200 MB.
    let script = "python3 -c 'import time; b = bytearray(200 << 20); time.sleep(30)'; echo after";
    let t0 = Instant::now();
    let e = run_here(&rt, &sh_plan_with("hungry", script, &[("mem_limit", "50MB")]));
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    assert!(!e.success);
    let error = e.error.unwrap();
    assert!(error.contains("memory limit of 52428800 bytes") && error.ends_with("Job was killed"), "{error}");
    assert!(!String::from_utf8_lossy(&e.output).lines().any(|l| l == "after"));
}

// -- stopping a run ----------------------------------------------------------------------------

#[test]
fn cancel_from_another_thread_kills_a_run_here_and_stops_its_retries() {
    let tmp = tempfile::tempdir().unwrap();
    let pidfile = tmp.path().join("pid");
    let script = format!("echo $$ > {}; echo started; exec sleep 30", pidfile.display());
    let rt = runtime();
    let plan = plan("long", &[("command", &script), ("shell", "true")], 3, false);
    let remote = rt.clone();
    let canceller = std::thread::spawn(move || {
        let pid = read_pids(&pidfile, 1)[0];
        assert_eq!(remote.cancel("other"), 0);
        assert_eq!(remote.cancel("long"), 1);
        pid
    });
    let t0 = Instant::now();
    let e = run_here(&rt, &plan);
    let pid = canceller.join().unwrap();
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert_eq!(e.attempt, 1, "no retry after a cancel");
    assert!(!e.success && e.output.starts_with(b"started\n"));
    // One text, naming the job by its name, in the error and as the output's last line.
    assert_eq!(e.error.as_deref(), Some("shell: Job 'long' was cancelled. Job was killed"));
    assert!(e.output.ends_with(b"\nshell: Job 'long' was cancelled. Job was killed\n"));
    assert_eq!(wait_gone(&[pid], Duration::from_secs(2)), Vec::<i32>::new());
    assert_eq!(rt.cancel("long"), 0);
}

#[test]
fn a_cancel_right_after_start_kills_the_job_as_it_spawns() {
    let rt = runtime();
    let plan = sh_plan("soon", "sleep 30");
    let handle = rt.start(&plan, rt.claim(&plan).unwrap(), None, None).unwrap();
    // Cancelled before or after the spawn, the job ends killed.
    assert_eq!(rt.cancel("soon"), 1);
    assert!(handle.wait(Some(Duration::from_secs(5))));
    let e = handle.take().unwrap();
    assert_eq!(e.exit_code, Some(-9));
    assert!(e.error.unwrap().ends_with("was cancelled. Job was killed"));
    assert!(handle.take().is_none(), "the execution is taken once");
}

#[test]
fn run_here_gives_up_when_its_caller_does_and_kills_the_job() {
    let tmp = tempfile::tempdir().unwrap();
    let pidfile = tmp.path().join("pid");
    let rt = runtime();
    let plan = sh_plan("impatient", &format!("echo $$ > {}; exec sleep 30", pidfile.display()));
    let asked = std::cell::Cell::new(0);
    let t0 = Instant::now();
    let (e, gave_up) = rt
        .run_here(&plan, rt.claim(&plan).unwrap(), None, POLL, || {
            asked.set(asked.get() + 1);
            asked.get() >= 3 && pidfile.exists()
        })
        .unwrap();
    assert!(gave_up && t0.elapsed() < Duration::from_secs(5));
    // Given up by its caller (Ctrl-C, a cancelled task): the same words as Executor.cancel.
    assert_eq!(e.error.as_deref(), Some("shell: Job 'impatient' was cancelled. Job was killed"));
    assert!(e.output.ends_with(b"shell: Job 'impatient' was cancelled. Job was killed\n"));
    let pid = read_pids(&pidfile, 1)[0];
    assert_eq!(wait_gone(&[pid], Duration::from_secs(2)), Vec::<i32>::new());
    assert_eq!(rt.in_flight(), 0);
}

#[test]
fn the_calling_threads_runtime_serves_the_next_run_here() {
    let rt = runtime();
    for i in 0..3 {
        let e = run_here(&rt, &sh_plan("again", &format!("echo run {i}; exit 2")));
        assert_eq!(e.output, format!("run {i}\nexit status 2\n").as_bytes());
        assert_eq!(rt.in_flight(), 0);
    }
}

#[test]
fn close_from_another_thread_kills_a_run_here_and_refuses_new_runs() {
    let rt = runtime();
    let closer = rt.clone();
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        closer.close(Duration::from_secs(2));
    });
    let t0 = Instant::now();
    let e = run_here(&rt, &sh_plan("closed", "sleep 30"));
    stopper.join().unwrap();
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert!(e.error.unwrap().ends_with("was cancelled. Job was killed"));
    let plan = sh_plan("closed", "true");
    assert_eq!(rt.claim(&plan).err(), Some(Refused::Closed));
}

#[test]
fn close_kills_started_runs_and_they_still_record_their_execution() {
    let tmp = tempfile::tempdir().unwrap();
    let pidfile = tmp.path().join("pid");
    let collect = Arc::new(Collect::default());
    let rt = runtime_with(settings(), Some(collect.clone() as Arc<dyn Recorder>));
    let plan = sh_plan("bg", &format!("echo $$ > {}; exec sleep 30", pidfile.display()));
    let handle = rt.start(&plan, rt.claim(&plan).unwrap(), None, None).unwrap();
    let pid = read_pids(&pidfile, 1)[0];
    assert!(alive(pid));
    rt.close(Duration::from_secs(2));
    assert!(handle.wait(Some(Duration::from_secs(1))));
    let e = handle.take().unwrap();
    assert!(!e.success && e.error.as_deref().unwrap().ends_with("was cancelled. Job was killed"));
    assert!(!alive(pid));
    assert_eq!(collect.taken(), vec![e]);
    assert_eq!(rt.claim(&plan).err(), Some(Refused::Closed));
}

// -- retries and concurrency -------------------------------------------------------------------

#[test]
fn retries_share_a_group_and_wait_dkrons_backoff() {
    let collect = Arc::new(Collect::default());
    let backoff = Duration::from_millis(150);
    let rt = runtime_with(Settings { retry_backoff: backoff, ..settings() }, Some(collect.clone() as Arc<dyn Recorder>));
    let e = run_here(&rt, &plan("flaky", &[("command", "echo try; exit 1"), ("shell", "true")], 2, false));
    assert_eq!((e.success, e.attempt), (false, 3));
    let recorded = collect.taken();
    assert_eq!(recorded.iter().map(|x| x.attempt).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(recorded.iter().all(|x| x.group == e.group && x.output == b"try\nexit status 1\n"));
    assert_eq!(recorded.last(), Some(&e));
    // Quick attempts wait attempt * backoff (run::retry_delay's unit tests cover the formula).
    for (pair, attempt) in recorded.windows(2).zip(1u32..) {
        let gap = Duration::from_nanos((pair[1].started_ns - pair[0].finished_ns.unwrap()) as u64);
        let expected = backoff * attempt;
        assert!(gap >= expected && gap < expected + Duration::from_millis(400), "attempt {attempt}: {gap:?}");
    }
}

#[test]
fn a_retried_run_stops_at_its_first_success() {
    let tmp = tempfile::tempdir().unwrap();
    let counter = tmp.path().join("n");
    let script = format!("echo x >> {0}; test $(wc -l < {0}) -ge 2", counter.display());
    let rt = runtime();
    let e = run_here(&rt, &plan("second", &[("command", &script), ("shell", "true")], 5, false));
    assert!(e.success && e.attempt == 2);
}

#[test]
fn forbid_refuses_a_second_claim_while_a_run_is_in_flight() {
    let rt = runtime();
    let exclusive = plan("exclusive", &[("command", "sleep 30")], 0, true);
    let handle = rt.start(&exclusive, rt.claim(&exclusive).unwrap(), None, None).unwrap();
    assert_eq!(rt.claim(&exclusive).err(), Some(Refused::Concurrent("exclusive".into())));
    // Other jobs, and jobs that allow concurrency, are not held back.
    let shared = plan("shared", &[("command", "true")], 0, false);
    let (first, second) = (rt.claim(&shared).unwrap(), rt.claim(&shared).unwrap());
    assert!(rt.run_here(&shared, first, None, POLL, || false).unwrap().0.success);
    assert!(rt.run_here(&shared, second, None, POLL, || false).unwrap().0.success);
    // Once the run is over, the job may run again.
    rt.cancel("exclusive");
    assert!(handle.wait(Some(Duration::from_secs(5))));
    assert!(run_here(&rt, &plan("exclusive", &[("command", "true")], 0, true)).success);
}

#[test]
fn many_started_runs_overlap_on_one_worker() {
    let rt = runtime();
    let plan = plan("many", &[("command", "sleep 1")], 0, false);
    let t0 = Instant::now();
    let handles: Vec<_> = (0..200).map(|_| rt.start(&plan, rt.claim(&plan).unwrap(), None, None).unwrap()).collect();
    assert!(rt.in_flight() > 100, "{}", rt.in_flight());
    for h in &handles {
        assert!(h.wait(Some(Duration::from_secs(30))));
        assert!(h.take().unwrap().success);
    }
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    assert_eq!(rt.in_flight(), 0);
}

#[test]
fn a_completion_queue_reports_every_started_run_once() {
    let rt = runtime();
    let queue = Arc::new(CompletionQueue::new().unwrap());
    let handles: Vec<_> = (0..20u64)
        .map(|i| {
            let plan = sh_plan(&format!("q{i}"), &format!("sleep 0.0{}", i % 5));
            rt.start(&plan, rt.claim(&plan).unwrap(), None, Some((queue.clone(), i))).unwrap()
        })
        .collect();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.len() < 20 {
        assert!(Instant::now() < deadline);
        let mut fds = [libc::pollfd { fd: queue.fd(), events: libc::POLLIN, revents: 0 }];
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(fds.as_mut_ptr(), 1, 100) };
        seen.extend(queue.drain());
    }
    seen.sort();
    assert_eq!(seen, (0..20).collect::<Vec<_>>());
    for (i, h) in handles.iter().enumerate() {
        let e = h.take().expect("a reported run has its execution");
        assert!(e.success && e.job_name == format!("q{i}"));
    }
    assert!(queue.drain().is_empty());
}
