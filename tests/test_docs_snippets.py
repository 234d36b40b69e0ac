"""Every runnable snippet of README.md and docs/*.md runs as shown (see tests/doc_snippets.py).

Each snippet (or group of ``continues`` snippets) runs in a fresh copy of the repository's files,
the folder the text assumes, where ``.venv`` is a venv layered over the one running the tests (so
``.venv/bin/...`` works as written and nothing is installed into the real one). The venv is not on
PATH: a snippet must say which python it means. A snippet fails when it exits non-zero, when it
leaves a file the repository does not ignore (``store.db`` in the root), changes a tracked file, leaves
a process running, stores a failed execution in a store it wrote, or changes the checkout itself.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import shutil
import signal
import site
import sqlite3
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from doc_snippets import ROOT, Snippet, all_snippets, console_commands, groups

SNIPPETS = all_snippets()
GROUPS = groups(SNIPPETS)
TAIL = 3000


def _strict() -> bool:
    """In CI (scripts/test.sh) a missing tool fails the snippet; elsewhere it skips it."""
    return bool(os.environ.get("CI")) or os.environ.get("DKRON_EXEC_REQUIRE_GO") == "1"


def _git_status() -> str:
    return subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def _tracked_files() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    return [p for p in out.decode().split("\0") if p and (ROOT / p).is_file()]


def _overlay_venv(target: Path) -> None:
    """A venv whose site-packages reach the test venv's: its python, pip and console scripts are
    the real ones, and what a snippet installs lands in the overlay."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(target)], check=True)
    purelib = subprocess.run(
        [str(target / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    base = [p for p in site.getsitepackages() if Path(p).is_dir()]
    Path(purelib, "_dkron_exec_base.pth").write_text(
        "".join(f"import site; site.addsitedir({p!r})\n" for p in base)
    )
    base_bin = Path(sys.prefix) / "bin"
    for script in sorted(base_bin.iterdir()):
        dest = target / "bin" / script.name
        if dest.exists() or not script.is_file():
            continue
        try:
            first = script.open("rb").readline()
        except OSError:
            continue
        if first.startswith(b"#!") and b"python" in first:
            dest.write_text(f'#!/bin/sh\nexec "$(dirname "$0")/python" {script} "$@"\n')
            dest.chmod(0o755)


def _copy_repository(dest: Path) -> dict[str, tuple[int, int]]:
    seen: dict[str, tuple[int, int]] = {}
    for rel in _tracked_files():
        src, out = ROOT / rel, dest / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, out, follow_symlinks=False)
        st = out.lstat()
        seen[rel] = (st.st_size, st.st_mtime_ns)
    core = next((ROOT / "python" / "dkron_exec").glob("_core*.so"), None)
    if core is not None:  # the built extension (gitignored), for PYTHONPATH=<copy>/python users
        shutil.copy2(core, dest / "python" / "dkron_exec" / core.name)
    return seen


def _left_files(copy: Path, before: dict[str, tuple[int, int]]) -> list[str]:
    """Files a reader's clone would show in `git status`: new and not ignored, or tracked and changed."""
    new: list[str] = []
    for path in copy.rglob("*"):
        if path.is_dir() and not path.is_symlink():
            continue
        rel = str(path.relative_to(copy))
        if rel == ".venv" or rel.startswith(".venv/"):
            continue
        if rel in before:
            st = path.lstat()
            if (st.st_size, st.st_mtime_ns) != before[rel]:
                new.append(f"changed: {rel}")
        else:
            new.append(rel)
    untracked = [p for p in new if not p.startswith("changed: ")]
    ignored: set[str] = set()
    if untracked:
        result = subprocess.run(
            ["git", "check-ignore", "--no-index", "--stdin"],
            cwd=ROOT,
            input="\n".join(untracked),
            capture_output=True,
            text=True,
        )
        ignored = set(result.stdout.splitlines())
    return [p for p in new if p not in ignored]


def _marked_processes(marker: str) -> list[str]:
    found = []
    needle = f"DKRON_EXEC_SNIPPET={marker}".encode()
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes()
            if needle in env.split(b"\0"):
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                found.append(f"{pid} {cmd.strip()}")
        except OSError:
            continue
    return found


def _kill_marked(marker: str) -> list[str]:
    """Waits a moment for the snippet's processes to end, then kills those left; returns them."""
    deadline = time.monotonic() + 3
    while (left := _marked_processes(marker)) and time.monotonic() < deadline:
        time.sleep(0.1)
    for entry in left:
        with contextlib.suppress(OSError):
            os.kill(int(entry.split()[0]), signal.SIGKILL)
    return left


def _failed_executions(roots: list[Path]) -> list[str]:
    """Failed executions in the dkron_exec SQLite stores the snippet wrote."""
    failures = []
    for root in roots:
        for db in root.rglob("*.db"):
            if ".venv" in db.parts:
                continue
            try:
                conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
                with conn:
                    rows = conn.execute("SELECT job_name, success, error FROM executions").fetchall()
            except sqlite3.Error:
                continue  # not a dkron_exec store
            finally:
                conn.close()
            failures += [
                f"{db.name}: job {job!r} failed: {error}" for job, success, error in rows if not success
            ]
    return failures


def _script(snippet: Snippet, work: Path, index: int) -> list[str]:
    if snippet.language == "python":
        path = work / f"snippet{index}.py"
        # Blank lines first, so a traceback's line number is the Markdown file's line.
        path.write_text("\n" * snippet.line + snippet.text)
        return [".venv/bin/python", str(path)]
    text = console_commands(snippet.text) if snippet.language == "console" else snippet.text
    path = work / f"snippet{index}.sh"
    path.write_text("\n" * snippet.line + text)
    return ["bash", "-e", "-o", "pipefail", str(path)]


def _id(group: list[Snippet]) -> str:
    return group[0].where + "".join(f"+{s.line}" for s in group[1:])


def test_not_run_snippets_are_few_and_say_why() -> None:
    not_run = [s for s in SNIPPETS if "not-run" in s.options]
    listing = "\n".join(f"{s.where}: {s.options['reason']}" for s in not_run)
    print(f"\nsnippets not run ({len(not_run)}):\n{listing}")
    assert len(not_run) <= 6, f"too many snippets are not run:\n{listing}"


@pytest.mark.parametrize("snippet", [s for s in SNIPPETS if "excerpt-of" in s.options], ids=lambda s: s.where)
def test_excerpt_matches_its_file(snippet: Snippet) -> None:
    """A snippet that shows a shipped file holds that file's lines, in order."""
    source = (ROOT / snippet.options["excerpt-of"]).read_text().splitlines()
    lines = iter(line.rstrip() for line in source)
    for n, line in enumerate(snippet.text.splitlines()):
        if line.strip() and line.rstrip() not in lines:
            pytest.fail(
                f"{snippet.path}:{snippet.line + 1 + n}: not in {snippet.options['excerpt-of']}"
                f" (in order): {line!r}"
            )


@pytest.mark.parametrize("snippet", [s for s in SNIPPETS if s.language == "python"], ids=lambda s: s.where)
def test_python_snippet_does_something(snippet: Snippet) -> None:
    """A Python snippet of only imports and definitions runs nothing: it must be an excerpt of a
    shipped file (``excerpt-of=``), which is what the tests run."""
    if "excerpt-of" in snippet.options or "not-run" in snippet.options:
        return
    tree = ast.parse(snippet.text)
    definitions = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    if all(isinstance(node, definitions) for node in tree.body):
        pytest.fail(
            f"{snippet.where}: only imports and definitions, so running it shows nothing; "
            "show a shipped file (<!-- snippet: excerpt-of=PATH -->) or make it run something"
        )


@pytest.mark.parametrize("snippet", [s for s in SNIPPETS if s.language == "json"], ids=lambda s: s.where)
def test_job_documents_validate(snippet: Snippet, tmp_path: Path) -> None:
    try:
        document = json.loads(snippet.text)
    except ValueError:
        return  # a fragment or a protocol frame with "...": text
    if not isinstance(document, dict) or "name" not in document or "type" in document:
        return
    path = tmp_path / "job.json"
    path.write_text(snippet.text)
    result = subprocess.run(
        [sys.executable, "-m", "dkron_exec", "validate", str(path)], capture_output=True, text=True
    )
    assert result.returncode == 0, (
        f"{snippet.where}: dkron-exec validate refused it:\n{result.stdout}{result.stderr}"
    )


@pytest.mark.parametrize("group", GROUPS, ids=_id)
def test_snippet_runs(group: list[Snippet]) -> None:
    first = group[0]
    for s in group:
        for tool in filter(None, s.options.get("needs", "").split(",")):
            if shutil.which(tool) is None:
                message = f"{s.where} needs {tool!r}, which is not on PATH (scripts/install-system-deps.sh)"
                if _strict():
                    pytest.fail(message)
                pytest.skip(message)
    # Under /tmp and world-traversable: a snippet may run a server as an unprivileged user.
    scratch = Path(tempfile.mkdtemp(prefix="dkron-exec-snippet-"))
    scratch.chmod(0o755)
    try:
        copy, work, tmp = scratch / "repo", scratch / "work", scratch / "tmp"
        for d in (copy, work, tmp):
            d.mkdir()
        tmp.chmod(0o1777 | stat.S_IRWXU)
        before = _copy_repository(copy)
        _overlay_venv(copy / ".venv")
        marker = f"{os.getpid()}-{first.line}-{time.monotonic_ns()}"
        venv_bin = str(Path(sys.prefix) / "bin")
        env = {
            k: v for k, v in os.environ.items() if not k.startswith("DKRON_EXEC_STORE") and k != "VIRTUAL_ENV"
        }
        env.update(
            PATH=os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin),
            XDG_DATA_HOME=str(scratch / "data"),
            XDG_STATE_HOME=str(scratch / "state"),
            TMPDIR=str(tmp),
            DKRON_EXEC_SNIPPET=marker,
        )
        checkout_before = _git_status()
        for index, snippet in enumerate(group):
            timeout = float(snippet.options.get("timeout") or 60)
            command = _script(snippet, work, index)
            try:
                result = subprocess.run(
                    command,
                    cwd=copy,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=timeout,
                    start_new_session=True,
                )
            except subprocess.TimeoutExpired as exc:
                _kill_marked(marker)
                raw = exc.stdout or b""
                out = (raw.decode(errors="replace") if isinstance(raw, bytes) else raw)[-TAIL:]
                pytest.fail(
                    f"{snippet.where}: still running after {timeout:.0f} s "
                    f"(annotate timeout=N if it must take longer); output tail:\n{out}"
                )
            left = _kill_marked(marker)
            assert result.returncode == 0, (
                f"{snippet.where}: exited with {result.returncode}"
                f"\n--- stderr (tail)\n{result.stderr[-TAIL:]}"
                f"\n--- stdout (tail)\n{result.stdout[-TAIL:]}"
            )
            assert not left, f"{snippet.where}: left processes running (now killed):\n" + "\n".join(left)
        junk = _left_files(copy, before)
        assert not junk, f"{_id(group)}: left files a clone would show in git status: {junk}"
        failures = _failed_executions([copy, scratch / "data"])
        assert not failures, f"{_id(group)}: stored failed executions:\n" + "\n".join(failures)
        assert _git_status() == checkout_before, f"{_id(group)}: changed the checkout ({ROOT})"
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
