//! Message headers (RFC 3164 and RFC 5424), structured data, and fitting a body into a budget.
//!
//! RFC 3164 comes in two forms:
//! * local (unix sockets), exactly what Go's log/syslog writes: `<PRI>Mmm _d hh:mm:ss TAG[PID]: MSG`
//!   with no host name (the daemon adds its own);
//! * remote (UDP/TCP): the BSD form with a host name, `<PRI>Mmm _d hh:mm:ss HOST TAG[PID]: MSG`.
//!   Go writes an RFC 3339 time stamp there instead, a hybrid some receivers misparse; the
//!   plain BSD form is what every receiver understands.
//!
//! Both use local time, as Go does. RFC 5424 uses UTC with microseconds.
//!
//! RFC 5424 section 6.4: a MSG encoded in UTF-8 MUST start with the BOM, so a body that is valid
//! UTF-8 gets one (split parts each start with it, before `(part i/n) `); other bytes go
//! without, as MSG-ANY. RFC 3164 has no such rule and its receivers (and Go) know no BOM: none.

use super::config::{Format, Oversize};

const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
/// RFC 5612's example enterprise number, reserved for documentation and private use.
pub const SD_ID: &str = "dkron@32473";
/// The UTF-8 byte order mark that starts an RFC 5424 MSG in UTF-8.
pub const BOM: &[u8] = b"\xEF\xBB\xBF";
/// A body piece is never shorter than this: below it the header would be most of every message.
const MIN_PIECE: usize = 16;

/// What the header of every message of one execution depends on.
pub struct HeaderInfo<'a> {
    pub format: Format,
    pub pri: u8,
    pub timestamp_ns: i64,
    /// None writes the local 3164 form (no host name); ignored by 5424, which needs `host`.
    pub host: Option<&'a str>,
    pub tag: &'a str,
    pub pid: u32,
    pub job_name: &'a str,
    pub key: &'a str,
    pub success: bool,
    pub exit_code: Option<i32>,
}

/// The header, up to and including the space before MSG.
pub fn header(h: &HeaderInfo<'_>) -> Vec<u8> {
    match h.format {
        Format::Rfc3164 => {
            let tm = broken_down(h.timestamp_ns, true);
            let stamp = format!("{} {:>2} {:02}:{:02}:{:02}", MONTHS[tm.mon], tm.mday, tm.hour, tm.min, tm.sec);
            match h.host {
                Some(host) => format!("<{}>{stamp} {host} {}[{}]: ", h.pri, h.tag, h.pid).into_bytes(),
                None => format!("<{}>{stamp} {}[{}]: ", h.pri, h.tag, h.pid).into_bytes(),
            }
        }
        Format::Rfc5424 => {
            let tm = broken_down(h.timestamp_ns, false);
            let micros = h.timestamp_ns.rem_euclid(1_000_000_000) / 1_000;
            let mut sd = format!(
                "[{SD_ID} job=\"{}\" execution=\"{}\" success=\"{}\"",
                sd_escape(h.job_name),
                sd_escape(h.key),
                h.success
            );
            if let Some(code) = h.exit_code {
                sd.push_str(&format!(" exit_code=\"{code}\""));
            }
            sd.push(']');
            format!(
                "<{}>1 {:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{micros:06}Z {} {} {} - {sd} ",
                h.pri,
                tm.year,
                tm.mon + 1,
                tm.mday,
                tm.hour,
                tm.min,
                tm.sec,
                h.host.unwrap_or("-"),
                h.tag,
                h.pid
            )
            .into_bytes()
        }
    }
}

/// The header to put before `body`: with the BOM after it when the format is RFC 5424 and the
/// body is valid UTF-8. Pieces cut from such a body stay valid UTF-8 (`fit` cuts between
/// characters), so the BOM holds for every part.
pub fn with_bom(header: &[u8], body: &[u8], format: Format) -> Vec<u8> {
    let mut h = header.to_vec();
    if format == Format::Rfc5424 && std::str::from_utf8(body).is_ok() {
        h.extend_from_slice(BOM);
    }
    h
}

/// RFC 5424 section 6.3.3: `"`, `\` and `]` are escaped inside a PARAM-VALUE.
pub fn sd_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

struct Tm {
    year: i32,
    mon: usize,
    mday: i32,
    hour: i32,
    min: i32,
    sec: i32,
}

fn broken_down(timestamp_ns: i64, local: bool) -> Tm {
    let t: libc::time_t = timestamp_ns.div_euclid(1_000_000_000) as libc::time_t;
    // SAFETY: both functions only write the tm we pass; the _r forms are thread-safe.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let ok = unsafe {
        if local {
            !libc::localtime_r(&t, &mut tm).is_null()
        } else {
            !libc::gmtime_r(&t, &mut tm).is_null()
        }
    };
    if !ok {
        return Tm { year: 1970, mon: 0, mday: 1, hour: 0, min: 0, sec: 0 };
    }
    Tm {
        year: tm.tm_year + 1900,
        mon: tm.tm_mon.clamp(0, 11) as usize,
        mday: tm.tm_mday,
        hour: tm.tm_hour,
        min: tm.tm_min,
        sec: tm.tm_sec,
    }
}

/// The body's header + body messages, none longer than `budget` bytes. A body that does not fit
/// is split into `(part i/n) ` pieces or truncated with a marker saying how much was dropped:
/// never cut silently. None when the header leaves no useful room.
pub fn fit(header: &[u8], body: &[u8], budget: usize, oversize: Oversize) -> Option<Vec<Vec<u8>>> {
    let room = budget.checked_sub(header.len())?;
    let whole = |b: &[u8]| {
        let mut m = Vec::with_capacity(header.len() + b.len());
        m.extend_from_slice(header);
        m.extend_from_slice(b);
        m
    };
    if body.len() <= room {
        return Some(vec![whole(body)]);
    }
    match oversize {
        Oversize::Truncate => {
            let total = body.len();
            // The marker's length with the largest numbers it can hold.
            let longest = marker(total, total).len();
            let keep = utf8_floor(body, room.checked_sub(longest).filter(|k| *k >= MIN_PIECE)?);
            let mut m = whole(&body[..keep]);
            m.extend_from_slice(marker(total - keep, total).as_bytes());
            Some(vec![m])
        }
        Oversize::Split => {
            let mut digits = 1;
            loop {
                let prefix_len = "(part /) ".len() + 2 * digits;
                let piece = room.checked_sub(prefix_len).filter(|p| *p >= MIN_PIECE)?;
                let pieces = chunks(body, piece);
                let n = pieces.len();
                if n.to_string().len() > digits {
                    digits = n.to_string().len();
                    continue;
                }
                return Some(
                    pieces
                        .iter()
                        .enumerate()
                        .map(|(i, p)| {
                            let mut m = whole(format!("(part {}/{n}) ", i + 1).as_bytes());
                            m.extend_from_slice(p);
                            m
                        })
                        .collect(),
                );
            }
        }
    }
}

fn marker(dropped: usize, total: usize) -> String {
    format!(" [truncated: {dropped} of {total} bytes dropped]")
}

/// Pieces of at most `size` bytes, cut between UTF-8 characters where the text allows.
fn chunks(body: &[u8], size: usize) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = body;
    while rest.len() > size {
        let cut = utf8_floor(rest, size);
        out.push(&rest[..cut]);
        rest = &rest[cut..];
    }
    if !rest.is_empty() || out.is_empty() {
        out.push(rest);
    }
    out
}

/// `at`, moved back (at most 3 bytes) so that it does not fall inside a UTF-8 sequence.
fn utf8_floor(bytes: &[u8], at: usize) -> usize {
    let mut cut = at;
    while cut > at.saturating_sub(3) && cut > 0 && cut < bytes.len() && (bytes[cut] & 0xC0) == 0x80 {
        cut -= 1;
    }
    if cut == 0 {
        at
    } else {
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(format: Format, host: Option<&'static str>) -> HeaderInfo<'static> {
        HeaderInfo {
            format,
            pri: 78,
            // 2024-03-05T07:08:09.123456789Z
            timestamp_ns: 1_709_622_489_123_456_789,
            host,
            tag: "dkron",
            pid: 42,
            job_name: "job \"a\" [x] \\ y",
            key: "1709622489123456789-node",
            success: true,
            exit_code: Some(0),
        }
    }

    #[test]
    fn rfc3164_local_is_go_form() {
        let h = String::from_utf8(header(&info(Format::Rfc3164, None))).unwrap();
        // Local time: check the shape, not the zone-dependent hour.
        let re_ok = h.starts_with("<78>Mar  ") && h.ends_with(" dkron[42]: ") && h.len() == "<78>Mar  5 07:08:09 dkron[42]: ".len();
        assert!(re_ok, "{h:?}");
        let remote = String::from_utf8(header(&info(Format::Rfc3164, Some("host1")))).unwrap();
        assert!(remote.ends_with(" host1 dkron[42]: "), "{remote:?}");
    }

    #[test]
    fn rfc5424_with_escaped_structured_data() {
        let h = String::from_utf8(header(&info(Format::Rfc5424, Some("host1")))).unwrap();
        assert_eq!(
            h,
            "<78>1 2024-03-05T07:08:09.123456Z host1 dkron 42 - [dkron@32473 job=\"job \\\"a\\\" [x\\] \\\\ y\" \
             execution=\"1709622489123456789-node\" success=\"true\" exit_code=\"0\"] "
        );
        let mut i = info(Format::Rfc5424, None);
        i.exit_code = None;
        i.success = false;
        let h = String::from_utf8(header(&i)).unwrap();
        assert!(h.contains(" - dkron 42 - [") && h.ends_with("success=\"false\"] "), "{h}");
    }

    #[test]
    fn fits_whole_or_splits_with_numbered_parts() {
        let body = b"0123456789".repeat(10);
        assert_eq!(fit(b"H: ", &body, 200, Oversize::Split).unwrap(), vec![[b"H: ".as_slice(), &body].concat()]);
        let parts = fit(b"H: ", &body, 3 + 12 + 30, Oversize::Split).unwrap();
        assert_eq!(parts.len(), 4);
        assert!(parts.iter().all(|p| p.len() <= 45));
        assert_eq!(&parts[0][..15], b"H: (part 1/4) 0");
        let joined: Vec<u8> = parts.iter().flat_map(|p| p[14..].to_vec()).collect();
        assert_eq!(joined, body);
    }

    #[test]
    fn split_grows_the_part_number_width() {
        let body = vec![b'x'; 20 * 10];
        let parts = fit(b"", &body, 11 + 21, Oversize::Split).unwrap();
        // One digit would give 10 parts of 21 bytes; two digits leave 19 bytes: 11 parts.
        assert_eq!(parts.len(), 11);
        assert!(parts[10].starts_with(b"(part 11/11) ") && parts.iter().all(|p| p.len() <= 32), "{parts:?}");
    }

    #[test]
    fn truncation_is_marked() {
        let body = vec![b'y'; 1000];
        let m = fit(b"H: ", &body, 100, Oversize::Truncate).unwrap();
        assert_eq!(m.len(), 1);
        let text = String::from_utf8(m[0].clone()).unwrap();
        assert!(text.len() <= 100 && text.ends_with(" of 1000 bytes dropped]"), "{text}");
        let kept = text.find(" [truncated").unwrap() - 3;
        assert!(text.contains(&format!("[truncated: {} of", 1000 - kept)));
    }

    #[test]
    fn cuts_between_utf8_characters() {
        let body = "é".repeat(50); // 2 bytes each
        for budget in 30..40 {
            for p in fit(b"", body.as_bytes(), budget, Oversize::Split).unwrap() {
                assert!(std::str::from_utf8(&p).is_ok(), "budget {budget}");
            }
        }
        let t = fit(b"", body.as_bytes(), 60, Oversize::Truncate).unwrap();
        assert!(std::str::from_utf8(&t[0]).is_ok());
    }

    #[test]
    fn bom_only_for_utf8_in_rfc5424() {
        assert_eq!(with_bom(b"H ", "é".as_bytes(), Format::Rfc5424), b"H \xEF\xBB\xBF");
        assert_eq!(with_bom(b"H ", b"", Format::Rfc5424), b"H \xEF\xBB\xBF");
        assert_eq!(with_bom(b"H ", b"\xff\xfe", Format::Rfc5424), b"H ");
        assert_eq!(with_bom(b"H ", "é".as_bytes(), Format::Rfc3164), b"H ");
    }

    #[test]
    fn no_room_is_none() {
        assert!(fit(&[b'h'; 100], b"a longer body than the room", 110, Oversize::Split).is_none());
        assert!(fit(&[b'h'; 100], b"fits", 110, Oversize::Split).is_some());
    }
}
