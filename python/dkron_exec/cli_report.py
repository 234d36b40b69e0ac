"""What ``dkron-exec run`` prints about an execution: its status, what the job wrote, and what
happened to each step (stored, written to PATH, sent to syslog ADDRESS, failed: why)."""

from __future__ import annotations

import sys
from typing import TextIO

from . import _core
from .execution import Execution
from .job import Job


def cpu(e: Execution) -> str:
    return "-" if e.cpu_time_us is None else f"{e.cpu_time_us / 1e6:.3f}s"


def memory(e: Execution) -> str:
    return "-" if e.peak_memory is None else f"{e.peak_memory / 2**20:.1f}MiB"


def usage(e: Execution) -> str:
    return f"cpu {cpu(e)}, peak memory {memory(e)}"


def status_line(e: Execution) -> str:
    status = "success" if e.success else "failed"
    # None when the command never started (or an executor plugin gave no code).
    code = "no exit code" if e.exit_code is None else f"exit code {e.exit_code}"
    return f"{status} ({code}, attempt {e.attempt})"


def _step_failures(e: Execution) -> dict[str, str]:
    failures: dict[str, str] = {}
    for err in e.processor_errors:
        name, _, why = err.partition(": ")
        failures.setdefault(name, why)
    return failures


def _log_prints(config: dict[str, str]) -> bool:
    return config.get("target", "stdio") in ("", "stdio")


def step_lines(job: Job, e: Execution) -> list[tuple[str, str]]:
    """(step, what happened) for each processor in order."""
    failures = _step_failures(e)
    lines = []
    for name, config in job.processors.items():
        if name in failures:
            lines.append((name, f"failed: {failures.pop(name)}"))
        elif name == "files":
            try:
                where = str(_core.files_log_path(config, e.job_name, e.key))
            except ValueError as exc:
                where = f"? ({exc})"
            lines.append((name, f"written to {where}"))
        elif name == "log":
            lines.append((name, "printed above" if _log_prints(config) else "sent to Python logging"))
        elif name == "syslog":
            try:
                lines.append((name, f"sent to syslog {_core.SyslogSink(config).destination}"))
            except (ValueError, OSError):
                lines.append((name, "sent to syslog"))
        else:
            lines.append((name, "done (plugin)"))
    # Errors of no step the job names (the spool, say).
    lines.extend((name, f"failed: {why}") for name, why in failures.items())
    return lines


def print_execution(job: Job, e: Execution, store: str, out: TextIO | None = None) -> None:
    out = sys.stdout if out is None else out  # looked up now: a caller may have replaced it
    out.write(f"store:      {store}\n")
    out.write(f"job:        {e.job_name}\n")
    out.write(f"execution:  {e.key}\n")
    out.write(f"status:     {status_line(e)}\n")
    out.write(f"started:    {e.started_at.isoformat()}\n")
    if e.finished_at is not None:
        out.write(f"finished:   {e.finished_at.isoformat()} ({e.duration:.3f}s)\n")
    if e.error:
        out.write(f"error:      {e.error}\n")
    if e.cpu_time_us is not None or e.peak_memory is not None:
        out.write(f"used:       {usage(e)}\n")
    truncated = f", the last {len(e.output)} kept" if e.output_truncated else ""
    out.write(f"job output: {e.output_size} bytes written by the job{truncated}\n")
    out.write("steps:\n" if job.processors else "steps:      none (the execution is only stored)\n")
    for name, what in step_lines(job, e):
        out.write(f"  {name + ':':<10} {what}\n")
    logged = any(n == "log" and _log_prints(c) for n, c in job.processors.items())
    if logged:
        return  # the log step printed the output already, above
    out.write(f"stored output ({len(e.output)} bytes, after the processors):\n")
    out.write(e.output_text)
    if e.output and not e.output.endswith(b"\n"):
        out.write("\n")
