"""Bad job documents are JobErrors naming the field, whatever the value; a document that loads
writes back. One test per case the fuzzing of issue 9 found (each raised something else before)."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest

from dkron_exec import Executor
from dkron_exec.document import MAX_DEPTH
from dkron_exec.errors import JobError
from dkron_exec.job import Job

BASE: dict[str, Any] = {"name": "j", "executor": "shell", "executor_config": {"command": "/bin/true"}}


def doc_with(path: str, value: Any) -> dict[str, Any]:
    """BASE with ``value`` at the dotted ``path`` (objects made as needed)."""
    doc = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    where = doc
    for key in parents:
        where = where.setdefault(key, {})
    where[last] = value
    return doc


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = [value]
    return value


def refused(doc: Any) -> JobError:
    with pytest.raises(JobError) as info:
        Job.from_dict(doc)
    str(info.value)  # the message itself can be built
    return info.value


@pytest.mark.parametrize("value", [1e308, "9e20", "1e308"])
def test_a_syslog_timeout_out_of_range_is_a_job_error(value: Any) -> None:
    assert refused(doc_with("processors.syslog.timeout", value)).field == "processors.syslog.timeout"


@pytest.mark.parametrize("path", ["executor_config.x", "some_future_field", "status", "processors.upper.x"])
def test_deep_nesting_is_refused_at_the_limit_anywhere(path: str) -> None:
    # Deep enough to have broken repr() (RecursionError) and orjson (writes 254 levels at most).
    for depth in (300, 5000):
        err = refused(doc_with(path, nested(depth)))
        assert err.field.startswith(path + "[0]"), err.field
        assert f"nested deeper than {MAX_DEPTH} levels" in err.reason
        assert len(str(err)) < 1000


def test_nesting_up_to_the_limit_loads_and_writes_back() -> None:
    # BASE is level 1 and some_future_field's array level 2: MAX_DEPTH - 1 arrays fit in all.
    job = Job.from_dict(doc_with("some_future_field", nested(MAX_DEPTH - 1)))
    assert Job.from_json(job.to_json()) == job
    assert refused(doc_with("some_future_field", nested(MAX_DEPTH))).field.startswith("some_future_field[0]")


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("retries", 10**5000),  # ValueError: more than 4,300 digits
        ("executor_config.x", 10**5000),
        ("executor_config.mem_limit", int("9" * 400)),  # OverflowError before
        ("processors.files.max_size", int("9" * 400)),
        ("some_future_field", 2**64),  # loaded, then to_json() failed
        ("retries", 2**40),
    ],
    ids=[
        "retries-5000-digits",
        "config-5000-digits",
        "mem_limit-400",
        "max_size-400",
        "extra-2**64",
        "retries",
    ],
)
def test_huge_integers_are_job_errors(path: str, value: int) -> None:
    err = refused(doc_with(path, value))
    assert err.field == path
    assert "integer" in str(err)


def test_retries_fit_the_runtime() -> None:
    assert Job.from_dict(doc_with("retries", 2**32 - 1)).retries == 2**32 - 1
    assert refused(doc_with("retries", 2**32)).field == "retries"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("path", ["executor_config.x", "some_future_field", "next"])
def test_non_finite_numbers_are_refused_anywhere(path: str, value: float) -> None:
    assert refused(doc_with(path, value)).field == path


def test_log_dir_of_another_user_is_refused() -> None:
    err = refused(doc_with("processors.files.log_dir", "~nosuchuser/logs"))
    assert err.field == "processors.files.log_dir"


@pytest.mark.parametrize("log_dir", ["/tmp/" + "a" * 256, "/tmp/a" * 700], ids=["long-name", "long-path"])
def test_a_log_dir_too_long_for_linux_is_refused(log_dir: str) -> None:
    assert refused(doc_with("processors.files.log_dir", log_dir)).field == "processors.files.log_dir"


@pytest.mark.parametrize(
    "path",
    [
        "processors.syslog.tag",  # UnicodeEncodeError before
        "executor_config.command",  # passed, then run() raised and nothing was stored
        "executor_config.cwd",
        "executor_config.env",
        "some_future_field",  # loaded, then to_json() failed
        "metadata.team",
        "tags.role",
    ],
)
def test_lone_surrogates_are_refused_anywhere(path: str) -> None:
    err = refused(doc_with(path, "bad \ud800 text"))
    assert err.field == path
    assert "lone surrogate" in err.reason


def test_lone_surrogates_in_keys_and_lists_are_refused() -> None:
    assert refused(doc_with("processors", {"up\udc00": {}})).field == "processors"
    assert refused(doc_with("dependent_jobs", ["ok", "\udfff"])).field == "dependent_jobs[1]"
    assert refused(doc_with("\ud800", 1)).field == "document"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("command", "echo a\x00b"),
        ("cwd", "/tmp/\x00"),
        ("env", "A=\x00"),
        ("env", '{"A": "x\\u0000"}'),
        ("su", "ro\x00ot"),
    ],
)
def test_nul_bytes_a_process_cannot_take_are_refused(key: str, value: str) -> None:
    err = refused(doc_with(f"executor_config.{key}", value))
    assert err.field == f"executor_config.{key}"
    assert "NUL" in err.reason


def test_short_form_keys_are_blamed_where_written() -> None:
    doc = {"name": "j", "command": "/bin/true", "cwd": "/tmp/\ud800"}
    assert refused(doc).field == "cwd"
    assert refused({"name": "j", "command": "echo \x00"}).field == "command"


class _Float(float):
    """Like numpy.float64: a float subclass, which JSON writers refuse."""


@pytest.mark.parametrize("value", [{1, 2}, (1, 2), b"bytes", object(), {1: "int key"}, _Float(1.5)])
def test_values_that_are_not_json_are_refused(value: Any) -> None:
    assert refused(doc_with("some_future_field", value)).field == "some_future_field"


@pytest.mark.parametrize("name", ["", "a/b", "../up", "nul\x00"])
def test_plugin_names_that_cannot_be_file_names_are_refused(name: str) -> None:
    assert refused(doc_with("processors", {name: {}})).field == "processors"
    assert refused({"name": "j", "executor": name, "executor_config": {}}).field == "executor"


def test_keys_that_read_as_path_syntax_are_quoted() -> None:
    assert refused(doc_with("tags", {"a.b": "\ud800"})).field == 'tags["a.b"]'
    assert refused({**BASE, "": float("nan")}).field == '[""]'


def test_a_document_that_loads_writes_back() -> None:
    doc = doc_with("some_future_field", {"deep": nested(40), "big": 2**64 - 1, "small": -(2**63), "f": 1e308})
    doc["processors"] = {"files": {"log_dir": "/tmp/" + "a" * 255}, "upper": {"x": [1, {"y": None}]}}
    job = Job.from_dict(doc)
    written = job.to_json()
    again = Job.from_json(written)
    assert again == job and again.to_json() == written
    assert orjson.loads(written)["some_future_field"] == doc["some_future_field"]


@pytest.mark.parametrize("spec", ["@every 2562047h", "@every 1s", "0 0 0 31 12 *"])
def test_a_next_run_past_year_9999_is_none(spec: str) -> None:
    job = Job.from_dict(
        {"name": "late", "command": "true", "schedule": spec, "starts_at": "9999-12-31T23:59:59Z"}
    )
    after = datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc)
    assert job.next_run(after) is None
    east = timezone(timedelta(hours=14))
    assert job.next_run(datetime(9999, 12, 31, 23, 0, tzinfo=east)) in (
        None,
        datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc),
    )


def test_an_edit_that_breaks_the_rules_is_a_job_error_too() -> None:
    job = Job.from_dict(BASE)
    job.executor_config["command"] = "/bin/echo \ud800"
    with pytest.raises(JobError) as info:
        job.plan  # noqa: B018
    assert info.value.field == "executor_config.command"
    job.executor_config["command"] = "/bin/echo \x00"
    with pytest.raises(JobError, match="NUL"):
        job.plan  # noqa: B018


def test_error_messages_stay_short_whatever_the_value() -> None:
    err = JobError("x", [10**5000, "a" * 10_000, nested(10_000)], "bad")
    assert len(str(err)) < 1000 and "\n" not in str(err)


def test_a_refused_command_runs_nothing_and_a_loaded_one_is_stored(tmp_path: Path) -> None:
    with Executor(tmp_path / "s.db") as executor:
        with pytest.raises(JobError):
            executor.run(Job.from_dict(doc_with("executor_config.command", "/bin/echo \ud800")))
        execution = executor.run(Job.from_dict(doc_with("executor_config.command", "/bin/echo ok")))
        assert executor.executions("j") == [execution]
