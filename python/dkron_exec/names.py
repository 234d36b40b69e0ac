"""Checking the processor and executor names a job uses against what is there: the built-ins and
the plugins found on disk. A name nobody provides is a JobError naming the field, with the
closest known name ("did you mean 'files'?") and, for a plugin found but refused, why.

The one rule, wherever the plugins are known: a job whose names do not resolve is refused before
anything starts (``Executor.run``, ``run_async`` and ``process`` raise; ``dkron-exec run`` and
``validate`` exit 2; ``serve`` logs it for the file and keeps the job's last good version)."""

from __future__ import annotations

import difflib

from . import _core
from .discovery import KINDS, DiscoveredPlugins, PluginDirs, PluginKind, discover_plugins, parse_plugin_name
from .errors import JobError
from .job import Job


def _builtins(kind: PluginKind) -> list[str]:
    return _core.BUILTIN_PROCESSORS if kind == "processor" else _core.BUILTIN_EXECUTORS


def _refusal(kind: PluginKind, name: str, found: DiscoveredPlugins) -> str | None:
    for path, why in found.refused:
        if parse_plugin_name(path.name) == (kind, name):
            return f"{path} was refused: {why}"
    return None


class KnownNames:
    """The executor and processor names a job may use: the built-ins and the plugins ``found``.
    Built once per discovery; checking a job is a few set lookups (the messages are made only for
    a name that is unknown)."""

    def __init__(self, found: DiscoveredPlugins) -> None:
        self.found = found
        self._known = {kind: frozenset((*_builtins(kind), *found.of_kind(kind))) for kind in KINDS}
        self._executors, self._processors = self._known["executor"], self._known["processor"]

    def errors(self, job: Job) -> list[JobError]:
        """One JobError per name of the job that nothing provides; empty when every name is known."""
        errors = []
        if job.executor not in self._known["executor"]:
            errors.append(self._unknown("executor", job.executor, "executor"))
        for name in job.processors:
            if name not in self._known["processor"]:
                errors.append(self._unknown("processor", name, f"processors.{name}"))
        return errors

    def check(self, job: Job) -> None:
        """Raises the first of :meth:`errors` (the hot path: two set lookups when all is well)."""
        if job.executor in self._executors and self._processors.issuperset(job.processors):
            return
        raise self.errors(job)[0]

    def _unknown(self, kind: PluginKind, name: str, field: str) -> JobError:
        refused = _refusal(kind, name, self.found)
        if refused is not None:
            return JobError(field, name, f"no {kind} {name!r}: its plugin {refused}")
        known = sorted(self._known[kind])
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        searched = ", ".join(str(d) for d in self.found.searched) or "no plugin folder"
        return JobError(
            field,
            name,
            f"unknown {kind} {name!r}: {hint}known: {', '.join(known)} "
            f"(built-ins, and dkron-{kind}-NAME plugins in {searched})",
        )


def unknown_names(
    job: Job, plugin_dirs: PluginDirs = (), found: DiscoveredPlugins | None = None
) -> list[JobError]:
    """One JobError per executor or processor the job names that neither a built-in nor a plugin
    (in the default folders, then ``plugin_dirs``) provides; empty when every name is known."""
    return KnownNames(discover_plugins(plugin_dirs) if found is None else found).errors(job)
