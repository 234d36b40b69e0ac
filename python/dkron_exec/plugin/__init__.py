"""The plugin SDK: write a dkron_exec (or Dkron-style) plugin in Python.

A processor::

    from dkron_exec.plugin import ProcessorArgs, serve

    class Upper:
        def process(self, args: ProcessorArgs):
            return args.execution.replace(output=args.execution.output.upper())

    serve(processor=Upper())

Install the script as ``dkron-processor-upper`` in a plugin folder (or as a console script in
the same environment) and name ``"upper"`` in a job's ``processors``. The wire protocol is in
docs/PROTOCOL.md.
"""

from .serve import serve
from .types import (
    ExecuteRequest,
    ExecuteResponse,
    ExecutorPlugin,
    ProcessorArgs,
    ProcessorPlugin,
    StatusHelper,
)
from .wire import COOKIE_KEY, COOKIE_VALUE, MAX_FRAME, PROTOCOL_VERSION

__all__ = [
    "COOKIE_KEY",
    "COOKIE_VALUE",
    "MAX_FRAME",
    "PROTOCOL_VERSION",
    "ExecuteRequest",
    "ExecuteResponse",
    "ExecutorPlugin",
    "ProcessorArgs",
    "ProcessorPlugin",
    "StatusHelper",
    "serve",
]
