//! One open connection to a syslog daemon, over any of the four transports.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::time::Duration;

use super::config::Destination;
use super::relp::RelpConn;
use super::tcp::{self, Peer};

pub enum Conn {
    UnixDatagram(UnixDatagram),
    UnixStream(UnixStream),
    Udp(UdpSocket),
    Tcp(TcpStream),
    Relp(RelpConn),
}

impl Conn {
    pub fn open(destination: &Destination, timeout: Duration) -> io::Result<Self> {
        let conn = match destination {
            Destination::Local(paths) => open_local(paths)?,
            Destination::UnixDatagram(path) => {
                let sock = UnixDatagram::unbound()?;
                sock.connect(path)?;
                Self::UnixDatagram(sock)
            }
            Destination::UnixStream(path) => Self::UnixStream(UnixStream::connect(path)?),
            Destination::Udp(host, port) => {
                let addr = resolve(host, *port)?;
                let any: SocketAddr = if addr.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
                let sock = UdpSocket::bind(any)?;
                sock.connect(addr)?;
                Self::Udp(sock)
            }
            Destination::Tcp(host, port) => Self::Tcp(super::tcp::connect(host, *port, timeout)?),
            // RELP's session is opened (and its timeouts set) by RelpConn itself.
            Destination::Relp(host, port) => return Ok(Self::Relp(RelpConn::open(host, *port, timeout)?)),
        };
        conn.set_write_timeout(timeout)?;
        Ok(conn)
    }

    pub fn is_stream(&self) -> bool {
        matches!(self, Self::UnixStream(_) | Self::Tcp(_))
    }

    fn set_write_timeout(&self, timeout: Duration) -> io::Result<()> {
        match self {
            Self::UnixDatagram(s) => s.set_write_timeout(Some(timeout)),
            Self::UnixStream(s) => s.set_write_timeout(Some(timeout)),
            Self::Udp(s) => s.set_write_timeout(Some(timeout)),
            Self::Tcp(s) => s.set_write_timeout(Some(timeout)),
            Self::Relp(_) => Ok(()),
        }
    }

    /// Datagram sockets: one message per datagram. Streams: the bytes, already framed. RELP:
    /// one message, sent and acknowledged (the sink calls `RelpConn` itself, to tell a refusal
    /// from a loss; this is the plain path).
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Self::UnixDatagram(s) => whole_datagram(s.send(bytes)?, bytes),
            Self::Udp(s) => whole_datagram(s.send(bytes)?, bytes),
            Self::UnixStream(s) => s.write_all(bytes),
            Self::Tcp(s) => s.write_all(bytes),
            Self::Relp(r) => r.send(bytes).map_err(|f| match f {
                super::relp::Failure::Lost(e) | super::relp::Failure::Refused(e) => e,
            }),
        }
    }

    /// What a stream's peer has done (see `tcp`); datagram sockets are always `Open`. A RELP
    /// session is `Closed` once the server said so (a `serverclose` hint) or hung up.
    pub fn peer(&mut self) -> Peer {
        match self {
            Self::UnixStream(s) => tcp::peer(s),
            Self::Tcp(s) => tcp::peer(s),
            Self::Relp(r) => {
                if r.closed_by_server() {
                    Peer::Closed
                } else {
                    Peer::Open
                }
            }
            _ => Peer::Open,
        }
    }
}

/// Go's order: every path as a datagram socket first, then every path as a stream.
fn open_local(paths: &[std::path::PathBuf]) -> io::Result<Conn> {
    let mut last = None;
    for path in paths {
        let sock = UnixDatagram::unbound()?;
        match sock.connect(path) {
            Ok(()) => return Ok(Conn::UnixDatagram(sock)),
            Err(e) => last = Some(e),
        }
    }
    for path in paths {
        match UnixStream::connect(path) {
            Ok(s) => return Ok(Conn::UnixStream(s)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| not_found("no socket path")))
}

fn resolve(host: &str, port: u16) -> io::Result<SocketAddr> {
    (host, port).to_socket_addrs()?.next().ok_or_else(|| not_found("no address for the host"))
}

fn whole_datagram(sent: usize, bytes: &[u8]) -> io::Result<()> {
    if sent == bytes.len() {
        Ok(())
    } else {
        Err(io::Error::new(io::ErrorKind::WriteZero, format!("datagram cut: {sent} of {} bytes sent", bytes.len())))
    }
}

fn not_found(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, what.to_string())
}
