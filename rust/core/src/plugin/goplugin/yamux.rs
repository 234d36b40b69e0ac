//! A yamux client session (hashicorp/yamux spec.md), exactly as much as go-plugin's net/rpc
//! needs: open streams, send data within the peer's window, receive data and hand the window
//! back at once, answer pings, and notice FIN, RST, go-away and the socket closing.
//!
//! One task reads the socket (buffered: a header and its data in one read) and hands each
//! stream its bytes through a channel. Frames are written straight from the thread that sends
//! them, so a call costs no hop to the runtime thread; what the socket does not take at once
//! waits, in order, for a writer task.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, Notify, Semaphore};

pub const DATA: u8 = 0;
pub const WINDOW_UPDATE: u8 = 1;
pub const PING: u8 = 2;
pub const GO_AWAY: u8 = 3;
pub const SYN: u16 = 1;
pub const ACK: u16 = 2;
pub const FIN: u16 = 4;
pub const RST: u16 = 8;

/// Every stream starts with this much window in each direction.
pub const INITIAL_WINDOW: u32 = 256 * 1024;
/// The largest data frame this side sends.
const CHUNK: usize = 64 * 1024;
/// The reader's buffer: a reply's header and data usually arrive in one read.
const READ_BUFFER: usize = 64 * 1024;

/// A frame header: version 0, type, flags, stream id, length (big-endian).
pub fn header(kind: u8, flags: u16, stream: u32, length: u32) -> [u8; 12] {
    let mut h = [0u8; 12];
    h[1] = kind;
    h[2..4].copy_from_slice(&flags.to_be_bytes());
    h[4..8].copy_from_slice(&stream.to_be_bytes());
    h[8..12].copy_from_slice(&length.to_be_bytes());
    h
}

struct Slot {
    data: mpsc::UnboundedSender<Vec<u8>>,
    window: Arc<Semaphore>,
    /// Bytes received and not yet handed back to the peer's window.
    unacked: u32,
}

/// The socket's writing side, shared by every sender.
struct Writer {
    /// A second descriptor of the socket (non-blocking, as tokio set it up) for direct writes.
    direct: std::os::unix::net::UnixStream,
    state: Mutex<WriteState>,
    /// Tells the writer task there is a queue to drain, or that the session ended.
    wake: Notify,
}

#[derive(Default)]
struct WriteState {
    /// Bytes the socket did not take at once, for the writer task.
    queue: Vec<u8>,
    /// The writer task holds bytes taken from the queue: no direct write until it is done.
    draining: bool,
    /// No more writes: the session ended, or writing failed.
    stopped: Option<String>,
}

impl Writer {
    /// Writes `frame` now if nothing waits before it and the socket takes it; queues the rest.
    fn send(&self, frame: &[u8]) -> Result<(), String> {
        let mut state = self.state.lock().unwrap();
        if let Some(why) = &state.stopped {
            return Err(why.clone());
        }
        let mut rest = frame;
        if state.queue.is_empty() && !state.draining {
            while !rest.is_empty() {
                match send_now(&self.direct, rest) {
                    Ok(n) => rest = &rest[n..],
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        let why = format!("writing the yamux session: {e}");
                        state.stopped = Some(why.clone());
                        drop(state);
                        self.wake.notify_one();
                        return Err(why);
                    }
                }
            }
            if rest.is_empty() {
                return Ok(());
            }
        }
        state.queue.extend_from_slice(rest);
        drop(state);
        self.wake.notify_one();
        Ok(())
    }

    fn stop(&self, why: String) {
        self.state.lock().unwrap().stopped.get_or_insert(why);
        self.wake.notify_one();
    }

    /// The writer task: drains the queue whenever told, until the session stops.
    async fn run(self: Arc<Self>, mut wr: OwnedWriteHalf) {
        loop {
            self.wake.notified().await;
            loop {
                let bytes = {
                    let mut state = self.state.lock().unwrap();
                    state.draining = !state.queue.is_empty();
                    std::mem::take(&mut state.queue)
                };
                if bytes.is_empty() {
                    break;
                }
                if let Err(e) = wr.write_all(&bytes).await {
                    let mut state = self.state.lock().unwrap();
                    state.stopped.get_or_insert(format!("writing the yamux session: {e}"));
                    state.draining = false;
                    return;
                }
            }
            if self.state.lock().unwrap().stopped.is_some() {
                return;
            }
        }
    }
}

/// One non-blocking send, without SIGPIPE if the plugin is gone.
fn send_now(socket: &std::os::unix::net::UnixStream, bytes: &[u8]) -> std::io::Result<usize> {
    // SAFETY: the descriptor is open for as long as `socket` is borrowed; `bytes` is valid.
    let n = unsafe { libc::send(socket.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

struct Inner {
    writer: Arc<Writer>,
    streams: Mutex<HashMap<u32, Slot>>,
    next_id: AtomicU32,
    /// Why the session ended, once it has.
    ended: Mutex<Option<String>>,
}

impl Inner {
    fn end(&self, why: String) {
        self.ended.lock().unwrap().get_or_insert(why.clone());
        // What was queued before still goes out; nothing after.
        self.writer.stop(why);
        // Dropping the senders ends every reader; closing the windows fails every writer.
        for (_, slot) in self.streams.lock().unwrap().drain() {
            slot.window.close();
        }
    }

    fn ended(&self) -> String {
        self.ended.lock().unwrap().clone().unwrap_or_else(|| "the session is closed".into())
    }
}

#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

impl Session {
    /// Starts the reader and writer tasks on the current runtime. `on_end` is told once how the
    /// session ended: None for a clean end of the socket, Some(error) otherwise.
    pub fn start(socket: UnixStream, on_end: impl FnOnce(Option<String>) + Send + 'static) -> Result<Self, String> {
        let direct = socket.as_fd().try_clone_to_owned().map_err(|e| format!("duplicating the plugin's socket: {e}"))?;
        let writer = Arc::new(Writer { direct: direct.into(), state: Mutex::default(), wake: Notify::new() });
        let inner = Arc::new(Inner {
            writer: writer.clone(),
            streams: Mutex::new(HashMap::new()),
            next_id: AtomicU32::new(1),
            ended: Mutex::new(None),
        });
        let (rd, wr) = socket.into_split();
        tokio::spawn(writer.run(wr));
        let reader = inner.clone();
        tokio::spawn(async move {
            let mut rd = BufReader::with_capacity(READ_BUFFER, rd);
            let result = read_loop(&mut rd, &reader).await;
            let why = match &result {
                Ok(()) => "the plugin closed the connection".to_string(),
                Err(e) => e.clone(),
            };
            reader.end(why);
            on_end(result.err());
        });
        Ok(Self { inner })
    }

    /// Opens a stream (a window update carrying SYN, as hashicorp's client does).
    pub fn open(&self) -> Result<Stream, String> {
        let id = self.inner.next_id.fetch_add(2, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        let window = Arc::new(Semaphore::new(INITIAL_WINDOW as usize));
        {
            let mut streams = self.inner.streams.lock().unwrap();
            if self.inner.ended.lock().unwrap().is_some() {
                return Err(self.inner.ended());
            }
            streams.insert(id, Slot { data: tx, window: window.clone(), unacked: 0 });
        }
        self.send(&header(WINDOW_UPDATE, SYN, id, 0))?;
        Ok(Stream { id, rx, pending: Vec::new(), pos: 0, window, session: self.clone() })
    }

    fn send(&self, frame: &[u8]) -> Result<(), String> {
        self.inner.writer.send(frame).map_err(|e| self.inner.ended.lock().unwrap().clone().unwrap_or(e))
    }

    /// Says go-away (normal termination) and stops reading.
    pub fn close(&self) {
        let _ = self.send(&header(GO_AWAY, 0, 0, 0));
        self.inner.end("the host closed the session".into());
    }
}

async fn read_loop(rd: &mut (impl AsyncRead + Unpin), inner: &Inner) -> Result<(), String> {
    let mut h = [0u8; 12];
    loop {
        match rd.read_exact(&mut h).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(format!("reading the yamux session: {e}")),
        }
        if h[0] != 0 {
            return Err(format!("yamux frame of version {}", h[0]));
        }
        let kind = h[1];
        let flags = u16::from_be_bytes([h[2], h[3]]);
        let id = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
        let length = u32::from_be_bytes([h[8], h[9], h[10], h[11]]);
        match kind {
            DATA => {
                if length > INITIAL_WINDOW {
                    return Err(format!("yamux data frame of {length} bytes exceeds the window on stream {id}"));
                }
                let mut data = vec![0u8; length as usize];
                rd.read_exact(&mut data).await.map_err(|e| format!("reading a yamux data frame: {e}"))?;
                let mut streams = inner.streams.lock().unwrap();
                if let Some(slot) = streams.get_mut(&id) {
                    // An empty frame only carries flags (FIN, RST): nothing to deliver.
                    if length > 0 && slot.data.send(data).is_ok() {
                        // What arrives is queued at once, so the window can go back; in half-window
                        // steps, as hashicorp/yamux does, to save a frame per message.
                        slot.unacked += length;
                        if slot.unacked >= INITIAL_WINDOW / 2 {
                            let _ = inner.writer.send(&header(WINDOW_UPDATE, 0, id, slot.unacked));
                            slot.unacked = 0;
                        }
                    }
                }
                drop(streams);
            }
            WINDOW_UPDATE => {
                if flags & SYN != 0 {
                    // go-plugin's net/rpc server never opens streams: refuse.
                    let _ = inner.writer.send(&header(WINDOW_UPDATE, RST, id, 0));
                    continue;
                }
                if let Some(s) = inner.streams.lock().unwrap().get(&id) {
                    s.window.add_permits(length as usize);
                }
            }
            PING => {
                if flags & SYN != 0 {
                    let _ = inner.writer.send(&header(PING, ACK, 0, length));
                }
                continue;
            }
            GO_AWAY => return Err(format!("the plugin ended the yamux session (go-away code {length})")),
            _ => return Err(format!("yamux frame of unknown type {kind}")),
        }
        if flags & (FIN | RST) != 0 {
            if let Some(slot) = inner.streams.lock().unwrap().remove(&id) {
                if flags & RST != 0 {
                    slot.window.close();
                }
            }
        }
    }
}

/// One stream. Reads return what arrived in order; writes wait for the peer's window.
pub struct Stream {
    pub id: u32,
    rx: mpsc::UnboundedReceiver<Vec<u8>>,
    pending: Vec<u8>,
    pos: usize,
    window: Arc<Semaphore>,
    session: Session,
}

impl Stream {
    pub async fn write_all(&self, mut data: &[u8]) -> Result<(), String> {
        while !data.is_empty() {
            let n = data.len().min(CHUNK);
            let permit = self.window.acquire_many(n as u32).await.map_err(|_| self.closed())?;
            permit.forget();
            let mut frame = Vec::with_capacity(12 + n);
            frame.extend_from_slice(&header(DATA, 0, self.id, n as u32));
            frame.extend_from_slice(&data[..n]);
            self.session.send(&frame)?;
            data = &data[n..];
        }
        Ok(())
    }

    /// The next bytes that arrived; None at the end of the stream.
    pub async fn read_chunk(&mut self) -> Option<Vec<u8>> {
        if self.pos < self.pending.len() {
            let rest = self.pending.split_off(self.pos);
            self.pending.clear();
            self.pos = 0;
            return Some(rest);
        }
        self.rx.recv().await
    }

    pub async fn read_exact(&mut self, n: usize) -> Result<Vec<u8>, String> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            if self.pos == self.pending.len() {
                self.pending = self.rx.recv().await.ok_or_else(|| self.closed())?;
                self.pos = 0;
            }
            let take = (n - out.len()).min(self.pending.len() - self.pos);
            out.extend_from_slice(&self.pending[self.pos..self.pos + take]);
            self.pos += take;
        }
        Ok(out)
    }

    pub async fn read_u8(&mut self) -> Result<u8, String> {
        Ok(self.read_exact(1).await?[0])
    }

    fn closed(&self) -> String {
        match self.session.inner.ended.lock().unwrap().clone() {
            Some(why) => why,
            None => format!("the plugin closed yamux stream {}", self.id),
        }
    }
}
