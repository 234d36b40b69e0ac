"""The log processor: Dkron's block, byte for byte, on the real stdout/stderr of a host process;
forward; the logging target; validation."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from dkron_exec import Execution, Executor, JobError
from dkron_exec._core import log_block
from dkron_exec.processors import ProcessContext, validate_processor_config
from dkron_exec.processors.log import LogProcessor

CTX = ProcessContext(node_name="test-node")


def block(job: str, key: str, output: bytes) -> bytes:
    return b"----- BEGIN OUTPUT job=%s execution=%s -----\n%s\n----- END OUTPUT -----\n" % (
        job.encode(),
        key.encode(),
        output,
    )


def execution(success: bool = True, output: bytes = b"out\n") -> Execution:
    return Execution(
        job_name="job",
        started_at=datetime.now(timezone.utc),
        finished_at=None,
        success=success,
        output=output,
        key="17-node",
    )


def job(name: str, command: str, **log: Any) -> dict[str, Any]:
    return {
        "name": name,
        "executor": "shell",
        "executor_config": {"command": command, "shell": True},
        "processors": {"log": log},
    }


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
    e = executor.run(job("fw", "echo hi", forward=forward))
    assert e.output == (b"hi\n" if kept else b"Output in dkron log")
    assert executor.execution("fw", e.key) == e
    assert capfd.readouterr().out == block("fw", e.key, b"hi\n").decode()


def test_forward_missing_means_false(executor: Executor, capfd: pytest.CaptureFixture[str]) -> None:
    e = executor.run(job("fw", "echo hi"))
    assert e.output == b"Output in dkron log"
    capfd.readouterr()


def test_failure_goes_to_stderr(capfd: pytest.CaptureFixture[str]) -> None:
    LogProcessor().process(execution(success=False, output=b"boom\n"), {}, CTX)
    out, err = capfd.readouterr()
    assert out == "" and err == block("job", "17-node", b"boom\n").decode()


def test_binary_output_is_written_as_is(capfdbinary: pytest.CaptureFixture[bytes]) -> None:
    data = bytes(range(256))
    LogProcessor().process(execution(output=data), {"forward": "true"}, CTX)
    assert capfdbinary.readouterr().out == block("job", "17-node", data)


def test_concurrent_blocks_do_not_interleave(capfdbinary: pytest.CaptureFixture[bytes]) -> None:
    proc = LogProcessor()
    outputs = [bytes([65 + i]) * 20_000 for i in range(8)]

    def run(data: bytes) -> None:
        for _ in range(5):
            proc.process(execution(output=data), {}, CTX)

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


def test_logging_target(caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.INFO, logger="dkron_exec.processors.log")
    proc = LogProcessor()
    out = proc.process(execution(output=b"fine\n"), {"target": "logging"}, CTX)
    proc.process(execution(success=False, output=b"bad\n"), {"target": "logging", "forward": "true"}, CTX)
    assert out.output == b"Output in dkron log"
    ok, bad = caplog.records
    assert ok.name == bad.name == "dkron_exec.processors.log"
    assert (ok.levelno, bad.levelno) == (logging.INFO, logging.ERROR)
    assert ok.getMessage() == block("job", "17-node", b"fine\n").decode()[:-1]
    assert bad.getMessage() == block("job", "17-node", b"bad\n").decode()[:-1]
    assert ok.job_name == "job" and ok.execution_key == "17-node"  # type: ignore[attr-defined]
    assert capfd.readouterr() == ("", "")  # nothing on the descriptors


# -- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "value"), [("forward", "yes"), ("target", "syslog"), ("target", "")])
def test_bad_config_is_a_job_error(key: str, value: str) -> None:
    with pytest.raises(JobError) as info:
        validate_processor_config("log", {key: value})
    assert info.value.field == f"processors.log.{key}"
    assert repr(value) in str(info.value)


def test_good_config_passes() -> None:
    validate_processor_config("log", {})
    validate_processor_config("log", {"forward": "true", "target": "logging"})
    validate_processor_config("log", {"target": "stdio"})
