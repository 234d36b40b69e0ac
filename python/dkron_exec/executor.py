"""``Executor``: runs jobs through their processors into a store. The policy lives here (which
store, which plugins, which node name); each run is one call into the Rust runtime."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from . import _core
from ._loopwait import LoopWaiters
from .containment import Isolation
from .discovery import (
    DiscoveredPlugins,
    PluginDirs,
    PluginKind,
    discover_plugins,
    is_builtin,
    missing_plugin_dirs,
    parse_plugin_name,
    plugin_folders,
)
from .errors import ExecutorClosedError
from .execution import Execution
from .job import Job
from .names import KnownNames
from .spool import default_spool_dir, remove_stale_spools
from .store import DEFAULT_RETENTION, ClaimingStore, SQLiteStore, Store, open_store

JobLike = Job | Mapping[str, Any] | str | bytes
OutputCallback = Callable[[bytes, bool], None]

log = logging.getLogger("dkron_exec.executor")

DEFAULT_OUTPUT_LIMIT: int = _core.DEFAULT_OUTPUT_LIMIT
"""Bytes of output kept per execution: Dkron's 256,000."""

_LOG_LEVELS = {
    "[TRACE]": logging.DEBUG,
    "[DEBUG]": logging.DEBUG,
    "[INFO]": logging.INFO,
    "[WARN]": logging.WARNING,
    "[WARNING]": logging.WARNING,
    "[ERROR]": logging.ERROR,
}
_log_processor = logging.getLogger("dkron_exec.processors.log")


def _log_record(success: bool, job_name: str, key: str, block: str) -> None:
    """The ``log`` processor's ``"target": "logging"`` (called from the Rust chain)."""
    _log_processor.log(
        logging.INFO if success else logging.ERROR,
        "%s",
        block,
        extra={"job_name": job_name, "execution_key": key},
    )


def _on_loop(loop: asyncio.AbstractEventLoop, callback: OutputCallback) -> OutputCallback:
    """The callback, called on the loop's thread in order (chunks arrive on the engine's thread)."""

    def deliver(chunk: bytes, is_stderr: bool) -> None:
        loop.call_soon_threadsafe(callback, chunk, is_stderr)

    return deliver


async def _enter_off_loop(claim: AbstractContextManager[object]) -> None:
    """Enters the claim on a worker thread (it may be a network round trip). If the task is
    cancelled meanwhile, a claim the thread still takes is released at once."""
    entering = asyncio.ensure_future(asyncio.to_thread(claim.__enter__))
    try:
        await asyncio.shield(entering)
    except asyncio.CancelledError:

        def release(done: asyncio.Future[object]) -> None:
            if not done.cancelled() and done.exception() is None:
                claim.__exit__(None, None, None)

        entering.add_done_callback(release)
        raise


def as_job(job: JobLike) -> Job:
    if isinstance(job, Job):
        return job
    if isinstance(job, (str, bytes)):
        return Job.from_json(job)
    return Job.from_dict(job)


class Plugins:
    """The plugins an Executor found (discovery runs once, at first need), and so the names its
    jobs may use (``names``)."""

    def __init__(self, found: DiscoveredPlugins, runtime: _core.Runtime) -> None:
        self.found = found
        self.names = KnownNames(found)
        self._runtime = runtime

    def has(self, kind: PluginKind, name: str) -> bool:
        return name in self.found.of_kind(kind)

    def pid(self, kind: PluginKind, name: str) -> int | None:
        """The pid of the plugin's process while it runs."""
        return self._runtime.plugin_pid(kind, name)


class Executor:
    """Runs jobs and keeps their executions.

    ``store`` is a path to an SQLite file, ``":memory:"``, a ``postgresql://`` URL (a
    :class:`~dkron_exec.postgres_store.PostgresStore`, shared by many hosts), or a store object (the
    :class:`~dkron_exec.store.Store` protocol: an :class:`SQLiteStore`, or one written in Python);
    None means ``$DKRON_EXEC_STORE`` (a path or a URL), else the default file
    (``default_store_path()``). A store with a ``claim`` (PostgreSQL's) makes ``concurrency:
    forbid`` hold across every Executor, process and host that shares it. A path's folder must exist (else a
    StoreError names it); only the default location under the user's data folder has its folders
    created (:meth:`SQLiteStore.default`). ``node_name`` defaults to the host
    name. ``output_limit`` bounds the output kept per execution (the tail is kept, as Dkron's
    256,000 bytes). ``retry_backoff`` is the base of Dkron's retry delay, in seconds.
    ``worker_threads`` sizes the Rust engine that supervises runs started with ``run_async``.
    ``spool_dir`` is where output that outgrows ``output_limit`` is spooled for processors that
    want all of it (files); by default ``default_spool_dir()``.

    Plugins (``dkron-processor-NAME``, ``dkron-executor-NAME``) are found in ``/etc/dkron/plugins``,
    the Python executable's folder, then ``plugin_dirs`` (last found wins); a built-in of the same
    name wins over a plugin. ``plugin_dirs`` is one folder (a ``str`` or a path) or a sequence of
    folders; each one that does not exist is logged as a warning (``dkron_exec.executor``) when the
    Executor is made. Plugins are looked for once, when the first job that names one arrives.

    A job naming an executor or processor that is neither a built-in nor a plugin found (or naming
    a plugin refused for its permissions) is refused before anything starts: ``run``,
    ``run_async`` and ``process`` raise a JobError naming the field and the name, with the closest
    known name ("did you mean 'files'?") or why the plugin was refused; nothing is run or stored.
    ``check`` asks the same question without running anything.

    ``plugin_timeout`` bounds each plugin processor call and ``plugin_start_timeout`` a plugin's
    start-up (launch to handshake), in seconds. A call waits
    for a starting plugin within its own deadline: a plugin that has not completed its handshake
    when a waiting call's ``plugin_timeout`` expires is killed then, and the next call starts a
    fresh one, which is given its whole ``plugin_start_timeout`` (a plugin slower to start than
    ``plugin_timeout`` costs the calls that waited for it, never the plugin for good). An
    executor plugin's job ``timeout`` is the job's own, as in Dkron: it starts once the plugin is
    ready, and start-up is bounded by ``plugin_start_timeout``.

    Nothing a job starts outlives it: each run is contained in a cgroup of its own where the
    machine allows it (``cgroups=False``, or ``DKRON_EXEC_CGROUP=off``, forces the process-group
    fallback); ``isolation`` says which mode is in use and what it guarantees. A watchdog process
    kills the runs in flight if this process dies.
    """

    def __init__(
        self,
        store: str | os.PathLike[str] | Store | None = None,
        *,
        node_name: str | None = None,
        plugin_dirs: PluginDirs = (),
        output_limit: int = DEFAULT_OUTPUT_LIMIT,
        retention: int = DEFAULT_RETENTION,
        retry_backoff: float = 0.5,
        worker_threads: int = 1,
        pipe_grace: float = 1.0,
        spool_dir: str | os.PathLike[str] | None = None,
        plugin_timeout: float | None = 30.0,
        plugin_start_timeout: float = 10.0,
        cgroups: bool = True,
    ) -> None:
        if isinstance(output_limit, bool) or not isinstance(output_limit, int) or output_limit < 0:
            raise ValueError(f"output_limit must be a non-negative integer, got {output_limit!r}")
        if store is None or isinstance(store, (str, os.PathLike)):
            store = open_store(store, retention=retention)
        elif not isinstance(store, Store):
            raise TypeError(f"store must be a path or an object with the Store methods, got {store!r}")
        self.store: Store = store
        self.node_name = node_name or socket.gethostname()
        self.plugin_dirs = plugin_folders(plugin_dirs)
        for folder, why in missing_plugin_dirs(self.plugin_dirs):
            log.warning("plugin folder %s %s: no plugins are looked for there", folder, why)
        self.output_limit = output_limit
        self.spool_dir = Path(spool_dir) if spool_dir is not None else default_spool_dir()
        # A host that died mid-run left its spool files behind.
        remove_stale_spools(self.spool_dir)
        self._runtime = _core.Runtime(
            node_name=self.node_name,
            # Every attempt is recorded by the runtime: into the SQLite store from Rust, into any
            # other store through its put().
            store=store.core if isinstance(store, SQLiteStore) else store,
            output_limit=output_limit,
            pipe_grace=pipe_grace,
            spool_dir=str(self.spool_dir),
            retry_backoff=retry_backoff,
            worker_threads=worker_threads,
            plugin_timeout=plugin_timeout,
            plugin_start_timeout=plugin_start_timeout,
            cgroups=cgroups,
        )
        self._plugins: Plugins | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._waiters = LoopWaiters()

    # -- public API --------------------------------------------------------------------------

    def run(self, job: JobLike, *, on_output: OutputCallback | None = None) -> Execution:
        """Runs the job to its end (retries included) and returns the final, stored execution.

        ``on_output(chunk, is_stderr)`` gets an executor plugin's output as it streams.

        Raises JobError, before anything starts, if the job names an executor or processor this
        Executor cannot resolve (see ``check``).

        Blocks with the GIL released. Ctrl-C kills the job's processes, stores the execution
        (cancelled, in the words of ``cancel``), and raises KeyboardInterrupt.
        """
        job = as_job(job)
        plan = self._plan(job)
        with self._claim(job) or nullcontext():
            execution, raised = self._runtime.run(plan, on_output)
        if raised is not None:
            raise raised
        return execution

    async def run_async(self, job: JobLike, *, on_output: OutputCallback | None = None) -> Execution:
        """``run`` for asyncio programs: waits on the job without blocking the event loop.

        ``on_output`` is called on the event loop's thread, in order. Cancelling the task kills
        the job's processes at once; the run still stores its execution when it ends, as
        cancelled, in the words of ``cancel``. A store's cluster-wide claim (``forbid``) is
        released when the task ends. Raises JobError for a name that does not resolve, as ``run``.
        """
        job = as_job(job)
        plan = self._plan(job)
        claim = self._claim(job)
        if claim is None:
            return await self._run_started(plan, on_output)
        await _enter_off_loop(claim)
        try:
            return await self._run_started(plan, on_output)
        finally:
            claim.__exit__(None, None, None)

    async def _run_started(self, plan: _core.JobPlan, on_output: OutputCallback | None) -> Execution:
        loop = asyncio.get_running_loop()
        if on_output is not None:
            on_output = _on_loop(loop, on_output)
        waiter = self._waiters.for_loop(loop)
        token, done = waiter.register()
        try:
            handle = self._runtime.start(plan, waiter.queue, token, on_output)
        except BaseException:
            waiter.forget(token)
            raise
        try:
            await done
        except asyncio.CancelledError:
            # The run records its execution (as cancelled) by itself when the job is gone.
            handle.interrupt()
            waiter.forget(token)
            raise
        execution = handle.take()
        assert execution is not None, "a finished run has an execution"
        return execution

    def process(self, job: JobLike, execution: Execution) -> Execution:
        """Passes ``execution`` through the job's processors, as a run would after its executor,
        and returns what comes out. Nothing is run or stored. JobError as ``run`` for a name
        that does not resolve."""
        return self._runtime.process(self._plan(as_job(job)), execution)

    def check(self, job: JobLike) -> Job:
        """The job as ``run`` would take it, or the JobError ``run`` would raise: an invalid
        document, or an executor or processor name that is neither a built-in nor a plugin this
        Executor found (the field, the name and the closest known one). Nothing runs."""
        job = as_job(job)
        self._plan(job)
        return job

    def executions(self, job_name: str, limit: int | None = None) -> list[Execution]:
        """The job's stored executions, newest first."""
        return self.store.list(job_name, limit)

    def execution(self, job_name: str, key: str) -> Execution | None:
        """The stored execution of ``job_name`` with that ``key`` (as ``run`` returned it and
        ``executions`` lists it), or None if the store holds no such execution."""
        return self.store.get(job_name, key)

    def cancel(self, job_name: str) -> int:
        """Kills the runs of ``job_name`` in flight (whole process trees) and stops their
        retries; returns how many there were. Each run's execution is stored, as cancelled, and
        its ``run`` call returns it."""
        return int(self._runtime.cancel(job_name))

    def running(self) -> int:
        """Runs in flight right now, across every thread and task."""
        return int(self._runtime.in_flight())

    def close(self, timeout: float = 10.0) -> None:
        """Kills every job still running (whole process trees), waits up to ``timeout`` seconds
        for their executions to be stored, stops the plugins, then closes the store. New runs
        are refused."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._runtime.close(timeout)
        self.store.close()

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def isolation(self) -> Isolation:
        """How this Executor contains its jobs (cgroup or process group) and what that
        guarantees; ``watchdog_pid`` once a run has started the watchdog."""
        return Isolation._from_core(self._runtime.isolation())

    @property
    def plugins(self) -> Plugins:
        """The plugins found on disk (discovery runs once per Executor, at first need)."""
        with self._lock:
            if self._plugins is None:
                self._plugins = self._discover()
            return self._plugins

    # -- internals ---------------------------------------------------------------------------

    def _claim(self, job: Job) -> AbstractContextManager[object] | None:
        """The store's cluster-wide claim for a ``forbid`` job (see ``ClaimingStore``); the
        runtime enforces ``forbid`` within this Executor in any case."""
        if job.forbids_concurrency and isinstance(self.store, ClaimingStore):
            return self.store.claim(job.name)
        return None

    def _plan(self, job: Job) -> _core.JobPlan:
        if self._closed:
            raise ExecutorClosedError("this Executor is closed")
        plan = job.plan
        if plan.needs_plugins:
            # Only a job naming something other than a built-in can name what is not there.
            # Discovery (once) registers the plugins with the runtime.
            (self._plugins or self.plugins).names.check(job)
        return plan

    def _discover(self) -> Plugins:
        found = discover_plugins(self.plugin_dirs)
        for path, why in found.refused:
            log.warning("plugin %s refused: %s", path, why)
            parsed = parse_plugin_name(path.name)
            if parsed is not None:
                self._runtime.refuse_plugin(parsed[0], parsed[1], f"{why} ({path})")
        for info in found.all():
            if is_builtin(info.kind, info.name):
                log.warning("%s plugin %s is ignored: the built-in %r wins", info.kind, info.path, info.name)
                del found.of_kind(info.kind)[info.name]
                continue
            self._runtime.register_plugin(info.kind, info.name, str(info.path))
        if found.all():
            name = "dkron-exec-plugin-logs"
            threading.Thread(target=self._forward_plugin_logs, name=name, daemon=True).start()
        return Plugins(found, self._runtime)

    def _forward_plugin_logs(self) -> None:
        """Plugin stdout/stderr lines to ``logging`` (``dkron_exec.plugin.NAME``), until close."""
        while True:
            lines = self._runtime.drain_logs(0.5)
            if lines is None:
                return
            for plugin, stream, line in lines:
                logger = logging.getLogger(f"dkron_exec.plugin.{plugin}" if plugin else "dkron_exec.plugin")
                head = line.lstrip().split(" ", 1)[0].upper()
                level = logging.WARNING if stream == "host" else _LOG_LEVELS.get(head, logging.INFO)
                logger.log(level, "%s", line, extra={"plugin": plugin, "stream": stream})
