"""Where executions are kept.

``Store`` is the interface of a store written in Python. ``SQLiteStore``, the default, is an
SQLite file (or ``":memory:"``) kept by the Rust core (``rust/core/src/store``): every execution
is written, success or failure, and the newest ``retention`` of each job are kept, like Dkron's
``MaxExecutions``. The file is in WAL mode with a busy timeout, so several threads and several
processes can write at once; puts made at the same moment share one transaction.

A ``postgresql://`` URL instead of a path opens a ``PostgresStore`` (``dkron_exec.postgres_store``,
the ``[postgres]`` extra): one database shared by many hosts, which also makes ``concurrency:
forbid`` hold across all of them (its ``claim``).
"""

from __future__ import annotations

import builtins
import os
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol, runtime_checkable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from . import _core
from .errors import StoreError
from .execution import Execution
from .install_hints import POSTGRES_REQUIREMENT, install_hint

DEFAULT_RETENTION = 100


@runtime_checkable
class Store(Protocol):
    """What the Executor needs of a store: any object with these methods will do. A store may
    also offer ``claim(job_name)`` (:class:`ClaimingStore`) to make ``concurrency: forbid`` hold
    beyond one Executor."""

    def put(self, execution: Execution) -> None:
        """Stores the execution (replacing the one of the same job and key)."""

    def list(self, job_name: str, limit: int | None = None) -> builtins.list[Execution]:
        """The job's executions, newest first; at most ``limit``."""

    def get(self, job_name: str, key: str) -> Execution | None: ...

    def job_names(self) -> builtins.list[str]:
        """The names of the jobs with stored executions, sorted."""

    def close(self) -> None: ...


@runtime_checkable
class ClaimingStore(Store, Protocol):
    """A store that can also enforce ``concurrency: forbid`` beyond one Executor (optional).

    For a job with ``concurrency: forbid`` the Executor enters ``claim(job_name)`` before the run
    (``run`` and ``run_async``) and leaves it when the run ends; entering raises
    ``ConcurrencyError`` while any other holder, in any process or host, has the job's claim.
    The claim must be released if its holder dies. :class:`PostgresStore` implements it with a
    session-level advisory lock.
    """

    def claim(self, job_name: str) -> AbstractContextManager[object]: ...


DATABASE_URL_SCHEMES = ("postgresql://", "postgres://")


def is_database_url(spec: object) -> bool:
    """True for a ``postgresql://`` (or ``postgres://``) URL, which names a PostgreSQL store."""
    return isinstance(spec, str) and spec.startswith(DATABASE_URL_SCHEMES)


def safe_url(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.split(':', 1)[0]}@{host}"
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k != "password"])
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def default_store_path() -> Path:
    """``$DKRON_EXEC_STORE``, else ``$XDG_DATA_HOME/dkron-exec/executions.db`` (``~/.local/share``).
    (A ``postgresql://`` URL in ``$DKRON_EXEC_STORE`` is for :func:`open_store`.)"""
    explicit = os.environ.get("DKRON_EXEC_STORE")
    if explicit:
        return Path(explicit)
    return _data_home_store_path()


def store_option_help() -> str:
    """The CLI's ``--store`` help: what it takes and the true default (the variable wins)."""
    return (
        "SQLite file, :memory: or a postgresql:// URL "
        f"(default: $DKRON_EXEC_STORE, else {_data_home_store_path()})"
    )


def open_store(spec: str | os.PathLike[str] | None, *, retention: int = DEFAULT_RETENTION) -> Store:
    """The store ``spec`` names: a ``postgresql://`` URL, an SQLite path or ``":memory:"``;
    None means ``$DKRON_EXEC_STORE`` (a URL or a path), else the default SQLite file."""
    if spec is None:
        explicit = os.environ.get("DKRON_EXEC_STORE")
        if explicit is None or not is_database_url(explicit):
            return SQLiteStore.default(retention=retention)
        spec = explicit
    if isinstance(spec, str) and is_database_url(spec):
        return _postgres_store(spec, retention)
    return SQLiteStore(spec, retention=retention)


def describe_store(store: Store) -> str:
    """Where the store keeps executions, for people: a path, or a URL without its password."""
    for attribute in ("location", "path"):
        value = getattr(store, attribute, None)
        if isinstance(value, str):
            return value
    return repr(store)


def _postgres_store(url: str, retention: int) -> Store:
    try:
        from .postgres_store import PostgresStore
    except ImportError as exc:
        if (exc.name or "").partition(".")[0] == "dkron_exec":
            raise  # a broken install of dkron_exec itself, not the missing extra
        raise StoreError(
            f"cannot open the store {safe_url(url)}: PostgreSQL needs psycopg 3, which this Python "
            f"cannot import ({exc}): {install_hint(POSTGRES_REQUIREMENT, 'postgres')}"
        ) from None
    return PostgresStore(url, retention=retention)


def _data_home_store_path() -> Path:
    data_home = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(data_home) / "dkron-exec" / "executions.db"


class SQLiteStore:
    """Executions in an SQLite database, newest ``retention`` per job.

    The folder of ``path`` must exist: a missing folder is a ``StoreError`` that names it, so a
    mistyped path does not grow a folder tree somewhere. Only the default location under the
    user's data folder (:meth:`default`) has its folders created. Failures raise ``StoreError``
    (an ``OSError``), one line naming the path and the cause: the path is a folder, its folder is
    missing, read-only or a file. ``core`` is the Rust store, which the run pipeline writes to
    without going through Python.
    """

    @classmethod
    def default(cls, *, retention: int = DEFAULT_RETENTION) -> SQLiteStore:
        """The store at :func:`default_store_path`. Under the user's data folder
        (``$XDG_DATA_HOME/dkron-exec``) missing folders are created; a path given by
        ``$DKRON_EXEC_STORE`` is treated like any explicit path (its folder must exist)."""
        path = default_store_path()
        if path == _data_home_store_path():
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(
                    f"cannot open the store {path}: cannot create its folder {path.parent}: "
                    f"{exc.strerror or exc}"
                ) from None
        return cls(path, retention=retention)

    def __init__(
        self, path: str | os.PathLike[str] = ":memory:", *, retention: int = DEFAULT_RETENTION
    ) -> None:
        if isinstance(retention, bool) or not isinstance(retention, int) or retention < 1:
            raise ValueError(f"retention must be a positive integer, got {retention!r}")
        self.core = _core.SqliteStore(os.fspath(path), retention)

    @property
    def path(self) -> str:
        return self.core.path

    @property
    def retention(self) -> int:
        return self.core.retention

    def put(self, execution: Execution) -> None:
        self.core.put(execution)

    def put_many(self, executions: builtins.list[Execution]) -> None:
        """Stores all of them in one transaction."""
        self.core.put_many(executions)

    def list(self, job_name: str, limit: int | None = None) -> builtins.list[Execution]:
        """The job's executions, newest first."""
        return self.core.list(job_name, limit)

    def get(self, job_name: str, key: str) -> Execution | None:
        return self.core.get(job_name, key)

    def job_names(self) -> builtins.list[str]:
        return self.core.job_names()

    def close(self) -> None:
        self.core.close()

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r}, retention={self.retention})"
