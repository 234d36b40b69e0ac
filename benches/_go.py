"""The Go baseline: Dkron's own plugin client (``plugbench``) calling Dkron's smallest Go processor
(``noopproc``, served by Dkron's ``plugin.Serve``: go-plugin, net/rpc + gob over yamux).

Both are in this repository's Go module ``tests/go`` (``tests/go/cmd/plugbench``, ``tests/go/cmd/noopproc``),
built by ``tests/go_plugins.py`` (the one build the tests use too) with ``GOFLAGS=-mod=mod go build``
(``github.com/distribworks/dkron/v4`` v4.0.5 comes from the Go module proxy) into the bench cache; the
binaries are cached by the content of the sources and the Go version, like the C baselines.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

from . import _baselines

REPO = Path(__file__).resolve().parent.parent
BUILDER = REPO / "tests" / "go_plugins.py"


def _builder() -> ModuleType:
    """``tests/go_plugins.py``, loaded once per process under the name the tests import it by."""
    module = sys.modules.get("go_plugins")
    if module is None:
        spec = importlib.util.spec_from_file_location("go_plugins", BUILDER)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["go_plugins"] = module
        spec.loader.exec_module(module)
    return module


def go() -> str | None:
    """The ``go`` command (``$DKRON_EXEC_GO``, else ``go`` on PATH), or None (the Go subject is left out)."""
    found: str | None = _builder().go()
    return found


def build(results: Path = _baselines.RESULTS) -> dict[str, Path]:
    """The built binaries of ``tests/go`` by name; builds them on first use (raises if the build fails)."""
    built: dict[str, Path] = _builder().build(_baselines.cache_dir(results))
    return built


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
        capture_output=True,
        text=True,
    )  # fmt: skip
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"plugbench failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]!r}")
    return float(json.loads(lines[-1])["calls_per_s"])


if __name__ == "__main__":
    t0 = time.perf_counter()
    print(build(), f"{time.perf_counter() - t0:.1f}s")
    print(processor_calls_per_second(1024, 1.0))
