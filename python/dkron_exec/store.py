"""The embedded execution store: an SQLite file (or ``":memory:"``).

Every execution is written, success or failure, and the newest ``retention`` of each job are
kept, like Dkron's ``MaxExecutions``. The file is opened in WAL mode with a busy timeout, so
several threads (one connection behind a lock) and several processes can write at once.
"""

from __future__ import annotations

import builtins
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import orjson

from .execution import Execution, datetime_from_ns, ns_from_datetime

DEFAULT_RETENTION = 100
# Seconds a writer waits for another (thread or process) to finish before giving up.
_BUSY_TIMEOUT = 30.0

_SCHEMA = """
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
"""

_COLUMNS = (
    "job_name, key, started_ns, finished_ns, success, exit_code, error, node_name, grp, attempt, "
    "output, output_truncated, output_size, processor_errors"
)

_INSERT = f"INSERT OR REPLACE INTO executions ({_COLUMNS}) VALUES ({', '.join('?' * 14)})"


@runtime_checkable
class Store(Protocol):
    """What an Executor needs of a store (stores written in Python implement this)."""

    def put(self, execution: Execution) -> None: ...
    def list(self, job_name: str, limit: int | None = None) -> builtins.list[Execution]: ...
    def get(self, job_name: str, key: str) -> Execution | None: ...
    def job_names(self) -> builtins.list[str]: ...
    def close(self) -> None: ...


def default_store_path() -> Path:
    """``$DKRON_EXEC_STORE``, else ``$XDG_DATA_HOME/dkron-exec/executions.db`` (``~/.local/share``)."""
    explicit = os.environ.get("DKRON_EXEC_STORE")
    if explicit:
        return Path(explicit)
    data_home = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(data_home) / "dkron-exec" / "executions.db"


class SQLiteStore:
    """Executions in an SQLite database, newest ``retention`` per job."""

    def __init__(
        self, path: str | os.PathLike[str] = ":memory:", *, retention: int = DEFAULT_RETENTION
    ) -> None:
        if isinstance(retention, bool) or not isinstance(retention, int) or retention < 1:
            raise ValueError(f"retention must be a positive integer, got {retention!r}")
        self.path = str(path)
        self.retention = retention
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            self.path, timeout=_BUSY_TIMEOUT, check_same_thread=False, isolation_level=None
        )
        if self.path != ":memory:":
            self._set_up_file()
        self._db.executescript(_SCHEMA)

    def _set_up_file(self) -> None:
        """WAL mode, which lets readers and a writer of several processes work at once.

        Switching a new file to WAL needs a moment of exclusive access; while another process
        holds the file, SQLite answers with the old mode (or "locked") instead of waiting, so we
        ask again until the busy timeout.
        """
        deadline = time.monotonic() + _BUSY_TIMEOUT
        while True:
            try:
                (mode,) = self._db.execute("PRAGMA journal_mode=WAL").fetchone()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                mode = None
            if mode == "wal" or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        # WAL + NORMAL: a commit survives a crash of this process, fsync happens at checkpoints.
        self._db.execute("PRAGMA synchronous=NORMAL")

    def put(self, execution: Execution) -> None:
        row = (
            execution.job_name,
            execution.key,
            ns_from_key(execution),
            ns_from_datetime(execution.finished_at) if execution.finished_at else None,
            int(execution.success),
            execution.exit_code,
            execution.error,
            execution.node_name,
            execution.group,
            execution.attempt,
            execution.output,
            int(execution.output_truncated),
            execution.output_size,
            orjson.dumps(execution.processor_errors).decode(),
        )
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(_INSERT, row)
                self._db.execute(
                    "DELETE FROM executions WHERE job_name = ?1 AND started_ns < ("
                    " SELECT started_ns FROM executions WHERE job_name = ?1"
                    " ORDER BY started_ns DESC LIMIT 1 OFFSET ?2)",
                    (execution.job_name, self.retention - 1),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def list(self, job_name: str, limit: int | None = None) -> list[Execution]:
        """The job's executions, newest first."""
        sql = f"SELECT {_COLUMNS} FROM executions WHERE job_name = ? ORDER BY started_ns DESC"
        params: tuple[Any, ...] = (job_name,)
        if limit is not None:
            sql += " LIMIT ?"
            params += (limit,)
        with self._lock:
            rows = self._db.execute(sql, params).fetchall()
        return [_from_row(r) for r in rows]

    def get(self, job_name: str, key: str) -> Execution | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM executions WHERE job_name = ? AND key = ?", (job_name, key)
            ).fetchone()
        return _from_row(row) if row else None

    def job_names(self) -> builtins.list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT DISTINCT job_name FROM executions ORDER BY 1")]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def ns_from_key(execution: Execution) -> int:
    """The start in nanoseconds, exact when the key is Dkron's ``<nanos>-<node>``."""
    head = execution.key.split("-", 1)[0]
    return int(head) if head.isdigit() else ns_from_datetime(execution.started_at)


def _from_row(r: tuple[Any, ...]) -> Execution:
    return Execution(
        job_name=r[0],
        key=r[1],
        started_at=datetime_from_ns(r[2]),
        finished_at=datetime_from_ns(r[3]) if r[3] is not None else None,
        success=bool(r[4]),
        exit_code=r[5],
        error=r[6],
        node_name=r[7],
        group=r[8],
        attempt=r[9],
        output=bytes(r[10]),
        output_truncated=bool(r[11]),
        output_size=r[12],
        processor_errors=orjson.loads(r[13]),
    )
