//! The executor registry: every executor a job can name, built in or a plugin, is parsed here
//! once and run through one interface (`run::Runtime::attempt`). A new built-in executor is one
//! new module and one arm below.

use crate::config::{Config, Result};

pub mod plugin;
pub mod shell;

/// The executors dkron_exec runs itself; any other name is a `dkron-executor-NAME` plugin.
pub const BUILTIN: [&str; 1] = ["shell"];

/// A job's executor, its config parsed.
#[derive(Debug, Clone)]
pub enum ExecutorPlan {
    Shell(Box<shell::ShellConfig>),
    Plugin(plugin::PluginExecutor),
}

impl ExecutorPlan {
    /// `config` is the job's `executor_config` (prefix `executor_config`).
    pub fn parse(name: &str, config: &Config<'_>) -> Result<Self> {
        Ok(match name {
            "shell" => Self::Shell(Box::new(shell::ShellConfig::parse(config)?)),
            _ => Self::Plugin(plugin::PluginExecutor::parse(name, config)?),
        })
    }

    /// How messages name this executor: `shell`, or `plugin executor 'NAME'`.
    pub fn label(&self) -> String {
        match self {
            Self::Shell(_) => "shell".into(),
            Self::Plugin(p) => format!("plugin executor '{}'", p.name),
        }
    }
}
