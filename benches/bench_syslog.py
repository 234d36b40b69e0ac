"""Syslog processor: messages per second to a unix datagram socket.

dkron_exec: the ``syslog`` step run by the Rust chain as a run drives it (``Runtime.process`` with
``repeat``: one crossing for the loop; its sink writes RFC 3164, as Go's log/syslog does), one
message per execution, and with ``per_line`` one message per output line (the sink's batch path).
Python: ``logging.handlers.SysLogHandler`` through a logger. C: ``c/sendto_loop.c``, one ``send`` per
message on a connected socket, with the bytes the sink writes. All three write to the same socket,
drained by a C receiver (``_drain``); the "sink alone" row calls the Rust sink from Python, one call per
message.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import datetime, timezone

import pytest

from . import _baselines, _drain
from ._cases import run_case
from ._registry import Env, Figure, Subject, Target, group
from ._timing import rate

GROUP = "syslog"
OUTPUT = b"backup finished: 1234 files, 56 MB, 0 errors"
# What the sink writes for OUTPUT (local RFC 3164): the C loop sends the same bytes.
MESSAGE = f"<78>Jan  2 15:04:05 dkron[{os.getpid()}]: {OUTPUT.decode()}\n"
LINES = 100  # lines of the per-line execution


def seconds(loop: Callable[[int], object]) -> Callable[[int], float]:
    def work(n: int) -> float:
        t0 = time.perf_counter()
        loop(n)
        return time.perf_counter() - t0

    return work


@group(GROUP)
def figures(env: Env) -> list[Figure]:
    from dkron_exec import Execution, Executor, Job
    from dkron_exec._core import SyslogSink

    n = env.pick(test=2, quick=20_000, full=100_000)
    lines = 2 if env.is_test else LINES
    sock = str(_drain.socket_path(env.results))
    executor = Executor(":memory:", node_name="node")
    config = {"transport": "unixgram", "address": sock}

    def job(syslog: dict[str, str]) -> Job:
        return Job.from_dict({"name": "bench", "command": "true", "processors": {"syslog": syslog}})

    one_job, lines_job = job(config), job({**config, "per_line": "true"})
    now = datetime.now(timezone.utc)
    one = Execution(
        job_name="bench", started_at=now, finished_at=now, success=True, output=OUTPUT, exit_code=0
    )
    many = one.replace(output=b"\n".join([OUTPUT] * lines))
    logger = _drain.python_logger(sock)
    text = OUTPUT.decode()
    sink = SyslogSink({"transport": "unixgram", "address": sock})
    stamp = time.time_ns()

    def c_loop(count: int) -> float:
        return _baselines.run("sendto_loop", sock, count, MESSAGE, results=env.results)["seconds"]

    # The step as a run drives it: inside the Rust chain, one crossing for `count` executions.
    def dkron_one(count: int) -> None:
        executor._runtime.process(one_job.plan, one, repeat=count)

    def dkron_lines(count: int) -> None:
        executor._runtime.process(lines_job.plan, many, repeat=count // lines)

    def sink_alone(count: int) -> None:
        for _ in range(count):
            sink.send(job_name="bench", key="k", success=True, exit_code=0, output=OUTPUT, timestamp_ns=stamp)

    def python_loop(count: int) -> None:
        for _ in range(count):
            logger.info(text)

    python = Subject("python", rate(n, 1, seconds(python_loop)), "logging.handlers.SysLogHandler")
    c = Subject("c", rate(n, 1, c_loop), "send() loop on a connected unix datagram socket")
    target = Target("ratio", 0.8, "c", "syslog vs C")
    return [
        Figure(
            id="syslog",
            title="syslog processor, one message per execution",
            unit="messages/s",
            subjects=[
                Subject("dkron_exec", rate(n, 1, seconds(dkron_one)), "the syslog step in the Rust chain"),
                python,
                c,
            ],
            targets=[target],
        ),
        Figure(
            id="syslog-per-line",
            title=f"syslog processor, per_line ({lines} lines per execution)",
            unit="messages/s",
            subjects=[
                Subject("dkron_exec", rate(n // lines * lines, 1, seconds(dkron_lines)), "per_line=true"),
                python,
                c,
            ],
            targets=[target],
        ),
        Figure(
            id="syslog-sink",
            title="syslog Rust sink alone (no processor), one message per call",
            unit="messages/s",
            subjects=[
                Subject("dkron_exec", rate(n, 1, seconds(sink_alone)), "_core.SyslogSink.send"),
                python,
                c,
            ],
        ),
    ]


def test_syslog(case: tuple[Figure, Subject], request: pytest.FixtureRequest) -> None:
    run_case(case, request)
