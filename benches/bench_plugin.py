"""Plugin processor round trips per second, with 1 KiB and 256 KiB outputs, in one run against:

* ``c-pingpong``: two C processes echoing the same frames over a socketpair (the physical limit
  of the transport; no host, no JSON parsing);
* ``c-plugin``: the Rust host driving a C plugin (the host's own overhead: Python call, GIL
  release, JSON header, supervisor task, wake-up);
* ``python-plugin``: the Rust host driving a Python plugin written with ``dkron_exec.plugin.serve``
  (what a typical plugin costs).

No timing assertions: the machine is small and shared. ``test_summary`` prints the ratios.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from dkron_exec.discovery import DiscoveredPlugins, PluginInfo
from dkron_exec.execution import Execution
from dkron_exec.plugin_host import PluginManager

HERE = Path(__file__).resolve().parent
SIZES = {"1KiB": 1024, "256KiB": 256 * 1024}
RESULTS: dict[tuple[str, str], float] = {}

PY_ECHO = """
from dkron_exec.plugin import serve

class Echo:
    def process(self, args):
        return args.execution

serve(processor=Echo())
"""


@pytest.fixture(scope="module")
def bins(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if shutil.which("cc") is None:
        pytest.skip("no C compiler")
    d = tmp_path_factory.mktemp("bench-bin")
    pingpong = d / "pingpong"
    subprocess.run(["cc", "-O2", "-o", str(pingpong), str(HERE / "pingpong.c")], check=True)
    cecho = d / "dkron-processor-cecho"
    shutil.copy(pingpong, cecho)
    pyecho = d / "dkron-processor-pyecho"
    pyecho.write_text(f"#!{sys.executable}\n{PY_ECHO}")
    pyecho.chmod(0o755)
    return {"pingpong": pingpong, "cecho": cecho, "pyecho": pyecho}


@pytest.fixture(scope="module")
def manager(bins: dict[str, Path]) -> Iterator[PluginManager]:
    found = DiscoveredPlugins()
    for name in ("cecho", "pyecho"):
        found.processors[name] = PluginInfo(kind="processor", name=name, path=bins[name])
    m = PluginManager(found, call_timeout=10.0)
    yield m
    m.close()


def _execution(size: int) -> Execution:
    now = datetime.now(timezone.utc)
    return Execution(job_name="bench", started_at=now, finished_at=now, success=True, output=b"x" * size)


def _record(benchmark: Any, group: str, size: str) -> None:
    stats = getattr(benchmark, "stats", None)
    if stats is not None:
        RESULTS[(group, size)] = 1.0 / stats.stats.mean


@pytest.mark.parametrize("size", SIZES)
def test_c_pingpong(benchmark: Any, bins: dict[str, Path], size: str) -> None:
    rounds = 20_000 if SIZES[size] <= 4096 else 2_000
    rates: list[float] = []

    def run() -> None:
        argv = [str(bins["pingpong"]), str(SIZES[size]), str(rounds)]
        out = subprocess.run(argv, capture_output=True, check=True)
        rates.append(float(out.stdout))

    benchmark.group = f"plugin-roundtrip-{size}"
    benchmark.pedantic(run, rounds=3, iterations=1)
    RESULTS[("c-pingpong", size)] = max(rates)
    benchmark.extra_info["round_trips_per_s"] = max(rates)


@pytest.mark.parametrize("plugin", ["cecho", "pyecho"])
@pytest.mark.parametrize("size", SIZES)
def test_plugin_processor_round_trip(benchmark: Any, manager: PluginManager, plugin: str, size: str) -> None:
    execution = _execution(SIZES[size])
    result = manager.process(plugin, execution, {"forward": "true"})  # starts the plugin
    assert result.output == execution.output
    benchmark.group = f"plugin-roundtrip-{size}"
    benchmark(manager.process, plugin, execution, {"forward": "true"})
    _record(benchmark, "c-plugin" if plugin == "cecho" else "python-plugin", size)


def test_summary() -> None:
    if not RESULTS:
        pytest.skip("benchmarks disabled")
    lines = ["", "plugin processor round trips/s (higher is better)"]
    for size in SIZES:
        base = RESULTS.get(("c-pingpong", size))
        for group in ("c-pingpong", "c-plugin", "python-plugin"):
            rate = RESULTS.get((group, size))
            if rate is None:
                continue
            ratio = f"  {rate / base:6.1%} of the C ping-pong" if base else ""
            lines.append(f"  {size:>7} {group:<14} {rate:10.0f}/s{ratio}")
    print("\n".join(lines))
