//! The `log` step: Dkron's `----- BEGIN OUTPUT ... -----` block on the host's stdout (success) or
//! stderr (failure), one write per block; or, with `"target": "logging"`, a record for the
//! embedding program's logger (Python `logging`, through `Host`).

use std::sync::Arc;

use super::{Processed, Step, StepContext};
use crate::config::{Config, Result};
use crate::execution::Execution;
use crate::sinks::log;

pub const KEYS: [&str; 3] = ["target", "forward", "reporting_node"];
pub const REPLACEMENT: &[u8] = b"Output in dkron log";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Descriptors 1 and 2.
    Stdio,
    /// The embedding program's logger.
    Logging,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    pub target: Target,
}

impl LogConfig {
    pub fn parse(c: &Config<'_>) -> Result<Self> {
        c.only(&KEYS)?;
        let target = match c.get("target") {
            None | Some("stdio") => Target::Stdio,
            Some("logging") => Target::Logging,
            Some(v) => return Err(c.error("target", v, "must be 'stdio' or 'logging'")),
        };
        // Checked here so a bad value fails at load time, though the chain reads it.
        c.bool("forward", false)?;
        Ok(Self { target })
    }
}

/// What the log step needs from the program that embeds the runtime.
pub trait Host: Send + Sync {
    /// Flushes the program's own buffered writes to `fd` (1 or 2), so they come out before the block.
    fn flush_stdio(&self, fd: i32);
    /// The `logging` target: `block` without its last newline, at INFO after a success, ERROR after a failure.
    fn log_record(&self, success: bool, job: &str, key: &str, block: &[u8]);
    /// A problem no execution is left to record (say, at close): a `logging` warning on `logger`.
    fn warning(&self, logger: &str, message: &str) {
        let _ = log::write_fd(2, format!("{logger}: {message}\n").as_bytes());
    }
}

/// A host with no buffers of its own and no logger: records go to stderr.
pub struct PlainHost;

impl Host for PlainHost {
    fn flush_stdio(&self, _fd: i32) {}

    fn log_record(&self, _success: bool, _job: &str, _key: &str, block: &[u8]) {
        let _ = log::write_fd(2, block);
    }
}

pub struct LogStep {
    config: LogConfig,
    host: Arc<dyn Host>,
}

impl LogStep {
    pub fn new(config: LogConfig, host: Arc<dyn Host>) -> Self {
        Self { config, host }
    }
}

impl Step for LogStep {
    fn process(&self, e: &Execution, _ctx: &StepContext<'_>) -> std::result::Result<Processed, String> {
        let block = log::block(&e.job_name, &e.key, &e.output);
        match self.config.target {
            Target::Logging => self.host.log_record(e.success, &e.job_name, &e.key, &block[..block.len() - 1]),
            Target::Stdio => {
                let fd = if e.success { 1 } else { 2 };
                self.host.flush_stdio(fd);
                log::write_fd(fd, &block).map_err(|err| format!("cannot write to file descriptor {fd}: {err}"))?;
            }
        }
        Ok(Processed::Sunk { replacement: REPLACEMENT.to_vec() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<(bool, Vec<u8>)>>);

    impl Host for Recorder {
        fn flush_stdio(&self, _fd: i32) {}
        fn log_record(&self, success: bool, _job: &str, _key: &str, block: &[u8]) {
            self.0.lock().unwrap().push((success, block.to_vec()));
        }
    }

    fn parse(pairs: &[(&str, &str)]) -> Result<LogConfig> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        LogConfig::parse(&Config::new(&map, "processors.log"))
    }

    #[test]
    fn config() {
        assert_eq!(parse(&[]).unwrap().target, Target::Stdio);
        assert_eq!(parse(&[("target", "logging"), ("forward", "true")]).unwrap().target, Target::Logging);
        assert_eq!(parse(&[("target", "file")]).unwrap_err().field, "processors.log.target");
        assert_eq!(parse(&[("forward", "maybe")]).unwrap_err().field, "processors.log.forward");
    }

    #[test]
    fn the_logging_target_gets_the_block_without_its_last_newline() {
        let host = Arc::new(Recorder::default());
        let step = LogStep::new(parse(&[("target", "logging")]).unwrap(), host.clone());
        let e = Execution { job_name: "j".into(), key: "k".into(), output: b"out".to_vec(), success: false, ..Default::default() };
        let done = step.process(&e, &StepContext::new("n")).unwrap();
        assert!(matches!(done, Processed::Sunk { ref replacement } if replacement == REPLACEMENT));
        let records = host.0.lock().unwrap();
        assert_eq!(records[0], (false, b"----- BEGIN OUTPUT job=j execution=k -----\nout\n----- END OUTPUT -----".to_vec()));
    }
}
