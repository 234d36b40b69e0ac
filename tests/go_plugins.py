"""Dkron's own (go-plugin) plugins for the tests and the benches, built from source with Go.

``tests/go`` is a Go module on Dkron v4.0.5's ``plugin`` package (from the Go module proxy with
``go mod download``; ``go install ...@latest`` does not work behind this environment's proxy). It
holds the test processor and executors (``dkron-processor-gotest``, ``dkron-executor-gotest``,
``dkron-executor-gotestv1``), the minimal processor ``noopproc`` and executor ``noopexec``, and
``plugbench``, which calls a plugin through Dkron's own plugin client (the benches' Go baseline:
``benches/_go.py`` uses this module's :func:`build`, so tests and benches share one build). The
binaries are cached under ``bench-results/cache/bin``, keyed by the sources and the Go version, so
only the first run on a machine pays for the build (about two minutes with a cold module cache).

``DKRON_EXEC_GO`` names the ``go`` command to use (default: ``go`` on PATH); when it is set, it must
exist: the build then fails naming it instead of leaving Go out.
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

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "tests" / "go"
CACHE = ROOT / "bench-results" / "cache" / "bin"
GO_ENV = "DKRON_EXEC_GO"
BUILD_SECONDS = "build-seconds"  # how long the build took, written beside the binaries
_lock = threading.Lock()


def go() -> str | None:
    """``$DKRON_EXEC_GO`` when set (checked when used), else ``go`` on PATH, else None."""
    return os.environ.get(GO_ENV) or shutil.which("go")


def _go_command() -> str:
    go_cmd = go()
    if go_cmd is None:
        raise RuntimeError("go is not on PATH: Dkron's plugins cannot be built")
    if shutil.which(go_cmd) is None:
        raise RuntimeError(f"{GO_ENV} names {go_cmd!r}, which is not an executable go command")
    return go_cmd


def skip_without_go() -> pytest.MarkDecorator:
    """Skips a module's tests where Go is missing, except under ``DKRON_EXEC_REQUIRE_GO=1`` (set by
    scripts/test.sh, so CI fails rather than skips Dkron's plugins)."""
    return pytest.mark.skipif(go() is None and not go_required(), reason="go is not on PATH")


def go_required() -> bool:
    return os.environ.get("DKRON_EXEC_REQUIRE_GO") == "1"


def _sources() -> list[tuple[str, Path]]:
    return [(str(p.relative_to(SOURCE)), p) for p in sorted(SOURCE.rglob("*")) if p.is_file()]


def build(cache: Path = CACHE) -> dict[str, Path]:
    """The binaries of ``tests/go`` by name, built into ``cache`` on first use (raises if that fails)."""
    go_cmd = _go_command()
    version = subprocess.run([go_cmd, "version"], check=True, capture_output=True, text=True).stdout
    digest = hashlib.sha256(version.encode())
    for rel, path in _sources():
        digest.update(rel.encode() + b"\0" + path.read_bytes())
    out = cache / f"go-testplugins-{digest.hexdigest()[:12]}"
    with _lock:
        if not out.is_dir():
            # Built from a copy: go may rewrite go.mod / go.sum under -mod=mod.
            work = out.with_name(f"{out.name}.tmp{os.getpid()}")
            shutil.rmtree(work, ignore_errors=True)
            for rel, path in _sources():
                dest = work / "src" / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(path.read_bytes())
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
                stderr = proc.stderr.strip()[-2000:]
                raise RuntimeError(f"building tests/go failed ({seconds:.0f}s): {stderr}")
            (work / "bin" / BUILD_SECONDS).write_text(f"{seconds:.1f}\n")
            shutil.rmtree(out, ignore_errors=True)
            (work / "bin").replace(out)
            shutil.rmtree(work, ignore_errors=True)
    return {p.name: p for p in out.iterdir() if p.name != BUILD_SECONDS}


def install(folder: Path, binary: str, name: str, kind: str = "processor") -> Path:
    """Links a built plugin into ``folder`` as ``dkron-KIND-NAME``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"dkron-{kind}-{name}"
    path.symlink_to(build()[binary])
    return path


# Dkron's own processors, built from Dkron's module (its builtin/bins main packages, with the
# module's own go.mod and go.sum, as Dkron's release builds them), and the seed's processor
# example (examples/seed-processor), built as its README says.
DKRON_MODULE = "github.com/distribworks/dkron/v4"
DKRON_VERSION = "v4.0.5"
DKRON_BINS = ("dkron-processor-files", "dkron-processor-log")
SEED_EXAMPLE = ROOT / "examples" / "seed-processor"
SEED_BINARY = "dkron-processor-myplugin"


def _go(args: list[str], cwd: Path, what: str) -> str:
    # The module cache is read-only and the example sits in a git checkout: no go.mod updates,
    # no VCS stamping (git may refuse a checkout owned by another user).
    env = {**os.environ, "GOFLAGS": "-mod=readonly -buildvcs=false"}
    proc = subprocess.run([go() or "go", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed: {proc.stderr.strip()[-2000:]}")
    return proc.stdout


def build_dkron_bins() -> dict[str, Path]:
    """Dkron's ``dkron-processor-files`` and ``-log`` and the seed's ``dkron-processor-myplugin``
    by binary name; built on first use on a machine, then cached (raises if the build fails)."""
    _go_command()
    digest = hashlib.sha256(_go(["version"], ROOT, "go version").encode())
    digest.update(f"{DKRON_MODULE}@{DKRON_VERSION} {' '.join(DKRON_BINS)}".encode())
    for path in sorted(p for p in SEED_EXAMPLE.iterdir() if p.suffix in (".go", ".mod", ".sum")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    out = CACHE / f"go-dkronbins-{digest.hexdigest()[:12]}"
    with _lock:
        if not out.is_dir():
            work = out.with_name(f"{out.name}.tmp{os.getpid()}")
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            module = f"{DKRON_MODULE}@{DKRON_VERSION}"
            info = _go(["mod", "download", "-json", module], work, f"downloading {module}")
            source = Path(json.loads(info)["Dir"])
            packages = [f"./builtin/bins/{name}" for name in DKRON_BINS]
            _go(["build", "-o", f"{work}/", *packages], source, f"building {', '.join(DKRON_BINS)}")
            _go(["build", "-o", str(work / SEED_BINARY), "."], SEED_EXAMPLE, "building the seed's example")
            shutil.rmtree(out, ignore_errors=True)
            work.replace(out)
    return {p.name: p for p in out.iterdir()}


def install_dkron_bin(folder: Path, binary: str, name: str) -> Path:
    """Links one of ``build_dkron_bins()`` into ``folder`` as ``dkron-processor-NAME``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"dkron-processor-{name}"
    path.symlink_to(build_dkron_bins()[binary])
    return path
