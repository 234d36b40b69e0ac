//! `Runtime::process`: an execution through a job's chain of built-in steps, in the listed order,
//! with nothing run or stored; the log step's `logging` target reaches the embedding program's
//! logger through `log::Host`.

mod common;

use std::sync::{Arc, Mutex};

use common::{map, settings};
use dkron_exec_core::chain::log;
use dkron_exec_core::execution::Execution;
use dkron_exec_core::plan::JobPlan;
use dkron_exec_core::plugin::host::HostConfig;
use dkron_exec_core::run::Runtime;

/// A logger that keeps its records: (success, job, key, block).
#[derive(Default)]
struct Logger(Mutex<Vec<(bool, String, String, String)>>);

impl log::Host for Logger {
    fn flush_stdio(&self, _fd: i32) {}

    fn log_record(&self, success: bool, job: &str, key: &str, block: &[u8]) {
        let block = String::from_utf8_lossy(block).into_owned();
        self.0.lock().unwrap().push((success, job.into(), key.into(), block));
    }
}

fn runtime_logging_to(logger: Arc<Logger>) -> Runtime {
    Runtime::new(settings(), 1, HostConfig::default(), None, logger).unwrap()
}

/// A job whose chain is files (into `log_dir`, forwarding or not) then log (to the logger).
fn files_then_log(log_dir: &str, files_forward: &str) -> JobPlan {
    let steps = vec![
        ("files".to_string(), map(&[("log_dir", log_dir), ("forward", files_forward)])),
        ("log".to_string(), map(&[("target", "logging")])),
    ];
    JobPlan::parse("chained", "shell", &map(&[("command", "true")]), &steps, 0, false).unwrap()
}

fn execution(success: bool) -> Execution {
    Execution {
        job_name: "chained".into(),
        key: "17-node-1".into(),
        started_ns: 17,
        finished_ns: Some(18),
        success,
        output: b"hello\n".to_vec(),
        node_name: "node-1".into(),
        attempt: 1,
        ..Default::default()
    }
}

#[test]
fn files_then_log_each_see_what_the_step_before_left() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_str().unwrap();
    let logger = Arc::new(Logger::default());
    let rt = runtime_logging_to(logger.clone());
    let file = tmp.path().join("17-node-1.log");

    // files forwards: log gets the job's output.
    let out = rt.process(&files_then_log(dir, "true"), execution(true));
    assert_eq!(std::fs::read(&file).unwrap(), b"hello\n");
    assert_eq!(out.output, b"Output in dkron log");
    assert!(out.processor_errors.is_empty(), "{:?}", out.processor_errors);
    let begin = "----- BEGIN OUTPUT job=chained execution=17-node-1 -----";
    let records = std::mem::take(&mut *logger.0.lock().unwrap());
    assert_eq!(records, [(true, "chained".into(), "17-node-1".into(), format!("{begin}\nhello\n\n----- END OUTPUT -----"))]);

    // files does not forward: log gets the file's path, and a failure is logged as one.
    std::fs::remove_file(&file).unwrap();
    let out = rt.process(&files_then_log(dir, "false"), execution(false));
    assert_eq!(std::fs::read(&file).unwrap(), b"hello\n");
    assert_eq!(out.output, b"Output in dkron log");
    let records = std::mem::take(&mut *logger.0.lock().unwrap());
    let expected = format!("{begin}\n{}\n----- END OUTPUT -----", file.display());
    assert_eq!(records, [(false, "chained".into(), "17-node-1".into(), expected)]);
}

#[test]
fn a_failing_step_is_recorded_and_the_next_step_gets_the_execution_as_it_was() {
    let tmp = tempfile::tempdir().unwrap();
    // The log_dir is taken by a regular file when the chain runs: files fails at run time.
    let blocked = tmp.path().join("blocked");
    let logger = Arc::new(Logger::default());
    let rt = runtime_logging_to(logger.clone());
    let plan = files_then_log(blocked.to_str().unwrap(), "false");
    std::fs::write(&blocked, b"not a directory").unwrap();
    let out = rt.process(&plan, execution(true));
    assert_eq!(out.processor_errors.len(), 1, "{:?}", out.processor_errors);
    assert!(out.processor_errors[0].starts_with("files: "), "{:?}", out.processor_errors);
    let records = logger.0.lock().unwrap();
    assert!(records[0].3.contains("\nhello\n\n"), "log saw the output, not a path: {:?}", records[0].3);
    assert_eq!(out.output, b"Output in dkron log");
}
