"""The Python side of the plugin host: plugin processors in the chain, executor-plugin runs,
and plugin output lines forwarded to ``logging``.

The Rust host (``_core.PluginHost``) owns the processes; this module adds the policy: which
discovered plugin serves which name, the default timeouts, and ``logging``. Plugin output lines
are queued by Rust and drained here by one daemon thread, so Rust never waits for the GIL.
"""

from __future__ import annotations

import atexit
import logging
import threading
import weakref
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import orjson

from . import _core
from .discovery import DiscoveredPlugins, PluginKind
from .execution import Execution
from .processors.base import ProcessContext

log = logging.getLogger("dkron_exec.plugin")

OutputCallback = Callable[[bytes, bool], None]

_LEVELS = {
    "[TRACE]": logging.DEBUG,
    "[DEBUG]": logging.DEBUG,
    "[INFO]": logging.INFO,
    "[WARN]": logging.WARNING,
    "[WARNING]": logging.WARNING,
    "[ERROR]": logging.ERROR,
}


def _level(stream: str, line: str) -> int:
    if stream == "host":
        return logging.WARNING
    head = line.lstrip().split(" ", 1)[0].upper()
    return _LEVELS.get(head, logging.INFO)


class PluginManager:
    """The plugins one Executor uses, each started on first use and kept running."""

    def __init__(
        self,
        plugins: DiscoveredPlugins,
        *,
        call_timeout: float | None = 30.0,
        start_timeout: float = 10.0,
        cancel_grace: float = 1.0,
        stop_grace: float = 2.0,
    ) -> None:
        self.plugins = plugins
        self.call_timeout = call_timeout
        self._host = _core.PluginHost(
            start_timeout=start_timeout, cancel_grace=cancel_grace, stop_grace=stop_grace
        )
        for info in plugins.all():
            self._host.register(info.kind, info.name, str(info.path))
        self._closed = False
        self._logs = threading.Thread(target=self._drain_logs, name="dkron-exec-plugin-logs", daemon=True)
        self._logs.start()
        _live.add(self)

    def has(self, kind: PluginKind, name: str) -> bool:
        return name in self.plugins.of_kind(kind)

    def processor(self, name: str) -> PluginProcessor:
        return PluginProcessor(self, name)

    def pid(self, kind: PluginKind, name: str) -> int | None:
        return self._host.pid(kind, name)

    def process(self, name: str, execution: Execution, config: Mapping[str, str]) -> Execution:
        return self._host.process(name, execution, dict(config), self.call_timeout)

    def execute(
        self,
        name: str,
        job_name: str,
        config: Mapping[str, str],
        *,
        payload: bytes = b"",
        timeout: float | None = None,
        output_limit: int = 256_000,
        on_output: OutputCallback | None = None,
    ) -> PluginRunHandle:
        run = self._host.execute(
            name,
            job_name,
            orjson.dumps(dict(config)),
            payload,
            timeout=timeout,
            output_limit=output_limit,
            stream=on_output is not None,
        )
        return PluginRunHandle(run, on_output)

    def close(self, grace: float = 2.0) -> None:
        if self._closed:
            return
        self._closed = True
        self._host.close(grace)
        self._logs.join(timeout=2.0)

    def _drain_logs(self) -> None:
        while True:
            lines = self._host.drain_logs(0.5)
            if lines is None:
                return
            for plugin, stream, line in lines:
                logger = logging.getLogger(f"dkron_exec.plugin.{plugin}" if plugin else "dkron_exec.plugin")
                logger.log(_level(stream, line), "%s", line, extra={"plugin": plugin, "stream": stream})


class PluginProcessor:
    """A ``dkron-processor-NAME`` plugin as a chain step (the Processor protocol)."""

    name: ClassVar[str] = "plugin"

    def __init__(self, manager: PluginManager, plugin_name: str) -> None:
        self.manager = manager
        self.plugin_name = plugin_name

    @classmethod
    def validate(cls, config: Mapping[str, str]) -> None:
        """Plugins check their own config when called."""

    def process(self, execution: Execution, config: Mapping[str, str], ctx: ProcessContext) -> Execution:
        return self.manager.process(self.plugin_name, execution, config)

    def close(self) -> None:
        """The manager stops the process when the Executor closes."""


class PluginRunHandle:
    """An executor-plugin run with the engine's RunHandle interface. With ``on_output``, a
    thread hands each streamed chunk to the callback as it arrives (``wait`` returns after the
    last one was delivered)."""

    def __init__(self, run: _core.PluginRun, on_output: OutputCallback | None) -> None:
        self._run = run
        self._pump: threading.Thread | None = None
        if on_output is not None:
            self._pump = threading.Thread(
                target=self._deliver, args=(on_output,), daemon=True, name="dkron-exec-plugin-output"
            )
            self._pump.start()

    def _deliver(self, on_output: OutputCallback) -> None:
        while True:
            chunks = self._run.next_chunks(0.5)
            if chunks is None:
                return
            for is_error, chunk in chunks:
                try:
                    on_output(chunk, is_error)
                except Exception:
                    log.exception("on_output callback failed")

    def wait(self, timeout: float | None = None) -> Any:
        outcome = self._run.wait(timeout)
        if outcome is not None and self._pump is not None:
            self._pump.join()
        return outcome

    def result(self) -> Any:
        return self._run.result()

    def done(self) -> bool:
        return self._run.done()

    def cancel(self) -> None:
        self._run.cancel()

    @property
    def pid(self) -> int | None:
        return self._run.pid

    def fileno(self) -> int:
        return self._run.fileno()


_live: weakref.WeakSet[PluginManager] = weakref.WeakSet()


@atexit.register
def _stop_all_plugins() -> None:
    # At interpreter exit: stop every plugin politely; the death signal covers a hard exit.
    for manager in list(_live):
        manager.close(grace=1.0)
