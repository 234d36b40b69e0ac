"""Spawn: ``/bin/true`` one at a time, and with N in flight (issue 2's spawn benchmark).

dkron_exec: ``Executor(":memory:").run`` / ``run_async`` + asyncio. Python: ``subprocess.run`` /
asyncio subprocesses with the same pipes and process group. C: posix_spawn + waitpid loops
(``c/spawn_serial.c``, ``c/spawn_inflight.c``).
"""

from __future__ import annotations

import asyncio
import subprocess

import pytest

from . import _baselines
from ._cases import run_case
from ._registry import Env, Figure, Subject, Target, group
from ._subjects import POPEN_KWARGS, check, executor, job
from ._timing import keep_in_flight, raise_open_files_limit, rate, timed_async, timed_loop

GROUP = "spawn"
PROGRAM = "/bin/true"
WIDTHS = (1, 4, 16, 64, 256)


def serial(env: Env) -> Figure:
    n = env.pick(test=2, quick=100, full=300)
    ex, spec = executor(), job("spawn", PROGRAM)

    def dkron() -> None:
        check(ex.run(spec))

    def plain() -> None:
        subprocess.run([PROGRAM], check=True, **POPEN_KWARGS)

    def c_loop(count: int) -> float:
        return _baselines.run("spawn_serial", count, PROGRAM, results=env.results)["seconds"]

    return Figure(
        id="spawn-serial",
        title="spawn /bin/true, one at a time",
        unit="spawns/s",
        subjects=[
            Subject("dkron_exec", rate(n, 1, timed_loop(dkron)), "Executor.run, in-memory store"),
            Subject("python", rate(n, 1, timed_loop(plain)), "subprocess.run, same pipes"),
            Subject("c", rate(n, 1, c_loop), "posix_spawn + read + waitpid loop"),
        ],
        targets=[
            Target("ratio", 0.9, "c", "spawn one at a time vs C"),
            Target("ratio", 1.0, "python", "spawn one at a time vs subprocess.run"),
        ],
    )


def in_flight(env: Env, width: int) -> Figure:
    total = env.pick(test=width, quick=max(200, 4 * width), full=max(600, 8 * width))
    ex, spec = executor(), job("spawn-n", PROGRAM)

    async def dkron_one() -> None:
        check(await ex.run_async(spec))

    async def asyncio_one() -> None:
        proc = await asyncio.create_subprocess_exec(PROGRAM, **POPEN_KWARGS)
        await proc.communicate()

    def c_loop(count: int) -> float:
        return _baselines.run("spawn_inflight", count, width, PROGRAM, results=env.results)["seconds"]

    return Figure(
        id=f"spawn-inflight-{width}",
        title=f"spawn /bin/true, {width} in flight",
        unit="spawns/s",
        subjects=[
            Subject(
                "dkron_exec",
                rate(total, 1, timed_async(lambda n: keep_in_flight(width, n, dkron_one))),
                "run_async + asyncio.gather",
            ),
            Subject(
                "python",
                rate(total, 1, timed_async(lambda n: keep_in_flight(width, n, asyncio_one))),
                "asyncio.create_subprocess_exec",
            ),
            Subject("c", rate(total, 1, c_loop), "posix_spawn loop keeping N children, waitpid(-1)"),
        ],
        targets=[Target("ratio", 0.9, "c", "spawn with N in flight vs C")],
        series="spawn-inflight",
        x=width,
    )


@group(GROUP)
def figures(env: Env) -> list[Figure]:
    raise_open_files_limit()
    return [serial(env), *(in_flight(env, w) for w in WIDTHS)]


def test_spawn(case: tuple[Figure, Subject], request: pytest.FixtureRequest) -> None:
    run_case(case, request)
