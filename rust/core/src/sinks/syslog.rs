//! The syslog sink: sends an execution's output to a syslog daemon over a unix socket (datagram
//! or stream), UDP, TCP or RELP, as RFC 3164 or RFC 5424 messages.
//!
//! One connection is opened on first use and kept for every later execution (Dkron opens one per
//! execution and never closes it). A failed write drops the connection, opens a new one and
//! retries once; if that fails too the error is returned and the next send starts afresh.
//!
//! Streams (TCP, unix): before reusing a connection and right after writing, the sink asks the
//! kernel whether the daemon closed or reset it (`tcp`). A reset of a connection that carried
//! earlier messages is reported (they may be lost: the execution that finds it records so, naming
//! them); the current messages are then sent on a new connection, and if that one is closed right
//! after the write too, the send fails. RELP (`relp`): each message counts only once the daemon
//! acknowledged it; a message without an answer is sent again on a new connection, once.
//!
//! Sizes: every message (header included, framing excluded) is at most `max_message` bytes
//! (default 8,192: rsyslog's default limit, beyond which it would cut the message silently).
//! A longer output is split into `(part i/n) ` messages or truncated with a marker, by config.
//! A unix datagram the kernel refuses as too large (EMSGSIZE) makes the sink halve its budget
//! and split again, and remember the smaller budget.
//!
//! With LF framing an embedded newline would end the message, so the output goes one line per
//! message there, as with `per_line`.

mod config;
mod conn;
mod format;
pub mod relp;
mod tcp;

use std::fmt;
use std::io;
use std::sync::Mutex;

pub use config::{
    Destination, Format, Framing, Oversize, SyslogConfig, DEFAULT_MAX_MESSAGE, DEFAULT_TAG, FIELD_PREFIX, LOCAL_PATHS,
    MAX_TIMEOUT, MIN_MAX_MESSAGE,
};
pub use format::{sd_escape, BOM, SD_ID};

use conn::Conn;
use format::HeaderInfo;
pub use tcp::Lost;
use tcp::{Peer, Written};

/// What the sink needs to know about one execution.
#[derive(Debug, Clone)]
pub struct ExecutionMessage<'a> {
    pub job_name: &'a str,
    pub key: &'a str,
    pub success: bool,
    pub exit_code: Option<i32>,
    pub output: &'a [u8],
    /// Nanoseconds since the Unix epoch: the time stamp of every message.
    pub timestamp_ns: i64,
}

#[derive(Debug)]
pub enum SendError {
    /// The daemon could not be reached (after one retry if a connection had been open).
    /// `lost`: what an earlier connection, found reset on the way, may have lost.
    Io { destination: String, sent: usize, total: usize, error: io::Error, lost: Option<Lost> },
    /// This execution's messages were sent (on a new connection), but the connection they were
    /// to reuse had been reset by the daemon with earlier messages on it.
    EarlierLost { destination: String, sent: usize, lost: Lost },
    /// `max_message` leaves no room for the output next to this execution's header.
    NoRoom { header: usize, max_message: usize },
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // No "syslog" prefix: the processor chain names the processor already.
            Self::Io { destination, total: 0, error, lost, .. } => {
                write!(f, "{destination}: {error}")?;
                lost.iter().try_for_each(|l| write!(f, "; before that, {l}"))
            }
            Self::Io { destination, sent, total, error, lost } => {
                write!(f, "{destination}: {error} ({sent} of {total} messages sent)")?;
                lost.iter().try_for_each(|l| write!(f, "; before that, {l}"))
            }
            Self::EarlierLost { destination, sent, lost } => {
                write!(f, "{destination}: {lost}; this execution's {sent} message(s) went on a new connection")
            }
            Self::NoRoom { header, max_message } => write!(
                f,
                "the message header takes {header} of the {max_message} bytes of max_message; nothing sent"
            ),
        }
    }
}

impl std::error::Error for SendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { error, .. } => Some(error),
            Self::EarlierLost { lost, .. } => Some(&lost.error),
            Self::NoRoom { .. } => None,
        }
    }
}

struct State {
    conn: Option<Conn>,
    written: Written,
    /// `max_message`, or less once the kernel refused a datagram of that size.
    budget: usize,
}

/// A destination and its connection; `send` may be called from any number of threads.
pub struct SyslogSink {
    config: SyslogConfig,
    hostname: String,
    pid: u32,
    state: Mutex<State>,
}

/// One trailing byte is kept free in every message: the LF that Go appends locally and that
/// LF framing needs.
const TRAILER: usize = 1;

impl SyslogSink {
    /// Connects lazily: making a sink never fails, so a daemon started later is found.
    pub fn new(config: SyslogConfig) -> Self {
        let hostname = config.hostname.clone().unwrap_or_else(local_hostname);
        let budget = config.max_message;
        Self {
            config,
            hostname,
            pid: std::process::id(),
            state: Mutex::new(State { conn: None, written: Written::default(), budget }),
        }
    }

    pub fn config(&self) -> &SyslogConfig {
        &self.config
    }

    /// Sends the execution; returns how many messages were sent (acknowledged, over RELP).
    pub fn send(&self, msg: &ExecutionMessage<'_>) -> Result<usize, SendError> {
        let cfg = &self.config;
        let severity = if msg.success { cfg.severity } else { cfg.failure_severity };
        let header = format::header(&HeaderInfo {
            format: cfg.format,
            pri: cfg.facility * 8 + severity,
            timestamp_ns: msg.timestamp_ns,
            host: match (cfg.format, cfg.destination.is_local()) {
                (Format::Rfc3164, true) => None,
                _ => Some(&self.hostname),
            },
            tag: &cfg.tag,
            pid: self.pid,
            job_name: msg.job_name,
            key: msg.key,
            success: msg.success,
            exit_code: msg.exit_code,
        });

        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.conn.is_none() {
            let conn = Conn::open(&cfg.destination, cfg.timeout).map_err(|e| self.fail(0, 0, e, None))?;
            state.conn = Some(conn);
            state.written = Written::default();
        }
        let relp = matches!(cfg.destination, Destination::Relp(..));
        let stream = state.conn.as_ref().is_some_and(Conn::is_stream);
        let framing = if stream { cfg.framing.unwrap_or(Framing::Lf) } else { Framing::Octet };
        let units = bodies(msg.output, cfg.per_line || (stream && framing == Framing::Lf));

        if stream || relp {
            // Streams take the whole execution in one write; no datagram size to learn.
            let mut messages = Vec::new();
            for unit in &units {
                messages.extend(self.fit(&format::with_bom(&header, unit, cfg.format), unit, state.budget)?);
            }
            if relp {
                return self.send_relp(&mut state, &messages);
            }
            let mut buf = Vec::with_capacity(messages.iter().map(|m| m.len() + 8).sum());
            for m in &messages {
                frame(&mut buf, m, framing);
            }
            return self.send_stream(&mut state, msg.key, &buf, messages.len());
        }
        let lf = cfg.format == Format::Rfc3164; // Go ends every local 3164 datagram with LF
        let mut sent = 0;
        for unit in &units {
            let header = format::with_bom(&header, unit, cfg.format);
            loop {
                let mut messages = self.fit(&header, unit, state.budget)?;
                if lf {
                    messages.iter_mut().for_each(|m| m.push(b'\n'));
                }
                match self.transmit(&mut state, &messages) {
                    Ok(()) => {
                        sent += messages.len();
                        break;
                    }
                    Err((0, e)) if e.raw_os_error() == Some(libc::EMSGSIZE) && state.budget > MIN_MAX_MESSAGE => {
                        state.budget = (state.budget / 2).max(MIN_MAX_MESSAGE);
                    }
                    Err((done, e)) => return Err(self.fail(sent + done, sent + messages.len(), e, None)),
                }
            }
        }
        Ok(sent)
    }

    fn fail(&self, sent: usize, total: usize, error: io::Error, lost: Option<Lost>) -> SendError {
        SendError::Io { destination: self.config.destination.to_string(), sent, total, error, lost }
    }

    /// One write of the whole framed execution on a stream, checked before and after (see the
    /// module's comment). `count` is the number of messages in `buf`.
    fn send_stream(&self, state: &mut State, key: &str, buf: &[u8], count: usize) -> Result<usize, SendError> {
        let mut lost = None;
        let mut retried = false;
        loop {
            // The cached connection: closed (its messages were read) or reset (maybe not).
            if let Some(conn) = state.conn.as_mut() {
                match conn.peer() {
                    Peer::Open => {}
                    Peer::Closed => {
                        state.conn = None;
                        state.written = Written::default();
                    }
                    Peer::Failed(e) => {
                        state.conn = None;
                        lost = lost.or(state.written.lose(e));
                    }
                }
            }
            let conn = match state.conn.as_mut() {
                Some(c) => c,
                None => {
                    let conn = Conn::open(&self.config.destination, self.config.timeout);
                    state.written = Written::default();
                    state.conn.insert(conn.map_err(|e| self.fail(0, count, e, lost.take()))?)
                }
            };
            let error = match conn.send(buf) {
                Ok(()) => match conn.peer() {
                    Peer::Open => None,
                    // Closed or reset right after the write: these messages may not have been read.
                    Peer::Closed => Some(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "the daemon closed the connection right after the write",
                    )),
                    Peer::Failed(e) => Some(e),
                },
                Err(e) => Some(e),
            };
            match error {
                None => {
                    state.written.add(key, count);
                    return match lost {
                        None => Ok(count),
                        Some(lost) => Err(SendError::EarlierLost {
                            destination: self.config.destination.to_string(),
                            sent: count,
                            lost,
                        }),
                    };
                }
                Some(e) => {
                    state.conn = None;
                    // Earlier messages on this connection are in the same doubt as ours.
                    let earlier = state.written.lose(io::Error::new(e.kind(), e.to_string()));
                    lost = lost.or(earlier);
                    if retried {
                        return Err(self.fail(0, count, e, lost));
                    }
                    retried = true;
                }
            }
        }
    }

    /// RELP: each message in turn, each acknowledged before the next. A message whose answer
    /// does not come (connection lost, closed, timed out) is sent again on a new connection,
    /// once per execution; a refusal (an answer other than 200) is not retried.
    fn send_relp(&self, state: &mut State, messages: &[Vec<u8>]) -> Result<usize, SendError> {
        let total = messages.len();
        let mut acked = 0;
        let mut retried = false;
        while acked < total {
            if let Some(conn) = state.conn.as_mut() {
                if !matches!(conn.peer(), Peer::Open) {
                    state.conn = None; // the server closed the session between two sends
                }
            }
            let conn = match state.conn.as_mut() {
                Some(c) => c,
                None => state.conn.insert(
                    Conn::open(&self.config.destination, self.config.timeout)
                        .map_err(|e| self.fail(acked, total, e, None))?,
                ),
            };
            let Conn::Relp(session) = conn else { unreachable!("a RELP destination opens a RELP session") };
            match session.send(&messages[acked]) {
                Ok(()) => acked += 1,
                Err(relp::Failure::Refused(e)) => return Err(self.fail(acked, total, e, None)),
                Err(relp::Failure::Lost(e)) => {
                    state.conn = None;
                    if retried {
                        return Err(self.fail(acked, total, e, None));
                    }
                    retried = true;
                }
            }
        }
        Ok(total)
    }

    /// Drops the connection (the next send opens a new one); a RELP session is closed
    /// with `close` first.
    pub fn close(&self) {
        let conn = self.state.lock().unwrap_or_else(|p| p.into_inner()).conn.take();
        if let Some(Conn::Relp(session)) = conn {
            session.close();
        }
    }

    /// The current size budget (smaller than `max_message` after an EMSGSIZE).
    pub fn budget(&self) -> usize {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).budget
    }

    pub fn is_connected(&self) -> bool {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).conn.is_some()
    }

    fn fit(&self, header: &[u8], body: &[u8], budget: usize) -> Result<Vec<Vec<u8>>, SendError> {
        format::fit(header, body, budget - TRAILER, self.config.oversize)
            .ok_or(SendError::NoRoom { header: header.len(), max_message: budget })
    }

    /// Datagrams: sends each message in turn. On an error (other than a datagram too large,
    /// which the caller handles) the socket is reopened once and the unsent messages retried.
    /// Err carries how many messages went out before the error.
    fn transmit(&self, state: &mut State, messages: &[Vec<u8>]) -> Result<(), (usize, io::Error)> {
        let mut done = 0;
        let mut retried = false;
        loop {
            let conn = match state.conn.as_mut() {
                Some(c) => c,
                None => state.conn.insert(
                    Conn::open(&self.config.destination, self.config.timeout).map_err(|e| (done, e))?,
                ),
            };
            let error = loop {
                match messages.get(done) {
                    None => return Ok(()),
                    Some(m) => match conn.send(m) {
                        Ok(()) => done += 1,
                        Err(e) => break e,
                    },
                }
            };
            if error.raw_os_error() == Some(libc::EMSGSIZE) {
                return Err((done, error));
            }
            state.conn = None;
            if retried {
                return Err((done, error));
            }
            retried = true;
        }
    }
}

/// The messages' bodies: the whole output (less its final newline), or one per line.
fn bodies(output: &[u8], per_line: bool) -> Vec<&[u8]> {
    let output = output.strip_suffix(b"\n").unwrap_or(output);
    if per_line {
        output.split(|b| *b == b'\n').collect()
    } else {
        vec![output]
    }
}

fn frame(buf: &mut Vec<u8>, message: &[u8], framing: Framing) {
    match framing {
        Framing::Octet => {
            buf.extend_from_slice(message.len().to_string().as_bytes());
            buf.push(b' ');
            buf.extend_from_slice(message);
        }
        Framing::Lf => {
            buf.extend_from_slice(message);
            buf.push(b'\n');
        }
    }
}

fn local_hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into our buffer.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..end]) {
        Ok(name) if rc == 0 && !name.is_empty() && name.bytes().all(|b| (33..=126).contains(&b)) => name.to_string(),
        _ => "-".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_drop_only_the_final_newline() {
        assert_eq!(bodies(b"a\nb\n", false), vec![b"a\nb".as_slice()]);
        assert_eq!(bodies(b"a\n\nb\n", true), vec![b"a".as_slice(), b"", b"b"]);
        assert_eq!(bodies(b"", true), vec![b"".as_slice()]);
    }

    #[test]
    fn octet_counting_and_lf() {
        let mut buf = Vec::new();
        frame(&mut buf, b"<14>1 x\ny", Framing::Octet);
        frame(&mut buf, b"<14>z", Framing::Lf);
        assert_eq!(buf, b"9 <14>1 x\ny<14>z\n");
    }
}
