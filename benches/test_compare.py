"""``python -m benches.compare`` run as a user runs it: a group that fails does not lose the others'
figures, and the command says at the end which group failed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_a_failed_group_is_reported_and_the_other_groups_figures_are_written(tmp_path: Path) -> None:
    # DKRON_EXEC_GO names the go command; one that does not exist fails the plugin group at its build.
    env = {**os.environ, "DKRON_EXEC_GO": str(tmp_path / "no-such-go")}
    out = tmp_path / "results"
    command = [sys.executable, "-m", "benches.compare", "--only", "files,plugin", "--reps", "1"]
    proc = subprocess.run(
        [*command, "--out", str(out), "--no-charts"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "1 group(s) failed: plugin" in proc.stderr.splitlines()[-1]

    record = json.loads((out / "results.json").read_text())
    [files] = record["figures"]
    assert files["group"] == "files" and files["errors"] == {}
    assert files["medians"]["dkron_exec"] > 0 and files["medians"]["c"] > 0
    assert list(record["failed"]) == ["plugin"]
    assert "no-such-go" in record["failed"]["plugin"] and "DKRON_EXEC_GO" in record["failed"]["plugin"]

    table = (out / "table.md").read_text()
    files_row = next(line for line in table.splitlines() if line.startswith("| files processor"))
    assert "failed" not in files_row and files_row.count("| - ") == 0
    failed_row = next(line for line in table.splitlines() if "group 'plugin' FAILED" in line)
    assert "no-such-go" in failed_row and failed_row.endswith("| **failed** |")
    assert "- plugin: group FAILED" in table
