"""Why a job has no next run, in words: on demand only is not the same as a schedule that matches
no date, and the CLI and ``serve`` must not say one for the other."""

from __future__ import annotations

from datetime import datetime, timezone

from .job import Job
from .schedule import Schedule

NO_DATE = "this schedule matches no date in the next five years"
"""The reason for a schedule that can never fire (``0 0 0 30 2 *``): likely a mistake."""


def why_never(job: Job, after: datetime) -> str | None:
    """Why ``job.next_run(after)`` is ``None``; ``None`` when the job has a next run."""
    if job.next_run(after) is not None:
        return None
    if job.disabled:
        return "the job is disabled"
    if job.parent_job:
        return f"a child job: it runs after {job.parent_job!r}, not on a schedule"
    if not job.schedule:
        return "on demand only: no schedule"
    schedule = Schedule.parse(job.schedule, job_name=job.name, timezone=job.timezone)
    if schedule.kind == "never":
        return "on demand only: @manually"
    if schedule.kind == "at":
        return "its @at time has passed"
    aware = after if after.tzinfo is not None else after.replace(tzinfo=timezone.utc)
    try:
        found = schedule.next(aware)  # a later starts_at only delays a run, it never removes one
    except (OverflowError, ValueError):
        return "its next run would be past year 9999"
    if found is None:
        # From far enough back that starts_at/expires_at and "now" do not matter.
        probe = schedule.next(datetime(2000, 1, 1, tzinfo=timezone.utc))
        return NO_DATE if probe is None else "no run left in its schedule"
    if job.expires_at is not None:
        return f"it expires at {job.expires_at.isoformat()}, before its next run"
    return "its next run would be past year 9999"
