//! RELP delivery across a daemon restart: the per-destination resend queue, and the loop that
//! delivers the queue and then an execution's own messages, in order, each acknowledged.
//!
//! A lost session or a refused connection is retried with a short backoff until the send's
//! deadline (its `timeout`), so a daemon restarted within it costs only delay. What is still not
//! acknowledged then waits in the queue (bounded: the oldest goes first, and the execution that
//! drops it says so) and goes before the next execution's messages. A message is taken off only
//! by its `200`, so an acknowledged message is never sent again; one written but unanswered when
//! the session dropped is sent again (at least once: imrelp deduplicates nothing across sessions).

use std::collections::VecDeque;
use std::io;
use std::time::{Duration, Instant};

use super::conn::Conn;
use super::relp::{self, RelpConn};
use super::tcp::Peer;

/// The first pause before reconnecting, doubled after each failure up to `MAX_PAUSE`.
const FIRST_PAUSE: Duration = Duration::from_millis(50);
const MAX_PAUSE: Duration = Duration::from_secs(1);
/// Connecting never gets less than this, even right at the deadline.
const MIN_CONNECT: Duration = Duration::from_millis(10);

/// A message not acknowledged yet, and the execution it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    pub key: String,
    pub bytes: Vec<u8>,
}

/// The messages waiting for a destination, oldest first.
#[derive(Debug, Default)]
pub struct Queue {
    items: VecDeque<Waiting>,
}

impl Queue {
    /// Appends a message; while more than `bound` wait, the oldest are dropped and returned.
    pub fn push(&mut self, key: &str, bytes: Vec<u8>, bound: usize) -> Vec<Waiting> {
        self.items.push_back(Waiting { key: key.to_string(), bytes });
        let excess = self.items.len().saturating_sub(bound.max(1));
        self.items.drain(..excess).collect()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn front(&self) -> Option<&Waiting> {
        self.items.front()
    }

    pub fn pop_front(&mut self) -> Option<Waiting> {
        self.items.pop_front()
    }

    pub fn take_all(&mut self) -> Vec<Waiting> {
        self.items.drain(..).collect()
    }
}

/// `K1, K2 (3 messages)`: each execution once, in order, with its count when more than one.
pub fn executions(waiting: &[Waiting]) -> String {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for w in waiting {
        match counts.iter_mut().find(|(k, _)| *k == w.key) {
            Some((_, n)) => *n += 1,
            None => counts.push((&w.key, 1)),
        }
    }
    let parts: Vec<String> = counts
        .into_iter()
        .map(|(k, n)| if n == 1 { k.to_string() } else { format!("{k} ({n} messages)") })
        .collect();
    parts.join(", ")
}

/// Where and how to (re)connect.
pub struct Target<'a> {
    pub host: &'a str,
    pub port: u16,
    /// The wait for each answer.
    pub timeout: Duration,
}

/// How far one `deliver` got.
#[derive(Debug, Default)]
pub struct Outcome {
    /// How many of the execution's own messages were acknowledged.
    pub acked: usize,
    /// Why delivery stopped at the deadline (the queue and `own[acked..]` are not delivered).
    pub stopped: Option<io::Error>,
    /// The server refused `own[acked]` (an answer other than 200): not resent.
    pub refused: Option<io::Error>,
    /// What happened to other executions' waiting messages (refused, so dropped).
    pub notes: Vec<String>,
}

/// Delivers the queue, then `own`, in order, until done, refused, or `deadline` passes with no
/// session to be had.
pub fn deliver(conn: &mut Option<Conn>, queue: &mut Queue, own: &[Vec<u8>], target: &Target<'_>, deadline: Instant) -> Outcome {
    let mut out = Outcome::default();
    let mut pause = FIRST_PAUSE;
    loop {
        let from_queue = !queue.is_empty();
        let bytes = match queue.front() {
            Some(w) => &w.bytes,
            None => match own.get(out.acked) {
                Some(m) => m,
                None => return out,
            },
        };
        match send_one(conn, target, deadline, bytes) {
            Ok(()) => {
                if from_queue {
                    queue.pop_front();
                } else {
                    out.acked += 1;
                }
                pause = FIRST_PAUSE;
            }
            Err(relp::Failure::Refused(e)) if from_queue => {
                let w = queue.pop_front().expect("the message sent came from the queue");
                out.notes.push(format!("a waiting message of execution {} was refused and dropped: {e}", w.key));
            }
            Err(relp::Failure::Refused(e)) => {
                out.refused = Some(e);
                return out;
            }
            Err(relp::Failure::Lost(e)) => {
                *conn = None;
                // A server that speaks garbage would do so again: no point retrying now.
                if e.kind() == io::ErrorKind::InvalidData || !wait(&mut pause, deadline) {
                    out.stopped = Some(e);
                    return out;
                }
            }
        }
    }
}

/// One message on the cached session, or on a new one (the cached one is dropped first if the
/// server closed it). A failure to connect is a `Lost`: nothing was sent.
fn send_one(conn: &mut Option<Conn>, target: &Target<'_>, deadline: Instant, bytes: &[u8]) -> Result<(), relp::Failure> {
    if let Some(c) = conn.as_mut() {
        if !matches!(c.peer(), Peer::Open) {
            *conn = None;
        }
    }
    let c = match conn {
        Some(c) => c,
        None => {
            let connect = deadline.saturating_duration_since(Instant::now()).max(MIN_CONNECT);
            let session = RelpConn::open_within(target.host, target.port, connect, target.timeout)
                .map_err(relp::Failure::Lost)?;
            conn.insert(Conn::Relp(session))
        }
    };
    let Conn::Relp(session) = c else { unreachable!("a RELP destination opens a RELP session") };
    session.send(bytes)
}

/// Sleeps before the next attempt; false when the deadline has passed.
fn wait(pause: &mut Duration, deadline: Instant) -> bool {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return false;
    }
    std::thread::sleep((*pause).min(left));
    *pause = (*pause * 2).min(MAX_PAUSE);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(key: &str, b: &[u8]) -> Waiting {
        Waiting { key: key.to_string(), bytes: b.to_vec() }
    }

    #[test]
    fn the_bound_drops_the_oldest() {
        let mut q = Queue::default();
        assert!(q.push("a", b"1".to_vec(), 2).is_empty());
        assert!(q.push("a", b"2".to_vec(), 2).is_empty());
        assert_eq!(q.push("b", b"3".to_vec(), 2), [w("a", b"1")]);
        assert_eq!(q.take_all(), [w("a", b"2"), w("b", b"3")]);
        assert!(q.is_empty());
    }

    #[test]
    fn executions_are_named_once_in_order() {
        assert_eq!(executions(&[w("a", b""), w("b", b""), w("a", b"")]), "a (2 messages), b");
    }

    #[test]
    fn the_wait_stops_at_the_deadline() {
        let mut pause = FIRST_PAUSE;
        assert!(!wait(&mut pause, Instant::now()));
        assert!(wait(&mut pause, Instant::now() + Duration::from_secs(5)));
        assert_eq!(pause, FIRST_PAUSE * 2);
    }
}
