"""Names a job uses and folders plugins come from (issue 16, items 2 and 3): a job naming an
executor or processor nothing provides is refused before anything starts, by every Executor entry
point; ``plugin_dirs`` may be one folder; a plugin folder that is not there is named, once."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from dkron_exec import Execution, Executor, JobError, discover_plugins
from plugin_support import PROCESSOR, install


def typo_jobs(marker: Path) -> list[tuple[dict[str, Any], str]]:
    """Jobs whose command would create ``marker``, each with one misspelt name, and the start of
    the error each must raise."""
    return [
        (
            {"name": "typo-processor", "command": f"touch {marker}", "processors": {"fils": {}}},
            "processors.fils: unknown processor 'fils': did you mean 'files'?",
        ),
        (
            {"name": "typo-executor", "executor": "shel", "executor_config": {"command": f"touch {marker}"}},
            "executor: unknown executor 'shel': did you mean 'shell'?",
        ),
    ]


def test_every_entry_point_refuses_a_misspelt_name_before_anything_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    done = Execution(job_name="x", started_at=datetime.now(timezone.utc), finished_at=None, success=True)
    with Executor(tmp_path / "store.db", node_name="n") as ex:
        for job, expected in typo_jobs(marker):
            calls = {
                "run": lambda job=job: ex.run(job),
                "run_async": lambda job=job: asyncio.run(ex.run_async(job)),
                "process": lambda job=job: ex.process(job, done),
                "check": lambda job=job: ex.check(job),
            }
            for entry, call in calls.items():
                with pytest.raises(JobError) as refused:
                    call()
                assert str(refused.value).startswith(expected), (entry, str(refused.value))
            assert refused.value.field in ("executor", "processors.fils")
            assert refused.value.value in ("shel", "fils")
        assert ex.store.job_names() == []
    assert not marker.exists()
    # A second Executor on the same file finds nothing stored either.
    with Executor(tmp_path / "store.db") as again:
        assert again.executions("typo-processor") == again.executions("typo-executor") == []


def test_the_names_known_are_the_built_ins_and_the_plugins_found_once(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    install(plugins, "processor", "tag", PROCESSOR)
    with Executor(":memory:", plugin_dirs=[plugins]) as ex:
        with pytest.raises(JobError, match=r"unknown processor 'tagg': did you mean 'tag'\?"):
            ex.run({"name": "j", "command": "true", "processors": {"tagg": {}}})
        ran = ex.run({"name": "j", "command": "echo hi", "processors": {"tag": {"append": "!"}}})
        assert ran.success and ran.output == b"hi\n!" and ran.processor_errors == []
        assert ex.check({"name": "j", "command": "true", "processors": {"tag": {}, "log": {}}}).name == "j"
        # Plugins are looked for once: one installed afterwards is not seen by this Executor.
        install(plugins, "processor", "later", PROCESSOR)
        with pytest.raises(JobError, match="unknown processor 'later'"):
            ex.run({"name": "j", "command": "true", "processors": {"later": {}}})
    with Executor(":memory:", plugin_dirs=[plugins]) as fresh:
        later = fresh.check({"name": "j", "command": "true", "processors": {"later": {}}})
        assert later.processors == {"later": {}}


def test_plugin_dirs_may_be_one_folder(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    install(plugins, "processor", "one", "")
    for given in (str(plugins), plugins):
        with Executor(":memory:", plugin_dirs=given) as ex:
            assert ex.plugin_dirs == [plugins]
            assert ex.plugins.has("processor", "one")
        assert "one" in discover_plugins(given, defaults=[]).processors
    for bad in (b"plugins", [plugins, 3]):
        with pytest.raises(TypeError, match="plugin_dirs"):
            Executor(":memory:", plugin_dirs=bad)  # type: ignore[arg-type]


def test_a_missing_plugin_folder_is_warned_about_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    plugins = tmp_path / "plugins"
    install(plugins, "processor", "one", "")
    missing, not_a_folder = tmp_path / "nope", tmp_path / "file"
    not_a_folder.write_text("")
    folders = [missing, plugins, missing, not_a_folder]
    with caplog.at_level(logging.WARNING, "dkron_exec"), Executor(":memory:", plugin_dirs=folders) as ex:
        assert ex.plugins.has("processor", "one")  # discovery does not warn again
        ex.run({"name": "j", "command": "true"})
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"plugin folder {missing} does not exist: no plugins are looked for there",
        f"plugin folder {not_a_folder} is not a folder: no plugins are looked for there",
    ]
    found = discover_plugins([missing, plugins], defaults=[])
    assert found.missing == [(missing, "does not exist")] and found.searched == [plugins]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dkron_exec", *args], capture_output=True, text=True, timeout=60
    )


def test_the_cli_names_a_missing_plugin_folder(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    line = f"dkron-exec: warning: plugin folder {missing} does not exist: no plugins are looked for there"
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"name": "j", "command": "true"}))
    store = str(tmp_path / "s.db")
    for args in (
        ("plugins",),
        ("plugins", "--json"),
        ("validate", str(job)),
        ("run", str(job), "--store", store),
    ):
        r = cli(*args, "--plugin-dir", str(missing), "--plugin-dir", str(missing))
        assert r.returncode == 0, (args, r.stderr)
        assert r.stderr.splitlines().count(line) == 1 and str(missing) in line, (args, r.stderr)
    listed = json.loads(cli("plugins", "--json", "--plugin-dir", str(missing)).stdout)
    assert listed["missing"] == [{"path": str(missing), "reason": "does not exist"}]
    # A folder that is there is not warned about.
    assert "warning" not in cli("plugins", "--plugin-dir", str(tmp_path)).stderr
