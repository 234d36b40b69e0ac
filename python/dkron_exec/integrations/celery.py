"""Dkron jobs dispatched across machines by Celery (the ``celery`` extra: ``.venv/bin/pip install
'.[celery]'`` from a clone, else ``pip install 'celery>=5.3,<6'``).

Celery carries a job document to a worker; the worker runs it through its own
:class:`~dkron_exec.Executor`, which writes the execution to the store (a shared one, so every
node's executions are in one place). Celery only transports and schedules::

    from celery import Celery
    from dkron_exec.integrations.celery import beat_schedule, dispatch, install, load_job_folder

    app = Celery("jobs", broker="redis://localhost:6379/0", backend="redis://localhost:6379/1")
    app.conf.dkron_exec_store = "postgresql://dkron@db/dkron"   # or an SQLite path
    install(app)                                              # registers the task, closes at exit
    app.conf.beat_schedule = beat_schedule(load_job_folder("jobs/"))   # for `celery beat`

    dispatch(app, {"name": "report", "command": "make report", "tags": {"role": "web"}})

A worker is one Dkron node: start it with the queues of its tags
(``celery -A jobs worker -Q $(dkron-exec celery-queues --tag role=web)``; see
:mod:`dkron_exec.integrations.queues` for the mapping).

Choices, so that a run happens once and its retries are dkron_exec's:

* The task never retries (``max_retries=0``, no ``autoretry_for``): a job's ``retries`` run
  inside the Executor, each attempt recorded. A failed job is a *successful* task whose result
  says ``success: false``.
* ``acks_late=False``: the message is acknowledged when a worker takes it, so a worker that dies
  mid-run does not make the broker hand the job to another node (at most once, as Dkron: a
  node lost mid-run loses that run).
* A job tag's ``:N`` count (run on N nodes) is not supported yet: the job is sent once and one
  node of the queue runs it; :func:`dispatch` logs a warning.
* ``concurrency: forbid`` is the Executor's rule (cluster-wide with the PostgreSQL store): a run
  refused because another is in flight is reported as ``skipped`` in the task's result.
* Plugin names are resolved by the worker, which has its own plugins (:func:`dispatch` cannot know
  them): a worker that cannot resolve the job's executor or processor runs nothing and stores a
  failed execution whose ``error`` is the Executor's JobError ("processors.fils: unknown processor
  'fils': did you mean 'files'? ..."), so the refusal is in the store with the other runs.

Settings read from ``app.conf`` when a worker process runs its first job (one Executor per
process, closed by the ``worker_process_shutdown``/``worker_shutdown`` signals):
``dkron_exec_store`` (a path or URL; unset: ``$DKRON_EXEC_STORE`` or the default file),
``dkron_exec_node_name`` (unset: the worker's name, ``name@host``), ``dkron_exec_plugin_dirs``,
``dkron_exec_executor_options`` (other :class:`~dkron_exec.Executor` keyword arguments).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from time import time_ns
from typing import Any

import orjson
from celery.schedules import BaseSchedule, schedstate
from celery.signals import worker_process_shutdown, worker_shutdown

from ..errors import ConcurrencyError, JobError
from ..execution import Execution, datetime_from_ns, make_key
from ..executor import Executor, JobLike, as_job
from ..job import Job
from .queues import queue_for_tags, tag_count

__all__ = [
    "TASK_NAME",
    "DkronSchedule",
    "beat_schedule",
    "close_worker_executor",
    "dispatch",
    "executor_from_config",
    "install",
    "load_job_folder",
    "run_document",
]

log = logging.getLogger("dkron_exec.celery")

TASK_NAME = "dkron_exec.run_job"
"""The task's name: clients send to it by name (they need not import the worker's code)."""

# How long beat may sleep for an entry that will not fire again (beat caps it by its
# beat_max_interval anyway).
_IDLE_SECONDS = 3600.0


# -- the worker's Executor -------------------------------------------------------------------


def executor_from_config(conf: Mapping[str, Any], hostname: str | None) -> Executor:
    """The Executor a worker process runs jobs with, from the app's ``dkron_exec_*`` settings."""
    options = dict(conf.get("dkron_exec_executor_options") or {})
    return Executor(
        conf.get("dkron_exec_store") or None,
        node_name=conf.get("dkron_exec_node_name") or hostname or None,
        plugin_dirs=conf.get("dkron_exec_plugin_dirs") or (),
        **options,
    )


class _ProcessExecutor:
    """One Executor per process, made at first need. A forked child (Celery's prefork pool)
    makes its own: the parent's engine threads do not exist in the child."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._executor: Executor | None = None
        self._pid = 0

    def get(self, conf: Mapping[str, Any], hostname: str | None) -> Executor:
        with self._lock:
            if self._executor is None or self._pid != os.getpid():
                self._executor = executor_from_config(conf, hostname)
                self._pid = os.getpid()
            return self._executor

    def close(self) -> None:
        with self._lock:
            executor, self._executor = self._executor, None
            if executor is not None and self._pid == os.getpid():
                executor.close()


_worker_executor = _ProcessExecutor()


def close_worker_executor(**_: Any) -> None:
    """Closes this process's Executor (connected to the worker shutdown signals by :func:`install`)."""
    _worker_executor.close()


# -- the task ----------------------------------------------------------------------------------


def run_document(executor: Executor, document: Mapping[str, Any]) -> dict[str, Any]:
    """Runs a job document and returns the task's result: a small JSON object (the execution
    itself is in the store, under ``job`` and ``key``). A job this worker cannot run as written
    (a processor or executor name it cannot resolve) is stored as a failed execution saying why."""
    job = Job.from_dict(document)
    try:
        execution = executor.run(job)
    except JobError as exc:
        log.error("job %s: refused by this worker: %s", job.name, exc)
        execution = _refused(executor, job, str(exc))
    except ConcurrencyError as exc:
        log.info("job %s: skipped, the previous run is still going (concurrency: forbid)", job.name)
        return {
            "job": job.name, "key": None, "node": executor.node_name, "success": False,
            "exit_code": None, "attempt": 0, "error": str(exc), "skipped": True,
        }  # fmt: skip
    return {
        "job": job.name,
        "key": execution.key,
        "node": execution.node_name,
        "success": execution.success,
        "exit_code": execution.exit_code,
        "attempt": execution.attempt,
        "error": execution.error,
        "skipped": False,
    }


def _refused(executor: Executor, job: Job, why: str) -> Execution:
    """The stored record of a job the worker refused: failed, nothing ran (no exit code)."""
    now = time_ns()
    execution = Execution(
        job_name=job.name,
        started_at=datetime_from_ns(now),
        finished_at=datetime_from_ns(now),
        success=False,
        output=f"{why}\n".encode(),
        node_name=executor.node_name,
        group=now,
        error=why,
        key=make_key(now, executor.node_name),
    )
    executor.store.put(execution)
    return execution


def install(app: Any) -> Any:
    """Registers the task (:data:`TASK_NAME`) on the Celery app and closes the worker's
    Executor at shutdown; returns the task. Call it where the worker imports the app."""

    @app.task(  # type: ignore[untyped-decorator]
        name=TASK_NAME,
        bind=True,
        max_retries=0,  # the job's own retries run in the Executor
        acks_late=False,  # at most once: a lost worker's job is not redelivered
        reject_on_worker_lost=False,
    )
    def run_job(task: Any, document: dict[str, Any]) -> dict[str, Any]:
        executor = _worker_executor.get(task.app.conf, task.request.hostname)
        return run_document(executor, document)

    # A prefork child gets worker_process_shutdown; the solo/threads pools run jobs in the main
    # process, which gets worker_shutdown. Closing twice is harmless.
    worker_process_shutdown.connect(close_worker_executor, weak=False, dispatch_uid="dkron_exec.close")
    worker_shutdown.connect(close_worker_executor, weak=False, dispatch_uid="dkron_exec.close_main")
    return run_job


def dispatch(app: Any, job: JobLike, **send_options: Any) -> Any:
    """Sends the job to the queue of its tags; returns Celery's AsyncResult. ``send_options`` go
    to ``app.send_task`` (``queue=`` overrides the tags').

    Checked here, before sending: the job document itself (every field, the schedule, the
    built-in executor's and processors' configs): a JobError is raised and nothing is sent.
    Left to the worker: the executor and processor names, which resolve against the worker's own
    plugins (this process may have other plugins, or none); a worker that cannot resolve one
    stores a failed execution with the reason (the JobError's text), and the task's result says
    ``success: false`` with that ``error``."""
    job = as_job(job)
    count = tag_count(job.tags)
    if count > 1:
        log.warning(
            "job %s: its tags ask for %d nodes; fan-out is not supported, one node runs it",
            job.name,
            count,
        )
    send_options.setdefault("queue", queue_for_tags(job.tags))
    return app.send_task(TASK_NAME, args=(job.to_dict(),), **send_options)


# -- beat ------------------------------------------------------------------------------------------


class DkronSchedule(BaseSchedule):  # type: ignore[misc]
    """A Celery beat schedule whose fire times are :meth:`Job.next_run`'s (Dkron's semantics).

    Like Dkron's scheduler, the next fire is computed from the moment the entry last ran (beat
    sets ``last_run_at`` to the time it sent the task), so a late fire runs once and missed ones
    are not caught up. A job that never fires (disabled, ``@manually``, a child job, past its
    ``expires_at``) is never due.
    """

    def __init__(self, job: JobLike, nowfun: Any = None, app: Any = None) -> None:
        super().__init__(nowfun=nowfun, app=app)
        self.job = as_job(job)

    def _aware(self, moment: datetime) -> datetime:
        # Celery hands naive datetimes in UTC (enable_utc, its default).
        return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)

    def remaining_estimate(self, last_run_at: datetime) -> timedelta | None:
        """Time from now to the fire after ``last_run_at`` (negative when overdue); None if never."""
        due = self.job.next_run(self._aware(last_run_at))
        return None if due is None else due - self._aware(self.now())

    def is_due(self, last_run_at: datetime) -> schedstate:
        now = self._aware(self.now())
        due = self.job.next_run(self._aware(last_run_at))
        if due is None:
            return schedstate(is_due=False, next=_IDLE_SECONDS)
        if due > now:
            return schedstate(is_due=False, next=(due - now).total_seconds())
        following = self.job.next_run(now)
        wait = _IDLE_SECONDS if following is None else (following - now).total_seconds()
        return schedstate(is_due=True, next=wait)

    # Beat keeps entries in a shelve (pickle): a Job holds a Rust plan, so the document is kept.
    def __reduce__(self) -> tuple[Any, ...]:
        return (self.__class__, (self.job.to_dict(), self.nowfun))

    def _key(self) -> bytes:
        return orjson.dumps(self.job.to_dict(), option=orjson.OPT_SORT_KEYS)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DkronSchedule):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"<DkronSchedule job={self.job.name!r} schedule={self.job.schedule!r}>"


def beat_schedule(jobs: Iterable[JobLike], *, now: datetime | None = None) -> dict[str, dict[str, Any]]:
    """``app.conf.beat_schedule`` entries for the jobs: each fires :data:`TASK_NAME` with the
    job's document, on the queue of its tags, at :class:`DkronSchedule`'s times. Entries are
    named ``dkron:JOB_NAME``; jobs that will not fire after ``now`` (default: now) are left out."""
    moment = now or datetime.now(timezone.utc)
    entries: dict[str, dict[str, Any]] = {}
    for item in jobs:
        job = as_job(item)
        if job.next_run(moment) is None:
            log.info("job %s is not scheduled: it will not fire (disabled, @manually, child, or expired)",
                     job.name)  # fmt: skip
            continue
        entries[f"dkron:{job.name}"] = {
            "task": TASK_NAME,
            "schedule": DkronSchedule(job),
            "args": (job.to_dict(),),
            "options": {"queue": queue_for_tags(job.tags)},
        }
    return entries


def load_job_folder(folder: str | os.PathLike[str]) -> list[Job]:
    """The jobs of a folder's ``*.json`` files, in name order (as ``dkron-exec serve`` reads
    them); a bad file raises its JobError, naming the file."""
    jobs = []
    for path in sorted(Path(folder).glob("*.json")):
        try:
            jobs.append(Job.from_json(path.read_bytes()))
        except JobError as exc:
            raise JobError(exc.field, exc.value, f"{exc.reason} (in {path})") from exc
    return jobs
