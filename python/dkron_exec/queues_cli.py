"""``dkron-exec celery-queues --tag KEY=VALUE ...``: the queues a Celery worker with these tags
listens to, comma-separated for ``celery worker -Q`` (see dkron_exec.integrations.queues)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .integrations.queues import parse_tag_options, worker_queues


def cmd_celery_queues(args: argparse.Namespace) -> int:
    queues = worker_queues(parse_tag_options(args.tag))
    sys.stdout.write(("\n".join(queues) if args.lines else ",".join(queues)) + "\n")
    return 0


def add_celery_queues_parser(sub: Any) -> None:
    parser = sub.add_parser("celery-queues", help="the Celery queues (-Q) of a worker with these Dkron tags")
    parser.add_argument(
        "--tag", action="append", default=[], metavar="KEY=VALUE", help="a tag of this node (repeatable)"
    )
    parser.add_argument("--lines", action="store_true", help="one queue a line instead of a -Q list")
    parser.set_defaults(func=cmd_celery_queues)
