"""One call of ``Executor.run``: the attempts of a job, each run by its executor, passed through
the job's processors and stored; the retry backoff; the shell executor's spec cache."""

from __future__ import annotations

import asyncio
import functools
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import _core
from ._loopwait import LoopWaiter, LoopWaiters
from .chain import run_chain
from .durations import parse_go_duration
from .execution import Execution, datetime_from_ns, make_key
from .job import Job, ShellConfig
from .plugin_host import OutputCallback
from .processors import ProcessContext
from .shell import ShellSetupError, process_spec
from .spool import spool_limit

if TYPE_CHECKING:
    from .executor import Executor


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


class Attempts:
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
        # Executor.cancel() may come from any thread: it sets the flag and kills what runs now.
        self._cancel_lock = threading.Lock()
        self._cancelled = False
        self._cancel_current: Callable[[], None] | None = None

    def cancel(self) -> None:
        """Kills the attempt running now (or the next one as it starts) and stops retries."""
        with self._cancel_lock:
            self._cancelled = True
            current = self._cancel_current
        if current is not None:
            current()

    def _cancellable(self, cancel: Callable[[], None] | None) -> None:
        """Names what cancel() must call for the attempt now starting (None once it ended)."""
        with self._cancel_lock:
            self._cancel_current = cancel
            already = self._cancelled
        if already and cancel is not None:
            cancel()

    def run_shell(self) -> Execution:
        """The current attempt of a shell job, run on this thread by the engine (no thread hop).

        A signal handler that raises while the job runs (Ctrl-C) gets the job killed; the
        execution is stored as interrupted, then the exception propagates.
        """
        spec = self._shell_spec()
        if spec is None:
            return self.finish_unstarted()
        token = _core.CancelToken()
        self._cancellable(token.cancel)
        try:
            outcome, raised = self.executor._engine.run(spec, token)
        finally:
            self._cancellable(None)
        execution = self.finish(outcome, interrupted=raised is not None)
        if raised is not None:
            raise raised
        return execution

    def run_handle(self) -> Execution:
        """The current attempt through a run handle (executor plugins), waited on here."""
        handle = self.start()
        if handle is None:
            return self.finish_unstarted()
        self._cancellable(handle.cancel)
        try:
            outcome = handle.wait()
        except BaseException:
            self._abandon(handle)
            raise
        finally:
            self._cancellable(None)
        assert outcome is not None
        return self.finish(outcome)

    async def run_async(self, loop: asyncio.AbstractEventLoop, waiters: LoopWaiters) -> Execution:
        """The current attempt, awaited without blocking the event loop."""
        waiter: LoopWaiter | None = None
        if self.job.executor == "shell":
            # Shell jobs report through the loop's one completion queue: no descriptor per job.
            waiter = waiters.for_loop(loop)
            token, done = waiter.register()
            handle = self.start(waiter.queue, token)
        else:
            handle = self.start()
        if handle is None:
            if waiter is not None:
                waiter.forget(token)
            return self.finish_unstarted()
        self._cancellable(handle.cancel)
        try:
            if waiter is not None:
                await done
                outcome = handle.result()
            else:
                outcome = await wait_readable(loop, handle)
        except BaseException:
            # Cancelled task: the job must not outlive it.
            if waiter is not None:
                waiter.forget(token)
            self._abandon(handle)
            raise
        finally:
            self._cancellable(None)
        if self.job.processors:
            # Processors may block (a syslog connect, a large file): off the loop.
            return await asyncio.to_thread(self.finish, outcome)
        return self.finish(outcome)  # one SQLite insert

    def _abandon(self, handle: Any) -> None:
        """The caller gave up (Ctrl-C, a cancelled task): kill the job, record it, move on."""
        handle.cancel()
        late = handle.wait(5.0)
        if late is not None:
            self.finish(late, interrupted=True)

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
        if execution.success or self.attempt > self.job.retries or self.executor._closed or self._cancelled:
            return None
        elapsed = (time.time_ns() - self._started_ns) / 1e9
        delay = retry_delay(self.executor.retry_backoff, self.attempt, elapsed)
        self.attempt += 1
        return delay


async def wait_readable(loop: asyncio.AbstractEventLoop, handle: Any) -> Any:
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
