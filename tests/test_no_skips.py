"""scripts/no_skips.py, which makes command 2 fail on any skipped test, on a real pytest run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "no_skips.py"


def _pytest(tmp_path: Path, source: str) -> Path:
    (tmp_path / "test_subject.py").write_text(source)
    report = tmp_path / "junit.xml"
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}", "."],
        cwd=tmp_path,
        capture_output=True,
    )
    return report


def _check(report: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), str(report)], capture_output=True, text=True)


def test_a_run_that_skipped_fails_and_names_each_skip(tmp_path: Path) -> None:
    report = _pytest(
        tmp_path,
        "import pytest\n"
        "def test_ran(): pass\n"
        "def test_no_daemon(): pytest.skip('rsyslogd is not installed')\n",
    )
    result = _check(report)
    assert result.returncode == 1
    assert "test_no_daemon: rsyslogd is not installed" in result.stderr
    assert "test_ran" not in result.stderr


def test_a_module_skipped_at_collection_counts(tmp_path: Path) -> None:
    source = "import pytest\npytest.importorskip('no_such_module_here')\ndef test_x(): pass\n"
    report = _pytest(tmp_path, source)
    result = _check(report)
    assert result.returncode == 1
    assert "no_such_module_here" in result.stderr


def test_a_run_without_skips_passes(tmp_path: Path) -> None:
    result = _check(_pytest(tmp_path, "def test_ran(): pass\n"))
    assert result.returncode == 0, result.stderr
