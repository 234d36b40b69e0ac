//! The shell executor's config. STUB: replaced by the `shell` branch (same API).

use std::path::PathBuf;
use std::time::Duration;

use crate::config::{Config, Result};
use crate::job::JobSpec;

#[derive(Debug, Clone, PartialEq)]
pub struct ShellConfig {
    pub command: String,
    pub shell: bool,
    pub env: Vec<(String, String)>,
    pub cwd: Option<PathBuf>,
    pub timeout: Option<Duration>,
    pub mem_limit: Option<u64>,
    pub su: Option<(String, Option<String>)>,
    pub payload: Option<Vec<u8>>,
}

impl ShellConfig {
    pub fn parse(c: &Config<'_>) -> Result<Self> {
        let command = c.get("command").unwrap_or_default().to_string();
        if command.trim().is_empty() {
            return Err(c.error("command", &command, "the shell executor needs a non-empty command"));
        }
        Ok(Self {
            command,
            shell: c.bool("shell", false)?,
            env: Vec::new(),
            cwd: c.non_empty("cwd").map(PathBuf::from),
            timeout: c.duration("timeout")?,
            mem_limit: c.size("mem_limit")?,
            su: None,
            payload: None,
        })
    }

    pub fn to_spec(&self, job_name: &str) -> std::result::Result<JobSpec, String> {
        let argv = if self.shell {
            vec!["/bin/sh".into(), "-c".into(), self.command.clone()]
        } else {
            self.command.split_whitespace().map(str::to_string).collect()
        };
        let mut spec = JobSpec::new(argv);
        spec.env = self.env.clone();
        spec.env.push(("ENV_JOB_NAME".into(), job_name.into()));
        spec.cwd = self.cwd.clone();
        spec.timeout = self.timeout;
        spec.mem_limit = self.mem_limit;
        spec.label = self.command.clone();
        Ok(spec)
    }
}
