"""Dkron's own processors, ``dkron-processor-files`` and ``dkron-processor-log`` built from Dkron's
module, and the seed's Go processor (examples/seed-processor), in dkron_exec chains next to our
built-ins and our own-protocol plugins.

Dkron's plugins carry the names of our built-ins, which win over a plugin of the same name, so
they are installed as ``dkfiles`` and ``dklog`` here (one test shows what happens otherwise).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import go_plugins
import pytest

from dkron_exec import Executor
from jobs import an_execution, shell_job
from plugin_support import install_example

pytestmark = go_plugins.skip_without_go()

NOT_FORWARDED_LOG = b"Output in dkron log"


@pytest.fixture(scope="module")
def binaries() -> dict[str, Path]:
    return go_plugins.build_dkron_bins()


@pytest.fixture
def plugin_dir(tmp_path: Path, binaries: dict[str, Path]) -> Path:
    d = tmp_path / "plugins"
    go_plugins.install_dkron_bin(d, "dkron-processor-files", "dkfiles")
    go_plugins.install_dkron_bin(d, "dkron-processor-log", "dklog")
    go_plugins.install_dkron_bin(d, "dkron-processor-myplugin", "myplugin")
    install_example(d, "processor", "tag", "tag_processor.py")
    return d


@pytest.fixture
def ex(tmp_path: Path, plugin_dir: Path) -> Iterator[Executor]:
    with Executor(tmp_path / "store.db", node_name="n1", plugin_dirs=[plugin_dir], plugin_timeout=20.0) as e:
        yield e


def umask() -> int:
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("Umask:")), 8)


def plugin_lines(caplog: pytest.LogCaptureFixture, name: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == f"dkron_exec.plugin.{name}"]


def wait_for(caplog: pytest.LogCaptureFixture, name: str, done: Callable[[list[str]], bool]) -> list[str]:
    """The plugin's log lines once `done` holds for them (lines reach logging from a thread of
    their own); the last lines seen if it never does, for the assertion to show."""
    deadline = time.monotonic() + 20
    while not done(lines := plugin_lines(caplog, name)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return lines


def test_dkron_and_our_processors_run_in_order_and_forward_across_a_mixed_chain(
    ex: Executor, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    dk_dir, our_dir = tmp_path / "dk", tmp_path / "ours"
    dk_dir.mkdir()
    steps = {
        "myplugin": {"prefix": "> "},  # the seed's processor (Dkron's protocol)
        "dkfiles": {"log_dir": str(dk_dir), "forward": "true"},
        "log": {"forward": True, "target": "logging"},
        "dklog": {"forward": False},
        "tag": {"tag": "#"},  # a plugin of ours (our protocol)
        "files": {"log_dir": str(our_dir), "forward": True},
    }
    execution = ex.run(shell_job("j", "printf 'a\\nb\\n'", processors=steps))
    assert execution.processor_errors == []
    # Each step saw what the one before it returned; dklog did not forward, so what follows it
    # got Dkron's text.
    assert (dk_dir / f"{execution.key}.log").read_bytes() == b"> a\n> b\n"
    logged = [r.getMessage() for r in caplog.records if r.name == "dkron_exec.processors.log"]
    assert any("\n> a\n> b\n\n" in m for m in logged), logged
    lines = wait_for(caplog, "dklog", lambda got: "----- END OUTPUT -----" in got)
    begin = lines.index(f"----- BEGIN OUTPUT job=j execution={execution.key} -----")
    assert lines[begin + 1 : begin + 5] == ["> a", "> b", "", "----- END OUTPUT -----"]
    assert (our_dir / f"{execution.key}.log").read_bytes() == b"# " + NOT_FORWARDED_LOG
    assert execution.output == b"# " + NOT_FORWARDED_LOG
    stored = ex.execution("j", execution.key)
    assert stored is not None and stored.output == b"# " + NOT_FORWARDED_LOG

    # Dkron's files first, not forwarding: the steps after it get the file's path, as after ours.
    steps = {"dkfiles": {"log_dir": str(dk_dir)}, "myplugin": {}, "files": {"log_dir": str(our_dir)}}
    execution = ex.run(shell_job("j", "echo hello", processors=steps))
    assert execution.processor_errors == []
    dk_file, our_file = dk_dir / f"{execution.key}.log", our_dir / f"{execution.key}.log"
    assert dk_file.read_bytes() == b"hello\n"
    assert our_file.read_bytes() == f"[j] {dk_file}".encode()
    assert execution.output == str(our_file).encode()


def test_dkron_files_writes_what_our_files_writes(ex: Executor, tmp_path: Path) -> None:
    dirs = {"dkfiles": tmp_path / "dk", "files": tmp_path / "ours"}
    dirs["dkfiles"].mkdir()
    output = bytes(range(256)) * 64 + b"no newline at the end"
    for forward in ("true", "false"):
        # (A whole number of microseconds: a Python Execution's datetime holds no more, and Dkron
        # names the file after started_at, ours after the key.)
        execution = an_execution(
            "j", started_ns=1_700_000_000_123_456_000 + len(forward) * 1000, output=output
        )
        name = f"{execution.key}.log"  # Dkron's execution key: <started_ns>-<node>
        for step, folder in dirs.items():
            job = shell_job("j", "true", processors={step: {"log_dir": str(folder), "forward": forward}})
            back = ex.process(job, execution)
            assert back.processor_errors == []
            assert (folder / name).read_bytes() == output
            # Forwarding, the output goes on; not forwarding, the next step sees the file's path.
            assert back.output == (output if forward == "true" else str(folder / name).encode())
        assert sorted(os.listdir(dirs["dkfiles"])) == sorted(os.listdir(dirs["files"]))
        # Ours is 0644 whatever the umask; Dkron's is 0644 less the umask it inherited.
        assert (dirs["files"] / name).stat().st_mode & 0o777 == 0o644
        assert (dirs["dkfiles"] / name).stat().st_mode & 0o777 == 0o644 & ~umask()


def test_a_python_plugin_before_dkron_files_keeps_the_start_time_s_nanoseconds(
    ex: Executor, tmp_path: Path
) -> None:
    # Our Python SDK sends the whole execution back with a datetime (microseconds): the host keeps
    # its own start time, so Dkron's files, which names the file after started_at, names it after
    # the execution's key.
    dk_dir = tmp_path / "dk"
    dk_dir.mkdir()
    steps = {"tag": {"tag": "#"}, "dkfiles": {"log_dir": str(dk_dir), "forward": "true"}}
    execution = ex.run(shell_job("j", "echo hi", processors=steps))
    assert execution.processor_errors == []
    assert os.listdir(dk_dir) == [f"{execution.key}.log"]


def test_where_dkron_files_differs_from_ours(ex: Executor, tmp_path: Path) -> None:
    # A log_dir that does not exist: ours creates it; Dkron's only logs the failed write (it has
    # no way to report an error) and still replaces the output with the path it did not write.
    missing = tmp_path / "missing"
    job = shell_job("j", "true", processors={"dkfiles": {"log_dir": str(missing)}})
    back = ex.process(job, an_execution("j"))
    assert back.processor_errors == []
    assert back.output == f"{missing}/{back.key}.log".encode()
    assert not missing.exists()
    job = shell_job("j", "true", processors={"files": {"log_dir": str(missing)}})
    back = ex.process(job, an_execution("j"))
    assert (missing / f"{back.key}.log").read_bytes() == b"hello\n"

    # Dkron joins log_dir and the name with "/" as given; ours makes a clean path.
    dk_dir, our_dir = tmp_path / "dk", tmp_path / "ours"
    dk_dir.mkdir()
    steps = {"dkfiles": {"log_dir": f"{dk_dir}/"}, "files": {"log_dir": f"{our_dir}/"}}
    back = ex.process(shell_job("j", "true", processors={"dkfiles": steps["dkfiles"]}), an_execution("j"))
    assert back.output == f"{dk_dir}//{back.key}.log".encode()
    back = ex.process(shell_job("j", "true", processors={"files": steps["files"]}), an_execution("j"))
    assert back.output == f"{our_dir}/{back.key}.log".encode()


def test_a_1_mb_output_through_dkron_log(ex: Executor, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    # 1 MiB of 1 KiB lines (short of the host's 64 KiB line cut), each one numbered.
    lines = [f"{i:06d} ".encode() + b"x" * 1016 for i in range(1024)]
    big = b"\n".join(lines) + b"\n"
    assert len(big) == 1024 * 1024
    job = shell_job("big", "true", processors={"dklog": {"forward": "true"}, "tag": {"tag": "|"}})
    execution = an_execution("big", output=big)
    back = ex.process(job, execution)
    assert back.processor_errors == []
    assert back.output == b"".join(b"| " + line + b"\n" for line in lines)
    # Dkron's log printed the whole block on its stdout (go-plugin's stdout stream), in order.
    got = wait_for(caplog, "dklog", lambda got: "----- END OUTPUT -----" in got)
    begin = got.index(f"----- BEGIN OUTPUT job=big execution={execution.key} -----")
    end = got.index("----- END OUTPUT -----")
    assert [line.encode() for line in got[begin + 1 : end]] == [*lines, b""]

    # Not forwarding, the next step sees Dkron's text; a failed execution goes to stderr.
    back = ex.process(job | {"processors": {"dklog": {}}}, execution.replace(success=False))
    assert back.output == NOT_FORWARDED_LOG


def test_the_seeds_processor_in_a_chain(ex: Executor, tmp_path: Path) -> None:
    steps = {"myplugin": {}, "files": {"log_dir": str(tmp_path / "logs"), "forward": True}}
    execution = ex.run(shell_job("nightly", "printf 'one\\ntwo'", processors=steps))
    assert execution.processor_errors == [] and execution.success
    assert execution.output == b"[nightly] one\n[nightly] two"
    assert (tmp_path / "logs" / f"{execution.key}.log").read_bytes() == b"[nightly] one\n[nightly] two"
    # Its config; two copies of it around a plugin of ours.
    steps = {"myplugin": {"prefix": "1: "}, "tag": {"tag": "t"}, "myplugin2": {"prefix": "2: "}}
    go_plugins.install_dkron_bin(tmp_path / "plugins", "dkron-processor-myplugin", "myplugin2")
    with Executor(tmp_path / "s2.db", node_name="n1", plugin_dirs=[tmp_path / "plugins"]) as ex2:
        execution = ex2.run(shell_job("j", "echo x", processors=steps))
    assert execution.processor_errors == []
    assert execution.output == b"2: t 1: x\n"


def test_dkron_plugins_under_built_in_names_are_ignored_with_a_warning(
    tmp_path: Path, binaries: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    d = tmp_path / "plugins"
    go_plugins.install_dkron_bin(d, "dkron-processor-files", "files")
    go_plugins.install_dkron_bin(d, "dkron-processor-log", "log")
    caplog.set_level(logging.WARNING, logger="dkron_exec")
    with Executor(tmp_path / "s.db", node_name="n1", plugin_dirs=[d]) as ex:
        ex.plugins  # noqa: B018  (discovery, which a chain of built-ins alone does not start)
        missing = tmp_path / "missing"
        back = ex.process(
            shell_job("j", "true", processors={"files": {"log_dir": str(missing)}}), an_execution("j")
        )
        # Our files ran: it created the folder Dkron's would not.
        assert (missing / f"{back.key}.log").read_bytes() == b"hello\n"
    warnings = " ".join(r.getMessage() for r in caplog.records)
    assert "dkron-processor-files is ignored" in warnings and "dkron-processor-log is ignored" in warnings, (
        warnings
    )
