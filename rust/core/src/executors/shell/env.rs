//! The shell executor's `env`: Dkron's `K=V,K2=V2`, a JSON list of `"K=V"` strings, or a JSON
//! object. JSON objects keep their order (later variables win), which `serde_json::Value` would
//! sort away, hence the small ordered tree here.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::config::{key_path, Config, ConfigError};

/// The variables of `env`, in order. Errors name `<prefix>.env` (or `<prefix>.env.KEY` for a
/// bad value in a JSON object).
pub fn parse(config: &Config<'_>, text: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let bad = |reason: String| config.error("env", text, reason);
    let stripped = super::py_trim(text);
    let entries: Vec<String> = if stripped.starts_with(['[', '{']) {
        let parsed: Json = serde_json::from_str(stripped)
            .map_err(|e| bad(format!("looks like JSON but does not parse: {e}")))?;
        match parsed {
            Json::Array(items) => items
                .into_iter()
                .map(|item| match item {
                    Json::String(s) => Ok(s),
                    other => Err(bad(format!("list entries must be \"K=V\" strings, got {}", other.compact()))),
                })
                .collect::<Result<_, _>>()?,
            Json::Object(pairs) => {
                let mut entries = Vec::with_capacity(pairs.len());
                for (key, value) in pairs {
                    if key.contains('=') {
                        return Err(bad(format!("variable name {key:?} contains '='")));
                    }
                    let value = value.config_string().map_err(|why| {
                        ConfigError::new(key_path(&config.field("env"), &key), value.compact(), why)
                    })?;
                    entries.push(format!("{key}={value}"));
                }
                entries
            }
            _ => unreachable!("JSON text starting with [ or {{ is an array or an object"),
        }
    } else {
        // Dkron splits on commas, so values cannot contain commas in this form.
        text.split(',').filter(|e| !e.is_empty()).map(str::to_string).collect()
    };
    entries
        .into_iter()
        .map(|entry| match entry.split_once('=') {
            Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
            _ => Err(bad(format!("entry {entry:?} is not KEY=VALUE"))),
        })
        .collect()
}

/// A JSON value whose objects keep their keys in document order (a repeated key keeps its first
/// place and takes the last value, like a Python dict).
#[derive(Debug, Clone, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    /// Dkron's string form of a config value: strings as they are, booleans and numbers as
    /// text, arrays and objects as compact JSON; null has none.
    fn config_string(&self) -> Result<String, String> {
        match self {
            Json::Null => Err("null is not a valid config value (use a string)".into()),
            Json::String(s) => Ok(s.clone()),
            Json::Float(f) => Ok(python_float_repr(*f)),
            _ => Ok(self.compact()),
        }
    }

    /// Compact JSON text, as `orjson.dumps` writes it.
    fn compact(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) {
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Int(n) => out.push_str(&n.to_string()),
            Json::Float(f) => out.push_str(&json_float(*f)),
            Json::String(s) => out.push_str(&serde_json::to_string(s).expect("a string is always JSON")),
            Json::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write(out);
                }
                out.push(']');
            }
            Json::Object(pairs) => {
                out.push('{');
                for (i, (key, value)) in pairs.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    Json::String(key.clone()).write(out);
                    out.push(':');
                    value.write(out);
                }
                out.push('}');
            }
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
        Ok(Json::Int(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
        Ok(Json::Int(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Json, E> {
        Ok(Json::Float(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut pairs: Vec<(String, Json)> = Vec::new();
        while let Some((key, value)) = map.next_entry::<String, Json>()? {
            match pairs.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = value,
                None => pairs.push((key, value)),
            }
        }
        Ok(Json::Object(pairs))
    }
}

/// Python's `repr` of a float (the job model's rule for a number value): `0.0001`, `100.0`,
/// `1e-05`, `1e+16`.
fn python_float_repr(value: f64) -> String {
    float_text(value, -4..16, |e| format!("e{}{:02}", if e < 0 { '-' } else { '+' }, e.unsigned_abs()))
}

/// A float inside compact JSON, as orjson writes it: `0.00001`, `100.0`, `1e-6`, `1e16`.
fn json_float(value: f64) -> String {
    float_text(value, -5..16, |e| format!("e{e}"))
}

/// The shortest digits that read back as `value`, positional when the decimal exponent is in
/// `positional` (with `.0` when whole), otherwise `d.ddd` and the exponent as `exponent` writes it.
fn float_text(value: f64, positional: std::ops::Range<i32>, exponent_text: fn(i32) -> String) -> String {
    let scientific = format!("{value:e}"); // Rust's shortest round-trip digits: "-1.25e-7"
    let (mantissa, exponent) = scientific.split_once('e').expect("{:e} writes an exponent");
    let exponent: i32 = exponent.parse().expect("{:e} writes an integer exponent");
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if !positional.contains(&exponent) {
        let (first, rest) = digits.split_at(1);
        let dot = if rest.is_empty() { "" } else { "." };
        return format!("{sign}{first}{dot}{rest}{}", exponent_text(exponent));
    }
    let point = exponent + 1; // digits before the decimal point
    if point <= 0 {
        return format!("{sign}0.{}{digits}", "0".repeat(point.unsigned_abs() as usize));
    }
    let point = point as usize;
    if digits.len() <= point {
        format!("{sign}{digits}{}.0", "0".repeat(point - digits.len()))
    } else {
        format!("{sign}{}.{}", &digits[..point], &digits[point..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_read_like_python() {
        let cases: &[(f64, &str)] = &[
            (1.5, "1.5"),
            (100.0, "100.0"),
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.25e20, "1.25e+20"),
            (-2.5e-7, "-2.5e-07"),
            (123.456, "123.456"),
            (0.1 + 0.2, "0.30000000000000004"),
            (1e100, "1e+100"),
        ];
        for (value, text) in cases {
            assert_eq!(python_float_repr(*value), *text, "{value:e}");
        }
        let cases: &[(f64, &str)] = &[
            (1e15, "1000000000000000.0"),
            (1e16, "1e16"),
            (1.5e16, "1.5e16"),
            (0.0001, "0.0001"),
            (0.00001, "0.00001"),
            (1e-6, "1e-6"),
            (1.25e-7, "1.25e-7"),
            (-0.0, "-0.0"),
            (5e-324, "5e-324"),
            (f64::MAX, "1.7976931348623157e308"),
        ];
        for (value, text) in cases {
            assert_eq!(json_float(*value), *text, "{value:e}");
        }
    }

    #[test]
    fn objects_keep_their_order_and_nested_values_are_compact_json() {
        let parsed: Json = serde_json::from_str(r#"{"b": [1, 2.0, {"z": 1, "a": null}], "a": true, "b": "again"}"#).unwrap();
        let Json::Object(pairs) = &parsed else { panic!("{parsed:?}") };
        assert_eq!(pairs[0], ("b".to_string(), Json::String("again".into())));
        let nested: Json = serde_json::from_str(r#"[1, 2.0, {"z": 1, "a": null}, "q\"", 99999999999999999999]"#).unwrap();
        assert_eq!(nested.compact(), r#"[1,2.0,{"z":1,"a":null},"q\"",1e20]"#);
    }
}
