//! The plugin side of docs/PROTOCOL.md for the Python SDK (`dkron_exec.plugin.serve`): frames
//! read and written in Rust, the GIL released while a thread waits. Several SDK worker threads
//! call `recv` in turn; the one that reads a call runs it, so a call's path has no thread hop.
//! A processor call arrives as a ready `Execution`, and its answer is encoded from the record.
//!
//! Taking turns (`Turns`): the thread that read a call leaves the reading role free, but the
//! others stand by instead of reading at once. If it comes back to `recv` first (the usual case:
//! one call at a time), it reads again: the same thread, warm caches, no wake-up per call. A
//! standby thread takes over when the role has been left free for `TAKEOVER` while a call runs
//! (a long call must not delay the next one), or at once when more data is already waiting.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use dkron_exec_core::execution::{make_key, Execution, ProtocolFields};
use dkron_exec_core::plugin::codec::{self, Request, MAX_FRAME};
use dkron_exec_core::plugin::serde_json::{self, Value};
use dkron_exec_core::plugin::wire::{self, FrameReader, RawFrame, Read, WriteError};
use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};

use crate::py_execution::{from_py_parts, output_bytes, to_py};

pyo3::import_exception!(dkron_exec.plugin.wire, FrameError);

/// How often a thread blocked in `recv` looks at Python's signals.
const SIGNAL_SLICE: Duration = Duration::from_millis(100);
/// How long the reading role may stay free while a call runs before a standby thread reads.
const TAKEOVER: Duration = Duration::from_millis(2);
/// Standby threads stop ticking after this long without a call (an idle plugin sleeps).
const IDLE: Duration = Duration::from_millis(200);

thread_local! {
    /// This thread returned a call from `recv` and has not come back yet.
    static RUNNING_CALL: Cell<bool> = const { Cell::new(false) };
}

struct TurnState {
    reading: bool,
    /// Threads running a call.
    running: usize,
    /// When the reading role was last left free with a call running.
    vacated_at: Instant,
    last_call: Instant,
    /// Standby threads waiting without a timeout (nothing ran lately).
    sleeping: usize,
    /// More frames are already buffered: a standby thread should read now.
    hurry: bool,
}

struct Turns {
    state: Mutex<TurnState>,
    standby: Condvar,
}

impl Turns {
    fn new() -> Self {
        let now = Instant::now();
        let state = TurnState { reading: false, running: 0, vacated_at: now, last_call: now, sleeping: 0, hurry: false };
        Self { state: Mutex::new(state), standby: Condvar::new() }
    }

    /// Blocks until this thread has the reading role.
    fn take(&self) {
        let mut s = self.state.lock().unwrap();
        if RUNNING_CALL.with(|r| r.replace(false)) {
            s.running -= 1;
        }
        loop {
            if !s.reading {
                let now = Instant::now();
                let free_long = s.running > 0 && now.duration_since(s.vacated_at) >= TAKEOVER;
                // The role is free and nobody is running a call that will come back for it (or
                // that call has taken long): read.
                if s.running == 0 || free_long || s.hurry {
                    s.reading = true;
                    s.hurry = false;
                    return;
                }
            }
            if s.last_call.elapsed() >= IDLE && !s.hurry {
                s.sleeping += 1;
                s = self.standby.wait(s).unwrap();
                s.sleeping -= 1;
            } else {
                s = self.standby.wait_timeout(s, TAKEOVER).unwrap().0;
            }
        }
    }

    /// Leaves the reading role; `call`: this thread now runs a call; `pending`: more frames are
    /// already buffered.
    fn leave(&self, call: bool, pending: bool) {
        let mut s = self.state.lock().unwrap();
        s.reading = false;
        if call {
            RUNNING_CALL.with(|r| r.set(true));
            s.running += 1;
            let now = Instant::now();
            s.vacated_at = now;
            s.last_call = now;
            s.hurry = pending;
            // A sleeping standby thread starts ticking, so it can take over a long call.
            if pending || s.sleeping > 0 {
                self.standby.notify_one();
            }
        } else {
            self.standby.notify_one();
        }
    }
}

#[pyclass(module = "dkron_exec._core", name = "PluginChannel", frozen)]
pub struct PluginChannel {
    socket: OwnedFd,
    reader: Mutex<FrameReader>,
    writing: Mutex<()>,
    max_frame: usize,
    /// Threads inside `recv` (reading, or waiting for their turn).
    receivers: AtomicUsize,
    turns: Turns,
    /// The fields of each execution handed out by `recv`, by call: an answer whose fields are
    /// all still the same objects goes back as `"execution": {}` (nothing changed, PROTOCOL.md
    /// §4.2), without encoding the record again or the host decoding it.
    handed_out: Mutex<HashMap<u64, Py<PyDict>>>,
}

fn write_error(e: WriteError) -> PyErr {
    match e {
        WriteError::Io(e) => e.into(),
        WriteError::TimedOut { .. } => PyOSError::new_err("the host does not read the channel"),
    }
}

/// The config map of a call: string values, as in Dkron (anything else as its JSON text).
fn config_of(config: Option<HashMap<String, Value>>) -> HashMap<String, String> {
    config
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| match v {
            Value::String(s) => (k, s),
            other => (k, other.to_string()),
        })
        .collect()
}

/// The execution of a `process` request; its output is the frame's body.
fn execution_of(fields: Option<ProtocolFields>, body: Vec<u8>) -> Result<Execution, String> {
    let fields = fields.unwrap_or_default();
    if fields.started_at.is_none() {
        return Err("started_at: an execution needs a start time".into());
    }
    let mut execution = Execution::default();
    execution.apply_protocol_fields(fields, body)?;
    if execution.key.is_empty() {
        execution.key = make_key(execution.started_ns, &execution.node_name);
    }
    Ok(execution)
}

/// The list among an execution's fields (the others are immutable values).
const MUTABLE_FIELD: &str = "processor_errors";

/// Every field of `execution` is still the object it was handed out with (the list: still the
/// same items).
fn unchanged(execution: &Bound<'_, PyAny>, fields: &Bound<'_, PyDict>) -> PyResult<bool> {
    let Ok(now) = execution.getattr("__dict__")?.cast_into::<PyDict>() else { return Ok(false) };
    if now.len() != fields.len() {
        return Ok(false);
    }
    for (name, value) in fields.iter() {
        let same = match now.get_item(&name)? {
            Some(current) if name.eq(MUTABLE_FIELD)? => current.cast_into::<PyList>().is_ok_and(|l| l.to_tuple().eq(&value).unwrap_or(false)),
            Some(current) => current.is(&value),
            None => false,
        };
        if !same {
            return Ok(false);
        }
    }
    Ok(true)
}

impl PluginChannel {
    fn fd(&self) -> i32 {
        self.socket.as_raw_fd()
    }

    fn write(&self, py: Python<'_>, head: &[u8], body: &[u8]) -> PyResult<()> {
        py.detach(|| {
            let _w = self.writing.lock().unwrap();
            wire::write_frame(self.fd(), head, body, None, 0)
        })
        .map_err(write_error)
    }

    /// More frames are already in the buffer.
    fn pending(&self) -> bool {
        self.reader.lock().unwrap().has_buffered()
    }

    fn next_frame(&self, py: Python<'_>) -> PyResult<Option<RawFrame>> {
        loop {
            let read = py.detach(|| self.reader.lock().unwrap().next_raw(self.fd(), 0));
            match read {
                Ok(Read::Frame(frame)) => return Ok(Some(frame)),
                Ok(Read::Eof) => return Ok(None),
                Ok(Read::WouldBlock) => py.check_signals()?,
                Err(e) => return Err(FrameError::new_err(e.to_string())),
            }
        }
    }
}

#[pymethods]
impl PluginChannel {
    /// Takes over `fd`, the plugin's end of the channel (it is closed with this object).
    #[new]
    #[pyo3(signature = (fd, max_frame = MAX_FRAME))]
    fn new(fd: i32, max_frame: usize) -> PyResult<Self> {
        // SAFETY: the caller hands us the fd; from now on this object owns it.
        let socket = unsafe { OwnedFd::from_raw_fd(fd) };
        wire::set_blocking_with_timeouts(socket.as_raw_fd(), SIGNAL_SLICE)?;
        Ok(Self {
            socket,
            reader: Mutex::new(FrameReader::new(max_frame)),
            writing: Mutex::new(()),
            max_frame,
            receivers: AtomicUsize::new(0),
            turns: Turns::new(),
            handed_out: Mutex::new(HashMap::new()),
        })
    }

    /// The next message from the host, GIL released while waiting:
    /// `("process", id, Execution, config)`, `("execute", id, header JSON, payload)`,
    /// `("cancel", id, None, None)`, `("invalid", id, why, None)` (a request that cannot be
    /// served), or None at `shutdown` and end-of-file. Notifications are skipped. Raises
    /// FrameError when the host breaks the protocol.
    fn recv<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyTuple>>> {
        self.receivers.fetch_add(1, Ordering::Relaxed);
        py.detach(|| self.turns.take());
        // A panic must not leave the reading turn taken: the other workers would wait forever.
        let result = crate::errors::guard(|| self.recv_message(py));
        let call = matches!(result, Ok(Some((_, true))));
        self.turns.leave(call, call && self.pending());
        self.receivers.fetch_sub(1, Ordering::Relaxed);
        result.map(|m| m.map(|(message, _)| message))
    }

    /// Threads now inside `recv`: when none is, a new call would wait for a worker.
    fn receivers(&self) -> usize {
        self.receivers.load(Ordering::Relaxed)
    }

    /// Answers a `process` call with `execution` (its output as the body).
    fn send_result(&self, py: Python<'_>, id: u64, execution: &Bound<'_, PyAny>) -> PyResult<()> {
        let handed_out = self.handed_out.lock().unwrap().remove(&id);
        if let Some(fields) = handed_out {
            if unchanged(execution, fields.bind(py))? {
                let mut copy = Vec::new();
                let output = execution.getattr("output")?;
                let output = output_bytes(&output, &mut copy)?;
                let header = format!("{{\"type\":\"result\",\"id\":{id},\"execution\":{{}}}}");
                return self.send(py, header.as_bytes(), output);
            }
        }
        let (record, output) = from_py_parts(execution)?;
        let mut copy = Vec::new();
        let output = output_bytes(&output, &mut copy)?;
        let head = codec::execution_head("result", id, &record, None)
            .and_then(|head| codec::finish_head(head, output.len(), self.max_frame))
            .map_err(|e| FrameError::new_err(e.to_string()))?;
        self.write(py, &head, output)
    }

    /// Answers a call with an error.
    fn send_error(&self, py: Python<'_>, id: u64, message: &str) -> PyResult<()> {
        self.handed_out.lock().unwrap().remove(&id);
        let header = serde_json::json!({"type": "error", "id": id, "message": message});
        self.send(py, &serde_json::to_vec(&header).expect("JSON"), &[])
    }

    /// Sends a frame: `header` is a JSON object (bytes), `body` raw bytes.
    #[pyo3(signature = (header, body = b"".as_slice()))]
    fn send(&self, py: Python<'_>, header: &[u8], body: &[u8]) -> PyResult<()> {
        let head = codec::encode_head(header, body.len(), self.max_frame).map_err(|e| FrameError::new_err(e.to_string()))?;
        self.write(py, &head, body)
    }
}

impl PluginChannel {
    /// The next message, and whether it is a call (the thread will be busy running it).
    fn recv_message<'py>(&self, py: Python<'py>) -> PyResult<Option<(Bound<'py, PyTuple>, bool)>> {
        loop {
            let Some(RawFrame { header, body }) = self.next_frame(py)? else { return Ok(None) };
            let none = || py.None().into_bound(py);
            let request: Request = match serde_json::from_slice(&header) {
                Ok(request) => request,
                Err(why) => {
                    // Not a JSON object with a "type" at all: the host broke the protocol.
                    let generic = codec::parse_header(&header).map_err(|e| FrameError::new_err(e.to_string()))?;
                    let Some(id) = generic.get("id").and_then(Value::as_u64) else { continue };
                    let why = format!("malformed request: {why}");
                    let message = ["invalid".into_pyobject(py)?.into_any(), id.into_pyobject(py)?.into_any(), why.into_pyobject(py)?.into_any(), none()];
                    return Ok(Some((PyTuple::new(py, message)?, false)));
                }
            };
            let kind = request.kind.as_str();
            let message = match (kind, request.id) {
                ("shutdown", _) => return Ok(None),
                ("process", Some(id)) => match execution_of(request.execution, body) {
                    Ok(execution) => {
                        let config = config_of(request.config).into_pyobject(py)?.into_any();
                        let execution = to_py(py, &execution)?;
                        let fields = execution.getattr("__dict__")?.cast_into::<PyDict>()?.copy()?;
                        // The one mutable field: a processor may append to it in place.
                        if let Some(errors) = fields.get_item(MUTABLE_FIELD)? {
                            fields.set_item(MUTABLE_FIELD, errors.cast_into::<PyList>()?.to_tuple())?;
                        }
                        self.handed_out.lock().unwrap().insert(id, fields.unbind());
                        PyTuple::new(py, [kind.into_pyobject(py)?.into_any(), id.into_pyobject(py)?.into_any(), execution, config])?
                    }
                    Err(why) => {
                        PyTuple::new(py, ["invalid".into_pyobject(py)?.into_any(), id.into_pyobject(py)?.into_any(), why.into_pyobject(py)?.into_any(), none()])?
                    }
                },
                ("execute", Some(id)) => PyTuple::new(
                    py,
                    [kind.into_pyobject(py)?.into_any(), id.into_pyobject(py)?.into_any(), PyBytes::new(py, &header).into_any(), PyBytes::new(py, &body).into_any()],
                )?,
                ("cancel", Some(id)) => PyTuple::new(py, [kind.into_pyobject(py)?.into_any(), id.into_pyobject(py)?.into_any(), none(), none()])?,
                (other, Some(id)) => {
                    let why = format!("unknown request type {other:?}");
                    PyTuple::new(py, ["invalid".into_pyobject(py)?.into_any(), id.into_pyobject(py)?.into_any(), why.into_pyobject(py)?.into_any(), none()])?
                }
                // Notifications ("welcome", and those of later versions) need nothing.
                (_, None) => continue,
            };
            return Ok(Some((message, matches!(kind, "process" | "execute"))));
        }
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PluginChannel>()
}
