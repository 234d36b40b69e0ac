"""Celery integration: jobs dispatched by tags to real workers (separate processes, one per
"node") over a real Redis broker started here, every execution in one shared store; beat
schedules with Dkron's semantics (a fake clock, and a short real beat run); retries not doubled.
Waits are on results and the store; their timeouts are only safety nets for a hung test."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

celery = pytest.importorskip("celery")

from dkron_exec import Execution, Executor  # noqa: E402
from dkron_exec.cli import main as cli_main  # noqa: E402
from dkron_exec.errors import JobError  # noqa: E402
from dkron_exec.integrations.celery import (  # noqa: E402
    TASK_NAME,
    DkronSchedule,
    beat_schedule,
    dispatch,
    install,
    load_job_folder,
)
from dkron_exec.integrations.queues import (  # noqa: E402
    DEFAULT_QUEUE,
    queue_for_tags,
    split_tag_value,
    tag_count,
    worker_queues,
)
from jobs import shell_job  # noqa: E402
from redis_server import RedisServer, redis_server_path  # noqa: E402

TESTS = Path(__file__).parent
SAFETY = 120.0  # seconds: only for a hung test, never the expected time
UTC = timezone.utc

# The two "nodes": their Celery names and Dkron tags.
NODE_A = ("node-a@localhost", {"role": "web", "dc": "eu"})
NODE_B = ("node-b@localhost", {"role": "db", "dc": "eu"})


def wait_for(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + SAFETY
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


# -- tags -> queues (no broker) -------------------------------------------------------------------


def test_job_tags_name_one_queue_deterministically() -> None:
    assert queue_for_tags({}) == DEFAULT_QUEUE == "dkron"
    assert queue_for_tags({"role": "web"}) == "dkron.role.web"
    assert queue_for_tags({"role": "web:2"}) == "dkron.role.web"
    assert queue_for_tags({"role": "web", "dc": "eu"}) == queue_for_tags({"dc": "eu", "role": "web"})
    assert queue_for_tags({"role": "web", "dc": "eu"}) == "dkron.dc.eu+role.web"
    # Separators inside keys and values are escaped: these two tag sets must not share a queue.
    assert queue_for_tags({"a.b": "c"}) != queue_for_tags({"a": "b.c"})
    assert queue_for_tags({"a": "b+c.d"}) == "dkron.a.b%2Bc%2Ed"


def test_tag_counts_follow_dkron() -> None:
    assert split_tag_value("role", "web:2") == ("web", 2)
    assert split_tag_value("role", "web") == ("web", 1)
    assert split_tag_value("role", "a:b") == ("a:b", 1)
    assert tag_count({"role": "web:3", "dc": "eu"}) == 3
    assert tag_count({}) == 1
    with pytest.raises(JobError, match=r"tags\.role.*at least 1"):
        split_tag_value("role", "web:0")


def test_a_worker_listens_to_every_subset_of_its_tags() -> None:
    queues = worker_queues({"role": "web", "dc": "eu"})
    assert queues == ["dkron", "dkron.dc.eu", "dkron.role.web", "dkron.dc.eu+role.web"]
    # Every job whose tags the worker has is on one of its queues; no other job is.
    for job_tags in ({}, {"role": "web"}, {"dc": "eu:2"}, {"dc": "eu", "role": "web"}):
        assert queue_for_tags(job_tags) in queues
    for job_tags in ({"role": "db"}, {"role": "web", "zone": "a"}):
        assert queue_for_tags(job_tags) not in queues
    with pytest.raises(JobError, match="at most 8 tags"):
        worker_queues({f"k{i}": "v" for i in range(9)})


def test_celery_queues_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["celery-queues", "--tag", "role=web", "--tag", "dc=eu"]) == 0
    assert capsys.readouterr().out == "dkron,dkron.dc.eu,dkron.role.web,dkron.dc.eu+role.web\n"
    assert cli_main(["celery-queues", "--tag", "role"]) == 2
    assert "--tag: must be KEY=VALUE" in capsys.readouterr().err


# -- the task's options (no broker) -------------------------------------------------------------


def test_the_task_never_retries_and_acks_on_receipt() -> None:
    app = celery.Celery("options-test")
    task = install(app)
    assert task.name == TASK_NAME
    assert task.max_retries == 0
    assert not task.acks_late
    assert not getattr(task, "autoretry_for", ())


# -- beat schedules (fake clock) ------------------------------------------------------------------


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def at(second: int, minute: int = 0) -> datetime:
    return datetime(2030, 1, 1, 12, minute, second, tzinfo=UTC)


def test_beat_schedule_fires_at_next_run_instants() -> None:
    clock = Clock(at(3))
    sched = DkronSchedule({"name": "tick", "schedule": "*/5 * * * * *", "command": "true"}, nowfun=clock)
    # Last ran at :01, the next instant is :05.
    assert sched.is_due(at(1)) == (False, 2.0)
    assert sched.remaining_estimate(at(1)) == timedelta(seconds=2)
    clock.now = at(5)
    assert sched.is_due(at(1)) == (True, 5.0)
    # Beat records the run at :05 (last_run_at); nothing is due until :10.
    assert sched.is_due(at(5)) == (False, 5.0)
    # Late by 12 s: one fire, not three; the next is the schedule's next instant after now.
    clock.now = at(17)
    assert sched.is_due(at(5)) == (True, 3.0)
    # Naive times are UTC, as Celery hands them.
    assert sched.is_due(at(17).replace(tzinfo=None)) == (False, 3.0)


def test_beat_schedule_every_and_window_and_never() -> None:
    clock = Clock(at(0, minute=1))
    every = DkronSchedule({"name": "e", "schedule": "@every 10s", "command": "true"}, nowfun=clock)
    # @every counts from the last run: due at exactly last + 10 s.
    assert every.is_due(at(50)) == (True, 10.0)
    assert every.is_due(at(55)) == (False, 5.0)
    ending = {"name": "w", "schedule": "* * * * * *", "command": "true", "expires_at": "2030-01-01T12:00:30Z"}
    assert not DkronSchedule(ending, nowfun=clock).is_due(at(40)).is_due
    for doc in (
        {"name": "d", "schedule": "* * * * * *", "command": "true", "disabled": True},
        {"name": "m", "schedule": "@manually", "command": "true"},
        {"name": "c", "schedule": "* * * * * *", "command": "true", "parent_job": "p"},
    ):
        sched = DkronSchedule(doc, nowfun=clock)
        assert not sched.is_due(at(0)).is_due
        assert sched.remaining_estimate(at(0)) is None


def test_beat_schedule_survives_pickling() -> None:
    sched = DkronSchedule({"name": "tick", "schedule": "@every 5s", "command": "true", "tags": {"a": "b"}})
    back = pickle.loads(pickle.dumps(sched))
    assert back == sched and hash(back) == hash(sched)
    assert back.job.to_dict() == sched.job.to_dict()


def write_job(folder: Path, file: str, doc: dict[str, Any]) -> None:
    (folder / file).write_text(json.dumps(doc))


def test_beat_entries_from_a_job_folder(tmp_path: Path) -> None:
    write_job(
        tmp_path, "a.json", shell_job("web-report", "true", schedule="@every 1m", tags={"role": "web:2"})
    )
    write_job(tmp_path, "b.json", shell_job("off", "true", schedule="@every 1m", disabled=True))
    write_job(tmp_path, "c.json", shell_job("any", "true", schedule="0 0 * * * *"))
    (tmp_path / "notes.txt").write_text("not a job")
    entries = beat_schedule(load_job_folder(tmp_path))
    assert sorted(entries) == ["dkron:any", "dkron:web-report"]
    web = entries["dkron:web-report"]
    assert web["task"] == TASK_NAME
    assert web["options"] == {"queue": "dkron.role.web"}
    assert web["args"][0]["name"] == "web-report"
    assert isinstance(web["schedule"], DkronSchedule)
    assert entries["dkron:any"]["options"] == {"queue": "dkron"}
    (tmp_path / "d.json").write_text('{"name": "bad", "retries": -1}')
    with pytest.raises(JobError, match=r"retries.*d\.json"):
        load_job_folder(tmp_path)


def test_dispatch_validates_before_sending() -> None:
    app = celery.Celery("dispatch-test", broker="memory://")
    with pytest.raises(JobError, match="retries"):
        dispatch(app, {"name": "bad", "command": "true", "retries": "x"})


# -- real broker, real workers -----------------------------------------------------------------


class Cluster:
    """Redis, two worker processes (node A: prefork pool, node B: solo pool) and a client app;
    the workers share ``store`` (an SQLite file or a PostgreSQL URL)."""

    def __init__(self, root: Path, redis: RedisServer, store: str) -> None:
        self.root = root
        self.redis = redis
        self.store = store
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])),
            "TEST_BROKER_URL": redis.url(0),
            "TEST_BACKEND_URL": redis.url(1),
            "TEST_DKRON_STORE": store,
        }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.app = celery.Celery("client", broker=redis.url(0), backend=redis.url(1))
        self.reader = Executor(store, node_name="test-reader")

    def start(self, name: str, args: list[str], env: dict[str, str] | None = None) -> Path:
        log = self.root / f"{name}.log"
        with open(log, "wb") as out:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "celery_app", *args],
                cwd=TESTS, env={**self.env, **(env or {})}, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        return log

    def start_worker(self, node: tuple[str, dict[str, str]], pool: str) -> None:
        name, tags = node
        log = self.start(name, [
            "worker", "-n", name, "-Q", ",".join(worker_queues(tags)), "--pool", pool, "-c", "1",
            "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", "INFO",
        ])  # fmt: skip
        proc = self.procs[name]
        wait_for(lambda: proc.poll() is not None or f"{name} ready." in log.read_text(errors="replace"),
                 f"{name} to start")  # fmt: skip
        assert proc.poll() is None, log.read_text(errors="replace")

    def stop(self, name: str) -> int:
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGTERM)  # Celery's warm shutdown
        try:
            return proc.wait(timeout=SAFETY)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise

    def run(self, job: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = dispatch(self.app, job).get(timeout=SAFETY)
        return result

    def executions(self, job_name: str) -> list[Execution]:
        return self.reader.executions(job_name)

    def close(self) -> None:
        for name in list(self.procs):
            self.stop(name)
        self.reader.close()
        self.app.close()


def _store_for(kind: str, root: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield str(root / "shared.db")
        return
    # PostgreSQL: once the PostgreSQL store and its test server helper are both in the tree.
    pytest.importorskip("dkron_exec.postgres_store")
    postgres = pytest.importorskip("postgres")
    binaries = postgres.bin_dir()
    if binaries is None:
        pytest.skip("PostgreSQL's server binaries are not installed (scripts/install-system-deps.sh)")
    server = postgres.PostgresServer(binaries)
    try:
        server.start()
        yield server.create_database("celery_test")
    finally:
        server.close()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    binary = redis_server_path()
    if binary is None:
        message = "redis-server is not installed: run scripts/install-system-deps.sh"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    root = tmp_path_factory.mktemp(f"celery-{request.param}")
    stores = _store_for(request.param, root)
    store = next(stores)
    redis = RedisServer(binary, root / "redis")
    redis.start()
    cluster = Cluster(root, redis, store)
    try:
        cluster.start_worker(NODE_A, "prefork")
        cluster.start_worker(NODE_B, "solo")
        yield cluster
        # Both workers stop cleanly on SIGTERM (the Executor is closed by the shutdown signals).
        for name in (NODE_A[0], NODE_B[0]):
            assert cluster.stop(name) == 0, (root / f"{name}.log").read_text(errors="replace")
    finally:
        cluster.close()
        redis.stop()
        stores.close()


def test_tagged_jobs_land_on_their_node(cluster: Cluster) -> None:
    cases = [
        ("web-job", {"role": "web"}, NODE_A[0]),
        ("db-job", {"role": "db"}, NODE_B[0]),
        ("web-eu-job", {"role": "web", "dc": "eu"}, NODE_A[0]),
        ("db-eu-job", {"dc": "eu", "role": "db"}, NODE_B[0]),
    ]
    results = [dispatch(cluster.app, shell_job(name, f"echo {name}", tags=tags)) for name, tags, _ in cases]
    for (name, _, node), pending in zip(cases, results, strict=True):
        result = pending.get(timeout=SAFETY)
        assert result["node"] == node, result
        assert result["success"] and result["exit_code"] == 0 and result["attempt"] == 1
        stored = cluster.reader.execution(name, result["key"])
        assert stored is not None, f"{name} is not in the shared store"
        assert stored.node_name == node
        assert stored.output == f"{name}\n".encode()


def test_every_execution_is_in_the_shared_store(cluster: Cluster) -> None:
    # Untagged jobs and jobs tagged for what both nodes have: either node may take them.
    jobs = [shell_job(f"any-{i}", "true", tags={"dc": "eu"} if i % 2 else {}) for i in range(12)]
    pending = [dispatch(cluster.app, job) for job in jobs]
    results = [p.get(timeout=SAFETY) for p in pending]
    for job, result in zip(jobs, results, strict=True):
        assert result["node"] in (NODE_A[0], NODE_B[0])
        [stored] = cluster.executions(job["name"])
        assert stored.key == result["key"] and stored.node_name == result["node"]


def test_retries_are_dkron_execs_not_celerys(cluster: Cluster) -> None:
    job = shell_job("flaky", "exit 3", retries=1, tags={"role": "db"})
    result = cluster.run(job)
    assert result["success"] is False and result["exit_code"] == 3 and result["attempt"] == 2
    # Node B runs one job at a time: once a later job on its queue is done, a redelivered or
    # retried "flaky" would have run before it.
    cluster.run(shell_job("after-flaky", "true", tags={"role": "db"}))
    stored = cluster.executions("flaky")
    assert [e.attempt for e in stored] == [2, 1]
    assert {e.node_name for e in stored} == {NODE_B[0]}


def test_a_count_runs_on_one_node(cluster: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    result = cluster.run(shell_job("two-webs", "true", tags={"role": "web:2"}))
    assert result["node"] == NODE_A[0]
    assert "fan-out is not supported" in caplog.text
    assert len(cluster.executions("two-webs")) == 1


def test_a_name_the_worker_cannot_resolve_is_a_stored_failure(cluster: Cluster, tmp_path: Path) -> None:
    made = tmp_path / "ran"
    # dispatch checks the document, not plugin names (the worker has its own plugins): it sends.
    result = cluster.run(shell_job("typo-job", f"touch {made}", processors={"fils": {}}, tags={"role": "db"}))
    why = "processors.fils: unknown processor 'fils': did you mean 'files'?"
    assert result["success"] is False and result["node"] == NODE_B[0] and result["exit_code"] is None
    assert result["error"].startswith(why) and not result["skipped"]
    stored = cluster.reader.execution("typo-job", result["key"])
    assert stored is not None and not stored.success and (stored.error or "").startswith(why)
    assert stored.node_name == NODE_B[0] and stored.output == f"{result['error']}\n".encode()
    assert not made.exists()


def test_beat_fires_jobs_on_their_schedule(cluster: Cluster, tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    write_job(jobs, "beat.json", shell_job("beat-tick", "true", schedule="@every 1s", tags={"role": "db"}))
    write_job(jobs, "never.json", shell_job("beat-never", "true", schedule="@manually"))
    cluster.start("beat", ["beat", "-s", str(tmp_path / "beat-schedule"), "--max-interval", "1",
                           "--loglevel", "INFO"], env={"TEST_BEAT_JOBS": str(jobs)})  # fmt: skip
    try:
        wait_for(lambda: len(cluster.executions("beat-tick")) >= 2, "two fires of beat-tick")
    finally:
        cluster.stop("beat")
    fired = cluster.executions("beat-tick")
    assert {e.node_name for e in fired} == {NODE_B[0]}
    assert cluster.executions("beat-never") == []
