"""``dkron-exec``: run a job once, list its stored executions, validate job files, check how jobs
are contained on this machine, serve a folder of jobs on their schedules (``serve_cli``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import orjson

from .containment import isolation
from .errors import DkronExecError, JobError
from .execution import Execution
from .executor import Executor
from .job import Job
from .queues_cli import add_celery_queues_parser
from .serve_cli import add_serve_parser
from .store import default_store_path, describe_store


def _read_job(path: str) -> Job:
    data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    try:
        return Job.from_json(data)
    except orjson.JSONDecodeError as exc:
        raise JobError("(document)", path, f"not valid JSON: {exc}") from None


def _print_execution(execution: Execution) -> None:
    status = "success" if execution.success else "failed"
    out = sys.stdout
    out.write(f"job:        {execution.job_name}\n")
    out.write(f"execution:  {execution.key}\n")
    out.write(f"status:     {status} (exit code {execution.exit_code}, attempt {execution.attempt})\n")
    out.write(f"started:    {execution.started_at.isoformat()}\n")
    if execution.finished_at is not None:
        out.write(f"finished:   {execution.finished_at.isoformat()} ({execution.duration:.3f}s)\n")
    if execution.error:
        out.write(f"error:      {execution.error}\n")
    for err in execution.processor_errors:
        out.write(f"processor:  {err}\n")
    if execution.cpu_time_us is not None or execution.peak_memory is not None:
        out.write(f"used:       {_usage(execution)}\n")
    truncated = f", last {len(execution.output)} kept" if execution.output_truncated else ""
    out.write(f"output:     {execution.output_size} bytes{truncated}\n")
    out.write(execution.output_text)
    if execution.output and not execution.output.endswith(b"\n"):
        out.write("\n")


def _cpu(e: Execution) -> str:
    return "-" if e.cpu_time_us is None else f"{e.cpu_time_us / 1e6:.3f}s"


def _memory(e: Execution) -> str:
    return "-" if e.peak_memory is None else f"{e.peak_memory / 2**20:.1f}MiB"


def _usage(e: Execution) -> str:
    return f"cpu {_cpu(e)}, peak memory {_memory(e)}"


def cmd_run(args: argparse.Namespace) -> int:
    job = _read_job(args.job)
    with Executor(args.store, node_name=args.node, plugin_dirs=args.plugin_dir) as executor:
        where = describe_store(executor.store)
        execution = executor.run(job)
        # Show the record as stored, which is what later `executions` calls will see.
        stored = executor.execution(job.name, execution.key) or execution
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(stored.to_dict(), option=orjson.OPT_INDENT_2) + b"\n")
    else:
        print(f"store:      {where}")
        _print_execution(stored)
    return 0 if stored.success else 1


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
                _cpu(e),
                _memory(e),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    job = _read_job(args.job)
    nxt = job.next_run(datetime.now(timezone.utc))
    processors = list(job.processors) or ["(store only)"]
    print(f"ok: job {job.name!r}, executor {job.executor!r}, processors {processors}")
    print(f"next run: {nxt.isoformat() if nxt else 'never (on demand only)'}")
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    from .discovery import default_plugin_dirs, discover_plugins, is_builtin

    found = discover_plugins(args.plugin_dir)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dkron-exec", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a job once through its executor, processors and the store")
    run.add_argument("job", help="a job JSON file (Dkron's format, or the short form), or - for stdin")
    run.add_argument(
        "--store",
        help=(
            "SQLite file, :memory: or a postgresql:// URL "
            f"(default $DKRON_EXEC_STORE, else {default_store_path()})"
        ),
    )
    run.add_argument("--node", help="node name recorded on the execution (default: host name)")
    run.add_argument("--json", action="store_true", help="print the execution as JSON")
    run.add_argument("--plugin-dir", action="append", default=[], help="another plugin folder (repeatable)")
    run.set_defaults(func=cmd_run)

    ls = sub.add_parser("executions", help="list a job's stored executions, newest first")
    ls.add_argument("job_name")
    ls.add_argument("--store", help="SQLite file or postgresql:// URL (default: as for run)")
    ls.add_argument("--limit", type=int, default=None)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_executions)

    val = sub.add_parser("validate", help="check a job file and show its next run")
    val.add_argument("job")
    val.set_defaults(func=cmd_validate)

    plug = sub.add_parser("plugins", help="list the plugins found, where, and those refused")
    plug.add_argument("--plugin-dir", action="append", default=[], help="another folder (repeatable)")
    plug.add_argument("--json", action="store_true")
    plug.set_defaults(func=cmd_plugins)

    doc = sub.add_parser("doctor", help="how jobs are contained here (cgroup or process group)")
    doc.add_argument("--no-cgroups", action="store_true", help="what Executor(cgroups=False) gets")
    doc.add_argument("--json", action="store_true")
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
        return 2
    except (DkronExecError, OSError) as exc:
        print(f"dkron-exec: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
