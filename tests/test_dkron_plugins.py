"""Dkron's own plugins (hashicorp/go-plugin), built from Go source on Dkron's ``plugin`` package:
processors (net/rpc + gob over yamux) in dkron_exec chains next to built-ins, and executors (gRPC,
output streamed back through the host's StatusHelper) as jobs' executors, with the same isolation
as our own plugins: crash, hang, garbage only fail that step or run."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import go_plugins
import pytest

from conftest import pid_alive, wait_gone
from dkron_exec import Executor
from dkron_exec.execution import datetime_from_ns
from jobs import an_execution, shell_job

pytestmark = go_plugins.skip_without_go()


@pytest.fixture(scope="module")
def binaries() -> dict[str, Path]:
    return go_plugins.build()


@pytest.fixture
def plugin_dir(tmp_path: Path, binaries: dict[str, Path]) -> Path:
    d = tmp_path / "plugins"
    go_plugins.install(d, "dkron-processor-gotest", "gotest")
    go_plugins.install(d, "dkron-processor-gotest", "gotest2")
    go_plugins.install(d, "noopproc", "noop")
    return d


@pytest.fixture
def ex(tmp_path: Path, plugin_dir: Path) -> Iterator[Executor]:
    with Executor(tmp_path / "store.db", node_name="n1", plugin_dirs=[plugin_dir], plugin_timeout=10.0) as e:
        yield e


def test_dkron_processors_run_in_order_between_built_ins_and_forward(ex: Executor, tmp_path: Path) -> None:
    steps = {
        "gotest": {"append": "<a>"},
        "files": {"log_dir": str(tmp_path / "logs"), "forward": True},
        "noop": {},
        "gotest2": {"append": "<b>"},
    }
    execution = ex.run(shell_job("j", "echo hello", processors=steps))
    assert execution.processor_errors == []
    assert execution.output == b"hello\n<a><b>"
    # files saw what the first Dkron processor returned, and forwarded it.
    [log_file] = (tmp_path / "logs").iterdir()
    assert log_file.read_bytes() == b"hello\n<a>"
    stored = ex.execution("j", execution.key)
    assert stored is not None and stored.output == b"hello\n<a><b>" and stored.success

    # The other order; log with forward false replaces the output before the Dkron processor.
    steps = {"gotest2": {"append": "<b>"}, "log": {"forward": False}, "gotest": {"append": "<a>"}}
    execution = ex.run(shell_job("j", "echo hello", processors=steps))
    assert execution.processor_errors == []
    assert execution.output == b"Output in dkron log<a>"


def test_values_cross_as_dkron_sends_them(ex: Executor) -> None:
    # Config values as strings, with reporting_node added.
    job = shell_job("j", "true", processors={"gotest": {"echo": True, "n": 5, "s": "x y"}})
    out = ex.process(job, an_execution("j")).output.decode()
    assert out == "echo=true\nn=5\nreporting_node=n1\ns=x y\n"
    # Every field of Dkron's Execution, timestamps to the nanosecond.
    execution = an_execution("j", started_ns=1_700_000_000_123_456_000, node_name="nodeA", success=True)
    finished = datetime_from_ns(1_700_000_001_000_007_000)
    execution = execution.replace(finished_at=finished, group=42, attempt=3)
    out = ex.process(shell_job("j", "true", processors={"gotest": {"fields": "true"}}), execution).output
    assert out == (
        b"job=j success=true node=nodeA group=42 attempt=3"
        b" started=1700000000.123456000 finished=1700000001.000007000"
    )
    # And back: what the processor returns keeps every byte, our own fields untouched.
    binary = bytes(range(256)) * 3
    back = ex.process(shell_job("j", "true", processors={"gotest": {}}), execution.replace(output=binary))
    assert back.output == binary
    got = (back.started_at, back.finished_at, back.group, back.attempt)
    assert got == (execution.started_at, finished, 42, 3)
    assert back.key == execution.key and back.node_name == "nodeA" and back.success


def test_a_1_mb_output_goes_through_and_back(ex: Executor) -> None:
    big = os.urandom(1024 * 1024)
    job = shell_job("j", "true", processors={"gotest": {"append": "!"}, "gotest2": {}})
    out = ex.process(job, an_execution("j", output=big)).output
    assert out == big + b"!"


def test_plugin_stderr_goes_to_logging(ex: Executor, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="dkron_exec.plugin")
    ex.process(shell_job("jobx", "true", processors={"gotest": {}}), an_execution("jobx"))
    deadline = time.monotonic() + 10
    want = {"gotest: processing jobx", "gotest: real stderr for jobx"}
    while time.monotonic() < deadline:
        got = {r.getMessage() for r in caplog.records if r.name == "dkron_exec.plugin.gotest"}
        if all(any(w in g for g in got) for w in want):
            break
        time.sleep(0.05)
    got = {r.getMessage() for r in caplog.records if r.name == "dkron_exec.plugin.gotest"}
    assert all(any(w in g for g in got) for w in want), got
    # The handshake line is the protocol's, not the plugin's output.
    assert not any("|netrpc|" in g for g in got)


def test_a_crash_mid_call_fails_only_that_step_and_the_next_call_restarts_it(ex: Executor) -> None:
    steps = {"gotest": {"crash": "true"}, "gotest2": {"append": "<after>"}}
    execution = ex.run(shell_job("j", "echo hi", processors=steps))
    assert execution.output == b"hi\n<after>"
    [error] = execution.processor_errors
    assert "gotest'" in error and "exit status 3" in error, error
    # The same plugin, next call: a new process answers.
    execution = ex.run(shell_job("j", "echo hi", processors={"gotest": {"append": "<ok>"}}))
    assert execution.processor_errors == [] and execution.output == b"hi\n<ok>"


def test_a_hung_plugin_times_out_is_killed_and_the_next_call_works(tmp_path: Path, plugin_dir: Path) -> None:
    with Executor(tmp_path / "s.db", node_name="n1", plugin_dirs=[plugin_dir], plugin_timeout=2.0) as ex:
        ex.run(shell_job("j", "true", processors={"gotest": {}}))
        pid = ex._runtime.plugin_pid("processor", "gotest")
        assert pid is not None and pid_alive(pid)
        started = time.monotonic()
        execution = ex.run(shell_job("j", "echo hi", processors={"gotest": {"hang": "true"}, "gotest2": {}}))
        assert time.monotonic() - started < 8
        [error] = execution.processor_errors
        assert "gotest'" in error and "timed out" in error, error
        assert execution.output == b"hi\n"
        assert wait_gone([pid]) == []
        execution = ex.run(shell_job("j", "echo hi", processors={"gotest": {"append": "<ok>"}}))
        assert execution.processor_errors == [] and execution.output == b"hi\n<ok>"
        assert ex._runtime.plugin_pid("processor", "gotest") not in (None, pid)


def test_a_malformed_handshake_line_is_a_start_failure_quoting_it(tmp_path: Path) -> None:
    d = tmp_path / "plugins"
    d.mkdir()
    script = d / "dkron-processor-garbage"
    script.write_text("#!/bin/sh\necho '1|one|garbage'\nexec sleep 60\n")
    script.chmod(0o755)
    with Executor(tmp_path / "s.db", node_name="n1", plugin_dirs=[d], plugin_timeout=20.0) as ex:
        started = time.monotonic()
        execution = ex.run(shell_job("j", "echo hi", processors={"garbage": {}}))
        assert time.monotonic() - started < 5, "no need to wait for the start timeout"
        [error] = execution.processor_errors
        assert "garbage'" in error and "'1|one|garbage'" in error.replace('"', "'"), error
        assert execution.output == b"hi\n"


def test_plain_garbage_on_stdout_is_quoted_when_the_handshake_never_comes(tmp_path: Path) -> None:
    d = tmp_path / "plugins"
    d.mkdir()
    script = d / "dkron-processor-chatty"
    script.write_text("#!/bin/sh\necho 'hello there'\nexec sleep 60\n")
    script.chmod(0o755)
    with Executor(
        tmp_path / "s.db", node_name="n1", plugin_dirs=[d], plugin_timeout=20.0, plugin_start_timeout=1.0
    ) as ex:
        execution = ex.run(shell_job("j", "echo hi", processors={"chatty": {}}))
        [error] = execution.processor_errors
        assert "chatty'" in error and "hello there" in error and "handshake" in error, error


def test_close_quits_dkron_plugins(tmp_path: Path, plugin_dir: Path) -> None:
    ex = Executor(tmp_path / "s.db", plugin_dirs=[plugin_dir])
    ex.run(shell_job("j", "true", processors={"gotest": {}}))
    pid = ex.plugins.pid("processor", "gotest")
    assert pid and pid_alive(pid)
    ex.close()
    assert wait_gone([pid], 2.0) == []


HOST = """
import sys, time
from dkron_exec import Executor
ex = Executor(":memory:", plugin_dirs=[sys.argv[1]])
ex.run({"name": "j", "command": "true", "processors": {"gotest": {}, "gotest2": {}}})
print(ex.plugins.pid("processor", "gotest"), ex.plugins.pid("processor", "gotest2"), flush=True)
time.sleep(3600)
"""


def test_dkron_plugins_die_with_a_sigkilled_host(plugin_dir: Path) -> None:
    host = subprocess.Popen([sys.executable, "-c", HOST, str(plugin_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert host.stdout is not None
        pids = [int(p) for p in host.stdout.readline().split()]
        assert len(pids) == 2 and all(pid_alive(p) for p in pids)
        host.send_signal(signal.SIGKILL)
        host.wait(5)
        assert wait_gone(pids, 2.0) == []
    finally:
        host.kill()
        host.wait()


def test_no_socket_file_is_left_behind(
    tmp_path: Path, plugin_dir: Path, exec_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The plugins make their sockets in their TMPDIR: a private one, so other processes' do not count.
    sockets = tmp_path / "sockets"
    sockets.mkdir()
    monkeypatch.setenv("TMPDIR", str(sockets))
    with Executor(tmp_path / "s.db", plugin_dirs=[plugin_dir, exec_dir]) as ex:
        ex.run(shell_job("j", "true", processors={"gotest": {}}))
        assert ex.run(dkron_job("gotest", chunks="1")).success
        pids = [ex.plugins.pid("processor", "gotest"), ex.plugins.pid("executor", "gotest")]
        assert None not in pids
        for pid in pids:
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
        assert wait_gone([p for p in pids if p is not None], 2.0) == []
    assert list(sockets.iterdir()) == []


# Executors: go-plugin gRPC.


@pytest.fixture
def exec_dir(tmp_path: Path, binaries: dict[str, Path]) -> Path:
    d = tmp_path / "executors"
    go_plugins.install(d, "dkron-executor-gotest", "gotest", kind="executor")
    go_plugins.install(d, "dkron-executor-gotestv1", "gotestv1", kind="executor")
    go_plugins.install(d, "noopexec", "noop", kind="executor")
    return d


@pytest.fixture
def exe(tmp_path: Path, exec_dir: Path) -> Iterator[Executor]:
    with Executor(tmp_path / "exec.db", node_name="n1", plugin_dirs=[exec_dir], plugin_timeout=10.0) as e:
        yield e


def dkron_job(executor: str, **config: str) -> dict[str, object]:
    return {"name": "e", "executor": executor, "executor_config": config}


def test_the_minimal_noopexec_runs_as_a_jobs_executor(exe: Executor) -> None:
    chunks: list[tuple[bytes, bool]] = []
    execution = exe.run(
        dkron_job("noop", command="hello", update="true"), on_output=lambda c, e: chunks.append((c, e))
    )
    assert execution.success and execution.error is None
    # Streamed once through StatusHelper, and returned again in the response: kept once.
    assert execution.output == b"hello" and chunks == [(b"hello", False)]
    stored = exe.execution("e", execution.key)
    assert stored is not None and stored.output == b"hello" and stored.success
    # Nothing streamed: the response's output is the output.
    chunks.clear()
    execution = exe.run(dkron_job("noop", command="quiet"), on_output=lambda c, e: chunks.append((c, e)))
    assert execution.success and execution.output == b"quiet" and chunks == [(b"quiet", False)]


def test_a_dkron_executor_streams_chunks_then_fails_with_its_error(exe: Executor) -> None:
    chunks: list[tuple[bytes, bool]] = []
    execution = exe.run(
        dkron_job("gotest", chunks="3", with_stderr="true", fail="it broke"),
        on_output=lambda c, e: chunks.append((c, e)),
    )
    want = [(f"{kind} {i}\n".encode(), kind == "err") for i in range(3) for kind in ("out", "err")]
    assert chunks == want
    assert not execution.success and execution.error == "it broke"
    assert execution.output == b"".join(c for c, _ in want) + b"it broke\n"
    stored = exe.execution("e", execution.key)
    assert stored is not None and not stored.success and stored.output == execution.output


def test_the_job_name_and_config_cross_as_dkron_sends_them(exe: Executor) -> None:
    execution = exe.run(dkron_job("gotest", echo="true", command="echo 'a b'", empty=""))
    assert execution.success
    assert execution.output == b"job=e\ncommand=echo 'a b'\necho=true\nempty=\n"


def test_the_v4_0_9_service_names_are_spoken_too(exe: Executor) -> None:
    chunks: list[bytes] = []
    for _ in range(2):  # the first call finds the name, the second uses it
        chunks.clear()
        execution = exe.run(dkron_job("gotestv1", chunks="2"), on_output=lambda c, e: chunks.append(c))
        assert execution.success, execution.error
        assert execution.output == b"out 0\nout 1\n" and chunks == [b"out 0\n", b"out 1\n"]


def test_concurrent_runs_share_one_executor_process_and_keep_their_own_output(exe: Executor) -> None:
    assert exe.run(dkron_job("gotest")).success
    pid = exe.plugins.pid("executor", "gotest")
    results: dict[int, tuple[bytes, list[bytes]]] = {}

    def one(n: int) -> None:
        chunks: list[bytes] = []
        execution = exe.run(dkron_job("gotest", chunks=str(n)), on_output=lambda c, e: chunks.append(c))
        results[n] = (execution.output, chunks)

    threads = [threading.Thread(target=one, args=(n,)) for n in range(1, 9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for n in range(1, 9):
        want = [f"out {i}\n".encode() for i in range(n)]
        assert results[n] == (b"".join(want), want)
    assert exe.plugins.pid("executor", "gotest") == pid


def test_go_plugin_settings_in_the_hosts_environment_do_not_reach_the_plugin(
    tmp_path: Path, exec_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A multiplexed broker or mTLS (which Dkron does not use) would break the connection.
    monkeypatch.setenv("PLUGIN_MULTIPLEX_GRPC", "true")
    monkeypatch.setenv("PLUGIN_CLIENT_CERT", "not a certificate")
    with Executor(tmp_path / "s.db", plugin_dirs=[exec_dir], plugin_timeout=10.0) as ex:
        execution = ex.run(dkron_job("gotest", chunks="2"))
        assert execution.success and execution.output == b"out 0\nout 1\n", execution.error


def test_a_failed_grpc_call_names_the_plugin(exe: Executor) -> None:
    execution = exe.run(dkron_job("gotest", grpc_error="no such thing"))
    error = execution.error or ""
    assert not execution.success and "gotest'" in error
    assert "Execute failed" in error and "no such thing" in error, error
    assert exe.run(dkron_job("gotest", chunks="1")).success


def test_a_hung_executor_is_killed_at_the_jobs_timeout_and_the_next_run_works(exe: Executor) -> None:
    assert exe.run(dkron_job("gotest")).success
    pid = exe.plugins.pid("executor", "gotest")
    assert pid is not None and pid_alive(pid)
    started = time.monotonic()
    execution = exe.run(dkron_job("gotest", chunks="1", hang="true", timeout="1s"))
    assert time.monotonic() - started < 8
    error = execution.error or ""
    assert not execution.success and "gotest'" in error and "timeout 1s" in error, error
    assert execution.output.startswith(b"out 0\n")
    assert wait_gone([pid]) == []
    assert exe.run(dkron_job("gotest", chunks="1")).output == b"out 0\n"
    assert exe.plugins.pid("executor", "gotest") not in (None, pid)


def test_cancelling_a_run_kills_the_hung_executor(exe: Executor) -> None:
    assert exe.run(dkron_job("gotest")).success
    pid = exe.plugins.pid("executor", "gotest")
    assert pid is not None
    results = []
    runner = threading.Thread(target=lambda: results.append(exe.run(dkron_job("gotest", hang="true"))))
    runner.start()
    deadline = time.monotonic() + 10
    while exe.cancel("e") == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    runner.join(10)
    [execution] = results
    assert not execution.success and "cancelled" in (execution.error or "")
    assert wait_gone([pid]) == []
    assert exe.run(dkron_job("gotest", chunks="1")).success


def test_an_executor_crashing_mid_call_fails_that_run_and_restarts(exe: Executor) -> None:
    execution = exe.run(dkron_job("gotest", chunks="2", crash="true"))
    error = execution.error or ""
    assert not execution.success and "gotest'" in error and "exit status 3" in error, error
    assert execution.output.startswith(b"out 0\nout 1\n")
    assert exe.run(dkron_job("gotest", chunks="1")).output == b"out 0\n"


def test_executor_stdout_and_stderr_go_to_logging(exe: Executor, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="dkron_exec.plugin")
    assert exe.run(dkron_job("gotest", stdio="hey")).success
    # Through go-plugin's GRPCStdio stream, and the real stderr.
    want = {"piped stdout hey", "piped stderr hey", "real stderr hey"}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        got = {r.getMessage() for r in caplog.records if r.name == "dkron_exec.plugin.gotest"}
        if all(any(w in g for g in got) for w in want):
            break
        time.sleep(0.05)
    assert all(any(w in g for g in got) for w in want), got
    assert not any("|grpc|" in g for g in got)


def test_a_plugin_of_the_wrong_protocol_for_its_kind_fails_to_start_saying_so(
    tmp_path: Path, binaries: dict[str, Path]
) -> None:
    d = tmp_path / "plugins"
    go_plugins.install(d, "dkron-processor-gotest", "proc", kind="executor")
    go_plugins.install(d, "dkron-executor-gotest", "exec")
    with Executor(tmp_path / "s.db", plugin_dirs=[d], plugin_timeout=20.0) as ex:
        execution = ex.run(dkron_job("proc"))
        error = execution.error or ""
        assert not execution.success and "proc'" in error and "executors speak grpc" in error, error
        execution = ex.run(shell_job("j", "echo hi", processors={"exec": {}}))
        [error] = execution.processor_errors
        assert "exec'" in error and "processors speak netrpc" in error, error


def test_close_shuts_dkron_executors_down(tmp_path: Path, exec_dir: Path) -> None:
    ex = Executor(tmp_path / "s.db", plugin_dirs=[exec_dir])
    assert ex.run(dkron_job("gotest")).success
    pid = ex.plugins.pid("executor", "gotest")
    assert pid and pid_alive(pid)
    ex.close()
    assert wait_gone([pid], 2.0) == []


EXEC_HOST = """
import sys, threading, time
from dkron_exec import Executor
ex = Executor(":memory:", plugin_dirs=[sys.argv[1]])
ex.run({"name": "a", "executor": "gotest", "executor_config": {}})
hang = {"name": "b", "executor": "gotestv1", "executor_config": {"hang": "true"}}
threading.Thread(target=ex.run, args=(hang,)).start()
while ex.plugins.pid("executor", "gotestv1") is None:
    time.sleep(0.01)
print(ex.plugins.pid("executor", "gotest"), ex.plugins.pid("executor", "gotestv1"), flush=True)
threading.Event().wait()
"""


def test_dkron_executors_die_with_a_sigkilled_host(exec_dir: Path) -> None:
    host = subprocess.Popen(
        [sys.executable, "-c", EXEC_HOST, str(exec_dir)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert host.stdout is not None
        pids = [int(p) for p in host.stdout.readline().split()]
        assert len(pids) == 2 and all(pid_alive(p) for p in pids)
        host.send_signal(signal.SIGKILL)
        host.wait(5)
        assert wait_gone(pids, 2.0) == []
    finally:
        host.kill()
        host.wait()


def test_plugbench_calls_noopexec_through_dkrons_client_and_its_status_callback(
    binaries: dict[str, Path],
) -> None:
    # The benches' Go client, on the minimal executor: every call (the warm-up too) streams once.
    command = [str(binaries["plugbench"]), "-mode", "executor", "-plugin", str(binaries["noopexec"])]
    proc = subprocess.run(
        [*command, "-config", "command=hi,update=true", "-duration", "50ms"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    report = json.loads(proc.stdout)
    assert report["mode"] == "executor" and report["calls"] >= 1
    assert report["status_updates"] == report["calls"] + 1
    assert report["calls_per_s"] > 0 and report["p99_us"] >= report["p50_us"] > 0
    # A wrong protocol for the mode is refused at start, naming the plugin.
    proc = subprocess.run(
        [str(binaries["plugbench"]), "-mode", "executor", "-plugin", str(binaries["noopproc"])],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 1 and proc.stdout == ""
    assert f"starting {binaries['noopproc']}" in proc.stderr, proc.stderr
