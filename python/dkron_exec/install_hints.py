"""What to install for an optional part of dkron_exec, said so that the command works as written.

dkron-exec is installed from a clone or a wheel, not from the package index, so a message never asks
the index for dkron-exec with an extra. It names the requirement itself (always on the index), installed
with the very Python that is running (``sys.executable -m pip``, so into the right environment), and
the extra to use from a clone. The requirements are the extras' own (pyproject.toml); a test keeps
them equal.
"""

from __future__ import annotations

import shlex
import sys

# pyproject.toml [project.optional-dependencies]: serve (alias apscheduler) and postgres.
SERVE_REQUIREMENT = "apscheduler>=3.10,<4"
POSTGRES_REQUIREMENT = "psycopg[binary]>=3.1"


def install_hint(requirement: str, extra: str) -> str:
    """How to install ``requirement``: with this Python's pip, or as ``extra`` from a clone."""
    pip = f"{shlex.quote(sys.executable)} -m pip install {shlex.quote(requirement)}"
    return f"install it with {pip} (or, from a clone of dkron_exec: .venv/bin/pip install '.[{extra}]')"
