"""Small helpers the groups share: timing a loop, running coroutines, raising the open-files limit."""

from __future__ import annotations

import asyncio
import resource
import time
from collections.abc import Awaitable, Callable


def rate(n: int, per_op: float, work: Callable[[int], float]) -> Callable[[], float]:
    """A sampler: ``work(n)`` does n operations and returns the seconds they took; the sample is
    ``n * per_op`` units per second."""

    def sample() -> float:
        return n * per_op / work(n)

    return sample


def timed_loop(op: Callable[[], object]) -> Callable[[int], float]:
    def work(n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            op()
        return time.perf_counter() - t0

    return work


def timed_async(make: Callable[[int], Awaitable[object]]) -> Callable[[int], float]:
    """Times ``make(n)`` inside a fresh event loop, excluding the loop's own set-up."""

    async def timed(n: int) -> float:
        t0 = time.perf_counter()
        await make(n)
        return time.perf_counter() - t0

    return lambda n: asyncio.run(timed(n))


async def keep_in_flight(width: int, total: int, op: Callable[[], Awaitable[object]]) -> None:
    """Runs ``total`` operations with ``width`` of them in flight at any time."""
    counts = [total // width + (1 if i < total % width else 0) for i in range(width)]

    async def worker(count: int) -> None:
        for _ in range(count):
            await op()

    await asyncio.gather(*(worker(c) for c in counts))


def raise_open_files_limit() -> None:
    """256 children in flight hold ~1,000 pipes; the default soft limit is often 1,024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = 65536 if hard == resource.RLIM_INFINITY else hard
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(target, 65536)), hard))
