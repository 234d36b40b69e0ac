"""The files processor against real files: naming, forward, safety, atomicity, mode, retention,
the full-output spool, and validation."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dkron_exec import Execution, Executor, Job, JobError
from dkron_exec._core import prune_log_files, write_log_file
from jobs import an_execution, shell_job


def files_job(**files: Any) -> dict[str, Any]:
    """A job whose only processor is files with this config (for ``Executor.process``)."""
    return shell_job("job", "true", processors={"files": files})


def listing(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


def written(e: Execution) -> bytes:
    """The content of the file whose path the files processor put in the output."""
    return Path(os.fsdecode(e.output)).read_bytes()


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
    e = executor.run(shell_job("hello", "echo hello", processors={"files": config}))
    path = tmp_path / f"{e.key}.log"
    assert e.success and e.processor_errors == []
    assert e.output == str(path).encode()
    assert path.read_bytes() == b"hello\n"
    # The stored record is the processed one.
    assert executor.execution("hello", e.key) == e


@pytest.mark.parametrize("forward", [True, "true", "1", "True"])
def test_forward_true_keeps_the_output(executor: Executor, tmp_path: Path, forward: Any) -> None:
    files = {"log_dir": str(tmp_path), "forward": forward}
    e = executor.run(shell_job("hello", "echo hello", processors={"files": files}))
    assert e.output == b"hello\n"
    assert (tmp_path / f"{e.key}.log").read_bytes() == b"hello\n"


def test_failure_output_is_written_too(executor: Executor, tmp_path: Path) -> None:
    files = {"log_dir": str(tmp_path), "forward": True}
    e = executor.run(shell_job("bad", "echo oops; exit 2", processors={"files": files}))
    assert not e.success
    assert (tmp_path / f"{e.key}.log").read_bytes() == b"oops\nexit status 2\n"


def test_per_job_dir_and_missing_dirs_are_created(executor: Executor, tmp_path: Path) -> None:
    log_dir = tmp_path / "a" / "b"
    files = {"log_dir": str(log_dir), "per_job_dir": True}
    e = executor.run(shell_job("nightly", "echo x", processors={"files": files}))
    assert e.output == str(log_dir / "nightly" / f"{e.key}.log").encode()
    assert listing(log_dir) == ["nightly", f"nightly/{e.key}.log"]


def test_relative_log_dir_resolves_from_the_current_directory(
    executor: Executor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    out = executor.process(files_job(log_dir="logs"), an_execution())
    assert out.output == str(tmp_path / "logs" / "1700000000000000000-node.log").encode()


def test_binary_output_is_written_as_is(executor: Executor, tmp_path: Path) -> None:
    data = bytes(range(256)) * 3
    out = executor.process(files_job(log_dir=str(tmp_path)), an_execution(output=data))
    assert written(out) == data
    assert executor.executions("job") == []  # process() stores nothing


# -- default log_dir ---------------------------------------------------------------------------------


def test_default_log_dir(executor: Executor, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def default_file() -> Path:
        out = executor.process(files_job(), an_execution())
        assert out.processor_errors == []
        return Path(os.fsdecode(out.output))

    name = "1700000000000000000-node.log"
    monkeypatch.setenv("DKRON_EXEC_LOG_DIR", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert default_file() == tmp_path / "explicit" / name
    monkeypatch.delenv("DKRON_EXEC_LOG_DIR")
    assert default_file() == tmp_path / "state" / "dkron-exec" / "logs" / name
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_file() == tmp_path / "home" / ".local" / "state" / "dkron-exec" / "logs" / name
    assert default_file().read_bytes() == b"hello\n"


def test_default_log_dir_is_used_when_none_is_given(
    executor: Executor, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DKRON_EXEC_LOG_DIR", str(tmp_path / "env-logs"))
    out = executor.process(files_job(), an_execution())
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
def test_processor_refuses_an_escaping_job_name_and_chain_records_it(
    executor: Executor, tmp_path: Path, name: str
) -> None:
    log_dir = tmp_path / "logs"
    before = an_execution(job_name=name)
    after = executor.process(files_job(log_dir=str(log_dir), per_job_dir="true"), before)
    assert after.output == before.output
    assert len(after.processor_errors) == 1 and "job name" in after.processor_errors[0]
    assert after.processor_errors[0].startswith("files: ")
    assert listing(tmp_path) == []


def test_processor_refuses_an_escaping_key(executor: Executor, tmp_path: Path) -> None:
    bad = an_execution().replace(key="../../etc/cron.d/evil")
    after = executor.process(files_job(log_dir=str(tmp_path / "logs")), bad)
    assert after.output == bad.output
    assert len(after.processor_errors) == 1 and "execution key" in after.processor_errors[0]
    assert listing(tmp_path) == []


def test_a_link_planted_as_the_job_folder_is_refused_and_recorded(executor: Executor, tmp_path: Path) -> None:
    # Issue 9: with per_job_dir, a link at <log_dir>/<job> pointing outside used to be followed.
    log_dir, outside = tmp_path / "logs", tmp_path / "outside"
    log_dir.mkdir()
    outside.mkdir()
    (log_dir / "victim").symlink_to(outside)
    files = {"log_dir": str(log_dir), "per_job_dir": "true"}
    e = executor.run(shell_job("victim", "echo secret", processors={"files": files}))
    assert e.success and e.output == b"secret\n"
    [error] = e.processor_errors
    assert error.startswith("files: refused to write in ") and str(log_dir / "victim") in error, error
    assert "symbolic link" in error
    assert list(outside.iterdir()) == []
    assert executor.execution("victim", e.key) == e


def test_a_link_planted_as_the_log_file_is_replaced_not_written_through(
    executor: Executor, tmp_path: Path
) -> None:
    target = tmp_path / "target"
    target.write_bytes(b"precious")
    execution = an_execution()
    (tmp_path / f"{execution.key}.log").symlink_to(target)
    after = executor.process(files_job(log_dir=str(tmp_path)), execution)
    assert after.processor_errors == []
    assert target.read_bytes() == b"precious"
    assert not Path(os.fsdecode(after.output)).is_symlink()
    assert written(after) == execution.output


def test_names_with_dots_inside_are_fine(tmp_path: Path) -> None:
    path = write_log_file(tmp_path, "1-node..x", b"ok", job="..job..")
    assert path == tmp_path / "..job.." / "1-node..x.log"


# -- atomicity and mode -------------------------------------------------------------------------------


def test_no_temporary_file_remains_after_success(executor: Executor, tmp_path: Path) -> None:
    plain, synced = (Job.from_dict(files_job(log_dir=str(tmp_path), fsync=fsync)) for fsync in (False, True))
    for i in range(50):
        out = executor.process(synced if i % 10 == 0 else plain, an_execution(started_ns=i + 1))
        assert out.processor_errors == []
    names = os.listdir(tmp_path)
    assert len(names) == 50
    assert all(n.endswith("-node.log") and not n.startswith(".") for n in names)


def test_rewriting_a_key_replaces_the_whole_file(executor: Executor, tmp_path: Path) -> None:
    job = Job.from_dict(files_job(log_dir=str(tmp_path)))
    long = an_execution(output=b"x" * 10_000)
    executor.process(job, long)
    executor.process(job, long.replace(output=b"short"))
    assert (tmp_path / f"{long.key}.log").read_bytes() == b"short"
    assert os.listdir(tmp_path) == [f"{long.key}.log"]


def test_mode_is_0644_whatever_the_umask(executor: Executor, tmp_path: Path, umask_077: None) -> None:
    out = executor.process(files_job(log_dir=str(tmp_path), per_job_dir="true"), an_execution())
    mode = stat.S_IMODE(os.stat(os.fsdecode(out.output)).st_mode)
    assert mode == 0o644


def test_a_failed_copy_leaves_no_file(tmp_path: Path) -> None:
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    # A directory as the spool: it opens, then reading fails once the temporary file exists.
    with pytest.raises(OSError) as info:
        write_log_file(log_dir, "1700000000000000000-node", source=tmp_path)
    assert info.value.errno == errno.EISDIR
    assert os.listdir(log_dir) == []


FILE_TOO_LARGE = """
import resource, signal, sys
from dkron_exec import Executor
from jobs import an_execution, shell_job

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
job = shell_job("big", "true", processors={"files": {"log_dir": sys.argv[1]}})
with Executor(":memory:", spool_dir=sys.argv[2]) as ex:
    out = ex.process(job, an_execution("big", output=b"x" * 100_000))
print(out.output.decode())
print(*out.processor_errors, sep="\\n")
"""


def test_a_write_that_runs_out_of_space_is_recorded_and_leaves_no_file(tmp_path: Path) -> None:
    # RLIMIT_FSIZE makes write(2) fail half-way (EFBIG), as a full disk would (ENOSPC).
    log_dir = tmp_path / "logs"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path])}
    r = subprocess.run(
        [sys.executable, "-c", FILE_TOO_LARGE, str(log_dir), str(tmp_path / "spool")],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    kept, error = r.stdout.splitlines()
    assert kept == "x" * 100_000, "the output is not replaced by a path that was never written"
    assert error.startswith("files: ") and "cannot write" in error, r.stdout + r.stderr
    assert f"(os error {errno.EFBIG})" in error, error
    assert os.listdir(log_dir) == []


def test_a_failed_write_is_recorded_and_the_execution_still_stored(
    executor: Executor, tmp_path: Path
) -> None:
    # The per-job directory is taken by a regular file: the write must fail, at run time.
    (tmp_path / "blocked").write_text("not a directory")
    files = {"log_dir": str(tmp_path), "per_job_dir": True}
    e = executor.run(shell_job("blocked", "echo keep me", processors={"files": files}))
    assert e.success
    assert e.output == b"keep me\n"  # the path is never claimed
    assert len(e.processor_errors) == 1 and e.processor_errors[0].startswith("files: ")
    assert executor.execution("blocked", e.key) == e


# -- retention ---------------------------------------------------------------------------------------


def test_keep_prunes_the_oldest_files_of_the_job(executor: Executor, tmp_path: Path) -> None:
    job = Job.from_dict(files_job(log_dir=str(tmp_path), per_job_dir="true", keep="3"))
    # Processed out of order: the start time in the key decides what is newest.
    for ns in [5, 1, 9, 3, 7]:
        executor.process(job, an_execution(started_ns=ns * 1000))
    executor.process(job, an_execution(job_name="other", started_ns=1))
    assert listing(tmp_path / "job") == ["5000-node.log", "7000-node.log", "9000-node.log"]
    assert listing(tmp_path / "other") == ["1-node.log"]


def test_keep_through_the_executor(executor: Executor, tmp_path: Path) -> None:
    files = {"log_dir": str(tmp_path), "per_job_dir": True, "keep": 2}
    keys = [executor.run(shell_job("ret", f"echo {i}", processors={"files": files})).key for i in range(4)]
    assert sorted(os.listdir(tmp_path / "ret")) == sorted(f"{k}.log" for k in keys[-2:])


def test_prune_ignores_other_files(tmp_path: Path) -> None:
    for name in ["1-n.log", "2-n.log", "3-n.log", ".3-n.log.9.0.tmp", "README"]:
        (tmp_path / name).write_text(name)
    assert prune_log_files(tmp_path, 1) == 2
    assert sorted(os.listdir(tmp_path)) == [".3-n.log.9.0.tmp", "3-n.log", "README"]


# -- full output ---------------------------------------------------------------------------------

OUTPUT_LIMIT = 256_000


@pytest.fixture
def big_output(tmp_path: Path) -> tuple[Path, bytes]:
    """A file of 3 MiB, more than any in-memory cap: a job that cats it outgrows its tail."""
    data = os.urandom(1 << 16) * 48
    path = tmp_path / "big-output"
    path.write_bytes(data)
    return path, data


@pytest.fixture
def spooling_executor(tmp_path: Path) -> Iterator[Executor]:
    with Executor(":memory:", node_name="n", output_limit=OUTPUT_LIMIT, spool_dir=tmp_path / "spool") as ex:
        yield ex


def spool_files(spool_dir: Path) -> list[str]:
    """The spool files left in ``spool_dir`` (made on the first spool)."""
    return os.listdir(spool_dir) if spool_dir.exists() else []


def cat_job(path: Path, **files: Any) -> dict[str, Any]:
    return shell_job("cat", f"cat {path}", shell=False, processors={"files": files})


def test_full_output_is_copied_from_the_spool(
    spooling_executor: Executor, tmp_path: Path, big_output: tuple[Path, bytes]
) -> None:
    path, data = big_output
    e = spooling_executor.run(cat_job(path, log_dir=str(tmp_path / "logs")))
    assert e.success and e.output_truncated and e.output_size == len(data)
    assert written(e) == data
    assert (tmp_path / "spool").is_dir()
    assert spool_files(tmp_path / "spool") == []  # the run removed its spool once the chain was done


def test_max_size_caps_the_file(
    spooling_executor: Executor, tmp_path: Path, big_output: tuple[Path, bytes]
) -> None:
    path, data = big_output
    e = spooling_executor.run(cat_job(path, log_dir=str(tmp_path / "l"), max_size="1MB"))
    assert written(e) == data[: 1 << 20]
    small = spooling_executor.process(
        files_job(log_dir=str(tmp_path), max_size="4"), an_execution(output=b"0123456789")
    )
    assert written(small) == b"0123"


def test_full_output_off_uses_the_kept_output(
    spooling_executor: Executor, tmp_path: Path, big_output: tuple[Path, bytes]
) -> None:
    path, data = big_output
    e = spooling_executor.run(cat_job(path, log_dir=str(tmp_path / "logs"), full_output="false"))
    assert e.output_truncated
    assert written(e) == data[-OUTPUT_LIMIT:]  # the tail only
    assert spool_files(tmp_path / "spool") == []


def test_spool_limit() -> None:
    def spool_limit(**files: Any) -> int:
        return int(Job.from_dict(files_job(**files)).plan.spool_limit)

    assert spool_limit() == 1 << 30
    assert spool_limit(max_size="10MB") == 10 << 20
    assert spool_limit(max_size="2048") == 2048
    assert spool_limit(full_output="false") == 0
    with pytest.raises(JobError) as info:
        spool_limit(max_size="huge")
    assert info.value.field == "processors.files.max_size"


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
        ("max", "10"),  # not a key of the files processor
        ("logdir", "/tmp"),
    ],
)
def test_bad_config_is_a_job_error(key: str, value: str) -> None:
    config = {"per_job_dir": "true", key: value} if key != "per_job_dir" else {key: value}
    with pytest.raises(JobError) as info:
        Job.from_dict(files_job(**config))
    assert info.value.field == f"processors.files.{key}"
    assert info.value.value == value
    assert repr(value) in str(info.value)


def test_log_dir_that_is_a_regular_file_is_a_job_error(tmp_path: Path) -> None:
    regular = tmp_path / "file"
    regular.write_text("x")
    with pytest.raises(JobError) as info:
        Job.from_dict(files_job(log_dir=str(regular)))
    assert info.value.field == "processors.files.log_dir"
    assert str(regular) in str(info.value) and "not a directory" in str(info.value)


def test_keep_needs_per_job_dir() -> None:
    with pytest.raises(JobError, match="per_job_dir") as info:
        Job.from_dict(files_job(keep="5"))
    assert info.value.field == "processors.files.keep"
    Job.from_dict(files_job(keep="5", per_job_dir="true"))


def test_good_config_passes(tmp_path: Path) -> None:
    good = {
        "log_dir": str(tmp_path / "not-yet"),
        "per_job_dir": "true",
        "keep": "10",
        "max_size": "1.5GB",
        "full_output": "true",
        "fsync": "false",
        "forward": "true",
    }
    assert Job.from_dict(files_job(**good)).processors == {"files": good}
    Job.from_dict(files_job())
