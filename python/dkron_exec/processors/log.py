"""The ``log`` processor: Dkron's output block on the host's stdout or stderr.

The block is Dkron's, byte for byte::

    ----- BEGIN OUTPUT job=<job> execution=<key> -----
    <output>
    ----- END OUTPUT -----

It goes to file descriptor 1 after a success and 2 after a failure, in a single write, so the
blocks of concurrent jobs do not interleave (Python's own buffers are flushed first).

Config keys:

``target`` ("stdio")
    ``"stdio"``: descriptors 1 and 2 as above. ``"logging"``: the Python logger
    ``dkron_exec.processors.log`` instead, at INFO after a success and ERROR after a failure (the
    block without its last newline; the record carries ``job_name`` and ``execution_key``).
``forward`` (false)
    When false, the execution's output becomes ``Output in dkron log``, as in Dkron.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import ClassVar

from .. import _core
from ..errors import JobError
from ..execution import Execution
from .base import ProcessContext, check_bool, forwards

logger = logging.getLogger("dkron_exec.processors.log")

REPLACEMENT = b"Output in dkron log"
TARGETS = ("stdio", "logging")


def _target(config: Mapping[str, str]) -> str:
    target = config.get("target", "stdio")
    if target not in TARGETS:
        raise JobError("processors.log.target", target, "must be 'stdio' or 'logging'")
    return target


class LogProcessor:
    """Prints each execution's output in Dkron's BEGIN/END block (see the module doc)."""

    name: ClassVar[str] = "log"

    @classmethod
    def validate(cls, config: Mapping[str, str]) -> None:
        check_bool("log", config, "forward")
        _target(config)

    def process(self, execution: Execution, config: Mapping[str, str], ctx: ProcessContext) -> Execution:
        check_bool("log", config, "forward")
        if _target(config) == "logging":
            block = _core.log_block(execution.job_name, execution.key, execution.output)
            logger.log(
                logging.INFO if execution.success else logging.ERROR,
                "%s",
                block[:-1].decode("utf-8", "replace"),
                extra={"job_name": execution.job_name, "execution_key": execution.key},
            )
        else:
            stream, fd = (sys.stdout, 1) if execution.success else (sys.stderr, 2)
            if stream is not None:
                # What Python printed before must come out before the block.
                stream.flush()
            _core.write_log_block(fd, execution.job_name, execution.key, execution.output)
        return execution if forwards(config) else execution.replace(output=REPLACEMENT)

    def close(self) -> None:
        pass
