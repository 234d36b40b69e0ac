"""Exceptions raised by dkron_exec (also raised from the Rust core)."""

from __future__ import annotations

from typing import Any


class DkronExecError(Exception):
    """Base class of every error dkron_exec raises on purpose."""


class JobError(DkronExecError, ValueError):
    """A job document is invalid. ``field`` is a dotted path such as ``executor_config.timeout``."""

    def __init__(self, field: str, value: Any, reason: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(f"{field}: {reason} (got {value!r})")


class ConcurrencyError(DkronExecError):
    """A job with ``concurrency: forbid`` was started while a run of it is still in flight."""


class ExecutorClosedError(DkronExecError):
    """The Executor was used after ``close()``."""


class PluginError(DkronExecError):
    """A plugin could not be found, started, or spoke the protocol wrongly."""


class StoreError(DkronExecError, OSError):
    """The execution store could not be opened, read or written; the message names its path."""
