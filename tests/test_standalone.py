"""The repository stands alone: nothing it tracks reads or names a path outside it.

A user's clone has nothing beside it, so code, tests, benches, scripts and CI that reach for the
folder of reading material kept beside the repository by the people who build dkron_exec (named in
``BESIDE``), or another folder of the machine they were written on, fail there. The README and docs
may not send a user there either. This file is the one that names those paths, to find them.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHECKED = ("python", "rust", "examples", "tests", "benches", "scripts", ".ci", "docs")
CHECKED_FILES = ("pyproject.toml", "README.md", ".gitignore")
BESIDE = "shared"  # the folder of reading material beside the repository
OUTSIDE = re.compile(
    rf"\.\./+{BESIDE}"
    rf"|{BESIDE}/+reference"
    r"|\b(?:ROOT|REPO|REPO_ROOT|HERE)\.parent\b"  # one level above the repository's root
    rf"|\.parent\s*/\s*[\"']{BESIDE}"
    r"|/work/+(?:notes|shared|main|wt)\b"  # the folders of the machine the project is built on
)


def tracked() -> list[Path]:
    """Tracked files, and new ones not yet added (but not ignored ones such as bench-results/)."""
    names = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout.split("\0")  # fmt: skip
    files = [ROOT / n for n in names if n and (n in CHECKED_FILES or n.split("/")[0] in CHECKED)]
    return [p for p in files if p.is_file() and p != Path(__file__).resolve()]  # this file names them


def test_no_tracked_file_reads_or_names_a_path_outside_the_repository() -> None:
    files = tracked()
    assert ROOT / "tests" / "go_plugins.py" in files and ROOT / "benches" / "_go.py" in files
    found = []
    for path in files:
        text = path.read_bytes().decode("utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            if OUTSIDE.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert found == [], "paths outside the repository:\n" + "\n".join(found)


def test_the_pattern_catches_what_it_is_for() -> None:
    # The forms the repository used before it stood alone, and forms that stay inside it.
    outside = [
        f'REFERENCE = REPO.parent / "{BESIDE}/reference/dkron-plugins/plugbench"',
        f'PLUGBENCH = ROOT.parent / "{BESIDE}/reference/dkron-plugins/plugbench/cmd"',
        f"cp -r ../{BESIDE}/x .",
        "see /work/notes/issue.md",
    ]
    inside = ['SOURCE = ROOT / "tests" / "go"', "Path(__file__).resolve().parent.parent", "a shared store"]
    assert [s for s in outside if not OUTSIDE.search(s)] == []
    assert [s for s in inside if OUTSIDE.search(s)] == []
