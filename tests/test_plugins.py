"""Plugins end to end, with real plugin processes: chains, executor plugins, concurrency, and
every way a plugin can misbehave."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import pid_alive, wait_gone
from dkron_exec import Executor, JobError, PluginError
from dkron_exec._core import PluginHost
from dkron_exec.plugin import COOKIE_VALUE
from jobs import an_execution, shell_job
from plugin_support import EXAMPLES, PROCESSOR, install, install_example


@pytest.fixture
def plugin_dir(tmp_path: Path) -> Path:
    d = tmp_path / "plugins"
    d.mkdir()
    return d


@pytest.fixture
def ex(tmp_path: Path, plugin_dir: Path) -> Iterator[Executor]:
    with Executor(tmp_path / "store.db", node_name="n1", plugin_dirs=[plugin_dir], plugin_timeout=10.0) as e:
        yield e


def test_a_chain_of_two_plugin_processors_runs_in_order_then_the_store(
    ex: Executor, plugin_dir: Path
) -> None:
    install(plugin_dir, "processor", "first", PROCESSOR)
    install(plugin_dir, "processor", "second-one", PROCESSOR)
    for order in (["first", "second-one"], ["second-one", "first"]):
        steps = {name: {"append": f"<{name}>"} for name in order}
        execution = ex.run(shell_job("j", "echo hello", processors=steps))
        assert execution.output == b"hello\n" + b"".join(f"<{n}>".encode() for n in order)
        assert execution.processor_errors == []
        stored = ex.execution("j", execution.key)
        assert stored is not None and stored.output == execution.output
        assert stored.success and stored.exit_code == 0


def test_mixed_chain_with_the_log_builtin(
    ex: Executor, plugin_dir: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    install(plugin_dir, "processor", "mark", PROCESSOR)
    steps = {"mark": {"append": "<mark>"}, "log": {"forward": "true"}, "mark2": {}}
    install(plugin_dir, "processor", "mark2", PROCESSOR)
    steps["mark2"] = {"append": "<mark2>"}
    execution = ex.run(shell_job("j", "echo hello", processors=steps))
    assert execution.output == b"hello\n<mark><mark2>"
    assert execution.processor_errors == []
    # The log built-in (which writes to fd 1) saw the first plugin's result, not the second's.
    printed = capfd.readouterr().out
    assert "hello\n<mark>\n----- END OUTPUT -----" in printed and "<mark2>" not in printed


def test_an_executor_plugin_streams_its_output(ex: Executor, plugin_dir: Path) -> None:
    install_example(plugin_dir, "executor", "stream", "stream_executor.py")
    chunks: list[tuple[bytes, bool]] = []
    times: list[float] = []

    def on_output(chunk: bytes, is_error: bool) -> None:
        chunks.append((chunk, is_error))
        times.append(time.monotonic())

    command = "echo one; sleep 0.3; echo two >&2; sleep 0.3; echo three"
    execution = ex.run(
        {"name": "s", "executor": "stream", "executor_config": {"command": command}}, on_output=on_output
    )
    assert execution.success, execution.output
    assert execution.output.count(b"\n") == 3 and b"two" in execution.output
    assert (b"two\n", True) in chunks and (b"one\n", False) in chunks
    assert times[-1] - times[0] > 0.4  # delivered as they came, not at the end
    stored = ex.executions("s")[0]
    assert stored.output == execution.output

    failed = ex.run({"name": "s", "executor": "stream", "executor_config": {"command": "echo x; exit 3"}})
    assert not failed.success and failed.error == "exit status 3" and failed.exit_code == 3
    assert failed.output == b"x\nexit status 3\n"


def test_executor_plugin_timeout_and_output_limit(tmp_path: Path, plugin_dir: Path) -> None:
    install_example(plugin_dir, "executor", "stream", "stream_executor.py")
    with Executor(":memory:", plugin_dirs=[plugin_dir], output_limit=200) as ex:
        started = time.monotonic()
        slow = ex.run(
            {
                "name": "t",
                "executor": "stream",
                "executor_config": {"command": "echo early; sleep 30", "timeout": "500ms"},
            }
        )
        assert time.monotonic() - started < 5
        assert not slow.success and "timeout 500ms" in (slow.error or "")
        assert slow.output.startswith(b"early\n")
        big = ex.run({"name": "t", "executor": "stream", "executor_config": {"command": "seq 1 1000"}})
        assert big.success and big.output_truncated and len(big.output) == 200
        assert (
            big.output.endswith(b"1000\n")
            and big.output_size == len(b"\n".join(b"%d" % i for i in range(1, 1001))) + 1
        )


def test_an_executor_plugin_s_start_up_does_not_count_against_the_job_s_timeout(
    tmp_path: Path, plugin_dir: Path
) -> None:
    # The timeout is the job's (Dkron: "execution time exceeding defined timeout"): a plugin that
    # takes longer than it to start still runs the job, which then times out on its own time.
    source = (EXAMPLES / "plugins" / "stream_executor.py").read_text().split("\n", 1)[1]
    future = "from __future__ import annotations\n"
    slow_source = source.replace(future, future + "import time\ntime.sleep(1.5)\n")
    install(plugin_dir, "executor", "slowstart", slow_source)
    with Executor(":memory:", plugin_dirs=[plugin_dir]) as ex:
        config = {"command": "echo early; sleep 30", "timeout": "500ms"}
        slow = ex.run({"name": "t", "executor": "slowstart", "executor_config": config})
        assert not slow.success and "timeout 500ms" in (slow.error or ""), slow.error
        assert slow.output.startswith(b"early\n"), slow.output


async def test_executor_plugin_from_asyncio(ex: Executor, plugin_dir: Path) -> None:
    install_example(plugin_dir, "executor", "stream", "stream_executor.py")
    execution = await ex.run_async(
        {"name": "a", "executor": "stream", "executor_config": {"command": "echo hi"}}
    )
    assert execution.success and execution.output == b"hi\n"


def test_eight_concurrent_executions_share_one_plugin_process(ex: Executor, plugin_dir: Path) -> None:
    install(plugin_dir, "processor", "slow", PROCESSOR)
    ex.run(shell_job("j", "echo hello", processors={"slow": {}}))  # started once
    pid = ex.plugins.pid("processor", "slow")
    assert pid is not None
    results = []
    started = time.monotonic()

    def one(i: int) -> None:
        results.append(
            ex.run(
                {
                    "name": f"c{i}",
                    "command": f"echo {i}",
                    "processors": {"slow": {"sleep": "0.5", "pid": "1"}},
                }
            )
        )

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    assert len(results) == 8
    assert {r.output.split(b"pid=")[1] for r in results} == {b"%d\n" % pid}
    assert elapsed < 8 * 0.5  # the calls overlapped
    assert all(r.processor_errors == [] for r in results)


def test_a_crash_mid_call_costs_one_step_and_the_next_call_works(ex: Executor, plugin_dir: Path) -> None:
    install(plugin_dir, "processor", "fragile", PROCESSOR)
    install(plugin_dir, "processor", "after", PROCESSOR)
    ex.run(shell_job("j", "echo hello", processors={"fragile": {}}))
    first_pid = ex.plugins.pid("processor", "fragile")
    execution = ex.run(
        shell_job("j", "echo hello", processors={"fragile": {"crash": "1"}, "after": {"append": "<after>"}})
    )
    assert execution.success  # the job itself succeeded
    assert execution.output == b"hello\n<after>"  # the chain went on
    [err] = execution.processor_errors
    assert err.startswith("fragile: plugin processor 'fragile'") and "exit status 7" in err
    stored = ex.execution("j", execution.key)
    assert stored is not None and stored.processor_errors == [err]
    again = ex.run(shell_job("j", "echo hello", processors={"fragile": {"append": "<ok>"}}))
    assert again.output == b"hello\n<ok>" and again.processor_errors == []
    assert ex.plugins.pid("processor", "fragile") not in (None, first_pid)
    assert not pid_alive(first_pid or 0)


def test_a_hang_past_the_timeout_is_recorded_and_the_plugin_killed(tmp_path: Path, plugin_dir: Path) -> None:
    install(plugin_dir, "processor", "hang", PROCESSOR)
    with Executor(":memory:", plugin_dirs=[plugin_dir], plugin_timeout=0.5) as ex:
        # Started and answering first (a start slower than 0.5 s on a busy machine costs a call).
        for _ in range(10):
            if ex.run(shell_job("j", "echo hello", processors={"hang": {}})).processor_errors == []:
                break
        pid = ex.plugins.pid("processor", "hang")
        assert pid
        started = time.monotonic()
        execution = ex.run(shell_job("j", "echo hello", processors={"hang": {"sleep": "3600"}}))
        assert time.monotonic() - started < 3
        [err] = execution.processor_errors
        assert "hang" in err and "timed out after 500ms" in err
        assert execution.output == b"hello\n"
        assert wait_gone([pid], 3.0) == []  # no answer to the cancel: killed as hung
        assert (
            ex.run(shell_job("j", "echo hello", processors={"hang": {"append": "!"}})).output == b"hello\n!"
        )


GARBAGE = """
import os, socket, struct
from dkron_exec.plugin import serve, wire
fd = int(os.environ["DKRON_EXEC_PLUGIN_FD"])
sock = socket.socket(fileno=fd)
head, _ = wire.encode({"type": "hello", "protocol": 1, "plugin_type": "processor", "max_in_flight": 4})
sock.sendall(head)
reader = sock.makefile("rb")
while True:
    frame = wire.read_frame(reader)
    if frame is None:
        break
    if frame[0]["type"] == "process":
        sock.sendall(PAYLOAD)
"""


@pytest.mark.parametrize(
    ("payload", "expect"),
    [
        (b"\\x00\\x00\\x00\\x10garbage garbage!", "malformed frame"),
        (b"\\x10\\x00\\x00\\x00", "exceeds the maximum of 67108864"),
    ],
    ids=["garbage", "oversize"],
)
def test_garbage_and_oversize_frames_kill_the_plugin(
    ex: Executor, plugin_dir: Path, payload: bytes, expect: str
) -> None:
    install(plugin_dir, "processor", "bad", f"PAYLOAD = b'{payload.decode()}'\n" + GARBAGE)
    execution = ex.run(shell_job("j", "echo hello", processors={"bad": {}}))
    [err] = execution.processor_errors
    assert expect in err and "dkron-processor-bad" in err and "killed" in err
    assert ex.plugins.pid("processor", "bad") is None
    assert ex.execution("j", execution.key) is not None


def test_a_plugin_that_never_says_hello_costs_only_the_call_that_waited(
    tmp_path: Path, plugin_dir: Path
) -> None:
    # Issue 9: the process used to live on until the start timeout, failing every call meanwhile.
    install(plugin_dir, "processor", "mute", "import time, sys\nprint('pid', flush=True)\ntime.sleep(3600)\n")
    with Executor(
        tmp_path / "store.db", plugin_dirs=[plugin_dir], plugin_timeout=1.0, plugin_start_timeout=120.0
    ) as ex:
        job = shell_job("j", "echo hello", processors={"mute": {}})
        started = time.monotonic()
        first = ex.run(job)
        [err] = first.processor_errors
        assert "handshake" in err and "mute" in err, err
        assert time.monotonic() - started < 30
        # Killed at the call's deadline, not at the 120 s start timeout.
        deadline = time.monotonic() + 10
        while ex.plugins.pid("processor", "mute") is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ex.plugins.pid("processor", "mute") is None
        assert not [p for p in _processes_running("dkron-processor-mute")], "the mute plugin is still running"
        second = ex.run(job)
        assert second.processor_errors and "handshake" in second.processor_errors[0]


def test_a_plugin_slower_to_start_than_the_call_timeout_still_gets_going(
    tmp_path: Path, plugin_dir: Path
) -> None:
    # Killed at the first call's deadline, the next process gets its whole start timeout: a slow
    # start costs calls, never the plugin for good.
    install(plugin_dir, "processor", "slowstart", "import time\ntime.sleep(1.5)\n" + PROCESSOR)
    with Executor(":memory:", plugin_dirs=[plugin_dir], plugin_timeout=1.0, plugin_start_timeout=60.0) as ex:
        job = shell_job("j", "echo hello", processors={"slowstart": {"append": "!"}})
        outputs = [ex.run(job).output for _ in range(8)]
        assert outputs[0] == b"hello\n" and b"hello\n!" in outputs, outputs


def _processes_running(marker: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
                state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if marker.encode() in cmdline and state not in ("Z", "X"):
                pids.append(int(entry))
    return pids


def test_an_answer_cannot_move_the_execution_nor_round_its_start_time(
    ex: Executor, plugin_dir: Path
) -> None:
    # A Python plugin sends the whole execution back, its start time cut to microseconds (datetime):
    # the key, the store and later plugins must still see the host's nanoseconds.
    mover = """
from dkron_exec.plugin import serve

class Mover:
    def process(self, args):
        return args.execution.replace(job_name="elsewhere", node_name="other", group=1, output=b"moved")

serve(processor=Mover())
"""
    install(plugin_dir, "processor", "mover", mover)
    install(plugin_dir, "processor", "p", PROCESSOR)  # both before the first run: discovery is once
    kept = ex.run(shell_job("j", "echo hello", processors={"p": {"append": "!"}}))
    assert kept.output == b"hello\n!" and kept.processor_errors == []
    assert ex.execution("j", kept.key) == kept
    moved = ex.run(shell_job("j", "echo hello", processors={"mover": {}}))
    assert (moved.job_name, moved.node_name, moved.output) == ("j", "n1", b"moved")
    [note] = moved.processor_errors
    assert note.startswith("mover: the answer changed job_name, node_name, group"), note
    assert ex.execution("j", moved.key) == moved and ex.executions("elsewhere") == []


def test_print_noise_goes_to_logging_not_the_channel(
    ex: Executor, plugin_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    noisy = (
        'print("starting up, lots to say")\nimport sys\nprint("[ERROR] on stderr", file=sys.stderr)\n'
        + PROCESSOR
    )
    install(plugin_dir, "processor", "noisy", noisy)
    caplog.set_level(logging.DEBUG, logger="dkron_exec.plugin")
    execution = ex.run(
        shell_job(
            "j", "echo hello", processors={"noisy": {"print": "printing during the call", "append": "!"}}
        )
    )
    assert execution.output == b"hello\n!" and execution.processor_errors == []
    deadline = time.monotonic() + 3
    while (
        time.monotonic() < deadline
        and len([r for r in caplog.records if r.name == "dkron_exec.plugin.noisy"]) < 3
    ):
        time.sleep(0.05)
    records = {(r.name, r.levelno, r.getMessage()) for r in caplog.records}
    assert ("dkron_exec.plugin.noisy", logging.INFO, "starting up, lots to say") in records
    assert ("dkron_exec.plugin.noisy", logging.INFO, "printing during the call") in records
    assert ("dkron_exec.plugin.noisy", logging.ERROR, "[ERROR] on stderr") in records


def test_run_by_hand_a_plugin_says_what_it_is(plugin_dir: Path) -> None:
    path = install(plugin_dir, "processor", "shy", PROCESSOR)
    env = {k: v for k, v in os.environ.items() if k != "DKRON_PLUGIN_MAGIC_COOKIE"}
    proc = subprocess.run([str(path)], env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    assert "dkron_exec plugin (the processor 'shy')" in proc.stderr


def test_a_python_plugin_file_run_by_hand_is_called_a_script_and_its_suffix_is_no_part_of_its_name(
    tmp_path: Path,
) -> None:
    script = tmp_path / "tag_snippet.py"
    script.write_text(PROCESSOR)
    env = {k: v for k, v in os.environ.items() if k != "DKRON_PLUGIN_MAGIC_COOKIE"}
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    assert "This script is a dkron_exec plugin (the processor 'tag_snippet')" in proc.stderr
    assert "named dkron-processor-tag_snippet in a plugin folder" in proc.stderr
    assert "binary" not in proc.stderr and ".py" not in proc.stderr


def test_a_wrong_cookie_and_an_early_exit_are_clear_errors(ex: Executor, plugin_dir: Path) -> None:
    wrong = f"""
import os, sys
if os.environ.get("DKRON_PLUGIN_MAGIC_COOKIE") != "{COOKIE_VALUE[::-1]}":
    sys.stderr.write("This binary is a plugin. These are not meant to be executed directly.\\n")
    sys.exit(1)
"""
    install(plugin_dir, "processor", "other-cookie", wrong)
    install(plugin_dir, "processor", "quitter", "import sys\nsys.exit(4)\n")
    execution = ex.run(shell_job("j", "echo hello", processors={"other-cookie": {}, "quitter": {}}))
    cookie_err, quit_err = execution.processor_errors
    assert "other-cookie" in cookie_err and "exited before the handshake (exit status 1)" in cookie_err
    assert "not meant to be executed directly" in cookie_err
    assert "quitter" in quit_err and "exited before the handshake (exit status 4)" in quit_err
    assert execution.success and execution.output == b"hello\n"


def test_plugin_processor_errors_are_recorded_by_run_and_process(ex: Executor, plugin_dir: Path) -> None:
    path = install(plugin_dir, "processor", "picky", PROCESSOR)
    execution = ex.run(shell_job("j", "echo hello", processors={"picky": {"raise": "bad config"}}))
    assert execution.processor_errors == [f"picky: plugin processor 'picky' ({path}): ValueError: bad config"]
    # The same step without a run: the error is recorded the same way, the execution kept.
    before = an_execution("j", output=b"kept\n")
    after = ex.process(shell_job("j", "echo hello", processors={"picky": {"raise": "again"}}), before)
    assert after.processor_errors == [f"picky: plugin processor 'picky' ({path}): ValueError: again"]
    assert after.output == b"kept\n" and after.key == before.key


def test_a_raising_processor_is_a_remote_plugin_error_for_a_direct_call(plugin_dir: Path) -> None:
    path = install(plugin_dir, "processor", "picky", PROCESSOR)
    host = PluginHost()
    try:
        host.register("processor", "picky", str(path))
        with pytest.raises(PluginError) as info:
            host.process("picky", an_execution("j"), {"raise": "again"})
        assert getattr(info.value, "kind", None) == "remote"
        assert str(info.value).endswith("ValueError: again")
    finally:
        host.close()


def test_close_stops_the_plugins(tmp_path: Path, plugin_dir: Path) -> None:
    install(plugin_dir, "processor", "p", PROCESSOR)
    ex = Executor(":memory:", plugin_dirs=[plugin_dir])
    ex.run(shell_job("j", "echo hello", processors={"p": {}}))
    pid = ex.plugins.pid("processor", "p")
    assert pid and pid_alive(pid)
    ex.close()
    assert wait_gone([pid], 2.0) == []


HOST = """
import sys
from dkron_exec import Executor
ex = Executor(":memory:", plugin_dirs=[sys.argv[1]])
ex.run({"name": "j", "command": "true", "processors": {"p": {}, "q": {}}})
print(ex.plugins.pid("processor", "p"), ex.plugins.pid("processor", "q"), flush=True)
import time
time.sleep(3600)
"""


def test_plugins_die_with_a_sigkilled_host(plugin_dir: Path) -> None:
    install(plugin_dir, "processor", "p", PROCESSOR)
    install(plugin_dir, "processor", "q", PROCESSOR)
    host = subprocess.Popen([sys.executable, "-c", HOST, str(plugin_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert host.stdout is not None
        pids = [int(p) for p in host.stdout.readline().split()]
        assert len(pids) == 2 and all(pid_alive(p) for p in pids)
        host.send_signal(signal.SIGKILL)
        host.wait(5)
        assert wait_gone(pids, 2.0) == []
    finally:
        host.kill()
        host.wait()


def test_an_unknown_executor_is_refused_before_it_runs(ex: Executor) -> None:
    with pytest.raises(JobError, match=r"^executor: unknown executor 'nope': known: shell"):
        ex.run({"name": "u", "executor": "nope", "executor_config": {}})
    assert ex.executions("u") == []


def test_sdk_answers_carry_in_place_changes_and_unchanged_echoes(ex: Executor, plugin_dir: Path) -> None:
    # The SDK answers "execution": {} when every field is still the object it handed out: a
    # processor that changes the execution in place (a list appended to, an attribute set) must
    # still have its changes arrive.
    install(
        plugin_dir,
        "processor",
        "inplace",
        """
        from dkron_exec.plugin import serve

        class P:
            def process(self, args):
                e = args.execution
                if args.config.get("mode") == "append":
                    e.processor_errors.append("noted")
                elif args.config.get("mode") == "set":
                    e.error = "set in place"
                    e.attempt = 7
                return e

        serve(processor=P())
        """,
    )
    first = ex.run(shell_job("j", "echo hello"))
    host = PluginHost()
    try:
        host.register("processor", "inplace", str(plugin_dir / "dkron-processor-inplace"))
        same = host.process("inplace", first, {})
        assert same == first
        assert same.output is first.output and same.started_at is first.started_at
        assert host.process("inplace", first, {"mode": "append"}).processor_errors == ["noted"]
        changed = host.process("inplace", first, {"mode": "set"})
        assert (changed.error, changed.attempt, changed.output) == ("set in place", 7, first.output)
        assert first.error is None and first.processor_errors == []
    finally:
        host.close()


def test_ctrl_c_cancels_a_waiting_processor_call(ex: Executor, plugin_dir: Path) -> None:
    # The chain runs on the caller's thread: a plugin call waiting there still sees Ctrl-C.
    install(plugin_dir, "processor", "slow", PROCESSOR)
    ex.run(shell_job("warm", "true", processors={"slow": {}}))
    timer = threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        ex.run(shell_job("j", "echo hello", processors={"slow": {"sleep": "30"}}))
    assert time.monotonic() - started < 5
    [stored] = ex.executions("j")
    [err] = stored.processor_errors
    assert err.startswith("slow: ") and "cancel" in err
    # The plugin got a cancel and is still usable (or restarted) for the next call.
    after = ex.run(shell_job("j", "echo hello", processors={"slow": {"append": "!"}}))
    assert after.output == b"hello\n!" and after.processor_errors == []


def test_an_answer_with_an_unusable_execution_costs_only_its_step(ex: Executor, plugin_dir: Path) -> None:
    # A plugin answering with a time stamp that is not RFC 3339 (non-ASCII where the offset goes).
    install(
        plugin_dir,
        "processor",
        "liar",
        """
        import orjson, sys
        from dkron_exec.plugin import serve
        server = sys.modules["dkron_exec.plugin.serve"]._Server

        def answer(self, call_id, execution, config):
            bad = {"started_at": "2024-05-29T16:26:40+1\\u00e9:0"}
            self.channel.send(orjson.dumps({"type": "result", "id": call_id, "execution": bad}), b"x")

        server._process = answer

        class P:
            def process(self, args):
                return args.execution

        serve(processor=P())
        """,
    )
    job = shell_job("j", "echo hi", processors={"liar": {}}, concurrency="forbid")
    for _ in range(2):  # the second run is not refused: the first one released its claim
        execution = ex.run(job)
        assert execution.output == b"hi\n"
        [err] = execution.processor_errors
        assert "unusable execution" in err and "started_at" in err
    assert len(ex.executions("j")) == 2
