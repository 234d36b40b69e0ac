"""The Rust core (``rust/``): the run pipeline (plans, runtime), the sinks, and the plugin host."""

import builtins
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, final

from .execution import Execution
from .store import Store

__all__ = [
    "BUILTIN_EXECUTORS",
    "BUILTIN_PROCESSORS",
    "DEFAULT_OUTPUT_LIMIT",
    "PLUGIN_MAX_FRAME",
    "SHELL_KEYS",
    "CompletionQueue",
    "JobPlan",
    "PluginChannel",
    "PluginHost",
    "RunHandle",
    "Runtime",
    "SqliteStore",
    "SyslogSink",
    "__version__",
    "files_log_path",
    "log_block",
    "parse_go_duration",
    "parse_shell_config",
    "probe_isolation",
    "prune_log_files",
    "syslog_check_config",
    "write_log_block",
    "write_log_file",
]

__version__: str

BUILTIN_EXECUTORS: list[str]
"""Executors dkron_exec runs itself (any other name is a ``dkron-executor-NAME`` plugin)."""
BUILTIN_PROCESSORS: list[str]
"""Processors dkron_exec runs itself (any other name is a ``dkron-processor-NAME`` plugin)."""

DEFAULT_OUTPUT_LIMIT: int
"""Bytes of output kept in memory per execution: Dkron's 256,000."""
SHELL_KEYS: list[str]
"""The shell executor's ``executor_config`` keys (also the short form's top-level keys)."""

def parse_shell_config(
    config: dict[str, str],
) -> tuple[
    str,
    bool,
    list[tuple[str, str]],
    str | None,
    float | None,
    int | None,
    tuple[str, str | None] | None,
    bytes | None,
    bool,
]:
    """The shell executor's config, parsed: (command, shell, env, cwd, timeout in seconds,
    mem_limit, su, payload, keep_daemons). Raises JobError naming ``executor_config.<key>``."""

def probe_isolation(cgroups: bool = True) -> dict[str, Any]:
    """What a new Runtime would get (its cgroup is made and removed at once)."""

def parse_go_duration(text: str) -> int:
    """Go's ``time.ParseDuration``, in nanoseconds; ValueError for anything else."""

@final
class JobPlan:
    """A job's executor and processors, every config parsed once (building it validates them)."""

    def __new__(
        cls,
        name: str,
        executor: str,
        executor_config: dict[str, str],
        processors: list[tuple[str, dict[str, str]]],
        *,
        retries: int = 0,
        forbid: bool = False,
    ) -> JobPlan:
        """Raises dkron_exec.errors.JobError naming the field (``processors.files.keep``)."""

    @property
    def name(self) -> str: ...
    @property
    def spool_limit(self) -> int:
        """Bytes of complete output the processors want spooled (0: the tail is enough)."""

    @property
    def needs_plugins(self) -> bool:
        """Whether the executor or a processor is a plugin."""

    @property
    def processors(self) -> list[str]: ...

@final
class Runtime:
    """One Executor's engine, plugins, syslog connections and store writer: with ``store``, every
    attempt's execution is recorded there (a SqliteStore from Rust, another store through its
    ``put``, called with the GIL from the thread that ran it)."""

    def __new__(
        cls,
        *,
        node_name: str,
        store: SqliteStore | Store | None = None,
        output_limit: int = ...,  # DEFAULT_OUTPUT_LIMIT
        pipe_grace: float = 1.0,
        spool_dir: str | None = None,
        retry_backoff: float = 0.5,
        worker_threads: int = 1,
        plugin_timeout: float | None = ...,  # 30.0
        plugin_start_timeout: float = 10.0,
        cgroups: bool = True,
    ) -> Runtime: ...
    def register_plugin(self, kind: str, name: str, path: str) -> None: ...
    def refuse_plugin(self, kind: str, name: str, why: str) -> None: ...
    def run(
        self, plan: JobPlan, on_output: Callable[[bytes, bool], object] | None = None
    ) -> tuple[Execution, BaseException | None]:
        """Runs the plan to its end on this thread, GIL released: attempts, processors, store.
        Returns the final execution and the exception a signal handler raised meanwhile
        (Ctrl-C: the job was killed and its execution recorded), for the caller to raise.
        Raises ConcurrencyError or ExecutorClosedError when the run is refused."""

    def start(
        self,
        plan: JobPlan,
        queue: CompletionQueue,
        token: int,
        on_output: Callable[[bytes, bool], object] | None = None,
    ) -> RunHandle:
        """Starts the run on the engine's thread; ``token`` goes to ``queue`` when it ends."""

    def process(self, plan: JobPlan, execution: Execution, repeat: int = 1) -> Execution:
        """The execution through the plan's processors; nothing is run or stored. With
        ``repeat``, the chain runs that many times on copies whose keys end ``-<i>``."""

    def cancel(self, job_name: str) -> int: ...
    def in_flight(self) -> int: ...
    def isolation(self) -> dict[str, Any]:
        """How the runtime contains its jobs: the fields of ``dkron_exec.Isolation``."""
    def drain_logs(self, timeout: float = 0.0) -> list[tuple[str, str, str]] | None:
        """Plugin output lines (plugin, stream, line); None once closed."""

    def plugin_pid(self, kind: str, name: str) -> int | None: ...
    def close(self, grace: float = 10.0) -> None:
        """Kills what runs, waits up to ``grace`` s for executions to be recorded, stops plugins."""

@final
class RunHandle:
    """A run started with ``Runtime.start``."""

    def take(self) -> Execution | None:
        """The final execution once the run ended (once; later calls return None)."""

    def done(self) -> bool: ...
    def interrupt(self) -> None:
        """Kills the job; the run records its execution as cancelled by itself. Never blocks."""

    def wait(self, timeout: float | None = None) -> bool:
        """Blocks with the GIL released until the run ends; False if ``timeout`` passed first."""

@final
class CompletionQueue:
    """Tokens of finished runs behind one file descriptor, for an event loop waiting on many."""

    def __new__(cls) -> CompletionQueue: ...
    def fileno(self) -> int:
        """Readable while tokens are waiting."""

    def drain(self) -> list[int]:
        """Takes every waiting token."""

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

def files_log_path(config: dict[str, str], job: str, key: str) -> Path:
    """Where a ``files`` step with ``config`` writes the execution ``key`` of ``job``."""

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

    def close(self) -> str | None:
        """Closes the connection after trying to deliver the RELP messages still waiting;
        returns what could not be delivered (dropped), or None."""
    @property
    def destination(self) -> str: ...
    @property
    def connected(self) -> bool: ...
    @property
    def waiting(self) -> int:
        """RELP: how many messages wait in the resend queue."""

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
class SqliteStore:
    """Executions in an SQLite file (or ``":memory:"``), the newest ``retention`` per job.

    Missing parent folders are created; a file is in WAL mode, so several processes can share
    it. Concurrent puts share transactions. Database calls release the GIL; failures raise
    ``dkron_exec.errors.StoreError`` naming the path and the cause.
    """

    def __new__(cls, path: str, retention: int = 100) -> SqliteStore: ...
    @property
    def path(self) -> str: ...
    @property
    def retention(self) -> int: ...
    def put(self, execution: Execution) -> None:
        """Stores the execution; returns once it is committed."""

    def put_many(self, executions: Iterable[Execution]) -> None:
        """Stores all the executions in one transaction."""

    def list(self, job_name: str, limit: int | None = None) -> builtins.list[Execution]:
        """The job's executions, newest first; at most ``limit``."""

    def get(self, job_name: str, key: str) -> Execution | None: ...
    def job_names(self) -> builtins.list[str]:
        """The names of the jobs with stored executions, sorted."""

    def transactions(self) -> int:
        """Transactions committed so far (concurrent puts share them)."""

    def close(self) -> None:
        """Closes the database; later calls raise StoreError. Idempotent."""
