"""The run pipeline as one piece: asyncio runs through plugin processors without a thread pool in
the way, cancellation that names the right executor, and stores written in Python."""

from __future__ import annotations

import asyncio
import builtins
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from dkron_exec import Execution, Executor, SQLiteStore, Store
from jobs import shell_job
from plugin_support import install, install_example

# A processor that records when each call starts and ends, to measure how many overlap.
SLOW_PROCESSOR = """
import os, time
from dkron_exec.plugin import serve

class Slow:
    def process(self, args):
        log = args.config["log"]
        with open(log, "a") as f:
            f.write(f"start {time.monotonic()}\\n")
        time.sleep(float(args.config["sleep"]))
        with open(log, "a") as f:
            f.write(f"end {time.monotonic()}\\n")
        return args.execution

serve(processor=Slow(), max_in_flight=32)
"""


def most_at_once(log: Path) -> int:
    events = sorted(
        (float(t), +1 if kind == "start" else -1)
        for kind, t in (line.split() for line in log.read_text().splitlines())
    )
    now = peak = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return peak


@pytest.fixture
def plugin_dir(tmp_path: Path) -> Path:
    d = tmp_path / "plugins"
    d.mkdir()
    return d


async def test_async_runs_reach_a_plugin_processor_all_at_once(tmp_path: Path, plugin_dir: Path) -> None:
    # Before the pipeline moved into Rust, asyncio's default executor (6 threads on 2 CPUs) held
    # the chains: 20 runs through a 300 ms processor had at most 6 calls in flight.
    install(plugin_dir, "processor", "slow", SLOW_PROCESSOR)
    log = tmp_path / "calls.log"
    with Executor(":memory:", plugin_dirs=[plugin_dir]) as ex:
        # Start the plugin first: its start-up is not what is measured.
        ex.run(
            shell_job("warm", "true", processors={"slow": {"log": str(tmp_path / "warm.log"), "sleep": "0"}})
        )
        jobs = [
            shell_job(
                f"j{i}", "true", processors={"slow": {"log": str(log), "sleep": "0.3", "forward": "true"}}
            )
            for i in range(20)
        ]
        done = await asyncio.gather(*(ex.run_async(job) for job in jobs))
    assert all(e.success and e.processor_errors == [] for e in done)
    assert most_at_once(log) >= 15


async def test_cancelling_a_plugin_executor_run_names_the_plugin(tmp_path: Path, plugin_dir: Path) -> None:
    install_example(plugin_dir, "executor", "stream", "stream_executor.py")
    with Executor(tmp_path / "store.db", plugin_dirs=[plugin_dir]) as ex:
        job = {"name": "c", "executor": "stream", "executor_config": {"command": "echo started; sleep 30"}}
        started = asyncio.Event()
        task = asyncio.create_task(ex.run_async(job, on_output=lambda chunk, _: started.set()))
        await asyncio.wait_for(started.wait(), 20)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(250):
            stored = ex.executions("c")
            if stored:
                break
            await asyncio.sleep(0.02)
    [execution] = stored
    assert not execution.success
    # The words of every cancel (Executor.cancel, Ctrl-C, a cancelled task), in error and output alike.
    assert execution.error == "plugin executor 'stream': Job 'c' was cancelled. Job was killed"
    assert execution.output_text.splitlines()[-1] == execution.error


class ListStore:
    """A store written in Python: the Store protocol, in a list."""

    def __init__(self) -> None:
        self.rows: builtins.list[Execution] = []
        self.closed = False

    def put(self, execution: Execution) -> None:
        # A real store would serialise it: so does this one, to catch a half-built record.
        orjson.loads(execution.to_json())
        self.rows.append(execution)

    def list(self, job_name: str, limit: int | None = None) -> builtins.list[Execution]:
        found = sorted(
            (e for e in self.rows if e.job_name == job_name), key=lambda e: e.started_at, reverse=True
        )
        return found[:limit]

    def get(self, job_name: str, key: str) -> Execution | None:
        return next((e for e in self.rows if (e.job_name, e.key) == (job_name, key)), None)

    def job_names(self) -> builtins.list[str]:
        return sorted({e.job_name for e in self.rows})

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def list_store() -> Iterator[ListStore]:
    store = ListStore()
    yield store
    assert store.closed


def test_a_store_written_in_python_gets_every_attempt(list_store: ListStore) -> None:
    assert isinstance(list_store, Store)
    with Executor(list_store, retry_backoff=0.01) as ex:
        last = ex.run(shell_job("flaky", "echo try; exit 3", retries=2))
        assert [e.attempt for e in list_store.rows] == [1, 2, 3]
        assert len({e.group for e in list_store.rows}) == 1
        assert list_store.rows[-1] == last
        assert ex.executions("flaky")[0] == last
        assert ex.execution("flaky", last.key) == last


async def test_a_store_written_in_python_from_asyncio(list_store: ListStore) -> None:
    with Executor(list_store) as ex:
        done = await asyncio.gather(*(ex.run_async(shell_job(f"a{i}", "echo hi")) for i in range(10)))
    assert sorted(e.key for e in list_store.rows) == sorted(e.key for e in done)


def test_an_object_without_the_store_methods_is_refused() -> None:
    with pytest.raises(TypeError, match="Store methods"):
        Executor(object())  # type: ignore[arg-type]


async def test_cancelling_tasks_never_blocks_the_loop(tmp_path: Path) -> None:
    # Before, each cancelled task waited up to 5 s on the loop's thread for its job to die: 20
    # cancellations with 500 runs in flight blocked the loop for 2-3 s.
    with Executor(tmp_path / "store.db") as ex:
        tasks = [asyncio.create_task(ex.run_async(shell_job(f"s{i}", "sleep 30"))) for i in range(200)]
        while ex.running() < 200:
            await asyncio.sleep(0.02)
        began = time.monotonic()
        for task in tasks[:20]:
            task.cancel()
        results = await asyncio.gather(*tasks[:20], return_exceptions=True)
        assert time.monotonic() - began < 1.0
        assert all(isinstance(r, asyncio.CancelledError) for r in results)
        # The others are still running; the cancelled ones store their executions by themselves.
        for _ in range(250):
            if sum(len(ex.executions(f"s{i}")) for i in range(20)) == 20:
                break
            await asyncio.sleep(0.02)
        assert all(ex.executions(f"s{i}")[0].error for i in range(20))
        assert not any(ex.executions(f"s{i}") for i in range(20, 200))
        ex.close()
        done = await asyncio.gather(*tasks[20:])
        assert all("cancelled" in (e.error or "") for e in done)


async def test_async_runs_that_finish_together_share_a_transaction(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "store.db")
    with Executor(store) as ex:
        before = store.core.transactions()
        done = await asyncio.gather(*(ex.run_async(shell_job(f"t{i}", "true")) for i in range(100)))
        commits = store.core.transactions() - before
        assert all(e.success for e in done)
        assert sum(len(ex.executions(f"t{i}")) for i in range(100)) == 100
    # Every execution is stored, in fewer commits than executions.
    assert commits < 100
