"""The dkron-exec command, run as a real process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import wait_gone

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dkron_exec.cli", *args], capture_output=True, text=True, timeout=60, **kw
    )  # type: ignore[call-overload,no-any-return]


def write_job(tmp_path: Path, doc: dict[str, object]) -> str:
    path = tmp_path / "job.json"
    path.write_text(json.dumps(doc))
    return str(path)


def test_run_prints_the_stored_execution_and_exit_status(tmp_path: Path) -> None:
    store = str(tmp_path / "s.db")
    job = write_job(tmp_path, {"name": "hello", "command": "echo hello from a job"})
    r = cli("run", job, "--store", store)
    assert r.returncode == 0, r.stderr
    assert "status:     success" in r.stdout and "hello from a job" in r.stdout
    failing = write_job(tmp_path, {"name": "hello", "command": "sh -c 'echo oops; exit 4'"})
    r = cli("run", failing, "--store", store, "--json")
    assert r.returncode == 1
    doc = json.loads(r.stdout)
    assert doc["success"] is False and doc["exit_code"] == 4 and doc["output"] == "oops\nexit status 4\n"


def test_executions_lists_newest_first(tmp_path: Path) -> None:
    store = str(tmp_path / "s.db")
    for cmd in ["true", "false"]:
        cli("run", write_job(tmp_path, {"name": "listed", "command": cmd}), "--store", store)
    r = cli("executions", "listed", "--store", store)
    assert r.returncode == 0
    lines = r.stdout.splitlines()
    assert lines[0].split()[:4] == ["KEY", "STARTED", "DURATION", "STATUS"]
    assert "failed" in lines[1] and "success" in lines[2]
    r = cli("executions", "listed", "--store", store, "--json", "--limit", "1")
    assert [e["success"] for e in json.loads(r.stdout)] == [False]
    assert "no executions" in cli("executions", "other", "--store", store).stdout


def test_validate(tmp_path: Path) -> None:
    ok = cli("validate", write_job(tmp_path, {"name": "v", "command": "true", "schedule": "0 30 * * * *"}))
    assert ok.returncode == 0 and "next run:" in ok.stdout
    bad = cli("validate", write_job(tmp_path, {"name": "V!", "command": "true"}))
    assert bad.returncode == 2 and "name" in bad.stderr
    (tmp_path / "broken.json").write_text("{not json")
    broken = cli("validate", str(tmp_path / "broken.json"))
    assert broken.returncode == 2 and "JSON" in broken.stderr


def test_examples_validate() -> None:
    examples = sorted((ROOT / "examples").glob("*.json"))
    assert examples
    for path in examples:
        r = cli("validate", str(path))
        assert r.returncode == 0, (path, r.stderr)


def test_ctrl_c_kills_the_job_and_stores_the_execution(tmp_path: Path) -> None:
    store = str(tmp_path / "s.db")
    pidfile = tmp_path / "pid"
    command = f"echo $$ > {pidfile}; exec sleep 60"
    job = write_job(tmp_path, {"name": "long", "command": command, "shell": True})
    proc = subprocess.Popen(
        [sys.executable, "-m", "dkron_exec.cli", "run", job, "--store", store],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 10
    while not (pidfile.exists() and pidfile.read_text().strip()):
        assert time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.02)
    pid = int(pidfile.read_text())
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(10) == 130
    assert time.monotonic() - t0 < 3
    assert wait_gone([pid]) == []
    r = cli("executions", "long", "--store", store, "--json")
    [stored] = json.loads(r.stdout)
    assert stored["success"] is False and stored["error"] == "shell: Job 'long' was cancelled. Job was killed"


def test_default_store_location(tmp_path: Path) -> None:
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "xdg")}
    env.pop("DKRON_EXEC_STORE", None)
    r = cli("run", write_job(tmp_path, {"name": "d", "command": "true"}), env=env)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "xdg" / "dkron-exec" / "executions.db").exists()


def test_store_path_errors_are_one_line_without_traceback(tmp_path: Path) -> None:
    job = write_job(tmp_path, {"name": "s", "command": "true"})
    (tmp_path / "file").write_bytes(b"")
    cases = {
        str(tmp_path): "(it is a folder)",
        str(tmp_path / "missing" / "s.db"): f"(its folder {tmp_path / 'missing'} does not exist)",
        str(tmp_path / "file" / "s.db"): f"({tmp_path / 'file'} is not a folder)",
    }
    for store, cause in cases.items():
        for args in (["run", job], ["executions", "s"]):
            r = cli(*args, "--store", store)
            assert r.returncode == 2, r
            opening = f"dkron-exec: cannot open the store {store}: unable to open database file"
            assert r.stderr == f"{opening} {cause}\n"
            assert r.stdout == ""
    assert not (tmp_path / "missing").exists()


def _help_entries(text: str) -> dict[str, str]:
    """Each argument of an argparse --help (positional and option) and its help text."""
    entries: dict[str, str] = {}
    current = None
    in_arguments = False
    for line in text.splitlines():
        if line.endswith(":") and not line.startswith(" "):
            in_arguments = line in ("positional arguments:", "options:", "optional arguments:")
            current = None
            continue
        if not in_arguments or not line.strip():
            continue
        if line.startswith("  ") and not line.startswith("   "):  # an argument, maybe with its help
            name, _, help_text = line.strip().partition("  ")
            current = name
            entries[current] = help_text.strip()
        elif current is not None:  # its help, continued
            entries[current] = (entries[current] + " " + line.strip()).strip()
    return entries


def test_every_argument_of_every_subcommand_has_a_help_text_and_true_defaults(tmp_path: Path) -> None:
    env = {**os.environ, "COLUMNS": "200", "DKRON_EXEC_STORE": str(tmp_path / "from-the-variable.db")}
    top = cli("--help", env=env)
    assert top.returncode == 0
    commands = top.stdout.split("{", 1)[1].split("}", 1)[0].split(",")
    assert {"run", "executions", "validate", "plugins", "doctor", "serve", "celery-queues"} <= set(commands)
    for command in commands:
        r = cli(command, "--help", env=env)
        assert r.returncode == 0, (command, r.stderr)
        entries = _help_entries(r.stdout)
        assert entries, command
        for argument, text in entries.items():
            assert text, f"{command} {argument} has no help text"
        for argument, text in entries.items():
            if argument.startswith("--store"):
                # The variable wins over the default file: the help says so, and shows the file.
                assert "$DKRON_EXEC_STORE, else " in text and "from-the-variable" not in text, (command, text)
    executions = _help_entries(cli("executions", "--help", env=env).stdout)
    assert {"job_name", "--json"} <= set(executions)


def test_a_schedule_that_matches_no_date_is_not_called_on_demand(tmp_path: Path) -> None:
    never = write_job(tmp_path, {"name": "feb30", "command": "true", "schedule": "0 0 0 30 2 *"})
    r = cli("validate", never)
    assert r.returncode == 0
    assert "next run: never (this schedule matches no date in the next five years)" in r.stdout
    assert "on demand" not in r.stdout
    assert "warning: schedule '0 0 0 30 2 *': this schedule matches no date" in r.stderr
    doc = json.loads(cli("validate", "--json", never).stdout)
    assert doc["ok"] is True and doc["next_run"] is None
    assert doc["never_because"] == "this schedule matches no date in the next five years"
    assert doc["warnings"] and "never runs" in doc["warnings"][0]

    manual = write_job(tmp_path, {"name": "m", "command": "true", "schedule": "@manually"})
    r = cli("validate", manual)
    assert "next run: never (on demand only: @manually)" in r.stdout and r.stderr == ""
    assert json.loads(cli("validate", "--json", manual).stdout)["warnings"] == []


def test_a_reader_that_leaves_early_is_no_error(tmp_path: Path) -> None:
    # `dkron-exec run job.json | head -1`: the reader is gone before the summary is written.
    doc = {"name": "piped", "executor": "shell", "executor_config": {"command": "sleep 0.5"}}
    job = write_job(tmp_path, doc)
    proc = subprocess.Popen(
        [sys.executable, "-m", "dkron_exec.cli", "run", job, "--store", str(tmp_path / "s.db")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    stderr = proc.stderr.read()
    assert proc.wait(timeout=60) == 141
    assert "Broken pipe" not in stderr and "Traceback" not in stderr, stderr
    stored = cli("executions", "piped", "--store", str(tmp_path / "s.db"), "--json")
    assert json.loads(stored.stdout)[0]["success"] is True
