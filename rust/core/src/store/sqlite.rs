//! `SqliteStore`: executions in an SQLite file, the newest `retention` of each job kept (Dkron's
//! `MaxExecutions`). One connection per store; concurrent `put`s share transactions (group
//! commit), and several processes can write one file (WAL mode, busy timeout).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rusqlite::config::DbConfig;
use rusqlite::{Connection, ErrorCode, OpenFlags};

use super::group::GroupCommit;
use super::rows;
use super::{StoreAction, StoreError};
use crate::execution::Execution;

/// How long a writer waits for another (thread or process) before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);
const MEMORY: &str = ":memory:";
/// How long a group-commit leader waits for the writers the last round woke: about a thread's
/// wake-up. Measured (8 threads, 2 cores): 0 gives ~1 put per transaction, 50-500 us gives
/// ~6, and 100 us keeps Python threads (who also queue for the GIL) fastest.
const GATHER_LIMIT: Duration = Duration::from_micros(100);

/// Executions in an SQLite database. `Send + Sync`: share it behind an `Arc`.
pub struct SqliteStore {
    path: String,
    retention: usize,
    /// None once closed.
    conn: Mutex<Option<Connection>>,
    group: GroupCommit<Execution, StoreError>,
    transactions: AtomicU64,
}

impl SqliteStore {
    /// Opens (creating it if needed) the store at `path`, a file or `":memory:"`. Its folder
    /// must exist: a missing one is an error that names it, not a folder made silently where a
    /// typo pointed (the Python layer creates the default location's folder, and only that). A
    /// file is put in WAL mode so that other processes can read and write it at the same time.
    pub fn open(path: &str, retention: usize) -> Result<Self, StoreError> {
        if retention == 0 {
            return Err(StoreError::new(path, StoreAction::Open, "retention must be at least 1"));
        }
        let conn = if path == MEMORY { open_memory() } else { open_file(path) }
            .map_err(|cause| StoreError::new(path, StoreAction::Open, cause))?;
        Ok(Self {
            path: path.to_string(),
            retention,
            conn: Mutex::new(Some(conn)),
            group: GroupCommit::new(GATHER_LIMIT),
            transactions: AtomicU64::new(0),
        })
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn retention(&self) -> usize {
        self.retention
    }

    /// Transactions committed so far (concurrent `put`s share them).
    pub fn transactions(&self) -> u64 {
        self.transactions.load(Ordering::Relaxed)
    }

    /// Stores `e` (replacing the row of the same job and key); returns once committed.
    pub fn put(&self, e: &Execution) -> Result<(), StoreError> {
        self.put_many(std::slice::from_ref(e))
    }

    /// Stores all of `es` in one transaction: all or none of them.
    pub fn put_many(&self, es: &[Execution]) -> Result<(), StoreError> {
        self.group.submit(es, |round| self.write_round(round))
    }

    /// The job's executions, newest first; at most `limit`.
    pub fn list(&self, job: &str, limit: Option<usize>) -> Result<Vec<Execution>, StoreError> {
        // SQLite reads a negative LIMIT as none.
        let limit = limit.map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX));
        self.read(|conn| {
            let mut statement = conn.prepare_cached(rows::LIST)?;
            let found = statement.query_map((job, limit), rows::execution_from_row)?;
            found.collect()
        })
    }

    pub fn get(&self, job: &str, key: &str) -> Result<Option<Execution>, StoreError> {
        self.read(|conn| {
            let mut statement = conn.prepare_cached(rows::GET)?;
            let mut found = statement.query_map((job, key), rows::execution_from_row)?;
            found.next().transpose()
        })
    }

    /// The names of the jobs with stored executions, sorted.
    pub fn job_names(&self) -> Result<Vec<String>, StoreError> {
        self.read(|conn| {
            let mut statement = conn.prepare_cached(rows::JOB_NAMES)?;
            let names = statement.query_map([], |row| row.get(0))?;
            names.collect()
        })
    }

    /// Closes the connection (waiting for a write in progress); later calls fail with
    /// "the store PATH is closed". Idempotent.
    pub fn close(&self) {
        drop(self.lock().take());
    }

    fn lock(&self) -> MutexGuard<'_, Option<Connection>> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn error(&self, action: StoreAction, cause: impl ToString) -> StoreError {
        StoreError::new(&self.path, action, cause)
    }

    fn read<R>(&self, query: impl FnOnce(&Connection) -> rusqlite::Result<R>) -> Result<R, StoreError> {
        let guard = self.lock();
        let conn = guard.as_ref().ok_or_else(|| self.error(StoreAction::Closed, ""))?;
        query(conn).map_err(|e| self.error(StoreAction::Read, e))
    }

    /// One group-commit round: every submission in one transaction. Should that fail, each
    /// submission is tried in a transaction of its own, so that a bad one fails only its caller.
    fn write_round(&self, round: &[&[Execution]]) -> Vec<Result<(), StoreError>> {
        let guard = self.lock();
        let Some(conn) = guard.as_ref() else {
            return round.iter().map(|_| Err(self.error(StoreAction::Closed, ""))).collect();
        };
        let all = round.iter().flat_map(|submission| submission.iter());
        match self.write_transaction(conn, all) {
            Ok(()) => round.iter().map(|_| Ok(())).collect(),
            Err(e) if round.len() == 1 => vec![Err(self.error(StoreAction::Write, e))],
            Err(_) => round
                .iter()
                .map(|submission| {
                    self.write_transaction(conn, submission.iter()).map_err(|e| self.error(StoreAction::Write, e))
                })
                .collect(),
        }
    }

    /// Inserts the executions, then trims each job written to `retention` rows, and commits.
    /// BEGIN and COMMIT are cached statements too (rusqlite's `Transaction` parses them anew
    /// each time: a quarter of the CPU of an uncontended in-memory put).
    fn write_transaction<'e>(
        &self,
        conn: &Connection,
        executions: impl Iterator<Item = &'e Execution>,
    ) -> rusqlite::Result<()> {
        conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        let written = self.insert_and_trim(conn, executions).and_then(|()| {
            conn.prepare_cached("COMMIT")?.execute([])?;
            Ok(())
        });
        if written.is_err() && !conn.is_autocommit() {
            // The error is the one to report; a failed rollback leaves nothing more to do.
            let _ = conn.execute_batch("ROLLBACK");
        }
        written?;
        self.transactions.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn insert_and_trim<'e>(
        &self,
        conn: &Connection,
        executions: impl Iterator<Item = &'e Execution>,
    ) -> rusqlite::Result<()> {
        let mut jobs: Vec<&str> = Vec::new();
        let mut insert = conn.prepare_cached(rows::INSERT)?;
        for e in executions {
            rows::insert(&mut insert, e)?;
            // Few distinct jobs per round: a linear scan beats hashing.
            if !jobs.contains(&e.job_name.as_str()) {
                jobs.push(&e.job_name);
            }
        }
        let mut trim = conn.prepare_cached(rows::TRIM)?;
        let keep_after = i64::try_from(self.retention - 1).unwrap_or(i64::MAX);
        for job in jobs {
            trim.execute((job, keep_after))?;
        }
        Ok(())
    }
}

fn open_memory() -> Result<Connection, String> {
    let conn = connect(MEMORY).map_err(|e| e.to_string())?;
    conn.execute_batch(rows::SCHEMA).map_err(|e| e.to_string())?;
    rows::migrate(&conn).map_err(|e| e.to_string())?;
    Ok(conn)
}

fn open_file(path: &str) -> Result<Connection, String> {
    let set_up = || -> rusqlite::Result<Connection> {
        let conn = connect(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        use_wal(&conn)?;
        conn.execute_batch(rows::SCHEMA)?;
        rows::migrate(&conn)?;
        Ok(conn)
    };
    set_up().map_err(|e| {
        // SQLite's open error ends with the path, which the store's message already names.
        let text = e.to_string();
        let cause = text.strip_suffix(&format!(": {path}")).unwrap_or(&text);
        match diagnose(Path::new(path)) {
            Some(why) => format!("{cause} ({why})"),
            None => cause.to_string(),
        }
    })
}

fn connect(path: &str) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(path, flags())?;
    // One plan per statement, whatever the values bound: else SQLite (3.54) re-prepares the
    // statements that bind the job name before an ORDER BY (the trim, the list) on every run,
    // a fifth of an uncontended put. Their plan is the same for every job anyway.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    Ok(conn)
}

/// Read-write, created if missing; no URI parsing (a name is a name, as Python's sqlite3 has
/// it); no SQLite mutex, as the store's own serialises the connection.
fn flags() -> OpenFlags {
    OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX
}

/// WAL mode, which lets readers and a writer of several processes work at once. Switching a
/// new file to WAL needs a moment of exclusive access; while another process holds the file,
/// SQLite answers with the old mode (or "locked") instead of waiting, so ask again until the
/// busy timeout.
fn use_wal(conn: &Connection) -> rusqlite::Result<()> {
    let deadline = Instant::now() + BUSY_TIMEOUT;
    loop {
        match conn.query_row("PRAGMA journal_mode=WAL", [], |row| row.get::<_, String>(0)) {
            Ok(mode) if mode.eq_ignore_ascii_case("wal") => break,
            Ok(_) if Instant::now() > deadline => break,
            Ok(_) => {}
            Err(e) if is_locked(&e) && Instant::now() <= deadline => {}
            Err(e) => return Err(e),
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // WAL + NORMAL: a commit survives a crash of this process; fsync happens at checkpoints.
    conn.pragma_update(None, "synchronous", "NORMAL")
}

fn is_locked(e: &rusqlite::Error) -> bool {
    matches!(e.sqlite_error_code(), Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked))
}

/// Why SQLite could not open `path`, in words it does not give ("unable to open database file").
fn diagnose(path: &Path) -> Option<String> {
    let folder = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if path.is_dir() {
        Some("it is a folder".into())
    } else if !folder.is_dir() {
        // The nearest part of the path that exists says why: missing, or a file in the way.
        match folder.ancestors().find(|a| !a.as_os_str().is_empty() && a.symlink_metadata().is_ok()) {
            Some(found) if !found.is_dir() => Some(format!("{} is not a folder", found.display())),
            _ => Some(format!("its folder {} does not exist", folder.display())),
        }
    } else if !writable(folder) {
        // The file, or the -wal and -shm files beside it, cannot be created.
        Some(format!("its folder {} is not writable", folder.display()))
    } else if path.exists() && !writable(path) {
        Some("the file is not writable".into())
    } else {
        None
    }
}

fn writable(path: &Path) -> bool {
    let Ok(c_path) = CString::new(path.as_os_str().as_bytes()) else { return false };
    // SAFETY: a valid NUL-terminated string; access() only reads it.
    unsafe { libc::access(c_path.as_ptr(), libc::W_OK) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn the_store_is_shared_between_threads() {
        assert_send_sync::<SqliteStore>();
    }

    #[test]
    fn started_ns_comes_from_dkrons_key() {
        let mut e = Execution { key: "1767225600000000123-node-1".into(), started_ns: 5, ..Execution::default() };
        assert_eq!(rows::started_ns_of(&e), 1_767_225_600_000_000_123);
        for key in ["node-1", "-n", "12a-n", "99999999999999999999-n"] {
            e.key = key.into();
            assert_eq!(rows::started_ns_of(&e), 5, "{key}");
        }
    }

    #[test]
    fn statements_are_prepared_once() {
        let store = SqliteStore::open(MEMORY, 3).unwrap();
        for n in 0..10 {
            let e = Execution { job_name: format!("job{}", n % 2), key: format!("{n}-n"), ..Execution::default() };
            store.put(&e).unwrap();
            store.list(&e.job_name, Some(n)).unwrap();
        }
        let guard = store.lock();
        let conn = guard.as_ref().unwrap();
        for sql in [rows::INSERT, rows::TRIM, rows::LIST] {
            let statement = conn.prepare_cached(sql).unwrap();
            assert_eq!(statement.get_status(rusqlite::StatementStatus::RePrepare), 0, "{sql}");
        }
    }

    #[test]
    fn zero_retention_is_refused() {
        let err = SqliteStore::open(MEMORY, 0).err().unwrap();
        assert_eq!(err.to_string(), "cannot open the store :memory:: retention must be at least 1");
    }
}
