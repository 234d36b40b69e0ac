"""Files processor throughput, against its physical limit and the plain-Python way, in one run.

Each benchmarked call writes ``N`` log files of ``SIZE`` bytes:

* ``c_loop``: a small C program doing the same system calls per file (open O_EXCL, fchmod,
  write, close, rename), compiled here with ``cc``: the physical limit of this machine (its
  wall time includes starting the program; ``loop_executions_per_s`` is the loop alone);
* ``python_open_write``: ``open(path, "wb").write(data)``, the plain-Python way (not atomic);
* ``python_atomic``: the same with a temporary file and ``os.replace`` (what the processor does);
* ``files_processor``: ``FilesProcessor.process`` with ``forward`` false (the output becomes the path).

``extra_info["executions_per_s"]`` holds the rate. No timing is asserted: these machines are
shared and noisy; ratios within one run are what to read.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from dkron_exec import Execution
from dkron_exec.processors import ProcessContext
from dkron_exec.processors.files import FilesProcessor

N = 500
SIZE = 1024
DATA = b"x" * (SIZE - 1) + b"\n"
_seq = itertools.count()

C_SOURCE = r"""
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    const char *dir = argv[1];
    long first = atol(argv[2]), n = atol(argv[3]), size = atol(argv[4]);
    char *buf = malloc(size), tmp[4096], dst[4096];
    memset(buf, 'x', size);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long i = first; i < first + n; i++) {
        snprintf(tmp, sizeof tmp, "%s/.%ld-node.log.tmp", dir, i);
        snprintf(dst, sizeof dst, "%s/%ld-node.log", dir, i);
        int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0 || fchmod(fd, 0644) || write(fd, buf, size) != size || close(fd) || rename(tmp, dst)) {
            perror(tmp);
            return 1;
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("%.9f\n", (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
    return 0;
}
"""


@pytest.fixture(scope="module")
def c_loop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler (cc) to build the baseline")
    build = tmp_path_factory.mktemp("c")
    (build / "loop.c").write_text(C_SOURCE)
    subprocess.run([cc, "-O2", "-o", str(build / "loop"), str(build / "loop.c")], check=True)
    return build / "loop"


def record(benchmark: Any, fn: Callable[[], None]) -> None:
    started = time.perf_counter()
    benchmark.pedantic(fn, rounds=5, iterations=1, warmup_rounds=1)
    stats = getattr(benchmark, "stats", None)
    # With --benchmark-disable there are no stats: time the single call ourselves.
    seconds = stats.stats.mean if stats else time.perf_counter() - started
    benchmark.extra_info["executions_per_s"] = round(N / seconds)


@pytest.mark.benchmark(group="files: one 1 KiB log file per execution")
def test_c_loop(benchmark: Any, c_loop: Path, tmp_path: Path) -> None:
    inside: list[float] = []

    def run() -> None:
        first = next(_seq) * N
        args = [str(c_loop), str(tmp_path), str(first), str(N), str(SIZE)]
        inside.append(float(subprocess.run(args, check=True, capture_output=True).stdout))

    record(benchmark, run)
    # The loop alone, without starting the program: the physical limit proper.
    benchmark.extra_info["loop_executions_per_s"] = round(N / min(inside))


@pytest.mark.benchmark(group="files: one 1 KiB log file per execution")
def test_python_open_write(benchmark: Any, tmp_path: Path) -> None:
    def run() -> None:
        first = next(_seq) * N
        for i in range(first, first + N):
            with open(tmp_path / f"{i}-node.log", "wb") as f:
                f.write(DATA)

    record(benchmark, run)


@pytest.mark.benchmark(group="files: one 1 KiB log file per execution")
def test_python_atomic(benchmark: Any, tmp_path: Path) -> None:
    def run() -> None:
        first = next(_seq) * N
        for i in range(first, first + N):
            tmp = tmp_path / f".{i}-node.log.tmp"
            with open(tmp, "xb") as f:
                os.fchmod(f.fileno(), 0o644)
                f.write(DATA)
            os.replace(tmp, tmp_path / f"{i}-node.log")

    record(benchmark, run)


@pytest.mark.benchmark(group="files: one 1 KiB log file per execution")
def test_files_processor(benchmark: Any, tmp_path: Path) -> None:
    proc = FilesProcessor()
    config = {"log_dir": str(tmp_path), "reporting_node": "node"}
    ctx = ProcessContext(node_name="node")
    started = datetime.now(timezone.utc)
    template = Execution(job_name="bench", started_at=started, finished_at=started, success=True, output=DATA)

    def run() -> None:
        first = next(_seq) * N
        for i in range(first, first + N):
            proc.process(template.replace(key=f"{i}-node"), config, ctx)

    record(benchmark, run)
    assert len(os.listdir(tmp_path)) >= N
