//! The life of one connected go-plugin process as its callers see it: usable, given up on by a
//! caller (timeout, cancel, garbage: the supervisor is killing it), or failed (the supervisor's
//! reason). Dkron's protocols have no cancel, so giving up on a call means killing the plugin.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::super::{FailureKind, PluginFailure};

/// Tells the supervisor a caller gave up on the plugin (kind, why): it is to be killed.
pub type GiveUp = Box<dyn FnOnce(FailureKind, String) + Send>;

pub struct Life {
    pub who: Arc<str>,
    given_up: AtomicBool,
    dead: watch::Sender<Option<PluginFailure>>,
    /// It answered a call since it started (then a crash restarts it at once).
    pub answered: AtomicBool,
    on_give_up: Mutex<Option<GiveUp>>,
}

impl Life {
    pub fn new(who: Arc<str>, on_give_up: GiveUp) -> Self {
        let (dead, _) = watch::channel(None);
        Self { who, given_up: AtomicBool::new(false), dead, answered: AtomicBool::new(false), on_give_up: Mutex::new(Some(on_give_up)) }
    }

    pub fn failure(&self, kind: FailureKind, what: impl std::fmt::Display) -> PluginFailure {
        PluginFailure { kind, message: format!("{}: {what}", self.who) }
    }

    pub fn usable(&self) -> bool {
        !self.given_up.load(Ordering::Relaxed) && self.dead.borrow().is_none()
    }

    pub fn answered(&self) {
        self.answered.store(true, Ordering::Relaxed);
    }

    /// The process failed: calls fail with `failure`.
    pub fn fail(&self, failure: &PluginFailure) {
        self.dead.send_if_modified(|d| {
            if d.is_none() {
                *d = Some(failure.clone());
                true
            } else {
                false
            }
        });
    }

    /// Asks the supervisor to kill the process and returns the failure the caller reports.
    pub fn give_up(&self, kind: FailureKind, why: String) -> PluginFailure {
        self.given_up.store(true, Ordering::Relaxed);
        let failure = self.failure(kind, &why);
        if let Some(f) = self.on_give_up.lock().unwrap().take() {
            f(kind, why);
        }
        // The next call should find a new process, not this one being killed.
        let _ = self.wait_dead(Duration::from_secs(3));
        failure
    }

    /// The supervisor's failure for this process, once it has one (None after `wait`).
    pub fn wait_dead(&self, wait: Duration) -> Option<PluginFailure> {
        let end = Instant::now() + wait;
        loop {
            if let Some(f) = self.dead.borrow().clone() {
                return Some(f);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}
