//! Stream sockets (TCP, unix stream): connecting, and what the kernel can tell about the peer
//! without the peer saying anything.
//!
//! A syslog daemon never writes on a plain TCP or unix stream connection, so the only news from
//! it is its end: a FIN (read gives end of file) when it closed after reading everything it was
//! sent, or a reset (`ECONNRESET`) when it closed with bytes still unread — or when our bytes
//! arrived after it had closed. A reset therefore means messages written on that connection
//! were lost; a FIN means they were read.
//!
//! What TCP cannot tell: bytes in flight when the daemon dies after our write returned. The
//! write succeeds into our kernel's buffer, the loss shows only as a reset later, seen at the
//! next send (or never, if there is none). RELP, where each message is acknowledged, closes
//! that gap.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::time::Duration;

/// Connects to each address of `host` in turn, each within `timeout`.
pub fn connect(host: &str, port: u16, timeout: Duration) -> io::Result<TcpStream> {
    let mut last = None;
    for addr in (host, port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => {
                s.set_nodelay(true)?;
                return Ok(s);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address for the host")))
}

/// What a stream's peer has done, as far as our kernel knows right now.
#[derive(Debug)]
pub enum Peer {
    Open,
    /// End of file: the peer closed after reading what it was sent.
    Closed,
    /// Reset or another socket error: what was written on the connection may be lost.
    Failed(io::Error),
}

/// Checks a stream without blocking and without consuming anything: a pending socket error
/// (`SO_ERROR`, e.g. a reset), then a one-byte peek (end of file). Bytes waiting to be read
/// mean the peer is alive.
pub fn peer(sock: &impl AsRawFd) -> Peer {
    let fd = sock.as_raw_fd();
    let mut err: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: SO_ERROR writes one int into `err`, whose size `len` gives.
    let rc = unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_ERROR, (&mut err as *mut libc::c_int).cast(), &mut len) };
    if rc == 0 && err != 0 {
        return Peer::Failed(io::Error::from_raw_os_error(err));
    }
    let mut byte = 0u8;
    // SAFETY: a one-byte peek into a local buffer on a socket we own.
    let n = unsafe { libc::recv(fd, (&mut byte as *mut u8).cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT) };
    match n {
        0 => Peer::Closed,
        n if n > 0 => Peer::Open,
        _ => {
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Peer::Open,
                _ => Peer::Failed(e),
            }
        }
    }
}

/// Appends whatever the socket has to `buf` without blocking; returns how many bytes came.
/// End of file is an error (`UnexpectedEof`), as is any socket error.
pub fn read_ready(sock: &impl AsRawFd, buf: &mut Vec<u8>) -> io::Result<usize> {
    let fd = sock.as_raw_fd();
    let mut total = 0;
    let mut chunk = [0u8; 4096];
    loop {
        // SAFETY: reads at most chunk.len() bytes into a local buffer on a socket we own.
        let n = unsafe { libc::recv(fd, chunk.as_mut_ptr().cast(), chunk.len(), libc::MSG_DONTWAIT) };
        match n {
            0 => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the peer closed the connection")),
            n if n > 0 => {
                buf.extend_from_slice(&chunk[..n as usize]);
                total += n as usize;
            }
            _ => {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock => return Ok(total),
                    io::ErrorKind::Interrupted => {}
                    _ => return Err(e),
                }
            }
        }
    }
}

/// Messages that a stream connection carried before the daemon reset it: TCP cannot tell which
/// of them the daemon read.
#[derive(Debug)]
pub struct Lost {
    pub error: io::Error,
    pub messages: usize,
    /// The keys of the newest executions among them (at most `KEPT_KEYS`), oldest first.
    pub keys: Vec<String>,
}

impl fmt::Display for Lost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the daemon dropped the connection ({}): {} message(s) written on it earlier may be lost (executions {})",
            self.error,
            self.messages,
            self.keys.join(", ")
        )
    }
}

/// How many execution keys a lost-connection report names.
const KEPT_KEYS: usize = 8;

/// What has been written on the current stream connection.
#[derive(Default)]
pub struct Written {
    messages: usize,
    keys: VecDeque<String>,
}

impl Written {
    pub fn add(&mut self, key: &str, messages: usize) {
        self.messages += messages;
        if self.keys.back().map(String::as_str) != Some(key) {
            if self.keys.len() == KEPT_KEYS {
                self.keys.pop_front();
            }
            self.keys.push_back(key.to_string());
        }
    }

    /// What was written, as lost through `error` (None if nothing was); starts afresh.
    pub fn lose(&mut self, error: io::Error) -> Option<Lost> {
        let lost = (self.messages > 0)
            .then(|| Lost { error, messages: self.messages, keys: self.keys.iter().cloned().collect() });
        *self = Self::default();
        lost
    }
}
