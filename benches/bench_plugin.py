"""Plugin processor round trips (1 KiB and 256 KiB outputs).

dkron_exec: the plugin step of the Rust chain as a run drives it (``Runtime.process`` with ``repeat``: one
crossing for the loop; the host writes each request and reads its answer on the calling thread, over a
socketpair, frames of a JSON header and a raw body) calling an echo plugin written with
``dkron_exec.plugin.serve`` (the Python SDK), and the same host calling a C echo plugin
(``dkron-processor-cecho``, built from ``c/pingpong.c``): the host's own cost without the SDK's.
Python: a host and a plugin in plain Python, JSON lines over a pipe with the output in base64
(``_jsonl_plugin.py``). C: ``c/pingpong.c``, two processes echoing the same frames over a
socketpair, no host and no JSON parsing (the limit of the transport). Go (when ``go`` is on PATH, Python SDK
figures): Dkron v4.0.5's own plugin client calling Dkron's minimal Go processor (``_go.py``), the plugin
stack dkron_exec replaces. Dkron's Go processor (``plugin-goproc-*``, when ``go`` is on PATH): the same
no-op Go processor called by dkron_exec's host (go-plugin net/rpc over yamux, spoken in Rust) and by Dkron's
own Go client, in the same run.
"""

from __future__ import annotations

import atexit
import base64
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from . import _baselines, _go
from ._cases import run_case
from ._registry import Env, Figure, Subject, Target, group
from ._timing import rate, timed_loop

GROUP = "plugin"
SIZES = {"1 KiB": 1024, "256 KiB": 256 * 1024}
HERE = Path(__file__).parent

SDK_ECHO = """
from dkron_exec.plugin import serve


class Echo:
    def process(self, args):
        return args.execution


serve(processor=Echo())
"""


def plugin_files(results: Path) -> dict[str, Path]:
    """The two echo plugins under their plugin names (the C one answers as a plugin by its name)."""
    folder = _baselines.cache_dir(results).parent / "plugins"
    folder.mkdir(parents=True, exist_ok=True)
    cecho = folder / "dkron-processor-cecho"
    pyecho = folder / "dkron-processor-pyecho"
    # Written aside and renamed: another bench process may be running the current files (ETXTBSY).
    tmp_c, tmp_py = (p.with_suffix(f".tmp{os.getpid()}") for p in (cecho, pyecho))
    shutil.copy(_baselines.binary("pingpong", results), tmp_c)
    tmp_py.write_text(f"#!{sys.executable}\n{SDK_ECHO}")
    tmp_py.chmod(0o755)
    tmp_c.replace(cecho)
    tmp_py.replace(pyecho)
    files = {"cecho": cecho, "pyecho": pyecho}
    if _go.go() is not None:
        # Dkron's no-op Go processor, linked under a plugin name (the host speaks its go-plugin protocol).
        goproc = folder / "dkron-processor-goproc"
        tmp_go = goproc.with_suffix(f".tmp{os.getpid()}")
        tmp_go.unlink(missing_ok=True)
        tmp_go.symlink_to(_go.build(results)["noopproc"])
        tmp_go.replace(goproc)
        files["goproc"] = goproc
    return files


@cache
def executor(results: Path) -> Any:
    """An Executor that finds the two echo plugins (and keeps them running between samples)."""
    from dkron_exec import Executor

    folder = {path.parent for path in plugin_files(results).values()}.pop()
    ex = Executor(":memory:", node_name="bench", plugin_dirs=[folder], plugin_timeout=30.0)
    atexit.register(ex.close)
    ex.plugins  # noqa: B018  (discovery, which Runtime.process alone does not start)
    return ex


class JsonLinesPlugin:
    """The plain-Python host side: one request line, one answer line, on the plugin's stdin/stdout."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "_jsonl_plugin.py")], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        self.calls = 0
        atexit.register(self.close)

    def process(self, fields: dict[str, Any], output: bytes, config: dict[str, str]) -> bytes:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.calls += 1
        execution = {**fields, "output": base64.b64encode(output).decode("ascii")}
        request = {"type": "process", "id": self.calls, "execution": execution, "config": config}
        self.proc.stdin.write(json.dumps(request).encode() + b"\n")
        self.proc.stdin.flush()
        answer = json.loads(self.proc.stdout.readline())
        return base64.b64decode(answer["execution"]["output"])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def figure(env: Env, label: str, size: int, plugin: str, jsonl: JsonLinesPlugin, go: bool) -> Figure:
    from dkron_exec import Execution, Job

    n = env.pick(test=2, quick=2000 if size <= 4096 else 200, full=10_000 if size <= 4096 else 1000)
    # The JSON-lines plugin is ~100x slower with big outputs: fewer of its round trips per sample.
    n_python = n if size <= 4096 else max(2, n // 10)
    go_seconds = env.pick(test=0.05, quick=1, full=2)
    ex = executor(env.results)
    now = datetime.now(timezone.utc)
    execution = Execution(job_name="bench", started_at=now, finished_at=now, success=True, output=b"x" * size)
    config = {"forward": "true"}
    job = Job.from_dict({"name": "bench", "command": "true", "processors": {plugin: config}})
    fields = {k: v for k, v in execution.to_dict().items() if k != "output"}

    def dkron(count: int) -> float:
        t0 = time.perf_counter()
        done = ex._runtime.process(job.plan, execution, repeat=count)
        elapsed = time.perf_counter() - t0
        if len(done.output) != size or done.processor_errors:
            raise RuntimeError(f"the plugin did not echo the output: {done.processor_errors}")
        return elapsed

    def plain() -> None:
        if len(jsonl.process(fields, execution.output, config)) != size:
            raise RuntimeError("the JSON-lines plugin did not echo the output")

    def c_loop(count: int) -> float:
        return _baselines.run("pingpong", size, count, results=env.results)["seconds"]

    def go_rate() -> float:
        return _go.processor_calls_per_second(size, go_seconds, env.results)

    sdk = plugin == "pyecho"
    kinds = {"pyecho": "Python SDK plugin", "cecho": "C plugin", "goproc": "Dkron's Go processor (go-plugin)"}
    kind = kinds[plugin]
    subjects = [
        Subject("dkron_exec", rate(n, 1, dkron), f"the plugin step in the Rust chain, {kind}"),
        Subject("python", rate(n_python, 1, timed_loop(plain)), "JSON lines over a pipe, base64 output"),
        Subject("c", rate(n, 1, c_loop), "C ping-pong of the same frames on a socketpair"),
    ]
    if sdk and go:
        note = "Dkron v4.0.5's Go plugin client calling Dkron's minimal Go processor (net/rpc + gob, yamux)"
        subjects.append(Subject("go", go_rate, note))
    if plugin == "goproc":
        note = "Dkron v4.0.5's Go plugin client calling the same Go processor"
        subjects = [subjects[0], Subject("go", go_rate, note)]
        targets = [Target("ratio", 1.0, "go", "Dkron's Go processor: dkron_exec's host vs Dkron's client")]
    elif size > 4096:
        targets = [Target("ratio", 0.7, "c", "plugin round trip vs C ping-pong")]
    elif sdk:
        targets = [
            Target("ratio", 0.5, "c", "Python SDK plugin 1 KiB vs C ping-pong"),
            *([Target("ratio", 1.5, "go", "Python SDK plugin 1 KiB vs Dkron's Go plugin")] if go else []),
        ]
    else:
        targets = [Target("ratio", 0.8, "c", "C plugin 1 KiB vs C ping-pong")]
    return Figure(
        id=f"plugin-{plugin}-{size}",
        title=f"plugin round trip {label}, {kind}",
        unit="round trips/s",
        subjects=subjects,
        targets=targets,
        series=f"plugin-{plugin}",
        x=size,
    )


@group(GROUP)
def figures(env: Env) -> list[Figure]:
    go = _go.go() is not None
    if go:
        _go.build(env.results)  # a failed build fails the group: no silent skip
    else:
        print("[note] plugin: go is not on PATH: the Go plugin baseline is left out", file=sys.stderr)
    jsonl = JsonLinesPlugin()
    plugins = ("pyecho", "cecho", *(("goproc",) if go else ()))
    return [figure(env, label, size, p, jsonl, go) for p in plugins for label, size in SIZES.items()]


def test_plugin(case: tuple[Figure, Subject], request: pytest.FixtureRequest) -> None:
    run_case(case, request)
