"""The files processor against real files: naming, forward, safety, atomicity, mode, retention,
the full-output spool, and validation."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from dkron_exec import Execution, Executor, JobError
from dkron_exec._core import prune_log_files, write_log_file
from dkron_exec.chain import run_chain
from dkron_exec.processors import ProcessContext, validate_processor_config
from dkron_exec.processors.files import FilesProcessor, default_log_dir

CTX = ProcessContext(node_name="test-node")


def job(name: str, command: str, **files: Any) -> dict[str, Any]:
    return {
        "name": name,
        "executor": "shell",
        "executor_config": {"command": command, "shell": True},
        "processors": {"files": files},
    }


def execution(job_name: str = "job", started_ns: int = 1_700_000_000_000_000_000, **kw: Any) -> Execution:
    return Execution(
        job_name=job_name,
        started_at=datetime.fromtimestamp(started_ns / 1e9, timezone.utc),
        finished_at=None,
        success=True,
        output=kw.pop("output", b"hello\n"),
        node_name="node",
        key=f"{started_ns}-node",
        **kw,
    )


def listing(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


@pytest.fixture
def umask_077() -> Iterator[None]:
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


# -- naming and forward ----------------------------------------------------------------------------


@pytest.mark.parametrize("forward", [False, "false", None], ids=["bool", "string", "missing"])
def test_forward_false_replaces_the_output_by_the_path(
    executor: Executor, tmp_path: Path, forward: Any
) -> None:
    config: dict[str, Any] = {"log_dir": str(tmp_path)}
    if forward is not None:
        config["forward"] = forward
    e = executor.run(job("hello", "echo hello", **config))
    path = tmp_path / f"{e.key}.log"
    assert e.success and e.processor_errors == []
    assert e.output == str(path).encode()
    assert path.read_bytes() == b"hello\n"
    # The stored record is the processed one.
    assert executor.execution("hello", e.key) == e


@pytest.mark.parametrize("forward", [True, "true", "1", "True"])
def test_forward_true_keeps_the_output(executor: Executor, tmp_path: Path, forward: Any) -> None:
    e = executor.run(job("hello", "echo hello", log_dir=str(tmp_path), forward=forward))
    assert e.output == b"hello\n"
    assert (tmp_path / f"{e.key}.log").read_bytes() == b"hello\n"


def test_failure_output_is_written_too(executor: Executor, tmp_path: Path) -> None:
    e = executor.run(job("bad", "echo oops; exit 2", log_dir=str(tmp_path), forward=True))
    assert not e.success
    assert (tmp_path / f"{e.key}.log").read_bytes() == b"oops\nexit status 2\n"


def test_per_job_dir_and_missing_dirs_are_created(executor: Executor, tmp_path: Path) -> None:
    log_dir = tmp_path / "a" / "b"
    e = executor.run(job("nightly", "echo x", log_dir=str(log_dir), per_job_dir=True))
    assert e.output == str(log_dir / "nightly" / f"{e.key}.log").encode()
    assert listing(log_dir) == ["nightly", f"nightly/{e.key}.log"]


def test_relative_log_dir_resolves_from_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    out = FilesProcessor().process(execution(), {"log_dir": "logs"}, CTX)
    assert out.output == str(tmp_path / "logs" / "1700000000000000000-node.log").encode()


def test_binary_output_is_written_as_is(tmp_path: Path) -> None:
    data = bytes(range(256)) * 3
    out = FilesProcessor().process(execution(output=data), {"log_dir": str(tmp_path)}, CTX)
    assert Path(os.fsdecode(out.output)).read_bytes() == data


# -- default log_dir ---------------------------------------------------------------------------------


def test_default_log_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DKRON_EXEC_LOG_DIR", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert default_log_dir() == tmp_path / "explicit"
    monkeypatch.delenv("DKRON_EXEC_LOG_DIR")
    assert default_log_dir() == tmp_path / "state" / "dkron-exec" / "logs"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_log_dir() == tmp_path / "home" / ".local" / "state" / "dkron-exec" / "logs"


def test_default_log_dir_is_used_when_none_is_given(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DKRON_EXEC_LOG_DIR", str(tmp_path / "env-logs"))
    out = FilesProcessor().process(execution(), {}, CTX)
    assert out.output == str(tmp_path / "env-logs" / "1700000000000000000-node.log").encode()


# -- path safety -------------------------------------------------------------------------------------

BAD_NAMES = ["..", ".", "../escape", "a/b", "/etc/passwd", "x\0y", ""]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_sink_refuses_job_names_that_leave_log_dir(tmp_path: Path, name: str) -> None:
    log_dir = tmp_path / "logs"
    with pytest.raises(ValueError, match="job name"):
        write_log_file(log_dir, "1-n", b"x", job=name)
    assert listing(tmp_path) == []


@pytest.mark.parametrize("key", BAD_NAMES)
def test_sink_refuses_keys_that_leave_log_dir(tmp_path: Path, key: str) -> None:
    log_dir = tmp_path / "logs"
    with pytest.raises(ValueError, match="execution key"):
        write_log_file(log_dir, key, b"x")
    with pytest.raises(ValueError, match="execution key"):
        write_log_file(log_dir, key, b"x", job="job")
    assert listing(tmp_path) == []


@pytest.mark.parametrize("name", ["../../escape", "sub/dir", "/tmp/abs"])
def test_processor_refuses_an_escaping_job_name_and_chain_records_it(tmp_path: Path, name: str) -> None:
    log_dir = tmp_path / "logs"
    before = execution(job_name=name)
    steps = {"files": {"log_dir": str(log_dir), "per_job_dir": "true"}}
    after = run_chain({"files": FilesProcessor()}, steps, before, CTX)
    assert after.output == before.output
    assert len(after.processor_errors) == 1 and "job name" in after.processor_errors[0]
    assert listing(tmp_path) == []


def test_processor_refuses_an_escaping_key(tmp_path: Path) -> None:
    bad = execution().replace(key="../../etc/cron.d/evil")
    with pytest.raises(ValueError, match="execution key"):
        FilesProcessor().process(bad, {"log_dir": str(tmp_path / "logs")}, CTX)
    assert listing(tmp_path) == []


def test_names_with_dots_inside_are_fine(tmp_path: Path) -> None:
    path = write_log_file(tmp_path, "1-node..x", b"ok", job="..job..")
    assert path == tmp_path / "..job.." / "1-node..x.log"


# -- atomicity and mode -------------------------------------------------------------------------------


def test_no_temporary_file_remains_after_success(tmp_path: Path) -> None:
    proc = FilesProcessor()
    for i in range(50):
        proc.process(
            execution(started_ns=i + 1), {"log_dir": str(tmp_path), "fsync": str(i % 10 == 0).lower()}, CTX
        )
    names = os.listdir(tmp_path)
    assert len(names) == 50
    assert all(n.endswith("-node.log") and not n.startswith(".") for n in names)


def test_rewriting_a_key_replaces_the_whole_file(tmp_path: Path) -> None:
    long = execution(output=b"x" * 10_000)
    FilesProcessor().process(long, {"log_dir": str(tmp_path)}, CTX)
    FilesProcessor().process(long.replace(output=b"short"), {"log_dir": str(tmp_path)}, CTX)
    assert (tmp_path / f"{long.key}.log").read_bytes() == b"short"
    assert os.listdir(tmp_path) == [f"{long.key}.log"]


def test_mode_is_0644_whatever_the_umask(tmp_path: Path, umask_077: None) -> None:
    out = FilesProcessor().process(execution(), {"log_dir": str(tmp_path), "per_job_dir": "true"}, CTX)
    mode = stat.S_IMODE(os.stat(os.fsdecode(out.output)).st_mode)
    assert mode == 0o644


def test_a_failed_copy_leaves_no_file(tmp_path: Path) -> None:
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    # A directory as the spool: it opens, then reading fails once the temporary file exists.
    ctx = ProcessContext(node_name="n", full_output=tmp_path)
    with pytest.raises(OSError) as info:
        FilesProcessor().process(execution(), {"log_dir": str(log_dir)}, ctx)
    assert info.value.errno == errno.EISDIR
    assert os.listdir(log_dir) == []


FILE_TOO_LARGE = """
import os, resource, signal, sys
from datetime import datetime, timezone
from dkron_exec import Execution
from dkron_exec.processors import ProcessContext
from dkron_exec.processors.files import FilesProcessor

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
e = Execution(job_name="big", started_at=datetime.now(timezone.utc), finished_at=None, success=True,
              output=b"x" * 100_000, key="1-node")
try:
    FilesProcessor().process(e, {"log_dir": sys.argv[1]}, ProcessContext(node_name="n"))
except OSError as exc:
    print(exc.errno, exc)
"""


def test_a_write_that_runs_out_of_space_raises_and_leaves_no_file(tmp_path: Path) -> None:
    # RLIMIT_FSIZE makes write(2) fail half-way (EFBIG), as a full disk would (ENOSPC).
    log_dir = tmp_path / "logs"
    r = subprocess.run(
        [sys.executable, "-c", FILE_TOO_LARGE, str(log_dir)], capture_output=True, text=True, check=True
    )
    assert r.stdout.startswith(f"{errno.EFBIG} "), r.stdout + r.stderr
    assert "cannot write" in r.stdout
    assert os.listdir(log_dir) == []


def test_a_failed_write_is_recorded_and_the_execution_still_stored(
    executor: Executor, tmp_path: Path
) -> None:
    # The per-job directory is taken by a regular file: the write must fail, at run time.
    (tmp_path / "blocked").write_text("not a directory")
    e = executor.run(job("blocked", "echo keep me", log_dir=str(tmp_path), per_job_dir=True))
    assert e.success
    assert e.output == b"keep me\n"  # the path is never claimed
    assert len(e.processor_errors) == 1 and e.processor_errors[0].startswith("files: ")
    assert executor.execution("blocked", e.key) == e


# -- retention ---------------------------------------------------------------------------------------


def test_keep_prunes_the_oldest_files_of_the_job(tmp_path: Path) -> None:
    proc = FilesProcessor()
    config = {"log_dir": str(tmp_path), "per_job_dir": "true", "keep": "3"}
    # Processed out of order: the start time in the key decides what is newest.
    for ns in [5, 1, 9, 3, 7]:
        proc.process(execution(started_ns=ns * 1000), config, CTX)
    proc.process(execution(job_name="other", started_ns=1), config, CTX)
    assert listing(tmp_path / "job") == ["5000-node.log", "7000-node.log", "9000-node.log"]
    assert listing(tmp_path / "other") == ["1-node.log"]


def test_keep_through_the_executor(executor: Executor, tmp_path: Path) -> None:
    keys = [
        executor.run(job("ret", f"echo {i}", log_dir=str(tmp_path), per_job_dir=True, keep=2)).key
        for i in range(4)
    ]
    assert sorted(os.listdir(tmp_path / "ret")) == sorted(f"{k}.log" for k in keys[-2:])


def test_prune_ignores_other_files(tmp_path: Path) -> None:
    for name in ["1-n.log", "2-n.log", "3-n.log", ".3-n.log.9.0.tmp", "README"]:
        (tmp_path / name).write_text(name)
    assert prune_log_files(tmp_path, 1) == 2
    assert sorted(os.listdir(tmp_path)) == [".3-n.log.9.0.tmp", "3-n.log", "README"]


# -- full output ---------------------------------------------------------------------------------


@pytest.fixture
def spool(tmp_path: Path) -> tuple[Path, bytes]:
    data = os.urandom(1 << 16) * 48  # 3 MiB, more than any in-memory cap
    path = tmp_path / "spool"
    path.write_bytes(data)
    return path, data


def test_full_output_is_copied_from_the_spool(tmp_path: Path, spool: tuple[Path, bytes]) -> None:
    path, data = spool
    ctx = ProcessContext(node_name="n", full_output=path)
    tail = execution(output=data[-256_000:], output_truncated=True, output_size=len(data))
    out = FilesProcessor().process(tail, {"log_dir": str(tmp_path / "logs")}, ctx)
    assert Path(os.fsdecode(out.output)).read_bytes() == data
    assert path.read_bytes() == data  # the spool is left to its owner


def test_max_size_caps_the_file(tmp_path: Path, spool: tuple[Path, bytes]) -> None:
    path, data = spool
    ctx = ProcessContext(node_name="n", full_output=path)
    out = FilesProcessor().process(execution(), {"log_dir": str(tmp_path / "l"), "max_size": "1MB"}, ctx)
    assert Path(os.fsdecode(out.output)).read_bytes() == data[: 1 << 20]
    small = FilesProcessor().process(
        execution(output=b"0123456789"), {"log_dir": str(tmp_path), "max_size": "4"}, CTX
    )
    assert Path(os.fsdecode(small.output)).read_bytes() == b"0123"


def test_full_output_off_uses_the_kept_output(tmp_path: Path, spool: tuple[Path, bytes]) -> None:
    path, _ = spool
    ctx = ProcessContext(node_name="n", full_output=path)
    config = {"log_dir": str(tmp_path / "logs"), "full_output": "false"}
    out = FilesProcessor().process(execution(output=b"tail only"), config, ctx)
    assert Path(os.fsdecode(out.output)).read_bytes() == b"tail only"


def test_spool_limit() -> None:
    assert FilesProcessor.spool_limit({}) == 1 << 30
    assert FilesProcessor.spool_limit({"max_size": "10MB"}) == 10 << 20
    assert FilesProcessor.spool_limit({"max_size": "2048"}) == 2048
    assert FilesProcessor.spool_limit({"full_output": "false"}) is None
    with pytest.raises(JobError):
        FilesProcessor.spool_limit({"max_size": "huge"})


# -- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("log_dir", "logs/../../etc"),
        ("log_dir", "/var/log/../tmp"),
        ("log_dir", ""),
        ("log_dir", "a\0b"),
        ("keep", "0"),
        ("keep", "-1"),
        ("keep", "three"),
        ("keep", "1.5"),
        ("max_size", "huge"),
        ("max_size", "0"),
        ("max_size", "-5MB"),
        ("forward", "maybe"),
        ("per_job_dir", "yes"),
        ("full_output", "on"),
        ("fsync", "2"),
    ],
)
def test_bad_config_is_a_job_error(key: str, value: str) -> None:
    config = {"per_job_dir": "true", key: value} if key != "per_job_dir" else {key: value}
    with pytest.raises(JobError) as info:
        validate_processor_config("files", config)
    assert info.value.field == f"processors.files.{key}"
    assert repr(value) in str(info.value)


def test_log_dir_that_is_a_regular_file_is_a_job_error(tmp_path: Path) -> None:
    regular = tmp_path / "file"
    regular.write_text("x")
    with pytest.raises(JobError) as info:
        FilesProcessor.validate({"log_dir": str(regular)})
    assert info.value.field == "processors.files.log_dir"
    assert str(regular) in str(info.value) and "not a directory" in str(info.value)


def test_keep_needs_per_job_dir() -> None:
    with pytest.raises(JobError, match="per_job_dir") as info:
        FilesProcessor.validate({"keep": "5"})
    assert info.value.field == "processors.files.keep"
    FilesProcessor.validate({"keep": "5", "per_job_dir": "true"})


def test_good_config_passes(tmp_path: Path) -> None:
    validate_processor_config(
        "files",
        {
            "log_dir": str(tmp_path / "not-yet"),
            "per_job_dir": "true",
            "keep": "10",
            "max_size": "1.5GB",
            "full_output": "true",
            "fsync": "false",
            "forward": "true",
        },
    )
    validate_processor_config("files", {})
