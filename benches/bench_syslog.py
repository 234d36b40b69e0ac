"""Syslog messages per second, in one run: the syslog processor and its Rust sink next to the
physical limit (a C ``sendto`` loop, compiled here with ``cc``) and the plain-Python way
(``logging.handlers.SysLogHandler``), all to the same unix datagram socket.

A separate process drains the socket, so no one measured waits on a full queue for long and the
GIL is not shared with the receiver. Rates land in ``extra_info["messages_per_s"]``; nothing is
asserted about them (small shared machines are noisy).
"""

from __future__ import annotations

import logging
import logging.handlers
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from dkron_exec._core import SyslogSink
from dkron_exec.execution import Execution
from dkron_exec.processors import ProcessContext
from dkron_exec.processors.syslog import SyslogProcessor

MESSAGES = 20_000
OUTPUT = b"backup finished: 1234 files, 56 MB, 0 errors"
BUILD = Path(__file__).parent / "build"

C_SENDTO = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>

/* argv: socket path, count, message. One connected sendto per message, as a syslog client. */
int main(int argc, char **argv) {
    if (argc != 4) return 2;
    long count = atol(argv[2]);
    const char *msg = argv[3];
    size_t len = strlen(msg);
    int fd = socket(AF_UNIX, SOCK_DGRAM, 0);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    strncpy(addr.sun_path, argv[1], sizeof addr.sun_path - 1);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) { perror("connect"); return 1; }
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < count; i++) {
        if (sendto(fd, msg, len, 0, NULL, 0) != (ssize_t)len) { perror("sendto"); return 1; }
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("%.9f\n", (double)(b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9);
    return 0;
}
"""

DRAIN = """
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
s.bind(sys.argv[1])
print("ready", flush=True)
buf = bytearray(1 << 17)
while True:
    s.recv_into(buf)
"""


@pytest.fixture(scope="module")
def sock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("syslog-bench") / "log.sock"
    drain = subprocess.Popen([sys.executable, "-c", DRAIN, str(path)], stdout=subprocess.PIPE)
    assert drain.stdout is not None and drain.stdout.readline() == b"ready\n"
    yield path
    drain.kill()
    drain.wait()


@pytest.fixture(scope="module")
def c_sendto() -> Path:
    cc = shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler (cc) for the baseline")
    BUILD.mkdir(exist_ok=True)
    src = BUILD / "sendto_loop.c"
    exe = BUILD / "sendto_loop"
    src.write_text(C_SENDTO)
    subprocess.run([cc, "-O2", "-o", str(exe), str(src)], check=True)
    return exe


def _rate(benchmark: Any, count: int, run: Callable[[], float | None]) -> None:
    """Runs ``run`` (``count`` messages; it may return its own measured seconds) a few rounds."""
    timings: list[float] = []

    def once() -> None:
        start = time.perf_counter()
        own = run()
        timings.append(own if own is not None else time.perf_counter() - start)

    benchmark.pedantic(once, rounds=3, iterations=1, warmup_rounds=1)
    best = min(timings)
    benchmark.extra_info["messages"] = count
    benchmark.extra_info["messages_per_s"] = round(count / best)


def _execution() -> Execution:
    now = datetime.now(timezone.utc)
    return Execution(
        job_name="bench", started_at=now, finished_at=now, success=True, output=OUTPUT, exit_code=0
    )


@pytest.mark.benchmark(group="syslog-messages")
def test_c_sendto_loop(benchmark: Any, sock: Path, c_sendto: Path) -> None:
    # The same bytes the sink writes for OUTPUT (RFC 3164, Go's local form).
    message = f"<78>Jan  2 15:04:05 dkron[1234]: {OUTPUT.decode()}\n"

    def run() -> float:
        argv = [str(c_sendto), str(sock), str(MESSAGES), message]
        out = subprocess.run(argv, check=True, capture_output=True)
        return float(out.stdout)  # its own timing: the process start is not counted

    _rate(benchmark, MESSAGES, run)


@pytest.mark.benchmark(group="syslog-messages")
def test_rust_sink_send(benchmark: Any, sock: Path) -> None:
    sink = SyslogSink({"transport": "unixgram", "address": str(sock)})
    now = time.time_ns()

    def run() -> None:
        for _ in range(MESSAGES):
            sink.send(job_name="bench", key="k", success=True, exit_code=0, output=OUTPUT, timestamp_ns=now)

    _rate(benchmark, MESSAGES, run)


@pytest.mark.benchmark(group="syslog-messages")
def test_syslog_processor(benchmark: Any, sock: Path) -> None:
    proc = SyslogProcessor()
    config = {"transport": "unixgram", "address": str(sock), "reporting_node": "n1"}
    ctx = ProcessContext(node_name="n1")
    execution = _execution()

    def run() -> None:
        for _ in range(MESSAGES):
            proc.process(execution, config, ctx)

    _rate(benchmark, MESSAGES, run)
    proc.close()


@pytest.mark.benchmark(group="syslog-messages")
def test_rust_sink_per_line(benchmark: Any, sock: Path) -> None:
    """One execution of 1,000 lines, one message per line: the sink's batch path."""
    sink = SyslogSink({"transport": "unixgram", "address": str(sock), "per_line": "true"})
    lines = b"\n".join([OUTPUT] * 1000)
    now = time.time_ns()

    def run() -> None:
        for _ in range(MESSAGES // 1000):
            sink.send(job_name="bench", key="k", success=True, exit_code=0, output=lines, timestamp_ns=now)

    _rate(benchmark, MESSAGES, run)


@pytest.mark.benchmark(group="syslog-messages")
def test_python_sysloghandler(benchmark: Any, sock: Path) -> None:
    handler = logging.handlers.SysLogHandler(
        address=str(sock), facility=logging.handlers.SysLogHandler.LOG_CRON
    )
    handler.ident = "dkron[1234]: "
    logger = logging.getLogger("bench-syslog")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    text = OUTPUT.decode()

    def run() -> None:
        for _ in range(MESSAGES):
            logger.info(text)

    try:
        _rate(benchmark, MESSAGES, run)
    finally:
        logger.removeHandler(handler)
        handler.close()
