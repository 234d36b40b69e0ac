//! One open connection to a syslog daemon, over any of the four transports.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::time::Duration;

use super::config::Destination;

pub enum Conn {
    UnixDatagram(UnixDatagram),
    UnixStream(UnixStream),
    Udp(UdpSocket),
    Tcp(TcpStream),
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
            Destination::Tcp(host, port) => {
                let mut last = None;
                let mut found = None;
                for addr in (host.as_str(), *port).to_socket_addrs()? {
                    match TcpStream::connect_timeout(&addr, timeout) {
                        Ok(s) => {
                            found = Some(s);
                            break;
                        }
                        Err(e) => last = Some(e),
                    }
                }
                match found {
                    Some(s) => Self::Tcp(s),
                    None => return Err(last.unwrap_or_else(|| not_found("no address for the host"))),
                }
            }
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
        }
    }

    /// Datagram sockets: one message per datagram. Streams: the bytes, already framed.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Self::UnixDatagram(s) => whole_datagram(s.send(bytes)?, bytes),
            Self::Udp(s) => whole_datagram(s.send(bytes)?, bytes),
            Self::UnixStream(s) => s.write_all(bytes),
            Self::Tcp(s) => s.write_all(bytes),
        }
    }

    /// True when a stream's peer has closed or reset it. A write to such a socket often
    /// "succeeds" into the kernel buffer and is lost, so it is checked before writing.
    /// A syslog daemon never sends anything, so any readable byte still means "alive".
    pub fn peer_gone(&self) -> bool {
        let fd = match self {
            Self::UnixStream(s) => s.as_raw_fd(),
            Self::Tcp(s) => s.as_raw_fd(),
            _ => return false,
        };
        let mut byte = 0u8;
        // SAFETY: a one-byte peek into a local buffer on a socket we own.
        let n = unsafe {
            libc::recv(fd, (&mut byte as *mut u8).cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT)
        };
        match n {
            0 => true,
            n if n > 0 => false,
            _ => io::Error::last_os_error().kind() != io::ErrorKind::WouldBlock,
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
