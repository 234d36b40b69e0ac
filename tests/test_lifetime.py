"""Nothing a job starts outlives it: background children, setsid'd daemons, a killed host; in the
cgroup mode and in the process-group fallback. Plus what the cgroup tells (CPU time, peak memory,
a kernel-enforced mem_limit) and spawn errors that name their cause."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import pid_alive
from dkron_exec import Executor, Job, JobError, SQLiteStore, isolation
from dkron_exec.cli import main as cli_main
from jobs import shell_job
from plugin_support import PROCESSOR, install

CGROUP = isolation()
needs_cgroup = pytest.mark.skipif(
    CGROUP.mode != "cgroup", reason=f"no usable cgroup v2 here: {CGROUP.fallback_reason}"
)
# Our cgroups are named dkron-exec-<pid namespace>-<pid>-<n>.
PID_NAMESPACE = os.readlink("/proc/self/ns/pid").removeprefix("pid:[").removesuffix("]")
MODES = [pytest.param(True, id="cgroup", marks=needs_cgroup), pytest.param(False, id="process-group")]


def unique_sleep() -> str:
    """A `sleep` argument no other process on the machine has: how a test finds its processes."""
    return f"300.{uuid.uuid4().int % 10**9:09d}"


def with_marker(marker: str) -> list[int]:
    """Live (not zombie) processes whose command line holds `marker`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline and b"pytest" not in cmdline and pid_alive(int(entry)):
            found.append(int(entry))
    return found


def wait_for(marker: str, present: bool, count: int = 1, timeout: float = 10.0) -> list[int]:
    """Waits until `count` processes with `marker` exist (or none does); returns them."""
    deadline = time.monotonic() + timeout
    while True:
        pids = with_marker(marker)
        if (len(pids) >= count if present else not pids) or time.monotonic() > deadline:
            return pids
        time.sleep(0.01)


def daemon_command(marker: str) -> str:
    """setsid + a fork that exits: the sleep is in a session of its own, reparented, its output
    detached, so only the cgroup or the environment marker can find it."""
    return f"setsid sh -c 'sleep {marker} </dev/null >/dev/null 2>&1 &'; echo started"


def our_cgroups() -> list[str]:
    root = Path(CGROUP.cgroup).parent if CGROUP.cgroup else None
    if root is None:
        return []
    return [p.name for p in root.iterdir() if p.name.startswith(f"dkron-exec-{PID_NAMESPACE}-{os.getpid()}-")]


@pytest.fixture(params=MODES)
def executor(request: pytest.FixtureRequest) -> Iterator[Executor]:
    with Executor(":memory:", node_name="n", cgroups=request.param) as ex:
        assert ex.isolation.mode == ("cgroup" if request.param else "process-group")
        yield ex


@pytest.fixture(autouse=True)
def nothing_left_behind() -> Iterator[None]:
    before = set(our_cgroups())
    yield
    assert set(our_cgroups()) <= before, "a test left a cgroup behind"


def test_a_background_child_dies_with_the_run(executor: Executor) -> None:
    marker = unique_sleep()
    e = executor.run(shell_job("bg", f"sleep {marker} & echo started"))
    assert e.success and e.output == b"started\n"
    assert with_marker(marker) == []


def test_a_setsid_daemon_dies_with_the_run(executor: Executor) -> None:
    marker = unique_sleep()
    e = executor.run(shell_job("daemon", daemon_command(marker)))
    assert e.success and e.output == b"started\n", e.output
    assert with_marker(marker) == []


def test_a_setsid_daemon_dies_on_timeout(executor: Executor) -> None:
    marker = unique_sleep()
    e = executor.run(shell_job("daemon", daemon_command(marker) + "; sleep 30", timeout="300ms"))
    assert not e.success and "timeout" in (e.error or "")
    assert with_marker(marker) == []


@pytest.mark.parametrize("use_cgroups", MODES)
def test_a_setsid_daemon_dies_on_close(use_cgroups: bool) -> None:
    marker = unique_sleep()
    ex = Executor(":memory:", cgroups=use_cgroups)
    runner = threading.Thread(target=ex.run, args=(shell_job("d", daemon_command(marker) + "; sleep 30"),))
    runner.start()
    assert wait_for(marker, present=True), "the daemon never started"
    ex.close()
    runner.join()
    assert with_marker(marker) == []


@pytest.mark.parametrize("use_cgroups", MODES)
def test_keep_daemons_leaves_the_daemon_running(use_cgroups: bool) -> None:
    marker = unique_sleep()
    with Executor(":memory:", cgroups=use_cgroups) as ex:
        e = ex.run(shell_job("keeper", daemon_command(marker), keep_daemons="true"))
        assert e.success
    # It outlives the run and the Executor.
    pids = wait_for(marker, present=True)
    try:
        assert len(pids) == 1
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGKILL)


def test_keep_daemons_is_part_of_the_shell_config() -> None:
    assert Job.from_dict({"name": "k", "command": "x", "keep_daemons": True}).shell_config().keep_daemons
    assert not Job.from_dict({"name": "k", "command": "x"}).shell_config().keep_daemons
    with pytest.raises(JobError) as raised:
        config = {"command": "x", "keep_daemons": "no way"}
        Job.from_dict({"name": "k", "executor": "shell", "executor_config": config})
    assert raised.value.field == "executor_config.keep_daemons"


HOST = """
import os, sys
from dkron_exec import Executor
ex = Executor(":memory:", cgroups=sys.argv[1] == "1")
print("ready", flush=True)
ex.run({"name": "victim", "command": os.environ["VICTIM"], "shell": True})
"""


@pytest.mark.parametrize("use_cgroups", MODES)
def test_a_sigkilled_host_leaves_nothing_running(use_cgroups: bool) -> None:
    marker = unique_sleep()
    command = f"sleep {marker} & sleep {marker}; wait"
    # The command goes in the environment: in argv the host would carry the marker too.
    host = subprocess.Popen(
        [sys.executable, "-c", HOST, "1" if use_cgroups else "0"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "VICTIM": command},
    )
    try:
        assert host.stdout is not None and host.stdout.readline() == "ready\n"
        # The job's sh (its command line holds the marker too) and its two sleeps.
        assert len(wait_for(marker, present=True, count=3)) == 3
        host.kill()
        host.wait()
        killed_at = time.monotonic()
        assert wait_for(marker, present=False) == []
        # Well within the second the watchdog promises (the bound above only guards a slow machine).
        print(f"gone {time.monotonic() - killed_at:.3f}s after the host died")
    finally:
        host.kill()
        for pid in with_marker(marker):
            os.kill(pid, signal.SIGKILL)
    # The watchdog removed the dead host's cgroups too.
    root = Path(CGROUP.cgroup).parent if CGROUP.cgroup else None
    if use_cgroups and root is not None:

        def left() -> bool:
            return any(p.name.startswith(f"dkron-exec-{PID_NAMESPACE}-{host.pid}-") for p in root.iterdir())

        deadline = time.monotonic() + 10
        while left() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not left()


PLUGIN_HOST = """
import sys, threading, time
from dkron_exec import Executor
ex = Executor(":memory:", plugin_dirs=[sys.argv[1]])
job = {"name": "p", "command": "true", "processors": {"slow": {"sleep": "300"}}}
threading.Thread(target=ex.run, args=(job,), daemon=True).start()
while ex.plugins.pid("processor", "slow") is None:
    time.sleep(0.01)
print(ex.plugins.pid("processor", "slow"), flush=True)
time.sleep(300)
"""


def test_a_sigkilled_host_takes_its_plugins_along(tmp_path: Path) -> None:
    install(tmp_path, "processor", "slow", PROCESSOR)
    argv = [sys.executable, "-c", PLUGIN_HOST, str(tmp_path)]
    host = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert host.stdout is not None
        plugin = int(host.stdout.readline())
        assert pid_alive(plugin)
        host.kill()
        host.wait()
        deadline = time.monotonic() + 10
        while pid_alive(plugin) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not pid_alive(plugin), "the plugin outlived its host"
    finally:
        host.kill()


# An executor plugin that starts a daemon of its own (as Dkron's shell executor puts a job with a
# timeout in a process group of its own) and answers at once.
DAEMON_EXECUTOR = """
import subprocess
from dkron_exec.plugin import ExecuteResponse, serve

class Starter:
    def execute(self, request, status):
        cmd = ["setsid", "sh", "-c", "sleep " + request.config["marker"] + " </dev/null >/dev/null 2>&1 &"]
        subprocess.run(cmd, check=True)
        return ExecuteResponse(output=b"started\\n")

serve(executor=Starter())
"""

PLUGIN_DAEMON_HOST = """
import sys
from dkron_exec import Executor
ex = Executor(":memory:", plugin_dirs=[sys.argv[1]], cgroups=sys.argv[2] == "1")
e = ex.run({"name": "d", "executor": "starter", "executor_config": {"marker": sys.argv[3]}})
print("ran", e.success, flush=True)
sys.stdin.read()
"""


@pytest.mark.parametrize("use_cgroups", MODES)
def test_what_a_plugin_starts_dies_with_the_executor(tmp_path: Path, use_cgroups: bool) -> None:
    install(tmp_path, "executor", "starter", DAEMON_EXECUTOR)
    marker = unique_sleep()
    with Executor(":memory:", plugin_dirs=[tmp_path], cgroups=use_cgroups) as ex:
        e = ex.run({"name": "d", "executor": "starter", "executor_config": {"marker": marker}})
        assert e.success and e.output == b"started\n", (e.output, e.error)
        assert wait_for(marker, present=True), "the plugin's daemon never started"
    assert wait_for(marker, present=False) == []


@pytest.mark.parametrize("use_cgroups", MODES)
def test_what_a_plugin_starts_dies_with_a_sigkilled_host(tmp_path: Path, use_cgroups: bool) -> None:
    install(tmp_path, "executor", "starter", DAEMON_EXECUTOR)
    marker = unique_sleep()
    argv = [sys.executable, "-c", PLUGIN_DAEMON_HOST, str(tmp_path), "1" if use_cgroups else "0", marker]
    host = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert host.stdout is not None and host.stdout.readline() == "ran True\n"
        assert wait_for(marker, present=True), "the plugin's daemon never started"
        host.kill()
        host.wait()
        assert wait_for(marker, present=False) == []
    finally:
        host.kill()
        for pid in with_marker(marker):
            os.kill(pid, signal.SIGKILL)


def test_the_watchdog_ends_with_the_executor(executor: Executor) -> None:
    executor.run(shell_job("j", "true"))
    pid = executor.isolation.watchdog_pid
    assert pid is not None and pid_alive(pid)
    executor.close()
    assert not pid_alive(pid)


@needs_cgroup
def test_cpu_time_and_peak_memory_are_reported() -> None:
    burn = (
        "python3 -c 'import time\nt = time.process_time()\n"
        "while time.process_time() - t < 0.3: pass\nx = bytearray(50 << 20)'"
    )
    with Executor(":memory:") as ex:
        e = ex.run(shell_job("burn", burn))
        assert e.success, e.output
        assert e.cpu_time_us is not None and e.cpu_time_us >= 300_000
        if ex.isolation.peak_memory:
            assert e.peak_memory is not None and e.peak_memory >= 50 << 20
        stored = ex.execution("burn", e.key)
        assert stored is not None
        assert (stored.cpu_time_us, stored.peak_memory) == (e.cpu_time_us, e.peak_memory)
        assert e.to_dict()["cpu_time_us"] == e.cpu_time_us and e.to_dict()["peak_memory"] == e.peak_memory


def test_fallback_reports_no_usage() -> None:
    with Executor(":memory:", cgroups=False) as ex:
        e = ex.run(shell_job("j", "true"))
    assert (e.cpu_time_us, e.peak_memory) == (None, None)


def test_mem_limit_is_enforced(executor: Executor) -> None:
    # Allocates and touches 200 MiB in 10 MiB steps, then would print "survived".
    grow = (
        "python3 -c 'import time\nx = []\n"
        "for _ in range(20): x.append(bytearray(10 << 20)); time.sleep(0.05)\nprint(\"surv\" + \"ived\")'"
    )
    e = executor.run(shell_job("hog", grow, mem_limit="50MB"))
    assert not e.success
    assert "exceeded its memory limit of 52428800 bytes" in (e.error or ""), e.error
    assert b"survived" not in e.output


def test_a_missing_cwd_is_named(executor: Executor) -> None:
    e = executor.run(shell_job("job", "pwd", shell=False, cwd="/no/such/dir"))
    cause = "cwd '/no/such/dir': No such file or directory (os error 2)"
    assert e.error == f"shell: could not start job 'pwd': {cause}"


def test_a_cwd_that_is_a_file_is_named(executor: Executor, tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("")
    e = executor.run(shell_job("job", "pwd", shell=False, cwd=str(f)))
    assert e.error == f"shell: could not start job 'pwd': cwd '{f}' is not a directory"


def test_a_missing_program_is_named(executor: Executor, tmp_path: Path) -> None:
    e = executor.run(shell_job("job", "/no/such/program --flag", shell=False, cwd=str(tmp_path)))
    assert e.error == (
        "shell: could not start job '/no/such/program --flag': program '/no/such/program': "
        "No such file or directory (os error 2)"
    )


def test_a_store_file_from_before_the_usage_columns_still_opens(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.executescript("""
            CREATE TABLE executions (job_name TEXT NOT NULL, key TEXT NOT NULL, started_ns INTEGER NOT NULL,
                finished_ns INTEGER, success INTEGER NOT NULL, exit_code INTEGER, error TEXT,
                node_name TEXT NOT NULL, grp INTEGER NOT NULL, attempt INTEGER NOT NULL, output BLOB NOT NULL,
                output_truncated INTEGER NOT NULL, output_size INTEGER NOT NULL,
                processor_errors TEXT NOT NULL, PRIMARY KEY (job_name, key));
            INSERT INTO executions VALUES ('old', '5-n', 5, 6, 1, 0, NULL, 'n', 5, 1, x'6869', 0, 2, '[]');
        """)
    db.close()
    store = SQLiteStore(path)
    try:
        (old,) = store.list("old")
        assert (old.output, old.cpu_time_us, old.peak_memory) == (b"hi", None, None)
        store.put(old.replace(key="7-n", cpu_time_us=12, peak_memory=34))
        assert store.get("old", "7-n") is not None
        new = store.get("old", "7-n")
        assert new is not None and (new.cpu_time_us, new.peak_memory) == (12, 34)
    finally:
        store.close()


def test_doctor_says_which_mode_and_what_it_guarantees(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert f"mode:         {CGROUP.mode}" in out
    assert "mem_limit" in out and "cpu time" in out
    assert cli_main(["doctor", "--no-cgroups"]) == 0
    out = capsys.readouterr().out
    assert "mode:         process-group" in out and "clears its environment escapes" in out


@needs_cgroup
def test_the_cli_shows_what_a_run_used(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job = tmp_path / "job.json"
    job.write_text('{"name": "used", "command": "true"}')
    store = str(tmp_path / "store.db")
    assert cli_main(["run", str(job), "--store", store]) == 0
    assert "used:       cpu " in capsys.readouterr().out
    assert cli_main(["executions", "used", "--store", store]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert header.split()[-2:] == ["CPU", "PEAK"]


def test_the_environment_switch_forces_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DKRON_EXEC_CGROUP", "off")
    report = isolation()
    assert report.mode == "process-group" and report.fallback_reason is not None
    assert "DKRON_EXEC_CGROUP=off" in report.fallback_reason
    with Executor(":memory:") as ex:
        assert ex.isolation.mode == "process-group"
