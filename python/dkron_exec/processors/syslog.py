"""The built-in ``syslog`` processor: each execution goes to a syslog daemon (the sink is Rust).

Config keys (all optional; values are strings, as in Dkron, or JSON booleans/numbers):

``transport``         ``local`` (default: Go's search of /dev/log, /var/run/syslog, /var/run/log, datagram
                      then stream), ``unixgram``, ``unix``, ``udp`` or ``tcp``
``address``           a socket path (local, unixgram, unix) or ``host[:port]`` (udp, tcp; port 514)
``format``            ``rfc3164`` (default for local sockets: what Go writes) or ``rfc5424`` (default for
                      udp/tcp; structured data ``[dkron@32473 job= execution= success= exit_code=]``)
``framing``           tcp/unix streams: ``octet`` (RFC 6587, default for tcp) or ``lf`` (default for unix;
                      one message per output line, since an LF ends a message)
``facility``          default ``cron``
``severity``          on success, default ``info``; ``failure_severity`` on failure, default ``err``
``tag``               the tag / APP-NAME, default ``dkron``
``hostname``          written in RFC 5424 and remote RFC 3164; default the machine's host name
``per_line``          one message per output line instead of one per execution (default false)
``max_message``       bytes per message, header included (default 8192, rsyslog's limit)
``oversize``          ``split`` (default: ``(part i/n)`` messages) or ``truncate`` (with a marker)
``timeout``           connect/write timeout, a Go duration (``500ms``, at most ``5m``), default ``2s``
``forward``           keep the output for the next processor; when false (default) it becomes
                      ``Output in syslog``, as in Dkron

One connection per distinct destination config is opened on first use and kept for every later
execution; a failure to send raises (the chain records it and the execution is still stored).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import ClassVar

from .. import _core
from ..execution import Execution, ns_from_datetime
from .base import ProcessContext, forwards

REPLACEMENT = b"Output in syslog"
# Keys that belong to the chain, not to the destination.
_NOT_SINK_KEYS = frozenset({"forward", "reporting_node"})

_SinkKey = tuple[tuple[str, str], ...]


class SyslogProcessor:
    name: ClassVar[str] = "syslog"

    def __init__(self) -> None:
        self._sinks: dict[_SinkKey, _core.SyslogSink] = {}
        self._lock = threading.Lock()

    @classmethod
    def validate(cls, config: Mapping[str, str]) -> None:
        """Raises JobError (``processors.syslog.<key>``) for an unknown key or a bad value."""
        _core.syslog_check_config(dict(config))

    def process(self, execution: Execution, config: Mapping[str, str], ctx: ProcessContext) -> Execution:
        stamp = execution.finished_at or execution.started_at
        self._sink(config).send(
            job_name=execution.job_name,
            key=execution.key,
            success=execution.success,
            exit_code=execution.exit_code,
            output=execution.output,
            timestamp_ns=ns_from_datetime(stamp),
        )
        if forwards(config):
            return execution
        return execution.replace(output=REPLACEMENT)

    def close(self) -> None:
        with self._lock:
            sinks = list(self._sinks.values())
            self._sinks.clear()
        for sink in sinks:
            sink.close()

    def _sink(self, config: Mapping[str, str]) -> _core.SyslogSink:
        key = tuple(sorted((k, v) for k, v in config.items() if k not in _NOT_SINK_KEYS))
        with self._lock:
            sink = self._sinks.get(key)
            if sink is None:
                sink = self._sinks[key] = _core.SyslogSink(dict(key))
            return sink
