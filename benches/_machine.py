"""Where the numbers came from: the machine, its load, and the versions measured."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import dkron_exec

from ._baselines import cc_version


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _git_commit() -> str:
    proc = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=Path(__file__).parent,
        capture_output=True,
        text=True,
    )
    return proc.stdout.strip() or "unknown"


def describe() -> dict[str, Any]:
    return {
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "memory_gib": _mem_total_gib(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "dkron_exec": dkron_exec.__version__,
        "commit": _git_commit(),
        "cc": cc_version(),
        "loadavg": os.getloadavg(),
    }


def one_line(info: dict[str, Any]) -> str:
    load = ", ".join(f"{x:.1f}" for x in info["loadavg"])
    return (
        f"{info['cpu']}, {info['cpus_usable']}/{info['cpus']} CPUs, {info['memory_gib']} GiB, "
        f"Linux {info['kernel']}, Python {info['python']}, dkron_exec {info['dkron_exec']} "
        f"({info['commit']}), {info['cc']}; load average at start {load}"
    )
