//! The chain of execution processors: every step (files, log, syslog, a plugin processor) is one
//! `Step`, and `Chain::run` is the only place that knows the order, `forward`, `reporting_node`
//! and how a failed step is recorded. A job's chain is parsed when the job is loaded
//! (`plan::JobPlan`) and bound to a runtime's sinks and plugins when it first runs.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::Arc;

use crate::execution::Execution;

pub mod files;
pub mod log;
pub mod syslog;

/// What a step may know beyond the execution and its own config.
#[derive(Clone, Copy)]
pub struct StepContext<'a> {
    /// The executor's node name: `reporting_node` in a plugin's config.
    pub node_name: &'a str,
    /// The job's complete output on disk, when it outgrew the in-memory tail and a step asked for
    /// it (files); the flag is false when `max_size` cut the spool short.
    pub full_output: Option<(&'a Path, bool)>,
    /// True once the run is cancelled or interrupted (Ctrl-C, `close`): a step that waits (a
    /// plugin call) asks it now and then and gives up.
    pub stop: &'a dyn Fn() -> bool,
}

impl<'a> StepContext<'a> {
    /// A context for a run nobody stops.
    pub fn new(node_name: &'a str) -> Self {
        Self { node_name, full_output: None, stop: &|| false }
    }
}

/// What a step did with the execution.
#[derive(Debug)]
// Replaced carries a whole execution, moved once per step: boxing it would allocate per step.
#[allow(clippy::large_enum_variant)]
pub enum Processed {
    /// A built-in sink took the output; when the step does not forward, the output the next step
    /// sees becomes `replacement` (Dkron's text: the file's path, `Output in dkron log`, ...).
    Sunk { replacement: Vec<u8> },
    /// The step returned a new execution (a plugin processor: `forward` is the plugin's business).
    Replaced(Execution),
}

/// One execution processor. `process` must not panic; an `Err` costs this step only.
pub trait Step: Send + Sync {
    fn process(&self, execution: &Execution, ctx: &StepContext<'_>) -> Result<Processed, String>;

    /// Whether a call may wait a long time (a plugin): an async run then moves the chain off the
    /// engine's thread.
    fn may_block(&self) -> bool {
        false
    }
}

/// A step as the job names it.
pub struct ChainStep {
    pub name: String,
    pub forward: bool,
    pub step: Arc<dyn Step>,
}

/// A job's processors, bound and ready to run, in the order the job lists them.
#[derive(Default)]
pub struct Chain {
    pub steps: Vec<ChainStep>,
}

impl Chain {
    pub fn may_block(&self) -> bool {
        self.steps.iter().any(|s| s.step.may_block())
    }

    /// Passes the execution through every step in order; each gets the previous one's result.
    /// A failed step — an error, or a panic — is recorded as `"<name>: <why>"` in
    /// `processor_errors` and the chain goes on with the execution as it was before that step.
    pub fn run(&self, mut execution: Execution, ctx: &StepContext<'_>) -> Execution {
        for s in &self.steps {
            let done = catch_unwind(AssertUnwindSafe(|| s.step.process(&execution, ctx)))
                .unwrap_or_else(|panic| Err(format!("internal error (please report it): {}", panic_message(&*panic))));
            match done {
                Ok(Processed::Sunk { replacement }) => {
                    if !s.forward {
                        execution.output = replacement;
                    }
                }
                Ok(Processed::Replaced(next)) => execution = next,
                Err(why) => execution.processor_errors.push(format!("{}: {why}", s.name)),
            }
        }
        execution
    }
}

/// The text of a panic's payload.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic.downcast_ref::<String>().map(String::as_str).or_else(|| panic.downcast_ref::<&str>().copied()).unwrap_or("(no message)")
}

/// The step of a processor the job names but nobody provides: every run records it, with why
/// its plugin was refused when one was found but not trusted.
pub struct Missing {
    pub refused: Option<String>,
}

impl Step for Missing {
    fn process(&self, _: &Execution, _: &StepContext<'_>) -> Result<Processed, String> {
        Err(match &self.refused {
            Some(why) => format!("processor refused: {why}"),
            None => "processor not found".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Records what it saw; sinks, fails, or rewrites the output as told.
    struct Probe {
        seen: Mutex<Vec<(Vec<u8>, String)>>,
        action: &'static str,
    }

    impl Probe {
        fn new(action: &'static str) -> Arc<Self> {
            Arc::new(Self { seen: Mutex::new(Vec::new()), action })
        }
    }

    impl Step for Probe {
        fn process(&self, e: &Execution, ctx: &StepContext<'_>) -> Result<Processed, String> {
            self.seen.lock().unwrap().push((e.output.clone(), ctx.node_name.to_string()));
            match self.action {
                "fail" => Err("disk full".into()),
                "panic" => panic!("a bug"),
                "upper" => Ok(Processed::Replaced(Execution { output: e.output.to_ascii_uppercase(), ..e.clone() })),
                _ => Ok(Processed::Sunk { replacement: format!("sunk by {}", self.action).into_bytes() }),
            }
        }
    }

    fn step(name: &str, forward: bool, probe: &Arc<Probe>) -> ChainStep {
        ChainStep { name: name.into(), forward, step: probe.clone() }
    }

    #[test]
    fn order_forward_failures_and_reporting_node() {
        let (a, b, c, d) = (Probe::new("a"), Probe::new("fail"), Probe::new("upper"), Probe::new("d"));
        let chain = Chain {
            steps: vec![
                step("a", true, &a),
                step("broken", true, &b),
                step("plugin", false, &c),
                step("d", false, &d),
                ChainStep { name: "ghost".into(), forward: true, step: Arc::new(Missing { refused: None }) },
            ],
        };
        let ctx = StepContext::new("node-7");
        let out = chain.run(Execution { output: b"hi".to_vec(), ..Default::default() }, &ctx);
        // a forwarded; the failure kept the execution as it was; the plugin's answer replaced it
        // whatever its forward flag; d did not forward, so its replacement is the final output.
        assert_eq!(a.seen.lock().unwrap()[0], (b"hi".to_vec(), "node-7".to_string()));
        assert_eq!(b.seen.lock().unwrap()[0].0, b"hi");
        assert_eq!(c.seen.lock().unwrap()[0].0, b"hi");
        assert_eq!(d.seen.lock().unwrap()[0].0, b"HI");
        assert_eq!(out.output, b"sunk by d");
        assert_eq!(out.processor_errors, vec!["broken: disk full", "ghost: processor not found"]);
    }

    #[test]
    fn a_panicking_step_costs_only_its_step() {
        let (bad, after) = (Probe::new("panic"), Probe::new("after"));
        let chain = Chain { steps: vec![step("bad", true, &bad), step("after", true, &after)] };
        let out = chain.run(Execution { output: b"kept".to_vec(), ..Default::default() }, &StepContext::new("n"));
        assert_eq!(after.seen.lock().unwrap()[0].0, b"kept");
        assert_eq!(out.processor_errors, vec!["bad: internal error (please report it): a bug"]);
    }

    #[test]
    fn a_step_that_does_not_forward_hides_the_output_from_the_next() {
        let (first, second) = (Probe::new("first"), Probe::new("second"));
        let chain = Chain { steps: vec![step("first", false, &first), step("second", true, &second)] };
        let ctx = StepContext::new("n");
        let out = chain.run(Execution { output: b"secret".to_vec(), ..Default::default() }, &ctx);
        assert_eq!(second.seen.lock().unwrap()[0].0, b"sunk by first");
        assert_eq!(out.output, b"sunk by first");
    }
}
