"""The things being measured, built once per process: a shared Executor and the plain-Python equivalents."""

from __future__ import annotations

import atexit
import subprocess
import sys
from functools import cache
from typing import Any

from dkron_exec import Execution, Executor, Job

# The same process set-up dkron_exec's shell executor uses: stdin /dev/null, stdout and stderr piped,
# a process group of its own (process_group= exists from Python 3.11).
POPEN_KWARGS: dict[str, Any] = {
    "stdin": subprocess.DEVNULL,
    "stdout": subprocess.PIPE,
    "stderr": subprocess.PIPE,
}
if sys.version_info >= (3, 11):
    POPEN_KWARGS["process_group"] = 0


@cache
def executor() -> Executor:
    """One Executor with an in-memory store for the whole run, as an embedding program would keep one."""
    ex = Executor(":memory:", node_name="bench")
    atexit.register(ex.close)
    return ex


def job(name: str, command: str) -> Job:
    """A job parsed once, as a scheduler holding its job definitions would."""
    return Job.from_dict({"name": name, "command": command})


def check(execution: Execution, size: int | None = None) -> None:
    """A broken measurement must not pass as a fast one."""
    if not execution.success:
        raise RuntimeError(f"job failed: {execution.error}")
    if size is not None and execution.output_size != size:
        raise RuntimeError(f"captured {execution.output_size} bytes, expected {size}")
