"""Executor.run against real processes: the shell executor's behaviour, end to end."""

from __future__ import annotations

import base64
import hashlib
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import pid_alive, wait_gone
from dkron_exec import ConcurrencyError, Execution, Executor, ExecutorClosedError, JobError
from jobs import shell_job


def test_direct_command_is_split_like_a_shell(executor: Executor) -> None:
    e = executor.run(shell_job("job", "printf '%s|' 'a b' c", shell=False))
    assert e.success and e.exit_code == 0 and e.error is None
    assert e.output == b"a b|c|"


def test_shell_true_runs_through_sh(executor: Executor) -> None:
    e = executor.run(shell_job("job", "echo abc | tr a-c x-z; echo $((6*7))"))
    assert e.output == b"xyz\n42\n"


def test_short_form_from_the_seed(executor: Executor) -> None:
    e = executor.run({"name": "job_name", "command": "/bin/true", "schedule": "@every 2m"})
    assert e.success and e.job_name == "job_name"


def test_failure_records_exit_code_and_error(executor: Executor) -> None:
    e = executor.run(shell_job("job", "echo before; exit 3"))
    assert not e.success
    assert e.exit_code == 3
    assert e.error == "exit status 3"
    assert e.output == b"before\nexit status 3\n"
    assert executor.execution("job", e.key) == e


def test_missing_program_is_a_stored_failure(executor: Executor) -> None:
    e = executor.run(shell_job("job", "/no/such/program", shell=False))
    assert not e.success and e.exit_code is None
    assert "could not start" in (e.error or "")
    assert executor.executions("job")[0].key == e.key


@pytest.mark.parametrize(
    "env",
    ["FOO=one,BAR=two words", '["FOO=one", "BAR=two words"]', {"FOO": "one", "BAR": "two words"}],
    ids=["comma", "list", "object"],
)
def test_env_forms_and_job_name(executor: Executor, env: object) -> None:
    e = executor.run(shell_job("env-job", 'echo "$FOO/$BAR/$ENV_JOB_NAME"', env=env))
    assert e.output == b"one/two words/env-job\n"


def test_env_overrides_the_host_environment(executor: Executor, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DKRON_EXEC_TEST_VAR", "host")
    e = executor.run(shell_job("job", "echo $DKRON_EXEC_TEST_VAR", env="DKRON_EXEC_TEST_VAR=job"))
    assert e.output == b"job\n"


def test_cwd(executor: Executor, tmp_path: Path) -> None:
    e = executor.run(shell_job("job", "pwd", shell=False, cwd=str(tmp_path)))
    assert e.output.decode().strip() == str(tmp_path)


def test_a_bad_cwd_is_a_stored_failure(executor: Executor) -> None:
    e = executor.run(shell_job("job", "pwd", shell=False, cwd="/no/such/dir"))
    assert not e.success and "could not start" in (e.error or "")


def test_one_mib_payload_goes_to_stdin(executor: Executor) -> None:
    payload = os.urandom(1 << 20)
    e = executor.run(shell_job("job", "sha256sum", shell=False, payload=base64.b64encode(payload).decode()))
    assert e.success, e.error
    assert e.output.split()[0].decode() == hashlib.sha256(payload).hexdigest()


def test_payload_to_a_job_that_never_reads_stdin(executor: Executor) -> None:
    payload = base64.b64encode(os.urandom(1 << 20)).decode()
    e = executor.run(shell_job("job", "echo ignored", shell=False, payload=payload))
    assert e.success and e.output == b"ignored\n"


def test_timeout_kills_the_whole_tree(executor: Executor, tmp_path: Path) -> None:
    # A grandchild ignores SIGTERM and keeps stdout open; it writes its pid so we can look for it.
    pidfile = tmp_path / "pids"
    script = f"sh -c 'trap \"\" TERM; echo $$ >> {pidfile}; exec sleep 60' & echo $$ >> {pidfile}; sleep 60"
    t0 = time.monotonic()
    e = executor.run(shell_job("job", script, timeout="1s"))
    elapsed = time.monotonic() - t0
    assert elapsed < 3.0, elapsed
    assert not e.success
    assert e.error == f"shell: Job '{script}' execution time exceeding defined timeout 1s. Job was killed"
    assert e.output.endswith(e.error.encode() + b"\n")
    pids = [int(p) for p in pidfile.read_text().split()]
    assert len(pids) == 2
    assert wait_gone(pids, 1.0) == []


def test_mem_limit_kills_the_job(executor: Executor) -> None:
    script = "python3 -c 'import time; b = bytearray(300 << 20); time.sleep(30)'"
    t0 = time.monotonic()
    e = executor.run(shell_job("job", script, mem_limit="64MB"))
    assert time.monotonic() - t0 < 10
    assert not e.success
    assert "memory limit of 67108864 bytes" in (e.error or "")


def test_output_over_the_limit_keeps_the_tail_and_the_error() -> None:
    with Executor(":memory:", output_limit=4096) as ex:
        e = ex.run(shell_job("job", "seq 1 200000; exit 7"))
    assert e.output_truncated
    assert len(e.output) == 4096
    assert e.output.endswith(b"199999\n200000\nexit status 7\n")
    assert e.output_size == len("".join(f"{i}\n" for i in range(1, 200001)))


def test_default_output_limit_is_dkrons() -> None:
    with Executor(":memory:") as ex:
        e = ex.run(shell_job("job", "head -c 300000 /dev/zero", shell=False))
    assert len(e.output) == 256_000 and e.output_truncated and e.output_size == 300_000


def test_execution_fields(executor: Executor) -> None:
    before = time.time()
    e = executor.run(shell_job("job", "true", shell=False))
    assert isinstance(e, Execution)
    assert e.node_name == "test-node" and e.attempt == 1 and e.job_name == "job"
    assert e.started_at.tzinfo is not None and e.finished_at is not None
    assert before - 1 < e.started_at.timestamp() <= e.finished_at.timestamp() < time.time() + 1
    nanos, node = e.key.split("-", 1)
    assert node == "test-node" and abs(int(nanos) / 1e9 - e.started_at.timestamp()) < 1e-5
    assert abs(e.group / 1e9 - before) < 5
    d = e.to_dict()
    assert d["id"] == e.key and d["success"] is True and d["output"] == ""
    written = e.to_json()
    assert isinstance(written, str)  # text, like json.dumps
    assert Execution.from_json(written) == e


def test_retries_share_a_group_and_count_attempts(executor: Executor) -> None:
    job = shell_job("flaky", "echo try; exit 1", retries=2)
    e = executor.run(job)
    assert not e.success and e.attempt == 3
    stored = executor.executions("flaky")
    assert [x.attempt for x in stored] == [3, 2, 1]
    assert len({x.group for x in stored}) == 1


def test_retry_stops_at_the_first_success(executor: Executor, tmp_path: Path) -> None:
    counter = tmp_path / "n"
    job = shell_job("second", f"echo x >> {counter}; test $(wc -l < {counter}) -ge 2", retries=5)
    e = executor.run(job)
    assert e.success and e.attempt == 2
    assert [x.success for x in executor.executions("second")] == [True, False]


def test_forbid_refuses_a_second_run(executor: Executor) -> None:
    job = shell_job("exclusive", "sleep 1", shell=False, concurrency="forbid")
    first: list[Execution] = []
    t = threading.Thread(target=lambda: first.append(executor.run(job)))
    t.start()
    time.sleep(0.3)
    with pytest.raises(ConcurrencyError, match="exclusive"):
        executor.run(job)
    t.join()
    assert first[0].success
    # Once the first run is over, the job may run again.
    assert executor.run(shell_job("exclusive", "true", shell=False, concurrency="forbid")).success
    assert len(executor.executions("exclusive")) == 2


def test_allow_runs_concurrently(executor: Executor) -> None:
    job = shell_job("parallel", "sleep 0.5", shell=False)
    results: list[Execution] = []
    threads = [threading.Thread(target=lambda: results.append(executor.run(job))) for _ in range(4)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert time.monotonic() - t0 < 2.0
    assert all(e.success for e in results) and len(results) == 4


def test_unknown_executor_is_refused_and_nothing_is_stored(executor: Executor) -> None:
    with pytest.raises(JobError, match=r"^executor: unknown executor 'nonesuch': known: shell"):
        executor.run({"name": "x", "executor": "nonesuch", "executor_config": {}})
    assert executor.executions("x") == []


@pytest.mark.skipif(os.geteuid() != 0, reason="su needs root")
def test_su_runs_as_another_user(executor: Executor) -> None:
    e = executor.run(shell_job("job", "id -u -n", shell=False, su="nobody"))
    assert e.success, e.error
    assert e.output == b"nobody\n"


def test_close_kills_running_jobs(tmp_path: Path) -> None:
    ex = Executor(":memory:")
    pidfile = tmp_path / "pid"
    result: list[Execution] = []
    job = shell_job("job", f"echo $$ > {pidfile}; exec sleep 60")
    t = threading.Thread(target=lambda: result.append(ex.run(job)))
    t.start()
    deadline = time.monotonic() + 5
    while not pidfile.exists() or not pidfile.read_text().strip():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    pid = int(pidfile.read_text())
    assert pid_alive(pid)
    ex.close()
    t.join(5)
    assert not t.is_alive()
    assert wait_gone([pid]) == []
    assert result and not result[0].success
    with pytest.raises(ExecutorClosedError):
        ex.run(shell_job("job", "true", shell=False))


def test_retries_wait_dkrons_backoff(tmp_path: Path) -> None:
    # Dkron's delay before attempt n + 1 is (log2(elapsed / base) + n) * base, the logarithm
    # floored at zero: for attempts much shorter than the base, n * base (run::retry_delay's
    # unit tests cover the formula). Each attempt writes the time it started.
    base = 0.3
    starts = tmp_path / "starts"
    with Executor(":memory:", retry_backoff=base) as ex:
        e = ex.run(shell_job("backoff", f"date +%s.%N >> {starts}; exit 1", retries=2))
    assert not e.success and e.attempt == 3
    first, second, third = (float(t) for t in starts.read_text().split())
    gaps = [second - first, third - second]
    assert base <= gaps[0] < base + 0.4, gaps
    assert 2 * base <= gaps[1] < 2 * base + 0.4, gaps


def _start_in_thread(executor: Executor, job: dict[str, Any]) -> tuple[threading.Thread, list[Execution]]:
    result: list[Execution] = []
    t = threading.Thread(target=lambda: result.append(executor.run(job)))
    t.start()
    return t, result


def _wait_for_pid(pidfile: Path) -> int:
    deadline = time.monotonic() + 5
    while not (pidfile.exists() and pidfile.read_text().strip()):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    return int(pidfile.read_text())


def test_cancel_kills_a_running_job_and_stores_it(executor: Executor, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    job = shell_job("long", f"echo $$ > {pidfile}; echo started; exec sleep 60", retries=3)
    t, result = _start_in_thread(executor, job)
    pid = _wait_for_pid(pidfile)
    assert executor.cancel("other") == 0
    assert executor.cancel("long") == 1
    t.join(5)
    assert not t.is_alive()
    [e] = result
    assert not e.success and e.attempt == 1  # no retry after a cancel
    assert e.error == "shell: Job 'long' was cancelled. Job was killed" and e.output.startswith(b"started\n")
    assert e.output_text.splitlines()[-1] == e.error
    assert wait_gone([pid]) == []
    assert executor.executions("long") == [e]
    assert executor.cancel("long") == 0


async def test_cancel_reaches_async_runs(executor: Executor) -> None:
    import asyncio

    task = asyncio.create_task(executor.run_async(shell_job("a-long", "sleep 60", shell=False)))
    for _ in range(100):
        if executor.running():
            break
        await asyncio.sleep(0.02)
    assert executor.cancel("a-long") == 1
    e = await asyncio.wait_for(task, 5)
    assert not e.success and e.error == "shell: Job 'a-long' was cancelled. Job was killed"
