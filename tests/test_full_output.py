"""The files processor gets a job's complete output while the host keeps only the tail in memory."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from dkron_exec import Executor

SIZE = 50 * 1024 * 1024
LINE = b"0123456789abcdef\n"

# Runs in a fresh interpreter, so that its peak RSS measures this one run.
PROBE = """
import json, sys
from dkron_exec import Executor

def status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])

log_dir, spool_dir, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
job = {
    "name": "big",
    "command": f"yes 0123456789abcdef | head -c {size}",
    "shell": True,
    "processors": {"files": {"log_dir": log_dir, "forward": False}},
}
with Executor(":memory:", spool_dir=spool_dir) as ex:
    ex.run({"name": "warm", "command": "true"})
    # Reset the kernel's peak-RSS mark, so the peak below belongs to this run alone.
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = status_kib("VmRSS")
    e = ex.run(job)
    peak = status_kib("VmHWM")
result = {"before": before, "peak": peak, "output": e.output.decode(), "truncated": e.output_truncated}
result.update(size=e.output_size, errors=e.processor_errors, success=e.success)
print(json.dumps(result))
"""


def expected_digest(size: int) -> str:
    whole, rest = divmod(size, len(LINE))
    return hashlib.sha256(LINE * whole + LINE[:rest]).hexdigest()


def test_50_mb_reach_the_file_whole_with_bounded_memory(tmp_path: Path) -> None:
    log_dir, spool_dir = tmp_path / "logs", tmp_path / "spool"
    r = subprocess.run(
        [sys.executable, "-c", PROBE, str(log_dir), str(spool_dir), str(SIZE)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result = json.loads(r.stdout)
    assert result["success"] and result["errors"] == []
    assert result["truncated"] and result["size"] == SIZE
    path = Path(result["output"])  # forward false: the output is the file's path
    assert path.parent == log_dir and path.stat().st_size == SIZE
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    assert digest.hexdigest() == expected_digest(SIZE)
    growth_mib = (result["peak"] - result["before"]) / 1024
    assert growth_mib < 20, f"host memory grew {growth_mib:.1f} MiB for a {SIZE >> 20} MiB output"
    # The spool lives only while the execution goes through the processors.
    assert list(spool_dir.iterdir()) == []


def test_full_output_includes_the_error_line(tmp_path: Path) -> None:
    with Executor(":memory:", output_limit=1000, spool_dir=tmp_path / "spool") as ex:
        e = ex.run(
            {
                "name": "fails",
                "command": "seq 1 100000; exit 2",
                "shell": True,
                "processors": {"files": {"log_dir": str(tmp_path / "logs"), "forward": True}},
            }
        )
    assert not e.success and len(e.output) == 1000
    [log] = (tmp_path / "logs").iterdir()
    text = log.read_text()
    assert text.startswith("1\n2\n3\n") and text.endswith("99999\n100000\nexit status 2\n")


def test_max_size_bounds_the_file(tmp_path: Path) -> None:
    with Executor(":memory:", output_limit=100, spool_dir=tmp_path / "spool") as ex:
        ex.run(
            {
                "name": "capped",
                "command": "head -c 100000 /dev/zero",
                "processors": {"files": {"log_dir": str(tmp_path / "logs"), "max_size": "10KB"}},
            }
        )
    [log] = (tmp_path / "logs").iterdir()
    assert log.stat().st_size == 10 * 1024


def test_without_files_nothing_is_spooled(tmp_path: Path) -> None:
    with Executor(":memory:", output_limit=100, spool_dir=tmp_path / "spool") as ex:
        e = ex.run({"name": "plain", "command": "head -c 100000 /dev/zero"})
    assert e.output_truncated and not (tmp_path / "spool").exists()
    assert json.loads(e.to_json())["output_size"] == 100000


def test_spool_files_of_dead_processes_are_removed(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    # A process that has exited: its pid names a spool nobody owns.
    dead = subprocess.run(["sh", "-c", "echo $$"], capture_output=True, text=True, check=True)
    stale = spool / f".dkron-exec-spool-{int(dead.stdout)}-0"
    mine = spool / f".dkron-exec-spool-{os.getpid()}-99"
    other = spool / "unrelated"
    for path in (stale, mine, other):
        path.write_bytes(b"x")
    Executor(":memory:", spool_dir=spool).close()
    assert sorted(p.name for p in spool.iterdir()) == sorted([mine.name, other.name])
