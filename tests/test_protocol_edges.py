"""docs/PROTOCOL.md's answers to the questions a plugin author has, checked against real plugin
processes that speak the protocol by hand (no SDK in between): ids, second answers, stray frames,
streams, exit codes and log lines."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dkron_exec import Execution, Executor
from jobs import an_execution, shell_job
from plugin_support import install

# A plugin that answers each request with the frames its config scripts: config "frames" is a JSON
# list of [header, body]; an "id" of "$id" in a header becomes the request's id.
SCRIPTED = """
import json, os, socket, sys
from dkron_exec.plugin import wire
KIND = sys.argv[0].rsplit("/", 1)[1].split("-")[1]
sock = socket.socket(fileno=int(os.environ["DKRON_EXEC_PLUGIN_FD"]))
head, _ = wire.encode({"type": "hello", "protocol": 1, "plugin_type": KIND, "max_in_flight": 4})
sock.sendall(head)
reader = sock.makefile("rb")
while True:
    frame = wire.read_frame(reader)
    if frame is None or frame[0]["type"] == "shutdown":
        break
    header, body = frame
    if header["type"] not in ("process", "execute"):
        continue
    for h, b in json.loads(header["config"]["frames"]):
        if h.get("id") == "$id":
            h["id"] = header["id"]
        head, rest = wire.encode(h, b.encode())
        sock.sendall(head + rest)
"""


@pytest.fixture
def plugin_dir(tmp_path: Path) -> Path:
    d = tmp_path / "plugins"
    install(d, "processor", "scripted", SCRIPTED)
    install(d, "executor", "scripted", SCRIPTED)
    return d


@pytest.fixture
def ex(tmp_path: Path, plugin_dir: Path) -> Iterator[Executor]:
    with Executor(tmp_path / "store.db", node_name="n1", plugin_dirs=[plugin_dir], plugin_timeout=2.0) as e:
        yield e


Scripted = tuple[dict[str, object], str]


def frames(*items: Scripted) -> str:
    return json.dumps([list(i) for i in items])


def process(ex: Executor, *items: Scripted) -> Execution:
    return ex.run(shell_job("j", "echo hello", processors={"scripted": {"frames": frames(*items)}}))


def execute(
    ex: Executor, *items: Scripted, on_output: Callable[[bytes, bool], None] | None = None
) -> Execution:
    job = {"name": "e", "executor": "scripted", "executor_config": {"frames": frames(*items)}}
    return ex.run(job, on_output=on_output)


def test_a_result_without_execution_keeps_every_field_and_output_size_stays(ex: Executor) -> None:
    done = process(ex, ({"type": "result", "id": "$id"}, "new output, longer"))
    assert done.output == b"new output, longer" and done.processor_errors == []
    assert done.success and done.output_size == len(b"hello\n")  # the job's, unless the answer sets it
    sized = process(ex, ({"type": "result", "id": "$id", "execution": {"output_size": 18}}, "x"))
    assert sized.output_size == 18


def test_a_group_beyond_2_53_rounded_by_a_javascript_echo_is_kept_and_recorded(ex: Executor) -> None:
    group = 1717000000123456789

    def answer(group_json: object) -> dict[str, object]:
        script = frames(({"type": "result", "id": "$id", "execution": {"group": group_json}}, "x"))
        return {"scripted": {"frames": script}}

    # JSON.stringify writes the Number it holds as 1717000000123456800.
    done = ex.process(
        shell_job("j", "true", processors=answer(1717000000123456800)), an_execution("j", group=group)
    )
    assert done.group == group and done.output == b"x"
    assert done.processor_errors == [
        "scripted: the answer changed group, which identify the execution and are the host's; kept the host's"
    ]
    # Not an integer at all: the step fails.
    done = ex.process(shell_job("j", "true", processors=answer(1.7e18)), an_execution("j", group=group))
    assert done.group == group and done.output == b"hello\n"
    [err] = done.processor_errors
    assert "answered with an unusable execution" in err and 'field "group"' in err, err


def test_answers_for_unknown_ids_a_second_answer_and_output_frames_are_ignored(ex: Executor) -> None:
    done = process(
        ex,
        ({"type": "result", "id": 999999, "execution": {}}, "for nobody"),
        ({"type": "output", "id": "$id", "stream": "stdout"}, "streamed to a processor call"),
        ({"type": "result", "id": "$id", "execution": {}}, "first"),
        ({"type": "result", "id": "$id", "execution": {}}, "second"),
        ({"type": "notice"}, ""),
    )
    assert done.output == b"first" and done.processor_errors == []
    # The plugin is still the same process: none of it was fatal.
    pid = ex.plugins.pid("processor", "scripted")
    again = process(ex, ({"type": "result", "id": "$id"}, "again"))
    assert again.output == b"again" and ex.plugins.pid("processor", "scripted") == pid


def test_a_string_id_is_an_answer_without_an_id(ex: Executor) -> None:
    done = process(ex, ({"type": "result", "id": "1", "execution": {}}, "x"))
    [err] = done.processor_errors
    assert "answer without an id" in err and done.output == b"hello\n"


def test_the_host_refuses_to_send_a_request_over_the_frame_limit(ex: Executor) -> None:
    job = shell_job(
        "j", "true", processors={"scripted": {"frames": frames(({"type": "result", "id": "$id"}, "ok"))}}
    )
    assert ex.process(job, an_execution("j")).output == b"ok"
    pid = ex.plugins.pid("processor", "scripted")
    big = ex.process(job, an_execution("j", output=b"x" * (64 << 20)))
    [err] = big.processor_errors
    assert "request not sent: frame of " in err and "exceeds the maximum of 67108864" in err, err
    assert err.startswith("scripted: plugin processor 'scripted' (") and len(big.output) == 64 << 20
    assert ex.plugins.pid("processor", "scripted") == pid  # the plugin stays up
    assert ex.process(job, an_execution("j")).output == b"ok"


def test_an_executor_s_streams_and_final_body_reach_on_output(ex: Executor) -> None:
    chunks: list[tuple[bytes, bool]] = []
    done = execute(
        ex,
        ({"type": "output", "id": "$id"}, "no stream\n"),
        ({"type": "output", "id": "$id", "stream": "stdxx"}, "unknown stream\n"),
        ({"type": "output", "id": "$id", "stream": "stderr"}, "err\n"),
        ({"type": "result", "id": "$id", "error": ""}, "final body\n"),
        on_output=lambda chunk, is_error: chunks.append((chunk, is_error)),
    )
    assert done.success and done.error is None
    assert done.output == b"no stream\nunknown stream\nerr\nfinal body\n"
    assert chunks == [
        (b"no stream\n", False),
        (b"unknown stream\n", False),
        (b"err\n", True),
        (b"final body\n", False),
    ]


@pytest.mark.parametrize(
    ("answer", "success", "error", "exit_code"),
    [
        ({"error": "", "exit_code": 3}, False, "exit status 3", 3),
        ({"exit_code": 0}, True, None, 0),
        ({"error": "boom"}, False, "boom", None),
        ({"error": "boom", "exit_code": 0}, False, "boom", 0),
        ({}, True, None, None),
    ],
)
def test_an_executor_fails_on_an_error_or_a_non_zero_exit_code(
    ex: Executor, answer: dict[str, object], success: bool, error: str | None, exit_code: int | None
) -> None:
    done = execute(ex, ({"type": "result", "id": "$id", **answer}, "out\n"))
    assert (done.success, done.error, done.exit_code) == (success, error, exit_code)
    assert done.output == (b"out\n" if error is None else b"out\n" + error.encode() + b"\n")


def test_an_executor_payload_is_the_config_string_as_written(ex: Executor, plugin_dir: Path) -> None:
    echo = """
    import os, socket
    from dkron_exec.plugin import wire
    sock = socket.socket(fileno=int(os.environ["DKRON_EXEC_PLUGIN_FD"]))
    sock.sendall(wire.encode({"type": "hello", "protocol": 1, "plugin_type": "executor"})[0])
    reader = sock.makefile("rb")
    while (frame := wire.read_frame(reader)) is not None and frame[0]["type"] != "shutdown":
        header, body = frame
        if header["type"] != "execute":
            continue
        config = repr(sorted(header["config"].items())).encode()
        head, rest = wire.encode({"type": "result", "id": header["id"]}, body + b"|" + config)
        sock.sendall(head + rest)
    """
    install(plugin_dir, "executor", "echo", echo)
    with Executor(":memory:", plugin_dirs=[plugin_dir]) as e:
        config = {"payload": "aGk=", "flag": True, "n": 5, "list": [1, "a"], "obj": {"k": 1}}
        done = e.run({"name": "p", "executor": "echo", "executor_config": config})
    body, _, seen = done.output.partition(b"|")
    assert body == b"aGk="  # not base64-decoded
    assert (
        seen
        == repr(
            sorted({"payload": "aGk=", "flag": "true", "n": "5", "list": '[1,"a"]', "obj": '{"k":1}'}.items())
        ).encode()
    )


def test_log_lines_keep_their_level_prefix_are_split_and_repaired(
    ex: Executor, plugin_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    talker = (
        "import sys\n"
        'sys.stdout.buffer.write(b"[WARN] careful\\n" + b"x" * (70 * 1024) + b"\\nbad \\xff byte\\n")\n'
        "sys.stdout.flush()\n" + SCRIPTED
    )
    install(plugin_dir, "processor", "talker", talker)
    caplog.set_level(logging.DEBUG, logger="dkron_exec.plugin")
    with Executor(":memory:", plugin_dirs=[plugin_dir]) as e:
        answer = frames(({"type": "result", "id": "$id"}, ""))
        e.run(shell_job("j", "true", processors={"talker": {"frames": answer}}))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not any("byte" in r.getMessage() for r in caplog.records):
            time.sleep(0.05)
    records = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "dkron_exec.plugin.talker"]
    assert (logging.WARNING, "[WARN] careful") in records
    pieces = [m for _, m in records if m.startswith("x")]
    assert [len(p) for p in pieces] == [64 * 1024, 6 * 1024]
    assert (logging.INFO, "bad \ufffd byte") in records
