"""The Rust core (``rust/``): the job engine, the files/log/syslog sinks, and the plugin host."""

import os
from pathlib import Path
from typing import Any, final

from .execution import Execution

__all__ = [
    "PLUGIN_MAX_FRAME",
    "CancelToken",
    "CompletionQueue",
    "Engine",
    "Outcome",
    "PluginChannel",
    "PluginHost",
    "PluginRun",
    "RunHandle",
    "Spec",
    "SyslogSink",
    "__version__",
    "log_block",
    "prune_log_files",
    "syslog_check_config",
    "write_log_block",
    "write_log_file",
]

__version__: str

@final
class Spec:
    """What to run and under which limits; built once, then started or run by an Engine.

    With ``spool_dir``, output that outgrows ``output_limit`` is written whole (up to
    ``spool_limit`` bytes) to a file there, named in ``Outcome.spool_path``.
    """

    def __new__(
        cls,
        argv: list[str],
        *,
        env: list[tuple[str, str]] = ...,
        cwd: str | None = None,
        stdin: bytes | None = None,
        timeout: float | None = None,
        mem_limit: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        output_limit: int = 256000,
        pipe_grace: float = 1.0,
        label: str | None = None,
        spool_dir: str | None = None,
        spool_limit: int = 0,
    ) -> Spec: ...
    @property
    def argv(self) -> list[str]: ...

@final
class Engine:
    """A small runtime that supervises the running jobs of an Executor."""

    def __new__(cls, worker_threads: int = 1) -> Engine: ...
    def start(self, spec: Spec, queue: CompletionQueue | None = None, token: int = 0) -> RunHandle:
        """Starts a job in a process group of its own, supervised (and spawned) by the engine's
        threads; spawn failures come back as an Outcome. With ``queue``, ``token`` is pushed
        to it when the job ends."""

    def run(self, spec: Spec, cancel: CancelToken | None = None) -> tuple[Outcome, BaseException | None]:
        """Runs a job to its end on the calling thread (GIL released). If a signal handler raises
        meanwhile (Ctrl-C), the job's tree is killed and the exception is returned beside the
        outcome, for the caller to raise. ``cancel`` lets another thread kill the job."""

    def in_flight(self) -> int: ...
    def shutdown(self, grace: float = 2.0) -> None:
        """Kills every running job and stops the engine. Idempotent."""

@final
class CancelToken:
    """Cancels a job run by ``Engine.run`` from another thread."""

    def __new__(cls) -> CancelToken: ...
    def cancel(self) -> None:
        """Kills the job now, or as soon as it starts. Idempotent."""

@final
class CompletionQueue:
    """Tokens of finished jobs behind one file descriptor, for an event loop waiting on many."""

    def __new__(cls) -> CompletionQueue: ...
    def fileno(self) -> int:
        """Readable while tokens are waiting."""

    def drain(self) -> list[int]:
        """Takes every waiting token."""

@final
class RunHandle:
    def wait(self, timeout: float | None = None) -> Outcome | None:
        """Blocks with the GIL released; None if ``timeout`` passed first. Ctrl-C raises here."""

    def result(self) -> Outcome | None:
        """The outcome once the job ended, else None; never blocks."""

    def done(self) -> bool: ...
    def cancel(self) -> None:
        """Kills the job's whole process tree (before or after its spawn)."""

    @property
    def pid(self) -> int | None:
        """None until the engine's thread has spawned the job."""

    def fileno(self) -> int:
        """A descriptor that is readable once the job is done (made on first call)."""

@final
class Outcome:
    @property
    def pid(self) -> int | None: ...
    @property
    def exit_code(self) -> int | None: ...
    @property
    def output(self) -> bytes: ...
    @property
    def output_total(self) -> int: ...
    @property
    def truncated(self) -> bool: ...
    @property
    def error(self) -> str | None: ...
    @property
    def reason(self) -> str:
        """One of "exited", "timeout", "mem_limit", "cancelled", "spawn_failed"."""

    @property
    def started_ns(self) -> int: ...
    @property
    def finished_ns(self) -> int: ...
    @property
    def spool_path(self) -> str | None: ...
    @property
    def spool_complete(self) -> bool: ...
    @property
    def spool_error(self) -> str | None: ...
    @property
    def success(self) -> bool: ...

# -- sinks: the files and log processors' writers --------------------------------------------

def write_log_file(
    log_dir: str | os.PathLike[str],
    key: str,
    output: bytes | None = None,
    *,
    job: str | None = None,
    source: str | os.PathLike[str] | None = None,
    max_size: int | None = None,
    fsync: bool = False,
) -> Path:
    """Writes ``<log_dir>/[<job>/]<key>.log`` atomically, mode 0644, from ``output`` or streamed
    from the file ``source`` (exactly one), at most ``max_size`` bytes; returns its path.

    ValueError for a job name or key that is not a single path component; OSError (with errno)
    when the write fails, leaving no file behind."""

def prune_log_files(dir: str | os.PathLike[str], keep: int) -> int:
    """Keeps the newest ``keep`` ``*.log`` files of ``dir``; returns how many were removed."""

def log_block(job: str, key: str, output: bytes) -> bytes:
    """Dkron's ``----- BEGIN OUTPUT job=… execution=… -----`` block."""

def write_log_block(fd: int, job: str, key: str, output: bytes) -> None:
    """Writes the block to descriptor ``fd`` with one ``write_all``, bypassing Python's buffers."""

# -- the syslog processor's sink ----------------------------------------------------------------

def syslog_check_config(config: dict[str, str]) -> None:
    """Raises dkron_exec.errors.JobError (field ``processors.syslog.<key>``) for a bad config."""

@final
class SyslogSink:
    """One syslog destination and its connection, opened on first send and reused; thread-safe."""

    def __new__(cls, config: dict[str, str]) -> SyslogSink:
        """Raises JobError for a bad config; never connects."""

    def send(
        self,
        *,
        job_name: str,
        key: str,
        success: bool,
        exit_code: int | None,
        output: bytes,
        timestamp_ns: int,
    ) -> int:
        """Sends one execution with the GIL released; returns the number of messages written.
        Raises OSError when the daemon cannot be reached (after one reconnect)."""

    def close(self) -> None: ...
    @property
    def destination(self) -> str: ...
    @property
    def connected(self) -> bool: ...

# -- the plugin host ---------------------------------------------------------------------------

PLUGIN_MAX_FRAME: int

@final
class PluginHost:
    """Plugin processes (docs/PROTOCOL.md): started on first use, reused, restarted after a crash."""

    def __new__(
        cls,
        *,
        start_timeout: float = 10.0,
        cancel_grace: float = 1.0,
        stop_grace: float = 2.0,
        backoff_max: float = 5.0,
        max_frame: int = 67108864,
    ) -> PluginHost: ...
    def register(self, kind: str, name: str, path: str) -> None: ...
    def process(
        self, name: str, execution: Execution, config: dict[str, str], timeout: float | None = None
    ) -> Execution:
        """One processor call: the plugin's answer merged into a copy of ``execution``.
        Raises PluginError (its ``kind`` says what failed); Ctrl-C cancels the call."""

    def execute(
        self,
        name: str,
        job_name: str,
        config: bytes,
        payload: bytes = ...,
        *,
        timeout: float | None = None,
        output_limit: int = 256000,
        stream: bool = False,
    ) -> PluginRun: ...
    def pid(self, kind: str, name: str) -> int | None: ...
    def drain_logs(self, timeout: float = 0.0) -> list[tuple[str, str, str]] | None:
        """Plugin output lines (plugin, stream, line); None once the host is closed."""

    def close(self, grace: float = 2.0) -> None: ...

@final
class PluginChannel:
    """The plugin side of the channel, for the SDK's ``serve``: frames read and written in Rust,
    the GIL released while a thread waits. Owns ``fd``."""

    def __new__(cls, fd: int, max_frame: int = ...) -> PluginChannel: ...
    def recv(self) -> tuple[str, int, Any, Any] | None:
        """``("process", id, Execution, config)``, ``("execute", id, header JSON, payload)``,
        ``("cancel", id, None, None)``, ``("invalid", id, why, None)``; None at shutdown or EOF.
        Raises ``dkron_exec.plugin.wire.FrameError`` when the host breaks the protocol."""

    def receivers(self) -> int:
        """Threads now inside ``recv``."""

    def send_result(self, id: int, execution: Execution) -> None: ...
    def send_error(self, id: int, message: str) -> None: ...
    def send(self, header: bytes, body: bytes = ...) -> None: ...

@final
class PluginRun:
    """An executor-plugin run, with the interface of RunHandle."""

    def wait(self, timeout: float | None = None) -> Outcome | None: ...
    def result(self) -> Outcome | None: ...
    def done(self) -> bool: ...
    def cancel(self) -> None: ...
    def next_chunks(self, timeout: float = 0.05) -> list[tuple[bool, bytes]] | None: ...
    @property
    def pid(self) -> int | None: ...
    def fileno(self) -> int: ...
