"""Files processor: one 1 KiB log file per execution.

dkron_exec: the ``files`` step with ``forward`` false (the output becomes the path), run by the Rust
chain as a run drives it (``Runtime.process`` with ``repeat``: one crossing for the whole loop).
Python: ``open(path, "wb").write(data)``, the plain way (not atomic). C:
``c/files_loop.c``, the processor's system calls per file (open O_EXCL, fchmod, write, close, rename).
Every sample of every subject writes into the same directory, emptied first (on tmpfs by default:
see ``_scratch``): on a disk the cost of creating a file depends on where the folder is.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

import pytest

from . import _baselines, _scratch
from ._cases import run_case
from ._registry import Env, Figure, Subject, Target, group
from ._timing import rate

GROUP = "files"
SIZE = 1024
DATA = b"x" * (SIZE - 1) + b"\n"


@group(GROUP)
def figures(env: Env) -> list[Figure]:
    from dkron_exec import Execution, Executor, Job

    n = env.pick(test=2, quick=1000, full=5000)
    folder = _scratch.folder("files")
    executor = Executor(":memory:", node_name="node")
    files = {"log_dir": str(folder)}
    job = Job.from_dict({"name": "bench", "command": "true", "processors": {"files": files}})
    now = datetime.now(timezone.utc)
    execution = Execution(job_name="bench", started_at=now, finished_at=now, success=True, output=DATA)

    def dkron(count: int) -> float:
        # The step as a run drives it: inside the Rust chain, one crossing for `count` executions.
        t0 = time.perf_counter()
        executor._runtime.process(job.plan, execution, repeat=count)
        return time.perf_counter() - t0

    def plain(count: int) -> float:
        t0 = time.perf_counter()
        for i in range(count):
            with open(folder / f"{i}-node.log", "wb") as f:
                f.write(DATA)
        return time.perf_counter() - t0

    def c_loop(count: int) -> float:
        out = _baselines.run("files_loop", folder, 0, count, SIZE, results=env.results)
        return out["seconds"]

    return [
        Figure(
            id="files",
            title="files processor, 1 KiB per execution",
            unit="files/s",
            subjects=[
                Subject(
                    "dkron_exec",
                    rate(n, 1, _scratch.emptied_first(folder, dkron)),
                    "the files step in the Rust chain",
                ),
                Subject(
                    "python", rate(n, 1, _scratch.emptied_first(folder, plain)), "open().write, not atomic"
                ),
                Subject(
                    "c",
                    rate(n, 1, _scratch.emptied_first(folder, c_loop)),
                    "open O_EXCL + fchmod + write + rename",
                ),
            ],
            targets=[Target("ratio", 0.8, "c", "files vs C")],
        )
    ]


def test_files(case: tuple[Figure, Subject], request: pytest.FixtureRequest) -> None:
    run_case(case, request)
