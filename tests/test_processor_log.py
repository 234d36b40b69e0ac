"""The log processor: Dkron's block, byte for byte, on the real stdout/stderr of a host process;
forward; the logging target; validation."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from dkron_exec import Execution, Executor, Job, JobError
from dkron_exec._core import log_block
from jobs import an_execution, shell_job


def block(job: str, key: str, output: bytes) -> bytes:
    return b"----- BEGIN OUTPUT job=%s execution=%s -----\n%s\n----- END OUTPUT -----\n" % (
        job.encode(),
        key.encode(),
        output,
    )


def log_job(**log: Any) -> dict[str, Any]:
    """A job whose only processor is log with this config (for ``Executor.process``)."""
    return shell_job("job", "true", processors={"log": log})


def execution(success: bool = True, output: bytes = b"out\n") -> Execution:
    """An execution of ``job`` keyed ``17-node``."""
    return an_execution("job", started_ns=17, success=success, output=output)


HOST = """
import json, sys
from dkron_exec import Executor

print("python before", flush=False)  # buffered: must still come out before the block
with Executor(":memory:", node_name="host") as ex:
    ok = ex.run({"name": "ok-job", "executor": "shell",
                 "executor_config": {"command": "printf 'hello\\\\nworld'", "shell": True},
                 "processors": {"log": {"forward": False}}})
    bad = ex.run({"name": "bad-job", "executor": "shell",
                  "executor_config": {"command": "echo oops; exit 3", "shell": True},
                  "processors": {"log": {"forward": "true"}}})
print("python after")
with open(sys.argv[1], "w") as f:
    json.dump({"ok": [ok.key, ok.output.decode()], "bad": [bad.key, bad.output.decode()]}, f)
"""


def test_block_on_the_real_stdout_and_stderr_of_a_host(tmp_path: Path) -> None:
    result = tmp_path / "result.json"
    r = subprocess.run([sys.executable, "-c", HOST, str(result)], capture_output=True, check=True)
    got = json.loads(result.read_text())
    ok_key, ok_output = got["ok"]
    bad_key, bad_output = got["bad"]
    assert ok_output == "Output in dkron log"  # forward false (a JSON boolean)
    assert bad_output == "oops\nexit status 3\n"  # forward "true" (a string)
    assert r.stdout == (
        b"python before\n"
        + b"----- BEGIN OUTPUT job=ok-job execution="
        + ok_key.encode()
        + b" -----\n"
        + b"hello\nworld"
        + b"\n----- END OUTPUT -----\n"
        + b"python after\n"
    )
    assert r.stderr == block("bad-job", bad_key, b"oops\nexit status 3\n")


@pytest.mark.parametrize(
    ("forward", "kept"), [(True, True), ("true", True), (False, False), ("false", False)]
)
def test_forward(executor: Executor, capfd: pytest.CaptureFixture[str], forward: Any, kept: bool) -> None:
    e = executor.run(shell_job("fw", "echo hi", processors={"log": {"forward": forward}}))
    assert e.output == (b"hi\n" if kept else b"Output in dkron log")
    assert executor.execution("fw", e.key) == e
    assert capfd.readouterr().out == block("fw", e.key, b"hi\n").decode()


def test_forward_missing_means_false(executor: Executor, capfd: pytest.CaptureFixture[str]) -> None:
    e = executor.run(shell_job("fw", "echo hi", processors={"log": {}}))
    assert e.output == b"Output in dkron log"
    capfd.readouterr()


def test_failure_goes_to_stderr(executor: Executor, capfd: pytest.CaptureFixture[str]) -> None:
    out = executor.process(log_job(), execution(success=False, output=b"boom\n"))
    assert out.output == b"Output in dkron log" and out.processor_errors == []
    stdout, stderr = capfd.readouterr()
    assert stdout == "" and stderr == block("job", "17-node", b"boom\n").decode()


def test_binary_output_is_written_as_is(
    executor: Executor, capfdbinary: pytest.CaptureFixture[bytes]
) -> None:
    data = bytes(range(256))
    out = executor.process(log_job(forward="true"), execution(output=data))
    assert out.output == data
    assert capfdbinary.readouterr().out == block("job", "17-node", data)


def test_concurrent_blocks_do_not_interleave(
    executor: Executor, capfdbinary: pytest.CaptureFixture[bytes]
) -> None:
    job = Job.from_dict(log_job())
    outputs = [bytes([65 + i]) * 20_000 for i in range(8)]

    def run(data: bytes) -> None:
        for _ in range(5):
            executor.process(job, execution(output=data))

    threads = [threading.Thread(target=run, args=(d,)) for d in outputs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out = capfdbinary.readouterr().out
    blocks = [block("job", "17-node", d) for d in outputs]
    assert len(out) == 5 * sum(len(b) for b in blocks)
    # Cut the stream at each BEGIN: every piece must be one whole block.
    pieces = out.split(b"----- BEGIN")[1:]
    assert sorted(b"----- BEGIN" + p for p in pieces) == sorted(blocks * 5)


def test_log_block_matches_dkron() -> None:
    assert (
        log_block("j", "1-n", b"x\n")
        == b"----- BEGIN OUTPUT job=j execution=1-n -----\nx\n\n----- END OUTPUT -----\n"
    )


# -- logging target ------------------------------------------------------------------------------


def test_logging_target(
    executor: Executor, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.INFO, logger="dkron_exec.processors.log")
    out = executor.process(log_job(target="logging"), execution(output=b"fine\n"))
    forwarded = executor.process(
        log_job(target="logging", forward="true"), execution(success=False, output=b"bad\n")
    )
    assert out.output == b"Output in dkron log"
    assert forwarded.output == b"bad\n"
    ok, bad = caplog.records
    assert ok.name == bad.name == "dkron_exec.processors.log"
    assert (ok.levelno, bad.levelno) == (logging.INFO, logging.ERROR)
    assert ok.getMessage() == block("job", "17-node", b"fine\n").decode()[:-1]
    assert bad.getMessage() == block("job", "17-node", b"bad\n").decode()[:-1]
    assert ok.job_name == "job" and ok.execution_key == "17-node"  # type: ignore[attr-defined]
    assert capfd.readouterr() == ("", "")  # nothing on the descriptors


# -- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [("forward", "yes"), ("target", "syslog"), ("target", ""), ("taget", "logging")],
)
def test_bad_config_is_a_job_error(key: str, value: str) -> None:
    with pytest.raises(JobError) as info:
        Job.from_dict(log_job(**{key: value}))
    assert info.value.field == f"processors.log.{key}"
    assert info.value.value == value
    assert repr(value) in str(info.value)


def test_good_config_passes() -> None:
    for good in ({}, {"forward": "true", "target": "logging"}, {"target": "stdio"}):
        assert Job.from_dict(log_job(**good)).processors == {"log": good}
