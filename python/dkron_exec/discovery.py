"""Finding plugins on disk, as Dkron does: ``dkron-processor-NAME`` and ``dkron-executor-NAME``.

Folders are searched in order -- ``/etc/dkron/plugins``, the folder of the running Python
executable (where console scripts of this environment live), then the caller's folders -- and
the last one found wins. Only regular executable files count; a file anyone may write, or a file
in a folder anyone may write without the sticky bit, is refused (anyone could make it run code as
us): ``DiscoveredPlugins.refused`` says why, and a job naming it is refused with that reason
(:mod:`dkron_exec.names`). A caller's folder that does not exist is listed in
``DiscoveredPlugins.missing`` (the Executor and the CLI warn about it).
"""

from __future__ import annotations

import logging
import os
import stat
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeAlias

log = logging.getLogger("dkron_exec.discovery")

SYSTEM_PLUGIN_DIR = Path("/etc/dkron/plugins")
KINDS: tuple[Literal["processor", "executor"], ...] = ("processor", "executor")

PluginKind = Literal["processor", "executor"]

PluginDirs: TypeAlias = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]
"""One plugin folder (a ``str`` or a path) or a sequence of them."""


def plugin_folders(dirs: PluginDirs) -> list[Path]:
    """``dirs`` as a list of folders: a single ``str`` or path is one folder (not one per
    character); TypeError names anything else."""
    if isinstance(dirs, (str, os.PathLike)):
        return [Path(dirs)]
    if isinstance(dirs, (bytes, bytearray)) or not isinstance(dirs, Sequence):
        raise TypeError(f"plugin_dirs must be a folder or a sequence of folders, got {dirs!r}")
    for folder in dirs:
        if not isinstance(folder, (str, os.PathLike)):
            raise TypeError(f"plugin_dirs: each folder must be a str or a path, got {folder!r}")
    return [Path(folder) for folder in dirs]


def missing_plugin_dirs(dirs: PluginDirs) -> list[tuple[Path, str]]:
    """The folders of ``dirs`` that are not there, each once, with why ("does not exist", "is not a
    folder"): no plugin is looked for in them."""
    missing: list[tuple[Path, str]] = []
    for folder in plugin_folders(dirs):
        if folder.is_dir() or any(folder == seen for seen, _ in missing):
            continue
        missing.append((folder, "is not a folder" if folder.exists() else "does not exist"))
    return missing


def is_builtin(kind: PluginKind, name: str) -> bool:
    """Whether dkron_exec itself provides a processor or executor of that name (it wins over a
    plugin of the same name, as Dkron's embedded executors do)."""
    from . import _core

    return name in (_core.BUILTIN_PROCESSORS if kind == "processor" else _core.BUILTIN_EXECUTORS)


def default_plugin_dirs() -> list[Path]:
    # Not resolved: a venv's python is a symlink, and its console scripts sit beside the link.
    return [SYSTEM_PLUGIN_DIR, Path(sys.executable).parent]


@dataclass(frozen=True)
class PluginInfo:
    """One plugin found on disk. ``overrides`` lists the files of the same name it won over."""

    kind: PluginKind
    name: str
    path: Path
    overrides: tuple[Path, ...] = ()


@dataclass
class DiscoveredPlugins:
    processors: dict[str, PluginInfo] = field(default_factory=dict)
    executors: dict[str, PluginInfo] = field(default_factory=dict)
    refused: list[tuple[Path, str]] = field(default_factory=list)
    searched: list[Path] = field(default_factory=list)
    missing: list[tuple[Path, str]] = field(default_factory=list)
    """The caller's folders that are not there, with why (the default folders may be absent)."""

    def of_kind(self, kind: PluginKind) -> dict[str, PluginInfo]:
        return self.processors if kind == "processor" else self.executors

    def all(self) -> list[PluginInfo]:
        return [*self.processors.values(), *self.executors.values()]


def parse_plugin_name(filename: str) -> tuple[PluginKind, str] | None:
    """``dkron-processor-my-thing(.exe)`` -> ("processor", "my-thing"); None if not a plugin name."""
    if filename.endswith(".exe"):
        filename = filename[:-4]
    for kind in KINDS:
        prefix = f"dkron-{kind}-"
        if filename.startswith(prefix) and len(filename) > len(prefix):
            return kind, filename[len(prefix) :]
    return None


def _folder_unsafe(folder: Path) -> str | None:
    try:
        st = folder.stat()
    except OSError:
        return None
    if st.st_mode & stat.S_IWOTH and not st.st_mode & stat.S_ISVTX:
        return f"its folder {folder} is world-writable without the sticky bit"
    return None


def _check_file(path: Path) -> str | None:
    """Why the file may not run as a plugin; None if it may. "" means: not a file, skip quietly."""
    try:
        st = path.stat()
    except OSError:
        return ""
    if not stat.S_ISREG(st.st_mode):
        return ""
    if st.st_mode & stat.S_IWOTH:
        return "the file is world-writable"
    if not os.access(path, os.X_OK):
        return "the file is not executable"
    return None


def discover_plugins(dirs: PluginDirs = (), *, defaults: PluginDirs | None = None) -> DiscoveredPlugins:
    """Plugins in ``defaults`` (None: ``default_plugin_dirs()``) and then ``dirs`` (one folder or
    a sequence of them); last found wins."""
    found = DiscoveredPlugins(missing=missing_plugin_dirs(dirs))
    folders = plugin_folders(default_plugin_dirs() if defaults is None else defaults) + plugin_folders(dirs)
    seen: set[Path] = set()
    for folder in folders:
        key = folder.absolute()
        if key in seen or not folder.is_dir():
            continue
        seen.add(key)
        found.searched.append(folder)
        try:
            names = sorted(os.listdir(folder))
        except OSError as exc:
            log.warning("cannot list plugin folder %s: %s", folder, exc)
            continue
        folder_problem = _folder_unsafe(folder)
        for filename in names:
            parsed = parse_plugin_name(filename)
            if parsed is None:
                continue
            kind, name = parsed
            path = folder / filename
            problem = folder_problem or _check_file(path)
            if problem == "":
                continue
            if problem is not None:
                # Reported by the caller (the Executor logs it and records it on the runs that
                # name the plugin; ``dkron-exec plugins`` lists it), once.
                found.refused.append((path, problem))
                continue
            table = found.of_kind(kind)
            previous = table.get(name)
            overrides: tuple[Path, ...] = ()
            if previous is not None:
                overrides = (*previous.overrides, previous.path)
                log.info("%s plugin %r: %s overrides %s", kind, name, path, previous.path)
            table[name] = PluginInfo(kind=kind, name=name, path=path, overrides=overrides)
    return found
