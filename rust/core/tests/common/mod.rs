//! What the run-pipeline tests share: a `Runtime` with plain settings, shell plans, a recorder
//! that keeps what it is given, and a look at whether a process is still there.

#![allow(dead_code)] // each test file uses its own part of this module

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dkron_exec_core::chain::log::PlainHost;
use dkron_exec_core::execution::Execution;
use dkron_exec_core::plan::JobPlan;
use dkron_exec_core::plugin::host::HostConfig;
use dkron_exec_core::run::{Recorder, Runtime, Settings};

pub const NODE: &str = "node-1";

/// How often `run_here` asks whether its caller gives up.
pub const POLL: Duration = Duration::from_millis(20);

pub fn settings() -> Settings {
    Settings {
        node_name: NODE.into(),
        output_limit: 256_000,
        pipe_grace: Duration::from_secs(1),
        spool_dir: None,
        retry_backoff: Duration::from_millis(10),
        plugin_timeout: Some(Duration::from_secs(10)),
        cgroups: true,
    }
}

pub fn runtime_with(settings: Settings, recorder: Option<Arc<dyn Recorder>>) -> Arc<Runtime> {
    Arc::new(Runtime::new(settings, 1, HostConfig::default(), recorder, Arc::new(PlainHost)).unwrap())
}

pub fn runtime() -> Arc<Runtime> {
    runtime_with(settings(), None)
}

/// Keeps every execution the runtime records, in order.
#[derive(Default)]
pub struct Collect(pub Mutex<Vec<Execution>>);

impl Recorder for Collect {
    fn record(&self, execution: &Execution) -> Result<(), String> {
        self.0.lock().unwrap().push(execution.clone());
        Ok(())
    }
}

impl Collect {
    pub fn taken(&self) -> Vec<Execution> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

pub fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// A job running `script` with `/bin/sh -c`, with more `executor_config` keys.
pub fn sh_plan_with(name: &str, script: &str, config: &[(&str, &str)]) -> Arc<JobPlan> {
    let mut executor_config = map(config);
    executor_config.insert("command".into(), script.into());
    executor_config.insert("shell".into(), "true".into());
    Arc::new(JobPlan::parse(name, "shell", &executor_config, &[], 0, false).unwrap())
}

pub fn sh_plan(name: &str, script: &str) -> Arc<JobPlan> {
    sh_plan_with(name, script, &[])
}

/// Runs the plan to its end on this thread; nobody gives up.
pub fn run_here(rt: &Arc<Runtime>, plan: &Arc<JobPlan>) -> Execution {
    let control = rt.claim(plan).unwrap();
    let (execution, gave_up) = rt.run_here(plan, control, None, POLL, || false).unwrap();
    assert!(!gave_up);
    execution
}

/// True while the process exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s[s.rfind(')').unwrap() + 2..].starts_with('Z'),
        Err(_) => false,
    }
}

/// Waits up to `timeout` for the processes to end; returns those still alive.
pub fn wait_gone(pids: &[i32], timeout: Duration) -> Vec<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        let alive: Vec<i32> = pids.iter().copied().filter(|p| alive(*p)).collect();
        if alive.is_empty() || Instant::now() > deadline {
            return alive;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The pids a job wrote to `path`, one a line, once there are `count` of them.
pub fn read_pids(path: &Path, count: usize) -> Vec<i32> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let pids: Vec<i32> = text.split_whitespace().filter_map(|p| p.parse().ok()).collect();
        if pids.len() >= count {
            return pids;
        }
        assert!(Instant::now() < deadline, "{count} pids never reached {}", path.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The start of a test plugin in python3 (standard library only): the channel on the inherited
/// fd, `send(header, body)` and `recv() -> (header, body)` over docs/PROTOCOL.md's frames.
pub const PLUGIN_PRELUDE: &str = r#"#!/usr/bin/env python3
import json, os, socket, struct, sys, threading, time
sock = socket.socket(fileno=int(os.environ["DKRON_EXEC_PLUGIN_FD"]))
rf = sock.makefile("rb")
lock = threading.Lock()
def send(h, body=b""):
    hb = json.dumps(h).encode()
    with lock:
        sock.sendall(struct.pack(">II", 4 + len(hb) + len(body), len(hb)) + hb + body)
def recv():
    p = rf.read(4)
    if len(p) < 4: sys.exit(0)
    (n,) = struct.unpack(">I", p)
    data = rf.read(n)
    (hl,) = struct.unpack(">I", data[:4])
    return json.loads(data[4:4 + hl]), data[4 + hl:]
"#;
