"""The PostgreSQL store against a real server started by these tests: the Store semantics (the
same as SQLite's), the schema's migrations, many processes writing at once, cluster-wide
``forbid``, and a database that goes away mid-run (nothing lost)."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from postgres import PostgresServer, bin_dir

from dkron_exec import ConcurrencyError, Execution, Executor, SQLiteStore, StoreError
from jobs import shell_job

if not os.environ.get("CI"):  # in CI a missing psycopg fails
    pytest.importorskip("psycopg", reason="psycopg is not installed: pip install -e '.[dev]'")

import psycopg

from dkron_exec.postgres_store import PostgresStore, lock_key

WAIT = 60.0  # seconds: a bound on waits for another process, never expected to be reached
GATE_TIMEOUT = "120s"  # a gated job that is never released (a broken forbid) fails, not hangs


def _need_postgres() -> Path:
    binaries = bin_dir()
    if binaries is not None:
        return binaries
    message = (
        "PostgreSQL's server is not installed: "
        "run scripts/install-system-deps.sh (apt-get install postgresql)"
    )
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresServer]:
    s = PostgresServer(_need_postgres())
    s.start()
    yield s
    s.close()


_databases = itertools.count()


@pytest.fixture
def url(server: PostgresServer) -> str:
    """A database of its own for each test."""
    return server.create_database(f"t{next(_databases)}")


@pytest.fixture(autouse=True)
def _state_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Spool files go under the test's folder, never the user's state folder."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))


def make(job: str, n: int, **fields: Any) -> Execution:
    started = datetime(2026, 1, 1, tzinfo=timezone.utc)
    values: dict[str, Any] = {
        "job_name": job,
        "started_at": started,
        "finished_at": started,
        "success": True,
        "output": b"out %d" % n,
        "node_name": "n",
        "key": f"{1_767_225_600_000_000_000 + n}-n",
    }
    return Execution(**{**values, **fields})


def wait_for(condition: Any, what: str, process: subprocess.Popen[bytes] | None = None) -> None:
    """Waits until ``condition()``; fails at once if ``process`` ended meanwhile."""
    deadline = time.monotonic() + WAIT
    while not condition():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the process ended ({process.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {WAIT}s for {what}")
        time.sleep(0.02)


_started: list[subprocess.Popen[bytes]] = []


def python(script: str, *args: str) -> subprocess.Popen[bytes]:
    process = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), *args])
    _started.append(process)
    return process


@pytest.fixture(autouse=True)
def _no_process_left() -> Iterator[None]:
    """A failed test leaves none of its processes (a holder waiting for its release) behind."""
    yield
    while _started:
        process = _started.pop()
        if process.poll() is None:
            process.kill()
            process.wait()


# -- the Store semantics ---------------------------------------------------------------------


def test_same_answers_as_the_sqlite_store(url: str, tmp_path: Path) -> None:
    pg = PostgresStore(url, retention=3, spool_dir=tmp_path)
    lite = SQLiteStore(":memory:", retention=3)
    executions = [make("a", n) for n in range(6)] + [
        make("b", 1, output=b"\xff\x00 not utf-8", exit_code=-9, error="signal: killed", success=False,
             processor_errors=["files: disk full", "syslog: refused"], cpu_time_us=1234, peak_memory=5 << 20,
             output_truncated=True, output_size=10**12, attempt=3, group=1_767_225_600_000_000_001),
        make("b", 2, finished_at=None),
        Execution(job_name="c", started_at=datetime(2026, 2, 1, tzinfo=timezone.utc), finished_at=None,
                  success=True, key="not-dkron-shaped"),
    ]  # fmt: skip
    for e in executions:
        pg.put(e)
        lite.put(e)
    pg.put(make("b", 2, output=b"replaced"))
    lite.put(make("b", 2, output=b"replaced"))
    assert pg.job_names() == lite.job_names() == ["a", "b", "c"]
    for job in ("a", "b", "c", "none"):
        assert pg.list(job) == lite.list(job)
        assert pg.list(job, limit=1) == lite.list(job, limit=1)
    assert [e.output for e in pg.list("a")] == [b"out 5", b"out 4", b"out 3"]
    assert pg.get("b", executions[6].key) == executions[6]
    assert pg.get("b", make("b", 2).key) == lite.get("b", make("b", 2).key)
    assert pg.get("b", "nope") is None
    with pytest.raises(ValueError, match="limit"):
        pg.list("a", limit=-1)
    pg.close()


def test_the_schema_is_created_and_versioned_by_the_library(url: str, tmp_path: Path) -> None:
    PostgresStore(url, spool_dir=tmp_path).close()
    PostgresStore(url, spool_dir=tmp_path).close()  # a second open applies nothing twice
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT version, name FROM dkron_exec.schema_migrations").fetchall()
        assert rows == [(1, "executions table")]
        conn.execute("INSERT INTO dkron_exec.schema_migrations (version, name) VALUES (99, 'future')")
    with pytest.raises(StoreError, match="schema is at version 99, newer than this dkron_exec knows"):
        PostgresStore(url, spool_dir=tmp_path)


def test_an_unreachable_database_is_one_line_without_the_password(tmp_path: Path) -> None:
    with socket_closed() as port:
        target = f"postgresql://postgres:s3cret@127.0.0.1:{port}/x"
        with pytest.raises(StoreError) as caught:
            PostgresStore(target, spool_dir=tmp_path)
    message = str(caught.value)
    assert message.startswith(f"cannot open the store postgresql://postgres@127.0.0.1:{port}/x: ")
    assert "s3cret" not in message and "\n" not in message


def test_a_malformed_url_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"^cannot open the store postgresql://h:x/db: "):
        PostgresStore("postgresql://h:x/db", spool_dir=tmp_path)


class socket_closed:
    """A loopback port nothing listens on, for the duration."""

    def __enter__(self) -> int:
        import socket

        self._s = socket.socket()
        self._s.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        return int(self._s.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self._s.close()


# -- choosing it ---------------------------------------------------------------------------


def test_executor_picks_postgres_from_a_url_and_from_the_environment(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Executor(store=url, node_name="n1") as ex:
        assert isinstance(ex.store, PostgresStore)
        first = ex.run({"name": "hello", "command": "echo hi"})
        assert ex.executions("hello") == [first]
    monkeypatch.setenv("DKRON_EXEC_STORE", url)
    with Executor(node_name="n2") as ex:
        assert isinstance(ex.store, PostgresStore)
        second = ex.run({"name": "hello", "command": "echo again"})
        assert ex.executions("hello") == [second, first]
    assert first.output == b"hi\n" and first.success


def test_cli_store_url(url: str, tmp_path: Path) -> None:
    job = tmp_path / "job.json"
    job.write_text('{"name": "cli-job", "command": "echo from cli"}')
    secret_url = url.replace("postgres@", "postgres:s3cret@")
    cli = [sys.executable, "-m", "dkron_exec.cli"]
    run = subprocess.run([*cli, "run", str(job), "--store", secret_url], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert f"store:      {url}\n" in run.stdout and "s3cret" not in run.stdout
    listed = subprocess.run([*cli, "executions", "cli-job", "--store", url, "--json"], capture_output=True)
    assert listed.returncode == 0, listed.stderr
    assert b'"output": "from cli\\n"' in listed.stdout


# -- many writers ------------------------------------------------------------------------------

_WRITER = """
import asyncio, sys
from dkron_exec import Executor
url, node, mode = sys.argv[1:]
job = {"name": "shared", "command": "true"}
with Executor(store=url, node_name=node, retention=5000) as ex:
    if mode == "sync":
        for _ in range(1000):
            assert ex.run(job).success
    else:
        async def main():
            for _ in range(50):
                done = await asyncio.gather(*(ex.run_async(job) for _ in range(20)))
                assert all(e.success for e in done)
        asyncio.run(main())
"""


def test_two_processes_write_1000_executions_each_none_lost(url: str, tmp_path: Path) -> None:
    writers = [python(_WRITER, url, "node-a", "sync"), python(_WRITER, url, "node-b", "async")]
    assert [w.wait() for w in writers] == [0, 0]
    stored = PostgresStore(url, retention=5000, spool_dir=tmp_path).list("shared")
    assert len(stored) == 2000
    assert len({e.key for e in stored}) == 2000
    assert sorted({e.node_name for e in stored}) == ["node-a", "node-b"]
    assert sum(e.node_name == "node-a" for e in stored) == 1000
    assert all(e.processor_errors == [] for e in stored)
    starts = [e.started_at for e in stored]
    assert starts == sorted(starts, reverse=True)


_PUTTER = """
import sys, threading
from datetime import datetime, timezone
from dkron_exec import Execution
from dkron_exec.postgres_store import PostgresStore
url, spool, first = sys.argv[1], sys.argv[2], int(sys.argv[3])
store = PostgresStore(url, retention=25, spool_dir=spool)
def put(start):
    for n in range(start, start + 600, 4):  # the processes' threads interleave their starts
        ns = 1_767_225_600_000_000_000 + n
        store.put(Execution(job_name="kept", started_at=datetime.fromtimestamp(ns / 1e9, timezone.utc),
                            finished_at=None, success=True, key=f"{ns}-w"))
threads = [threading.Thread(target=put, args=(first + 2 * i,)) for i in range(2)]
[t.start() for t in threads]
[t.join() for t in threads]
store.close()
"""


def test_retention_holds_under_concurrent_writers(url: str, tmp_path: Path) -> None:
    PostgresStore(url, spool_dir=tmp_path).close()  # the schema, made once before the race
    writers = [python(_PUTTER, url, str(tmp_path), str(first)) for first in (0, 1)]
    # Every committed state holds at most 25 (not only the last one).
    seen = []
    with psycopg.connect(url, autocommit=True) as conn:
        while any(w.poll() is None for w in writers):
            query = "SELECT count(*) FROM dkron_exec.executions WHERE job_name = 'kept'"
            row = conn.execute(query).fetchone()
            seen.append(row[0] if row else 0)
    assert [w.wait() for w in writers] == [0, 0]
    assert max(seen) <= 25, max(seen)
    kept = PostgresStore(url, retention=25, spool_dir=tmp_path).list("kept")
    # 600 written, starts 0..599: exactly the newest 25 remain.
    assert [e.key for e in kept] == [f"{1_767_225_600_000_000_000 + n}-w" for n in range(599, 574, -1)]


# -- cluster-wide forbid -----------------------------------------------------------------------

_HOLDER = """
import sys
from dkron_exec import Executor
url, job = sys.argv[1], sys.argv[2]
with Executor(store=url, node_name="holder") as ex:
    assert ex.run(job).success
"""


def gated(folder: Path) -> str:
    """A command that says it started, then runs until ``release`` exists."""
    return f"touch {folder}/started; while [ ! -e {folder}/release ]; do sleep 0.02; done"


def forbid_job(folder: Path) -> str:
    """A forbid job, gated, as JSON (for another process's command line too)."""
    return json.dumps(shell_job("only-one", gated(folder), concurrency="forbid", timeout=GATE_TIMEOUT))


def claimed(url: str, job: str = "only-one") -> bool:
    """Whether some session holds the job's forbid lock (a bigint advisory lock: its high and low
    halves are pg_locks' classid and objid)."""
    key = lock_key("forbid", job) & (2**64 - 1)
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 "
            "AND classid = %s AND objid = %s "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            (key >> 32, key & 0xFFFFFFFF),
        ).fetchone()
        return bool(row and row[0])


def test_forbid_holds_across_processes(url: str, tmp_path: Path) -> None:
    job = forbid_job(tmp_path)
    holder = python(_HOLDER, url, job)
    wait_for((tmp_path / "started").exists, "the holder's run started", holder)
    assert claimed(url)
    with Executor(store=url, node_name="other") as ex:
        refused = r"'only-one' is already running .* concurrency is 'forbid'"
        with pytest.raises(ConcurrencyError, match=refused):
            ex.run(job)
        with pytest.raises(ConcurrencyError):
            asyncio.run(ex.run_async(job))
        # Only forbid jobs are claimed.
        allowed = ex.run({"name": "only-one-allowed", "command": "true"})
        (tmp_path / "release").touch()
        assert holder.wait(WAIT) == 0
        mine = ex.run(job)
        assert mine.success and allowed.success
        assert [e.node_name for e in ex.executions("only-one")] == ["other", "holder"]
    assert not claimed(url)


def test_a_killed_holder_releases_the_job(url: str, tmp_path: Path) -> None:
    job = forbid_job(tmp_path)
    holder = python(_HOLDER, url, job)
    wait_for((tmp_path / "started").exists, "the holder's run started", holder)
    with Executor(store=url, node_name="other") as ex:
        with pytest.raises(ConcurrencyError):
            ex.run(job)
        holder.send_signal(signal.SIGKILL)
        assert holder.wait(WAIT) == -signal.SIGKILL
        # The server ends the dead holder's session, and with it the lock.
        wait_for(lambda: not claimed(url), "the server to end the killed holder's session")
        (tmp_path / "release").touch()
        assert ex.run(job).success


async def test_forbid_across_two_executors_with_run_async(url: str, tmp_path: Path) -> None:
    job = forbid_job(tmp_path)
    with Executor(store=url, node_name="a") as a, Executor(store=url, node_name="b") as b:
        first = asyncio.create_task(a.run_async(job))
        while not (tmp_path / "started").exists():
            await asyncio.sleep(0.02)
        with pytest.raises(ConcurrencyError):
            await b.run_async(job)
        with pytest.raises(ConcurrencyError):
            await asyncio.to_thread(b.run, job)
        (tmp_path / "release").touch()
        assert (await first).success
        assert (await b.run_async(job)).success  # released when the first run ended
    assert not claimed(url)


async def test_a_cancelled_forbid_run_releases_the_job(url: str, tmp_path: Path) -> None:
    job = forbid_job(tmp_path)
    with Executor(store=url, node_name="a") as a:
        task = asyncio.create_task(a.run_async(job))
        while not (tmp_path / "started").exists():
            await asyncio.sleep(0.02)
        assert claimed(url)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not claimed(url)


# -- the database goes away ------------------------------------------------------------------


def test_database_restarted_mid_run_nothing_lost(
    server: PostgresServer, url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = PostgresStore(url, spool_dir=tmp_path / "spool", retry_interval=3600)  # no timed retry here
    ex = Executor(store=store, node_name="n", spool_dir=tmp_path / "out")
    before = [ex.run({"name": "steady", "command": f"echo {i}"}) for i in range(3)]
    gate = tmp_path / "gate"
    gate.mkdir()
    in_flight: list[Execution] = []
    runner = threading.Thread(target=lambda: in_flight.append(ex.run(gated_job(gate))))
    runner.start()
    wait_for((gate / "started").exists, "the run to start")
    server.stop("fast")  # the database goes away mid-run
    try:
        (gate / "release").touch()
        runner.join()
        with caplog.at_level(logging.WARNING, "dkron_exec.store.postgres"):
            during = [ex.run({"name": "steady", "command": f"echo down {i}"}) for i in range(2)]
        assert store.spooled == 3
        assert all(e.processor_errors == [] for e in [*in_flight, *during])  # kept, not failed
        assert "spooled to" in caplog.text and "to be written when the database is back" in caplog.text
    finally:
        server.start()
    after = ex.run({"name": "steady", "command": "echo back"})  # its put writes the spool too
    assert store.spooled == 0
    ex.close()
    reader = PostgresStore(url, spool_dir=tmp_path / "spool")
    expected = [*before, *during, after]
    assert {e.key for e in reader.list("steady")} == {e.key for e in expected}
    assert reader.get("gated", in_flight[0].key) == in_flight[0]
    assert not list((tmp_path / "spool").iterdir())


def gated_job(folder: Path) -> dict[str, Any]:
    return shell_job("gated", gated(folder), timeout=GATE_TIMEOUT)


def test_spooled_executions_are_written_when_the_database_is_back(
    server: PostgresServer, url: str, tmp_path: Path
) -> None:
    store = PostgresStore(url, spool_dir=tmp_path, retry_interval=0.05)
    server.stop("fast")
    try:
        store.put(make("later", 1))
        assert store.spooled == 1
    finally:
        server.start()
    wait_for(lambda: store.spooled == 0, "the timed retry to write the spool")
    assert store.list("later") == [make("later", 1)]
    store.close()


def test_closed_while_away_the_next_store_writes_the_spool(
    server: PostgresServer, url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = PostgresStore(url, spool_dir=tmp_path, retry_interval=3600)
    server.stop("fast")
    try:
        store.put_many([make("orphan", 1), make("orphan", 2)])
        with caplog.at_level(logging.WARNING, "dkron_exec.store.postgres"):
            store.close()
        assert "closed with 2 execution(s) not yet written" in caplog.text
        assert len(list(tmp_path.glob("*.jsonl"))) == 1
    finally:
        server.start()
    successor = PostgresStore(url, spool_dir=tmp_path)
    assert successor.list("orphan") == [make("orphan", 2), make("orphan", 1)]
    assert not list(tmp_path.glob("*.jsonl"))
    successor.close()


_SPOOLER = """
import os, sys, time
from datetime import datetime, timezone
from dkron_exec import Execution
from dkron_exec.postgres_store import PostgresStore
url, folder = sys.argv[1:]
store = PostgresStore(url, spool_dir=folder + "/spool", retry_interval=3600)
open(folder + "/ready", "w").close()
while not os.path.exists(folder + "/down"):
    time.sleep(0.02)
for n in (1, 2):
    store.put(Execution(job_name="dead", started_at=datetime(2026, 1, 1, tzinfo=timezone.utc),
                        finished_at=None, success=True, key=f"{1_767_225_600_000_000_000 + n}-x"))
open(folder + "/spooled", "w").close()
time.sleep(3600)
"""


def test_a_process_killed_with_spooled_executions_loses_none(
    server: PostgresServer, url: str, tmp_path: Path
) -> None:
    spooler = python(_SPOOLER, url, str(tmp_path))
    wait_for((tmp_path / "ready").exists, "the store to open", spooler)
    server.stop("fast")
    try:
        (tmp_path / "down").touch()
        wait_for((tmp_path / "spooled").exists, "the executions to be spooled", spooler)
        spooler.kill()
        spooler.wait()
    finally:
        server.start()
    successor = PostgresStore(url, spool_dir=tmp_path / "spool")
    assert [e.key for e in successor.list("dead")] == [f"{1_767_225_600_000_000_000 + n}-x" for n in (2, 1)]
    assert not list((tmp_path / "spool").iterdir())
    successor.close()
