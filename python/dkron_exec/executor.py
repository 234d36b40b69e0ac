"""``Executor``: runs jobs, passes each execution through the job's processors, stores it."""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import _core
from ._loopwait import LoopWaiter, LoopWaiters
from .chain import run_chain
from .discovery import discover_plugins
from .durations import parse_go_duration
from .errors import ConcurrencyError, ExecutorClosedError
from .execution import Execution, datetime_from_ns, make_key
from .job import Job, ShellConfig
from .plugin_host import OutputCallback, PluginManager
from .processors import BUILTIN_NAMES, ProcessContext, Processor, builtin_class
from .shell import ShellSetupError, process_spec
from .store import DEFAULT_RETENTION, SQLiteStore, default_store_path

JobLike = Job | Mapping[str, Any] | str | bytes

log = logging.getLogger("dkron_exec.executor")

DEFAULT_OUTPUT_LIMIT = 256_000


def as_job(job: JobLike) -> Job:
    if isinstance(job, Job):
        return job
    if isinstance(job, (str, bytes)):
        return Job.from_json(job)
    return Job.from_dict(job)


def default_spool_dir() -> Path:
    """``$XDG_CACHE_HOME/dkron-exec/spool`` (``~/.cache``): on disk, not a tmpfs /tmp."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "dkron-exec" / "spool"


def spool_limit(job: Job) -> int:
    """Bytes of complete output the job's processors want (0: none beyond the in-memory tail)."""
    limit = 0
    for name, config in job.processors.items():
        if name == "files":
            limit = max(limit, builtin_class("files").spool_limit(config) or 0)  # type: ignore[attr-defined]
    return limit


def retry_delay(base: float, attempt: int, elapsed: float) -> float:
    """Dkron's backoff before attempt ``attempt + 1``: ``(log2(elapsed / base) + attempt) * base``.

    Dkron feeds log2 an integer that is 0 for runs shorter than ``base`` (and so sleeps a
    negative time, i.e. not at all); we floor the logarithm at zero instead, so the delay grows
    with the attempt number as documented.
    """
    if base <= 0:
        return 0.0
    runs = max(1.0, elapsed / base)
    return (math.log2(runs) + attempt) * base


class Executor:
    """Runs jobs and keeps their executions.

    ``store`` is a path to an SQLite file, ``":memory:"``, or an object with the ``SQLiteStore``
    methods; None means the default file (``default_store_path()``). ``node_name`` defaults to the
    host name. ``output_limit`` bounds the output kept per execution (the tail is kept, as
    Dkron's 256,000 bytes). ``retry_backoff`` is the base of Dkron's retry delay, in seconds.
    ``worker_threads`` sizes the Rust engine that supervises every running job. ``spool_dir``
    is where output that outgrows ``output_limit`` is spooled for processors that want all of it
    (files); by default ``default_spool_dir()``. A spool file lives only while its execution goes
    through the processors.

    Plugins (``dkron-processor-NAME``, ``dkron-executor-NAME``) are found in ``/etc/dkron/plugins``,
    the Python executable's folder, then ``plugin_dirs`` (last found wins); a built-in of the same
    name wins over a plugin. ``plugin_timeout`` bounds each plugin processor call, in seconds.
    """

    def __init__(
        self,
        store: str | os.PathLike[str] | SQLiteStore | None = None,
        *,
        node_name: str | None = None,
        plugin_dirs: Sequence[str | os.PathLike[str]] = (),
        output_limit: int = DEFAULT_OUTPUT_LIMIT,
        retention: int = DEFAULT_RETENTION,
        retry_backoff: float = 0.5,
        worker_threads: int = 1,
        pipe_grace: float = 1.0,
        spool_dir: str | os.PathLike[str] | None = None,
        plugin_timeout: float | None = 30.0,
    ) -> None:
        if isinstance(output_limit, bool) or not isinstance(output_limit, int) or output_limit < 0:
            raise ValueError(f"output_limit must be a non-negative integer, got {output_limit!r}")
        if isinstance(store, SQLiteStore):
            self.store = store
        else:
            self.store = SQLiteStore(default_store_path() if store is None else store, retention=retention)
        self.node_name = node_name or socket.gethostname()
        self.plugin_dirs = [Path(d) for d in plugin_dirs]
        self.output_limit = output_limit
        self.retry_backoff = retry_backoff
        self.pipe_grace = pipe_grace
        self.spool_dir = Path(spool_dir) if spool_dir is not None else default_spool_dir()
        self._engine = _core.Engine(worker_threads)
        # Names of forbid-jobs in flight, and the number of runs in flight (close() waits for
        # them to store their last execution before it closes the store).
        self._running: set[str] = set()
        self._active = 0
        self._state = threading.Condition()
        self._closed = False
        self._processors: dict[str, Processor] = {}
        self.plugin_timeout = plugin_timeout
        self._plugins: PluginManager | None = None
        self._waiters = LoopWaiters()

    # -- public API --------------------------------------------------------------------------

    def run(self, job: JobLike, *, on_output: OutputCallback | None = None) -> Execution:
        """Runs the job to its end (retries included) and returns the final, stored execution.

        ``on_output(chunk, is_stderr)`` gets an executor plugin's output as it streams.

        Blocks with the GIL released. Ctrl-C kills the job's processes, stores the interrupted
        execution, and raises KeyboardInterrupt.
        """
        job = as_job(job)
        with self._claim(job):
            attempt = _Attempts(self, job, on_output)
            while True:
                execution = attempt.run_shell() if job.executor == "shell" else attempt.run_handle()
                delay = attempt.next_delay(execution)
                if delay is None:
                    return execution
                time.sleep(delay)

    async def run_async(self, job: JobLike, *, on_output: OutputCallback | None = None) -> Execution:
        """``run`` for asyncio programs: waits on the job without blocking the event loop."""
        job = as_job(job)
        loop = asyncio.get_running_loop()
        with self._claim(job):
            attempt = _Attempts(self, job, on_output)
            while True:
                execution = await self._attempt_async(attempt, loop)
                delay = attempt.next_delay(execution)
                if delay is None:
                    return execution
                await asyncio.sleep(delay)

    async def _attempt_async(self, attempt: _Attempts, loop: asyncio.AbstractEventLoop) -> Execution:
        waiter: LoopWaiter | None = None
        if attempt.job.executor == "shell":
            # Shell jobs report through the loop's one completion queue: no descriptor per job.
            waiter = self._waiters.for_loop(loop)
            token, done = waiter.register()
            handle = attempt.start(waiter.queue, token)
        else:
            handle = attempt.start()
        if handle is None:
            if waiter is not None:
                waiter.forget(token)
            return attempt.finish_unstarted()
        try:
            if waiter is not None:
                await done
                outcome = handle.result()
            else:
                outcome = await _wait_readable(loop, handle)
        except BaseException:
            # Cancelled task: the job must not outlive it.
            if waiter is not None:
                waiter.forget(token)
            handle.cancel()
            late = handle.wait(5.0)
            if late is not None:
                attempt.finish(late, interrupted=True)
            raise
        if attempt.job.processors:
            # Processors may block (a syslog connect, a large file): off the loop.
            return await asyncio.to_thread(attempt.finish, outcome)
        return attempt.finish(outcome)  # one SQLite insert

    def executions(self, job_name: str, limit: int | None = None) -> list[Execution]:
        """The job's stored executions, newest first."""
        return self.store.list(job_name, limit)

    def execution(self, job_name: str, key: str) -> Execution | None:
        return self.store.get(job_name, key)

    def running(self) -> int:
        """Jobs running right now, across every thread and task."""
        return int(self._engine.in_flight())

    def close(self, timeout: float = 10.0) -> None:
        """Kills every job still running (whole process trees), waits up to ``timeout`` seconds
        for their executions to be stored, then closes the store. New runs are refused."""
        with self._state:
            if self._closed:
                return
            self._closed = True
        self._engine.shutdown()
        with self._state:
            self._state.wait_for(lambda: self._active == 0, timeout)
            processors = list(self._processors.values())
        for processor in processors:
            processor.close()
        if self._plugins is not None:
            self._plugins.close()
        self.store.close()

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ---------------------------------------------------------------------------

    @property
    def plugins(self) -> PluginManager:
        """The plugins found at first use (discovery runs once per Executor)."""
        with self._state:
            if self._plugins is None:
                found = discover_plugins(self.plugin_dirs)
                for info in found.all():
                    builtin = info.name in BUILTIN_NAMES if info.kind == "processor" else info.name == "shell"
                    if builtin:
                        log.warning(
                            "%s plugin %s is ignored: the built-in %r wins", info.kind, info.path, info.name
                        )
                        del found.of_kind(info.kind)[info.name]
                self._plugins = PluginManager(found, call_timeout=self.plugin_timeout)
            return self._plugins

    def _processors_for(self, job: Job) -> dict[str, Processor]:
        """The processors the job names, made once per Executor (they keep connections):
        built-ins first, then plugins."""
        missing = [name for name in job.processors if name not in self._processors]
        if missing:
            plugins = self.plugins
            with self._state:
                for name in missing:
                    if name in self._processors:
                        continue
                    if name in BUILTIN_NAMES:
                        self._processors[name] = builtin_class(name)()
                    elif plugins.has("processor", name):
                        self._processors[name] = plugins.processor(name)
        return self._processors

    @contextmanager
    def _claim(self, job: Job) -> Iterator[None]:
        """Enforces ``concurrency: forbid`` for runs through this executor."""
        forbid = job.forbids_concurrency
        with self._state:
            if self._closed:
                raise ExecutorClosedError("this Executor is closed")
            if forbid:
                if job.name in self._running:
                    raise ConcurrencyError(
                        f"job {job.name!r} is already running and its concurrency is 'forbid'"
                    )
                self._running.add(job.name)
            self._active += 1
        try:
            yield
        finally:
            with self._state:
                if forbid:
                    self._running.discard(job.name)
                self._active -= 1
                self._state.notify_all()


class _Attempts:
    """One call of ``run``: the attempts of a job sharing one execution group."""

    def __init__(self, executor: Executor, job: Job, on_output: OutputCallback | None = None) -> None:
        self.executor = executor
        self.job = job
        self.on_output = on_output
        self.group = time.time_ns()
        self.attempt = 1
        self._setup_error: str | None = None
        self._started_ns = 0
        self._spool_limit = spool_limit(job)

    def run_shell(self) -> Execution:
        """The current attempt of a shell job, run on this thread by the engine (no thread hop).

        A signal handler that raises while the job runs (Ctrl-C) gets the job killed; the
        execution is stored as interrupted, then the exception propagates.
        """
        spec = self._shell_spec()
        if spec is None:
            return self.finish_unstarted()
        outcome, raised = self.executor._engine.run(spec)
        execution = self.finish(outcome, interrupted=raised is not None)
        if raised is not None:
            raise raised
        return execution

    def run_handle(self) -> Execution:
        """The current attempt through a run handle (executor plugins), waited on here."""
        handle = self.start()
        if handle is None:
            return self.finish_unstarted()
        try:
            outcome = handle.wait()
        except BaseException:
            handle.cancel()
            late = handle.wait(5.0)
            if late is not None:
                self.finish(late, interrupted=True)
            raise
        assert outcome is not None
        return self.finish(outcome)

    def start(self, queue: _core.CompletionQueue | None = None, token: int = 0) -> Any:
        """Starts the current attempt on the engine's threads and returns its handle; None when
        it could not even be set up. A shell job pushes ``token`` to ``queue`` when it ends."""
        ex = self.executor
        if self.job.executor != "shell":
            self._started_ns = time.time_ns()
            if ex.plugins.has("executor", self.job.executor):
                return self._start_plugin()
            self._setup_error = (
                f"executor {self.job.executor!r} is not available: "
                f"no dkron-executor-{self.job.executor} plugin is installed"
            )
            return None
        spec = self._shell_spec()
        return None if spec is None else ex._engine.start(spec, queue, token)

    def _shell_spec(self) -> _core.Spec | None:
        self._started_ns = time.time_ns()
        ex = self.executor
        config = self.job.executor_config
        try:
            return _shell_spec(
                self.job.name,
                tuple(config.items()),
                ex.output_limit,
                ex.pipe_grace,
                str(ex.spool_dir) if self._spool_limit else None,
                self._spool_limit,
            )
        except ShellSetupError as exc:
            self._setup_error = str(exc)
            return None

    def _start_plugin(self) -> Any:
        config = self.job.executor_config
        try:
            timeout = parse_go_duration(config["timeout"]) if config.get("timeout") else None
        except ValueError as exc:
            self._setup_error = f"executor_config.timeout: {exc}"
            return None
        ex = self.executor
        return ex.plugins.execute(
            self.job.executor,
            self.job.name,
            config,
            payload=config.get("payload", "").encode(),
            timeout=timeout or None,
            output_limit=ex.output_limit,
            on_output=self.on_output,
        )

    def finish(self, outcome: Any, *, interrupted: bool = False) -> Execution:
        error = outcome.error
        output = outcome.output
        if interrupted and outcome.reason == "cancelled":
            error = f"shell: Job '{self.job.name}' was interrupted. Job was killed"
        execution = Execution(
            job_name=self.job.name,
            started_at=datetime_from_ns(outcome.started_ns),
            finished_at=datetime_from_ns(outcome.finished_ns),
            success=error is None,
            output=output,
            node_name=self.executor.node_name,
            group=self.group,
            attempt=self.attempt,
            exit_code=outcome.exit_code,
            error=error,
            output_truncated=outcome.truncated,
            output_size=outcome.output_total,
            key=make_key(outcome.started_ns, self.executor.node_name),
        )
        if outcome.spool_error:
            execution.processor_errors.append(f"spool: {outcome.spool_error}")
        spool = Path(outcome.spool_path) if outcome.spool_path else None
        try:
            return self._complete(execution, spool, outcome.spool_complete)
        finally:
            if spool is not None:
                spool.unlink(missing_ok=True)

    def finish_unstarted(self) -> Execution:
        now = time.time_ns()
        error = self._setup_error or "the job could not be started"
        execution = Execution(
            job_name=self.job.name,
            started_at=datetime_from_ns(self._started_ns),
            finished_at=datetime_from_ns(now),
            success=False,
            output=(error + "\n").encode(),
            node_name=self.executor.node_name,
            group=self.group,
            attempt=self.attempt,
            error=error,
            key=make_key(self._started_ns, self.executor.node_name),
        )
        return self._complete(execution)

    def _complete(
        self, execution: Execution, full_output: Path | None = None, full_output_complete: bool = True
    ) -> Execution:
        """The job's processors in order, then the store, which always gets the execution."""
        ex = self.executor
        if self.job.processors:
            ctx = ProcessContext(
                node_name=ex.node_name, full_output=full_output, full_output_complete=full_output_complete
            )
            execution = run_chain(ex._processors_for(self.job), self.job.processors, execution, ctx)
        ex.store.put(execution)
        return execution

    def next_delay(self, execution: Execution) -> float | None:
        """Seconds to wait before the next attempt, or None when this one was the last."""
        if execution.success or self.attempt > self.job.retries or self.executor._closed:
            return None
        elapsed = (time.time_ns() - self._started_ns) / 1e9
        delay = retry_delay(self.executor.retry_backoff, self.attempt, elapsed)
        self.attempt += 1
        return delay


async def _wait_readable(loop: asyncio.AbstractEventLoop, handle: Any) -> Any:
    """Waits for the engine's wake-up pipe, so the event loop never blocks on the job."""
    done: asyncio.Future[None] = loop.create_future()
    fd = handle.fileno()

    def ready() -> None:
        if not done.done():
            done.set_result(None)

    loop.add_reader(fd, ready)
    try:
        if not handle.done():
            await done
    finally:
        loop.remove_reader(fd)
    return handle.result()


def _shell_spec(
    name: str,
    config: tuple[tuple[str, str], ...],
    output_limit: int,
    pipe_grace: float,
    spool_dir: str | None,
    spool_limit: int,
) -> _core.Spec:
    """The engine's spec for a shell job. A job that runs again reuses it: parsing its config
    and splitting its command cost as much as a tenth of a spawn. Jobs with a payload are not
    kept, so the cache holds no large buffers."""
    make = _make_shell_spec if any(k == "payload" and v for k, v in config) else _shell_spec_cached
    return make(name, config, output_limit, pipe_grace, spool_dir, spool_limit)


def _make_shell_spec(
    name: str,
    config: tuple[tuple[str, str], ...],
    output_limit: int,
    pipe_grace: float,
    spool_dir: str | None,
    spool_limit: int,
) -> _core.Spec:
    return process_spec(
        ShellConfig.from_config(dict(config)),
        name,
        output_limit=output_limit,
        pipe_grace=pipe_grace,
        spool_dir=spool_dir,
        spool_limit=spool_limit,
    )


_shell_spec_cached = functools.lru_cache(maxsize=128)(_make_shell_spec)
