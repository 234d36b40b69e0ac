"""What every execution processor shares: the interface, the context, and ``forward``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol

from ..errors import JobError
from ..execution import Execution
from ..job import parse_bool as parse_go_bool


def parse_bool(value: str) -> bool | None:
    """Go's ``strconv.ParseBool``: None for anything it would reject."""
    try:
        return parse_go_bool(value)
    except ValueError:
        return None


def check_bool(processor: str, config: Mapping[str, str], key: str) -> None:
    value = config.get(key)
    if value is not None and parse_bool(value) is None:
        raise JobError(f"processors.{processor}.{key}", value, "must be true or false")


def config_bool(config: Mapping[str, str], key: str, default: bool = False) -> bool:
    value = config.get(key)
    if value is None:
        return default
    parsed = parse_bool(value)
    return default if parsed is None else parsed


def forwards(config: Mapping[str, str]) -> bool:
    """``forward``: keep the output for the next processor. False by default, as in Dkron."""
    return config_bool(config, "forward")


@dataclass(frozen=True)
class ProcessContext:
    """What a processor may know beyond the execution and its own config."""

    node_name: str
    # The job's complete output (error line included) when the executor spooled it to disk
    # because it outgrew the in-memory limit; None when ``execution.output`` is all of it.
    full_output: Path | None = None
    full_output_complete: bool = True


class Processor(Protocol):
    """An execution processor. ``process`` gets the previous processor's execution and returns
    the next one; raising costs only this step (the error is recorded on the execution)."""

    name: ClassVar[str]

    @classmethod
    def validate(cls, config: Mapping[str, str]) -> None:
        """Raises JobError (field ``processors.<name>.<key>``) for a config that can never work."""

    def process(self, execution: Execution, config: Mapping[str, str], ctx: ProcessContext) -> Execution: ...

    def close(self) -> None: ...
