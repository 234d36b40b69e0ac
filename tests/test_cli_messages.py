"""The dkron-exec command as a newcomer meets it (issue 12): names checked with a way out,
errors that point at the line, summaries that say what each step did. Run as a real process."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

from dkron_exec import Executor

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dkron_exec", *args], capture_output=True, text=True, timeout=60, **kw
    )  # type: ignore[call-overload,no-any-return]


def write_job(tmp_path: Path, doc: dict[str, object], name: str = "job.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(doc, indent=2))
    return str(path)


def test_version_help_and_python_m() -> None:
    version = cli("--version")
    assert version.returncode == 0 and version.stdout.startswith("dkron-exec ")
    assert version.stdout.split()[1][0].isdigit()
    helped = cli("--help")
    assert helped.returncode == 0 and "``" not in helped.stdout and ":mod:" not in helped.stdout
    assert "3 the job succeeded but a processor step failed" in " ".join(helped.stdout.split())
    for command in ("run", "executions", "validate", "plugins", "doctor", "serve", "celery-queues"):
        sub_help = cli(command, "--help").stdout
        assert "``" not in sub_help and ":mod:" not in sub_help, command
    assert "validate" in cli("validate", "--help").stdout and "--json" in cli("validate", "--help").stdout
    assert Executor.execution.__doc__ and "stored execution" in Executor.execution.__doc__
    script = Path(sys.executable).parent / "dkron-exec"
    if script.exists():
        assert subprocess.run([script, "--version"], capture_output=True, text=True).stdout == version.stdout


def test_unknown_names_are_refused_with_a_suggestion(tmp_path: Path) -> None:
    typo = write_job(tmp_path, {"name": "t", "command": "true", "processors": {"fils": {}}})
    r = cli("validate", typo)
    assert r.returncode == 2
    assert "processors.fils: unknown processor 'fils': did you mean 'files'?" in r.stderr
    r = cli("run", typo, "--store", str(tmp_path / "s.db"))
    assert r.returncode == 2 and "did you mean 'files'?" in r.stderr and r.stdout == ""
    shel = write_job(tmp_path, {"name": "t", "executor": "shel", "executor_config": {"command": "true"}})
    r = cli("validate", shel)
    assert r.returncode == 2 and "executor: unknown executor 'shel': did you mean 'shell'?" in r.stderr


def test_validate_json(tmp_path: Path) -> None:
    ok = cli(
        "validate", "--json", write_job(tmp_path, {"name": "v", "command": "true", "schedule": "@every 1h"})
    )
    assert ok.returncode == 0
    doc = json.loads(ok.stdout)
    assert doc["ok"] is True and doc["job"] == "v" and doc["executor"] == "shell" and doc["next_run"]
    bad = cli(
        "validate", "--json", write_job(tmp_path, {"name": "v", "command": "true", "processors": {"lgo": {}}})
    )
    assert bad.returncode == 2
    doc = json.loads(bad.stdout)
    assert doc["ok"] is False and doc["field"] == "processors.lgo" and "did you mean 'log'?" in doc["reason"]


def test_a_plugin_in_a_plugin_dir_is_a_known_name(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    shutil.copy(ROOT / "examples" / "plugins" / "tag_processor.py", plugins / "dkron-processor-tag")
    os.chmod(plugins / "dkron-processor-tag", 0o755)
    job = write_job(tmp_path, {"name": "p", "command": "true", "processors": {"tag": {}}})
    assert cli("validate", job).returncode == 2
    assert cli("validate", job, "--plugin-dir", str(plugins)).returncode == 0


def test_a_refused_plugin_is_named_with_why_and_listed_once(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    path = plugins / "dkron-processor-open"
    shutil.copy(ROOT / "examples" / "plugins" / "tag_processor.py", path)
    os.chmod(path, 0o777)
    job = write_job(tmp_path, {"name": "p", "command": "true", "processors": {"open": {}}})
    r = cli("validate", job, "--plugin-dir", str(plugins))
    assert r.returncode == 2 and f"{path} was refused: the file is world-writable" in r.stderr
    listed = cli("plugins", "--plugin-dir", str(plugins))
    assert listed.returncode == 0
    assert (listed.stdout + listed.stderr).count(str(path)) == 1


def test_unknown_keys_of_builtins_are_refused_naming_the_key(tmp_path: Path) -> None:
    job = write_job(tmp_path, {"name": "k", "command": "true", "processors": {"files": {"forwrd": True}}})
    r = cli("validate", job)
    assert r.returncode == 2 and "processors.files" in r.stderr and "forwrd" in r.stderr


@pytest.mark.parametrize(
    ("schedule", "hint"),
    [("*/5 * * * *", "did you mean '0 */5 * * * *'?"), ("every 5 minutes", "did you mean '@every 5m'?")],
)
def test_schedule_errors_suggest_the_right_form(tmp_path: Path, schedule: str, hint: str) -> None:
    r = cli("validate", write_job(tmp_path, {"name": "s", "command": "true", "schedule": schedule}))
    assert r.returncode == 2 and hint in r.stderr


def test_a_json_error_names_the_file_line_and_column_and_shows_that_line(tmp_path: Path) -> None:
    filler = {f"tag{i}": "x" * 100 for i in range(100)}  # a 12 KB document
    text = json.dumps({"name": "j", "command": "true", "tags": filler}, indent=2)
    broken = text.replace('"tag3": ', '"tag3" ', 1)
    path = tmp_path / "broken.json"
    path.write_text(broken)
    r = cli("validate", str(path))
    assert r.returncode == 2
    line_no = broken.splitlines().index(next(x for x in broken.splitlines() if '"tag3" ' in x)) + 1
    first, shown, caret = r.stderr.rstrip("\n").split("\n")
    assert first.startswith(f"dkron-exec: invalid job: {path}:{line_no}:") and "not valid JSON" in first
    assert shown.strip().startswith('"tag3" "xxx') and "tag4" not in r.stderr
    assert caret.strip() == "^"


def test_a_command_that_cannot_start_has_no_exit_code_shown_as_such(tmp_path: Path) -> None:
    job = write_job(tmp_path, {"name": "n", "command": str(tmp_path / "no-such-program")})
    r = cli("run", job, "--store", str(tmp_path / "s.db"))
    assert r.returncode == 1
    assert "status:     failed (no exit code, attempt 1)" in r.stdout and "None" not in r.stdout


def test_limit_must_be_at_least_one(tmp_path: Path) -> None:
    for bad in ("0", "-1", "x"):
        r = cli("executions", "j", "--limit", bad, "--store", str(tmp_path / "s.db"))
        assert r.returncode == 2 and "--limit" in r.stderr, (bad, r.stderr)


def test_sample_job_summary_says_what_each_step_did(tmp_path: Path) -> None:
    env = {**os.environ, "DKRON_EXEC_LOG_DIR": str(tmp_path / "logs")}
    store = str(tmp_path / "s.db")
    r = cli("run", str(ROOT / "examples" / "sample-job.json"), "--store", store, env=env)
    assert r.returncode == 0, r.stderr
    # The log step printed the output; the summary does not print it again.
    assert r.stdout.count("report from sample-report") == 1
    [log_file] = (tmp_path / "logs").iterdir()
    assert f"  files:     written to {log_file}\n" in r.stdout
    assert "  log:       printed above\n" in r.stdout
    assert r.stdout.startswith(f"store:      {store}\n") or f"\nstore:      {store}\n" in r.stdout
    assert "bytes written by the job" in r.stdout


def test_a_step_that_fails_makes_run_exit_3_and_says_why(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    log_dir = tmp_path / "a-file" / "logs"
    job = write_job(
        tmp_path, {"name": "f", "command": "echo hi", "processors": {"files": {"log_dir": str(log_dir)}}}
    )
    r = cli("run", job, "--store", str(tmp_path / "s.db"))
    assert r.returncode == 3, (r.stdout, r.stderr)
    assert "  files:     failed: " in r.stdout and "status:     success" in r.stdout


def test_unquoted_shell_operators_without_shell_are_refused(tmp_path: Path) -> None:
    r = cli("validate", write_job(tmp_path, {"name": "o", "command": "echo one && echo two"}))
    assert r.returncode == 2
    # The short form names the top-level field; Dkron's form names executor_config.command.
    assert "invalid job: command: " in r.stderr and "'&&'" in r.stderr and '"shell": true' in r.stderr
    dkron_form = {"name": "o", "executor": "shell", "executor_config": {"command": "date > now"}}
    r = cli("validate", write_job(tmp_path, dkron_form))
    assert r.returncode == 2 and "invalid job: executor_config.command: " in r.stderr and "'>'" in r.stderr
    quoted = cli("validate", write_job(tmp_path, {"name": "o", "command": "echo 'one && two'"}))
    assert quoted.returncode == 0, quoted.stderr
    shelled = cli(
        "validate", write_job(tmp_path, {"name": "o", "command": "echo a && echo b", "shell": True})
    )
    assert shelled.returncode == 0, shelled.stderr


def test_ctrl_c_says_the_execution_is_stored_in_the_words_of_every_cancel(tmp_path: Path) -> None:
    store = str(tmp_path / "s.db")
    pidfile = tmp_path / "pid"
    job = write_job(
        tmp_path, {"name": "long", "command": f"echo $$ > {pidfile}; exec sleep 60", "shell": True}
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "dkron_exec", "run", job, "--store", store],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 20
    while not (pidfile.exists() and pidfile.read_text().strip()):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130
    [stored] = json.loads(cli("executions", "long", "--store", store, "--json").stdout)
    assert f"job 'long' was cancelled; its execution is stored as {stored['id']} in {store}" in err
    message = "shell: Job 'long' was cancelled. Job was killed"
    assert stored["error"] == message and stored["output"].splitlines()[-1] == message


def test_the_plugins_package_installs_console_scripts_that_run(tmp_path: Path) -> None:
    # The route the README gives: pip install ./examples/plugins into dkron-exec's environment.
    # Here into a prefix (the test venv stays as it is); the scripts run with this python.
    source = tmp_path / "src"
    shutil.copytree(ROOT / "examples" / "plugins", source)
    prefix = tmp_path / "prefix"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run([*pip, "--prefix", str(prefix), str(source)], check=True, capture_output=True, timeout=300)
    scripts = prefix / "bin"
    tag = scripts / "dkron-processor-tag"
    assert tag.stat().st_mode & stat.S_IXUSR
    assert tag.read_text().splitlines()[0] == f"#!{sys.executable}"
    purelib = sysconfig.get_path("purelib", vars={"base": str(prefix), "platbase": str(prefix)})
    env = {**os.environ, "PYTHONPATH": purelib}
    job = write_job(tmp_path, {"name": "tagged", "command": "echo hi", "processors": {"tag": {"tag": "[t]"}}})
    r = cli("run", job, "--store", str(tmp_path / "s.db"), "--plugin-dir", str(scripts), "--json", env=env)
    assert r.returncode == 0, (r.stdout, r.stderr)
    doc = json.loads(r.stdout)
    assert doc["output"] == "[t] hi\n" and doc["processor_errors"] == []
