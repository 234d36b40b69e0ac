//! Frames on a blocking socket, for the threads that make calls themselves (the host's callers,
//! the Python SDK's workers): a buffered reader that needs one `recv` per small frame and reads a
//! large body straight into its own buffer, and a writer that sends prefix, header and body in
//! one `sendmsg` without copying the body.

use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use super::codec::{header_len, parse_header, CodecError, Frame};

/// Bytes read ahead; a frame larger than this gets a buffer of its own for its body.
const BUFFER: usize = 64 * 1024;

/// What one attempt to read a frame gave.
#[derive(Debug)]
pub enum Read<F = Frame> {
    Frame(F),
    /// Nothing complete yet: the socket's receive timeout passed, or it was a non-blocking read.
    WouldBlock,
    /// A clean end of stream between frames.
    Eof,
}

/// A frame whose header is in and whose body is still arriving.
struct LargeBody {
    header: Vec<u8>,
    body: Vec<u8>,
    want: usize,
}

/// A frame whose header is still JSON bytes.
#[derive(Debug)]
pub struct RawFrame {
    pub header: Vec<u8>,
    pub body: Vec<u8>,
}

impl RawFrame {
    pub fn parse(self) -> Result<Frame, CodecError> {
        Ok(Frame { header: parse_header(&self.header)?, body: self.body })
    }
}

pub struct FrameReader {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    max: usize,
    large: Option<LargeBody>,
}

impl FrameReader {
    pub fn new(max: usize) -> Self {
        Self { buf: vec![0; BUFFER], start: 0, end: 0, max, large: None }
    }

    /// The next frame from `fd`; `flags` are recv's (MSG_DONTWAIT for a read that must not block).
    pub fn next(&mut self, fd: RawFd, flags: libc::c_int) -> Result<Read, CodecError> {
        Ok(match self.next_raw(fd, flags)? {
            Read::Frame(raw) => Read::Frame(raw.parse()?),
            Read::WouldBlock => Read::WouldBlock,
            Read::Eof => Read::Eof,
        })
    }

    /// A frame already complete in the buffer, without any system call.
    pub fn buffered(&mut self) -> Result<Option<Frame>, CodecError> {
        self.buffered_raw()?.map(RawFrame::parse).transpose()
    }

    /// `next` with the header left as bytes, for a reader that parses it its own way.
    pub fn next_raw(&mut self, fd: RawFd, flags: libc::c_int) -> Result<Read<RawFrame>, CodecError> {
        loop {
            if let Some(frame) = self.buffered_raw()? {
                return Ok(Read::Frame(frame));
            }
            let got = match &mut self.large {
                Some(large) => {
                    let n = recv(fd, spare(&mut large.body, large.want), flags)?;
                    if let Some(n) = n {
                        // SAFETY: recv initialised these n bytes of spare capacity.
                        unsafe { large.body.set_len(large.body.len() + n) };
                    }
                    n
                }
                None => {
                    self.make_room()?;
                    let end = self.end;
                    let n = recv(fd, &mut self.buf[end..], flags)?;
                    self.end += n.unwrap_or(0);
                    n
                }
            };
            match got {
                None => return Ok(Read::WouldBlock),
                Some(0) if self.start == self.end && self.large.is_none() => return Ok(Read::Eof),
                Some(0) => return Err(CodecError::Truncated),
                Some(_) => {}
            }
        }
    }

    /// Bytes of a next frame are already in the buffer.
    pub fn has_buffered(&self) -> bool {
        self.end > self.start || self.large.is_some()
    }

    fn buffered_raw(&mut self) -> Result<Option<RawFrame>, CodecError> {
        if let Some(large) = &self.large {
            if large.body.len() < large.want {
                return Ok(None);
            }
            let LargeBody { header, body, .. } = self.large.take().unwrap();
            return Ok(Some(RawFrame { header, body }));
        }
        let avail = &self.buf[self.start..self.end];
        if avail.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes(avail[..4].try_into().unwrap()) as usize;
        if len > self.max {
            return Err(CodecError::Oversize { len, max: self.max });
        }
        if avail.len() >= 4 + len {
            let payload = &avail[4..4 + len];
            let hlen = header_len(payload)?;
            let header = payload[4..4 + hlen].to_vec();
            let body = payload[4 + hlen..].to_vec();
            self.start += 4 + len;
            if self.start == self.end {
                (self.start, self.end) = (0, 0);
            }
            return Ok(Some(RawFrame { header, body }));
        }
        // A frame larger than the buffer: once its header is in, the body gets its own buffer.
        if 4 + len > self.buf.len() && avail.len() >= 8 {
            let hlen = u32::from_be_bytes(avail[4..8].try_into().unwrap()) as usize;
            if hlen > len - 4 {
                return Err(CodecError::Malformed(format!("header length {hlen} exceeds the frame's {} bytes", len - 4)));
            }
            if avail.len() >= 8 + hlen {
                let header = avail[8..8 + hlen].to_vec();
                let want = len - 4 - hlen;
                let mut body = Vec::with_capacity(want);
                body.extend_from_slice(&avail[8 + hlen..]);
                (self.start, self.end) = (0, 0);
                self.large = Some(LargeBody { header, body, want });
                return self.buffered_raw();
            }
        }
        Ok(None)
    }

    /// Space after `end` for the rest of the current frame (or its header, when it is large).
    fn make_room(&mut self) -> Result<(), CodecError> {
        let avail = self.end - self.start;
        let word = |at: usize| u32::from_be_bytes(self.buf[at..at + 4].try_into().unwrap()) as usize;
        let mut need = 8;
        if avail >= 4 {
            let len = word(self.start);
            if 4 + len <= self.buf.len() {
                need = 4 + len;
            } else if avail >= 8 {
                need = 8 + word(self.start + 4).min(self.max);
            }
        }
        let need = need.max(avail + 1);
        if self.buf.len() - self.start < need || self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, avail);
        }
        if self.buf.len() < need {
            self.buf.resize(need, 0);
        }
        Ok(())
    }
}

/// The uninitialised tail of `v` up to `want` bytes, as a byte slice for recv to fill.
fn spare(v: &mut Vec<u8>, want: usize) -> &mut [u8] {
    let len = v.len();
    // SAFETY: the slice covers capacity we own; recv writes it and we only set_len over what it
    // wrote. u8 has no invalid bit patterns, and nobody reads the slice before recv fills it.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().add(len), want - len) }
}

/// One recv: Some(bytes read), or None when it would block (timeout or MSG_DONTWAIT).
fn recv(fd: RawFd, buf: &mut [u8], flags: libc::c_int) -> Result<Option<usize>, CodecError> {
    loop {
        // SAFETY: buf is valid for writes of buf.len() bytes.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), flags) };
        if n >= 0 {
            return Ok(Some(n as usize));
        }
        let err = io::Error::last_os_error();
        match err.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => return Ok(None),
            _ => return Err(CodecError::Io(err)),
        }
    }
}

#[derive(Debug)]
pub enum WriteError {
    Io(io::Error),
    /// The deadline passed while the peer did not read; `partial`: part of the frame is out.
    TimedOut { partial: bool },
}

/// Writes `head` (prefix + header) and `body` as one frame. On a socket with a send timeout,
/// a full buffer is waited on until `deadline`; `flags` may add MSG_DONTWAIT.
pub fn write_frame(fd: RawFd, head: &[u8], body: &[u8], deadline: Option<Instant>, flags: libc::c_int) -> Result<(), WriteError> {
    let total = head.len() + body.len();
    let mut sent = 0;
    while sent < total {
        let (a, b) = if sent < head.len() { (&head[sent..], body) } else { (&body[sent - head.len()..], &[][..]) };
        let mut iov = [
            libc::iovec { iov_base: a.as_ptr() as *mut _, iov_len: a.len() },
            libc::iovec { iov_base: b.as_ptr() as *mut _, iov_len: b.len() },
        ];
        // SAFETY: a zeroed msghdr is valid; the iovecs point at live buffers.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = if b.is_empty() { 1 } else { 2 };
        // SAFETY: msg and its buffers are valid for the call; MSG_NOSIGNAL: EPIPE, not SIGPIPE.
        let n = unsafe { libc::sendmsg(fd, &msg, flags | libc::MSG_NOSIGNAL) };
        if n >= 0 {
            sent += n as usize;
            continue;
        }
        let err = io::Error::last_os_error();
        match err.kind() {
            io::ErrorKind::Interrupted => {}
            io::ErrorKind::WouldBlock => {
                if flags & libc::MSG_DONTWAIT != 0 || deadline.is_some_and(|d| Instant::now() >= d) {
                    return Err(WriteError::TimedOut { partial: sent > 0 });
                }
            }
            _ => return Err(WriteError::Io(err)),
        }
    }
    Ok(())
}

/// Blocking mode with receive and send timeouts of `slice`: a blocked thread wakes at least that
/// often to look at its deadline.
pub fn set_blocking_with_timeouts(fd: RawFd, slice: Duration) -> io::Result<()> {
    // SAFETY: fcntl on an fd we own.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let tv = libc::timeval { tv_sec: slice.as_secs() as libc::time_t, tv_usec: slice.subsec_micros() as libc::suseconds_t };
    for opt in [libc::SO_RCVTIMEO, libc::SO_SNDTIMEO] {
        // SAFETY: tv is a valid timeval of the size given.
        let rc = unsafe {
            libc::setsockopt(fd, libc::SOL_SOCKET, opt, (&tv as *const libc::timeval).cast(), std::mem::size_of::<libc::timeval>() as libc::socklen_t)
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::codec::{encode, header, MAX_FRAME};
    use serde_json::json;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    fn frames_through(sizes: &[usize]) -> Vec<Frame> {
        let (a, b) = UnixStream::pair().unwrap();
        let sizes = sizes.to_vec();
        let writer = std::thread::spawn(move || {
            for (i, size) in sizes.into_iter().enumerate() {
                let head = encode(&header([("type", json!("t")), ("id", json!(i))]), &[], MAX_FRAME).unwrap();
                let head = crate::plugin::codec::encode_head(&head[8..], size, MAX_FRAME).unwrap();
                let body: Vec<u8> = (0..size).map(|j| (j % 251) as u8).collect();
                write_frame(a.as_raw_fd(), &head, &body, None, 0).unwrap();
            }
        });
        let mut reader = FrameReader::new(MAX_FRAME);
        let mut out = Vec::new();
        while out.len() < 4 {
            match reader.next(b.as_raw_fd(), 0).unwrap() {
                Read::Frame(f) => out.push(f),
                other => panic!("{other:?}"),
            }
        }
        writer.join().unwrap();
        out
    }

    #[test]
    fn small_and_large_frames_round_trip() {
        let sizes = [0, 1024, 300 * 1024, 10];
        for (i, f) in frames_through(&sizes).into_iter().enumerate() {
            assert_eq!(f.id(), Some(i as u64));
            assert_eq!(f.body.len(), sizes[i]);
            assert!(f.body.iter().enumerate().all(|(j, b)| *b == (j % 251) as u8));
        }
    }

    #[test]
    fn garbage_and_oversize_are_errors() {
        for (bytes, max) in [(&b"\0\0\0\x0cnot a frame!"[..], MAX_FRAME), (&b"\xff\xff\xff\xff"[..], MAX_FRAME), (&b"\0\0\0\x64"[..], 50)] {
            let (a, b) = UnixStream::pair().unwrap();
            write_frame(a.as_raw_fd(), bytes, &[], None, 0).unwrap();
            let mut reader = FrameReader::new(max);
            assert!(reader.next(b.as_raw_fd(), 0).is_err(), "{bytes:?}");
        }
    }

    #[test]
    fn dontwait_on_an_empty_socket_would_block() {
        let (_a, b) = UnixStream::pair().unwrap();
        let mut reader = FrameReader::new(MAX_FRAME);
        assert!(matches!(reader.next(b.as_raw_fd(), libc::MSG_DONTWAIT).unwrap(), Read::WouldBlock));
    }
}
