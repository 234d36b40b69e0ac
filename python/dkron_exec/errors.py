"""Exceptions raised by dkron_exec (also raised from the Rust core)."""

from __future__ import annotations

import reprlib
from typing import Any


class _Preview(reprlib.Repr):
    """``repr`` bounded in size and depth, for values quoted in messages: a hostile value (nested
    thousands deep, an integer of 5,000 digits) must not make the message itself fail."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel = 4
        self.maxstring = self.maxother = self.maxlong = 200
        self.maxdict = self.maxlist = self.maxtuple = self.maxset = self.maxfrozenset = 8

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 600:  # ~180 digits: str() is slow and, past 4,300 digits, refused
            return f"<integer of {x.bit_length()} bits>"
        return super().repr_int(x, level)


def preview(value: Any) -> str:
    """``repr(value)``, cut to a few hundred characters; never raises."""
    try:
        return _Preview().repr(value)
    except Exception:
        return f"<{type(value).__name__}>"


class DkronExecError(Exception):
    """Base class of every error dkron_exec raises on purpose."""


class JobError(DkronExecError, ValueError):
    """A job document is invalid. ``field`` is a dotted path such as ``executor_config.timeout``."""

    def __init__(self, field: str, value: Any, reason: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(f"{field}: {reason} (got {preview(value)})")


class ConcurrencyError(DkronExecError):
    """A job with ``concurrency: forbid`` was started while a run of it is still in flight."""


class ExecutorClosedError(DkronExecError):
    """The Executor was used after ``close()``."""


class PluginError(DkronExecError):
    """A plugin could not be found, started, or spoke the protocol wrongly."""


class StoreError(DkronExecError, OSError):
    """The execution store could not be opened, read or written; the message names its path."""
