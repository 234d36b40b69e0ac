from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dkron_exec import Executor
from syslogd import Syslogd, rsyslogd_path


@pytest.fixture
def executor() -> Iterator[Executor]:
    with Executor(":memory:", node_name="test-node", retry_backoff=0.01) as ex:
        yield ex


@pytest.fixture
def file_executor(tmp_path: Path) -> Iterator[Executor]:
    with Executor(tmp_path / "store.db", node_name="test-node", retry_backoff=0.01) as ex:
        yield ex


def pid_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def wait_gone(pids: list[int], timeout: float = 2.0) -> list[int]:
    """Waits for the processes to end; returns those still alive after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in pids if pid_alive(p)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.02)


def thread_count() -> int:
    return len(os.listdir("/proc/self/task"))


def _need_rsyslogd() -> None:
    """The syslog tests need a real daemon: in CI its absence is a failure, elsewhere a skip."""
    if rsyslogd_path() is not None:
        return
    message = "rsyslogd is not installed: run scripts/install-system-deps.sh (apt-get install rsyslog)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Syslogd]:
    """A real rsyslogd on its own socket and loopback port, shared by a test module."""
    _need_rsyslogd()
    d = Syslogd(tmp_path_factory.mktemp("rsyslog"))
    d.start()
    yield d
    d.stop()


@pytest.fixture
def own_daemon(tmp_path: Path) -> Iterator[Syslogd]:
    """A daemon this test may stop and restart."""
    _need_rsyslogd()
    d = Syslogd(tmp_path / "rsyslog")
    d.start()
    yield d
    d.stop()
