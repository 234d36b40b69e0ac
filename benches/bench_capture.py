"""Output capture: a job writing S bytes (1 KB ... 100 MB), and the host's peak RSS growth while it runs.

dkron_exec keeps the last 256,000 bytes (Dkron's limit) and counts the rest; ``subprocess.run`` keeps
everything; the C reader (``c/pipe_reader.c``) reads through a 64 KiB buffer and keeps nothing. The job is
``c/writer.c``, writing in 64 KiB chunks, the same program for all three.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from . import _baselines
from ._cases import run_case
from ._registry import Env, Figure, Subject, Target, group
from ._rss import growth_mib
from ._subjects import POPEN_KWARGS, check, executor, job
from ._timing import rate, timed_loop

GROUP = "capture"
SIZES = (1_000, 10_000, 100_000, 1_000_000, 10_000_000, 100_000_000)
TEST_SIZES = (1_000, 1_000_000)
FLAT_MIB = 8.0  # "flat": at most this much peak RSS growth, whatever the output size


def label(size: int) -> str:
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if size >= scale:
            return f"{size / scale:g} {unit}"
    return f"{size} B"


def throughput(env: Env, writer: Path, size: int) -> Figure:
    # Enough runs per sample to move ~200 MB (500 MB in full), at most 100 runs: short samples are
    # at the mercy of one scheduler hiccup.
    budget = env.pick(test=size, quick=200_000_000, full=500_000_000)
    n = max(1, min(100 if not env.is_test else 1, budget // size))
    ex, spec = executor(), job("capture", f"{writer} {size}")

    def dkron() -> None:
        check(ex.run(spec), size)

    def plain() -> None:
        subprocess.run([str(writer), str(size)], check=True, **POPEN_KWARGS)

    def c_loop(count: int) -> float:
        return _baselines.run("pipe_reader", count, writer, size, results=env.results)["seconds"]

    return Figure(
        id=f"capture-{size}",
        title=f"capture {label(size)}",
        unit="MB/s",
        subjects=[
            Subject("dkron_exec", rate(n, size / 1e6, timed_loop(dkron)), "Executor.run, keeps 256,000 B"),
            Subject("python", rate(n, size / 1e6, timed_loop(plain)), "subprocess.run(capture_output)"),
            Subject("c", rate(n, size / 1e6, c_loop), "posix_spawn + 64 KiB read loop, keeps nothing"),
        ],
        targets=[Target("ratio", 0.8, "c", "output capture vs C")],
        series="capture",
        x=size,
    )


def memory(env: Env, writer: Path, size: int) -> Figure:
    def c_reader() -> float:
        out = _baselines.run("pipe_reader", 1, writer, size, results=env.results)
        return (out["rss_after_kb"] - out["rss_before_kb"]) / 1024

    return Figure(
        id=f"capture-rss-{size}",
        title=f"peak RSS growth, capture {label(size)}",
        unit="MiB",
        subjects=[
            Subject("dkron_exec", lambda: growth_mib("dkron_exec", writer, size), "fresh process"),
            Subject("python", lambda: growth_mib("python", writer, size), "fresh process"),
            Subject("c", c_reader, "peak RSS (VmHWM) of the C reader"),
        ],
        targets=[Target("at_most", FLAT_MIB, label="flat host memory as output grows")],
        higher_is_better=False,
        series="capture-rss",
        x=size,
        timed=False,
    )


@group(GROUP)
def figures(env: Env) -> list[Figure]:
    writer = _baselines.binary("writer", env.results)
    sizes = TEST_SIZES if env.is_test else SIZES
    return [*(throughput(env, writer, s) for s in sizes), *(memory(env, writer, s) for s in sizes)]


def test_capture(case: tuple[Figure, Subject], request: pytest.FixtureRequest) -> None:
    run_case(case, request)
