//! `job::spawn` and `job::supervise` on their own, driven by the engine on the calling thread:
//! what the shell executor's config cannot say yet (stdin payload, environment), process groups
//! and pipes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dkron_exec_core::engine::{Engine, Notify};
use dkron_exec_core::job::{self, unix_nanos, EndReason, JobSpec, Outcome};

fn sh(script: &str) -> JobSpec {
    let mut spec = JobSpec::new(vec!["/bin/sh".into(), "-c".into(), script.into()]);
    spec.label = script.into();
    spec
}

/// Spawns and supervises the job to its end on this thread (as a run of the shell executor does).
fn run(engine: &Engine, spec: JobSpec) -> Outcome {
    let supervised = async move {
        let started_ns = unix_nanos();
        match job::spawn(&spec) {
            Err(err) => job::spawn_failure(&spec, &err, started_ns),
            Ok(started) => job::supervise(started, spec, started_ns, Arc::new(Notify::new()), Arc::new(Notify::new())).await,
        }
    };
    engine.block_on_here(supervised, Duration::from_millis(50), || false, || {}).unwrap().0
}

#[test]
fn stdin_payload_larger_than_a_pipe_does_not_deadlock() {
    let engine = Engine::new(1).unwrap();
    let payload: Vec<u8> = (0..(1 << 20)).map(|i| (i % 251) as u8).collect();
    let mut spec = JobSpec::new(vec!["cat".into()]);
    spec.stdin = Some(payload.clone());
    spec.output_limit = 2 << 20;
    let out = run(&engine, spec);
    assert_eq!(out.output, payload);
    assert!(out.success());
}

#[test]
fn a_payload_the_job_never_reads_is_dropped() {
    let engine = Engine::new(1).unwrap();
    let mut spec = sh("echo here; exit 2");
    spec.stdin = Some(vec![b'x'; 1 << 20]);
    let out = run(&engine, spec);
    assert_eq!(out.output, b"here\nexit status 2\n");
    // The same thread's runtime serves the next job, payload included.
    let mut cat = JobSpec::new(vec!["cat".into()]);
    cat.stdin = Some(b"payload".to_vec());
    assert_eq!(run(&engine, cat).output, b"payload");
    assert_eq!(engine.in_flight(), 0);
}

#[test]
fn env_and_cwd() {
    let engine = Engine::new(1).unwrap();
    let mut spec = sh("echo $FOO; pwd");
    spec.env = vec![("FOO".into(), "bar baz".into())];
    spec.cwd = Some("/tmp".into());
    assert_eq!(run(&engine, spec).output, b"bar baz\n/tmp\n");
}

#[test]
fn the_job_leads_a_process_group_of_its_own() {
    let engine = Engine::new(1).unwrap();
    // $$ is the leader; ps reports its process group; the child of the leader is in it too.
    let out = run(&engine, sh("echo $$; ps -o pgid= -p $$; sh -c 'ps -o pgid= -p $$'"));
    let text = String::from_utf8_lossy(&out.output);
    let numbers: Vec<i32> = text.split_whitespace().map(|n| n.parse().unwrap()).collect();
    assert_eq!(numbers.len(), 3, "{text}");
    assert_eq!(numbers[1], numbers[0], "the leader's group is its own pid");
    assert_eq!(numbers[2], numbers[0], "its children stay in its group");
    assert_eq!(out.pid, Some(numbers[0] as u32));
}

#[test]
fn an_escaped_grandchild_costs_only_the_pipe_grace() {
    let engine = Engine::new(1).unwrap();
    let mut spec = sh("setsid sleep 30 & echo started");
    spec.pipe_grace = Duration::from_millis(300);
    let t0 = Instant::now();
    let out = run(&engine, spec);
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(3), "{took:?}");
    assert!(out.success());
    assert_eq!(out.output, b"started\n");
}

#[test]
fn the_kill_reaches_a_grandchild_that_ignores_sigterm() {
    let engine = Engine::new(1).unwrap();
    let mut spec = sh("sh -c 'trap \"\" TERM; echo $$ > /dev/stderr; sleep 60' & sleep 60");
    spec.timeout = Some(Duration::from_millis(500));
    let t0 = Instant::now();
    let out = run(&engine, spec);
    assert!(t0.elapsed() < Duration::from_millis(2500), "{:?}", t0.elapsed());
    assert_eq!(out.reason, EndReason::TimedOut);
    let text = String::from_utf8_lossy(&out.output);
    assert!(text.contains("execution time exceeding defined timeout 500ms"), "{text}");
    let grandchild: i32 = text.lines().next().unwrap().trim().parse().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let stat = std::fs::read_to_string(format!("/proc/{grandchild}/stat")).unwrap_or_default();
    assert!(stat.is_empty() || stat[stat.rfind(')').unwrap() + 2..].starts_with('Z'), "grandchild {grandchild} survived");
}
