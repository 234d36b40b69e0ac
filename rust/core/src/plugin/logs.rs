//! Lines a plugin writes to its stdout and stderr, on their way to Python `logging`.
//!
//! The runtime thread only pushes into this queue; a Python thread drains it. That way the
//! plugin runtime never waits for the GIL (a Python thread holding it for long cannot stall
//! every plugin call), and a log storm costs a bounded amount of memory.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// Lines kept while nobody drains; older lines are dropped (and counted) beyond this.
pub const QUEUE_LIMIT: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub plugin: String,
    /// "stdout", "stderr" or "host" (the host's own notes about the plugin).
    pub stream: &'static str,
    pub line: String,
}

#[derive(Default)]
struct State {
    lines: VecDeque<LogLine>,
    dropped: u64,
    closed: bool,
}

#[derive(Default)]
pub struct LogQueue {
    state: Mutex<State>,
    ready: Condvar,
}

impl LogQueue {
    pub fn push(&self, plugin: &str, stream: &'static str, line: String) {
        let mut s = self.state.lock().unwrap();
        if s.lines.len() >= QUEUE_LIMIT {
            s.lines.pop_front();
            s.dropped += 1;
        }
        s.lines.push_back(LogLine { plugin: plugin.to_string(), stream, line });
        drop(s);
        self.ready.notify_one();
    }

    /// Waits up to `timeout` for lines. Some(empty) on timeout; None once closed and drained.
    pub fn drain(&self, timeout: Duration) -> Option<Vec<LogLine>> {
        let deadline = Instant::now() + timeout;
        let mut s = self.state.lock().unwrap();
        while s.lines.is_empty() && !s.closed {
            let now = Instant::now();
            if now >= deadline {
                return Some(Vec::new());
            }
            s = self.ready.wait_timeout(s, deadline - now).unwrap().0;
        }
        if s.lines.is_empty() {
            return None;
        }
        let mut out: Vec<LogLine> = s.lines.drain(..).collect();
        if s.dropped > 0 {
            let note = format!("{} plugin log lines were dropped: nobody drained them", s.dropped);
            out.insert(0, LogLine { plugin: String::new(), stream: "host", line: note });
            s.dropped = 0;
        }
        Some(out)
    }

    pub fn close(&self) {
        self.state.lock().unwrap().closed = true;
        self.ready.notify_all();
    }
}

/// Splits a byte stream into lines (without the newline); a line longer than `max` is cut into
/// pieces so one runaway line cannot grow without bound.
#[derive(Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
    /// The last line was cut at the cap: a newline right after it ends nothing new.
    cut: bool,
}

impl LineSplitter {
    pub fn feed(&mut self, data: &[u8], max: usize, mut emit: impl FnMut(String)) {
        for &b in data {
            if b == b'\n' {
                let empty = self.pending.is_empty() || self.pending == b"\r";
                if !(self.cut && empty) {
                    emit(take_line(&mut self.pending));
                }
                self.pending.clear();
                self.cut = false;
            } else {
                self.pending.push(b);
                if self.pending.len() >= max {
                    emit(take_line(&mut self.pending));
                    self.cut = true;
                } else if b != b'\r' {
                    self.cut = false;
                }
            }
        }
    }

    pub fn finish(&mut self, mut emit: impl FnMut(String)) {
        if !self.pending.is_empty() {
            emit(take_line(&mut self.pending));
        }
    }
}

fn take_line(buf: &mut Vec<u8>) -> String {
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    let line = String::from_utf8_lossy(buf).into_owned();
    buf.clear();
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines_across_chunks_and_caps_long_ones() {
        let mut s = LineSplitter::default();
        let mut out = Vec::new();
        s.feed(b"ab\ncd", 100, |l| out.push(l));
        s.feed(b"e\r\nxxxxx", 3, |l| out.push(l));
        s.finish(|l| out.push(l));
        assert_eq!(out, ["ab", "cde", "xxx", "xx"]);
    }

    #[test]
    fn queue_drains_times_out_and_closes() {
        let q = LogQueue::default();
        assert_eq!(q.drain(Duration::from_millis(1)), Some(vec![]));
        q.push("p", "stderr", "hello".into());
        let lines = q.drain(Duration::ZERO).unwrap();
        assert_eq!(lines[0].line, "hello");
        q.close();
        assert_eq!(q.drain(Duration::from_secs(5)), None);
    }

    #[test]
    fn a_full_queue_drops_the_oldest_and_says_so() {
        let q = LogQueue::default();
        for i in 0..QUEUE_LIMIT + 5 {
            q.push("p", "stdout", i.to_string());
        }
        let lines = q.drain(Duration::ZERO).unwrap();
        assert_eq!(lines.len(), QUEUE_LIMIT + 1);
        assert!(lines[0].line.starts_with("5 plugin log lines were dropped"));
        assert_eq!(lines[1].line, "5");
    }
}
