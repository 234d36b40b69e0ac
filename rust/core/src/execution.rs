//! The record of one run of a job, shaped like Dkron's `Execution`: what the executor produced,
//! what each processor made of it, and what the store keeps. Built once per attempt in Rust and
//! handed to Python only at the end of the run.

use std::fmt::Write as _;

use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

/// Dkron's `Execution` plus dkron_exec's own fields (exit code, error, output accounting,
/// processor errors). Times are Unix nanoseconds, as Dkron's key spells them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Execution {
    pub job_name: String,
    /// `<started_ns>-<node_name>`: Dkron's `Execution.Key()`.
    pub key: String,
    pub started_ns: i64,
    pub finished_ns: Option<i64>,
    pub success: bool,
    /// The tail of stdout and stderr (or what the processors replaced it with).
    pub output: Vec<u8>,
    pub node_name: String,
    pub group: i64,
    pub attempt: u32,
    /// The exit code, or minus the signal that ended the job; None when nothing ran.
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub output_truncated: bool,
    /// Bytes the job wrote in all.
    pub output_size: u64,
    pub processor_errors: Vec<String>,
    /// CPU time of the whole job (every process it started), in microseconds; None when unknown
    /// (no cgroup). Not part of the plugin protocol.
    pub cpu_time_us: Option<u64>,
    /// Peak memory of the whole job, in bytes; None when unknown (no memory controller).
    pub peak_memory: Option<u64>,
}

/// Dkron's `Execution.Key()`.
pub fn make_key(started_ns: i64, node_name: &str) -> String {
    format!("{started_ns}-{node_name}")
}

impl Execution {
    /// The fields of docs/PROTOCOL.md §4.1: everything but the output, which travels as a body.
    pub fn protocol_fields(&self) -> Map<String, Value> {
        let mut m = Map::with_capacity(13);
        m.insert("id".into(), Value::from(self.key.as_str()));
        m.insert("job_name".into(), Value::from(self.job_name.as_str()));
        m.insert("started_at".into(), Value::from(format_rfc3339(self.started_ns)));
        m.insert("finished_at".into(), self.finished_ns.map(format_rfc3339).map_or(Value::Null, Value::from));
        m.insert("success".into(), Value::from(self.success));
        m.insert("node_name".into(), Value::from(self.node_name.as_str()));
        m.insert("group".into(), Value::from(self.group));
        m.insert("attempt".into(), Value::from(self.attempt));
        m.insert("exit_code".into(), self.exit_code.map_or(Value::Null, Value::from));
        m.insert("error".into(), self.error.as_deref().map_or(Value::Null, Value::from));
        m.insert("output_truncated".into(), Value::from(self.output_truncated));
        m.insert("output_size".into(), Value::from(self.output_size));
        m.insert(
            "processor_errors".into(),
            Value::Array(self.processor_errors.iter().map(|e| Value::from(e.as_str())).collect()),
        );
        m
    }

    /// `protocol_fields()` as a JSON object appended to `out`, written straight from the record.
    pub fn write_protocol_json(&self, out: &mut Vec<u8>) {
        let text = |out: &mut Vec<u8>, s: &str| serde_json::to_writer(&mut *out, s).expect("writing to a Vec");
        let time = |out: &mut Vec<u8>, ns: i64| {
            out.push(b'"');
            out.extend_from_slice(format_rfc3339(ns).as_bytes());
            out.push(b'"');
        };
        out.extend_from_slice(b"{\"id\":");
        text(out, &self.key);
        out.extend_from_slice(b",\"job_name\":");
        text(out, &self.job_name);
        out.extend_from_slice(b",\"started_at\":");
        time(out, self.started_ns);
        out.extend_from_slice(b",\"finished_at\":");
        match self.finished_ns {
            Some(ns) => time(out, ns),
            None => out.extend_from_slice(b"null"),
        }
        let _ = write!(
            Bytes(out),
            ",\"success\":{},\"node_name\":",
            self.success
        );
        text(out, &self.node_name);
        let _ = write!(Bytes(out), ",\"group\":{},\"attempt\":{},\"exit_code\":", self.group, self.attempt);
        match self.exit_code {
            Some(c) => {
                let _ = write!(Bytes(out), "{c}");
            }
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"error\":");
        match &self.error {
            Some(e) => text(out, e),
            None => out.extend_from_slice(b"null"),
        }
        let _ = write!(
            Bytes(out),
            ",\"output_truncated\":{},\"output_size\":{},\"processor_errors\":[",
            self.output_truncated, self.output_size
        );
        for (i, e) in self.processor_errors.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            text(out, e);
        }
        out.extend_from_slice(b"]}");
    }

    /// A copy of every field but the output (which a processor's answer replaces anyway).
    pub fn clone_without_output(&self) -> Execution {
        Execution {
            job_name: self.job_name.clone(),
            key: self.key.clone(),
            started_ns: self.started_ns,
            finished_ns: self.finished_ns,
            success: self.success,
            output: Vec::new(),
            node_name: self.node_name.clone(),
            group: self.group,
            attempt: self.attempt,
            exit_code: self.exit_code,
            error: self.error.clone(),
            output_truncated: self.output_truncated,
            output_size: self.output_size,
            processor_errors: self.processor_errors.clone(),
            cpu_time_us: self.cpu_time_us,
            peak_memory: self.peak_memory,
        }
    }

    /// Applies the fields a peer sent (a plugin's answer): fields left out keep their value, as
    /// Dkron's `proto.Merge`; `output` is the answer's body. A field of the wrong type is an error
    /// naming it.
    pub fn merge_protocol_fields(&mut self, fields: &Map<String, Value>, output: Vec<u8>) -> Result<(), String> {
        for (name, value) in fields {
            let bad = || format!("execution field {name:?} has an unexpected value {value}");
            match name.as_str() {
                "id" | "key" => self.key = value.as_str().ok_or_else(bad)?.to_string(),
                "job_name" => self.job_name = value.as_str().ok_or_else(bad)?.to_string(),
                "started_at" => self.started_ns = value.as_str().and_then(parse_rfc3339).ok_or_else(bad)?,
                "finished_at" => {
                    self.finished_ns = match value {
                        Value::Null => None,
                        v => Some(v.as_str().and_then(parse_rfc3339).ok_or_else(bad)?),
                    }
                }
                "success" => self.success = value.as_bool().ok_or_else(bad)?,
                "node_name" => self.node_name = value.as_str().ok_or_else(bad)?.to_string(),
                "group" => self.group = value.as_i64().ok_or_else(bad)?,
                "attempt" => self.attempt = value.as_u64().and_then(|a| u32::try_from(a).ok()).ok_or_else(bad)?,
                "exit_code" => {
                    self.exit_code = match value {
                        Value::Null => None,
                        v => Some(v.as_i64().and_then(|c| i32::try_from(c).ok()).ok_or_else(bad)?),
                    }
                }
                "error" => {
                    self.error = match value {
                        Value::Null => None,
                        v => Some(v.as_str().ok_or_else(bad)?.to_string()),
                    }
                }
                "output_truncated" => self.output_truncated = value.as_bool().ok_or_else(bad)?,
                "output_size" => self.output_size = value.as_u64().ok_or_else(bad)?,
                "processor_errors" => {
                    let items = value.as_array().ok_or_else(bad)?;
                    self.processor_errors =
                        items.iter().map(|e| e.as_str().map(str::to_string)).collect::<Option<_>>().ok_or_else(bad)?;
                }
                // Unknown fields: later versions may add some.
                _ => {}
            }
        }
        self.output = output;
        Ok(())
    }
}

impl Execution {
    /// Puts back the fields that identify this execution (where it is stored and under which
    /// key), if a processor's answer changed them, and names the ones it changed. A start time
    /// equal to ours at microsecond precision is ours, rounded by a peer whose clock type holds
    /// no nanoseconds (Python's datetime): not a change.
    pub fn keep_identity_of(&mut self, before: &Execution) -> Vec<&'static str> {
        let mut changed = Vec::new();
        if self.job_name != before.job_name {
            changed.push("job_name");
            self.job_name.clone_from(&before.job_name);
        }
        if self.key != before.key {
            changed.push("key");
            self.key.clone_from(&before.key);
        }
        if self.node_name != before.node_name {
            changed.push("node_name");
            self.node_name.clone_from(&before.node_name);
        }
        if self.group != before.group {
            changed.push("group");
            self.group = before.group;
        }
        if self.started_ns != before.started_ns {
            if self.started_ns / 1_000 != before.started_ns / 1_000 {
                changed.push("started_at");
            }
            self.started_ns = before.started_ns;
        }
        changed
    }
}

/// The fields of docs/PROTOCOL.md §4.1 as a peer sent them, read straight from the JSON (no map
/// in between): a field left out (or null where null means nothing) is None and keeps its value.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ProtocolFields {
    pub id: Option<String>,
    pub key: Option<String>,
    pub job_name: Option<String>,
    pub started_at: Option<String>,
    #[serde(deserialize_with = "present")]
    pub finished_at: Option<Option<String>>,
    pub success: Option<bool>,
    pub node_name: Option<String>,
    pub group: Option<i64>,
    pub attempt: Option<u32>,
    #[serde(deserialize_with = "present")]
    pub exit_code: Option<Option<i32>>,
    #[serde(deserialize_with = "present")]
    pub error: Option<Option<String>>,
    pub output_truncated: Option<bool>,
    pub output_size: Option<u64>,
    pub processor_errors: Option<Vec<String>>,
}

/// A nullable field that is there: Some(None) for null (only a missing field is None).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

impl Execution {
    /// `merge_protocol_fields` for fields parsed with `ProtocolFields`.
    pub fn apply_protocol_fields(&mut self, f: ProtocolFields, output: Vec<u8>) -> Result<(), String> {
        let time = |name: &str, text: &str| parse_rfc3339(text).ok_or_else(|| format!("execution field {name:?} has an unexpected value {text:?}"));
        if let Some(key) = f.key.or(f.id) {
            self.key = key;
        }
        if let Some(v) = f.job_name {
            self.job_name = v;
        }
        if let Some(v) = f.started_at {
            self.started_ns = time("started_at", &v)?;
        }
        if let Some(v) = f.finished_at {
            self.finished_ns = v.map(|t| time("finished_at", &t)).transpose()?;
        }
        if let Some(v) = f.success {
            self.success = v;
        }
        if let Some(v) = f.node_name {
            self.node_name = v;
        }
        if let Some(v) = f.group {
            self.group = v;
        }
        if let Some(v) = f.attempt {
            self.attempt = v;
        }
        if let Some(v) = f.exit_code {
            self.exit_code = v;
        }
        if let Some(v) = f.error {
            self.error = v;
        }
        if let Some(v) = f.output_truncated {
            self.output_truncated = v;
        }
        if let Some(v) = f.output_size {
            self.output_size = v;
        }
        if let Some(v) = f.processor_errors {
            self.processor_errors = v;
        }
        self.output = output;
        Ok(())
    }
}

/// `fmt::Write` into a byte buffer.
struct Bytes<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Bytes<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

const NS_PER_SEC: i64 = 1_000_000_000;

/// RFC 3339 in UTC with the microseconds Python's `isoformat` would show (none when zero):
/// `2024-05-29T16:26:40.123456Z`.
pub fn format_rfc3339(ns: i64) -> String {
    let secs = ns.div_euclid(NS_PER_SEC);
    let micros = ns.rem_euclid(NS_PER_SEC) / 1_000;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let mut out = format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60);
    if micros != 0 {
        let _ = write!(out, ".{micros:06}");
    }
    out.push('Z');
    out
}

/// Parses RFC 3339 (`Z` or `±hh:mm`, any number of fraction digits; nanoseconds kept).
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = text.get(r)?;
        s.bytes().all(|c| c.is_ascii_digit()).then(|| s.parse().ok())?
    };
    let (y, mo, d, h, mi, s) = (num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let mut i = 19;
    let mut frac_ns = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let digits = &text[start..i];
        if digits.is_empty() {
            return None;
        }
        let kept = &digits[..digits.len().min(9)];
        frac_ns = kept.parse::<i64>().ok()? * 10i64.pow(9 - kept.len() as u32);
    }
    let offset = match &text[i..] {
        "Z" | "z" => 0,
        // ASCII first: the byte offsets below must be character boundaries (a plugin wrote this).
        tz if tz.len() == 6 && tz.is_ascii() && (tz.starts_with('+') || tz.starts_with('-')) && &tz[3..4] == ":" => {
            let hh: i64 = tz[1..3].parse().ok()?;
            let mm: i64 = tz[4..6].parse().ok()?;
            let sign = if tz.starts_with('-') { -1 } else { 1 };
            sign * (hh * 3600 + mm * 60)
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo, d);
    let secs = days.checked_mul(86_400)? + h * 3600 + mi * 60 + s - offset;
    secs.checked_mul(NS_PER_SEC)?.checked_add(frac_ns)
}

/// Howard Hinnant's `days_from_civil`: days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of `days_from_civil`.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { yoe + era * 400 + 1 } else { yoe + era * 400 }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_of(e: &Execution) -> Vec<u8> {
        let mut json = Vec::new();
        e.write_protocol_json(&mut json);
        json
    }

    #[test]
    fn rfc3339_round_trips_at_microsecond_precision() {
        for (ns, text) in [
            (0, "1970-01-01T00:00:00Z"),
            (1_717_000_000_123_456_000, "2024-05-29T16:26:40.123456Z"),
            (1_717_000_001_500_000_000, "2024-05-29T16:26:41.500000Z"),
            (951_782_400_000_000_000, "2000-02-29T00:00:00Z"),
            (-1_000_000_000, "1969-12-31T23:59:59Z"),
        ] {
            assert_eq!(format_rfc3339(ns), text);
            assert_eq!(parse_rfc3339(text), Some(ns), "{text}");
        }
        assert_eq!(parse_rfc3339("2024-05-29T18:26:40.123456789+02:00"), Some(1_717_000_000_123_456_789));
        for bad in [
            "",
            "2024-05-29",
            "2024-13-01T00:00:00Z",
            "2024-05-29T16:26:40",
            "2024-05-29T16:26:40.Z",
            "2024-05-29T16:26:40+1é:0",
            "2024-05-29T16:26:40+é1:00",
            "2024-05-29T16:2é:40Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn protocol_fields_merge_back() {
        let e = Execution {
            job_name: "j".into(),
            key: make_key(1_717_000_000_123_456_000, "n"),
            started_ns: 1_717_000_000_123_456_000,
            finished_ns: Some(1_717_000_001_000_000_000),
            success: false,
            output: b"out".to_vec(),
            node_name: "n".into(),
            group: 1 << 60,
            attempt: 2,
            exit_code: Some(-9),
            error: Some("signal: killed".into()),
            output_truncated: true,
            output_size: 1 << 40,
            processor_errors: vec!["files: nope".into()],
            // Not in the protocol: a peer's answer leaves them as they were.
            cpu_time_us: None,
            peak_memory: None,
        };
        let mut json = Vec::new();
        e.write_protocol_json(&mut json);
        assert_eq!(serde_json::from_slice::<Value>(&json).unwrap(), Value::Object(e.protocol_fields()));
        let mut json = Vec::new();
        Execution { error: Some("quote \" and \\n".into()), ..Execution::default() }.write_protocol_json(&mut json);
        assert!(serde_json::from_slice::<Value>(&json).is_ok());
        let mut copy = Execution::default();
        copy.merge_protocol_fields(&e.protocol_fields(), b"out".to_vec()).unwrap();
        assert_eq!(copy, e);
        let mut measured = Execution { cpu_time_us: Some(5), peak_memory: Some(6), ..Execution::default() };
        measured.merge_protocol_fields(&e.protocol_fields(), b"out".to_vec()).unwrap();
        assert_eq!((measured.cpu_time_us, measured.peak_memory), (Some(5), Some(6)));
        assert!(!e.protocol_fields().contains_key("cpu_time_us"));
        let mut typed = Execution::default();
        let fields: ProtocolFields = serde_json::from_slice(&json_of(&e)).unwrap();
        typed.apply_protocol_fields(fields, b"out".to_vec()).unwrap();
        assert_eq!(typed, e);
        let mut nulls = e.clone();
        let fields: ProtocolFields = serde_json::from_str(r#"{"error": null, "exit_code": null, "x": 1}"#).unwrap();
        nulls.apply_protocol_fields(fields, Vec::new()).unwrap();
        assert_eq!((nulls.error, nulls.exit_code, nulls.attempt), (None, None, 2));
        // Left-out fields keep their value; the body is the new output.
        let mut partial = e.clone();
        partial.merge_protocol_fields(&Map::new(), b"new".to_vec()).unwrap();
        assert_eq!(partial.output, b"new");
        assert_eq!(partial.job_name, "j");
        let mut wrong = Map::new();
        wrong.insert("attempt".into(), Value::from("two"));
        assert!(e.clone().merge_protocol_fields(&wrong, Vec::new()).unwrap_err().contains("attempt"));
    }
}
