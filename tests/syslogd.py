"""A real rsyslog daemon for tests: its own unix datagram socket and loopback TCP/UDP ports (and,
optionally, a RELP port through imrelp), writing every message it parses to one file, one line
per message (see ``TEMPLATE``)."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

# What rsyslog made of each message: the fields the tests check, plus the raw message.
TEMPLATE = (
    "pri=%pri% host=%hostname% app=%app-name% procid=%procid% msgid=%msgid% sd=%structured-data% msg=%msg%\\n"
)

CONFIG = """\
global(workDirectory="{run}" net.enableDNS="off" maxMessageSize="64k")
module(load="imuxsock" SysSock.Use="off")
input(type="imuxsock" Socket="{run}/log.sock" CreatePath="on" RateLimit.Interval="0")
module(load="imtcp")
input(type="imtcp" address="127.0.0.1" port="{port}")
module(load="imudp")
input(type="imudp" address="127.0.0.1" port="{port}")
template(name="dbg" type="string" string="{template}")
action(type="omfile" file="{run}/out.log" template="dbg")
"""

RELP_CONFIG = """\
module(load="imrelp")
input(type="imrelp" address="127.0.0.1" port="{port}")
"""

# The UTF-8 byte order mark that starts an RFC 5424 MSG in UTF-8; rsyslog keeps it in %msg%.
BOM = "\ufeff"


def rsyslogd_path() -> str | None:
    return shutil.which("rsyslogd") or next(
        (p for p in ("/usr/sbin/rsyslogd", "/sbin/rsyslogd") if os.access(p, os.X_OK)), None
    )


def imrelp_available() -> bool:
    """Whether rsyslog's RELP input module (Debian: rsyslog-relp) is installed."""
    patterns = ("/usr/lib/*/rsyslog/imrelp.so", "/usr/lib/rsyslog/imrelp.so", "/usr/lib64/rsyslog/imrelp.so")
    return any(glob.glob(p) for p in patterns)


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
        tcp.bind(("127.0.0.1", 0))
        return int(tcp.getsockname()[1])


def relp_send(port: int, message: bytes, timeout: float = 1.0) -> None:
    """One RELP session with one message, acknowledged (a probe; the library has its own client)."""
    offers = b"relp_version=0\nrelp_software=syslogd.py\ncommands=syslog"
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"1 open %d %s\n" % (len(offers), offers) + b"2 syslog %d %s\n" % (len(message), message))
        answers = b""
        while b"\n2 rsp " not in answers:
            chunk = s.recv(4096)
            if not chunk:
                raise OSError(f"RELP session closed before the answer: {answers!r}")
            answers += chunk
        s.sendall(b"3 close 0\n")


def free_port() -> int:
    """A loopback port free for both TCP and UDP right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free loopback port for TCP and UDP")


@dataclass
class Line:
    """One message as the daemon stored it; ``bom``: MSG started with the UTF-8 BOM (not in ``msg``)."""

    pri: int
    host: str
    app: str
    procid: str
    msgid: str
    sd: str
    msg: str
    bom: bool = False

    @classmethod
    def parse(cls, text: str) -> Line:
        head, _, msg = text.partition(" msg=")
        # sd= may contain spaces: everything between "sd=" and " msg=".
        head, _, sd = head.partition(" sd=")
        fields = dict(part.split("=", 1) for part in head.split(" "))
        bom = msg.startswith(BOM)
        return cls(
            int(fields["pri"]),
            fields["host"],
            fields["app"],
            fields["procid"],
            fields["msgid"],
            sd,
            msg.removeprefix(BOM),
            bom,
        )


class Syslogd:
    """``rsyslogd -n`` on ``<dir>/log.sock`` and 127.0.0.1:``port`` (TCP and UDP); with ``relp``,
    imrelp on 127.0.0.1:``relp_port`` too. A restart keeps the ports."""

    def __init__(self, directory: Path, relp: bool = False) -> None:
        exe = rsyslogd_path()
        if exe is None:
            raise RuntimeError("rsyslogd is not installed (run scripts/install-system-deps.sh)")
        self.exe = exe
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.socket = self.dir / "log.sock"
        self.output = self.dir / "out.log"
        self.config = self.dir / "rsyslog.conf"
        self.relp_port = free_tcp_port() if relp else None
        config = CONFIG.format(run=self.dir, port=self.port, template=TEMPLATE)
        if self.relp_port is not None:
            config += RELP_CONFIG.format(port=self.relp_port)
        self.config.write_text(config)
        self.proc: subprocess.Popen[bytes] | None = None
        self._probes = 0

    def start(self, timeout: float = 10.0) -> None:
        """Starts the daemon and returns once all three inputs deliver to the output file."""
        assert self.proc is None, "already running"
        errors = open(self.dir / "rsyslogd.stderr", "ab")  # noqa: SIM115 (the child owns it)
        self.proc = subprocess.Popen(
            [self.exe, "-n", "-f", str(self.config), "-i", str(self.dir / "rsyslogd.pid")],
            stdout=errors,
            stderr=errors,
            stdin=subprocess.DEVNULL,
        )
        errors.close()
        deadline = time.monotonic() + timeout
        while not (self.socket.exists() and self._tcp_ready()):
            self._check_alive(deadline)
            time.sleep(0.02)
        # imudp and the file action may lag the TCP listener: probe until each input is heard.
        probes = [self._probe_udp, self._probe_unix, self._probe_tcp]
        if self.relp_port is not None:
            probes.append(self._probe_relp)
        for send in probes:
            self._probes += 1
            marker = f"syslogd-probe-{self._probes}"
            while True:
                with contextlib.suppress(OSError):  # that input may not listen yet
                    send(marker)
                if self._wait_for(marker, 0.2):
                    break
                self._check_alive(deadline)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def lines(self) -> list[Line]:
        """Every message stored so far, probes left out."""
        if not self.output.exists():
            return []
        text = self.output.read_text(encoding="utf-8", errors="replace")
        return [Line.parse(t) for t in text.splitlines() if "syslogd-probe-" not in t]

    def wait_lines(self, count: int, timeout: float = 5.0) -> list[Line]:
        """Waits until at least ``count`` messages are stored."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.lines()
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.02)

    def _tcp_ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def _check_alive(self, deadline: float) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None or time.monotonic() > deadline:
            err = (self.dir / "rsyslogd.stderr").read_text(errors="replace")
            self.stop()
            raise RuntimeError(f"rsyslogd did not come up: {err}")

    def _wait_for(self, marker: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.output.exists() and marker in self.output.read_text(errors="replace"):
                return True
            time.sleep(0.01)
        return False

    def _probe_udp(self, marker: str) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(f"<14>probe: {marker}".encode(), ("127.0.0.1", self.port))

    def _probe_unix(self, marker: str) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(f"<14>probe: {marker}".encode(), str(self.socket))

    def _probe_relp(self, marker: str) -> None:
        assert self.relp_port is not None
        relp_send(self.relp_port, f"<14>probe: {marker}".encode())

    def _probe_tcp(self, marker: str) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
            s.sendall(f"<14>probe: {marker}\n".encode())
