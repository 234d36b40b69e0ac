"""Where the executor spools output that outgrows the in-memory tail, for processors (files) that
want all of it. A spool file lives only while its execution goes through the processors."""

from __future__ import annotations

import os
import re
from pathlib import Path

# The Rust engine names spool files ".dkron-exec-spool-<pid>-<seq>".
_SPOOL_NAME = re.compile(r"\.dkron-exec-spool-(\d+)-\d+")


def default_spool_dir() -> Path:
    """``$XDG_CACHE_HOME/dkron-exec/spool`` (``~/.cache``): on disk, not a tmpfs /tmp."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "dkron-exec" / "spool"


def remove_stale_spools(directory: Path) -> int:
    """Deletes spool files left by processes that died mid-run; returns how many."""
    removed = 0
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return 0
    for entry in entries:
        match = _SPOOL_NAME.fullmatch(entry.name)
        if match and not _alive(int(match.group(1))):
            try:
                os.unlink(entry.path)
                removed += 1
            except FileNotFoundError:
                pass
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True
