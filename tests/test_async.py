"""run_async: the event loop stays free, many jobs in flight on a few threads."""

from __future__ import annotations

import asyncio
import time

import pytest

from conftest import thread_count, wait_gone
from dkron_exec import Executor


async def test_run_async_returns_the_stored_execution(executor: Executor) -> None:
    e = await executor.run_async({"name": "a", "command": "echo async"})
    assert e.success and e.output == b"async\n"
    assert executor.execution("a", e.key) == e


async def test_the_loop_keeps_running_while_a_job_runs(executor: Executor) -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    t = asyncio.create_task(ticker())
    await executor.run_async({"name": "slow", "command": "sleep 0.5"})
    t.cancel()
    assert ticks > 20


async def test_200_concurrent_sleeps_on_a_few_threads(executor: Executor) -> None:
    threads_before = thread_count()
    peak_threads = 0
    peak_running = 0

    async def watch() -> None:
        nonlocal peak_threads, peak_running
        while True:
            peak_threads = max(peak_threads, thread_count())
            peak_running = max(peak_running, executor.running())
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch())
    t0 = time.monotonic()
    results = await asyncio.gather(
        *(executor.run_async({"name": f"s{i}", "command": "sleep 1"}) for i in range(200))
    )
    elapsed = time.monotonic() - t0
    watcher.cancel()
    assert all(e.success for e in results)
    assert elapsed < 8, elapsed
    assert peak_running > 150
    # The engine's one worker (and at most two helpers for /proc scans): not a thread per job.
    assert peak_threads - threads_before <= 3, (threads_before, peak_threads)
    assert sum(len(executor.executions(f"s{i}")) for i in range(200)) == 200


async def test_cancelling_the_task_kills_the_job(executor: Executor, tmp_path) -> None:  # type: ignore[no-untyped-def]
    pidfile = tmp_path / "pid"
    task = asyncio.create_task(
        executor.run_async({"name": "c", "command": f"echo $$ > {pidfile}; exec sleep 60", "shell": True})
    )
    for _ in range(250):
        if pidfile.exists() and pidfile.read_text().strip():
            break
        await asyncio.sleep(0.02)
    pid = int(pidfile.read_text())
    task.cancel()
    began = time.monotonic()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The task ends at once: the loop never waits for the job to die.
    assert time.monotonic() - began < 0.5
    assert wait_gone([pid]) == []
    # The run stores its execution by itself, as cancelled, when the job is gone.
    for _ in range(100):
        stored = executor.executions("c")
        if stored:
            break
        await asyncio.sleep(0.02)
    assert len(stored) == 1 and not stored[0].success
    # The same words as Executor.cancel's, naming the job, in the error and as the output's last line.
    assert stored[0].error == "shell: Job 'c' was cancelled. Job was killed"
    assert stored[0].output_text.splitlines()[-1] == stored[0].error


async def test_async_retries(executor: Executor) -> None:
    e = await executor.run_async({"name": "r", "command": "false", "retries": 2})
    assert e.attempt == 3 and not e.success
