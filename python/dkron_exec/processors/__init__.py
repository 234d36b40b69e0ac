"""Execution processors: the built-ins (log, files, syslog) and the chain that runs a job's list.

The store is not in this list: it always comes last (see ``Executor``).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping

from ..errors import JobError
from .base import ProcessContext, Processor, config_bool, forwards, parse_bool

BUILTIN_NAMES = ("log", "files", "syslog")


_BUILTIN_MODULES = {
    "log": ("log", "LogProcessor"),
    "files": ("files", "FilesProcessor"),
    "syslog": ("syslog", "SyslogProcessor"),
}


class _BuiltinClasses(Mapping[str, "type[Processor]"]):
    """Imports a built-in's module only when that built-in is asked for."""

    def __getitem__(self, name: str) -> type[Processor]:
        if name not in _BUILTIN_MODULES:
            raise KeyError(name)
        module, cls = _BUILTIN_MODULES[name]
        found: type[Processor] = getattr(importlib.import_module(f"{__name__}.{module}"), cls)
        return found

    def __contains__(self, name: object) -> bool:
        return name in _BUILTIN_MODULES

    def __iter__(self) -> Iterator[str]:
        return iter(_BUILTIN_MODULES)

    def __len__(self) -> int:
        return len(_BUILTIN_MODULES)


def builtin_classes() -> Mapping[str, type[Processor]]:
    # Imported lazily, one module per name: each built-in pulls in the Rust core, which job
    # validation should not need until a job actually names a processor.
    return _BuiltinClasses()


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
