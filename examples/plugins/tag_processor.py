#!/usr/bin/env python3
"""A processor plugin: prefixes every output line with a tag.

Install it as ``dkron-processor-tag`` (a copy, a symlink, or a console script) in a plugin
folder, then use it in a job::

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


if __name__ == "__main__":
    serve(processor=TagProcessor())
