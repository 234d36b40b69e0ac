"""The C baselines: ``benches/c/*.c`` compiled with the system ``cc -O2`` at bench time, cached by content.

Each program times its own loop and prints ``key=value`` pairs, so its start-up is not counted.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import threading
from pathlib import Path

C_DIR = Path(__file__).parent / "c"
RESULTS = Path(os.environ.get("DKRON_BENCH_RESULTS", Path(__file__).parent.parent / "bench-results"))
_lock = threading.Lock()


class CompilerMissing(RuntimeError):
    pass


def cache_dir(results: Path = RESULTS) -> Path:
    return results / "cache" / "bin"


def binary(name: str, results: Path = RESULTS) -> Path:
    """The compiled ``benches/c/NAME.c``, built on first use and whenever it or a header changes."""
    source = C_DIR / f"{name}.c"
    digest = hashlib.sha256(source.read_bytes())
    for header in sorted(C_DIR.glob("*.h")):
        digest.update(header.read_bytes())
    out = cache_dir(results) / f"{name}-{digest.hexdigest()[:12]}"
    with _lock:
        if out.exists():
            return out
        cc = os.environ.get("CC") or shutil.which("cc")
        if not cc:
            raise CompilerMissing("no C compiler: install cc (gcc or clang) or set CC")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(f".tmp{os.getpid()}")
        subprocess.run([cc, "-O2", "-Wall", "-o", str(tmp), str(source)], check=True, capture_output=True)
        tmp.replace(out)
    return out


def run(name: str, *args: object, results: Path = RESULTS) -> dict[str, float]:
    """Runs a baseline program and returns the numbers it printed."""
    proc = subprocess.run(
        [str(binary(name, results)), *map(str, args)], check=True, capture_output=True, text=True
    )
    pairs = (item.split("=", 1) for item in proc.stdout.split())
    return {key: float(value) for key, value in pairs}


def cc_version() -> str:
    cc = os.environ.get("CC") or shutil.which("cc")
    if not cc:
        return "none"
    proc = subprocess.run([cc, "--version"], capture_output=True, text=True)
    return proc.stdout.splitlines()[0] if proc.stdout else cc
