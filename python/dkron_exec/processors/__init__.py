"""Execution processors: the built-ins (log, files, syslog) and the chain that runs a job's list.

The store is not in this list: it always comes last (see ``Executor``).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import ClassVar

from ..errors import JobError
from .base import ProcessContext, Processor, config_bool, forwards, parse_bool

BUILTIN_NAMES = ("log", "files", "syslog")


def builtin_classes() -> Mapping[str, type[Processor]]:
    # Each built-in is imported on first use, one by one: each pulls in the Rust core, which job
    # validation should not need until a job actually names a processor, and a built-in that
    # cannot be imported costs that processor only.
    return _LazyBuiltins()


class _LazyBuiltins(Mapping[str, "type[Processor]"]):
    _MODULES: ClassVar[dict[str, tuple[str, str]]] = {
        "log": ("dkron_exec.processors.log", "LogProcessor"),
        "files": ("dkron_exec.processors.files", "FilesProcessor"),
        "syslog": ("dkron_exec.processors.syslog", "SyslogProcessor"),
    }

    def __getitem__(self, name: str) -> type[Processor]:
        module_name, class_name = self._MODULES[name]
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            raise KeyError(name) from None
        cls: type[Processor] = getattr(module, class_name)
        return cls

    def __iter__(self) -> Iterator[str]:
        return iter(self._MODULES)

    def __len__(self) -> int:
        return len(self._MODULES)


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
