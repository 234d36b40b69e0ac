"""The ``files`` processor: each execution's output in a file of its own, as Dkron's.

Config keys (strings, or JSON booleans and numbers):

``log_dir``
    Where the files go; created (with its parents) when missing. ``~`` is expanded; a relative
    path is taken from the current directory at run time; a path with a ``..`` component, or one
    that exists and is not a directory, is refused. Default: ``$DKRON_EXEC_LOG_DIR``, else
    ``$XDG_STATE_HOME/dkron-exec/logs``, else ``~/.local/state/dkron-exec/logs`` (Dkron's
    ``/var/log/dkron`` needs root, which a library should not assume).
``per_job_dir`` (false)
    ``<log_dir>/<job>/<key>.log`` instead of Dkron's flat ``<log_dir>/<key>.log``.
``keep`` (unset: keep everything)
    Keep only the newest N files of the job (newest by the start time the key begins with). It
    requires ``per_job_dir``: in the flat layout the file names do not say which job they belong
    to, so ``keep`` alone is refused when the job is validated.
``full_output`` (true)
    When the executor spooled an output larger than its in-memory limit (``ctx.full_output``),
    the file gets that complete output, streamed from the spool, instead of the kept tail. The
    spool is the job's own output: it is what the file gets even when an earlier processor of the
    chain replaced ``execution.output``. A spool cut at ``max_size`` is copied as it is.
``max_size`` ("1GB", Dkron's byte-size syntax)
    At most this many bytes per file: the first ones. Also what the executor spools at most.
``fsync`` (false)
    Flush the file and its directory to disk before returning (a disk flush per execution).
``forward`` (false)
    When false, the execution's output becomes the file's path, as in Dkron.

A job name or key that could place a file outside ``log_dir`` (``..``, ``/``, NUL) is refused
with ValueError. Files are written atomically (a hidden ``.<name>.<pid>.<n>.tmp`` file in the same
directory, renamed into place) with mode 0644 whatever the umask. A failed write raises, so the
chain records the failure and keeps the previous execution: the output never names a file that
was not written (Dkron claims the path anyway).
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from .. import _core
from ..durations import parse_byte_size
from ..errors import JobError
from ..execution import Execution
from .base import ProcessContext, check_bool, config_bool, forwards

log = logging.getLogger("dkron_exec.processors.files")

DEFAULT_MAX_SIZE = "1GB"


def default_log_dir() -> Path:
    """``$DKRON_EXEC_LOG_DIR``, else ``$XDG_STATE_HOME/dkron-exec/logs``, else
    ``~/.local/state/dkron-exec/logs`` (read at each call, so the environment can change)."""
    explicit = os.environ.get("DKRON_EXEC_LOG_DIR")
    if explicit:
        return Path(explicit).expanduser()
    state = os.environ.get("XDG_STATE_HOME")
    base = Path(state) if state else Path.home() / ".local" / "state"
    return base / "dkron-exec" / "logs"


@dataclass(frozen=True)
class FilesOptions:
    log_dir: Path | None  # None: the default, resolved at each run (it follows the environment)
    per_job_dir: bool
    keep: int | None
    full_output: bool
    max_size: int
    fsync: bool
    forward: bool


def _field(key: str) -> str:
    return f"processors.files.{key}"


def _log_dir(config: Mapping[str, str]) -> Path | None:
    text = config.get("log_dir")
    if text is None:
        return None
    if not text or "\0" in text:
        raise JobError(_field("log_dir"), text, "must be a non-empty path without NUL bytes")
    path = Path(text).expanduser()
    if ".." in path.parts:
        raise JobError(_field("log_dir"), text, "must not contain a '..' component")
    return path


def _keep(config: Mapping[str, str]) -> int | None:
    text = config.get("keep")
    if text is None or text == "":
        return None
    if not text.isascii() or not text.isdigit() or int(text) < 1:
        raise JobError(_field("keep"), text, "must be a positive integer (the number of files to keep)")
    return int(text)


def parse_options(config: Mapping[str, str]) -> FilesOptions:
    """The processor's options; JobError (field ``processors.files.<key>``) for a bad value."""
    return _parse_items(tuple(config.items()))


@functools.lru_cache(maxsize=256)
def _parse_items(items: tuple[tuple[str, str], ...]) -> FilesOptions:
    # A job's config is the same at every run: parse it once (errors are not cached).
    config = dict(items)
    for key in ("forward", "per_job_dir", "full_output", "fsync"):
        check_bool("files", config, key)
    max_text = config.get("max_size", DEFAULT_MAX_SIZE)
    try:
        max_size = parse_byte_size(max_text)
    except ValueError as exc:
        raise JobError(_field("max_size"), max_text, str(exc)) from None
    options = FilesOptions(
        log_dir=_log_dir(config),
        per_job_dir=config_bool(config, "per_job_dir"),
        keep=_keep(config),
        full_output=config_bool(config, "full_output", default=True),
        max_size=max_size,
        fsync=config_bool(config, "fsync"),
        forward=forwards(config),
    )
    if options.keep is not None and not options.per_job_dir:
        raise JobError(
            _field("keep"),
            config["keep"],
            "needs per_job_dir=true: in the flat layout file names do not say which job they belong to",
        )
    return options


class FilesProcessor:
    """Writes each execution's output to ``<log_dir>/[<job>/]<key>.log`` (see the module doc)."""

    name: ClassVar[str] = "files"

    @classmethod
    def validate(cls, config: Mapping[str, str]) -> None:
        log_dir = parse_options(config).log_dir or default_log_dir()
        if log_dir.exists() and not log_dir.is_dir():
            raise JobError(_field("log_dir"), str(log_dir), "exists and is not a directory")

    @classmethod
    def spool_limit(cls, config: Mapping[str, str]) -> int | None:
        """Bytes of output the executor should spool to disk for this processor (``max_size``),
        or None when ``full_output`` is off and the in-memory output is all it needs."""
        options = parse_options(config)
        return options.max_size if options.full_output else None

    def process(self, execution: Execution, config: Mapping[str, str], ctx: ProcessContext) -> Execution:
        options = parse_options(config)
        spool = ctx.full_output if options.full_output else None
        path = _core.write_log_file(
            (options.log_dir or default_log_dir()).absolute(),
            execution.key,
            None if spool is not None else execution.output,
            job=execution.job_name if options.per_job_dir else None,
            source=spool,
            max_size=options.max_size,
            fsync=options.fsync,
        )
        if options.keep is not None:
            try:
                _core.prune_log_files(path.parent, options.keep)
            except OSError as exc:
                # The file is written: a failed clean-up must not cost the execution its path.
                log.warning("files: cannot prune %s: %s", path.parent, exc)
        if options.forward:
            return execution
        return execution.replace(output=os.fsencode(path))

    def close(self) -> None:
        pass
