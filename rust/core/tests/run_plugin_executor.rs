//! A `dkron-executor-NAME` plugin as a job's executor, through `run::Runtime`: its streamed output
//! goes to the caller and into the execution, its answer ends the run, and the runtime's timeout
//! and cancel reach it. The plugin is a small python3 script (standard library only) speaking
//! docs/PROTOCOL.md.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{map, run_here, runtime, NODE, PLUGIN_PRELUDE, POLL};
use dkron_exec_core::plan::JobPlan;
use dkron_exec_core::plugin::Kind;
use dkron_exec_core::run::{OutputFn, Runtime};

/// Streams `line 0..2` (line 1 on stderr) and `payload: ...` when there is one, then answers
/// with `done` and the config's `error` / `exit_code`; with `wait` in its config it waits for
/// the host's cancel instead.
const LINES_PLUGIN: &str = r#"
cancels = {}

def execute(header, payload):
    call, config = header["id"], header["config"]
    for i in range(3):
        send({"type": "output", "id": call, "stream": "stderr" if i == 1 else "stdout"}, b"line %d\n" % i)
    if payload:
        send({"type": "output", "id": call, "stream": "stdout"}, b"payload: " + payload + b"\n")
    if config.get("wait"):
        cancels.setdefault(call, threading.Event()).wait(3600)
        send({"type": "error", "id": call, "message": "cancelled"})
        return
    answer = {"type": "result", "id": call, "error": config.get("error", ""), "exit_code": int(config.get("exit_code", "0"))}
    send(answer, b"done\n")

send({"type": "hello", "protocol": 1, "plugin_type": "executor", "name": "lines", "max_in_flight": 8})
while True:
    header, body = recv()
    if header["type"] == "execute":
        threading.Thread(target=execute, args=(header, body), daemon=True).start()
    elif header["type"] == "cancel":
        cancels.setdefault(header["id"], threading.Event()).set()
    elif header["type"] == "shutdown":
        sys.exit(0)
"#;

fn write_plugin(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("dkron-executor-lines");
    std::fs::write(&path, format!("{PLUGIN_PRELUDE}{LINES_PLUGIN}")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A runtime that knows the `lines` executor plugin.
fn runtime_with_lines(dir: &Path) -> Arc<Runtime> {
    let rt = runtime();
    rt.register_plugin(Kind::Executor, "lines", write_plugin(dir)).unwrap();
    rt
}

fn lines_plan(job: &str, config: &[(&str, &str)]) -> Arc<JobPlan> {
    Arc::new(JobPlan::parse(job, "lines", &map(config), &[], 0, false).unwrap())
}

type Chunks = Arc<Mutex<Vec<(bool, Vec<u8>)>>>;

fn collecting() -> (Chunks, Arc<OutputFn>) {
    let chunks = Chunks::default();
    let sink = chunks.clone();
    (chunks, Arc::new(move |stderr: bool, data: &[u8]| sink.lock().unwrap().push((stderr, data.to_vec()))))
}

#[test]
fn the_output_streams_to_the_caller_and_into_the_execution() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime_with_lines(dir.path());
    let plan = lines_plan("streamed", &[("payload", "hi")]);
    let (chunks, on_output) = collecting();
    let (e, _) = rt.run_here(&plan, rt.claim(&plan).unwrap(), Some(on_output), POLL, || false).unwrap();
    assert!(e.success, "{:?}", e.error);
    assert_eq!(e.output, b"line 0\nline 1\nline 2\npayload: hi\ndone\n");
    assert_eq!((e.exit_code, e.attempt, e.output_size), (Some(0), 1, e.output.len() as u64));
    assert_eq!(e.key, format!("{}-{NODE}", e.started_ns));
    let chunks = chunks.lock().unwrap();
    let expected: [(bool, &[u8]); 5] =
        [(false, b"line 0\n"), (true, b"line 1\n"), (false, b"line 2\n"), (false, b"payload: hi\n"), (false, b"done\n")];
    assert_eq!(*chunks, expected.map(|(stderr, data)| (stderr, data.to_vec())));
    // One plugin process serves the next run.
    let pid = rt.plugins().unwrap().pid(Kind::Executor, "lines");
    assert!(run_here(&rt, &lines_plan("streamed", &[])).success);
    assert_eq!(rt.plugins().unwrap().pid(Kind::Executor, "lines"), pid);
}

#[test]
fn the_answers_error_fails_the_run_and_ends_the_output() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime_with_lines(dir.path());
    let e = run_here(&rt, &lines_plan("failed", &[("error", "boom"), ("exit_code", "3")]));
    assert!(!e.success);
    assert_eq!((e.error.as_deref(), e.exit_code), (Some("boom"), Some(3)));
    assert_eq!(e.output, b"line 0\nline 1\nline 2\ndone\nboom\n");
}

#[test]
fn a_non_zero_exit_code_without_an_error_fails_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime_with_lines(dir.path());
    let e = run_here(&rt, &lines_plan("failed", &[("exit_code", "3")]));
    assert!(!e.success);
    assert_eq!((e.error.as_deref(), e.exit_code), (Some("exit status 3"), Some(3)));
    assert_eq!(e.output, b"line 0\nline 1\nline 2\ndone\nexit status 3\n");
}

#[test]
fn the_timeout_in_the_executor_config_cancels_the_call() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime_with_lines(dir.path());
    // The host's clock starts with the call, start-up included: start the plugin first.
    assert!(run_here(&rt, &lines_plan("warm-up", &[])).success);
    let t0 = Instant::now();
    let e = run_here(&rt, &lines_plan("slow", &[("wait", "true"), ("timeout", "300ms")]));
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    assert!(!e.success);
    let error = e.error.unwrap();
    assert_eq!(error, "plugin executor 'lines': Job 'slow' execution time exceeding defined timeout 300ms. Job was cancelled");
    assert!(e.output.starts_with(b"line 0\n"), "{:?}", String::from_utf8_lossy(&e.output));
    assert!(e.output.ends_with(format!("{error}\n").as_bytes()));
}

#[test]
fn runtime_cancel_reaches_a_plugin_run_from_another_thread() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime_with_lines(dir.path());
    let (chunks, on_output) = collecting();
    let (remote, streamed) = (rt.clone(), chunks.clone());
    // Cancelled once the call streams: the plugin is waiting for the cancel by then.
    let canceller = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        while streamed.lock().unwrap().len() < 3 {
            assert!(Instant::now() < deadline, "the run never streamed");
            std::thread::sleep(Duration::from_millis(10));
        }
        remote.cancel("waiting")
    });
    let plan = lines_plan("waiting", &[("wait", "true")]);
    let t0 = Instant::now();
    let (e, gave_up) = rt.run_here(&plan, rt.claim(&plan).unwrap(), Some(on_output), POLL, || false).unwrap();
    assert_eq!(canceller.join().unwrap(), 1);
    assert!(!gave_up && t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert!(!e.success);
    assert_eq!(e.error.as_deref(), Some("plugin executor 'lines': Job 'waiting' was cancelled. Job was killed"));
    assert_eq!(e.output, b"line 0\nline 1\nline 2\nplugin executor 'lines': Job 'waiting' was cancelled. Job was killed\n");
    assert_eq!(rt.cancel("waiting"), 0);
}

#[test]
fn an_executor_nobody_provides_is_a_recorded_failure() {
    let rt = runtime();
    let e = run_here(&rt, &lines_plan("orphan", &[]));
    assert!(!e.success && e.exit_code.is_none());
    let error = e.error.unwrap();
    assert!(error.contains("no dkron-executor-lines plugin is installed"), "{error}");
    assert_eq!(e.output, format!("{error}\n").into_bytes());
}
