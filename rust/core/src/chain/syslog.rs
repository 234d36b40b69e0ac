//! The `syslog` step: the execution to a syslog daemon through `sinks::syslog` (see
//! docs/syslog-processor.md for the keys). Jobs with the same destination config share one sink,
//! and so one connection, per runtime (`Sinks`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{Processed, Step, StepContext};
use crate::execution::Execution;
use crate::sinks::syslog::{ExecutionMessage, SyslogConfig, SyslogSink};

pub const REPLACEMENT: &[u8] = b"Output in syslog";

/// One sink per distinct destination config, kept for the runtime's life.
#[derive(Default)]
pub struct Sinks {
    by_config: Mutex<HashMap<SyslogConfig, Arc<SyslogSink>>>,
}

impl Sinks {
    pub fn get(&self, config: &SyslogConfig) -> Arc<SyslogSink> {
        let mut sinks = self.by_config.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sink) = sinks.get(config) {
            return sink.clone();
        }
        sinks.entry(config.clone()).or_insert_with(|| Arc::new(SyslogSink::new(config.clone()))).clone()
    }

    /// Closes every connection (a later send opens a new one), after trying to deliver the
    /// RELP messages still waiting; returns what could not be, one line per destination.
    pub fn close(&self) -> Vec<String> {
        let sinks: Vec<Arc<SyslogSink>> = self.by_config.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        sinks.iter().filter_map(|sink| sink.close()).map(|report| format!("syslog: {report}")).collect()
    }
}

pub struct SyslogStep {
    sink: Arc<SyslogSink>,
}

impl SyslogStep {
    pub fn new(sink: Arc<SyslogSink>) -> Self {
        Self { sink }
    }
}

impl Step for SyslogStep {
    fn process(&self, e: &Execution, _ctx: &StepContext<'_>) -> std::result::Result<Processed, String> {
        let message = ExecutionMessage {
            job_name: &e.job_name,
            key: &e.key,
            success: e.success,
            exit_code: e.exit_code,
            output: &e.output,
            timestamp_ns: e.finished_ns.unwrap_or(e.started_ns),
        };
        self.sink.send(&message).map_err(|err| err.to_string())?;
        Ok(Processed::Sunk { replacement: REPLACEMENT.to_vec() })
    }
}
