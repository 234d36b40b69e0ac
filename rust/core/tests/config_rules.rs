//! One set of rules for Go values: every boolean, duration and size key accepts exactly what
//! `goval` accepts (and gives the same value), and `goval` never panics, whatever the text.

use std::collections::HashMap;
use std::time::Duration;

use dkron_exec_core::config::{Config, ConfigError};
use dkron_exec_core::executors::shell::ShellConfig;
use dkron_exec_core::goval;
use dkron_exec_core::sinks::syslog::{SyslogConfig, FIELD_PREFIX, MAX_TIMEOUT};
use proptest::prelude::*;

fn shell(key: &str, value: &str) -> Result<ShellConfig, ConfigError> {
    let map = HashMap::from([("command".to_string(), "/bin/true".to_string()), (key.to_string(), value.to_string())]);
    ShellConfig::parse(&Config::new(&map, "executor_config"))
}

fn syslog(key: &str, value: &str) -> Result<SyslogConfig, ConfigError> {
    let map = HashMap::from([(key.to_string(), value.to_string())]);
    SyslogConfig::parse(&Config::new(&map, FIELD_PREFIX))
}

/// The error names the field and carries the value as given.
fn blames(err: &ConfigError, field: &str, value: &str) -> bool {
    err.field == field && err.value == value
}

/// Text that looks like Go values: digits, dots, signs, spaces and the letters of their units.
fn go_ish() -> impl Strategy<Value = String> {
    "[-+. 0-9nsuµμmhBKMGTIbkgtiyeE]{0,12}"
}

/// `<number><unit>` parts with an optional sign: valid durations and sizes, and near misses.
fn go_parts() -> impl Strategy<Value = String> {
    let unit = prop::sample::select(vec![
        "", "ns", "us", "µs", "μs", "ms", "s", "m", "h", "B", "K", "KB", "kib", "M", "mb", "G", "T", "TB", "x",
    ]);
    let part = (r"[0-9]{0,20}(\.[0-9]{0,20})?", unit).prop_map(|(n, u)| format!("{n}{u}"));
    (prop::sample::select(vec!["", "", "-", "+"]), prop::collection::vec(part, 1..4))
        .prop_map(|(sign, parts)| format!("{sign}{}", parts.concat()))
}

fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![any::<String>(), go_ish(), go_parts()]
}

fn check_shell_bool(text: &str) -> Result<(), TestCaseError> {
    let got = shell("shell", text);
    if text.is_empty() {
        prop_assert_eq!(got.map(|c| c.shell), Ok(false), "empty is Dkron's unset");
        return Ok(());
    }
    match goval::parse_bool(text) {
        Ok(b) => prop_assert_eq!(got.map(|c| c.shell), Ok(b)),
        Err(_) => prop_assert!(got.is_err_and(|e| blames(&e, "executor_config.shell", text))),
    }
    Ok(())
}

fn check_syslog_bool(text: &str) -> Result<(), TestCaseError> {
    let got = syslog("per_line", text);
    match goval::parse_bool(text) {
        Ok(b) => prop_assert_eq!(got.map(|c| c.per_line), Ok(b)),
        Err(_) => prop_assert!(got.is_err_and(|e| blames(&e, "processors.syslog.per_line", text))),
    }
    Ok(())
}

fn check_shell_timeout(text: &str) -> Result<(), TestCaseError> {
    let got = shell("timeout", text).map(|c| c.timeout);
    if text.is_empty() {
        prop_assert_eq!(got, Ok(None));
        return Ok(());
    }
    match goval::parse_duration(text) {
        Ok(ns) if ns >= 0 => prop_assert_eq!(got, Ok((ns > 0).then(|| Duration::from_nanos(ns as u64)))),
        _ => prop_assert!(got.is_err_and(|e| blames(&e, "executor_config.timeout", text))),
    }
    Ok(())
}

fn check_syslog_timeout(text: &str) -> Result<(), TestCaseError> {
    let got = syslog("timeout", text).map(|c| c.timeout);
    match goval::parse_duration(text) {
        Ok(ns) if ns > 0 && ns as u128 <= MAX_TIMEOUT.as_nanos() => {
            prop_assert_eq!(got, Ok(Duration::from_nanos(ns as u64)))
        }
        _ => prop_assert!(got.is_err_and(|e| blames(&e, "processors.syslog.timeout", text))),
    }
    Ok(())
}

fn check_mem_limit(text: &str) -> Result<(), TestCaseError> {
    let got = shell("mem_limit", text).map(|c| c.mem_limit);
    if text.is_empty() {
        prop_assert_eq!(got, Ok(None));
        return Ok(());
    }
    match goval::parse_byte_size(text) {
        Ok(bytes) => prop_assert_eq!(got, Ok(Some(bytes))),
        Err(_) => prop_assert!(got.is_err_and(|e| blames(&e, "executor_config.mem_limit", text))),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn boolean_keys_take_exactly_go_booleans(text in any_text()) {
        check_shell_bool(&text)?;
        check_syslog_bool(&text)?;
    }

    #[test]
    fn duration_keys_take_exactly_go_durations(text in any_text()) {
        check_shell_timeout(&text)?;
        check_syslog_timeout(&text)?;
    }

    #[test]
    fn mem_limit_takes_exactly_dkron_sizes(text in any_text()) {
        check_mem_limit(&text)?;
    }

    #[test]
    fn goval_never_panics(text in any_text()) {
        let _ = goval::parse_bool(&text);
        let _ = goval::parse_duration(&text);
        let _ = goval::parse_byte_size(&text);
    }
}

#[test]
fn goval_survives_the_edges_of_u128() {
    // The whole part times the unit is just under u128::MAX; the fraction would overflow it.
    let text = format!("{}.9999us", u128::MAX / 1000);
    assert!(goval::parse_duration(&text).is_err());
    assert!(goval::parse_duration(&format!("{}ns", u128::MAX)).is_err());
    assert!(goval::parse_duration(&format!("{}0ns", u128::MAX)).is_err());
}

#[test]
fn every_go_boolean_is_a_boolean_everywhere() {
    for text in ["1", "t", "T", "TRUE", "true", "True", "0", "f", "F", "FALSE", "false", "False", "yes", " true", ""] {
        check_shell_bool(text).unwrap();
        check_syslog_bool(text).unwrap();
    }
}

#[test]
fn edge_durations_and_sizes() {
    for text in ["0", "-0", "0s", "1ns", "5m", "5m0.000000001s", "300s", "-1s", "5", "0.25", "1h", "9223372036854775807ns"] {
        check_shell_timeout(text).unwrap();
        check_syslog_timeout(text).unwrap();
    }
    for text in ["1", "0", "-1", "1.5g", "0.1B", "9223372036854775807", "9223372036854775808", " 1K", "1K "] {
        check_mem_limit(text).unwrap();
    }
}

proptest! {
    /// A plugin's answer may carry any text as a time stamp: parsing it never panics.
    #[test]
    fn rfc3339_never_panics(text in "\\PC{0,40}", tail in "[0-9+\\-:.Zé]{0,8}") {
        let _ = dkron_exec_core::execution::parse_rfc3339(&text);
        let _ = dkron_exec_core::execution::parse_rfc3339(&format!("2024-05-29T16:26:40{tail}"));
    }
}
