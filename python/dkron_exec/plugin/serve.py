"""``serve()``: the whole plugin side of docs/PROTOCOL.md, for plugins written in Python."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import Any, BinaryIO, NoReturn, cast

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
    encode,
    execution_fields,
    execution_from_fields,
    read_frame,
)


def _name_from_argv(kind: str) -> str:
    base = os.path.basename(sys.argv[0] or "")
    prefix = f"dkron-{kind}-"
    if base.endswith(".exe"):
        base = base[:-4]
    return base[len(prefix) :] if base.startswith(prefix) and len(base) > len(prefix) else base


class _Connection:
    def __init__(self, sock: socket.socket, max_frame: int) -> None:
        self.sock = sock
        self.reader = cast(BinaryIO, sock.makefile("rb", buffering=1 << 16))
        self.max_frame = max_frame
        self._lock = threading.Lock()

    def send(self, header: dict[str, Any], body: bytes = b"") -> None:
        head, body = encode(header, body, self.max_frame)
        with self._lock:
            self.sock.sendall(head)
            if body:
                self.sock.sendall(body)

    def answer_error(self, call_id: int, message: str) -> None:
        self.send({"type": "error", "id": call_id, "message": message})


class _Server:
    def __init__(
        self,
        conn: _Connection,
        processor: ProcessorPlugin | None,
        executor: ExecutorPlugin | None,
        workers: int,
    ) -> None:
        self.conn = conn
        self.processor = processor
        self.executor = executor
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dkron-plugin-call")
        self.cancels: dict[int, threading.Event] = {}
        self.cancels_lock = threading.Lock()

    def loop(self) -> None:
        while True:
            frame = read_frame(self.conn.reader, self.conn.max_frame)
            if frame is None:
                return
            header, body = frame
            kind = header["type"]
            if kind == "shutdown":
                return
            if kind == "cancel":
                self._cancel_event(header.get("id")).set()
            elif kind in ("process", "execute"):
                self.pool.submit(self._call, header, body)
            elif isinstance(header.get("id"), int):
                self.conn.answer_error(header["id"], f"unknown request type {kind!r}")
            # "welcome" and unknown notifications need nothing.

    def _cancel_event(self, call_id: Any) -> threading.Event:
        with self.cancels_lock:
            return self.cancels.setdefault(call_id, threading.Event())

    def _call(self, header: dict[str, Any], body: bytes) -> None:
        call_id = header.get("id")
        if not isinstance(call_id, int):
            return
        try:
            if header["type"] == "process":
                self._process(call_id, header, body)
            else:
                self._execute(call_id, header, body)
        except Exception as exc:
            traceback.print_exc(file=sys.stderr)
            with contextlib.suppress(OSError):
                self.conn.answer_error(call_id, f"{type(exc).__name__}: {exc}")
        finally:
            with self.cancels_lock:
                self.cancels.pop(call_id, None)

    def _process(self, call_id: int, header: dict[str, Any], body: bytes) -> None:
        if self.processor is None:
            raise TypeError("this plugin is not a processor")
        execution = execution_from_fields(header.get("execution") or {}, body)
        config = {str(k): str(v) for k, v in (header.get("config") or {}).items()}
        result = self.processor.process(ProcessorArgs(execution=execution, config=config))
        self.conn.send(
            {"type": "result", "id": call_id, "execution": execution_fields(result)}, result.output
        )

    def _execute(self, call_id: int, header: dict[str, Any], body: bytes) -> None:
        if self.executor is None:
            raise TypeError("this plugin is not an executor")

        def send(chunk: bytes, is_error: bool) -> None:
            stream = "stderr" if is_error else "stdout"
            self.conn.send({"type": "output", "id": call_id, "stream": stream}, chunk)

        status = StatusHelper(send, self._cancel_event(call_id))
        config = {str(k): str(v) for k, v in (header.get("config") or {}).items()}
        request = ExecuteRequest(job_name=str(header.get("job_name", "")), config=config, payload=body)
        response = self.executor.execute(request, status)
        answer: dict[str, Any] = {"type": "result", "id": call_id, "error": response.error or ""}
        if response.exit_code is not None:
            answer["exit_code"] = response.exit_code
        self.conn.send(answer, response.output)


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
            f"This binary is a dkron_exec plugin (the {kind} {name!r}). It is not meant to be run directly:\n"
            f"install it as dkron-{kind}-{name} where dkron_exec looks for plugins.\n"
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
    conn = _Connection(socket.socket(fileno=int(os.environ.get(FD_ENV, "3"))), max_frame)
    conn.send(
        {
            "type": "hello",
            "protocol": PROTOCOL_VERSION,
            "plugin_type": kind,
            "name": name,
            "max_in_flight": max_in_flight,
            "capabilities": ["cancel"],
        }
    )
    server = _Server(conn, processor, executor, max_in_flight)
    code = 0
    try:
        server.loop()
    except FrameError as exc:
        sys.stderr.write(f"dkron plugin {name}: bad frame from the host: {exc}\n")
        code = 2
    except (OSError, KeyboardInterrupt):
        code = 0
    sys.stdout.flush()
    sys.stderr.flush()
    # Calls still running have been given up by the host: do not wait for them.
    os._exit(code)
