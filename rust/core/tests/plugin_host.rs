//! The plugin host against real plugin processes: small python3 scripts (standard library only)
//! that speak docs/PROTOCOL.md, each misbehaving in its own way.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::PLUGIN_PRELUDE as PRELUDE;
use dkron_exec_core::execution::{make_key, Execution};
use dkron_exec_core::plugin::host::{HostConfig, PluginHost};
use dkron_exec_core::plugin::{FailureKind, Kind};


const ECHO: &str = r#"
assert os.environ["DKRON_PLUGIN_MAGIC_COOKIE"].startswith("b29a7648")
send({"type": "hello", "protocol": 1, "plugin_type": KIND, "name": "t", "max_in_flight": 64})
cancels = {}
def handle(h, body):
    if h["type"] == "process":
        if body == b"crash": os._exit(3)
        if body == b"hang": time.sleep(3600)
        if body == b"garbage":
            with lock: sock.sendall(b"\x00\x00\x00\x0cnot a frame!")
            return
        if body == b"fail":
            send({"type": "error", "id": h["id"], "message": "no thanks"}); return
        if body.startswith(b"sleep"): time.sleep(float(body[5:].split(b"-")[0]))
        if body == b"merge":
            e = h["execution"]
            changed = {"success": False, "error": json.dumps(h["config"], sort_keys=True), "attempt": e["attempt"] + 1}
            send({"type": "result", "id": h["id"], "execution": changed}, b"merged"); return
        print("noise on stdout", flush=True)
        send({"type": "result", "id": h["id"], "execution": h["execution"]}, body.upper())
    elif h["type"] == "execute":
        for i in range(3):
            send({"type": "output", "id": h["id"], "stream": "stdout"}, b"line %d\n" % i)
        if h["job_name"] == "slow":
            cancels.setdefault(h["id"], threading.Event()).wait(3600)
            send({"type": "error", "id": h["id"], "message": "cancelled"})
            return
        send({"type": "result", "id": h["id"], "error": h["config"].get("error", "")}, b"done\n")
while True:
    h, body = recv()
    if h["type"] in ("process", "execute"):
        threading.Thread(target=handle, args=(h, body), daemon=True).start()
    elif h["type"] == "cancel":
        cancels.setdefault(h["id"], threading.Event()).set()
    elif h["type"] == "shutdown":
        sys.exit(0)
"#;

fn write_plugin(dir: &Path, name: &str, kind: &str, code: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(format!("dkron-{kind}-{name}"));
    std::fs::write(&path, format!("{PRELUDE}KIND = {kind:?}\n{code}")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn host() -> PluginHost {
    let config = HostConfig {
        start_timeout: Duration::from_secs(5),
        cancel_grace: Duration::from_millis(200),
        stop_grace: Duration::from_millis(500),
        ..HostConfig::default()
    };
    PluginHost::new(config).unwrap()
}

fn execution(output: &[u8]) -> Execution {
    let started_ns = 1_717_000_000_123_456_000;
    Execution {
        job_name: "j".into(),
        key: make_key(started_ns, "n1"),
        started_ns,
        finished_ns: Some(started_ns + 1_000_000_000),
        success: true,
        output: output.to_vec(),
        node_name: "n1".into(),
        group: 1 << 60,
        attempt: 1,
        exit_code: Some(0),
        ..Execution::default()
    }
}

fn process(h: &PluginHost, name: &str, body: &[u8], timeout: Option<Duration>) -> Result<Vec<u8>, (FailureKind, String)> {
    let config = HashMap::from([("reporting_node".to_string(), "n1".to_string())]);
    h.process(name, &execution(body), &config, timeout).map(|e| e.output).map_err(|e| (e.kind, e.message))
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        let state = s[s.rfind(')').unwrap() + 2..].chars().next();
        state != Some('Z')
    })
}

#[test]
fn round_trips_and_reuses_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let h = host();
    h.register(Kind::Processor, "echo", write_plugin(dir.path(), "echo", "processor", ECHO));
    assert_eq!(process(&h, "echo", b"hello", None).unwrap(), b"HELLO");
    let pid = h.pid(Kind::Processor, "echo").unwrap();
    assert_eq!(process(&h, "echo", b"again", None).unwrap(), b"AGAIN");
    assert_eq!(h.pid(Kind::Processor, "echo"), Some(pid));
    // stdout noise reaches the log queue, not the RPC channel.
    // Lines arrive from a thread of their own, not necessarily in one batch: gather for a while.
    let mut lines = Vec::new();
    let until = std::time::Instant::now() + Duration::from_secs(20);
    while !lines.iter().any(|l: &dkron_exec_core::plugin::logs::LogLine| l.stream == "stdout" && l.line == "noise on stdout")
        && std::time::Instant::now() < until
    {
        lines.extend(h.logs().drain(Duration::from_millis(200)).unwrap_or_default());
    }
    assert!(lines.iter().any(|l| l.stream == "stdout" && l.line == "noise on stdout"), "{lines:?}");
    let err = process(&h, "echo", b"fail", None).unwrap_err();
    assert_eq!(err.0, FailureKind::Remote);
    assert!(err.1.contains("'echo'") && err.1.ends_with("no thanks"), "{}", err.1);
    h.close(Duration::from_secs(1));
    assert!(!alive(pid));
}

#[test]
fn the_answer_is_merged_into_a_copy_of_the_execution() {
    let dir = tempfile::tempdir().unwrap();
    let h = host();
    h.register(Kind::Processor, "echo", write_plugin(dir.path(), "echo", "processor", ECHO));
    let before = execution(b"merge");
    let config = HashMap::from([("forward".to_string(), "true".to_string()), ("reporting_node".to_string(), "n1".to_string())]);
    let after = h.process("echo", &before, &config, None).unwrap();
    assert_eq!(after.output, b"merged");
    assert!(!after.success);
    assert_eq!(after.attempt, 2);
    assert_eq!(after.error.as_deref(), Some(r#"{"forward": "true", "reporting_node": "n1"}"#));
    // Fields the plugin left out keep their value.
    assert_eq!(Execution { output: before.output.clone(), success: true, attempt: 1, error: None, ..after.clone() }, before);
    // An echo of every field is the same execution.
    assert_eq!(h.process("echo", &execution(b"x"), &config, None).unwrap(), execution(b"X"));
}

#[test]
fn many_callers_get_their_own_answers() {
    let dir = tempfile::tempdir().unwrap();
    let h = Arc::new(host());
    h.register(Kind::Processor, "echo", write_plugin(dir.path(), "echo", "processor", ECHO));
    let threads: Vec<_> = (0..6)
        .map(|t| {
            let h = h.clone();
            std::thread::spawn(move || {
                for i in 0..150 {
                    // Some answers come late, so callers take turns reading for each other.
                    let body = if i % 50 == t { format!("sleep0.02-{t}-{i}") } else { format!("call-{t}-{i}") };
                    assert_eq!(process(&h, "echo", body.as_bytes(), None).unwrap(), body.to_uppercase().as_bytes());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn calls_run_concurrently_in_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let h = Arc::new(host());
    h.register(Kind::Processor, "echo", write_plugin(dir.path(), "echo", "processor", ECHO));
    process(&h, "echo", b"warm", None).unwrap();
    let started = Instant::now();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let h = h.clone();
            std::thread::spawn(move || process(&h, "echo", b"sleep0.5", None).unwrap())
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), b"SLEEP0.5");
    }
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
}

#[test]
fn a_crash_fails_the_call_and_the_next_call_restarts_the_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let h = host();
    h.register(Kind::Processor, "echo", write_plugin(dir.path(), "echo", "processor", ECHO));
    process(&h, "echo", b"x", None).unwrap();
    let first = h.pid(Kind::Processor, "echo").unwrap();
    let err = process(&h, "echo", b"crash", None).unwrap_err();
    assert_eq!(err.0, FailureKind::Crashed, "{}", err.1);
    assert!(err.1.contains("exit status 3") || err.1.contains("closed the RPC channel"), "{}", err.1);
    assert_eq!(process(&h, "echo", b"y", None).unwrap(), b"Y");
    assert_ne!(h.pid(Kind::Processor, "echo").unwrap(), first);
}

#[test]
fn a_hang_times_out_and_the_plugin_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let h = host();
    h.register(Kind::Processor, "echo", write_plugin(dir.path(), "echo", "processor", ECHO));
    process(&h, "echo", b"x", None).unwrap();
    let pid = h.pid(Kind::Processor, "echo").unwrap();
    let started = Instant::now();
    let err = process(&h, "echo", b"hang", Some(Duration::from_millis(300))).unwrap_err();
    assert_eq!(err.0, FailureKind::Timeout);
    assert!(started.elapsed() < Duration::from_secs(2));
    // The cancel is not answered within the grace: the plugin counts as hung and is killed.
    let deadline = Instant::now() + Duration::from_secs(3);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!alive(pid));
    assert_eq!(process(&h, "echo", b"z", None).unwrap(), b"Z");
}

#[test]
fn garbage_on_the_channel_is_a_protocol_error() {
    let dir = tempfile::tempdir().unwrap();
    let h = host();
    h.register(Kind::Processor, "echo", write_plugin(dir.path(), "echo", "processor", ECHO));
    let err = process(&h, "echo", b"garbage", None).unwrap_err();
    assert_eq!(err.0, FailureKind::Protocol);
    assert!(err.1.contains("malformed frame") && err.1.contains("dkron-processor-echo"), "{}", err.1);
}

#[test]
fn handshake_failures_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let h = host();
    let cases = [
        ("early", "sys.stderr.write('This binary is a plugin\\n'); sys.exit(1)\n", "exited before the handshake"),
        ("version", "send({'type': 'hello', 'protocol': 9, 'plugin_type': KIND})\ntime.sleep(60)\n", "protocol version 9"),
        ("kind", "send({'type': 'hello', 'protocol': 1, 'plugin_type': 'executor'})\ntime.sleep(60)\n", "expected \"processor\""),
        ("silent", "time.sleep(60)\n", "did not complete the handshake"),
    ];
    let h = {
        drop(h);
        PluginHost::new(HostConfig { start_timeout: Duration::from_millis(800), ..HostConfig::default() }).unwrap()
    };
    for (name, code, expect) in cases {
        h.register(Kind::Processor, name, write_plugin(dir.path(), name, "processor", code));
        let err = process(&h, name, b"x", None).unwrap_err();
        assert!(err.1.contains(expect) && err.1.contains(name), "{name}: {}", err.1);
        if name == "early" {
            assert!(err.1.contains("This binary is a plugin"), "{}", err.1);
        }
    }
}
