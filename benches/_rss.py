"""Peak RSS growth of one capture, measured in a fresh process so every size starts from the same memory.

    python -m benches._rss dkron_exec|python WRITER SIZE   ->  prints the growth in KiB

The process warms up with a 1 KiB capture first (engine threads, SQLite, allocator arenas), then records
its peak RSS before and after capturing SIZE bytes.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _runner(kind: str, writer: str) -> Callable[[int], object]:
    if kind == "dkron_exec":
        from ._subjects import check, executor, job

        ex = executor()

        def run(size: int) -> object:
            execution = ex.run(job("capture", f"{writer} {size}"))
            check(execution, size)
            return execution

        return run
    if kind == "python":
        from ._subjects import POPEN_KWARGS

        return lambda size: subprocess.run([writer, str(size)], check=True, **POPEN_KWARGS)
    raise SystemExit(f"unknown subject {kind!r}")


def maxrss_kib() -> int:
    """Peak RSS of this process's address space (VmHWM). Not ``ru_maxrss``: Linux carries that over
    exec from the parent, so this fresh process would start at the parent's peak and show no growth."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def main(argv: list[str]) -> None:
    kind, writer, size = argv
    run = _runner(kind, writer)
    run(1024)
    before = maxrss_kib()
    kept = run(int(size))  # kept alive until measured, as a caller holding the result would
    after = maxrss_kib()
    del kept
    print(after - before)


def growth_mib(kind: str, writer: Path, size: int) -> float:
    """Runs the probe in a fresh interpreter and returns the peak RSS growth in MiB."""
    proc = subprocess.run(
        [sys.executable, "-m", "benches._rss", kind, str(writer), str(size)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    return int(proc.stdout.split()[-1]) / 1024


if __name__ == "__main__":
    main(sys.argv[1:])
