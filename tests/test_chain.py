"""Chains of built-in processors, in the listed order, with real sinks: a file on disk, a real
rsyslogd, the host's stdout. What each step sees depends on the step before it."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

from dkron_exec import Executor
from plugin_support import install
from syslogd import Syslogd

# Runs a job through files -> log -> syslog in a fresh interpreter, so the log block on fd 1 is
# captured for real; prints the stored execution as JSON on the last line.
CHAIN_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from dkron_exec import Executor
    job = json.loads(sys.argv[1])
    with Executor(":memory:", node_name="node-a") as ex:
        e = ex.run(job)
        stored = ex.execution(job["name"], e.key)
    sys.stdout.flush()
    print(json.dumps(stored.to_dict()))
    """
)


def run_in_subprocess(job: dict[str, object]) -> tuple[str, dict[str, object]]:
    r = subprocess.run(
        [sys.executable, "-c", CHAIN_SCRIPT, json.dumps(job)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    printed, _, last = r.stdout.rstrip("\n").rpartition("\n")
    return printed, json.loads(last)


def test_three_processors_in_order_with_forward_false_in_the_middle(tmp_path: Path, daemon: Syslogd) -> None:
    marker = "m" + uuid.uuid4().hex[:10]
    job = {
        "name": "chain",
        "command": f"echo {marker}",
        "processors": {
            "files": {"log_dir": str(tmp_path / "logs"), "forward": True},
            "log": {"forward": False},
            "syslog": {"transport": "unixgram", "address": str(daemon.socket), "forward": True},
        },
    }
    printed, stored = run_in_subprocess(job)
    # 1. files got the job's output and forwarded it.
    [log_file] = (tmp_path / "logs").iterdir()
    assert log_file.read_text() == f"{marker}\n"
    # 2. log printed the real output, then replaced it.
    assert f"----- BEGIN OUTPUT job=chain execution={stored['id']} -----\n{marker}\n\n" in printed
    # 3. syslog received what log left: Dkron's replacement text, not the output.
    lines = daemon.wait_lines(1)
    mine = [line for line in lines if "Output in dkron log" in line.msg]
    assert mine and not any(marker in line.msg for line in lines)
    # The store keeps what the last step returned.
    assert stored["output"] == "Output in dkron log" and stored["processor_errors"] == []


def test_the_same_processors_in_another_order_see_other_things(tmp_path: Path, daemon: Syslogd) -> None:
    marker = "m" + uuid.uuid4().hex[:10]
    job = {
        "name": "chain-two",
        "command": f"echo {marker}",
        "processors": {
            "syslog": {"transport": "unixgram", "address": str(daemon.socket), "forward": False},
            "files": {"log_dir": str(tmp_path / "logs"), "forward": False},
        },
    }
    _, stored = run_in_subprocess(job)
    assert any(marker in line.msg for line in daemon.wait_lines(1) if marker in line.msg)
    [log_file] = (tmp_path / "logs").iterdir()
    assert log_file.read_text() == "Output in syslog"  # files saw what syslog left
    assert stored["output"] == str(log_file)  # and replaced it with its path


def test_order_holds_on_every_run(tmp_path: Path) -> None:
    # Dkron iterates a Go map, so its order changes from run to run; ours never does.
    with Executor(":memory:", plugin_dirs=[tmp_path]) as ex:
        steps: dict[str, dict[str, str]] = {}
        for name in ["c", "a", "d", "b"]:
            install(tmp_path, "processor", name, _APPEND)
            steps[name] = {"append": name}
        outputs = {ex.run({"name": "o", "command": "printf x", "processors": steps}).output for _ in range(5)}
    assert outputs == {b"xcadb"}


_APPEND = """
from dkron_exec.plugin import serve

class P:
    def process(self, args):
        return args.execution.replace(output=args.execution.output + args.config["append"].encode())

serve(processor=P())
"""

_REPORTING = """
from dkron_exec.plugin import serve

class P:
    def process(self, args):
        return args.execution.replace(output=args.config["reporting_node"].encode())

serve(processor=P())
"""


def test_every_processor_gets_reporting_node(tmp_path: Path) -> None:
    install(tmp_path, "processor", "reporter", _REPORTING)
    with Executor(":memory:", node_name="node-7", plugin_dirs=[tmp_path]) as ex:
        e = ex.run({"name": "r", "command": "true", "processors": {"reporter": {}}})
    assert e.output == b"node-7"


def test_a_processor_that_cannot_start_is_recorded_and_the_chain_goes_on(tmp_path: Path) -> None:
    # A name unknown when the job arrives is refused (test_executor); a plugin whose file goes
    # away after discovery fails at its step, and the steps after it still run.
    plugin = install(tmp_path / "plugins", "processor", "gone", "")
    with Executor(":memory:", plugin_dirs=[tmp_path / "plugins"]) as ex:
        assert ex.plugins.has("processor", "gone")
        plugin.unlink()
        e = ex.run(
            {
                "name": "gap",
                "command": "echo out",
                "processors": {"gone": {}, "files": {"log_dir": str(tmp_path / "l"), "forward": True}},
            }
        )
        assert ex.execution("gap", e.key) == e
    [error] = e.processor_errors
    assert e.success and error.startswith("gone: plugin processor 'gone'") and "could not be started" in error
    assert [p.read_text() for p in (tmp_path / "l").iterdir()] == ["out\n"]
