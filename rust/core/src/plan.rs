//! A job's plan: its executor and its chain of processors, every config parsed once, when the
//! job is loaded. Building the plan *is* validating the job's configs; what runs is what was
//! parsed here.

use std::collections::HashMap;

use crate::chain::files::FilesConfig;
use crate::chain::log::LogConfig;
use crate::config::{key_path, Config, ConfigError, Result};
use crate::executors::ExecutorPlan;
use crate::sinks::syslog::SyslogConfig;

/// The processors dkron_exec runs itself; any other name is a `dkron-processor-NAME` plugin.
pub const BUILTIN_PROCESSORS: [&str; 3] = ["files", "log", "syslog"];

#[derive(Debug, Clone)]
pub enum StepKind {
    Files(FilesConfig),
    Log(LogConfig),
    Syslog(SyslogConfig),
    /// A plugin gets its config as the job wrote it, plus `reporting_node`.
    Plugin(HashMap<String, String>),
}

#[derive(Debug, Clone)]
pub struct StepPlan {
    pub name: String,
    /// `forward` of a built-in (false by default, as in Dkron); a plugin decides for itself.
    pub forward: bool,
    pub kind: StepKind,
}

#[derive(Debug, Clone)]
pub struct JobPlan {
    pub name: String,
    pub executor: ExecutorPlan,
    pub steps: Vec<StepPlan>,
    pub retries: u32,
    /// `concurrency: forbid`.
    pub forbid: bool,
}

impl JobPlan {
    pub fn parse(
        name: &str,
        executor: &str,
        executor_config: &HashMap<String, String>,
        processors: &[(String, HashMap<String, String>)],
        retries: u32,
        forbid: bool,
    ) -> Result<Self> {
        check_plugin_name("executor", executor)?;
        let executor = ExecutorPlan::parse(executor, &Config::new(executor_config, "executor_config"))?;
        let steps = processors.iter().map(|(name, map)| StepPlan::parse(name, map)).collect::<Result<_>>()?;
        Ok(Self { name: name.to_string(), executor, steps, retries, forbid })
    }

    pub fn needs_plugins(&self) -> bool {
        matches!(self.executor, ExecutorPlan::Plugin(_)) || self.steps.iter().any(|s| matches!(s.kind, StepKind::Plugin(_)))
    }

    /// Bytes of complete output the steps want spooled (0: the in-memory tail is enough).
    pub fn spool_limit(&self) -> u64 {
        let files = self.steps.iter().filter_map(|s| match &s.kind {
            StepKind::Files(f) => f.spool_limit(),
            _ => None,
        });
        files.max().unwrap_or(0)
    }
}

impl StepPlan {
    fn parse(name: &str, map: &HashMap<String, String>) -> Result<Self> {
        check_plugin_name("processors", name)?;
        let prefix = key_path("processors", name);
        let c = Config::new(map, &prefix);
        let kind = match name {
            "files" => StepKind::Files(FilesConfig::parse(&c)?),
            "log" => StepKind::Log(LogConfig::parse(&c)?),
            "syslog" => StepKind::Syslog(SyslogConfig::parse(&c)?),
            _ => return Ok(Self { name: name.to_string(), forward: false, kind: StepKind::Plugin(map.clone()) }),
        };
        Ok(Self { name: name.to_string(), forward: c.bool("forward", false)?, kind })
    }
}

/// A name that is not built in is the NAME of a `dkron-{executor,processor}-NAME` file, so it
/// must be something a file name can end with.
fn check_plugin_name(field: &str, name: &str) -> Result<()> {
    if name.is_empty() || name.contains(['/', '\0']) {
        return Err(ConfigError::new(field, name, "a name must be non-empty, without '/' or NUL (plugins are files named after it)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn a_plan_keeps_the_listed_order_and_parses_each_config() {
        let procs = vec![
            ("log".to_string(), map(&[("forward", "true")])),
            ("upper".to_string(), map(&[("anything", "goes")])),
            ("files".to_string(), map(&[("log_dir", "/tmp/x"), ("max_size", "1KB")])),
        ];
        let plan = JobPlan::parse("j", "shell", &map(&[("command", "true")]), &procs, 2, true).unwrap();
        let names: Vec<&str> = plan.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["log", "upper", "files"]);
        assert!(plan.steps[0].forward && !plan.steps[2].forward);
        assert!(matches!(plan.steps[1].kind, StepKind::Plugin(ref m) if m["anything"] == "goes"));
        assert_eq!(plan.spool_limit(), 1024);
        assert_eq!((plan.retries, plan.forbid), (2, true));
    }

    #[test]
    fn errors_name_the_processor_and_key() {
        let procs = vec![("syslog".to_string(), map(&[("facility", "nope")]))];
        let err = JobPlan::parse("j", "shell", &map(&[("command", "true")]), &procs, 0, false).unwrap_err();
        assert_eq!(err.field, "processors.syslog.facility");
        let err = JobPlan::parse("j", "shell", &map(&[("command", "true"), ("timeout", "5")]), &[], 0, false).unwrap_err();
        assert_eq!(err.field, "executor_config.timeout");
        // A plugin executor's keys are its own business (Dkron's http executor takes seconds).
        let plan = JobPlan::parse("j", "http", &map(&[("timeout", "30")]), &[], 0, false).unwrap();
        assert!(matches!(plan.executor, ExecutorPlan::Plugin(ref p) if p.timeout.is_none()));
        // A plugin's name is part of a file name.
        for bad in ["", "a/b", "../x", "a\0"] {
            let err = JobPlan::parse("j", bad, &HashMap::new(), &[], 0, false).unwrap_err();
            assert_eq!((err.field.as_str(), err.value.as_str()), ("executor", bad));
            let procs = vec![(bad.to_string(), HashMap::new())];
            let err = JobPlan::parse("j", "shell", &map(&[("command", "true")]), &procs, 0, false).unwrap_err();
            assert_eq!((err.field.as_str(), err.value.as_str()), ("processors", bad));
        }
    }
}
