"""The syslog processor against a real rsyslog daemon: unix datagram, UDP, TCP and RELP, what the
daemon parsed (PRI, app-name, structured data, BOM, message), the daemon going away mid-run, and a
TCP destination that accepts and drops."""

from __future__ import annotations

import os
import queue
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from dkron_exec import Executor, Job
from dkron_exec._core import SyslogSink
from dkron_exec.errors import JobError
from jobs import an_execution, shell_job
from syslogd import Line, Syslogd, imrelp_available, rsyslogd_path

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
    assert got == f"<78>1 1970-01-01T00:00:00.000000Z h1 dkron {os.getpid()} - {sd} \ufeffx"
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


# -- the BOM (RFC 5424 section 6.4) ---------------------------------------------------------------


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_rfc5424_utf8_msg_starts_with_the_bom(executor: Executor, daemon: Syslogd, transport: str) -> None:
    marker = unique()
    config = destinations(daemon)[transport]
    execution = executor.run(shell_job("bom", f"echo 'héllo wörld {marker}'", processors={"syslog": config}))
    assert execution.processor_errors == []
    [line] = wait_mine(daemon, marker)
    assert line.bom, "the MSG starts with EF BB BF"
    assert line.msg == f"héllo wörld {marker}", "nothing else before or after it"
    assert line.sd.startswith('[dkron@32473 job="bom" '), "the header parsed as before"


def test_no_bom_for_bytes_that_are_not_utf8_nor_in_rfc3164(executor: Executor, daemon: Syslogd) -> None:
    marker = unique()
    configs = destinations(daemon)
    executor.run(shell_job("nobom", f"printf '{marker} \\377\\n'", processors={"syslog": configs["tcp"]}))
    executor.run(shell_job("nobom", f"echo 'é {marker}-3164'", processors={"syslog": configs["unixgram"]}))
    lines = wait_mine(daemon, marker, 2)
    assert [line.bom for line in lines] == [False, False], lines
    assert lines[0].msg.startswith(marker) and lines[1].msg.strip() == f"é {marker}-3164"


# -- TCP: a destination that accepts and drops ------------------------------------------------------


class AcceptAndDrop:
    """A TCP server that accepts every connection and closes it at once, without reading. After
    each batch of closes it puts a token in ``idle``: every connection made so far is closed."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.setblocking(False)
        self.port = int(self.listener.getsockname()[1])
        self.idle: queue.Queue[None] = queue.Queue()
        self.read = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        closed = False
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except BlockingIOError:
                if closed:
                    self.idle.put(None)
                    closed = False
                time.sleep(0.001)
                continue
            conn.close()
            closed = True

    def wait_idle(self) -> None:
        """Returns once every connection made before the call has been closed."""
        self.idle.get(timeout=30)
        while True:
            try:
                self.idle.get(timeout=0.05)
            except queue.Empty:
                return

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.listener.close()


def test_tcp_accept_and_drop_is_recorded_not_silent(executor: Executor) -> None:
    """The issue's case: four executions to a server that accepts and closes without reading."""
    server = AcceptAndDrop()
    try:
        config = {"transport": "tcp", "address": f"127.0.0.1:{server.port}"}
        executions = []
        for i in range(4):
            executions.append(
                executor.run(shell_job("dropped", f"echo lost-{i}", processors={"syslog": config}))
            )
            server.wait_idle()
        probe = executor.run(shell_job("dropped", "echo probe", processors={"syslog": config}))
    finally:
        server.close()
    later = [e.processor_errors for e in [*executions, probe]]
    for i, execution in enumerate(executions):
        # Failed itself (the drop was seen right after the write), or named by the next
        # execution, which found the connection reset: never a silent success.
        own = any(err.startswith("syslog: tcp:") for err in execution.processor_errors)
        named = any(execution.key in err and "may be lost" in err for errs in later[i + 1 :] for err in errs)
        assert own or named, later
        assert execution == executor.execution("dropped", execution.key), "stored with its errors"


# -- RELP against imrelp --------------------------------------------------------------------------


@pytest.fixture
def relp_daemon(tmp_path: Path) -> Iterator[Syslogd]:
    """A daemon with imrelp, which this test may stop and restart (on the same port)."""
    if rsyslogd_path() is None or not imrelp_available():
        message = "rsyslogd with imrelp is not installed: run scripts/install-system-deps.sh (rsyslog-relp)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    d = Syslogd(tmp_path / "rsyslog", relp=True)
    d.start()
    yield d
    d.stop()


def relp_config(d: Syslogd, **extra: str) -> dict[str, str]:
    return {"transport": "relp", "address": f"127.0.0.1:{d.relp_port}", **extra}


def test_relp_delivers_every_execution_exactly_once(executor: Executor, relp_daemon: Syslogd) -> None:
    marker = unique()
    config = relp_config(relp_daemon)
    executions = [
        executor.run(shell_job("relp", f"echo '{marker}-{i} ü'", processors={"syslog": config}))
        for i in range(20)
    ]
    assert all(e.processor_errors == [] and e.output == b"Output in syslog" for e in executions)
    found = wait_mine(relp_daemon, marker, 20)
    assert sorted(line.msg for line in found) == sorted(f"{marker}-{i} ü" for i in range(20))
    assert all(line.bom and line.pri == CRON_INFO and line.app == "dkron" for line in found)
    assert {line.sd for line in found} == {
        f'[dkron@32473 job="relp" execution="{e.key}" success="true" exit_code="0"]' for e in executions
    }
    assert connections_to(relp_daemon.relp_port or 0, "tcp") == 1, "one session for all of them"


def test_relp_daemon_stopped_mid_run_and_restarted(executor: Executor, relp_daemon: Syslogd) -> None:
    """Every execution's message arrives exactly once: those run while the daemon is down say
    that theirs is queued, and it goes before the next execution's once the daemon is back."""
    marker = unique()
    config = relp_config(relp_daemon, timeout="300ms")
    executions = []

    def run(i: int) -> None:
        executions.append(
            executor.run(shell_job("relp-mid", f"echo {marker}-{i}", processors={"syslog": config}))
        )

    for i in range(5):
        run(i)
    relp_daemon.stop()  # the session the sink keeps is closed under it
    for i in range(5, 8):
        run(i)
    relp_daemon.start()
    for i in range(8, 13):
        run(i)
    # Restarted between two executions: the cached session is found closed, and a new one taken.
    relp_daemon.stop()
    relp_daemon.start()
    run(13)
    failed = {i for i, e in enumerate(executions) if e.processor_errors}
    assert failed == {5, 6, 7}, [e.processor_errors for e in executions]
    port = relp_daemon.relp_port
    for waiting, i in enumerate(sorted(failed), start=1):
        [error] = executions[i].processor_errors
        assert error.startswith(f"syslog: relp:127.0.0.1:{port}: not delivered yet ("), error
        assert error.endswith(f"; queued for resend ({waiting} waiting)"), error
        assert executions[i].output == f"{marker}-{i}\n".encode(), "not replaced: it reached no syslog yet"
    # One session delivers in order: once a last message is stored, any duplicate would be too.
    run(14)
    assert executions[14].processor_errors == []
    assert wait_mine(relp_daemon, f"{marker}-14")
    found = [line for line in relp_daemon.lines() if marker in line.msg]
    assert sorted(line.msg for line in found) == sorted(f"{marker}-{i}" for i in range(15)), "exactly once"
    queued_then_sent = [line.msg for line in found if line.msg in {f"{marker}-{i}" for i in (5, 6, 7, 8)}]
    assert queued_then_sent == [f"{marker}-{i}" for i in (5, 6, 7, 8)], "the queue goes first, in order"


def test_relp_run_in_flight_while_the_daemon_restarts_delivers_with_no_error(
    executor: Executor, relp_daemon: Syslogd, tmp_path: Path
) -> None:
    marker = unique()
    config = relp_config(relp_daemon, timeout="60s")
    first = executor.run(shell_job("relp-flight", f"echo {marker}-0", processors={"syslog": config}))
    assert first.processor_errors == []
    relp_daemon.stop()  # the cached session dies, and connections are refused
    ran = tmp_path / "ran"
    result: queue.Queue[object] = queue.Queue()
    job = shell_job("relp-flight", f"echo {marker}-1; touch {ran}", processors={"syslog": config})
    threading.Thread(target=lambda: result.put(executor.run(job)), daemon=True).start()
    while not ran.exists():  # the job is done: its syslog step is reconnecting
        time.sleep(0.01)
    relp_daemon.start()
    execution = result.get(timeout=60)
    assert execution.processor_errors == [] and execution.output == b"Output in syslog"
    assert wait_mine(relp_daemon, f"{marker}-1")
    found = [line.msg for line in relp_daemon.lines() if marker in line.msg]
    assert found == [f"{marker}-0", f"{marker}-1"], "each once"


def test_relp_queue_bound_drops_the_oldest_and_says_so(executor: Executor, relp_daemon: Syslogd) -> None:
    marker = unique()
    config = relp_config(relp_daemon, timeout="200ms", queue_size="2")
    relp_daemon.stop()
    jobs = [shell_job("relp-bound", f"echo {marker}-{i}", processors={"syslog": config}) for i in range(3)]
    down = [executor.run(job) for job in jobs]
    [error] = down[2].processor_errors
    assert error.endswith(
        "; queued for resend (2 waiting); the resend queue is full (queue_size 2): "
        f"dropped the 1 oldest waiting message(s), of execution(s) {down[0].key}"
    ), error
    relp_daemon.start()
    last = executor.run(shell_job("relp-bound", f"echo {marker}-3", processors={"syslog": config}))
    assert last.processor_errors == []
    assert wait_mine(relp_daemon, f"{marker}-3")
    found = [line.msg for line in relp_daemon.lines() if marker in line.msg]
    assert found == [f"{marker}-{i}" for i in (1, 2, 3)], "the oldest dropped, the rest once, in order"


def test_relp_close_flushes_the_queue_once_the_daemon_is_back(
    relp_daemon: Syslogd, caplog: pytest.LogCaptureFixture
) -> None:
    marker = unique()
    config = relp_config(relp_daemon, timeout="300ms")
    job = shell_job("relp-close", f"echo {marker}", processors={"syslog": config})
    with Executor(":memory:", node_name="test-node") as ex:
        relp_daemon.stop()
        [error] = ex.run(job).processor_errors
        assert "queued for resend (1 waiting)" in error, error
        relp_daemon.start()
    assert [line.msg for line in wait_mine(relp_daemon, marker)] == [marker], "delivered by close"
    assert not [r for r in caplog.records if r.name == "dkron_exec.processors.syslog"]

    # Still down at close: dropped, and logged with the execution's key.
    with Executor(":memory:", node_name="test-node") as ex:
        relp_daemon.stop()
        key = ex.run(job).key
    [record] = [r for r in caplog.records if r.name == "dkron_exec.processors.syslog"]
    assert record.levelname == "WARNING"
    message = record.getMessage()
    port = relp_daemon.relp_port
    assert message.startswith(f"syslog: relp:127.0.0.1:{port}: 1 message(s) not delivered by close"), message
    assert message.endswith(f"and dropped, of execution(s) {key}"), message


def test_relp_to_a_closed_port_is_an_error(executor: Executor) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = {"transport": "relp", "address": f"127.0.0.1:{port}", "timeout": "500ms"}
    execution = executor.run(shell_job("relp-closed", "echo kept", processors={"syslog": config}))
    assert execution.output == b"kept\n"
    [error] = execution.processor_errors
    assert error.startswith(f"syslog: relp:127.0.0.1:{port}: ") and "refused" in error, error
