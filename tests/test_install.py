"""Install instructions that work as written (issue 16): dkron-exec is not on the package index, so
no doc or message names it as an installable; the extras they name exist; a missing extra is reported
with a command that installs it; the example plugins build without leaving files in the tree."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import orjson

import dkron_exec
from dkron_exec.install_hints import POSTGRES_REQUIREMENT, SERVE_REQUIREMENT

ROOT = Path(__file__).resolve().parent.parent
# What a user reads for install instructions: the docs, the examples, the package's messages and
# docstrings. (CHANGELOG.md's released entries record what was, and are left as they were.)
DOC_FILES = [
    ROOT / "README.md",
    ROOT / "benches" / "README.md",
    *sorted((ROOT / "docs").rglob("*.md")),
    *sorted((ROOT / "examples").rglob("*.md")),
    *sorted((ROOT / "examples").rglob("*.py")),
    *sorted((ROOT / "examples").rglob("*.toml")),
    *sorted((ROOT / "python" / "dkron_exec").rglob("*.py")),
    ROOT / "pyproject.toml",
]
PIP_INSTALL = re.compile(r"pip install ([^`\n&|;#]*)")  # its arguments, up to the next command


def extras() -> dict[str, list[str]]:
    text = (ROOT / "pyproject.toml").read_text()
    table = text.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    found: dict[str, list[str]] = {}
    for name, body in re.findall(r"^(\w[\w-]*) = \[(.*?)\]$", table, re.M | re.S):
        found[name] = re.findall(r'"([^"]+)"', body)
    return found


def test_no_doc_or_message_installs_dkron_exec_from_the_index() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path in DOC_FILES
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if "dkron-exec[" in line or re.search(r"pip install[^`\n]*\sdkron[-_]exec(\s|$|['\"`])", line)
    ]
    assert offenders == []


def test_every_install_instruction_names_what_exists() -> None:
    # An extra of this project ('.[serve]') must be one pyproject.toml defines; any other package
    # named must be one the dev environment installed from the index (so the name is real there).
    known = extras()
    assert known["serve"] == [SERVE_REQUIREMENT] and known["apscheduler"] == [SERVE_REQUIREMENT]
    assert known["postgres"] == [POSTGRES_REQUIREMENT]
    seen = 0
    for path in DOC_FILES:
        for match in PIP_INSTALL.finditer(path.read_text()):
            for arg in match.group(1).split():
                arg = arg.rstrip(".,;)").strip("'\"`;,()")
                # Options, paths and placeholders of f-strings are not package names.
                if not arg or arg.startswith(("-", "/", "$", ":", "dist/", "./", "<")) or "{" in arg:
                    continue
                seen += 1
                local = re.fullmatch(r"\.\[([\w,-]+)\]", arg)
                if local:
                    missing = set(local.group(1).split(",")) - set(known)
                    assert not missing, f"{path.relative_to(ROOT)}: {arg} names no extra of pyproject.toml"
                    continue
                if arg == ".":
                    continue
                requirement = re.match(r"([A-Za-z0-9_.-]+)(\[([\w,-]+)\])?", arg)
                assert requirement, f"{path.relative_to(ROOT)}: cannot read {arg!r} in {match.group(0)!r}"
                name, rest = requirement.group(1, 3)
                try:
                    dist = distribution(name)
                except PackageNotFoundError:
                    where = path.relative_to(ROOT)
                    raise AssertionError(f"{where}: {arg!r}: {name} is not installed") from None
                if rest:
                    provided = set(dist.metadata.get_all("Provides-Extra") or [])
                    assert set(rest.split(",")) <= provided, f"{path.relative_to(ROOT)}: {arg!r}"
    assert seen >= 5


def _python_without_extras(tmp_path: Path) -> Path:
    """A venv of the same Python that can import dkron_exec (a copy) and orjson, and nothing else."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = tmp_path / "site"
    shutil.copytree(Path(dkron_exec.__file__).parent, site / "dkron_exec")
    shutil.copytree(Path(orjson.__file__).parent, site / "orjson")
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout.strip()
    Path(purelib, "dkron_exec_copy.pth").write_text(f"{site}\n")
    return python


def test_serve_without_apscheduler_names_a_command_that_installs_it(tmp_path: Path) -> None:
    python = _python_without_extras(tmp_path)
    probe = subprocess.run(
        [str(python), "-c", "import importlib.util as u; print(u.find_spec('apscheduler') is None)"],
        capture_output=True, text=True, timeout=60,
    )
    assert probe.stdout.strip() == "True", probe  # the premise: this Python has no APScheduler
    (tmp_path / "jobs").mkdir()
    r = subprocess.run(
        [str(python), "-m", "dkron_exec", "serve", str(tmp_path / "jobs")],
        capture_output=True, text=True, timeout=60,
    )
    assert r.returncode != 0
    assert "dkron-exec[" not in r.stderr
    assert f"{python} -m pip install 'apscheduler>=3.10,<4'" in r.stderr, r.stderr
    assert ".venv/bin/pip install '.[serve]'" in r.stderr
    assert "Traceback" not in r.stderr


def test_postgres_store_without_psycopg_names_a_command_that_installs_it(tmp_path: Path) -> None:
    python = _python_without_extras(tmp_path)
    r = subprocess.run(
        [str(python), "-m", "dkron_exec", "executions", "x", "--store", "postgresql://u:secret@127.0.0.1:1/d"],
        capture_output=True, text=True, timeout=60,
    )
    assert r.returncode != 0
    assert "dkron-exec[" not in r.stderr and "secret" not in r.stderr
    assert f"{python} -m pip install 'psycopg[binary]>=3.1'" in r.stderr, r.stderr
    assert ".venv/bin/pip install '.[postgres]'" in r.stderr


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def test_installing_the_example_plugins_leaves_the_source_tree_clean(tmp_path: Path) -> None:
    # As the README says, from the repository itself (not a copy): nothing may be left beside it.
    plugins = ROOT / "examples" / "plugins"
    before = _files(plugins)
    git_status = ["git", "-C", str(ROOT), "status", "--porcelain", "--", "examples/"]
    status_before = subprocess.run(git_status, capture_output=True, text=True, timeout=60, check=True).stdout
    prefix = tmp_path / "prefix"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
    command = [*pip, "--prefix", str(prefix), str(plugins)]
    r = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (prefix / "bin" / "dkron-processor-tag").is_file()
    assert _files(plugins) == before
    status = subprocess.run(git_status, capture_output=True, text=True, timeout=60, check=True).stdout
    assert status == status_before  # in a fresh clone, both are empty
