//! The syslog sink's configuration: parsed and checked from a processor's string map, so a job
//! that can never log is refused when it is validated rather than when it first runs.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::{Config, ConfigError};

/// Where Go's log/syslog (and so Dkron) looks for the local daemon, in this order.
pub const LOCAL_PATHS: [&str; 3] = ["/dev/log", "/var/run/syslog", "/var/run/log"];
/// rsyslog's default `maxMessageSize`: a longer message would be cut by the daemon without a trace.
pub const DEFAULT_MAX_MESSAGE: usize = 8192;
/// Enough for the longest 5424 header we write plus a useful piece of output.
pub const MIN_MAX_MESSAGE: usize = 480;
pub const MAX_MAX_MESSAGE: usize = 16 << 20;
/// The largest UDP payload over IPv4 (65,535 minus the IP and UDP headers).
pub const UDP_MAX_PAYLOAD: usize = 65_507;
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
pub const MAX_TIMEOUT: Duration = Duration::from_secs(300);
pub const DEFAULT_TAG: &str = "dkron";
/// RELP: how many unacknowledged messages a destination keeps for resending (each at most
/// `max_message` bytes, so the memory is bounded by their product: 8 MiB at the defaults).
pub const DEFAULT_QUEUE_SIZE: usize = 1000;
pub const MAX_QUEUE_SIZE: usize = 1_000_000;
const DEFAULT_PORT: u16 = 514;

/// Keys the sink reads; `forward` and `reporting_node` belong to the processor chain.
pub const KEYS: [&str; 14] = [
    "transport",
    "address",
    "format",
    "framing",
    "facility",
    "severity",
    "failure_severity",
    "tag",
    "hostname",
    "per_line",
    "max_message",
    "oversize",
    "timeout",
    "queue_size",
];
/// Where the processor's keys live in a job document: errors name `processors.syslog.<key>`.
pub const FIELD_PREFIX: &str = "processors.syslog";
/// Keys of the processor chain, allowed beside the sink's own.
const CHAIN_KEYS: [&str; 2] = ["forward", "reporting_node"];

const FACILITIES: [(&str, u8); 26] = [
    ("kern", 0),
    ("user", 1),
    ("mail", 2),
    ("daemon", 3),
    ("auth", 4),
    ("syslog", 5),
    ("lpr", 6),
    ("news", 7),
    ("uucp", 8),
    ("cron", 9),
    ("authpriv", 10),
    ("ftp", 11),
    ("ntp", 12),
    ("security", 13),
    ("audit", 13),
    ("console", 14),
    ("clock", 15),
    ("solaris-cron", 15),
    ("local0", 16),
    ("local1", 17),
    ("local2", 18),
    ("local3", 19),
    ("local4", 20),
    ("local5", 21),
    ("local6", 22),
    ("local7", 23),
];

const SEVERITIES: [(&str, u8); 11] = [
    ("emerg", 0),
    ("panic", 0),
    ("alert", 1),
    ("crit", 2),
    ("err", 3),
    ("error", 3),
    ("warning", 4),
    ("warn", 4),
    ("notice", 5),
    ("info", 6),
    ("debug", 7),
];

/// How the sink reaches the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Destination {
    /// Go's local search: unixgram, then unix stream, on each path in turn.
    Local(Vec<PathBuf>),
    UnixDatagram(PathBuf),
    UnixStream(PathBuf),
    Udp(String, u16),
    Tcp(String, u16),
    /// RELP over TCP: every message acknowledged by the daemon (rsyslog's imrelp).
    Relp(String, u16),
}

impl Destination {
    pub fn is_local(&self) -> bool {
        matches!(self, Self::Local(_) | Self::UnixDatagram(_) | Self::UnixStream(_))
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Local(paths) => {
                let paths: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
                write!(f, "local socket ({})", paths.join(", "))
            }
            Self::UnixDatagram(p) => write!(f, "unixgram:{}", p.display()),
            Self::UnixStream(p) => write!(f, "unix:{}", p.display()),
            Self::Udp(h, p) if h.contains(':') => write!(f, "udp:[{h}]:{p}"),
            Self::Udp(h, p) => write!(f, "udp:{h}:{p}"),
            Self::Tcp(h, p) if h.contains(':') => write!(f, "tcp:[{h}]:{p}"),
            Self::Tcp(h, p) => write!(f, "tcp:{h}:{p}"),
            Self::Relp(h, p) if h.contains(':') => write!(f, "relp:[{h}]:{p}"),
            Self::Relp(h, p) => write!(f, "relp:{h}:{p}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Rfc3164,
    Rfc5424,
}

/// How messages are delimited on a stream (TCP or unix stream) connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Framing {
    /// RFC 6587 octet counting: `LEN SP MSG`; embedded newlines survive.
    Octet,
    /// A trailing LF; the output is then sent one line per message, since an LF would end it.
    Lf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Oversize {
    /// Several messages, each starting `(part i/n) `.
    Split,
    /// One message, ending with ` [truncated: N of M bytes dropped]`.
    Truncate,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SyslogConfig {
    pub destination: Destination,
    pub format: Format,
    /// None for datagrams; for `Local` it applies if the socket found is a stream.
    pub framing: Option<Framing>,
    pub facility: u8,
    pub severity: u8,
    pub failure_severity: u8,
    pub tag: String,
    /// None: the machine's host name, looked up when the sink is made.
    pub hostname: Option<String>,
    pub per_line: bool,
    pub max_message: usize,
    pub oversize: Oversize,
    pub timeout: Duration,
    /// RELP only: the bound of the resend queue, in messages.
    pub queue_size: usize,
}

type Result<T> = std::result::Result<T, ConfigError>;

impl SyslogConfig {
    /// The processor's config (`config`'s prefix is normally `FIELD_PREFIX`); errors name the
    /// full dotted field. Booleans and durations are Go's, through `Config`'s getters.
    pub fn parse(config: &Config<'_>) -> Result<Self> {
        let allowed: Vec<&str> = KEYS.iter().chain(&CHAIN_KEYS).copied().collect();
        config.only(&allowed)?;
        let get = |key: &str| config.get(key);

        let destination = parse_destination(config)?;
        let format = match get("format") {
            None => {
                if destination.is_local() {
                    Format::Rfc3164
                } else {
                    Format::Rfc5424
                }
            }
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "rfc3164" | "3164" | "bsd" => Format::Rfc3164,
                "rfc5424" | "5424" => Format::Rfc5424,
                _ => return Err(config.error("format", v, "must be rfc3164 or rfc5424")),
            },
        };
        let framing = parse_framing(config, &destination)?;
        let facility = match get("facility") {
            None => 9,
            Some(v) => lookup(v, &FACILITIES, 23).ok_or_else(|| {
                config.error("facility", v, "unknown facility; use a name such as cron, daemon, user or local0..local7, or 0..23")
            })?,
        };
        let severity = parse_severity(config, "severity", 6)?;
        let failure_severity = parse_severity(config, "failure_severity", 3)?;
        let tag = match get("tag") {
            None => DEFAULT_TAG.to_string(),
            Some(v) => check_tag(v).map_err(|why| config.error("tag", v, why))?,
        };
        let hostname = match get("hostname") {
            None => None,
            Some(v) => Some(check_hostname(v).map_err(|why| config.error("hostname", v, why))?),
        };
        let per_line = config.bool("per_line", false)?;
        let max_message = parse_max_message(config, &destination)?;
        let oversize = match get("oversize") {
            None => Oversize::Split,
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "split" => Oversize::Split,
                "truncate" => Oversize::Truncate,
                _ => return Err(config.error("oversize", v, "must be split or truncate")),
            },
        };
        let timeout = parse_timeout(config)?;
        let queue_size = parse_queue_size(config, &destination)?;
        Ok(Self {
            destination,
            format,
            framing,
            facility,
            severity,
            failure_severity,
            tag,
            hostname,
            per_line,
            max_message,
            oversize,
            timeout,
            queue_size,
        })
    }
}

fn lookup(value: &str, table: &[(&str, u8)], max: u8) -> Option<u8> {
    if let Ok(n) = value.parse::<u8>() {
        return (n <= max).then_some(n);
    }
    // Go's and C's constant names (LOG_CRON) are accepted too.
    let lower = value.to_ascii_lowercase();
    let name = lower.strip_prefix("log_").unwrap_or(&lower);
    table.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
}

fn parse_severity(config: &Config<'_>, key: &str, default: u8) -> Result<u8> {
    match config.get(key) {
        None => Ok(default),
        Some(v) => lookup(v, &SEVERITIES, 7).ok_or_else(|| {
            config.error(key, v, "unknown severity; use emerg, alert, crit, err, warning, notice, info, debug or 0..7")
        }),
    }
}

fn parse_destination(config: &Config<'_>) -> Result<Destination> {
    let (transport, address) = (config.get("transport"), config.get("address"));
    let transport_name = transport.unwrap_or("local").to_ascii_lowercase();
    let path = |kind: &str| -> Result<PathBuf> {
        match address {
            Some(a) if !a.is_empty() && !a.contains('\0') => Ok(PathBuf::from(a)),
            Some(a) => Err(config.error("address", a, "must be a socket path")),
            None => Err(config.error("address", "", format!("a socket path is required for transport {kind}"))),
        }
    };
    match transport_name.as_str() {
        "local" | "auto" => Ok(Destination::Local(match address {
            None => LOCAL_PATHS.iter().map(PathBuf::from).collect(),
            Some(_) => vec![path("local")?],
        })),
        "unixgram" => Ok(Destination::UnixDatagram(path("unixgram")?)),
        "unix" => Ok(Destination::UnixStream(path("unix")?)),
        "udp" | "tcp" | "relp" => {
            let Some(a) = address else {
                return Err(config.error("address", "", format!("host:port is required for transport {transport_name}")));
            };
            let (host, port) = parse_host_port(a).map_err(|why| config.error("address", a, why))?;
            Ok(match transport_name.as_str() {
                "udp" => Destination::Udp(host, port),
                "tcp" => Destination::Tcp(host, port),
                _ => Destination::Relp(host, port),
            })
        }
        _ => Err(config.error(
            "transport",
            transport.unwrap_or_default(),
            "must be local, unixgram, unix, udp, tcp or relp",
        )),
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`; the port defaults to 514 (RELP has no
/// registered port either: rsyslog's examples use 514 or 2514, so it must usually be given). Names are resolved
/// when connecting, so a DNS change is picked up on reconnect. The error is the reason only.
pub fn parse_host_port(a: &str) -> std::result::Result<(String, u16), String> {
    let bad = |why: &str| why.to_string();
    let (host, port) = if let Some(rest) = a.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(|| bad("an IPv6 address needs a closing ]"))?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':').ok_or_else(|| bad("expected :port after ]"))?)),
        }
    } else if a.matches(':').count() > 1 {
        (a, None) // a bare IPv6 address
    } else {
        match a.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (a, None),
        }
    };
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '/' || c == '\0') {
        return Err(bad("must be host:port"));
    }
    if host.contains(':') && host.parse::<std::net::Ipv6Addr>().is_err() {
        return Err(bad("not a valid IPv6 address"));
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => return Err(bad("the port must be a number from 1 to 65535")),
        },
    };
    Ok((host.to_string(), port))
}

fn parse_framing(config: &Config<'_>, destination: &Destination) -> Result<Option<Framing>> {
    let stream_default = match destination {
        Destination::Tcp(..) => Some(Framing::Octet),
        // What Go writes to a stream socket, and what syslog-ng's unix-stream source expects.
        Destination::UnixStream(_) | Destination::Local(_) => Some(Framing::Lf),
        // RELP frames each message itself (DATALEN).
        Destination::UnixDatagram(_) | Destination::Udp(..) | Destination::Relp(..) => None,
    };
    let Some(v) = config.get("framing") else { return Ok(stream_default) };
    if stream_default.is_none() {
        return Err(config.error("framing", v, "only applies to the tcp, unix and local transports (relp frames messages itself)"));
    }
    match v.to_ascii_lowercase().as_str() {
        "octet" | "octet-counting" | "octet_counting" => Ok(Some(Framing::Octet)),
        "lf" | "newline" => Ok(Some(Framing::Lf)),
        _ => Err(config.error("framing", v, "must be octet or lf")),
    }
}

fn check_tag(v: &str) -> std::result::Result<String, &'static str> {
    // RFC 5424 APP-NAME: 1..48 printable ASCII. `:` and brackets would break 3164 parsing, as
    // Dkron's own tag `[dkron]` does.
    if v.is_empty() || v.len() > 48 {
        return Err("must be 1 to 48 characters");
    }
    if !v.bytes().all(|b| (33..=126).contains(&b) && !matches!(b, b':' | b'[' | b']')) {
        return Err("must be printable ASCII without spaces, ':', '[' or ']'");
    }
    Ok(v.to_string())
}

fn check_hostname(v: &str) -> std::result::Result<String, &'static str> {
    if v.is_empty() || v.len() > 255 || !v.bytes().all(|b| (33..=126).contains(&b)) {
        return Err("must be 1 to 255 printable ASCII characters without spaces");
    }
    Ok(v.to_string())
}

fn parse_max_message(config: &Config<'_>, destination: &Destination) -> Result<usize> {
    let Some(v) = config.get("max_message") else {
        return Ok(DEFAULT_MAX_MESSAGE);
    };
    let n: usize = v.trim().parse().map_err(|_| config.error("max_message", v, "must be a number of bytes"))?;
    if !(MIN_MAX_MESSAGE..=MAX_MAX_MESSAGE).contains(&n) {
        return Err(config.error(
            "max_message",
            v,
            format!("must be between {MIN_MAX_MESSAGE} and {MAX_MAX_MESSAGE} bytes"),
        ));
    }
    if matches!(destination, Destination::Udp(..)) && n > UDP_MAX_PAYLOAD {
        return Err(config.error("max_message", v, format!("UDP carries at most {UDP_MAX_PAYLOAD} bytes")));
    }
    Ok(n)
}

fn parse_queue_size(config: &Config<'_>, destination: &Destination) -> Result<usize> {
    let Some(v) = config.get("queue_size") else { return Ok(DEFAULT_QUEUE_SIZE) };
    if !matches!(destination, Destination::Relp(..)) {
        return Err(config.error("queue_size", v, "only applies to the relp transport (the others do not know what was lost)"));
    }
    match v.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_QUEUE_SIZE).contains(&n) => Ok(n),
        _ => Err(config.error("queue_size", v, format!("must be a number of messages from 1 to {MAX_QUEUE_SIZE}"))),
    }
}

/// A Go duration (`500ms`, `2s`, `1m30s`), more than 0 and at most 5m; unset is the default.
fn parse_timeout(config: &Config<'_>) -> Result<Duration> {
    let Some(v) = config.get("timeout") else { return Ok(DEFAULT_TIMEOUT) };
    match config.duration("timeout")? {
        Some(d) if d <= MAX_TIMEOUT => Ok(d),
        // None: empty or zero, which would mean "wait forever" here.
        _ => Err(config.error("timeout", v, "must be a duration such as 500ms or 2s, more than 0 and at most 5m")),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn cfg(pairs: &[(&str, &str)]) -> Result<SyslogConfig> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        SyslogConfig::parse(&Config::new(&map, FIELD_PREFIX))
    }

    #[test]
    fn defaults_match_dkron() {
        let c = cfg(&[("forward", "true"), ("reporting_node", "n1")]).unwrap();
        assert_eq!(c.destination, Destination::Local(LOCAL_PATHS.iter().map(PathBuf::from).collect()));
        assert_eq!((c.format, c.facility, c.severity, c.failure_severity), (Format::Rfc3164, 9, 6, 3));
        assert_eq!((c.tag.as_str(), c.per_line, c.max_message), ("dkron", false, DEFAULT_MAX_MESSAGE));
        assert_eq!((c.framing, c.oversize, c.timeout), (Some(Framing::Lf), Oversize::Split, DEFAULT_TIMEOUT));
    }

    #[test]
    fn network_defaults() {
        let c = cfg(&[("transport", "tcp"), ("address", "127.0.0.1:6514")]).unwrap();
        assert_eq!(c.destination, Destination::Tcp("127.0.0.1".into(), 6514));
        assert_eq!((c.format, c.framing), (Format::Rfc5424, Some(Framing::Octet)));
        let c = cfg(&[("transport", "UDP"), ("address", "[::1]")]).unwrap();
        assert_eq!((c.destination, c.framing), (Destination::Udp("::1".into(), 514), None));
        assert_eq!(cfg(&[("transport", "udp"), ("address", "::1")]).unwrap().destination, Destination::Udp("::1".into(), 514));
        let c = cfg(&[("transport", "relp"), ("address", "localhost:2514")]).unwrap();
        assert_eq!((c.destination, c.format, c.framing), (Destination::Relp("localhost".into(), 2514), Format::Rfc5424, None));
        assert_eq!(c.queue_size, DEFAULT_QUEUE_SIZE);
        let c = cfg(&[("transport", "relp"), ("address", "h:1"), ("queue_size", "3")]).unwrap();
        assert_eq!(c.queue_size, 3);
    }

    #[test]
    fn names_and_numbers() {
        let c = cfg(&[("facility", "LOCAL3"), ("severity", "notice"), ("failure_severity", "2")]).unwrap();
        assert_eq!((c.facility, c.severity, c.failure_severity), (19, 5, 2));
        assert_eq!(cfg(&[("facility", "log_daemon")]).unwrap().facility, 3);
        assert_eq!(cfg(&[("timeout", "1m30s")]).unwrap().timeout, Duration::from_secs(90));
        assert_eq!(cfg(&[("timeout", "250ms")]).unwrap().timeout, Duration::from_millis(250));
        assert_eq!(cfg(&[("timeout", "5m")]).unwrap().timeout, MAX_TIMEOUT);
        assert!(cfg(&[("per_line", "T")]).unwrap().per_line);
    }

    #[test]
    fn errors_name_the_key_and_value() {
        type Case = (&'static [(&'static str, &'static str)], &'static str, &'static str);
        let cases: &[Case] = &[
            (&[("facility", "cronn")], "facility", "cronn"),
            (&[("facility", "24")], "facility", "24"),
            (&[("severity", "loud")], "severity", "loud"),
            (&[("transport", "sctp")], "transport", "sctp"),
            (&[("transport", "tcp")], "address", ""),
            (&[("transport", "tcp"), ("address", "host:99999")], "address", "host:99999"),
            (&[("transport", "udp"), ("address", "a b:1")], "address", "a b:1"),
            (&[("transport", "udp"), ("address", "[::1:514")], "address", "[::1:514"),
            (&[("transport", "unixgram")], "address", ""),
            (&[("transport", "udp"), ("address", "h"), ("framing", "lf")], "framing", "lf"),
            (&[("transport", "relp"), ("address", "h"), ("framing", "octet")], "framing", "octet"),
            (&[("transport", "relp")], "address", ""),
            (&[("transport", "tcp"), ("address", "h"), ("framing", "nul")], "framing", "nul"),
            (&[("format", "json")], "format", "json"),
            (&[("tag", "[dkron]")], "tag", "[dkron]"),
            (&[("tag", "")], "tag", ""),
            (&[("hostname", "a b")], "hostname", "a b"),
            (&[("per_line", "yes")], "per_line", "yes"),
            (&[("max_message", "100")], "max_message", "100"),
            (&[("max_message", "8k")], "max_message", "8k"),
            (&[("transport", "udp"), ("address", "h"), ("max_message", "70000")], "max_message", "70000"),
            (&[("oversize", "drop")], "oversize", "drop"),
            (&[("timeout", "0s")], "timeout", "0s"),
            (&[("timeout", "2 weeks")], "timeout", "2 weeks"),
            // A bare number is no Go duration (this sink once read it as seconds).
            (&[("timeout", "0.25")], "timeout", "0.25"),
            (&[("timeout", "5")], "timeout", "5"),
            (&[("timeout", "")], "timeout", ""),
            (&[("timeout", "-1s")], "timeout", "-1s"),
            (&[("timeout", "5m0.001s")], "timeout", "5m0.001s"),
            (&[("per_line", "")], "per_line", ""),
            (&[("facilty", "cron")], "facilty", "cron"),
            (&[("transport", "relp"), ("address", "h"), ("queue_size", "0")], "queue_size", "0"),
            (&[("transport", "relp"), ("address", "h"), ("queue_size", "lots")], "queue_size", "lots"),
            (&[("transport", "tcp"), ("address", "h"), ("queue_size", "10")], "queue_size", "10"),
        ];
        for (pairs, key, value) in cases {
            let err = cfg(pairs).expect_err(&format!("{pairs:?} should fail"));
            let field = format!("processors.syslog.{key}");
            assert_eq!((err.field.as_str(), err.value.as_str()), (field.as_str(), *value), "{pairs:?}: {err}");
        }
    }
}
