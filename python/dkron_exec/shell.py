"""The built-in ``shell`` executor: turns a job's shell config into a process for the Rust engine."""

from __future__ import annotations

import grp
import os
import pwd
import shlex

from . import _core
from .job import ShellConfig


class ShellSetupError(Exception):
    """The job cannot be started on this host (unknown user, ``su`` without root, ...)."""


def process_spec(
    config: ShellConfig,
    job_name: str,
    *,
    output_limit: int,
    pipe_grace: float,
    spool_dir: str | None = None,
    spool_limit: int = 0,
) -> _core.Spec:
    """The engine's description of the job's process (argv, environment, limits, capture)."""
    if config.shell:
        argv = ["/bin/sh", "-c", config.command]
    else:
        try:
            argv = shlex.split(config.command)
        except ValueError as exc:
            raise ShellSetupError(f"shell: cannot split command {config.command!r}: {exc}") from None
        if not argv:
            raise ShellSetupError(f"shell: command {config.command!r} has no words")
    uid, gid = _credentials(config.su)
    return _core.Spec(
        argv,
        # Dkron appends the job's variables after the agent's, then ENV_JOB_NAME.
        env=[*config.env, ("ENV_JOB_NAME", job_name)],
        cwd=config.cwd,
        stdin=config.payload,
        timeout=config.timeout,
        mem_limit=config.mem_limit,
        uid=uid,
        gid=gid,
        output_limit=output_limit,
        pipe_grace=pipe_grace,
        label=config.command,
        spool_dir=spool_dir,
        spool_limit=spool_limit,
    )


def _credentials(su: tuple[str, str | None] | None) -> tuple[int | None, int | None]:
    if su is None:
        return None, None
    user, group = su
    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError:
        raise ShellSetupError(f"shell: su: no such user {user!r}") from None
    gid = entry.pw_gid
    if group:
        try:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            raise ShellSetupError(f"shell: su: no such group {group!r}") from None
    if os.geteuid() != 0 and (entry.pw_uid != os.geteuid() or gid != os.getegid()):
        raise ShellSetupError(f"shell: su {user!r} needs the host to run as root")
    return entry.pw_uid, gid
