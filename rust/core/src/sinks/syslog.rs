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
//! after the write too, the send fails. RELP (`relp`, `resend`): each message counts only once the
//! daemon acknowledged it; a lost session is reconnected until the send's timeout, and a message
//! still unacknowledged then waits in a bounded queue that goes before the next send.
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
mod resend;
mod tcp;

use std::fmt;
use std::io;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use config::{
    Destination, Format, Framing, Oversize, SyslogConfig, DEFAULT_MAX_MESSAGE, DEFAULT_TAG, FIELD_PREFIX, LOCAL_PATHS,
    DEFAULT_QUEUE_SIZE, MAX_QUEUE_SIZE, MAX_TIMEOUT, MIN_MAX_MESSAGE,
};
pub use format::{sd_escape, BOM, SD_ID};

use conn::Conn;
use format::HeaderInfo;
use resend::{Queue, Target};
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
    /// RELP: this execution's messages were not all acknowledged (`outcome`), or they were but
    /// other executions' waiting messages were dropped on the way (`notes`).
    Relp { destination: String, sent: usize, total: usize, outcome: RelpOutcome, notes: Vec<String> },
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
            Self::Relp { destination, sent, total, outcome, notes } => {
                write!(f, "{destination}: ")?;
                match outcome {
                    RelpOutcome::Delivered => write!(f, "this execution's {sent} message(s) were delivered")?,
                    RelpOutcome::Queued { error, waiting } => {
                        if *sent > 0 {
                            write!(f, "{} of {total} messages ", total - sent)?;
                        }
                        write!(f, "not delivered yet ({error}); queued for resend ({waiting} waiting)")?
                    }
                    RelpOutcome::Refused(error) => write!(f, "{error} ({sent} of {total} messages sent)")?,
                }
                notes.iter().try_for_each(|n| write!(f, "; {n}"))
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
            Self::Relp { outcome: RelpOutcome::Queued { error, .. } | RelpOutcome::Refused(error), .. } => Some(error),
            Self::Relp { .. } | Self::NoRoom { .. } => None,
        }
    }
}

/// How a RELP send ended for the execution's own messages.
#[derive(Debug)]
pub enum RelpOutcome {
    /// All acknowledged.
    Delivered,
    /// Not all acknowledged by the deadline: the rest wait in the resend queue (`waiting`
    /// messages in all, for this destination).
    Queued { error: io::Error, waiting: usize },
    /// The server refused one (an answer other than 200): not resent.
    Refused(io::Error),
}

/// How long `close` tries to deliver the RELP resend queue (at most the sink's `timeout`).
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);

struct State {
    conn: Option<Conn>,
    /// RELP: messages not acknowledged yet, resent before the next ones.
    queue: Queue,
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
            state: Mutex::new(State { conn: None, queue: Queue::default(), written: Written::default(), budget }),
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
        let relp = matches!(cfg.destination, Destination::Relp(..));
        // RELP connects in `resend::deliver`, with retries and its queue.
        if state.conn.is_none() && !relp {
            let conn = Conn::open(&cfg.destination, cfg.timeout).map_err(|e| self.fail(0, 0, e, None))?;
            state.conn = Some(conn);
            state.written = Written::default();
        }
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
                return self.send_relp(&mut state, msg.key, messages);
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

    /// RELP: the waiting messages, then these, each acknowledged before the next (`resend`).
    /// What is not acknowledged by the deadline joins the queue, and the error says so.
    fn send_relp(&self, state: &mut State, key: &str, messages: Vec<Vec<u8>>) -> Result<usize, SendError> {
        let total = messages.len();
        let deadline = Instant::now() + self.config.timeout;
        let state = &mut *state;
        let out = resend::deliver(&mut state.conn, &mut state.queue, &messages, &self.relp_target(), deadline);
        let mut notes = out.notes;
        let outcome = if let Some(error) = out.refused {
            RelpOutcome::Refused(error)
        } else if let Some(error) = out.stopped {
            let mut dropped = Vec::new();
            for m in messages.into_iter().skip(out.acked) {
                dropped.extend(state.queue.push(key, m, self.config.queue_size));
            }
            if !dropped.is_empty() {
                notes.push(format!(
                    "the resend queue is full (queue_size {}): dropped the {} oldest waiting message(s), of execution(s) {}",
                    self.config.queue_size,
                    dropped.len(),
                    resend::executions(&dropped)
                ));
            }
            RelpOutcome::Queued { error, waiting: state.queue.len() }
        } else if notes.is_empty() {
            return Ok(total);
        } else {
            RelpOutcome::Delivered
        };
        let destination = self.config.destination.to_string();
        Err(SendError::Relp { destination, sent: out.acked, total, outcome, notes })
    }

    fn relp_target(&self) -> Target<'_> {
        let Destination::Relp(host, port) = &self.config.destination else { unreachable!("only RELP queues") };
        Target { host, port: *port, timeout: self.config.timeout }
    }

    /// Drops the connection (the next send opens a new one); a RELP session is closed with
    /// `close` first, after trying for a short grace to deliver the messages still waiting.
    /// Returns what could not be delivered then (those messages are dropped), for the caller
    /// to log: no execution is left to record it.
    pub fn close(&self) -> Option<String> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let state = &mut *state;
        let mut report = None;
        if !state.queue.is_empty() {
            let deadline = Instant::now() + self.config.timeout.min(CLOSE_GRACE);
            let out = resend::deliver(&mut state.conn, &mut state.queue, &[], &self.relp_target(), deadline);
            let mut text = Vec::new();
            if !state.queue.is_empty() {
                let left = state.queue.take_all();
                let why = out.stopped.map(|e| e.to_string()).unwrap_or_default();
                text.push(format!(
                    "{} message(s) not delivered by close ({why}) and dropped, of execution(s) {}",
                    left.len(),
                    resend::executions(&left)
                ));
            }
            text.extend(out.notes);
            if !text.is_empty() {
                report = Some(format!("{}: {}", self.config.destination, text.join("; ")));
            }
        }
        if let Some(Conn::Relp(session)) = state.conn.take() {
            session.close();
        }
        report
    }

    /// RELP: how many messages wait in the resend queue.
    pub fn waiting(&self) -> usize {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).queue.len()
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
