//! The plugin host: plugin processes found on disk, driven over the framed protocol of
//! docs/PROTOCOL.md. `codec` is the wire format, `spawn` the launch (socketpair on fd 3,
//! death signal), `supervisor` one plugin's life (handshake, in-flight calls, timeouts,
//! restarts), `host` the registry the binding talks to, `run` executor-plugin runs;
//! `goplugin` speaks Dkron's own (hashicorp/go-plugin) processors and executors.

pub mod codec;
pub mod conn;
pub mod goplugin;
pub mod host;
pub mod logs;
pub mod spawn;
pub mod supervisor;
pub mod wire;

// Re-exported so the binding speaks the same JSON types without a dependency of its own.
pub use serde_json;

use std::path::PathBuf;
use std::time::Duration;

/// Dkron's magic cookie: a plugin refuses to run without it.
pub const COOKIE_KEY: &str = "DKRON_PLUGIN_MAGIC_COOKIE";
pub const COOKIE_VALUE: &str = "b29a76488b6f3ca7955c5f769b50641f0fcd88748d8cedecda313d516320ca19";
/// Protocol versions this host speaks.
pub const PROTOCOL_VERSIONS: &[u32] = &[1];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Processor,
    Executor,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Processor => "processor",
            Kind::Executor => "executor",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "processor" => Some(Kind::Processor),
            "executor" => Some(Kind::Executor),
            _ => None,
        }
    }
}

/// One plugin and the limits it runs under.
#[derive(Debug, Clone)]
pub struct PluginSpec {
    pub kind: Kind,
    pub name: String,
    pub path: PathBuf,
    pub start_timeout: Duration,
    /// How long a plugin has to answer a call after it was sent `cancel`, before it counts as hung.
    pub cancel_grace: Duration,
    pub stop_grace: Duration,
    pub backoff_max: Duration,
    pub max_frame: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Could not be started, or exited or stalled before the handshake.
    Start,
    /// Broke the protocol (garbage, oversize frame, wrong version).
    Protocol,
    /// Exited or closed the channel with calls in flight.
    Crashed,
    Timeout,
    Cancelled,
    /// The plugin answered the call with an error.
    Remote,
    Stopped,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Start => "start",
            FailureKind::Protocol => "protocol",
            FailureKind::Crashed => "crashed",
            FailureKind::Timeout => "timeout",
            FailureKind::Cancelled => "cancelled",
            FailureKind::Remote => "remote",
            FailureKind::Stopped => "stopped",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginFailure {
    pub kind: FailureKind,
    /// Names the plugin and says what happened.
    pub message: String,
}

impl std::fmt::Display for PluginFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PluginFailure {}
