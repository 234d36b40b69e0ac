"""Waiting on many engine jobs from one asyncio event loop through a single file descriptor."""

from __future__ import annotations

import asyncio
import itertools
import threading
import weakref

from . import _core


class LoopWaiter:
    """One completion queue per event loop: jobs started with its queue and a token push the token
    when they end; one reader on the queue's descriptor (registered only while jobs are pending)
    resolves their futures. Every method runs on the loop's thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue = _core.CompletionQueue()
        self._pending: dict[int, asyncio.Future[None]] = {}
        self._tokens = itertools.count()

    def register(self) -> tuple[int, asyncio.Future[None]]:
        token = next(self._tokens)
        done: asyncio.Future[None] = self.loop.create_future()
        if not self._pending:
            self.loop.add_reader(self.queue.fileno(), self._ready)
        self._pending[token] = done
        return token, done

    def forget(self, token: int) -> None:
        if self._pending.pop(token, None) is not None and not self._pending:
            self.loop.remove_reader(self.queue.fileno())

    def _ready(self) -> None:
        for token in self.queue.drain():
            done = self._pending.pop(token, None)
            if done is not None and not done.done():
                done.set_result(None)
        if not self._pending:
            self.loop.remove_reader(self.queue.fileno())


class LoopWaiters:
    """The waiter of each running event loop, dropped with its loop."""

    def __init__(self) -> None:
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopWaiter] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()

    def for_loop(self, loop: asyncio.AbstractEventLoop) -> LoopWaiter:
        with self._lock:
            waiter = self._by_loop.get(loop)
            if waiter is None:
                waiter = self._by_loop[loop] = LoopWaiter(loop)
            return waiter
