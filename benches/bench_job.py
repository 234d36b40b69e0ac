"""A whole job: ``/bin/true`` through the files and syslog processors into the store.

dkron_exec: ``Executor(":memory:").run`` of a job with ``files`` (1 file per execution) and ``syslog``
(a unix datagram socket drained by ``_drain``), both ``forward`` true. The target compares it with the
bare spawn rate, the same ``Executor.run`` with no processors (subject ``bare``, measured in the same
rounds). Python: ``subprocess.run`` + ``open().write`` + ``SysLogHandler`` + an ``sqlite3`` insert and
commit (in memory). C: ``c/job_loop.c``, posix_spawn + the files processor's system calls + one ``send``
(no store).
"""

from __future__ import annotations

import sqlite3
import subprocess

import pytest

from . import _baselines, _drain, _scratch
from ._cases import run_case
from ._registry import Env, Figure, Subject, Target, group
from ._subjects import POPEN_KWARGS, check, job
from ._timing import rate, timed_loop

GROUP = "job"
PROGRAM = "/bin/true"


@group(GROUP)
def figures(env: Env) -> list[Figure]:
    from dkron_exec import Executor, Job

    n = env.pick(test=2, quick=100, full=300)
    sock = str(_drain.socket_path(env.results))
    folder = _scratch.folder("job")  # shared by all subjects: see bench_files
    whole = Job.from_dict(
        {
            "name": "job",
            "command": PROGRAM,
            "processors": {
                "files": {"log_dir": str(folder), "forward": "true"},
                "syslog": {"transport": "unixgram", "address": sock, "forward": "true"},
            },
        }
    )
    bare = job("job-bare", PROGRAM)
    # Fresh executors (not the shared one of the spawn group), closed at exit by their own atexit hook.
    ex_whole, ex_bare = Executor(":memory:", node_name="bench"), Executor(":memory:", node_name="bench")

    def dkron() -> None:
        execution = ex_whole.run(whole)
        check(execution)
        if execution.processor_errors:
            raise RuntimeError(f"processors failed: {execution.processor_errors}")

    def dkron_bare() -> None:
        check(ex_bare.run(bare))

    db = sqlite3.connect(":memory:", check_same_thread=False)
    db.execute(
        "create table executions (job text, seq integer, success integer, exit_code integer, output blob)"
    )
    logger = _drain.python_logger(sock)
    seq = iter(range(1 << 62))

    def plain() -> None:
        i = next(seq)
        proc = subprocess.run([PROGRAM], check=True, **POPEN_KWARGS)
        with open(folder / f"{i}-node.log", "wb") as f:
            f.write(proc.stdout)
        logger.info("job=job key=%d exit=%d", i, proc.returncode)
        with db:
            db.execute(
                "insert into executions values (?, ?, ?, ?, ?)", ("job", i, 1, proc.returncode, proc.stdout)
            )

    def c_loop(count: int) -> float:
        return _baselines.run("job_loop", count, folder, sock, PROGRAM, results=env.results)["seconds"]

    return [
        Figure(
            id="job",
            title="whole job /bin/true -> files + syslog + store",
            unit="jobs/s",
            subjects=[
                Subject(
                    "dkron_exec",
                    rate(n, 1, _scratch.emptied_first(folder, timed_loop(dkron))),
                    "Executor.run",
                ),
                Subject(
                    "python",
                    rate(n, 1, _scratch.emptied_first(folder, timed_loop(plain))),
                    "subprocess.run + open().write + SysLogHandler + sqlite3 insert",
                ),
                Subject(
                    "c",
                    rate(n, 1, _scratch.emptied_first(folder, c_loop)),
                    "posix_spawn + file + send, no store",
                ),
                Subject("bare", rate(n, 1, timed_loop(dkron_bare)), "Executor.run, no processors"),
            ],
            targets=[
                Target("ratio", 0.95, "bare", "whole job vs bare spawn"),
                Target("ratio", 0.8, "c", "whole job vs C spawn + file + send"),
            ],
        )
    ]


def test_job(case: tuple[Figure, Subject], request: pytest.FixtureRequest) -> None:
    run_case(case, request)
