//! Go's value syntaxes, parsed one way for every config key that uses them: booleans
//! (`strconv.ParseBool`), durations (`time.ParseDuration`) and Dkron's memory sizes
//! (`validateMemoryLimit`). `config::Config` reaches them through its typed getters, so a key
//! cannot grow a dialect of its own.

/// Why a value does not parse; the caller adds the field name.
pub type Invalid = String;

/// Go's `strconv.ParseBool`.
pub fn parse_bool(text: &str) -> Result<bool, Invalid> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err("must be true or false".into()),
    }
}

const UNITS: [(&str, u128); 8] = [
    ("ns", 1),
    ("us", 1_000),
    ("\u{00b5}s", 1_000), // MICRO SIGN, as Go accepts
    ("\u{03bc}s", 1_000), // GREEK SMALL LETTER MU, as Go accepts
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];
/// The units above, as every duration error lists them (one wording for schedules and timeouts).
const DURATION_UNITS: &str = "ns, us (or µs, μs), ms, s, m or h";

/// Go's `time.ParseDuration`, in nanoseconds: an optional sign, then `<number><unit>` parts
/// (`1h30m`, `1.5s`, `-300ms`); `0` is the only value without a unit; it must fit an int64.
pub fn parse_duration(text: &str) -> Result<i64, Invalid> {
    let bad = |why: &str| format!("invalid Go duration: {why}");
    let (negative, body) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if body == "0" {
        return Ok(0);
    }
    if body.is_empty() {
        return Err(bad("empty"));
    }
    let limit: u128 = if negative { 1 << 63 } else { (1 << 63) - 1 };
    let mut total: u128 = 0;
    let mut rest = body;
    while !rest.is_empty() {
        let whole_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let whole = &rest[..whole_len];
        rest = &rest[whole_len..];
        let mut frac = "";
        if let Some(after) = rest.strip_prefix('.') {
            let n = after.bytes().take_while(u8::is_ascii_digit).count();
            frac = &after[..n];
            rest = &after[n..];
            if whole.is_empty() && frac.is_empty() {
                return Err(bad("expected a number"));
            }
        } else if whole.is_empty() {
            return Err(bad("expected a number"));
        }
        let unit_len = rest.find(|c: char| c == '.' || c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        if unit.is_empty() {
            return Err(bad(&format!("missing unit (use {DURATION_UNITS})")));
        }
        let scale = UNITS
            .iter()
            .find(|(u, _)| *u == unit)
            .map(|(_, s)| *s)
            .ok_or_else(|| bad(&format!("unknown unit '{}' (use {DURATION_UNITS})", unit.escape_debug())))?;
        let out_of_range = || bad("out of range (more than ~292 years)");
        let whole: u128 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| out_of_range())? };
        let mut value = whole.checked_mul(scale).ok_or_else(out_of_range)?;
        if !frac.is_empty() {
            // Go drops the fractional nanoseconds; digits past the 18th cannot change the result.
            let kept = &frac[..frac.len().min(18)];
            let digits: u128 = kept.parse().expect("ASCII digits");
            value = value.checked_add(digits * scale / 10u128.pow(kept.len() as u32)).ok_or_else(out_of_range)?;
        }
        total = total.checked_add(value).filter(|t| *t <= limit).ok_or_else(out_of_range)?;
    }
    Ok(if negative { (total as i128).wrapping_neg() as i64 } else { total as i64 })
}

const SIZE_UNITS: [(&str, u64); 15] = [
    ("", 1),
    ("B", 1),
    ("BYTES", 1),
    ("K", 1 << 10),
    ("KB", 1 << 10),
    ("KIB", 1 << 10),
    ("M", 1 << 20),
    ("MB", 1 << 20),
    ("MIB", 1 << 20),
    ("G", 1 << 30),
    ("GB", 1 << 30),
    ("GIB", 1 << 30),
    ("T", 1 << 40),
    ("TB", 1 << 40),
    ("TIB", 1 << 40),
];

/// Dkron's memory size (`mem_limit`): a positive integer of bytes, or a decimal number with a
/// unit `B`, `K(B)`, `M(B)`, `G(B)`, `T(B)` (case-insensitive, powers of 1024; `KiB`... too).
pub fn parse_byte_size(text: &str) -> Result<u64, Invalid> {
    const MAX: u64 = i64::MAX as u64;
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        // What Go's strconv.ParseInt(s, 10, 64) takes.
        if text.starts_with('-') || digits.bytes().all(|b| b == b'0') {
            return Err("must be greater than 0".into());
        }
        return match digits.parse::<u64>() {
            Ok(n) if n <= MAX => Ok(n),
            _ => Err("too large".into()),
        };
    }
    let upper = text.trim().to_ascii_uppercase();
    let number_len = upper.bytes().take_while(|b| b.is_ascii_digit() || *b == b'.').count();
    let (number, unit) = upper.split_at(number_len);
    if number.is_empty() {
        return Err("expected a number of bytes or a number with a unit".into());
    }
    if number.matches('.').count() > 1 || number == "." {
        return Err(format!("bad number {number:?}"));
    }
    let scale = SIZE_UNITS
        .iter()
        .find(|(u, _)| *u == unit)
        .map(|(_, s)| *s)
        .ok_or_else(|| format!("unknown unit '{}' (use B, K/KB, M/MB, G/GB or T/TB)", unit.escape_debug()))?;
    let value = number.parse::<f64>().map_err(|_| format!("bad number {number:?}"))? * scale as f64;
    if !value.is_finite() || value >= MAX as f64 {
        return Err("too large".into());
    }
    if value < 1.0 {
        return Err("must be at least 1 byte".into());
    }
    Ok(value as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_are_go_s() {
        for t in ["1", "t", "T", "TRUE", "true", "True"] {
            assert_eq!(parse_bool(t), Ok(true));
        }
        for f in ["0", "f", "F", "FALSE", "false", "False"] {
            assert_eq!(parse_bool(f), Ok(false));
        }
        for bad in ["", "yes", "tRUE", " true", "2"] {
            assert!(parse_bool(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn durations_are_go_s() {
        let cases: &[(&str, i64)] = &[
            ("0", 0),
            ("-0", 0),
            ("1s", 1_000_000_000),
            ("1.5s", 1_500_000_000),
            (".5s", 500_000_000),
            ("5.s", 5_000_000_000),
            ("1h30m", 5_400_000_000_000),
            ("-300ms", -300_000_000),
            ("+2us", 2_000),
            ("2µs", 2_000),
            ("1m0.000000001s", 60_000_000_001),
            ("9223372036854775807ns", i64::MAX),
            ("-9223372036854775808ns", i64::MIN),
            ("2562047h47m16.854775807s", i64::MAX),
        ];
        for (text, ns) in cases {
            assert_eq!(parse_duration(text), Ok(*ns), "{text}");
        }
        for bad in [
            "", "5", "-", "s", "1", "1x", "1.s.", "..1s", "1 s", "9223372036854775808ns", "2562048h", "1e3s",
            "99999999999999999999999999999999999999999h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sizes_are_dkron_s() {
        let cases: &[(&str, u64)] = &[
            ("1048576", 1 << 20),
            ("+5", 5),
            ("512MB", 512 << 20),
            ("1.5g", 3 << 29),
            ("2k", 2048),
            ("1KiB", 1024),
        ];
        for (text, bytes) in cases {
            assert_eq!(parse_byte_size(text), Ok(*bytes), "{text}");
        }
        for bad in ["", "0", "-1", "0.1B", "abc", "1..5M", "1 PB", "9223372036854775808", &"9".repeat(400), "1e3"] {
            assert!(parse_byte_size(bad).is_err(), "{bad:?}");
        }
    }
}
