//! The engine against real processes.

use std::time::{Duration, Instant};

use dkron_exec_core::engine::{CompletionQueue, Engine, RunHandle};
use dkron_exec_core::job::{EndReason, JobSpec};

trait StartPlain {
    fn start_plain(&self, spec: JobSpec) -> std::io::Result<RunHandle>;
}

impl StartPlain for Engine {
    fn start_plain(&self, spec: JobSpec) -> std::io::Result<RunHandle> {
        self.start(spec, None)
    }
}

fn sh(script: &str) -> JobSpec {
    let mut spec = JobSpec::new(vec!["/bin/sh".into(), "-c".into(), script.into()]);
    spec.label = script.into();
    spec
}

fn alive(pid: i32) -> bool {
    // kill(pid, 0) succeeds for live processes and zombies; a zombie's stat says 'Z'.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s[s.rfind(')').unwrap() + 2..].starts_with('Z'),
        Err(_) => false,
    }
}

#[test]
fn captures_stdout_stderr_and_exit_code() {
    let engine = Engine::new(1).unwrap();
    let out = engine.start_plain(sh("echo out; echo err >&2; exit 3")).unwrap().wait(None).unwrap();
    assert_eq!(out.exit_code, Some(3));
    assert_eq!(out.error.as_deref(), Some("exit status 3"));
    let text = String::from_utf8_lossy(&out.output);
    assert!(text.contains("out\n") && text.contains("err\n"), "{text}");
    assert!(text.ends_with("exit status 3\n"), "{text}");
    assert_eq!(out.reason, EndReason::Exited);
}

#[test]
fn a_missing_program_is_a_spawn_failure() {
    let engine = Engine::new(1).unwrap();
    let out = engine.start_plain(JobSpec::new(vec!["/nonexistent/prog".into()])).unwrap().wait(None).unwrap();
    assert_eq!(out.reason, EndReason::SpawnFailed);
    assert!(out.error.as_deref().unwrap().contains("could not start"));
    assert_eq!(out.exit_code, None);
}

#[test]
fn stdin_payload_larger_than_a_pipe_does_not_deadlock() {
    let engine = Engine::new(1).unwrap();
    let payload: Vec<u8> = (0..(1 << 20)).map(|i| (i % 251) as u8).collect();
    let mut spec = JobSpec::new(vec!["cat".into()]);
    spec.stdin = Some(payload.clone());
    spec.output_limit = 2 << 20;
    let out = engine.start_plain(spec).unwrap().wait(Some(Duration::from_secs(20))).unwrap();
    assert_eq!(out.output, payload);
    assert!(out.success());
}

#[test]
fn output_over_the_limit_keeps_the_tail_and_the_error_line() {
    let engine = Engine::new(1).unwrap();
    let mut spec = sh("seq 1 100000; exit 1");
    spec.output_limit = 1000;
    let out = engine.start_plain(spec).unwrap().wait(None).unwrap();
    assert!(out.truncated);
    assert_eq!(out.output.len(), 1000);
    let text = String::from_utf8_lossy(&out.output);
    assert!(text.ends_with("99999\n100000\nexit status 1\n"), "{text}");
    assert!(out.output_total > 500_000);
}

#[test]
fn timeout_kills_a_grandchild_that_ignores_sigterm_and_holds_the_pipe() {
    let engine = Engine::new(1).unwrap();
    let mut spec = sh("sh -c 'trap \"\" TERM; echo $$ > /dev/stderr; sleep 60' & sleep 60");
    spec.timeout = Some(Duration::from_millis(500));
    let t0 = Instant::now();
    let out = engine.start_plain(spec).unwrap().wait(Some(Duration::from_secs(10))).unwrap();
    assert!(t0.elapsed() < Duration::from_millis(2500), "{:?}", t0.elapsed());
    assert_eq!(out.reason, EndReason::TimedOut);
    let text = String::from_utf8_lossy(&out.output);
    assert!(text.contains("execution time exceeding defined timeout 500ms"), "{text}");
    let grandchild: i32 = text.lines().next().unwrap().trim().parse().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert!(!alive(grandchild), "grandchild {grandchild} survived");
}

#[test]
fn an_escaped_grandchild_holding_the_pipe_does_not_hang_a_finished_job() {
    let engine = Engine::new(1).unwrap();
    let mut spec = sh("setsid sleep 30 & echo started");
    spec.pipe_grace = Duration::from_millis(300);
    let t0 = Instant::now();
    let out = engine.start_plain(spec).unwrap().wait(Some(Duration::from_secs(10))).unwrap();
    assert!(t0.elapsed() < Duration::from_secs(3));
    assert!(out.success());
    assert_eq!(out.output, b"started\n");
}

#[test]
fn memory_limit_kills_the_tree() {
    let engine = Engine::new(1).unwrap();
    // A child (not the leader) grows to ~200 MB.
    let mut spec = sh("python3 -c 'import time; b = bytearray(200 << 20); time.sleep(30)'; echo after");
    spec.mem_limit = Some(50 << 20);
    spec.mem_poll = Duration::from_millis(50);
    let t0 = Instant::now();
    let out = engine.start_plain(spec).unwrap().wait(Some(Duration::from_secs(20))).unwrap();
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert_eq!(out.reason, EndReason::MemoryLimit);
    assert!(out.error.as_deref().unwrap().contains("memory limit of 52428800 bytes"));
    assert!(!String::from_utf8_lossy(&out.output).lines().any(|l| l == "after"));
}

#[test]
fn cancel_kills_the_job() {
    let engine = Engine::new(1).unwrap();
    let handle = engine.start_plain(sh("sleep 30")).unwrap();
    // Cancelled before or after the spawn, the job ends killed.
    handle.cancel();
    let out = handle.wait(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(out.reason, EndReason::Cancelled);
    assert_eq!(out.exit_code, Some(-9));
}

#[test]
fn many_jobs_in_flight_on_one_worker() {
    let engine = Engine::new(1).unwrap();
    let t0 = Instant::now();
    let handles: Vec<_> = (0..200).map(|_| engine.start_plain(JobSpec::new(vec!["sleep".into(), "1".into()])).unwrap()).collect();
    assert!(engine.in_flight() > 100);
    for h in handles {
        assert!(h.wait(Some(Duration::from_secs(30))).unwrap().success());
    }
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    assert_eq!(engine.in_flight(), 0);
}

#[test]
fn shutdown_kills_running_jobs() {
    let engine = Engine::new(1).unwrap();
    let handle = engine.start_plain(sh("sleep 30")).unwrap();
    // The spawn happens on the engine's thread: the pid is known shortly after start returns.
    let deadline = Instant::now() + Duration::from_secs(5);
    let pid = loop {
        if let Some(pid) = handle.pid() {
            break pid as i32;
        }
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    };
    engine.shutdown(Duration::from_secs(2));
    let out = handle.wait(Some(Duration::from_secs(1))).unwrap();
    assert_eq!(out.reason, EndReason::Cancelled);
    assert!(!alive(pid));
}

#[test]
fn env_and_cwd() {
    let engine = Engine::new(1).unwrap();
    let mut spec = sh("echo $FOO; pwd");
    spec.env = vec![("FOO".into(), "bar baz".into())];
    spec.cwd = Some("/tmp".into());
    let out = engine.start_plain(spec).unwrap().wait(None).unwrap();
    assert_eq!(out.output, b"bar baz\n/tmp\n");
}

#[test]
fn run_here_runs_on_the_calling_thread() {
    let engine = Engine::new(1).unwrap();
    let mut spec = sh("echo here; exit 2");
    spec.stdin = Some(b"ignored".to_vec());
    let (out, gave_up) = engine.run_here(spec, Duration::from_millis(10), Default::default(), || false).unwrap();
    assert!(!gave_up);
    assert_eq!(out.output, b"here\nexit status 2\n");
    assert_eq!(engine.in_flight(), 0);
    // The same thread's runtime serves the next run, payload included.
    let mut cat = JobSpec::new(vec!["cat".into()]);
    cat.stdin = Some(b"payload".to_vec());
    let (out, _) = engine.run_here(cat, Duration::from_millis(10), Default::default(), || false).unwrap();
    assert_eq!(out.output, b"payload");
}

#[test]
fn run_here_gives_up_when_asked_and_kills_the_job() {
    let engine = Engine::new(1).unwrap();
    let t0 = Instant::now();
    let mut asked = 0;
    let (out, gave_up) = engine
        .run_here(sh("sleep 30"), Duration::from_millis(20), Default::default(), || {
            asked += 1;
            asked >= 3
        })
        .unwrap();
    assert!(gave_up && t0.elapsed() < Duration::from_secs(5));
    assert_eq!(out.reason, EndReason::Cancelled);
    let pid = out.pid.unwrap() as i32;
    assert!(!alive(pid));
}

#[test]
fn shutdown_from_another_thread_kills_a_run_here() {
    let engine = std::sync::Arc::new(Engine::new(1).unwrap());
    let other = engine.clone();
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        other.shutdown(Duration::from_secs(2));
    });
    let (out, _) = engine.run_here(sh("sleep 30"), Duration::from_millis(50), Default::default(), || false).unwrap();
    stopper.join().unwrap();
    assert_eq!(out.reason, EndReason::Cancelled);
    assert!(engine.run_here(sh("true"), Duration::from_millis(50), Default::default(), || false).is_err());
    assert!(engine.start_plain(sh("true")).is_err());
}

#[test]
fn a_completion_queue_reports_every_job_once() {
    let engine = Engine::new(1).unwrap();
    let queue = std::sync::Arc::new(CompletionQueue::new().unwrap());
    let handles: Vec<_> = (0..20u64)
        .map(|i| engine.start(sh(&format!("sleep 0.0{}", i % 5)), Some((queue.clone(), i))).unwrap())
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
    assert!(handles.iter().all(|h| h.result().is_some()));
    assert!(queue.drain().is_empty());
}

#[test]
fn run_here_is_cancelled_from_another_thread() {
    let engine = Engine::new(1).unwrap();
    let cancel = std::sync::Arc::new(tokio::sync::Notify::new());
    let remote = cancel.clone();
    let canceller = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        remote.notify_one();
    });
    let t0 = Instant::now();
    let (out, gave_up) = engine.run_here(sh("sleep 30"), Duration::from_millis(50), cancel, || false).unwrap();
    canceller.join().unwrap();
    assert!(!gave_up && t0.elapsed() < Duration::from_secs(5));
    assert_eq!(out.reason, EndReason::Cancelled);
}
