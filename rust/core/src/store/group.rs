//! Group commit: callers that write at the same moment share one transaction.
//!
//! Leader/follower: a caller that finds nobody writing becomes the leader and writes its own
//! items (borrowed, not copied) plus everything queued, in one call of `write`. A caller that
//! finds a write in progress queues a copy of its items and sleeps; when the leader is done it
//! posts each queued caller's result and wakes the sleepers, one of which leads the next round
//! with whatever queued meanwhile. Alone, a caller takes two uncontended locks: no thread hop,
//! no copy, no syscall beyond the write itself.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// The queue and leadership of one writer (one database connection).
pub struct GroupCommit<T, E> {
    state: Mutex<State<T, E>>,
    /// Queued callers sleep here until a round has their result, or nobody leads.
    wake: Condvar,
    /// A gathering leader sleeps here until the woken callers have taken their results.
    gathered: Condvar,
    /// How long a new leader waits at most for the callers the last round woke (see `gather`).
    gather_limit: Duration,
}

struct State<T, E> {
    /// A leader is writing (or gathering): new callers queue instead.
    writing: bool,
    gathering: bool,
    queue: Vec<Queued<T>>,
    /// Results of queued callers, by ticket, until each takes its own.
    results: HashMap<u64, Result<(), E>>,
    next_ticket: u64,
    /// Callers waiting on `wake` (no notify, hence no syscall, when there are none).
    sleepers: usize,
}

struct Queued<T> {
    ticket: u64,
    items: Vec<T>,
}

impl<T, E> GroupCommit<T, E> {
    /// `gather_limit`: see `gather` (zero: never wait).
    pub fn new(gather_limit: Duration) -> Self {
        Self {
            state: Mutex::new(State {
                writing: false,
                gathering: false,
                queue: Vec::new(),
                results: HashMap::new(),
                next_ticket: 0,
                sleepers: 0,
            }),
            wake: Condvar::new(),
            gathered: Condvar::new(),
            gather_limit,
        }
    }
}

impl<T: Clone, E> GroupCommit<T, E> {
    /// Writes `own` (one caller's submission, kept together) with the submissions of concurrent
    /// callers. `write` gets the submissions of one round and must return one result per
    /// submission, in order; it must not panic (queued callers would wait for ever).
    pub fn submit<W>(&self, own: &[T], write: W) -> Result<(), E>
    where
        W: Fn(&[&[T]]) -> Vec<Result<(), E>>,
    {
        let mut state = self.lock();
        if !state.writing {
            state = self.gather(state);
            let queued = std::mem::take(&mut state.queue);
            drop(state);
            let mut round: Vec<&[T]> = Vec::with_capacity(1 + queued.len());
            round.push(own);
            round.extend(queued.iter().map(|q| q.items.as_slice()));
            let mut results = Self::checked(write(&round), round.len()).into_iter();
            let mine = results.next().expect("one result per submission");
            drop(self.finish(&queued, results));
            return mine;
        }
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.queue.push(Queued { ticket, items: own.to_vec() });
        loop {
            if let Some(result) = state.results.remove(&ticket) {
                if state.gathering && state.results.is_empty() {
                    self.gathered.notify_one();
                }
                return result;
            }
            if !state.writing {
                // The last leader left our submission for the next round: lead it.
                state = self.gather(state);
                let queued = std::mem::take(&mut state.queue);
                drop(state);
                let round: Vec<&[T]> = queued.iter().map(|q| q.items.as_slice()).collect();
                let results = Self::checked(write(&round), round.len());
                state = self.finish(&queued, results.into_iter());
                continue;
            }
            state.sleepers += 1;
            state = self.wake.wait(state).unwrap_or_else(PoisonError::into_inner);
            state.sleepers -= 1;
        }
    }

    /// Takes the lead. Callers the last round just woke have not taken their results yet; a
    /// busy writer among them submits again at once, so wait (briefly) for them to queue behind
    /// us rather than commit alone and leave them the next round, in the spirit of PostgreSQL's
    /// `commit_delay`. Alone, there is nothing to wait for and this costs nothing.
    fn gather<'a>(&'a self, mut state: MutexGuard<'a, State<T, E>>) -> MutexGuard<'a, State<T, E>> {
        state.writing = true;
        if state.results.is_empty() || self.gather_limit.is_zero() {
            return state;
        }
        state.gathering = true;
        let deadline = Instant::now() + self.gather_limit;
        while !state.results.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            state = self.gathered.wait_timeout(state, left).unwrap_or_else(PoisonError::into_inner).0;
        }
        state.gathering = false;
        state
    }

    fn checked(results: Vec<Result<(), E>>, submissions: usize) -> Vec<Result<(), E>> {
        assert_eq!(results.len(), submissions, "write must return one result per submission");
        results
    }

    /// Ends a round: posts the queued callers' results and wakes whoever sleeps.
    fn finish(
        &self,
        queued: &[Queued<T>],
        results: impl Iterator<Item = Result<(), E>>,
    ) -> MutexGuard<'_, State<T, E>> {
        let mut state = self.lock();
        state.writing = false;
        state.results.extend(queued.iter().map(|q| q.ticket).zip(results));
        if state.sleepers > 0 {
            self.wake.notify_all();
        }
        state
    }

    fn lock(&self) -> MutexGuard<'_, State<T, E>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn alone_a_caller_writes_its_own_items_at_once() {
        let group = GroupCommit::<u32, String>::new(Duration::from_micros(500));
        let rounds = AtomicUsize::new(0);
        let result = group.submit(&[1, 2], |round| {
            rounds.fetch_add(1, Ordering::Relaxed);
            assert_eq!(round, [&[1, 2][..]]);
            vec![Ok(())]
        });
        assert_eq!(result, Ok(()));
        assert_eq!(rounds.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn concurrent_callers_share_rounds_and_get_their_own_results() {
        let group = Arc::new(GroupCommit::<u32, u32>::new(Duration::from_micros(500)));
        let rounds = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8u32)
            .map(|t| {
                let (group, rounds) = (group.clone(), rounds.clone());
                std::thread::spawn(move || {
                    (0..50u32)
                        .map(|n| {
                            let item = t * 1000 + n;
                            let result = group.submit(&[item], |round| {
                                rounds.fetch_add(1, Ordering::Relaxed);
                                std::thread::sleep(Duration::from_micros(200));
                                // Odd items fail: each caller must get its own verdict.
                                round.iter().map(|s| if s[0] % 2 == 1 { Err(s[0]) } else { Ok(()) }).collect()
                            });
                            assert_eq!(result, if item % 2 == 1 { Err(item) } else { Ok(()) });
                        })
                        .count()
                })
            })
            .collect();
        assert_eq!(threads.into_iter().map(|t| t.join().unwrap()).sum::<usize>(), 400);
        assert!(rounds.load(Ordering::Relaxed) < 400, "no round was shared");
    }
}
