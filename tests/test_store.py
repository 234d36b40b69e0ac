"""The embedded SQLite store: contents, retention, threads and processes writing at once."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
from datetime import datetime, timezone
from pathlib import Path

import pytest

from dkron_exec import DkronExecError, Execution, Executor, SQLiteStore, Store, StoreError


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
import tempfile
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


def test_every_field_round_trips(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "fields.db")
    started = datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)
    full = Execution(
        job_name="jöb",
        started_at=started,
        finished_at=started.replace(second=5),
        success=False,
        output=b"a\x00\xff\xfe\n",
        node_name="n-1",
        group=(1 << 60) + 1,
        attempt=3,
        exit_code=-9,
        error="signal: killed",
        output_truncated=True,
        output_size=1 << 40,
        processor_errors=['files: "nope"', "ünïcode"],
    )
    bare = Execution(job_name="jöb", started_at=started.replace(hour=1), finished_at=None, success=True)
    store.put(full)
    store.put(bare)
    assert store.get("jöb", full.key) == full
    assert store.list("jöb") == [full, bare]
    assert store.get("jöb", "missing") is None
    assert store.job_names() == ["jöb"]


def test_put_many_is_one_transaction() -> None:
    store = SQLiteStore(retention=3)
    store.put_many([make("a", n) for n in range(10)])
    assert store.core.transactions() == 1
    assert [e.output for e in store.list("a")] == [b"out 9", b"out 8", b"out 7"]


def test_concurrent_puts_share_transactions(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "group.db", retention=10_000)
    start = threading.Barrier(8)

    def writer(t: int) -> None:
        start.wait()
        for n in range(100):
            store.put(make("shared", t * 1000 + n))

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.list("shared")) == 800
    assert store.core.transactions() < 800


OLD_SCHEMA_ROW = (
    "jöb", "1767225600000000123-n", 1767225600000000123, 1767225601000000000, 0, -15, "boom",
    "n", 2**60, 2, b"out\x00\xff", 1, 99, '["files: x"]',
)  # fmt: skip


def test_files_of_the_python_store_stay_readable(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    # What the Python sqlite3 store wrote: its schema and encodings.
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE executions (job_name TEXT NOT NULL, key TEXT NOT NULL, started_ns INTEGER NOT NULL,"
        " finished_ns INTEGER, success INTEGER NOT NULL, exit_code INTEGER, error TEXT,"
        " node_name TEXT NOT NULL, grp INTEGER NOT NULL, attempt INTEGER NOT NULL, output BLOB NOT NULL,"
        " output_truncated INTEGER NOT NULL, output_size INTEGER NOT NULL,"
        " processor_errors TEXT NOT NULL, PRIMARY KEY (job_name, key));"
        "CREATE INDEX executions_by_start ON executions (job_name, started_ns);"
    )
    db.execute(f"INSERT INTO executions VALUES ({', '.join('?' * 14)})", OLD_SCHEMA_ROW)
    db.commit()
    db.close()
    store = SQLiteStore(path)
    (e,) = store.list("jöb")
    assert (e.key, e.exit_code, e.error, e.group, e.attempt, e.output, e.output_size) == (
        "1767225600000000123-n",
        -15,
        "boom",
        2**60,
        2,
        b"out\x00\xff",
        99,
    )
    assert (e.success, e.output_truncated, e.processor_errors) == (False, True, ["files: x"])
    assert e.finished_at == datetime(2026, 1, 1, 0, 0, 1, tzinfo=timezone.utc)
    # And what the Rust store writes reads back the same with sqlite3.
    store.put(e.replace(key="1767225600000000124-n"))
    store.close()
    db = sqlite3.connect(path)
    rows = db.execute("SELECT * FROM executions ORDER BY key").fetchall()
    # Opening it added the usage columns (cpu_time_us, peak_memory), unknown for these rows.
    new_key = "1767225600000000124-n"
    assert rows[1] == (*OLD_SCHEMA_ROW[:1], new_key, 1767225600000000124, *OLD_SCHEMA_ROW[3:], None, None)


def test_store_errors_name_the_path_and_cause(tmp_path: Path) -> None:
    folder = rf"^cannot open the store {tmp_path}: .*\(it is a folder\)$"
    with pytest.raises(StoreError, match=folder) as info:
        SQLiteStore(tmp_path)
    assert isinstance(info.value, OSError) and isinstance(info.value, DkronExecError)
    store = SQLiteStore(tmp_path / "created.db")
    store.close()
    store.close()
    with pytest.raises(StoreError, match="is closed"):
        store.put(make("a", 1))
    with pytest.raises(StoreError, match="is closed"):
        store.list("a")


def test_a_missing_folder_is_named_not_created(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "executions.db"
    with pytest.raises(StoreError) as info:
        SQLiteStore(path)
    assert str(info.value) == (
        f"cannot open the store {path}: unable to open database file "
        f"(its folder {path.parent} does not exist)"
    )
    assert not (tmp_path / "a").exists()
    with pytest.raises(StoreError, match="does not exist"):
        Executor(path)


def test_a_file_in_the_way_is_named(tmp_path: Path) -> None:
    file = tmp_path / "plain-file"
    file.write_bytes(b"")
    for path in (file / "executions.db", file / "sub" / "executions.db"):
        with pytest.raises(StoreError) as info:
            SQLiteStore(path)
        assert str(info.value) == (
            f"cannot open the store {path}: unable to open database file ({file} is not a folder)"
        )


def _open_in_child(path: Path, uid: int | None) -> str:
    """Opens the store in a forked child (as ``uid`` when given: root ignores permissions) and
    returns the error's message, or "opened"."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and leave without running any Python clean-up
        try:
            os.close(read)
            if uid is not None:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
            try:
                SQLiteStore(path).close()
                message = "opened"
            except StoreError as exc:
                message = str(exc)
            os.write(write, message.encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        message = pipe.read().decode()
    os.waitpid(pid, 0)
    return message


def test_a_read_only_folder_is_named() -> None:
    # Under /tmp (not pytest's private tmp_path) so that an unprivileged child can reach it.
    folder = Path(tempfile.mkdtemp(prefix="dkron-ro-"))
    try:
        folder.chmod(0o555)
        path = folder / "executions.db"
        as_uid = 65534 if os.geteuid() == 0 else None  # nobody: root would write anyway
        message = _open_in_child(path, as_uid)
        assert message == (
            f"cannot open the store {path}: unable to open database file "
            f"(its folder {folder} is not writable)"
        )
        assert not path.exists()
    finally:
        folder.chmod(0o755)
        shutil.rmtree(folder)


def test_only_the_default_location_gets_its_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DKRON_EXEC_STORE", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    with Executor() as executor:
        assert executor.store.path == str(tmp_path / "data" / "dkron-exec" / "executions.db")
    assert (tmp_path / "data" / "dkron-exec" / "executions.db").is_file()
    # $DKRON_EXEC_STORE is a path given by the user: its folder must exist, like any other.
    explicit = tmp_path / "typo" / "executions.db"
    monkeypatch.setenv("DKRON_EXEC_STORE", str(explicit))
    with pytest.raises(StoreError, match=r"its folder .*typo does not exist"):
        SQLiteStore.default()
    assert not explicit.parent.exists()
    # A default folder that cannot be made is named too.
    monkeypatch.delenv("DKRON_EXEC_STORE")
    (tmp_path / "file").write_bytes(b"")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "file"))
    with pytest.raises(StoreError, match=rf"cannot create its folder {tmp_path}/file/dkron-exec: "):
        Executor()


def test_the_store_protocol() -> None:
    class ListStore:
        def __init__(self) -> None:
            self.items: list[Execution] = []

        def put(self, execution: Execution) -> None:
            self.items.append(execution)

        def list(self, job_name: str, limit: int | None = None) -> list[Execution]:
            return [e for e in self.items if e.job_name == job_name][:limit]

        def get(self, job_name: str, key: str) -> Execution | None:
            return next((e for e in self.items if (e.job_name, e.key) == (job_name, key)), None)

        def job_names(self) -> list[str]:
            return sorted({e.job_name for e in self.items})

        def close(self) -> None:
            pass

    assert isinstance(SQLiteStore(), Store)
    assert isinstance(ListStore(), Store)
    assert not isinstance(object(), Store)
