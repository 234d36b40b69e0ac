"""Dkron's own (go-plugin) processors for the tests, built from source with Go.

``tests/go`` is a Go module on Dkron v4.0.5's ``plugin`` package (from the Go module proxy with
``go mod download``; ``go install ...@latest`` does not work behind this environment's proxy).
The reference's minimal processor ``noopproc`` and executor ``noopexec``
(``../shared/reference/dkron-plugins/plugbench``) are built in the same module when that folder is
there. The binaries are cached under ``bench-results/cache/bin``, keyed by the sources and the Go
version, so only the first run on a machine pays for the build (about two minutes with a cold
module cache).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "tests" / "go"
PLUGBENCH = ROOT.parent / "shared/reference/dkron-plugins/plugbench/cmd"
# The reference's minimal processor (net/rpc) and minimal executor (gRPC).
REFERENCE = ("noopproc", "noopexec")
CACHE = ROOT / "bench-results" / "cache" / "bin"
_lock = threading.Lock()


def go() -> str | None:
    return shutil.which("go")


def _sources() -> list[tuple[str, Path]]:
    files = [(str(p.relative_to(SOURCE)), p) for p in sorted(SOURCE.rglob("*")) if p.is_file()]
    for name in REFERENCE:
        files += [(f"cmd/{name}/{p.name}", p) for p in sorted((PLUGBENCH / name).glob("*.go"))]
    return files


def build() -> dict[str, Path]:
    """The built processors by binary name; builds them on first use (raises if that fails)."""
    go_cmd = go()
    if go_cmd is None:
        raise RuntimeError("go is not on PATH: Dkron's plugins cannot be built")
    version = subprocess.run([go_cmd, "version"], check=True, capture_output=True, text=True).stdout
    digest = hashlib.sha256(version.encode())
    for rel, path in _sources():
        digest.update(rel.encode() + b"\0" + path.read_bytes())
    out = CACHE / f"go-testplugins-{digest.hexdigest()[:12]}"
    with _lock:
        if not out.is_dir():
            work = out.with_name(f"{out.name}.tmp{os.getpid()}")
            shutil.rmtree(work, ignore_errors=True)
            for rel, path in _sources():
                dest = work / "src" / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(path.read_bytes())
            proc = subprocess.run(
                [go_cmd, "build", "-o", str(work / "bin") + "/", "./..."],
                cwd=work / "src",
                env={**os.environ, "GOFLAGS": "-mod=mod"},
                capture_output=True,
                text=True,
            )
            if proc.returncode != 0:
                raise RuntimeError(f"building tests/go failed: {proc.stderr.strip()[-2000:]}")
            shutil.rmtree(out, ignore_errors=True)
            (work / "bin").replace(out)
            shutil.rmtree(work, ignore_errors=True)
    return {p.name: p for p in out.iterdir()}


def install(folder: Path, binary: str, name: str, kind: str = "processor") -> Path:
    """Links a built plugin into ``folder`` as ``dkron-KIND-NAME``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"dkron-{kind}-{name}"
    path.symlink_to(build()[binary])
    return path
