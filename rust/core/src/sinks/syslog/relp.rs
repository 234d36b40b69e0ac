//! RELP, the Reliable Event Logging Protocol (rsyslog's imrelp/omrelp, librelp's doc/relp.md):
//! the frames, the answers, and one client session.
//!
//! A frame is `TXNR SP COMMAND SP DATALEN [SP DATA] LF`. The client opens with `open` and its
//! offers, sends each message as a `syslog` command and counts it delivered only when the `rsp`
//! with the same TXNR says `200`; `close` ends the session. The server may send the hint
//! `0 serverclose 0` before it closes. The window here is one: each message waits for its
//! answer before the next is sent, so an unanswered message is always the last one written.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// TXNR and DATALEN have at most 9 digits; a TXNR after the largest one wraps to 1.
const MAX_NUMBER: u32 = 999_999_999;
const MAX_COMMAND: usize = 32;
/// The largest answer accepted from a server (librelp's default maximum data size).
pub const MAX_ANSWER: usize = 128 * 1024;
/// What this client offers; rsyslog answers with the same three offers.
pub const OFFERS: &str = concat!("relp_version=0\nrelp_software=dkron_exec,", env!("CARGO_PKG_VERSION"), "\ncommands=syslog");

/// One frame as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub txnr: u32,
    pub command: String,
    pub data: Vec<u8>,
}

/// Why bytes from the server are not a RELP frame. The session is then dropped, as the
/// protocol says (no attempt to resynchronise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// An unexpected byte at `offset` of the frame, while reading `part`.
    Unexpected { part: &'static str, offset: usize, byte: u8 },
    /// A TXNR or DATALEN of more than 9 digits.
    TooManyDigits { part: &'static str },
    CommandTooLong,
    /// DATALEN beyond the limit the caller gave.
    TooLong { datalen: usize, limit: usize },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unexpected { part, offset, byte } => {
                write!(f, "malformed RELP frame: unexpected byte 0x{byte:02x} in {part} at offset {offset}")
            }
            Self::TooManyDigits { part } => write!(f, "malformed RELP frame: {part} has more than 9 digits"),
            Self::CommandTooLong => write!(f, "malformed RELP frame: command longer than {MAX_COMMAND} letters"),
            Self::TooLong { datalen, limit } => {
                write!(f, "RELP frame too long: DATALEN {datalen} is more than {limit} bytes")
            }
        }
    }
}

impl std::error::Error for FrameError {}

/// `TXNR SP COMMAND SP DATALEN [SP DATA] LF`.
pub fn encode_frame(txnr: u32, command: &str, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + command.len() + 24);
    out.extend_from_slice(format!("{txnr} {command} {}", data.len()).as_bytes());
    if !data.is_empty() {
        out.push(b' ');
        out.extend_from_slice(data);
    }
    out.push(b'\n');
    out
}

/// The next frame at the start of `buf`: `Ok(None)` when more bytes are needed, else the frame
/// and how many bytes it took.
pub fn parse_frame(buf: &[u8], limit: usize) -> Result<Option<(Frame, usize)>, FrameError> {
    let mut pos = 0;
    let Some(txnr) = number(buf, &mut pos, "TXNR")? else { return Ok(None) };
    let start = pos;
    loop {
        match buf.get(pos) {
            None => return Ok(None),
            Some(b) if b.is_ascii_alphabetic() => {
                if pos - start == MAX_COMMAND {
                    return Err(FrameError::CommandTooLong);
                }
                pos += 1;
            }
            Some(b' ') if pos > start => break,
            Some(&byte) => return Err(FrameError::Unexpected { part: "COMMAND", offset: pos, byte }),
        }
    }
    let command = String::from_utf8_lossy(&buf[start..pos]).into_owned();
    pos += 1;
    // DATALEN ends with SP before the data, or directly with the trailer when it is 0.
    let len_start = pos;
    while buf.get(pos).is_some_and(u8::is_ascii_digit) {
        if pos - len_start == 9 {
            return Err(FrameError::TooManyDigits { part: "DATALEN" });
        }
        pos += 1;
    }
    let Some(&after) = buf.get(pos) else { return Ok(None) };
    if pos == len_start {
        return Err(FrameError::Unexpected { part: "DATALEN", offset: pos, byte: after });
    }
    let datalen: usize = std::str::from_utf8(&buf[len_start..pos]).ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    if datalen > limit {
        return Err(FrameError::TooLong { datalen, limit });
    }
    let data = if datalen == 0 {
        Vec::new()
    } else {
        if after != b' ' {
            return Err(FrameError::Unexpected { part: "DATALEN", offset: pos, byte: after });
        }
        pos += 1;
        if buf.len() < pos + datalen {
            return Ok(None);
        }
        pos += datalen;
        buf[pos - datalen..pos].to_vec()
    };
    match buf.get(pos) {
        None => Ok(None),
        Some(b'\n') => Ok(Some((Frame { txnr, command, data }, pos + 1))),
        Some(&byte) => Err(FrameError::Unexpected { part: "trailer", offset: pos, byte }),
    }
}

/// Digits up to a SP (consumed). `Ok(None)`: the buffer ends first.
fn number(buf: &[u8], pos: &mut usize, part: &'static str) -> Result<Option<u32>, FrameError> {
    let start = *pos;
    let mut n: u32 = 0;
    loop {
        match buf.get(*pos) {
            None => return Ok(None),
            Some(b) if b.is_ascii_digit() => {
                if *pos - start == 9 {
                    return Err(FrameError::TooManyDigits { part });
                }
                n = n * 10 + u32::from(b - b'0');
                *pos += 1;
            }
            Some(b' ') if *pos > start => {
                *pos += 1;
                return Ok(Some(n));
            }
            Some(&byte) => return Err(FrameError::Unexpected { part, offset: *pos, byte }),
        }
    }
}

/// The data of an `rsp` frame: `CODE [SP TEXT] [LF REST]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub code: u16,
    pub text: String,
    /// After the first LF: the offers, in the answer to `open`.
    pub rest: Vec<u8>,
}

impl Answer {
    /// None when the data does not start with a three-digit code.
    pub fn parse(data: &[u8]) -> Option<Self> {
        let (line, rest) = match data.iter().position(|b| *b == b'\n') {
            Some(i) => (&data[..i], data[i + 1..].to_vec()),
            None => (data, Vec::new()),
        };
        let code = line.get(..3).filter(|c| c.iter().all(u8::is_ascii_digit))?;
        let text = match &line[3..] {
            [] => "",
            [b' ', text @ ..] => std::str::from_utf8(text).ok()?,
            _ => return None,
        };
        Some(Self { code: std::str::from_utf8(code).ok()?.parse().ok()?, text: text.to_string(), rest })
    }

    pub fn is_ok(&self) -> bool {
        self.code == 200
    }

    /// The values of one offer (`name=v1,v2`) in the answer to `open`; None if absent.
    pub fn offer(&self, name: &str) -> Option<Vec<String>> {
        String::from_utf8_lossy(&self.rest).split('\n').find_map(|line| {
            let (key, values) = line.split_once('=').unwrap_or((line, ""));
            (key == name).then(|| values.split(',').filter(|v| !v.is_empty()).map(str::to_string).collect())
        })
    }
}

/// The next TXNR after `txnr` (1 after the largest).
pub fn next_txnr(txnr: u32) -> u32 {
    if txnr >= MAX_NUMBER {
        1
    } else {
        txnr + 1
    }
}

/// How one `syslog` command ended when it did not get `200`.
#[derive(Debug)]
pub enum Failure {
    /// The connection broke (or was closed, or gave no answer in time) before the answer: the
    /// message may or may not have arrived, so it is sent again on a new connection.
    Lost(io::Error),
    /// The server answered, and refused: sending it again would be refused again.
    Refused(io::Error),
}

/// One open RELP session over TCP.
pub struct RelpConn {
    stream: TcpStream,
    txnr: u32,
    /// Bytes read and not yet parsed.
    buf: Vec<u8>,
    timeout: Duration,
}

impl RelpConn {
    /// Connects (to each address of `host` in turn) and opens the session.
    pub fn open(host: &str, port: u16, timeout: Duration) -> io::Result<Self> {
        Self::open_within(host, port, timeout, timeout)
    }

    /// As `open`, giving up connecting after `connect` (what is left of a send's deadline);
    /// `timeout` stays the wait for each answer.
    pub fn open_within(host: &str, port: u16, connect: Duration, timeout: Duration) -> io::Result<Self> {
        let stream = super::tcp::connect(host, port, connect)?;
        stream.set_write_timeout(Some(timeout))?;
        let mut conn = Self { stream, txnr: 0, buf: Vec::new(), timeout };
        let answer = conn.call("open", OFFERS.as_bytes())?;
        if !answer.is_ok() {
            return Err(protocol(format!("the server refused the session: {} {}", answer.code, answer.text)));
        }
        if answer.offer("relp_version").is_none() {
            return Err(protocol("the server's answer to open has no relp_version offer".to_string()));
        }
        if !answer.offer("commands").unwrap_or_default().iter().any(|c| c == "syslog") {
            return Err(protocol("the server does not offer the syslog command".to_string()));
        }
        Ok(conn)
    }

    /// Sends one syslog message and waits for its answer.
    pub fn send(&mut self, message: &[u8]) -> Result<(), Failure> {
        let answer = self.call("syslog", message).map_err(Failure::Lost)?;
        if answer.is_ok() {
            Ok(())
        } else {
            Err(Failure::Refused(protocol(format!("the server refused the message: {} {}", answer.code, answer.text))))
        }
    }

    /// Whether the server has closed the session (a `serverclose` hint, end of file, an error,
    /// or bytes that make no sense while nothing is outstanding). Reads only what is there.
    pub fn closed_by_server(&mut self) -> bool {
        // Nothing is outstanding between two sends, so any byte at all is a hint (serverclose)
        // or a stray answer: either way this session is over.
        match super::tcp::read_ready(&self.stream, &mut self.buf) {
            Err(_) => true,
            Ok(_) => !self.buf.is_empty(),
        }
    }

    /// Ends the session politely: `close`, and its answer within the timeout.
    pub fn close(mut self) {
        let _ = self.call("close", b"");
    }

    /// Writes a command and reads until its answer; hints on the way are honoured.
    fn call(&mut self, command: &str, data: &[u8]) -> io::Result<Answer> {
        self.txnr = next_txnr(self.txnr);
        let txnr = self.txnr;
        self.stream.write_all(&encode_frame(txnr, command, data))?;
        let deadline = Instant::now() + self.timeout;
        loop {
            if let Some((frame, used)) = parse_frame(&self.buf, MAX_ANSWER).map_err(|e| protocol(e.to_string()))? {
                self.buf.drain(..used);
                match (frame.txnr, frame.command.as_str()) {
                    (0, "serverclose") => {
                        return Err(io::Error::new(io::ErrorKind::ConnectionAborted, "the server closed the session"))
                    }
                    (0, _) => continue, // another hint: nothing to do with it
                    (n, "rsp") if n == txnr => {
                        // The answer to close may carry no data at all.
                        if frame.data.is_empty() && command == "close" {
                            return Ok(Answer { code: 200, text: String::new(), rest: Vec::new() });
                        }
                        return Answer::parse(&frame.data).ok_or_else(|| {
                            protocol(format!("malformed answer: {:?}", String::from_utf8_lossy(&frame.data)))
                        });
                    }
                    (n, cmd) => return Err(protocol(format!("unexpected frame {n} {cmd} while waiting for the answer to {txnr}"))),
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no answer to {command} within {:?}", self.timeout),
                ));
            }
            self.stream.set_read_timeout(Some(left))?;
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the server closed the connection before answering {command}"),
                    ))
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

fn protocol(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("relp: {why}"))
}
