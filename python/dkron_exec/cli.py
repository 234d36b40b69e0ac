"""dkron-exec: run a job once, list its stored executions, validate job files, list plugins,
check how jobs are contained on this machine, serve a folder of jobs on their schedules, list the
Celery queues of a worker's tags.

Exit status of run: 0 the job succeeded and every step ran; 1 the job failed; 3 the job succeeded
but a processor step failed (its reason is shown); 2 the job file, a name in it or the store is
invalid; 130 interrupted (Ctrl-C; the execution is stored)."""

from __future__ import annotations

import argparse
import errno
import os
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import orjson

from .cli_report import cpu, memory, print_execution
from .containment import isolation
from .discovery import missing_plugin_dirs
from .errors import DkronExecError, JobError
from .executor import Executor
from .job import Job
from .job_file import BadDocument, load_job
from .names import unknown_names
from .next_run import NO_DATE, why_never
from .queues_cli import add_celery_queues_parser
from .serve_cli import add_serve_parser
from .store import describe_store, store_option_help

# Exit statuses (see the module's docstring, shown by --help).
EXIT_FAILED = 1
EXIT_INVALID = 2
EXIT_STEP_FAILED = 3
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what `yes | head` reports for the writer


def _read_job(path: str) -> Job:
    data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    return load_job("<stdin>" if path == "-" else path, data)


def _plugin_dirs(args: argparse.Namespace) -> list[str]:
    """The --plugin-dir folders that are there; each one that is not is named on stderr, once."""
    missing = missing_plugin_dirs(args.plugin_dir)
    for folder, why in missing:
        print(f"dkron-exec: warning: plugin folder {folder} {why}: no plugins are looked for there",
              file=sys.stderr)  # fmt: skip
    absent = {folder for folder, _ in missing}
    return [d for d in args.plugin_dir if Path(d) not in absent]


def _check_names(job: Job, plugin_dirs: Sequence[str]) -> None:
    errors = unknown_names(job, plugin_dirs)
    if errors:
        raise errors[0]


def _version() -> str:
    try:
        return version("dkron-exec")
    except PackageNotFoundError:
        from . import __version__

        return __version__


def cmd_run(args: argparse.Namespace) -> int:
    job = _read_job(args.job)
    plugin_dirs = _plugin_dirs(args)  # warned about here, not again by the Executor
    _check_names(job, plugin_dirs)
    with Executor(args.store, node_name=args.node, plugin_dirs=plugin_dirs) as executor:
        where = describe_store(executor.store)
        try:
            execution = executor.run(job)
        except KeyboardInterrupt:
            # The run stored its execution (cancelled) before raising: say where.
            last = executor.executions(job.name, limit=1)
            key = f" as {last[0].key}" if last else ""
            print(
                f"dkron-exec: interrupted: job {job.name!r} was cancelled; its execution is stored{key} "
                f"in {where}",
                file=sys.stderr,
            )
            return EXIT_INTERRUPTED
        # Show the record as stored, which is what later `executions` calls will see.
        stored = executor.execution(job.name, execution.key) or execution
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(stored.to_dict(), option=orjson.OPT_INDENT_2) + b"\n")
    else:
        sys.stdout.flush()
        print_execution(job, stored, where)
    if not stored.success:
        return EXIT_FAILED
    return EXIT_STEP_FAILED if stored.processor_errors else 0


def cmd_executions(args: argparse.Namespace) -> int:
    with Executor(args.store) as executor:
        executions = executor.executions(args.job_name, limit=args.limit)
    if args.json:
        docs = [e.to_dict() for e in executions]
        sys.stdout.buffer.write(orjson.dumps(docs, option=orjson.OPT_INDENT_2) + b"\n")
        return 0
    if not executions:
        print(f"no executions stored for job {args.job_name!r}")
        return 0
    rows = [("KEY", "STARTED", "DURATION", "STATUS", "EXIT", "ATTEMPT", "OUTPUT", "CPU", "PEAK")]
    for e in executions:
        rows.append(
            (
                e.key,
                e.started_at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
                f"{e.duration:.3f}s" if e.duration is not None else "-",
                "success" if e.success else "failed",
                str(e.exit_code) if e.exit_code is not None else "-",
                str(e.attempt),
                f"{e.output_size}B",
                cpu(e),
                memory(e),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    return 0


def _validate(args: argparse.Namespace) -> dict[str, Any]:
    job = _read_job(args.job)
    _check_names(job, _plugin_dirs(args))
    now = datetime.now(timezone.utc)
    nxt = job.next_run(now)
    never = why_never(job, now)
    warnings = [f"schedule {job.schedule!r}: {NO_DATE}, so the job never runs"] if never == NO_DATE else []
    return {
        "ok": True,
        "job": job.name,
        "executor": job.executor,
        "processors": list(job.processors),
        "next_run": nxt.isoformat() if nxt else None,
        "never_because": never,
        "warnings": warnings,
    }


def cmd_validate(args: argparse.Namespace) -> int:
    if not args.json:
        report = _validate(args)
        processors = report["processors"] or ["(store only)"]
        print(f"ok: job {report['job']!r}, executor {report['executor']!r}, processors {processors}")
        print(f"next run: {report['next_run'] or 'never (' + report['never_because'] + ')'}")
        for warning in report["warnings"]:
            print(f"dkron-exec: warning: {warning}", file=sys.stderr)
        return 0
    try:
        report = _validate(args)
    except JobError as exc:
        report = {"ok": False, "field": exc.field, "reason": exc.reason, "error": str(exc)}
    except (DkronExecError, OSError) as exc:
        report = {"ok": False, "field": None, "reason": str(exc), "error": str(exc)}
    sys.stdout.buffer.write(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
    return 0 if report["ok"] else EXIT_INVALID


def cmd_plugins(args: argparse.Namespace) -> int:
    from .discovery import default_plugin_dirs, discover_plugins, is_builtin

    found = discover_plugins(_plugin_dirs(args))
    missing = missing_plugin_dirs(args.plugin_dir)
    if args.json:
        doc = {
            "searched": [str(d) for d in [*default_plugin_dirs(), *args.plugin_dir]],
            "plugins": [
                {
                    "kind": p.kind,
                    "name": p.name,
                    "path": str(p.path),
                    "overrides": [str(o) for o in p.overrides],
                }
                for p in found.all()
            ],
            "refused": [{"path": str(path), "reason": why} for path, why in found.refused],
            "missing": [{"path": str(path), "reason": why} for path, why in missing],
        }
        sys.stdout.buffer.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
        return 0
    print("searched: " + ", ".join(str(d) for d in [*default_plugin_dirs(), *args.plugin_dir]))
    if not found.all():
        print("no plugins found")
    for p in found.all():
        note = "  (ignored: the built-in of that name wins)" if is_builtin(p.kind, p.name) else ""
        print(f"{p.kind:<10} {p.name:<20} {p.path}{note}")
        for old in p.overrides:
            print(f"{'':<10} {'':<20}   overrides {old}")
    for path, why in found.refused:
        print(f"refused    {path}: {why}")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    report = isolation(cgroups=not args.no_cgroups)
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        sys.stdout.write(report.describe())
    return 0


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dkron-exec", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"dkron-exec {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a job once through its executor, processors and the store")
    run.add_argument("job", help="a job JSON file (Dkron's format, or the short form), or - for stdin")
    run.add_argument("--store", help=store_option_help())
    run.add_argument("--node", help="node name recorded on the execution (default: host name)")
    run.add_argument("--json", action="store_true", help="print the execution as JSON")
    run.add_argument("--plugin-dir", action="append", default=[], help="another plugin folder (repeatable)")
    run.set_defaults(func=cmd_run)

    ls = sub.add_parser("executions", help="list a job's stored executions, newest first")
    ls.add_argument("job_name", help="the job's name (its \"name\" field)")
    ls.add_argument("--store", help=store_option_help())
    ls.add_argument("--limit", type=_at_least_one, default=None, help="at most N executions (N >= 1)")
    ls.add_argument("--json", action="store_true", help="print the executions as a JSON array")
    ls.set_defaults(func=cmd_executions)

    val = sub.add_parser("validate", help="check a job file and show its next run")
    val.add_argument("job", help="a job JSON file, or - for stdin")
    val.add_argument("--plugin-dir", action="append", default=[], help="another plugin folder (repeatable)")
    val.add_argument("--json", action="store_true", help="print the result (or the error) as JSON")
    val.set_defaults(func=cmd_validate)

    plug = sub.add_parser("plugins", help="list the plugins found, where, and those refused")
    plug.add_argument("--plugin-dir", action="append", default=[], help="another folder (repeatable)")
    plug.add_argument("--json", action="store_true", help="print the folders, plugins and refusals as JSON")
    plug.set_defaults(func=cmd_plugins)

    doc = sub.add_parser("doctor", help="how jobs are contained here (cgroup or process group)")
    doc.add_argument("--no-cgroups", action="store_true", help="what Executor(cgroups=False) gets")
    doc.add_argument("--json", action="store_true", help="print the report as JSON")
    doc.set_defaults(func=cmd_doctor)

    add_serve_parser(sub)
    add_celery_queues_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except JobError as exc:
        print(f"dkron-exec: invalid job: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except BadDocument as exc:
        print(f"dkron-exec: invalid job: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except (DkronExecError, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno == errno.EPIPE:
            # The reader left (`| head`; the error may come from the Rust side, as a plain OSError):
            # nothing to report. Point stdout at /dev/null so Python's flush at exit stays quiet.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_BROKEN_PIPE
        print(f"dkron-exec: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except KeyboardInterrupt:
        print("dkron-exec: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
