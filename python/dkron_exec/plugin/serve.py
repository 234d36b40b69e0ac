"""``serve()``: the whole plugin side of docs/PROTOCOL.md, for plugins written in Python."""

from __future__ import annotations

import collections
import contextlib
import os
import sys
import threading
import traceback
from typing import Any, NoReturn

import orjson

from .._core import PluginChannel
from .types import ExecuteRequest, ExecutorPlugin, ProcessorArgs, ProcessorPlugin, StatusHelper
from .wire import (
    COOKIE_KEY,
    COOKIE_VALUE,
    FD_ENV,
    MAX_FRAME,
    MAX_FRAME_ENV,
    PROTOCOL_VERSION,
    VERSIONS_ENV,
    FrameError,
)

# How a program file may end that is no part of the plugin's name (``tag.py`` is the plugin ``tag``).
_PROGRAM_SUFFIXES = (".exe", ".py", ".pyw", ".pyz")


def _name_from_argv(kind: str) -> str:
    base = os.path.basename(sys.argv[0] or "")
    prefix = f"dkron-{kind}-"
    for suffix in _PROGRAM_SUFFIXES:
        if base.endswith(suffix) and len(base) > len(suffix):
            base = base[: -len(suffix)]
            break
    return base[len(prefix) :] if base.startswith(prefix) and len(base) > len(prefix) else base


def _what_runs() -> str:
    """A frozen program (PyInstaller...) is a binary; otherwise Python runs a script."""
    return "program" if getattr(sys, "frozen", False) else "script"


class _Server:
    """Worker threads that take turns reading the channel (``PluginChannel.recv`` releases the
    GIL while it waits); the thread that reads a call runs it, so a call's path has no thread hop.
    A worker is added when a call arrives and no other thread is left reading, up to
    ``max_in_flight`` + 1: one more than the calls that may run, so a ``cancel`` is always read."""

    def __init__(
        self,
        name: str,
        channel: PluginChannel,
        processor: ProcessorPlugin | None,
        executor: ExecutorPlugin | None,
        max_in_flight: int,
    ) -> None:
        self.name = name
        self.channel = channel
        self.processor = processor
        self.executor = executor
        self.max_threads = max(1, max_in_flight) + 1
        self.threads = 0
        self.lock = threading.Lock()
        self.cancels: dict[int, threading.Event] = {}
        # Calls answered lately: a cancel for one of them (the usual race after a timeout) is
        # ignored instead of leaving an event behind for a call that is gone.
        self.answered: collections.deque[int] = collections.deque(maxlen=1024)
        self.done = threading.Event()
        self.code = 0

    def run(self) -> int:
        self._add_worker()
        self.done.wait()
        return self.code

    def _add_worker(self) -> None:
        with self.lock:
            if self.threads >= self.max_threads:
                return
            self.threads += 1
        threading.Thread(target=self._work, name="dkron-plugin-call", daemon=True).start()

    def _finish(self, code: int, why: str = "") -> None:
        if why:
            sys.stderr.write(why)
        self.code = code
        self.done.set()

    def _work(self) -> None:
        channel = self.channel
        while True:
            try:
                message = channel.recv()
            except FrameError as exc:
                return self._finish(2, f"dkron plugin {self.name}: bad frame from the host: {exc}\n")
            except OSError:
                return self._finish(0)
            if message is None:
                return self._finish(0)
            if channel.receivers() == 0:
                self._add_worker()
            kind, call_id, first, second = message
            try:
                if kind == "process":
                    self._process(call_id, first, second)
                elif kind == "cancel":
                    if call_id not in self.answered:
                        self._cancel_event(call_id).set()
                elif kind == "execute":
                    self._execute(call_id, first, second)
                else:
                    channel.send_error(call_id, f"ValueError: {first}")
            except OSError:
                return self._finish(0)

    def _cancel_event(self, call_id: int) -> threading.Event:
        with self.lock:
            return self.cancels.setdefault(call_id, threading.Event())

    def _failed(self, call_id: int, exc: Exception) -> None:
        traceback.print_exc(file=sys.stderr)
        self.channel.send_error(call_id, f"{type(exc).__name__}: {exc}")

    def _forget(self, call_id: int) -> None:
        self.answered.append(call_id)
        if self.cancels:
            with self.lock:
                self.cancels.pop(call_id, None)

    def _process(self, call_id: int, execution: Any, config: dict[str, str]) -> None:
        try:
            if self.processor is None:
                raise TypeError("this plugin is not a processor")
            result = self.processor.process(ProcessorArgs(execution=execution, config=config))
            self.channel.send_result(call_id, result)
        except Exception as exc:
            self._failed(call_id, exc)
        finally:
            self._forget(call_id)

    def _execute(self, call_id: int, header_json: bytes, payload: bytes) -> None:
        channel = self.channel

        def send(chunk: bytes, is_error: bool) -> None:
            stream = "stderr" if is_error else "stdout"
            channel.send(orjson.dumps({"type": "output", "id": call_id, "stream": stream}), chunk)

        try:
            if self.executor is None:
                raise TypeError("this plugin is not an executor")
            header = orjson.loads(header_json)
            config = {str(k): str(v) for k, v in (header.get("config") or {}).items()}
            request = ExecuteRequest(job_name=str(header.get("job_name", "")), config=config, payload=payload)
            response = self.executor.execute(request, StatusHelper(send, self._cancel_event(call_id)))
            answer: dict[str, Any] = {"type": "result", "id": call_id, "error": response.error or ""}
            if response.exit_code is not None:
                answer["exit_code"] = response.exit_code
            channel.send(orjson.dumps(answer), response.output)
        except Exception as exc:
            self._failed(call_id, exc)
        finally:
            self._forget(call_id)


def serve(
    *,
    processor: ProcessorPlugin | None = None,
    executor: ExecutorPlugin | None = None,
    name: str | None = None,
    max_in_flight: int = 32,
) -> NoReturn:
    """Runs this program as a dkron_exec plugin until the host says goodbye; never returns.

    Give exactly one of ``processor`` (an object with ``process(args) -> Execution``) or
    ``executor`` (``execute(request, status) -> ExecuteResponse``). Calls run on up to
    ``max_in_flight`` threads at once. Run without the host's cookie, the program says what it
    is and exits 1. Whatever the plugin prints goes to the host's logs, never into the protocol.
    """
    if (processor is None) == (executor is None):
        raise TypeError("serve() needs exactly one of processor= or executor=")
    kind = "processor" if processor is not None else "executor"
    name = name or _name_from_argv(kind)
    if os.environ.get(COOKIE_KEY) != COOKIE_VALUE:
        sys.stderr.write(
            f"This {_what_runs()} is a dkron_exec plugin (the {kind} {name!r}); dkron_exec starts it, "
            "it is not meant to be run by hand.\n"
            f"Install it as an executable file named dkron-{kind}-{name} in a plugin folder "
            "(`dkron-exec plugins` lists them).\n"
        )
        sys.exit(1)
    offered = {v.strip() for v in os.environ.get(VERSIONS_ENV, "").split(",")}
    if str(PROTOCOL_VERSION) not in offered:
        sys.stderr.write(
            f"dkron plugin {name}: the host offers protocol versions {sorted(offered)}, we speak 1\n"
        )
        sys.exit(1)
    # print() in the plugin must reach the host's log line by line, not at exit.
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(line_buffering=True)
    max_frame = int(os.environ.get(MAX_FRAME_ENV) or MAX_FRAME)
    channel = PluginChannel(int(os.environ.get(FD_ENV, "3")), max_frame)
    hello = {
        "type": "hello",
        "protocol": PROTOCOL_VERSION,
        "plugin_type": kind,
        "name": name,
        "max_in_flight": max_in_flight,
        "capabilities": ["cancel"],
    }
    code = 0
    try:
        channel.send(orjson.dumps(hello))
        code = _Server(name, channel, processor, executor, max_in_flight).run()
    except (OSError, KeyboardInterrupt):
        code = 0
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    # Calls still running have been given up by the host: do not wait for them.
    os._exit(code)
