"""Where executions are kept.

``Store`` is the interface of a store written in Python. ``SQLiteStore``, the default, is an
SQLite file (or ``":memory:"``) kept by the Rust core (``rust/core/src/store``): every execution
is written, success or failure, and the newest ``retention`` of each job are kept, like Dkron's
``MaxExecutions``. The file is in WAL mode with a busy timeout, so several threads and several
processes can write at once; puts made at the same moment share one transaction.
"""

from __future__ import annotations

import builtins
import os
from pathlib import Path
from typing import Protocol, runtime_checkable

from . import _core
from .execution import Execution

DEFAULT_RETENTION = 100


@runtime_checkable
class Store(Protocol):
    """What the Executor needs of a store: any object with these methods will do."""

    def put(self, execution: Execution) -> None:
        """Stores the execution (replacing the one of the same job and key)."""

    def list(self, job_name: str, limit: int | None = None) -> builtins.list[Execution]:
        """The job's executions, newest first; at most ``limit``."""

    def get(self, job_name: str, key: str) -> Execution | None: ...

    def job_names(self) -> builtins.list[str]:
        """The names of the jobs with stored executions, sorted."""

    def close(self) -> None: ...


def default_store_path() -> Path:
    """``$DKRON_EXEC_STORE``, else ``$XDG_DATA_HOME/dkron-exec/executions.db`` (``~/.local/share``)."""
    explicit = os.environ.get("DKRON_EXEC_STORE")
    if explicit:
        return Path(explicit)
    data_home = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(data_home) / "dkron-exec" / "executions.db"


class SQLiteStore:
    """Executions in an SQLite database, newest ``retention`` per job.

    Missing parent folders of ``path`` are created. Failures raise ``StoreError`` (an
    ``OSError``) naming the path and the cause. ``core`` is the Rust store, which the run
    pipeline writes to without going through Python.
    """

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
