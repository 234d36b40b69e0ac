"""The one job factory of the tests: Dkron job documents for the shell executor, and executions
to pass through a job's processors."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dkron_exec import Execution
from dkron_exec.execution import datetime_from_ns

# The keys of the shell executor's config; any other field is a top-level field of the job.
SHELL_CONFIG_KEYS = frozenset(
    {"shell", "env", "cwd", "timeout", "mem_limit", "su", "payload", "keep_daemons"}
)


def shell_job(
    name: str,
    command: str,
    *,
    processors: Mapping[str, Mapping[str, Any]] | None = None,
    shell: bool = True,
    **fields: Any,
) -> dict[str, Any]:
    """A job running ``command`` with the shell executor, in Dkron's full form.

    ``shell`` is on by default, as the tests write shell snippets; pass ``shell=False`` to run the
    command's words directly. ``fields`` that are shell executor keys (``env``, ``cwd``,
    ``timeout``, ``mem_limit``, ``su``, ``payload``, ``keep_daemons``) go into ``executor_config``; the others
    (``retries``, ``concurrency``, ...) are fields of the job.
    """
    config: dict[str, Any] = {"command": command, "shell": shell}
    config.update({key: value for key, value in fields.items() if key in SHELL_CONFIG_KEYS})
    job: dict[str, Any] = {"name": name, "executor": "shell", "executor_config": config}
    job.update({key: value for key, value in fields.items() if key not in SHELL_CONFIG_KEYS})
    if processors is not None:
        job["processors"] = {step: dict(step_config) for step, step_config in processors.items()}
    return job


def an_execution(
    job_name: str = "job",
    *,
    started_ns: int = 1_700_000_000_000_000_000,
    node_name: str = "node",
    success: bool = True,
    output: bytes = b"hello\n",
    **fields: Any,
) -> Execution:
    """An execution as a run of ``job_name`` on ``node_name`` would make it, keyed
    ``<started_ns>-<node_name>``, for ``Executor.process``."""
    return Execution(
        job_name=job_name,
        started_at=datetime_from_ns(started_ns),
        finished_at=datetime_from_ns(started_ns + 1_000_000),
        success=success,
        output=output,
        node_name=node_name,
        key=f"{started_ns}-{node_name}",
        **fields,
    )
