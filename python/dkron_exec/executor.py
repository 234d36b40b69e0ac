"""``Executor``: runs jobs, passes each execution through the job's processors, stores it."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import _core
from ._loopwait import LoopWaiters
from .attempts import Attempts
from .discovery import discover_plugins
from .errors import ConcurrencyError, ExecutorClosedError
from .execution import Execution
from .job import Job
from .plugin_host import OutputCallback, PluginManager
from .processors import BUILTIN_NAMES, Processor, builtin_class
from .spool import default_spool_dir, remove_stale_spools
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


class Executor:
    """Runs jobs and keeps their executions.

    ``store`` is a path to an SQLite file, ``":memory:"``, or an object with the ``SQLiteStore``
    methods; None means the default file (``default_store_path()``). ``node_name`` defaults to the
    host name. ``output_limit`` bounds the output kept per execution (the tail is kept, as
    Dkron's 256,000 bytes). ``retry_backoff`` is the base of Dkron's retry delay, in seconds.
    ``worker_threads`` sizes the Rust engine that supervises every running job. ``spool_dir``
    is where output that outgrows ``output_limit`` is spooled for processors that want all of it
    (files); by default ``default_spool_dir()``. A spool file lives only while its execution goes
    through the processors; those left by a process that died are removed when an Executor opens
    the folder.

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
        # A host that died mid-run left its spool files behind.
        remove_stale_spools(self.spool_dir)
        self._engine = _core.Engine(worker_threads)
        # The runs in flight, by job name: for forbid, cancel(), and close() (which waits for
        # them to store their last execution before it closes the store).
        self._runs: dict[str, set[Attempts]] = {}
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
        with self._claim(job, on_output) as attempt:
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
        with self._claim(job, on_output) as attempt:
            while True:
                execution = await attempt.run_async(loop, self._waiters)
                delay = attempt.next_delay(execution)
                if delay is None:
                    return execution
                await asyncio.sleep(delay)

    def executions(self, job_name: str, limit: int | None = None) -> list[Execution]:
        """The job's stored executions, newest first."""
        return self.store.list(job_name, limit)

    def execution(self, job_name: str, key: str) -> Execution | None:
        return self.store.get(job_name, key)

    def cancel(self, job_name: str) -> int:
        """Kills the runs of ``job_name`` in flight (whole process trees) and stops their
        retries; returns how many there were. Each run's execution is stored, as cancelled, and
        its ``run`` call returns it."""
        with self._state:
            runs = list(self._runs.get(job_name, ()))
        for attempts in runs:
            attempts.cancel()
        return len(runs)

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
            self._state.wait_for(lambda: not self._runs, timeout)
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
    def _claim(self, job: Job, on_output: OutputCallback | None) -> Iterator[Attempts]:
        """Registers a run of the job (for cancel() and close()), enforcing ``concurrency:
        forbid`` for runs through this executor."""
        attempts = Attempts(self, job, on_output)
        with self._state:
            if self._closed:
                raise ExecutorClosedError("this Executor is closed")
            running = self._runs.setdefault(job.name, set())
            if running and job.forbids_concurrency:
                raise ConcurrencyError(f"job {job.name!r} is already running and its concurrency is 'forbid'")
            running.add(attempts)
        try:
            yield attempts
        finally:
            with self._state:
                running.discard(attempts)
                if not running:
                    del self._runs[job.name]
                self._state.notify_all()
