"""A unix datagram socket with a receiver that drops everything: the syslog daemon of the benchmarks;
and the plain-Python syslog client (a logger with ``SysLogHandler``).

The receiver is ``c/dgram_drain.c`` (recvmmsg in batches), one per process, killed at exit. Linux queues
only ``max_dgram_qlen`` datagrams (often 10) per socket, so a slow receiver would be what every sender
waits on; a C one keeps the senders' own cost in front.
"""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import os
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path

from . import _baselines


@cache
def socket_path(results: Path = _baselines.RESULTS) -> Path:
    # A short temporary directory: a unix socket path must fit in 108 bytes.
    folder = Path(tempfile.mkdtemp(prefix="dkron-bench-"))
    path = folder / "log.sock"
    drain = subprocess.Popen(
        [str(_baselines.binary("dgram_drain", results)), str(path)], stdout=subprocess.PIPE
    )
    assert drain.stdout is not None
    if drain.stdout.readline() != b"ready\n":
        drain.kill()
        raise RuntimeError("the datagram drain did not start")

    def stop() -> None:
        drain.kill()
        drain.wait()
        shutil.rmtree(folder, ignore_errors=True)

    atexit.register(stop)
    return path


def python_logger(address: str) -> logging.Logger:
    handler = logging.handlers.SysLogHandler(
        address=address, facility=logging.handlers.SysLogHandler.LOG_CRON
    )
    handler.ident = f"dkron[{os.getpid()}]: "
    logger = logging.getLogger(f"dkron-bench-syslog-{address}")
    logger.propagate = False
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    return logger
