"""Execution processors: the built-ins (log, files, syslog) and the chain that runs a job's list.

The store is not in this list: it always comes last (see ``Executor``).
"""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import JobError
from .base import ProcessContext, Processor, config_bool, forwards, parse_bool

BUILTIN_NAMES = ("log", "files", "syslog")


def builtin_classes() -> dict[str, type[Processor]]:
    # Imported here: each built-in pulls in the Rust core, which job validation should not need
    # until a job actually names a processor.
    from .files import FilesProcessor
    from .log import LogProcessor
    from .syslog import SyslogProcessor

    return {"log": LogProcessor, "files": FilesProcessor, "syslog": SyslogProcessor}


def validate_processor_config(name: str, config: Mapping[str, str]) -> None:
    """Checks a built-in processor's config (plugins validate their own, at run time)."""
    if name not in BUILTIN_NAMES:
        return
    cls = builtin_classes()[name]
    cls.validate(config)
    if "forward" in config and parse_bool(config["forward"]) is None:
        raise JobError(f"processors.{name}.forward", config["forward"], "must be true or false")


__all__ = [
    "BUILTIN_NAMES",
    "ProcessContext",
    "Processor",
    "builtin_classes",
    "config_bool",
    "forwards",
    "parse_bool",
    "validate_processor_config",
]
