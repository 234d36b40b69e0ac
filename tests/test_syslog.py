"""The syslog processor against a real rsyslog daemon: unix datagram, UDP and TCP, what the daemon
parsed (PRI, app-name, structured data, message), and the daemon going away mid-run."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from pathlib import Path

import pytest

from dkron_exec import Executor, Job
from dkron_exec._core import SyslogSink
from dkron_exec.errors import JobError
from jobs import an_execution, shell_job
from syslogd import Line, Syslogd

CRON_INFO = 9 * 8 + 6
CRON_ERR = 9 * 8 + 3


def unique() -> str:
    return "m" + uuid.uuid4().hex[:12]


def wait_mine(d: Syslogd, marker: str, count: int = 1, timeout: float = 5.0) -> list[Line]:
    """The stored messages containing ``marker``, once ``count`` of them are there."""
    deadline = time.monotonic() + timeout
    while True:
        found = [line for line in d.lines() if marker in line.msg or marker in line.sd]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.02)


def destinations(d: Syslogd) -> dict[str, dict[str, str]]:
    return {
        "unixgram": {"transport": "unixgram", "address": str(d.socket)},
        "udp": {"transport": "udp", "address": f"127.0.0.1:{d.port}"},
        "tcp": {"transport": "tcp", "address": f"127.0.0.1:{d.port}"},
    }


def connections_to(port: int, protocol: str) -> int:
    """How many of this process's sockets (``tcp`` or ``udp``, IPv4) are connected to
    ``127.0.0.1:port``: the sockets a syslog sink opened."""
    ours = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            ours.add(target[len("socket:[") : -1])
    established = "01"
    count = 0
    for line in Path(f"/proc/net/{protocol}").read_text().splitlines()[1:]:
        fields = line.split()
        remote, state, inode = fields[2], fields[3], fields[9]
        if int(remote.split(":")[1], 16) == port and state == established and inode in ours:
            count += 1
    return count


# -- through an Executor, to a real daemon ------------------------------------------------------


@pytest.mark.parametrize("transport", ["unixgram", "udp", "tcp"])
def test_success_reaches_the_daemon(executor: Executor, daemon: Syslogd, transport: str) -> None:
    marker = unique()
    config = destinations(daemon)[transport]
    execution = executor.run(shell_job(f"job-{marker}", f"echo {marker}", processors={"syslog": config}))
    assert execution.success and execution.processor_errors == []
    assert execution.output == b"Output in syslog"
    [line] = wait_mine(daemon, marker)
    assert line.pri == CRON_INFO
    assert line.app == "dkron"
    assert line.procid == str(os.getpid())
    assert line.msg.strip() == marker
    if transport == "unixgram":
        assert line.sd == "-"  # RFC 3164, Go's local form
    else:
        assert line.sd == (
            f'[dkron@32473 job="job-{marker}" execution="{execution.key}" success="true" exit_code="0"]'
        )
    assert executor.execution(f"job-{marker}", execution.key) == execution


@pytest.mark.parametrize("transport", ["unixgram", "udp", "tcp"])
def test_failure_multiline_is_one_err_message(executor: Executor, daemon: Syslogd, transport: str) -> None:
    marker = unique()
    config = {**destinations(daemon)[transport], "tag": "nightly", "forward": True}
    execution = executor.run(
        shell_job("backup", f"echo {marker}-a; echo {marker}-b; exit 3", processors={"syslog": config})
    )
    assert not execution.success and execution.exit_code == 3
    assert execution.output.startswith(f"{marker}-a\n{marker}-b\n".encode()), "forward keeps the output"
    [line] = wait_mine(daemon, marker)
    assert (line.pri, line.app) == (CRON_ERR, "nightly")
    # rsyslog stores an embedded LF as #012: both lines arrived in one message.
    assert line.msg.strip().startswith(f"{marker}-a#012{marker}-b#012")
    if transport != "unixgram":
        assert 'success="false" exit_code="3"' in line.sd


def test_per_line_facility_and_severity(executor: Executor, daemon: Syslogd) -> None:
    marker = unique()
    config = {
        **destinations(daemon)["tcp"],
        "per_line": "true",
        "facility": "local4",
        "severity": "notice",
        "format": "rfc3164",
    }
    executor.run(
        shell_job("lines", f"for i in 1 2 3; do echo {marker}-$i; done", processors={"syslog": config})
    )
    found = wait_mine(daemon, marker, 3)
    assert [line.msg.strip() for line in found] == [f"{marker}-{i}" for i in (1, 2, 3)]
    assert {line.pri for line in found} == {20 * 8 + 5}
    assert {line.app for line in found} == {"dkron"}


def test_tcp_lf_framing(executor: Executor, daemon: Syslogd) -> None:
    marker = unique()
    config = {**destinations(daemon)["tcp"], "framing": "lf"}
    executor.run(shell_job("lf", f"echo {marker}-x; echo {marker}-y", processors={"syslog": config}))
    found = wait_mine(daemon, marker, 2)
    assert [line.msg for line in found] == [f"{marker}-x", f"{marker}-y"]


def test_large_output_is_split_visibly(executor: Executor, daemon: Syslogd) -> None:
    marker = unique()
    config = {**destinations(daemon)["unixgram"], "max_message": "2000"}
    execution = executor.run(
        shell_job("big", f"echo {marker}; head -c 5000 /dev/zero | tr '\\0' x", processors={"syslog": config})
    )
    assert execution.processor_errors == []
    found = wait_mine(daemon, "(part ", 3)
    parts = [line.msg.strip() for line in found if line.msg.strip().startswith("(part ")][-3:]
    assert [p[: len("(part 1/3)")] for p in parts] == ["(part 1/3)", "(part 2/3)", "(part 3/3)"]
    body = "".join(p[len("(part 1/3) ") :] for p in parts)
    assert body == f"{marker}#012" + "x" * 5000


def test_one_connection_for_many_executions(executor: Executor, daemon: Syslogd) -> None:
    marker = unique()
    config = destinations(daemon)["tcp"]
    for i in range(5):
        executor.run(shell_job("many", f"echo {marker}-{i}", processors={"syslog": config}))
        assert connections_to(daemon.port, "tcp") == 1, "the first run connected, the next ones reuse it"
    assert len(wait_mine(daemon, marker, 5)) == 5
    executor.close()
    assert connections_to(daemon.port, "tcp") == 0


def test_daemon_stopped_mid_run(executor: Executor, own_daemon: Syslogd) -> None:
    """The syslog step fails; the execution is stored anyway, with the error and its output."""
    configs = destinations(own_daemon)
    for transport in ("unixgram", "tcp"):
        executor.run(shell_job(f"up-{transport}", "echo up", processors={"syslog": configs[transport]}))
    own_daemon.stop()
    for transport in ("unixgram", "tcp"):
        name = f"down-{transport}"
        execution = executor.run(
            shell_job(name, "echo still-here", processors={"syslog": configs[transport]})
        )
        assert execution.success
        assert execution.output == b"still-here\n", "not replaced: the output reached no syslog"
        [error] = execution.processor_errors
        assert error.startswith(f"syslog: {transport}:"), error
        assert executor.execution(name, execution.key) == execution
    # Back up: the next executions reconnect.
    own_daemon.start()
    for transport in ("unixgram", "tcp"):
        marker = unique()
        execution = executor.run(
            shell_job("again", f"echo {marker}", processors={"syslog": configs[transport]})
        )
        assert execution.processor_errors == []
        assert wait_mine(own_daemon, marker)


# -- the processor without a run ----------------------------------------------------------------


def test_process_from_many_threads_shares_one_destination(daemon: Syslogd) -> None:
    marker = unique()
    with Executor(":memory:", node_name="n1") as executor:
        # reporting_node and forward are the chain's keys: they do not make a new destination.
        configs = [
            {**destinations(daemon)["udp"], "reporting_node": "n1"},
            {**destinations(daemon)["udp"], "forward": "false"},
        ]
        jobs = [
            Job.from_dict(shell_job("direct", "true", processors={"syslog": config})) for config in configs
        ]

        def work(i: int) -> None:
            for j in range(10):
                execution = an_execution("direct", output=f"{marker} {i} {j}".encode(), exit_code=0)
                out = executor.process(jobs[i % 2], execution)
                assert out.output == b"Output in syslog" and out.processor_errors == []

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(wait_mine(daemon, marker, 40)) == 40
        assert connections_to(daemon.port, "udp") == 1
    assert connections_to(daemon.port, "udp") == 0, "close() closes the connections"


def test_no_local_socket_is_a_processor_error(executor: Executor, tmp_path: Path) -> None:
    config = {"address": str(tmp_path / "missing.sock")}
    execution = executor.run(shell_job("nosock", "echo kept", processors={"syslog": config}))
    assert execution.output == b"kept\n"
    assert execution.processor_errors[0].startswith("syslog: local socket (")


def test_sink_send_releases_the_gil_and_reports_errors(tmp_path: Path) -> None:
    path = tmp_path / "rx.sock"
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(str(path))
    sink = SyslogSink({"transport": "unixgram", "address": str(path), "format": "rfc5424", "hostname": "h1"})
    assert repr(sink) == f"SyslogSink(unixgram:{path})"
    n = sink.send(job_name="j", key="k", success=True, exit_code=None, output=b"x", timestamp_ns=0)
    assert n == 1
    got = rx.recv(65536).decode()
    sd = '[dkron@32473 job="j" execution="k" success="true"]'
    assert got == f"<78>1 1970-01-01T00:00:00.000000Z h1 dkron {os.getpid()} - {sd} x"
    rx.close()
    path.unlink()
    with pytest.raises(OSError, match="unixgram:"):
        sink.send(job_name="j", key="k", success=True, exit_code=None, output=b"x", timestamp_ns=0)


# -- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "key", "value"),
    [
        ({"facility": "crond"}, "facility", "crond"),
        ({"severity": "loud"}, "severity", "loud"),
        ({"transport": "http"}, "transport", "http"),
        ({"transport": "udp", "address": "localhost:port"}, "address", "localhost:port"),
        ({"transport": "tcp"}, "address", ""),
        ({"format": "json"}, "format", "json"),
        ({"tag": "has space"}, "tag", "has space"),
        ({"max_message": "10"}, "max_message", "10"),
        ({"per_line": "maybe"}, "per_line", "maybe"),
        ({"timeout": "5"}, "timeout", "5"),  # a Go duration needs a unit
        ({"timeout": "10m"}, "timeout", "10m"),
        ({"facilty": "cron"}, "facilty", "cron"),
        ({"forward": "yes"}, "forward", "yes"),
        # Go durations only, as every other duration of a job.
        ({"timeout": "0.25"}, "timeout", "0.25"),
        ({"timeout": "5"}, "timeout", "5"),
        ({"timeout": "0s"}, "timeout", "0s"),
    ],
)
def test_bad_config_is_a_job_error(config: dict[str, str], key: str, value: str) -> None:
    with pytest.raises(JobError) as info:
        Job.from_dict(shell_job("bad", "true", processors={"syslog": config}))
    assert (info.value.field, info.value.value) == (f"processors.syslog.{key}", value)
    if key != "forward":  # the chain's key: the sink ignores it
        with pytest.raises(JobError) as info:
            SyslogSink(config)  # what process() would meet at run time
        assert info.value.field == f"processors.syslog.{key}"


def test_good_configs_validate() -> None:
    for config in (
        {},
        {"forward": True, "per_line": True, "max_message": 4096},
        {"transport": "tcp", "address": "[::1]:6514", "framing": "lf", "facility": "LOG_LOCAL7"},
        {"transport": "unix", "address": "/run/syslog.sock", "timeout": "500ms", "oversize": "truncate"},
        {"transport": "udp", "address": "127.0.0.1:514", "timeout": "250ms"},
    ):
        good = Job.from_dict(shell_job("good", "true", processors={"syslog": config}))
        assert good.plan.processors == ["syslog"]
        SyslogSink(good.processors["syslog"])  # what a run would open
