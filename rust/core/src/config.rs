//! Reading a job's string maps (`executor_config`, each processor's config): one error type that
//! names the field and quotes the value, and typed getters that all go through `goval`, so every
//! key that takes a boolean, a duration or a size accepts exactly the same forms.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use crate::goval;

/// A value that can never work. `field` is the dotted path in the job document
/// (`processors.files.max_size`, `executor_config.timeout`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub field: String,
    pub value: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(field: impl Into<String>, value: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { field: field.into(), value: value.into(), reason: reason.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} (got {:?})", self.field, self.reason, self.value)
    }
}

impl std::error::Error for ConfigError {}

pub type Result<T> = std::result::Result<T, ConfigError>;

/// `prefix.key`; a key that is empty, holds `. [ ] "` or breaks a line is quoted as a JSON
/// string, `prefix["a.b"]`, so that a field is one line and reads back (the rule of the Python
/// side's `document.key_path`).
pub fn key_path(prefix: &str, key: &str) -> String {
    let plain = !key.is_empty() && !key.chars().any(|c| matches!(c, '.' | '[' | ']' | '"') || breaks(c));
    if plain {
        return if prefix.is_empty() { key.to_string() } else { format!("{prefix}.{key}") };
    }
    let mut out = format!("{prefix}[\"");
    for c in key.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if breaks(c) => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push_str("\"]");
    out
}

/// A control character (Unicode's Cc) or a line or paragraph separator.
fn breaks(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')
}

/// One config map and the path its keys live under (`processors.files`).
#[derive(Debug, Clone, Copy)]
pub struct Config<'a> {
    map: &'a HashMap<String, String>,
    prefix: &'a str,
}

impl<'a> Config<'a> {
    pub fn new(map: &'a HashMap<String, String>, prefix: &'a str) -> Self {
        Self { map, prefix }
    }

    pub fn map(&self) -> &'a HashMap<String, String> {
        self.map
    }

    /// The dotted path of `key`.
    pub fn field(&self, key: &str) -> String {
        key_path(self.prefix, key)
    }

    pub fn error(&self, key: &str, value: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError::new(self.field(key), value, reason)
    }

    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.map.get(key).map(String::as_str)
    }

    /// The value, with "" counting as unset (Dkron's zero value).
    pub fn non_empty(&self, key: &str) -> Option<&'a str> {
        self.get(key).filter(|v| !v.is_empty())
    }

    /// Refuses keys outside `known` (the first in sorted order, so the error is stable).
    pub fn only(&self, known: &[&str]) -> Result<()> {
        let mut unknown: Vec<&String> = self.map.keys().filter(|k| !known.contains(&k.as_str())).collect();
        unknown.sort();
        match unknown.first() {
            None => Ok(()),
            Some(key) => Err(self.error(key, &self.map[*key], format!("unknown key; known keys: {}", known.join(", ")))),
        }
    }

    pub fn bool(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => goval::parse_bool(v).map_err(|why| self.error(key, v, why)),
        }
    }

    /// A Go duration; unset, empty or zero is None (Dkron's "no limit"). Negative is refused.
    pub fn duration(&self, key: &str) -> Result<Option<Duration>> {
        let Some(v) = self.non_empty(key) else { return Ok(None) };
        let ns = goval::parse_duration(v).map_err(|why| self.error(key, v, why))?;
        if ns < 0 {
            return Err(self.error(key, v, "must not be negative"));
        }
        Ok((ns > 0).then(|| Duration::from_nanos(ns as u64)))
    }

    /// A Dkron memory size in bytes; unset or empty is None.
    pub fn size(&self, key: &str) -> Result<Option<u64>> {
        let Some(v) = self.non_empty(key) else { return Ok(None) };
        goval::parse_byte_size(v).map(Some).map_err(|why| self.error(key, v, why))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn errors_name_the_dotted_field_and_quote_the_value() {
        let m = map(&[("forward", "yes"), ("timeout", "5"), ("max_size", "lots")]);
        let c = Config::new(&m, "processors.files");
        assert_eq!(c.bool("forward", false).unwrap_err().to_string(), "processors.files.forward: must be true or false (got \"yes\")");
        assert_eq!(c.duration("timeout").unwrap_err().field, "processors.files.timeout");
        assert_eq!(c.size("max_size").unwrap_err().value, "lots");
        assert_eq!(c.only(&["forward", "timeout"]).unwrap_err().field, "processors.files.max_size");
    }

    #[test]
    fn keys_that_read_as_path_syntax_are_quoted() {
        assert_eq!(key_path("processors.files", "max_size"), "processors.files.max_size");
        assert_eq!(key_path("", "tags"), "tags");
        assert_eq!(key_path("tags", "a.b"), r#"tags["a.b"]"#);
        assert_eq!(key_path("x", ""), r#"x[""]"#);
        assert_eq!(key_path("x", "a\n\"\\\u{85}\u{2028}é"), r#"x["a\u000a\"\\\u0085\u2028é"]"#);
        let m = map(&[("a\nb", "1")]);
        let err = Config::new(&m, "processors.files").only(&["forward"]).unwrap_err();
        assert_eq!(err.field, r#"processors.files["a\u000ab"]"#);
    }

    #[test]
    fn empty_and_zero_mean_unset() {
        let m = map(&[("timeout", ""), ("t0", "0s"), ("mem", "")]);
        let c = Config::new(&m, "");
        assert_eq!(c.duration("timeout"), Ok(None));
        assert_eq!(c.duration("t0"), Ok(None));
        assert_eq!(c.size("mem"), Ok(None));
        assert_eq!(c.bool("missing", true), Ok(true));
    }
}
