"""Dkron jobs scheduled by APScheduler 3.x (the ``serve`` extra: ``.venv/bin/pip install '.[serve]'``
from a clone, else ``pip install 'apscheduler>=3.10,<4'``).

:class:`DkronTrigger` is an APScheduler trigger whose fire times are those of
:meth:`dkron_exec.Job.next_run`, so a job fires exactly when Dkron would fire it (seconds field,
``@every``, ``@at``, ``~``, ``CRON_TZ``/``TZ``, ``starts_at``/``expires_at``, ``disabled``):
the schedule language is not implemented twice. :func:`add_dkron_job` adds a job to a scheduler
so that each fire runs it through an :class:`~dkron_exec.Executor`::

    from apscheduler.schedulers.background import BackgroundScheduler
    from dkron_exec import Executor
    from dkron_exec.integrations.apscheduler import add_dkron_job

    scheduler = BackgroundScheduler()
    executor = Executor("executions.db")
    add_dkron_job(scheduler, executor, {"name": "tick", "schedule": "*/5 * * * * *", "command": "date"})
    scheduler.start()

Like Dkron's scheduler (robfig/cron), the next fire time is computed from the moment the
scheduler wakes up: a fire that comes late is run once, however late (missed fires are not
caught up), and the one after it is the schedule's next instant after that moment.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Protocol

from apscheduler.triggers.base import BaseTrigger

from ..errors import ConcurrencyError, ExecutorClosedError
from ..execution import Execution
from ..job import Job
from ..next_run import why_never
from ..schedule import Schedule

__all__ = [
    "DkronTrigger",
    "JobRunner",
    "SkipRun",
    "add_dkron_job",
    "add_dkron_jobs",
    "run_scheduled",
    "why_unscheduled",
]

log = logging.getLogger("dkron_exec.scheduler")

# The Executor decides whether a run may start (``concurrency: forbid`` is its rule, and may
# reach beyond this process); APScheduler must never refuse a fire on its own.
_UNLIMITED_INSTANCES = sys.maxsize


class SkipRun(Exception):
    """Raised by a runner to let a fire pass without a run; its message is logged."""


class JobRunner(Protocol):
    """What a fire needs: an :class:`~dkron_exec.Executor`, or anything that runs a job like it."""

    def run(self, job: Job) -> Execution: ...


def _as_job(job: Job | Mapping[str, Any] | str | bytes) -> Job:
    if isinstance(job, Job):
        return job
    if isinstance(job, (str, bytes)):
        return Job.from_json(job)
    return Job.from_dict(job)


class DkronTrigger(BaseTrigger):  # type: ignore[misc]  # APScheduler 3 ships no type hints
    """Fires when the Dkron job would: each fire time is ``job.next_run(...)``.

    The job is a :class:`~dkron_exec.Job` or a job document (validated here). A disabled job,
    one without a schedule, ``@manually``, a child job (``parent_job``) and a past ``@at`` never
    fire: the first call returns ``None``.
    """

    __slots__ = ("job",)

    def __init__(self, job: Job | Mapping[str, Any] | str | bytes) -> None:
        self.job = _as_job(job)

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime | None:
        # robfig/cron computes an entry's next time from the moment it woke up to run it, not
        # from the instant it was due: so after a late wake-up the next fire is after ``now``.
        after = now if previous_fire_time is None else max(previous_fire_time, now)
        return self.job.next_run(after)

    # APScheduler pickles triggers for persistent job stores; a Job holds a Rust plan, so the
    # document is what is kept.
    def __getstate__(self) -> dict[str, Any]:
        return {"version": 1, "job": self.job.to_dict()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        if state.get("version") != 1:
            raise ValueError(f"cannot restore a DkronTrigger of version {state.get('version')!r}")
        self.job = Job.from_dict(state["job"])

    def __str__(self) -> str:
        return f"dkron[{self.job.schedule}]"

    def __repr__(self) -> str:
        return f"<DkronTrigger job={self.job.name!r} schedule={self.job.schedule!r}>"


def why_unscheduled(job: Job) -> str | None:
    """Why the job will never be fired by a schedule, or ``None`` if it is scheduled."""
    if job.disabled:
        return "disabled"
    if job.parent_job:
        return f"a child of {job.parent_job!r} (runs after its parent, not on a schedule)"
    if not job.schedule:
        return "no schedule"
    if Schedule.parse(job.schedule, job_name=job.name, timezone=job.timezone).kind == "never":
        return "@manually"
    return None


def run_scheduled(runner: JobRunner, job: Job) -> Execution | None:
    """One fire: runs the job and logs the outcome. A run refused because the previous one is
    still going (``concurrency: forbid``) is skipped with a log line, as Dkron skips it;
    ``None`` then, and when the executor is closed."""
    try:
        execution = runner.run(job)
    except ConcurrencyError:
        log.info(
            "job %s: skipping this run, the previous one is still running (concurrency: forbid)", job.name
        )
        return None
    except (ExecutorClosedError, SkipRun) as exc:
        log.info("job %s: not run: %s", job.name, exc)
        return None
    except Exception:
        log.exception("job %s: the run failed to start", job.name)
        return None
    if execution.success:
        log.info("job %s: execution %s succeeded", job.name, execution.key)
    else:
        log.warning(
            "job %s: execution %s failed (exit code %s)%s",
            job.name,
            execution.key,
            execution.exit_code,
            f": {execution.error}" if execution.error else "",
        )
    return execution


def add_dkron_job(
    scheduler: Any,
    runner: JobRunner,
    job: Job | Mapping[str, Any] | str | bytes,
    **add_job_kwargs: Any,
) -> Any | None:
    """Schedules the job on an APScheduler 3 scheduler; each fire runs it through ``runner``
    (an :class:`~dkron_exec.Executor`). Returns the APScheduler job, whose id is the job's name.

    A job that would never fire (disabled, ``@manually``, no schedule, a child job, a past
    ``@at``) is not added, and any job already scheduled under its name is removed: ``None``
    then. A job of the same name is replaced. Fires are never refused by APScheduler
    (``max_instances`` is unlimited): ``concurrency: forbid`` is the Executor's to enforce, and a
    fire while a run is going is skipped with a log line. A late fire runs once, however late
    (``misfire_grace_time=None``, ``coalesce=True``). ``add_job_kwargs`` override these and
    are passed to ``scheduler.add_job`` (``executor=``, ``jobstore=``...). Each run occupies a
    thread of the scheduler's executor while it lasts: size its pool for the runs that overlap.
    """
    job = _as_job(job)
    reason = why_unscheduled(job)
    trigger = DkronTrigger(job)
    if reason is None and trigger.get_next_fire_time(None, datetime.now().astimezone()) is None:
        reason = why_never(job, datetime.now().astimezone()) or "no run left in its schedule"
    if reason is not None:
        log.info("job %s is not scheduled: %s", job.name, reason)
        if scheduler.get_job(job.name) is not None:
            scheduler.remove_job(job.name)
        return None
    options: dict[str, Any] = {
        "id": job.name,
        "name": job.displayname or job.name,
        "args": (runner, job),
        "max_instances": _UNLIMITED_INSTANCES,
        "misfire_grace_time": None,
        "coalesce": True,
        "replace_existing": True,
    }
    options.update(add_job_kwargs)
    return scheduler.add_job(run_scheduled, trigger, **options)


def add_dkron_jobs(
    scheduler: Any,
    runner: JobRunner,
    jobs: Iterable[Job | Mapping[str, Any] | str | bytes],
    **add_job_kwargs: Any,
) -> dict[str, Any]:
    """:func:`add_dkron_job` for each job; returns the scheduled ones by name (jobs that never
    fire are left out)."""
    scheduled = {}
    for item in jobs:
        job = _as_job(item)
        aps_job = add_dkron_job(scheduler, runner, job, **add_job_kwargs)
        if aps_job is not None:
            scheduled[job.name] = aps_job
    return scheduled
