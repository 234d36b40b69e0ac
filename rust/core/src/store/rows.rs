//! The `executions` table, shared with the first (Python) store: files written by either stay
//! readable by the other, so names, types and encodings here must not change.

use rusqlite::types::{FromSqlError, ValueRef};
use rusqlite::{params, Row, Statement};

use crate::execution::Execution;

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS executions (
    job_name TEXT NOT NULL,
    key TEXT NOT NULL,
    started_ns INTEGER NOT NULL,
    finished_ns INTEGER,
    success INTEGER NOT NULL,
    exit_code INTEGER,
    error TEXT,
    node_name TEXT NOT NULL,
    grp INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    output BLOB NOT NULL,
    output_truncated INTEGER NOT NULL,
    output_size INTEGER NOT NULL,
    processor_errors TEXT NOT NULL,
    PRIMARY KEY (job_name, key)
);
CREATE INDEX IF NOT EXISTS executions_by_start ON executions (job_name, started_ns);
";

/// Columns added since the first schema, each `(name, type)`: added to older files when they
/// are opened, so a file written before them stays readable (their rows read as NULL).
pub const ADDED_COLUMNS: [(&str, &str); 2] = [("cpu_time_us", "INTEGER"), ("peak_memory", "INTEGER")];

macro_rules! columns {
    () => {
        "job_name, key, started_ns, finished_ns, success, exit_code, error, node_name, grp, attempt, \
         output, output_truncated, output_size, processor_errors, cpu_time_us, peak_memory"
    };
}

pub const INSERT: &str = concat!(
    "INSERT OR REPLACE INTO executions (",
    columns!(),
    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)"
);

/// Keeps the newest `?2 + 1` rows of job `?1`.
pub const TRIM: &str = "DELETE FROM executions WHERE job_name = ?1 AND started_ns < (\
     SELECT started_ns FROM executions WHERE job_name = ?1 ORDER BY started_ns DESC LIMIT 1 OFFSET ?2)";

pub const LIST: &str =
    concat!("SELECT ", columns!(), " FROM executions WHERE job_name = ?1 ORDER BY started_ns DESC LIMIT ?2");

pub const GET: &str = concat!("SELECT ", columns!(), " FROM executions WHERE job_name = ?1 AND key = ?2");

pub const JOB_NAMES: &str = "SELECT DISTINCT job_name FROM executions ORDER BY 1";

/// The start the rows are ordered by: exact when the key is Dkron's `<nanos>-<node>`, else the
/// record's (microsecond-precise when it came from Python).
pub fn started_ns_of(e: &Execution) -> i64 {
    let head = e.key.split('-').next().unwrap_or_default();
    if !head.is_empty() && head.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(ns) = head.parse() {
            return ns;
        }
    }
    e.started_ns
}

pub fn insert(statement: &mut Statement<'_>, e: &Execution) -> rusqlite::Result<()> {
    let processor_errors = serde_json::to_string(&e.processor_errors).expect("a list of strings is JSON");
    let as_i64 = |n: u64| i64::try_from(n).map_err(|err| rusqlite::Error::ToSqlConversionFailure(Box::new(err)));
    let output_size = as_i64(e.output_size)?;
    let cpu_time_us = e.cpu_time_us.map(as_i64).transpose()?;
    let peak_memory = e.peak_memory.map(as_i64).transpose()?;
    statement.execute(params![
        e.job_name,
        e.key,
        started_ns_of(e),
        e.finished_ns,
        e.success,
        e.exit_code,
        e.error,
        e.node_name,
        e.group,
        e.attempt,
        e.output,
        e.output_truncated,
        output_size,
        processor_errors,
        cpu_time_us,
        peak_memory,
    ])?;
    Ok(())
}

pub fn execution_from_row(row: &Row<'_>) -> rusqlite::Result<Execution> {
    Ok(Execution {
        job_name: row.get(0)?,
        key: row.get(1)?,
        started_ns: row.get(2)?,
        finished_ns: row.get(3)?,
        success: row.get(4)?,
        exit_code: row.get(5)?,
        error: row.get(6)?,
        node_name: row.get(7)?,
        group: row.get(8)?,
        attempt: row.get(9)?,
        output: bytes(row, 10)?,
        output_truncated: row.get(11)?,
        output_size: unsigned(row, 12)?,
        processor_errors: json_strings(row, 13)?,
        cpu_time_us: optional_unsigned(row, 14)?,
        peak_memory: optional_unsigned(row, 15)?,
    })
}

/// A BLOB, or TEXT should another writer have stored the output as text.
fn bytes(row: &Row<'_>, index: usize) -> rusqlite::Result<Vec<u8>> {
    match row.get_ref(index)? {
        ValueRef::Blob(b) | ValueRef::Text(b) => Ok(b.to_vec()),
        ValueRef::Null => Ok(Vec::new()),
        other => Err(conversion_error(index, other, "bytes")),
    }
}

fn unsigned(row: &Row<'_>, index: usize) -> rusqlite::Result<u64> {
    let value: i64 = row.get(index)?;
    u64::try_from(value).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(index, value))
}

fn optional_unsigned(row: &Row<'_>, index: usize) -> rusqlite::Result<Option<u64>> {
    let value: Option<i64> = row.get(index)?;
    value.map(|v| u64::try_from(v).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(index, v))).transpose()
}

/// Adds the columns an older file lacks. Two processes may race to add one: the loser's
/// "duplicate column" is the winner's success.
pub fn migrate(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    let mut have = Vec::new();
    {
        let mut statement = conn.prepare("PRAGMA table_info(executions)")?;
        let mut rows = statement.query([])?;
        while let Some(row) = rows.next()? {
            have.push(row.get::<_, String>(1)?);
        }
    }
    for (name, kind) in ADDED_COLUMNS {
        if have.iter().any(|h| h == name) {
            continue;
        }
        match conn.execute_batch(&format!("ALTER TABLE executions ADD COLUMN {name} {kind}")) {
            Err(e) if e.to_string().contains("duplicate column") => {}
            other => other?,
        }
    }
    Ok(())
}

fn json_strings(row: &Row<'_>, index: usize) -> rusqlite::Result<Vec<String>> {
    let text: String = row.get(index)?;
    serde_json::from_str(&text)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Text, Box::new(e)))
}

fn conversion_error(index: usize, value: ValueRef<'_>, wanted: &str) -> rusqlite::Error {
    let err = FromSqlError::Other(format!("expected {wanted}, found {:?}", value.data_type()).into());
    rusqlite::Error::FromSqlConversionFailure(index, value.data_type(), Box::new(err))
}
