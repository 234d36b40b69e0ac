"""The APScheduler integration: DkronTrigger's fire times are Job.next_run's (fake clock), and a
real BackgroundScheduler runs jobs through a real Executor at the instants the trigger gave."""

from __future__ import annotations

import logging
import pickle
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from apscheduler.events import EVENT_JOB_SUBMITTED, JobSubmissionEvent
from apscheduler.schedulers.background import BackgroundScheduler

from dkron_exec import Executor, Job
from dkron_exec.integrations.apscheduler import DkronTrigger, add_dkron_job, add_dkron_jobs
from jobs import shell_job

UTC = timezone.utc
T0 = datetime(2026, 3, 28, 23, 59, 50, 700000, tzinfo=UTC)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def wait_for(predicate: Callable[[], bool], timeout: float = 60.0) -> None:
    """Polls until true; the timeout is only a safety net for a hung test."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def trigger_times(trigger: DkronTrigger, now: datetime, count: int) -> list[datetime]:
    """Fire times as APScheduler asks for them when every fire is on time (fake clock)."""
    out: list[datetime] = []
    fire = trigger.get_next_fire_time(None, now)
    while fire is not None and len(out) < count:
        out.append(fire)
        fire = trigger.get_next_fire_time(fire, fire)
    return out


def next_run_times(job: Job, now: datetime, count: int) -> list[datetime]:
    out: list[datetime] = []
    fire = job.next_run(now)
    while fire is not None and len(out) < count:
        out.append(fire)
        fire = job.next_run(fire)
    return out


END = "no more fires"
# (job fields, start, the first fire times as Dkron computes them, END when there are no more)
CASES: list[tuple[dict[str, Any], datetime, list[str]]] = [
    (  # seconds field
        {"schedule": "*/15 * * * * *"},
        T0,
        ["2026-03-29T00:00:00Z", "2026-03-29T00:00:15Z", "2026-03-29T00:00:30Z", "2026-03-29T00:00:45Z"],
    ),
    (  # @every: from the start truncated to the second, then constant
        {"schedule": "@every 2s"},
        T0,
        ["2026-03-28T23:59:52Z", "2026-03-28T23:59:54Z", "2026-03-28T23:59:56Z", "2026-03-28T23:59:58Z"],
    ),
    ({"schedule": "@at 2026-03-29T00:00:30Z"}, T0, ["2026-03-29T00:00:30Z", END]),
    (  # ~: the code points of "tilde" sum to 530: second and minute 530 % 60 = 50
        {"name": "tilde", "schedule": "~ ~ * * * *"},
        T0,
        ["2026-03-29T00:50:50Z", "2026-03-29T01:50:50Z", "2026-03-29T02:50:50Z"],
    ),
    (  # CRON_TZ across Berlin's spring-forward: 02:00:30 does not exist on 2026-03-29
        {"schedule": "CRON_TZ=Europe/Berlin 30 0 2 * * *"},
        utc("2026-03-27T12:00:00+00:00"),
        ["2026-03-28T01:00:30Z", "2026-03-30T00:00:30Z", "2026-03-31T00:00:30Z"],
    ),
    (  # the job's timezone across New York's fall-back: 01:30 happens twice on 2026-11-01
        {"schedule": "0 30 1 * * *", "timezone": "America/New_York"},
        utc("2026-10-31T12:00:00+00:00"),
        ["2026-11-01T05:30:00Z", "2026-11-01T06:30:00Z", "2026-11-02T06:30:00Z"],
    ),
    (  # starts_at / expires_at: both ends count as inside
        {
            "schedule": "*/10 * * * * *",
            "starts_at": "2026-03-29T00:00:10Z",
            "expires_at": "2026-03-29T00:00:30Z",
        },
        T0,
        ["2026-03-29T00:00:10Z", "2026-03-29T00:00:20Z", "2026-03-29T00:00:30Z", END],
    ),
    ({"schedule": "*/10 * * * * *", "disabled": True}, T0, [END]),
    ({"schedule": "@manually"}, T0, [END]),
    ({"schedule": "@at 2026-03-28T00:00:00Z"}, T0, [END]),  # in the past
]


@pytest.mark.parametrize(("fields", "start", "expected"), CASES, ids=[c[0]["schedule"] for c in CASES])
def test_trigger_fires_when_dkron_would(fields: dict[str, Any], start: datetime, expected: list[str]) -> None:
    fields = dict(fields)
    doc = shell_job(fields.pop("name", "sched"), "true", **fields)
    job = Job.from_dict(doc)
    trigger = DkronTrigger(doc)
    times = trigger_times(trigger, start, 6)
    instants = [utc(t) for t in expected if t != END]
    assert times[: len(instants)] == instants
    if expected[-1] == END:
        assert len(times) == len(instants)
    assert times == next_run_times(job, start, 6)


def test_a_late_wake_up_is_caught_up_once_like_robfig() -> None:
    trigger = DkronTrigger(shell_job("late", "true", schedule="@every 2s"))
    due = utc("2026-03-28T23:59:52+00:00")
    woke = due + timedelta(seconds=5, milliseconds=500)
    # The fires at :54 and :56 were missed: the next one is counted from the wake-up.
    assert trigger.get_next_fire_time(due, woke) == utc("2026-03-28T23:59:59+00:00")
    cron = DkronTrigger(shell_job("late", "true", schedule="*/15 * * * * *"))
    assert cron.get_next_fire_time(utc("2026-03-29T00:00:00+00:00"), utc("2026-03-29T00:00:31+00:00")) == utc(
        "2026-03-29T00:00:45+00:00"
    )


def test_fire_times_are_in_the_scheduler_time_zone() -> None:
    berlin = T0.astimezone(ZoneInfo("Europe/Berlin"))
    fire = DkronTrigger(shell_job("tz", "true", schedule="*/15 * * * * *")).get_next_fire_time(None, berlin)
    assert fire is not None and fire.tzinfo == berlin.tzinfo and fire == utc("2026-03-29T00:00:00+00:00")


def test_trigger_survives_pickling_for_persistent_job_stores() -> None:
    trigger = DkronTrigger(shell_job("kept", "true", schedule="~ * * * * *", timezone="Asia/Tokyo"))
    back = pickle.loads(pickle.dumps(trigger))
    assert back.job == trigger.job
    assert trigger_times(back, T0, 5) == trigger_times(trigger, T0, 5)
    assert "~ * * * * *" in str(back)


# ---------------------------------------------------------------------------------------------- scheduler


@pytest.fixture
def scheduler() -> Iterator[BackgroundScheduler]:
    sched = BackgroundScheduler(timezone=UTC)
    yield sched
    if sched.running:
        sched.shutdown(wait=False)


@pytest.fixture
def store_executor(tmp_path: Path) -> Iterator[Executor]:
    with Executor(tmp_path / "store.db", node_name="test-node") as ex:
        yield ex


def test_jobs_that_never_fire_are_not_scheduled(
    scheduler: BackgroundScheduler, store_executor: Executor
) -> None:
    scheduler.start(paused=True)
    docs = [
        shell_job("on", "true", schedule="*/15 * * * * *"),
        shell_job("off", "true", schedule="*/15 * * * * *", disabled=True),
        shell_job("manual", "true", schedule="@manually"),
        shell_job("none", "true"),
        shell_job("child", "true", schedule="* * * * * *", parent_job="on"),
        shell_job("past", "true", schedule="@at 2020-01-01T00:00:00Z"),
    ]
    before = datetime.now(UTC)
    scheduled = add_dkron_jobs(scheduler, store_executor, docs)
    after = datetime.now(UTC)
    assert list(scheduled) == ["on"]
    assert [j.id for j in scheduler.get_jobs()] == ["on"]
    job = Job.from_dict(docs[0])
    assert scheduled["on"].next_run_time in (job.next_run(before), job.next_run(after))
    # A job changed to disabled is taken off the scheduler.
    assert add_dkron_job(scheduler, store_executor, {**docs[0], "disabled": True}) is None
    assert scheduler.get_jobs() == []


def test_a_seconds_schedule_fires_at_its_instants(
    scheduler: BackgroundScheduler, store_executor: Executor
) -> None:
    scheduled: dict[str, list[datetime]] = {"every": [], "even": []}
    lock = threading.Lock()

    def on_submit(event: JobSubmissionEvent) -> None:
        with lock:
            scheduled[event.job_id].extend(event.scheduled_run_times)

    scheduler.add_listener(on_submit, EVENT_JOB_SUBMITTED)
    docs = {
        "every": shell_job("every", "echo tick", schedule="* * * * * *"),
        "even": shell_job("even", "echo tock", schedule="*/2 * * * * *"),
    }
    add_dkron_jobs(scheduler, store_executor, docs.values())
    scheduler.start()
    wait_for(
        lambda: len(store_executor.executions("even")) >= 3 and len(store_executor.executions("every")) >= 3
    )
    scheduler.shutdown(wait=True)

    for name, doc in docs.items():
        job = Job.from_dict(doc)
        with lock:
            times = list(scheduled[name])
        executions = sorted(store_executor.executions(name), key=lambda e: e.started_at)
        assert len(times) == len(executions) >= 3
        assert times == sorted(set(times))
        for at, execution in zip(times, executions, strict=True):
            # Each fire is an instant of the schedule, and the run starts once it is due.
            assert job.next_run(at - timedelta(microseconds=1)) == at
            assert at.microsecond == 0 and (name == "every" or at.second % 2 == 0)
            assert execution.started_at >= at - timedelta(milliseconds=1)
            assert execution.success and execution.output == (b"tick\n" if name == "every" else b"tock\n")


def _fire_now(scheduler: BackgroundScheduler, job_id: str) -> None:
    scheduler.modify_job(job_id, next_run_time=datetime.now(UTC))


def test_forbid_skips_a_fire_while_the_previous_run_goes(
    scheduler: BackgroundScheduler,
    store_executor: Executor,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="dkron_exec.scheduler")
    started = tmp_path / "started"
    doc = shell_job("single", f"touch {started}; sleep 60", schedule="@every 1h", concurrency="forbid")
    add_dkron_job(scheduler, store_executor, doc)
    scheduler.start()
    _fire_now(scheduler, "single")
    wait_for(started.exists)
    _fire_now(scheduler, "single")
    wait_for(lambda: any("skipping this run" in r.getMessage() for r in caplog.records))
    assert store_executor.running() == 1
    assert store_executor.cancel("single") == 1
    wait_for(lambda: len(store_executor.executions("single")) == 1)
    skipped = [r for r in caplog.records if "skipping this run" in r.getMessage()]
    assert len(skipped) == 1 and "single" in skipped[0].getMessage()
    assert "concurrency: forbid" in skipped[0].getMessage()


def test_allow_lets_fires_overlap(
    scheduler: BackgroundScheduler, store_executor: Executor, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    doc = shell_job(
        "overlap", f"mktemp {runs}/run.XXXXXX; sleep 60", schedule="@every 1h", concurrency="allow"
    )
    aps_job = add_dkron_job(scheduler, store_executor, doc)
    assert aps_job is not None and aps_job.max_instances > 2
    scheduler.start()
    _fire_now(scheduler, "overlap")
    wait_for(lambda: len(list(runs.iterdir())) == 1)
    _fire_now(scheduler, "overlap")
    wait_for(lambda: len(list(runs.iterdir())) == 2)
    assert store_executor.running() == 2
    assert store_executor.cancel("overlap") == 2
    wait_for(lambda: len(store_executor.executions("overlap")) == 2)
