//! Where executions are kept. `SqliteStore` is the default store: an SQLite file (or
//! `:memory:`) with the schema of the first, Python, store, written with group commit.

mod group;
mod rows;
mod sqlite;

use std::fmt;

pub use group::GroupCommit;
pub use sqlite::SqliteStore;

/// What the store was doing when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreAction {
    Open,
    Write,
    Read,
    /// Used after `close()`.
    Closed,
}

/// A store failure, one line naming the path and the cause:
/// `cannot open the store /x/y.db: unable to open database file (its folder /x is not writable)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError {
    pub path: String,
    pub action: StoreAction,
    pub cause: String,
}

impl StoreError {
    pub(crate) fn new(path: &str, action: StoreAction, cause: impl ToString) -> Self {
        Self { path: path.to_string(), action, cause: cause.to_string() }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (path, cause) = (&self.path, &self.cause);
        match self.action {
            StoreAction::Open => write!(f, "cannot open the store {path}: {cause}"),
            StoreAction::Write => write!(f, "cannot write to the store {path}: {cause}"),
            StoreAction::Read => write!(f, "cannot read the store {path}: {cause}"),
            StoreAction::Closed => write!(f, "the store {path} is closed"),
        }
    }
}

impl std::error::Error for StoreError {}
