"""What a plugin's code sees: the arguments of a call and the helper to stream output."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ..execution import Execution


@dataclass
class ProcessorArgs:
    """A processor call: the execution so far, and the job's config for this processor
    (string values, plus ``reporting_node``)."""

    execution: Execution
    config: dict[str, str]


@dataclass
class ExecuteRequest:
    """An executor call: the job's name, its ``executor_config``, and the payload (may be empty)."""

    job_name: str
    config: dict[str, str]
    payload: bytes = b""


@dataclass
class ExecuteResponse:
    """The end of an executor call. ``output`` comes after what was streamed; a non-empty
    ``error`` fails the execution (Dkron's ``ExecuteResponse``). ``exit_code`` is optional; a
    non-zero one without an ``error`` fails it too, as ``exit status N``."""

    output: bytes = b""
    error: str = ""
    exit_code: int | None = None


class StatusHelper:
    """Streams an executor call's output to the host while it runs (Dkron's StatusHelper)."""

    def __init__(self, send: Callable[[bytes, bool], None], cancelled: threading.Event | None = None) -> None:
        self._send = send
        self._cancelled = cancelled or threading.Event()

    def update(self, chunk: bytes | str, is_error: bool = False) -> None:
        """Sends a chunk of output; ``is_error`` marks it as stderr."""
        data = chunk.encode() if isinstance(chunk, str) else bytes(chunk)
        if data:
            self._send(data, is_error)

    @property
    def cancelled(self) -> bool:
        """True once the host cancelled the call (timeout or cancel): stop and return."""
        return self._cancelled.is_set()

    def wait_cancelled(self, timeout: float | None = None) -> bool:
        """Sleeps until the call is cancelled or ``timeout`` passes; True if cancelled."""
        return self._cancelled.wait(timeout)


class ProcessorPlugin(Protocol):
    def process(self, args: ProcessorArgs) -> Execution: ...


class ExecutorPlugin(Protocol):
    def execute(self, request: ExecuteRequest, status: StatusHelper) -> ExecuteResponse: ...
