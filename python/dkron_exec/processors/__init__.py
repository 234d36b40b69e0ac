"""Execution processors: the built-ins (log, files, syslog) and the chain that runs a job's list.

The store is not in this list: it always comes last (see ``Executor``).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import cast

from ..errors import JobError
from .base import ProcessContext, Processor, config_bool, forwards, parse_bool

# name -> (module, class). Imported on first use: a job that names no processor never loads them.
_BUILTINS = {
    "log": (".log", "LogProcessor"),
    "files": (".files", "FilesProcessor"),
    "syslog": (".syslog", "SyslogProcessor"),
}
BUILTIN_NAMES = tuple(_BUILTINS)


def builtin_class(name: str) -> type[Processor]:
    module, cls = _BUILTINS[name]
    return cast("type[Processor]", getattr(importlib.import_module(module, __name__), cls))


def builtin_classes() -> dict[str, type[Processor]]:
    return {name: builtin_class(name) for name in _BUILTINS}


def validate_processor_config(name: str, config: Mapping[str, str]) -> None:
    """Checks a built-in processor's config (plugins validate their own, at run time)."""
    if name not in _BUILTINS:
        return
    builtin_class(name).validate(config)
    if "forward" in config and parse_bool(config["forward"]) is None:
        raise JobError(f"processors.{name}.forward", config["forward"], "must be true or false")


__all__ = [
    "BUILTIN_NAMES",
    "ProcessContext",
    "Processor",
    "builtin_class",
    "builtin_classes",
    "config_bool",
    "forwards",
    "parse_bool",
    "validate_processor_config",
]
