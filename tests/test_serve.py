"""`dkron-exec serve` as a real process: a folder of job files run on their schedules, reloaded on
change, stopped by SIGTERM with a grace period. Assertions wait for what the service logs and stores;
bounds on counts are generous so that a busy machine cannot fail them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from conftest import wait_gone
from dkron_exec import Execution, SQLiteStore
from dkron_exec.serve import JobFolder
from jobs import shell_job


def wait_for(predicate: Callable[[], bool], timeout: float = 60.0) -> None:
    """Polls until true; the timeout is only a safety net for a hung test."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def write_atomically(path: Path, doc: dict[str, Any] | str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    os.replace(tmp, path)


class Served:
    """A `dkron-exec serve` process on a job folder, its log and its store."""

    def __init__(self, root: Path, *args: str) -> None:
        self.jobs = root / "jobs"
        self.jobs.mkdir()
        self.db = root / "store.db"
        self.log_path = root / "serve.log"
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "dkron_exec.cli", "serve", str(self.jobs), "--store", str(self.db),
                 "--poll", "0.2", *self.args],
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.wait_log("serving")

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    def wait_log(self, text: str, count: int = 1) -> None:
        wait_for(lambda: self.log.count(text) >= count)

    def executions(self, job: str) -> list[Execution]:
        if not self.db.exists():
            return []
        store = SQLiteStore(self.db)
        try:
            return store.list(job)
        finally:
            store.close()

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=120)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    made: list[Served] = []

    def make(*args: str) -> Served:
        s = Served(tmp_path, *args)
        made.append(s)
        return s

    yield make
    for s in made:
        s.kill()


def outputs(executions: list[Execution]) -> list[bytes]:
    return [e.output for e in executions]


def test_serve_runs_reloads_and_unschedules(served: Callable[..., Served]) -> None:
    s = served()
    job_file = s.jobs / "tick.json"
    write_atomically(job_file, shell_job("tick", "echo one", schedule="* * * * * *"))
    (s.jobs / "broken.json").write_text('{"name": "broken", "command": "true", "schedule": "61 * * * * *"}')
    (s.jobs / "notes.txt").write_text("not a job file")
    s.start()
    wait_for(lambda: outputs(s.executions("tick")).count(b"one\n") >= 2)

    # The bad file is named with its field, once (not on every poll), and nothing else is hurt.
    bad_lines = [line for line in s.log.splitlines() if "broken.json" in line]
    assert len(bad_lines) == 1 and "invalid job" in bad_lines[0] and "schedule" in bad_lines[0]

    # A changed file: the new command runs.
    write_atomically(job_file, shell_job("tick", "echo two", schedule="* * * * * *"))
    s.wait_log("job tick reloaded")
    wait_for(lambda: b"two\n" in outputs(s.executions("tick")))

    # A bad version is refused with one line naming the file and field; the last good one goes on.
    write_atomically(job_file, shell_job("tick", "echo three", schedule="* * * * * *", retries="x"))
    s.wait_log("tick.json: invalid job, retries")
    seen = len(s.executions("tick"))
    wait_for(lambda: len(s.executions("tick")) >= seen + 2)
    assert b"three\n" not in outputs(s.executions("tick"))
    assert outputs(s.executions("tick"))[0] == b"two\n"

    # A removed file: its job stops. At most the run already under way when the removal was seen
    # may start after it; an unremoved job would run every second.
    job_file.unlink()
    s.wait_log("job tick removed")
    removed_at = datetime.now(timezone.utc)
    time.sleep(3)
    late = [e for e in s.executions("tick") if e.started_at > removed_at]
    assert len(late) <= 1, late
    assert s.log.count("job tick: not run") <= 1  # the scheduler no longer fires it either

    assert s.terminate() == 0
    assert "stopped" in s.log
    assert len([line for line in s.log.splitlines() if "broken.json" in line]) == 1


def test_sigterm_lets_a_running_job_finish(served: Callable[..., Served], tmp_path: Path) -> None:
    started = tmp_path / "started"
    s = served("--grace", "30")
    write_atomically(
        s.jobs / "slow.json",
        shell_job(
            "slow", f"touch {started}; sleep 2; echo finished", schedule="* * * * * *", concurrency="forbid"
        ),
    )
    s.start()
    wait_for(started.exists)
    assert s.terminate() == 0
    executions = s.executions("slow")
    assert executions and all(e.success for e in executions), executions
    assert executions[0].output == b"finished\n"
    assert "killing" not in s.log


def test_a_job_longer_than_grace_is_killed_and_stored(served: Callable[..., Served], tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    s = served("--grace", "1")
    write_atomically(
        s.jobs / "long.json",
        shell_job("long", f"echo $$ > {pid_file}.tmp; mv {pid_file}.tmp {pid_file}; exec sleep 300",
                  schedule="* * * * * *", concurrency="forbid"),
    )  # fmt: skip
    s.start()
    wait_for(pid_file.exists)
    pid = int(pid_file.read_text())
    signalled = time.monotonic()
    assert s.terminate() == 0
    assert time.monotonic() - signalled >= 1.0  # the grace period was given
    assert wait_gone([pid], timeout=10) == []
    executions = s.executions("long")
    assert len(executions) == 1, executions
    assert not executions[0].success and executions[0].finished_at is not None
    assert "killed" in (executions[0].error or "")
    assert "killing 1 job(s) still running" in s.log


def test_a_second_sigterm_ends_the_grace_period(served: Callable[..., Served], tmp_path: Path) -> None:
    started = tmp_path / "started"
    s = served("--grace", "600")
    write_atomically(
        s.jobs / "long.json",
        shell_job("long", f"touch {started}; exec sleep 600", schedule="* * * * * *", concurrency="forbid"),
    )
    s.start()
    wait_for(started.exists)
    assert s.proc is not None
    s.proc.send_signal(signal.SIGTERM)
    s.wait_log("stopping: waiting up to 600s")
    assert s.terminate() == 0  # well before the 600 s of grace
    assert [e.success for e in s.executions("long")] == [False]


def test_a_job_naming_an_unknown_processor_is_refused_and_the_last_good_version_runs(
    served: Callable[..., Served], tmp_path: Path
) -> None:
    made = tmp_path / "typo-ran"
    missing = tmp_path / "no-plugins"
    s = served("--plugin-dir", str(missing))
    typo = shell_job("typo", f"touch {made}", schedule="* * * * * *", processors={"fils": {}})
    write_atomically(s.jobs / "typo.json", typo)
    write_atomically(s.jobs / "good.json", shell_job("good", "echo one", schedule="* * * * * *"))
    s.start()
    wait_for(lambda: b"one\n" in outputs(s.executions("good")))
    # The missing plugin folder is named; the new file with the typo is refused, at ERROR, naming
    # the file, the field and the closest name, and is not scheduled.
    assert f"WARNING dkron_exec.executor: plugin folder {missing} does not exist" in s.log
    [refused] = [line for line in s.log.splitlines() if "typo.json" in line]
    assert " ERROR dkron_exec.serve: " in refused and "no job loaded from it" in refused
    assert "processors.fils: unknown processor 'fils': did you mean 'files'?" in refused
    assert "job typo loaded" not in s.log

    # A good file edited to name an unknown processor keeps its last good version running.
    write_atomically(s.jobs / "good.json", shell_job("good", "echo two", schedule="* * * * * *",
                                                     processors={"fils": {}}))  # fmt: skip
    s.wait_log("good.json: invalid job, processors.fils: unknown processor 'fils': did you mean 'files'?")
    assert "job 'good' keeps its previous version" in s.log
    seen = len(s.executions("good"))
    wait_for(lambda: len(s.executions("good")) >= seen + 2)
    assert b"two\n" not in outputs(s.executions("good"))
    assert all(e.success and e.processor_errors == [] for e in s.executions("good"))
    assert s.terminate() == 0
    assert not made.exists() and s.executions("typo") == []


def test_serve_without_a_folder_is_an_error(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "dkron_exec.cli", "serve", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "is not a folder" in r.stderr


def test_job_folder_follows_renames_and_name_clashes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = JobFolder(tmp_path)
    write_atomically(tmp_path / "a.json", shell_job("one", "true", schedule="@every 1m"))
    write_atomically(tmp_path / "b.json", shell_job("one", "true", schedule="@every 2m"))
    changes = folder.scan()
    assert [(f.name, j.name) for f, j in changes.loaded] == [("a.json", "one")]
    assert "b.json: invalid job, name: job 'one' is already defined by" in caplog.text
    assert folder.scan() == type(changes)([], [])  # nothing changed, nothing logged again
    assert caplog.text.count("b.json") == 1

    # a.json now names another job: "one" goes away, and b.json (which clashed) gets it next scan.
    write_atomically(tmp_path / "a.json", shell_job("two", "true", schedule="@every 1m"))
    changes = folder.scan()
    assert [(f.name, n) for f, n in changes.removed] == [("a.json", "one")]
    assert [(f.name, j.name) for f, j in changes.loaded] == [("a.json", "two")]
    changes = folder.scan()
    assert [(f.name, j.name, j.schedule) for f, j in changes.loaded] == [("b.json", "one", "@every 2m")]
    assert folder.jobs() == {"one": tmp_path / "b.json", "two": tmp_path / "a.json"}

    # Touching a file without changing it reloads nothing.
    os.utime(tmp_path / "b.json", ns=(1, 1))
    assert folder.scan() == type(changes)([], [])


SECRET = "root:$6$Zq8s3cr3tHASHdoNotLeak$:19000:0:99999:7:::"


def test_a_refused_file_is_reported_as_validate_reports_it_and_never_quoted(
    served: Callable[..., Served], tmp_path: Path
) -> None:
    """A JSON syntax error gets `validate`'s report (file:line:column, the line, a caret), not the
    document as Python bytes; a file that is not a JSON object (a symlink to a file of secrets, a
    binary, a JSON string) is refused without a byte of it in the log."""
    s = served()
    syntax = s.jobs / "syntax.json"
    syntax.write_text('{"name": "syntax",\n "command": "true"\n "schedule": "@every 1m"}\n')
    secrets = tmp_path / "shadow"
    secrets.write_text(SECRET + "\nbin:*:19000:0:99999:7:::\n")
    (s.jobs / "x.json").symlink_to(secrets)
    binary = tmp_path / "blob"
    binary.write_bytes(b"\x7fELF\x02\x01\x01\x00s3cr3t-in-binary\xff\xfe")
    (s.jobs / "bin.json").symlink_to(binary)
    (s.jobs / "string.json").write_text(json.dumps("s3cr3t-token"))
    write_atomically(s.jobs / "good.json", shell_job("good", "true", schedule="@every 1h"))
    s.start()
    log = s.log

    validated = subprocess.run(
        [sys.executable, "-m", "dkron_exec.cli", "validate", str(syntax)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    report = validated.stderr.removeprefix("dkron-exec: invalid job: ").rstrip("\n").split("\n")
    assert report[0].startswith(f"{syntax}:3:2: not valid JSON: ")
    first = next(line for line in log.splitlines() if "syntax.json" in line)
    assert first.endswith(f"{report[0]}; no job loaded from it")
    assert "\n".join(report[1:]) in log  # the line and the caret under the column
    assert report[1:] == ['   "schedule": "@every 1m"}', "   ^"]

    assert "b'" not in log and 'b"' not in log
    for leaked in ("s3cr3t", "Zq8", "root:", "ELF", "bin:*"):
        assert leaked not in log, leaked
    for name in ("x.json", "bin.json", "string.json"):
        lines = [line for line in log.splitlines() if f"/{name}" in line]
        assert len(lines) == 1 and "no job loaded from it" in lines[0], (name, log)
    assert "/x.json:1:1: not valid JSON:" in log and "its content is not shown" in log
    assert "string.json: not a job document: the file holds a string, not a JSON object" in log
    assert "job good loaded" in log

    # `validate` names the same files the same way, and quotes nothing of them either.
    for name in ("x.json", "bin.json", "string.json"):
        r = subprocess.run(
            [sys.executable, "-m", "dkron_exec.cli", "validate", str(s.jobs / name)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert r.returncode == 2 and name in r.stderr
        assert r.stderr.count("\n") == 1 and "s3cr3t" not in r.stderr and "root:" not in r.stderr


def test_serve_counts_scheduled_jobs_apart_and_names_the_signal_it_stops_on(
    served: Callable[..., Served],
) -> None:
    s = served()
    write_atomically(s.jobs / "tick.json", shell_job("tick", "true", schedule="@every 1h"))
    write_atomically(s.jobs / "manual.json", shell_job("manual", "true", schedule="@manually"))
    write_atomically(s.jobs / "none.json", shell_job("none", "true"))
    s.start()
    assert "serving 1 scheduled job(s), 2 not scheduled, from " in s.log
    # A schedule that matches no date is not "on demand", nor "no run left".
    write_atomically(s.jobs / "feb30.json", shell_job("feb30", "true", schedule="0 0 0 30 2 *"))
    s.wait_log("job feb30 loaded")
    assert "not scheduled (this schedule matches no date in the next five years)" in s.log
    assert "no run left" not in s.log
    assert s.terminate() == 0
    assert "stopping (received SIGTERM): no new runs start" in s.log
    assert "no more runs are scheduled" not in s.log
