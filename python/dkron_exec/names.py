"""Checking the processor and executor names a job uses against what is there: the built-ins and
the plugins found on disk. A name nobody provides is a JobError naming the field, with the
closest known name ("did you mean 'files'?") and, for a plugin found but refused, why."""

from __future__ import annotations

import difflib
import os
from collections.abc import Sequence

from . import _core
from .discovery import DiscoveredPlugins, PluginKind, discover_plugins, parse_plugin_name
from .errors import JobError
from .job import Job


def _known(kind: PluginKind, found: DiscoveredPlugins) -> list[str]:
    builtins = _core.BUILTIN_PROCESSORS if kind == "processor" else _core.BUILTIN_EXECUTORS
    return sorted({*builtins, *found.of_kind(kind)})


def _refusal(kind: PluginKind, name: str, found: DiscoveredPlugins) -> str | None:
    for path, why in found.refused:
        if parse_plugin_name(path.name) == (kind, name):
            return f"{path} was refused: {why}"
    return None


def _unknown(kind: PluginKind, name: str, field: str, found: DiscoveredPlugins) -> JobError:
    refused = _refusal(kind, name, found)
    if refused is not None:
        return JobError(field, name, f"no {kind} {name!r}: its plugin {refused}")
    known = _known(kind, found)
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    searched = ", ".join(str(d) for d in found.searched) or "no plugin folder"
    return JobError(
        field,
        name,
        f"unknown {kind} {name!r}: {hint}known: {', '.join(known)} "
        f"(built-ins, and dkron-{kind}-NAME plugins in {searched})",
    )


def unknown_names(
    job: Job, plugin_dirs: Sequence[str | os.PathLike[str]] = (), found: DiscoveredPlugins | None = None
) -> list[JobError]:
    """One JobError per executor or processor the job names that neither a built-in nor a plugin
    (in the default folders, then ``plugin_dirs``) provides; empty when every name is known."""
    if found is None:
        found = discover_plugins(plugin_dirs)
    errors = []
    if job.executor not in _known("executor", found):
        errors.append(_unknown("executor", job.executor, "executor", found))
    for name in job.processors:
        if name not in _known("processor", found):
            errors.append(_unknown("processor", name, f"processors.{name}", found))
    return errors
