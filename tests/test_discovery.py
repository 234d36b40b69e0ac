"""Plugin discovery: folder order, last-wins, names, refused permissions; the CLI listing; the
Go example plugin, built from source and run through a chain."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from dkron_exec import Executor, discover_plugins
from dkron_exec.cli import main
from dkron_exec.discovery import default_plugin_dirs, parse_plugin_name
from dkron_exec.errors import JobError
from plugin_support import EXAMPLES, PROCESSOR, install

GO = Path("/usr/local/go/bin/go")


def test_default_folders_are_etc_then_the_python_executables_folder() -> None:
    import sys

    assert default_plugin_dirs() == [Path("/etc/dkron/plugins"), Path(sys.executable).parent]


def test_names() -> None:
    assert parse_plugin_name("dkron-processor-my-thing") == ("processor", "my-thing")
    assert parse_plugin_name("dkron-executor-http.exe") == ("executor", "http")
    assert parse_plugin_name("dkron-processor-") is None
    assert parse_plugin_name("dkron-other-x") is None


def test_order_and_last_found_wins(tmp_path: Path) -> None:
    a, b, c = (tmp_path / n for n in "abc")
    install(a, "processor", "dup", "")
    install(a, "processor", "only-a", "")
    install(b, "executor", "dup", "")
    install(b, "processor", "dup", "")
    install(c, "processor", "dup.exe", "")
    found = discover_plugins([b, c], defaults=[a, tmp_path / "missing"])
    assert found.searched == [a, b, c]
    assert found.processors["dup"].path == c / "dkron-processor-dup.exe"
    assert found.processors["dup"].overrides == (a / "dkron-processor-dup", b / "dkron-processor-dup")
    assert found.processors["only-a"].path == a / "dkron-processor-only-a"
    assert found.executors["dup"].path == b / "dkron-executor-dup"


def test_only_safe_regular_executables(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    d = tmp_path / "d"
    install(d, "processor", "good", "")
    install(d, "processor", "not-exec", "", mode=0o644)
    install(d, "processor", "world-writable", "", mode=0o777)
    os.chmod(d / "dkron-processor-world-writable", 0o777)  # umask may have masked it
    (d / "dkron-processor-a-dir").mkdir()
    os.symlink(d / "dkron-processor-good", d / "dkron-processor-link")
    open_dir = tmp_path / "open"
    install(open_dir, "processor", "in-open-dir", "")
    os.chmod(open_dir, 0o777)
    sticky = tmp_path / "sticky"
    install(sticky, "processor", "in-sticky-dir", "")
    os.chmod(sticky, 0o1777)
    found = discover_plugins([d, open_dir, sticky], defaults=[])
    assert sorted(found.processors) == ["good", "in-sticky-dir", "link"]
    refused = {p.name: why for p, why in found.refused}
    assert refused == {
        "dkron-processor-not-exec": "the file is not executable",
        "dkron-processor-world-writable": "the file is world-writable",
        "dkron-processor-in-open-dir": f"its folder {open_dir} is world-writable without the sticky bit",
    }
    # A job naming a refused plugin is refused before it runs, saying why (not only "unknown");
    # the Executor logs the refusal once, however many jobs name it.
    marker = tmp_path / "ran"
    job = {"name": "j", "command": f"touch {marker}", "processors": {"world-writable": {}}}
    path = d / "dkron-processor-world-writable"
    with caplog.at_level(logging.WARNING), Executor(":memory:", plugin_dirs=[d]) as ex:
        for _ in range(2):
            with pytest.raises(JobError) as refused_run:
                ex.run(job)
            assert str(refused_run.value).startswith(
                f"processors.world-writable: no processor 'world-writable': its plugin {path} was refused: "
                "the file is world-writable"
            )
        assert ex.executions("j") == []
    assert not marker.exists()
    assert [r.getMessage() for r in caplog.records if str(path) in r.getMessage()] == [
        f"plugin {path} refused: the file is world-writable"
    ]


def test_a_builtin_name_wins_over_a_plugin(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    install(tmp_path, "executor", "shell", PROCESSOR)
    install(tmp_path, "processor", "files", PROCESSOR)
    with Executor(":memory:", plugin_dirs=[tmp_path]) as ex, caplog.at_level(logging.WARNING):
        execution = ex.run({"name": "j", "command": "echo built-in"})
        assert execution.output == b"built-in\n"
        assert not ex.plugins.has("executor", "shell") and not ex.plugins.has("processor", "files")
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "the built-in 'shell' wins" in messages and "the built-in 'files' wins" in messages


def test_cli_lists_plugins(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    install(tmp_path / "a", "processor", "one", "")
    install(tmp_path / "b", "processor", "one", "")
    install(tmp_path / "b", "executor", "two", "", mode=0o644)
    assert main(["plugins", "--plugin-dir", str(tmp_path / "a"), "--plugin-dir", str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "processor  one" in out and str(tmp_path / "b" / "dkron-processor-one") in out
    assert f"overrides {tmp_path / 'a' / 'dkron-processor-one'}" in out
    assert "refused" in out and "not executable" in out


@pytest.fixture(scope="session")
def go_plugin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    go = shutil.which("go") or (str(GO) if GO.exists() else None)
    if go is None:
        if os.environ.get("CI") or os.environ.get("DKRON_EXEC_REQUIRE_GO") == "1":
            pytest.fail("Go is needed to build examples/go-processor")
        pytest.skip("Go is not installed")
    out = tmp_path_factory.mktemp("go") / "dkron-processor-wordcount"
    # A cache that outlives the run: a cold build of the standard library takes half a minute.
    cache = Path(os.environ.get("GOCACHE") or "/tmp/dkron-exec-gocache")
    env = {
        **os.environ,
        "GOCACHE": str(cache),
        "GOPATH": str(tmp_path_factory.mktemp("gopath")),
        "GOFLAGS": "",
        "CGO_ENABLED": "0",
    }
    subprocess.run(
        [go, "build", "-o", str(out), "."],
        cwd=EXAMPLES / "go-processor",
        env=env,
        check=True,
        timeout=300,
    )
    return out


def test_the_go_example_plugin(tmp_path: Path, go_plugin: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "plugins"
    folder.mkdir()
    shutil.copy(go_plugin, folder / go_plugin.name)
    install(folder, "processor", "py", PROCESSOR)
    caplog.set_level(logging.INFO, logger="dkron_exec.plugin")
    with Executor(":memory:", node_name="n", plugin_dirs=[folder]) as ex:
        execution = ex.run(
            {
                "name": "g",
                "command": "printf 'a b c\\nd\\n'",
                "processors": {"py": {"append": "e f\n"}, "wordcount": {"label": "words"}},
            }
        )
        assert execution.processor_errors == []
        assert execution.output == b"a b c\nd\ne f\nwords: 6, lines: 3\n"
        assert execution.success and execution.exit_code == 0 and execution.node_name == "n"
        assert ex.executions("g")[0].output == execution.output
        pid = ex.plugins.pid("processor", "wordcount")
    assert pid
    assert any(r.name == "dkron_exec.plugin.wordcount" and "ready" in r.getMessage() for r in caplog.records)
    run = subprocess.run([str(go_plugin)], capture_output=True, text=True, timeout=10)
    assert run.returncode == 1 and "dkron_exec plugin" in run.stderr
