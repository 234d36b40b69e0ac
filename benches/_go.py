"""The Go baseline: Dkron's own plugin client (``plugbench``) calling Dkron's smallest Go processor
(``noopproc``, served by Dkron's ``plugin.Serve``: go-plugin, net/rpc + gob over yamux).

Both come from the read-only folder ``../shared/reference/dkron-plugins/plugbench`` (relative to the
repository root; ``DKRON_BENCH_PLUGBENCH`` names another). It is copied into the bench cache and built there
with ``GOFLAGS=-mod=mod go build`` (``github.com/distribworks/dkron/v4`` v4.0.5 comes from the Go module
proxy); the binaries are cached by the content of the sources and the Go version, like the C baselines.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

from . import _baselines

REPO = Path(__file__).resolve().parent.parent
REFERENCE = REPO.parent / "shared/reference/dkron-plugins/plugbench"
SOURCE = Path(os.environ.get("DKRON_BENCH_PLUGBENCH") or REFERENCE)
BINARIES = ("plugbench", "noopproc")
_lock = threading.Lock()


def go() -> str | None:
    """The ``go`` on PATH, or None (then the Go subject is left out)."""
    return shutil.which("go")


def _digest(go_cmd: str) -> str:
    version = subprocess.run([go_cmd, "version"], check=True, capture_output=True, text=True).stdout
    digest = hashlib.sha256(version.encode())
    for path in sorted(p for p in SOURCE.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(SOURCE)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def build(results: Path = _baselines.RESULTS) -> dict[str, Path]:
    """The built binaries by name; builds them on first use (raises if the build fails)."""
    go_cmd = go()
    if go_cmd is None:
        raise RuntimeError("go is not on PATH")
    if not SOURCE.is_dir():
        raise RuntimeError(f"the plugbench sources are not at {SOURCE}")
    out = _baselines.cache_dir(results) / f"go-plugbench-{_digest(go_cmd)}"
    paths = {name: out / name for name in BINARIES}
    with _lock:
        if all(p.exists() for p in paths.values()):
            return paths
        work = out.with_name(f"{out.name}.tmp{os.getpid()}")
        shutil.rmtree(work, ignore_errors=True)
        # The reference folder is read-only: build a copy (go may rewrite go.mod / go.sum).
        shutil.copytree(SOURCE, work / "src")
        (work / "src").chmod(0o755)
        for path in (work / "src").rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        started = time.perf_counter()
        proc = subprocess.run(
            [go_cmd, "build", "-o", str(work / "bin") + "/", "./..."],
            cwd=work / "src",
            env={**os.environ, "GOFLAGS": "-mod=mod"},
            capture_output=True,
            text=True,
        )
        seconds = time.perf_counter() - started
        if proc.returncode != 0:
            raise RuntimeError(f"building plugbench failed ({seconds:.0f}s): {proc.stderr.strip()[-2000:]}")
        (work / "bin" / "build-seconds").write_text(f"{seconds:.1f}\n")
        shutil.rmtree(out, ignore_errors=True)
        (work / "bin").replace(out)
        shutil.rmtree(work, ignore_errors=True)
    return paths


def processor_calls_per_second(size: int, seconds: float, results: Path = _baselines.RESULTS) -> float:
    """Dkron's client calling the no-op Go processor, one call at a time, for ``seconds``: calls/s
    (the plugin's start-up is not counted: plugbench times its own loop)."""
    paths = build(results)
    proc = subprocess.run(
        [
            str(paths["plugbench"]),
            "-mode", "processor",
            "-plugin", str(paths["noopproc"]),
            "-config", "forward=true",
            "-size", str(size),
            "-duration", f"{seconds}s",
        ],
        check=True,
        capture_output=True,
        text=True,
    )  # fmt: skip
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"plugbench printed no result: {proc.stdout!r} {proc.stderr[-500:]!r}")
    return float(json.loads(lines[-1])["calls_per_s"])


if __name__ == "__main__":
    t0 = time.perf_counter()
    print(build(), f"{time.perf_counter() - t0:.1f}s")
    print(processor_calls_per_second(1024, 1.0))
