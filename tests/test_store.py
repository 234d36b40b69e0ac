"""The embedded SQLite store: contents, retention, threads and processes writing at once."""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path

import pytest

from dkron_exec import Execution, Executor, SQLiteStore


def make(job: str, n: int, success: bool = True) -> Execution:
    started = datetime(2026, 1, 1, tzinfo=timezone.utc)
    return Execution(
        job_name=job,
        started_at=started,
        finished_at=started,
        success=success,
        output=b"out %d" % n,
        node_name="n",
        key=f"{1_767_225_600_000_000_000 + n}-n",
    )


def test_every_execution_is_stored_success_or_failure(file_executor: Executor) -> None:
    ok = file_executor.run({"name": "mixed", "command": "echo fine"})
    bad = file_executor.run({"name": "mixed", "command": "false"})
    stored = file_executor.executions("mixed")
    assert [e.key for e in stored] == [bad.key, ok.key]
    assert stored[0] == bad and stored[1] == ok
    assert file_executor.execution("mixed", "nope") is None
    assert file_executor.executions("mixed", limit=1) == [bad]


def test_executions_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    with Executor(path) as ex:
        e = ex.run({"name": "persist", "command": "echo kept"})
    with Executor(path) as ex:
        assert ex.execution("persist", e.key) == e


def test_retention_keeps_the_newest_per_job() -> None:
    store = SQLiteStore(":memory:", retention=3)
    for n in range(10):
        store.put(make("a", n))
    store.put(make("b", 0))
    assert [e.output for e in store.list("a")] == [b"out 9", b"out 8", b"out 7"]
    assert len(store.list("b")) == 1


def test_default_retention_is_dkrons_100() -> None:
    store = SQLiteStore(":memory:")
    for n in range(130):
        store.put(make("a", n))
    kept = store.list("a")
    assert len(kept) == 100 and kept[-1].output == b"out 30"


@pytest.mark.parametrize("bad", [0, -1, "3", True])
def test_bad_retention_is_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="retention"):
        SQLiteStore(":memory:", retention=bad)  # type: ignore[arg-type]


def test_threads_write_at_once(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "t.db", retention=1000)

    def writer(t: int) -> None:
        for n in range(100):
            store.put(make(f"job{t % 2}", t * 1000 + n))

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.list("job0")) + len(store.list("job1")) == 800


WRITER = """
import sys
from dkron_exec import Executor
with Executor(sys.argv[1], node_name="p" + sys.argv[2], retention=1000) as ex:
    for i in range(25):
        assert ex.run({"name": "shared", "command": "true"}).success
"""


def test_processes_write_at_once(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(i)]) for i in range(4)]
    assert [p.wait(60) for p in procs] == [0, 0, 0, 0]
    with Executor(path) as ex:
        stored = ex.executions("shared")
    assert len(stored) == 100
    assert {e.node_name for e in stored} == {"p0", "p1", "p2", "p3"}
