//! Fuzzing the job parser's Rust half: `JobPlan::parse` (every executor and processor config
//! that dkron_exec checks) over valid configs and hostile ones. Properties: it never panics; it
//! gives the same answer twice; an error names a field under the document path it came from
//! (`executor`, `executor_config[.KEY]`, `processors[.NAME[.KEY]]`) and quotes a value of the input;
//! a shell plan turns into a process spec without panicking.
//!
//! Cases: 300 by default (CI); `FUZZ_CASES=1000000` for the long run (`scripts/fuzz-long.sh`).

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

use dkron_exec_core::config::{key_path, ConfigError};
use dkron_exec_core::executors::ExecutorPlan;
use dkron_exec_core::plan::JobPlan;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

fn cases() -> u32 {
    std::env::var("FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(300)
}

const SHELL_KEYS: [&str; 9] = ["command", "shell", "env", "cwd", "timeout", "mem_limit", "su", "payload", "other"];
const FILES_KEYS: [&str; 8] = ["log_dir", "per_job_dir", "keep", "full_output", "max_size", "fsync", "forward", "Log_dir"];
const SYSLOG_KEYS: [&str; 14] = [
    "transport", "address", "format", "framing", "facility", "severity", "failure_severity", "tag", "hostname",
    "per_line", "max_message", "oversize", "timeout", "forward",
];

/// Values that config keys take, the edges of each syntax, and what the fuzz of issue 9 found.
fn value() -> impl Strategy<Value = String> {
    let known = prop::sample::select(vec![
        "", "0", "1", "true", "false", "T", "1s", "1.5s", "250ms", "5m", "5m0.001s", "1h30m", "-1s", "9e20",
        "1e308", "1e+308", "NaN", "inf", "512MB", "1.5g", "1PB", "1KiB", "/tmp", "/tmp/x", "~/logs",
        "~nosuchuser/logs", "relative", "a/../b", "/etc/passwd", "A=1,B=2", "[\"A=1\"]", "{\"A\": 1}",
        "{\"A\": \"x\\u0000\"}", "[broken", "root", "nobody:nogroup", "a:b:c", "aGVsbG8K", "QR==", "not base64",
        "udp", "tcp", "unix", "unixgram", "relp", "127.0.0.1:514", "[::1]:514", "host:99999", "rfc5424", "rfc3164",
        "octet-counting", "lf", "local7", "user", "24", "err", "9", "split", "truncate", "480", "64KB", "echo hi",
        "sh -c 'exit 3'", "echo 'unbalanced", "a\0b", "\u{202e}", "µs", "2562047h47m16.854775808s",
    ]);
    prop_oneof![
        4 => known.prop_map(str::to_string),
        2 => "[-+. 0-9nsuµμmhBKMGTIbkgtiyeE:/~,=]{0,24}",
        1 => "[0-9]{20,400}",
        1 => any::<String>(),
        1 => (1usize..5000).prop_map(|n| "a".repeat(n)),
        1 => (250usize..300, 1usize..20).prop_map(|(n, parts)| format!("/{}", vec!["b".repeat(n); parts].join("/"))),
        1 => (1usize..300).prop_map(|n| format!("{}{}", "[".repeat(n), "]".repeat(n))),
    ]
}

fn config_map(keys: &'static [&'static str]) -> impl Strategy<Value = HashMap<String, String>> {
    let key = prop_oneof![8 => prop::sample::select(keys).prop_map(str::to_string), 1 => "[a-z_.]{0,8}", 1 => any::<String>()];
    prop::collection::hash_map(key, value(), 0..6)
}

fn processor() -> impl Strategy<Value = (String, HashMap<String, String>)> {
    prop_oneof![
        ("files", config_map(&FILES_KEYS)).prop_map(|(n, c)| (n.to_string(), c)),
        ("syslog", config_map(&SYSLOG_KEYS)).prop_map(|(n, c)| (n.to_string(), c)),
        ("log", config_map(&["target", "forward", "x"])).prop_map(|(n, c)| (n.to_string(), c)),
        (prop_oneof!["[a-z]{1,8}", Just(String::new()), Just("../x".to_string()), any::<String>()], config_map(&["x"])),
    ]
}

fn executor() -> impl Strategy<Value = String> {
    prop_oneof![6 => Just("shell".to_string()), 1 => "[a-z]{1,8}", 1 => Just(String::new()), 1 => any::<String>()]
}

type Input = (String, HashMap<String, String>, Vec<(String, HashMap<String, String>)>);

fn input() -> impl Strategy<Value = Input> {
    (executor(), config_map(&SHELL_KEYS), prop::collection::vec(processor(), 0..4))
}

fn check(input: &Input) -> Result<(), TestCaseError> {
    let (executor, config, processors) = input;
    let parse = || JobPlan::parse("job", executor, config, processors, 3, false);
    let first = catch_unwind(AssertUnwindSafe(parse));
    prop_assert!(first.is_ok(), "JobPlan::parse panicked on {input:?}");
    let first = first.unwrap();
    let second = parse();
    prop_assert_eq!(format!("{first:?}"), format!("{second:?}"), "not deterministic");
    match first {
        Err(err) => check_error(&err, input)?,
        Ok(plan) => {
            if let ExecutorPlan::Shell(shell) = &plan.executor {
                // Resolving `su` reads the user database: only without it, to keep cases fast.
                if shell.su.is_none() {
                    let spec = catch_unwind(AssertUnwindSafe(|| shell.to_spec("job")));
                    prop_assert!(spec.is_ok(), "to_spec panicked on {input:?}");
                }
            }
            prop_assert_eq!(plan.steps.len(), processors.len());
        }
    }
    Ok(())
}

/// The field is where the value came from, and the value is one the input holds (or a name).
fn check_error(err: &ConfigError, (executor, config, processors): &Input) -> Result<(), TestCaseError> {
    let message = err.to_string();
    prop_assert!(message.starts_with(&format!("{}: ", err.field)), "{message}");
    if err.field == "executor" {
        prop_assert_eq!(&err.value, executor);
        return Ok(());
    }
    if err.field == "processors" {
        prop_assert!(processors.iter().any(|(name, _)| *name == err.value), "{err}");
        return Ok(());
    }
    // The maps the field may be under (a processor name can repeat), by their paths.
    let mut sources: Vec<(String, &HashMap<String, String>)> = vec![("executor_config".to_string(), config)];
    sources.extend(processors.iter().map(|(name, map)| (key_path("processors", name), map)));
    let from = |(prefix, map): &(String, &HashMap<String, String>)| {
        let of_a_key = map.iter().any(|(key, value)| {
            let field = key_path(prefix, key);
            match key.as_str() {
                // `env.KEY` names a variable inside `env`.
                "env" => err.field == field || err.field.starts_with(&format!("{field}.")) || err.field.starts_with(&format!("{field}[")),
                // A log_dir that is a file is quoted as the absolute path it resolved to.
                "log_dir" => err.field == field,
                _ => err.field == field && err.value == *value,
            }
        });
        // A required key that is missing (command, address) is blamed with an empty value.
        let missing = err.value.is_empty() && err.field.starts_with(&format!("{prefix}."));
        of_a_key || missing
    };
    prop_assert!(sources.iter().any(from), "{err} names no field of the input, or not its value");
    Ok(())
}

#[test]
fn job_plans_parse_or_name_the_field() {
    let mut runner = TestRunner::new(Config { cases: cases(), failure_persistence: None, ..Config::default() });
    let started = std::time::Instant::now();
    runner.run(&input(), |i| check(&i)).unwrap();
    eprintln!("fuzz_plan: {} inputs, 0 failures, {:.1?}", cases(), started.elapsed());
}
