"""Syslog processor: messages per second to a unix datagram socket.

dkron_exec: ``SyslogProcessor.process`` (its Rust sink writes RFC 3164, as Go's log/syslog does), one
message per execution, and with ``per_line`` one message per output line (the sink's batch path).
Python: ``logging.handlers.SysLogHandler`` through a logger. C: ``c/sendto_loop.c``, one ``send`` per
message on a connected socket, with the bytes the sink writes. All three write to the same socket,
drained by a C receiver (``_drain``); the "sink alone" row calls the Rust sink without the processor.
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
    from dkron_exec import Execution
    from dkron_exec._core import SyslogSink
    from dkron_exec.processors import ProcessContext
    from dkron_exec.processors.syslog import SyslogProcessor

    n = env.pick(test=2, quick=20_000, full=100_000)
    lines = 2 if env.is_test else LINES
    sock = str(_drain.socket_path(env.results))
    proc = SyslogProcessor()
    config = {"transport": "unixgram", "address": sock, "reporting_node": "node"}
    per_line = {**config, "per_line": "true"}
    ctx = ProcessContext(node_name="node")
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

    def dkron_one(count: int) -> None:
        for _ in range(count):
            proc.process(one, config, ctx)

    def dkron_lines(count: int) -> None:
        for _ in range(count // lines):
            proc.process(many, per_line, ctx)

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
                Subject("dkron_exec", rate(n, 1, seconds(dkron_one)), "SyslogProcessor.process"),
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
