#!/usr/bin/env python3
"""An executor plugin: runs ``executor_config.command`` with /bin/sh and streams its output.

Install it with ``pip install ./examples/plugins`` (the console script ``dkron-executor-stream``, see
tag_processor.py), then::

    {"name": "tail-log", "executor": "stream", "executor_config": {"command": "tail -n 5 /var/log/syslog"}}

A cancel from the host (timeout, Executor.close()) kills the command.
"""

from __future__ import annotations

import subprocess
import threading

from dkron_exec.plugin import ExecuteRequest, ExecuteResponse, StatusHelper, serve


class StreamExecutor:
    def execute(self, request: ExecuteRequest, status: StatusHelper) -> ExecuteResponse:
        command = request.config.get("command", "")
        if not command:
            return ExecuteResponse(error="stream: executor_config.command is empty")
        proc = subprocess.Popen(
            ["/bin/sh", "-c", command],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        proc.stdin.write(request.payload)
        proc.stdin.close()

        def pump(stream: object, is_error: bool) -> None:
            for line in iter(stream.readline, b""):  # type: ignore[attr-defined]
                status.update(line, is_error)

        readers = [
            threading.Thread(target=pump, args=(proc.stdout, False)),
            threading.Thread(target=pump, args=(proc.stderr, True)),
        ]
        for r in readers:
            r.start()
        while proc.poll() is None:
            if status.wait_cancelled(0.05):
                proc.kill()
                proc.wait()
                return ExecuteResponse(error="stream: cancelled, the command was killed")
        for r in readers:
            r.join()
        code = proc.returncode
        return ExecuteResponse(error=f"exit status {code}" if code else "", exit_code=code)


def main() -> None:
    """The console script ``dkron-executor-stream`` (see pyproject.toml)."""
    serve(executor=StreamExecutor())


if __name__ == "__main__":
    main()
