"""Scratch folders for groups that write files, emptied before each sample (outside its timing) so every
sample creates files in an empty directory, and removed at exit.

They live on tmpfs (``/dev/shm``) unless ``DKRON_BENCH_FILES_DIR`` names another parent: the figures
compare the processor with the same system calls in C, and on a disk file system the allocator can
dominate and swing by 10x with the folder's place (seen on ext4 here: creating a file cost ~30 us in one
fresh folder of /tmp and ~800 us in another). Set it to a disk folder to measure the disk as well.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def parent() -> str | None:
    explicit = os.environ.get("DKRON_BENCH_FILES_DIR")
    if explicit:
        return explicit
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


def folder(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=f"dkron-bench-{prefix}-", dir=parent()))
    atexit.register(shutil.rmtree, path, True)
    return path


def empty(path: Path) -> None:
    with os.scandir(path) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)


def emptied_first(path: Path, work: Callable[[int], float]) -> Callable[[int], float]:
    """``work(n)`` (which returns its own seconds) run in ``path`` emptied first, the emptying not timed."""

    def sample(n: int) -> float:
        empty(path)
        return work(n)

    return sample
