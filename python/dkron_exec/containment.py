"""How jobs are contained: which mode is in use and what it guarantees (``dkron-exec doctor``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import _core


@dataclass(frozen=True)
class Isolation:
    """What an Executor does so that nothing a job starts outlives it.

    ``mode`` is ``"cgroup"`` (each run in a cgroup v2 of its own, killed whole with
    ``cgroup.kill``: exact) or ``"process-group"`` (the fallback: the job's process group, its
    descendants, and every process carrying the run's ``DKRON_EXEC_RUN`` marker in its
    environment; a daemon that clears its environment escapes). ``memory`` is the memory
    controller the runs get (``"v2"``, ``"v1"`` or ``"none"``): with one, ``mem_limit`` is
    enforced by the kernel and ``peak_memory`` is reported; else the tree's memory is polled.
    ``cpu_time`` says whether ``cpu_time_us`` is reported.
    """

    mode: str
    cgroup: str | None
    memory: str
    kill: str
    mem_limit: str
    cpu_time: bool
    peak_memory: bool
    fallback_reason: str | None = None
    watchdog_pid: int | None = None

    @classmethod
    def _from_core(cls, d: dict[str, Any]) -> Isolation:
        return cls(**d)

    def describe(self) -> str:
        """The doctor's lines."""
        memory = "no" if self.memory == "none" else self.memory
        lines = [f"mode:         {self.mode}"]
        if self.cgroup:
            lines.append(f"cgroup:       {self.cgroup} (one per Executor, one per run under it)")
        if self.fallback_reason:
            lines.append(f"why not cgroup: {self.fallback_reason}")
        lines += [
            f"kill:         {self.kill}",
            f"memory:       {memory} memory controller; mem_limit {self.mem_limit}",
            f"cpu time:     {'reported (cpu_time_us)' if self.cpu_time else 'not reported'}",
            f"peak memory:  {'reported (peak_memory)' if self.peak_memory else 'not reported'}",
            "host death:   a watchdog process kills the runs in flight when the host dies",
        ]
        return "\n".join(lines) + "\n"


def isolation(cgroups: bool = True) -> Isolation:
    """What a new ``Executor(cgroups=cgroups)`` would get on this machine, with this environment
    (``DKRON_EXEC_CGROUP=off`` forces the process-group mode)."""
    return Isolation._from_core(_core.probe_isolation(cgroups))
