"""``PostgresStore``: executions of many hosts and processes in one PostgreSQL database.

The same interface and semantics as :class:`~dkron_exec.store.SQLiteStore` (newest first, the
newest ``retention`` per job kept, the same fields), plus what a shared database allows:
``claim(job_name)``, the cluster-wide ``concurrency: forbid``.

Needs psycopg 3, the ``postgres`` extra (from a clone: ``.venv/bin/pip install '.[postgres]'``;
else ``pip install 'psycopg[binary]>=3.1'``). The schema is created and upgraded by the library
(:mod:`dkron_exec.postgres_schema`).

An execution is never lost to a connection failure: a put that fails on a broken connection is
retried once on a new one; if the database is still away the execution is spooled to a local
file (:mod:`dkron_exec.store_spool`) with a warning, and written when the database is back (by
the next put, a retry every ``retry_interval`` seconds, or ``close``). ``close`` reports what it
could not write; the next store opened on the same database writes it.
"""

from __future__ import annotations

import builtins
import hashlib
import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from .errors import ConcurrencyError, StoreError
from .execution import Execution
from .postgres_schema import migrate
from .store import DEFAULT_RETENTION, safe_url
from .store_spool import StoreSpool, default_state_dir

log = logging.getLogger("dkron_exec.store.postgres")

# libpq parameters used unless the URL sets them: a database host that vanishes (no reset sent)
# fails a connect or a write within about 30 s, instead of TCP's many minutes, so the execution
# is spooled rather than the run held.
CONNECTION_DEFAULTS = {
    "connect_timeout": 10,
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,  # milliseconds
}

_COLUMNS = (
    "job_name, key, started_ns, finished_ns, success, exit_code, error, node_name, grp, attempt, "
    "output, output_truncated, output_size, processor_errors, cpu_time_us, peak_memory"
)
_INSERT = (
    f"INSERT INTO dkron_exec.executions ({_COLUMNS}) VALUES "
    "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (job_name, key) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in _COLUMNS.split(", ")[2:])
)
# Ties with the oldest row kept are kept, as in the SQLite store.
_TRIM = (
    "DELETE FROM dkron_exec.executions WHERE job_name = %(job)s AND started_ns < ("
    "SELECT started_ns FROM dkron_exec.executions WHERE job_name = %(job)s "
    "ORDER BY started_ns DESC OFFSET %(keep)s LIMIT 1)"
)
_LIST = (
    f"SELECT {_COLUMNS} FROM dkron_exec.executions WHERE job_name = %s "
    "ORDER BY started_ns DESC, key DESC LIMIT %s"
)
_GET = f"SELECT {_COLUMNS} FROM dkron_exec.executions WHERE job_name = %s AND key = %s"
_JOB_NAMES = "SELECT DISTINCT job_name FROM dkron_exec.executions ORDER BY 1"


def lock_key(purpose: str, job_name: str) -> int:
    """A 64-bit advisory-lock key for (purpose, job): a hash, so any job name fits."""
    digest = hashlib.blake2b(f"dkron_exec {purpose}\0{job_name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def started_ns_of(e: Execution) -> int:
    """The start rows are ordered by: exact from Dkron's ``<nanos>-<node>`` key, else the
    record's (as the SQLite store does)."""
    head = e.key.split("-", 1)[0]
    if head.isascii() and head.isdigit():
        return int(head)
    fields = e._to_core()
    return int(fields[2])


def _row(e: Execution) -> tuple[Any, ...]:
    (job_name, key, _started, finished_ns, success, output, node_name, group, attempt, exit_code, error,
     output_truncated, output_size, processor_errors, cpu_time_us, peak_memory) = e._to_core()  # fmt: skip
    return (
        job_name, key, started_ns_of(e), finished_ns, success, exit_code, error, node_name, group, attempt,
        bytes(output), output_truncated, output_size, list(processor_errors), cpu_time_us, peak_memory,
    )  # fmt: skip


def _execution(row: Sequence[Any]) -> Execution:
    (job_name, key, started_ns, finished_ns, success, exit_code, error, node_name, group, attempt, output,
     output_truncated, output_size, processor_errors, cpu_time_us, peak_memory) = row  # fmt: skip
    return Execution._from_core(
        (job_name, key, started_ns, finished_ns, success, bytes(output), node_name, group, attempt, exit_code,
         error, output_truncated, output_size, list(processor_errors), cpu_time_us, peak_memory)
    )  # fmt: skip


class _Pool:
    """Idle connections kept for reuse; a connection is used by one thread at a time. After a
    connection breaks, every idle one is dropped too (a restarted server broke them all)."""

    def __init__(self, url: str, max_idle: int) -> None:
        self.url = url
        self.max_idle = max_idle
        given = conninfo_to_dict(url)
        self._defaults: dict[str, Any] = {k: v for k, v in CONNECTION_DEFAULTS.items() if k not in given}
        self._idle: list[psycopg.Connection[Any]] = []
        self._lock = threading.Lock()

    def connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.url, autocommit=True, **self._defaults)

    @contextmanager
    def connection(self, fresh: bool = False) -> Iterator[psycopg.Connection[Any]]:
        conn = None
        if not fresh:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = self.connect()
        try:
            yield conn
        except BaseException:
            if conn.broken or conn.closed:
                self.drop_idle()
            conn.close()
            raise
        with self._lock:
            if len(self._idle) < self.max_idle:
                self._idle.append(conn)
                return
        conn.close()

    def drop_idle(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class PostgresStore:
    """Executions in a PostgreSQL database, newest ``retention`` per job, shared by every host
    and process that opens it.

    ``url`` is a ``postgresql://`` URL (libpq's: user, password, host, port, database and
    parameters such as ``sslmode``). The schema is created or upgraded on open. Writers of one
    job take turns (a transaction-level advisory lock per job), so retention holds however many
    hosts write. ``spool_dir`` is where executions wait while the database is away; by default
    ``$XDG_STATE_HOME/dkron-exec/postgres-spool``. Failures to open or read raise ``StoreError``
    naming the URL (without its password).
    """

    def __init__(
        self,
        url: str,
        *,
        retention: int = DEFAULT_RETENTION,
        spool_dir: str | Path | None = None,
        retry_interval: float = 5.0,
        max_idle: int = 4,
    ) -> None:
        if isinstance(retention, bool) or not isinstance(retention, int) or retention < 1:
            raise ValueError(f"retention must be a positive integer, got {retention!r}")
        self.location = safe_url(url)
        self.retention = retention
        self.retry_interval = retry_interval
        digest = hashlib.blake2b(url.encode(), digest_size=8).hexdigest()
        directory = Path(spool_dir) if spool_dir is not None else default_state_dir() / "postgres-spool"
        self._spool = StoreSpool(directory, digest)
        self._closed = threading.Event()
        self._retrier: threading.Thread | None = None
        self._retrier_lock = threading.Lock()
        try:
            self._pool = _Pool(url, max_idle)
            with self._pool.connection() as conn:
                migrate(conn, self.location)
        except psycopg.Error as exc:
            raise StoreError(f"cannot open the store {self.location}: {_reason(exc)}") from None
        # Executions left by a process that died, or by a store closed while the database was away.
        self._adopt()

    # -- the Store protocol ------------------------------------------------------------------

    def put(self, execution: Execution) -> None:
        """Stores the execution (replacing the one of the same job and key); spools it when the
        database cannot be reached."""
        self.put_many([execution])

    def put_many(self, executions: builtins.list[Execution]) -> None:
        """Stores all of them in one transaction (or spools all of them)."""
        if not executions:
            return
        try:
            self._write(executions)
        except psycopg.OperationalError as exc:
            for e in executions:
                path = self._spool.append(e)
            log.warning(
                "store %s: cannot write %d execution(s) of job %r (%s); spooled to %s, to be written "
                "when the database is back",
                self.location, len(executions), executions[0].job_name, _reason(exc), path,
            )  # fmt: skip
            self._start_retrier()
            return
        except psycopg.Error as exc:
            raise StoreError(f"cannot write to the store {self.location}: {_reason(exc)}") from None
        if self._spool.count:
            self._flush_spool()

    def list(self, job_name: str, limit: int | None = None) -> builtins.list[Execution]:
        """The job's executions, newest first; at most ``limit``."""
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise ValueError(f"limit must be None or a non-negative integer, got {limit!r}")
        rows = self._read(lambda conn: conn.execute(_LIST, (job_name, limit)).fetchall())
        return [_execution(r) for r in rows]

    def get(self, job_name: str, key: str) -> Execution | None:
        row = self._read(lambda conn: conn.execute(_GET, (job_name, key)).fetchone())
        return None if row is None else _execution(row)

    def job_names(self) -> builtins.list[str]:
        return [r[0] for r in self._read(lambda conn: conn.execute(_JOB_NAMES).fetchall())]

    def close(self) -> None:
        """Writes what is spooled if it can; else says how many executions wait, and where (the
        next store opened on this database writes them). Then closes the connections."""
        if self._closed.is_set():
            return
        self._closed.set()
        if self._retrier is not None:
            self._retrier.join()
        if self._spool.count:
            self._flush_spool()
        if self._spool.count:
            log.warning(
                "store %s: closed with %d execution(s) not yet written, kept in %s: the next store "
                "opened on this database writes them",
                self.location, self._spool.count, self._spool.path,
            )  # fmt: skip
        self._spool.close()
        self._pool.drop_idle()

    # -- cluster-wide forbid -----------------------------------------------------------------

    def claim(self, job_name: str) -> AdvisoryClaim:
        """A context that holds the job's claim on every host: ``ConcurrencyError`` on entry
        while another holder (any host, process or Executor on this database) has it."""
        return AdvisoryClaim(self, job_name)

    # -- state -------------------------------------------------------------------------------

    @property
    def spooled(self) -> int:
        """Executions of this store waiting on local disk for the database."""
        return self._spool.count

    @property
    def spool_path(self) -> str | None:
        return self._spool.path

    def __repr__(self) -> str:
        return f"PostgresStore({self.location!r}, retention={self.retention})"

    # -- internals ---------------------------------------------------------------------------

    def _write(self, executions: builtins.list[Execution]) -> None:
        """One transaction; a connection that broke is replaced once (after a server restart the
        idle ones are all broken)."""
        try:
            with self._pool.connection() as conn:
                self._write_on(conn, executions)
        except psycopg.OperationalError:
            with self._pool.connection(fresh=True) as conn:
                self._write_on(conn, executions)

    def _write_on(self, conn: psycopg.Connection[Any], executions: builtins.list[Execution]) -> None:
        jobs = sorted({e.job_name for e in executions}, key=lambda job: lock_key("write", job))
        with conn.transaction():
            # Writers of a job take turns, so each trim sees every row committed before it; in
            # key order, so two batches of the same jobs cannot deadlock.
            for job in jobs:
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key("write", job),))
            with conn.cursor() as cur:
                cur.executemany(_INSERT, [_row(e) for e in executions])
                for job in jobs:
                    cur.execute(_TRIM, {"job": job, "keep": self.retention - 1})

    def _read(self, query: Any) -> Any:
        try:
            try:
                with self._pool.connection() as conn:
                    return query(conn)
            except psycopg.OperationalError:
                with self._pool.connection(fresh=True) as conn:
                    return query(conn)
        except psycopg.Error as exc:
            raise StoreError(f"cannot read the store {self.location}: {_reason(exc)}") from None

    def _flush_spool(self) -> bool:
        """Writes this store's spooled executions; True when none is left."""
        try:
            written = self._spool.flush(self._write)
        except psycopg.Error as exc:
            log.debug("store %s: spooled executions not written yet: %s", self.location, _reason(exc))
            return False
        if written:
            log.warning("store %s: wrote %d spooled execution(s)", self.location, written)
        return True

    def _adopt(self) -> None:
        try:
            self._spool.adopt(self._write)
        except psycopg.Error as exc:
            log.warning(
                "store %s: spooled executions of an earlier store not written yet: %s",
                self.location,
                _reason(exc),
            )

    def _start_retrier(self) -> None:
        with self._retrier_lock:
            if (self._retrier is not None and self._retrier.is_alive()) or self._closed.is_set():
                return
            self._retrier = threading.Thread(target=self._retry, name="dkron-exec-pg-spool", daemon=True)
            self._retrier.start()

    def _retry(self) -> None:
        """Until the spool is empty or the store closed: try again every ``retry_interval``."""
        while not self._closed.wait(self.retry_interval):
            if self._spool.count == 0 or self._flush_spool():
                return


class AdvisoryClaim:
    """``concurrency: forbid`` across hosts: a session-level advisory lock on the job's key,
    held by a connection of its own for the whole run. The server releases it when that session
    ends, so a holder that dies (SIGKILL, host lost) frees the job."""

    def __init__(self, store: PostgresStore, job_name: str) -> None:
        self.store = store
        self.job_name = job_name
        self._conn: psycopg.Connection[Any] | None = None

    def __enter__(self) -> AdvisoryClaim:
        try:
            conn = self.store._pool.connect()
        except psycopg.Error as exc:
            raise StoreError(
                f"cannot claim job {self.job_name!r} (concurrency 'forbid') on the store "
                f"{self.store.location}: {_reason(exc)}"
            ) from None
        try:
            key = lock_key("forbid", self.job_name)
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
        except psycopg.Error as exc:
            conn.close()
            raise StoreError(
                f"cannot claim job {self.job_name!r} on the store {self.store.location}: {_reason(exc)}"
            ) from None
        if not (row and row[0]):
            conn.close()
            raise ConcurrencyError(
                f"job '{self.job_name}' is already running (on this or another host sharing the store "
                f"{self.store.location}) and its concurrency is 'forbid'"
            )
        self._conn = conn
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    def release(self) -> None:
        """Unlocks, then ends the session (idempotent). The unlock is waited for: closing alone
        releases the lock a moment later, when the server has seen the session end, and a run
        started right after this one ends must find the job free."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.execute("SELECT pg_advisory_unlock(%s)", (lock_key("forbid", self.job_name),))
        except psycopg.Error:
            pass  # the session is gone already, and the lock with it
        finally:
            conn.close()


def _reason(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
