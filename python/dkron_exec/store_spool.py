"""Executions a remote store could not take yet, kept on local disk until it can.

A ``StoreSpool`` is one JSON-lines file per open store (``<store digest>-<pid>-<random>.jsonl``
in the user's state folder), locked with ``flock`` while its store is open. Each line is one
execution, exactly as the store would have written it (output in base64). A file whose lock
nobody holds belongs to a store that was closed with the database still away, or to a process
that died: the next store opened on the same database adopts it and writes its lines.
"""

from __future__ import annotations

import base64
import builtins
import contextlib
import fcntl
import logging
import os
import secrets
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from .execution import Execution

log = logging.getLogger("dkron_exec.store.spool")

Writer = Callable[[builtins.list[Execution]], None]


def default_state_dir() -> Path:
    """``$XDG_STATE_HOME/dkron-exec`` (``~/.local/state``): kept across reboots, unlike a cache."""
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(state) / "dkron-exec"


def encode(execution: Execution) -> bytes:
    fields: list[Any] = list(execution._to_core())
    fields[5] = base64.b64encode(execution.output).decode("ascii")
    return orjson.dumps(fields) + b"\n"


def decode(line: bytes) -> Execution:
    fields = orjson.loads(line)
    fields[5] = base64.b64decode(fields[5])
    return Execution._from_core(tuple(fields))


def read_lines(path: str, data: bytes) -> builtins.list[Execution]:
    """The executions of a spool file; a line cut short by a crash mid-append is skipped, said."""
    executions = []
    for number, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            executions.append(decode(line))
        except (ValueError, TypeError, IndexError) as exc:
            log.warning("spool file %s: line %d is not an execution (%s): skipped", path, number, exc)
    return executions


class StoreSpool:
    """The spool of one open store. Thread-safe; every method but ``close`` may be called often."""

    def __init__(self, directory: Path, digest: str) -> None:
        self.directory = directory
        self.digest = digest
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._path: str | None = None
        self._count = 0

    @property
    def path(self) -> str | None:
        """This store's own spool file, once something was spooled."""
        return self._path

    @property
    def count(self) -> int:
        """Executions in this store's own file, not yet written."""
        return self._count

    def append(self, execution: Execution) -> str:
        """Writes the execution to disk (fsync'd); returns the file's path."""
        with self._lock:
            fd = self._open()
            os.write(fd, encode(execution))
            os.fsync(fd)
            self._count += 1
            assert self._path is not None
            return self._path

    def flush(self, write: Writer) -> int:
        """Hands this store's spooled executions to ``write`` (one call); empties the file when
        it returns. Raises what ``write`` raises, keeping the file. Returns how many were written."""
        with self._lock:
            if self._fd is None or self._count == 0:
                return 0
            os.lseek(self._fd, 0, os.SEEK_SET)
            executions = read_lines(self._path or "", _read_all(self._fd))
            if executions:
                write(executions)
            os.ftruncate(self._fd, 0)
            os.lseek(self._fd, 0, os.SEEK_SET)
            self._count = 0
            return len(executions)

    def adopt(self, write: Writer) -> int:
        """Writes the spool files of this database that no open store holds (a process died, or
        a store was closed while the database was away), then deletes them. A file that cannot
        be written yet stays. Returns how many executions were written."""
        written = 0
        try:
            names = sorted(os.listdir(self.directory))
        except FileNotFoundError:
            return 0
        for name in names:
            path = os.path.join(self.directory, name)
            if not name.startswith(self.digest + "-") or not name.endswith(".jsonl") or path == self._path:
                continue
            written += _adopt_file(path, write)
        return written

    def close(self) -> None:
        """Releases the file: deleted when empty, else left for the next store to adopt."""
        with self._lock:
            if self._fd is None:
                return
            if self._count == 0 and self._path is not None:
                _unlink(self._path)
            os.close(self._fd)
            self._fd = None

    def _open(self) -> int:
        if self._fd is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            name = f"{self.digest}-{os.getpid()}-{secrets.token_hex(4)}.jsonl"
            path = os.path.join(self.directory, name)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._fd, self._path = fd, path
        return self._fd


def _adopt_file(path: str, write: Writer) -> int:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return 0
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return 0  # its store is open
        try:
            if os.fstat(fd).st_ino != os.stat(path).st_ino:
                return 0  # adopted and deleted by another store meanwhile
        except FileNotFoundError:
            return 0
        executions = read_lines(path, _read_all(fd))
        if executions:
            write(executions)
            log.warning("wrote %d spooled execution(s) from %s", len(executions), path)
        _unlink(path)
        return len(executions)
    finally:
        os.close(fd)


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
