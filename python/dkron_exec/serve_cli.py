"""The ``dkron-exec serve`` subcommand: its arguments, signals and logging (the service is
:mod:`dkron_exec.serve`, imported only when the command runs, since it needs APScheduler)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

from .errors import DkronExecError
from .install_hints import SERVE_REQUIREMENT, install_hint
from .store import store_option_help

# Here rather than in .serve, which imports APScheduler: `dkron-exec --help` works without it.
DEFAULT_GRACE = 30.0
DEFAULT_POLL = 1.0
DEFAULT_MAX_RUNNING = 32


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be zero or more seconds, got {text!r}")
    return value


def add_serve_parser(sub: Any) -> None:
    serve = sub.add_parser(
        "serve",
        help="run a folder of job files on their schedules (reloaded on change) until SIGTERM",
        description=(
            "Schedules every *.json job file of JOBS_DIR with Dkron's schedule semantics and runs each "
            "fire through one Executor. Files are polled for changes. SIGTERM/SIGINT stops scheduling, "
            "lets running jobs finish for up to --grace seconds, then kills them; exit status 0."
        ),
    )
    serve.add_argument("jobs_dir", metavar="JOBS_DIR", help="folder of job JSON files")
    serve.add_argument("--store", help=store_option_help())
    serve.add_argument("--node", help="node name recorded on the executions (default: host name)")
    serve.add_argument("--plugin-dir", action="append", default=[], help="another plugin folder (repeatable)")
    serve.add_argument(
        "--grace",
        type=_non_negative,
        default=DEFAULT_GRACE,
        help=f"seconds running jobs may take to finish after SIGTERM (default {DEFAULT_GRACE:g})",
    )
    serve.add_argument(
        "--poll",
        type=_positive,
        default=DEFAULT_POLL,
        help=f"seconds between looks at the folder for changes (default {DEFAULT_POLL:g})",
    )
    serve.add_argument(
        "--max-running",
        type=int,
        default=DEFAULT_MAX_RUNNING,
        help=f"runs at once, at most; later fires wait for a free slot (default {DEFAULT_MAX_RUNNING})",
    )
    serve.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from .serve import StopRequest, serve
    except ImportError as exc:
        if (exc.name or "").partition(".")[0] == "dkron_exec":
            raise  # a broken install of dkron_exec itself, not the missing extra
        raise DkronExecError(
            f"serve needs APScheduler 3, which this Python cannot import ({exc}): "
            + install_hint(SERVE_REQUIREMENT, "serve")
        ) from None
    from .executor import Executor

    jobs_dir = Path(args.jobs_dir)
    if not jobs_dir.is_dir():
        raise DkronExecError(f"JOBS_DIR {str(jobs_dir)!r} is not a folder")
    if args.max_running < 1:
        raise DkronExecError(f"--max-running must be at least 1, got {args.max_running}")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    logging.getLogger("apscheduler").setLevel(logging.WARNING)  # our own lines say what ran

    request = StopRequest()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        request.signal(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        executor = Executor(args.store, node_name=args.node, plugin_dirs=args.plugin_dir)
        try:
            serve(
                jobs_dir,
                executor,
                request,
                grace=args.grace,
                poll=args.poll,
                max_running=args.max_running,
            )
        finally:
            executor.close()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
