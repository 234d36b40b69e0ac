#!/usr/bin/env python3
"""A processor plugin: prefixes every output line with a tag.

Install it with ``pip install ./examples/plugins`` into the environment that has dkron-exec: the
console script ``dkron-processor-tag`` lands beside that environment's python, where dkron_exec
looks for plugins, and runs with that python. (A copy or symlink elsewhere runs with whatever
``python3`` is on PATH, which must be able to import dkron_exec.) Then use it in a job::

    "processors": {"tag": {"tag": "[nightly]"}}

Config: ``tag`` (default ``[<job name>]``).
"""

from __future__ import annotations

from dkron_exec import Execution
from dkron_exec.plugin import ProcessorArgs, serve


class TagProcessor:
    def process(self, args: ProcessorArgs) -> Execution:
        tag = args.config.get("tag") or f"[{args.execution.job_name}]"
        lines = args.execution.output.splitlines(keepends=True)
        tagged = b"".join(tag.encode() + b" " + line for line in lines)
        return args.execution.replace(output=tagged)


def main() -> None:
    """The console script ``dkron-processor-tag`` (see pyproject.toml)."""
    serve(processor=TagProcessor())  # or serve(executor=...) with execute(request, status)


if __name__ == "__main__":
    main()
