"""The job model: Dkron documents in and out, validation, shell config, Go durations and byte sizes."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import pytest

from dkron_exec._core import parse_go_duration
from dkron_exec.errors import JobError
from dkron_exec.job import Job, ShellConfig

UTC = timezone.utc

# A job as Dkron's API returns it (GET /v1/jobs/NAME), every field present, in Dkron's order, plus a field
# from a newer Dkron this library does not know.
FULL_DOC: dict[str, Any] = {
    "id": "backup-db",
    "name": "backup-db",
    "displayname": "Nightly DB backup",
    "timezone": "Europe/Berlin",
    "schedule": "0 30 2 * * *",
    "owner": "Platform Team",
    "owner_email": "platform@example.com",
    "success_count": 12,
    "error_count": 1,
    "last_success": "2024-05-01T00:30:01.123456789Z",
    "last_error": None,
    "disabled": False,
    "tags": {"role": "db:1"},
    "metadata": {"team": "platform"},
    "retries": 2,
    "dependent_jobs": None,
    "parent_job": "",
    "processors": {
        "log": {"forward": "true"},
        "files": {"forward": "false", "log_dir": "/var/log/dkron"},
        "syslog": {},
    },
    "concurrency": "forbid",
    "executor": "shell",
    "executor_config": {
        "command": "/usr/local/bin/backup --full",
        "shell": "false",
        "env": "PGHOST=db,PGPORT=5432",
        "cwd": "/srv",
        "timeout": "1h30m",
        "mem_limit": "512MB",
    },
    "status": "success",
    "next": "2024-05-02T00:30:00Z",
    "ephemeral": False,
    "starts_at": "2024-01-01T00:00:00+01:00",
    "expires_at": "2030-01-01T00:00",
    "some_future_field": {"nested": [1, 2, 3]},
}


def job_doc(**changes: Any) -> dict[str, Any]:
    """A small valid job with some fields changed; a value of ... removes the field."""
    doc: dict[str, Any] = {
        "name": "job-1",
        "schedule": "@every 1m",
        "executor": "shell",
        "executor_config": {"command": "/bin/true"},
    }
    for key, value in changes.items():
        if value is ...:
            doc.pop(key, None)
        else:
            doc[key] = value
    return doc


def shell_doc(**config: Any) -> dict[str, Any]:
    return job_doc(executor_config={"command": "/bin/true", **config})


def with_processors(processors: dict[str, Any]) -> dict[str, Any]:
    return job_doc(executor_config={"command": "/bin/true"}, processors=processors)


# ---------------------------------------------------------------------------------------------- round trips


def test_full_dkron_document_round_trips() -> None:
    doc = copy.deepcopy(FULL_DOC)
    job = Job.from_dict(doc)
    assert doc == FULL_DOC  # the input is not modified
    out = job.to_dict()
    assert out == FULL_DOC
    assert list(out) == list(FULL_DOC)  # same keys, same order
    assert Job.from_json(job.to_json()).to_dict() == FULL_DOC
    assert Job.from_json(orjson.dumps(FULL_DOC).decode()).to_dict() == FULL_DOC


def test_full_document_fields() -> None:
    job = Job.from_dict(FULL_DOC)
    assert job.name == "backup-db" and job.displayname == "Nightly DB backup"
    assert job.retries == 2 and job.forbids_concurrency
    assert job.dependent_jobs == []
    assert list(job.processors) == ["log", "files", "syslog"]
    assert job.read_only["success_count"] == 12 and job.read_only["last_error"] is None
    assert job.extra == {"some_future_field": {"nested": [1, 2, 3]}}
    assert job.starts_at == datetime(2023, 12, 31, 23, 0, tzinfo=UTC)
    assert job.expires_at == datetime(2030, 1, 1, tzinfo=UTC)  # 2006-01-02T15:04 form is UTC
    cfg = job.shell_config()
    assert cfg == ShellConfig(
        command="/usr/local/bin/backup --full",
        shell=False,
        env=[("PGHOST", "db"), ("PGPORT", "5432")],
        cwd="/srv",
        timeout=5400.0,
        mem_limit=512 * 1024 * 1024,
    )


def test_edits_show_in_to_dict() -> None:
    job = Job.from_dict(FULL_DOC)
    job.expires_at = datetime(2031, 6, 1, 12, 0, 0, 250000, tzinfo=UTC)
    job.dependent_jobs = ["child"]
    job.tags = {}
    out = job.to_dict()
    assert out["expires_at"] == "2031-06-01T12:00:00.25Z"
    assert out["starts_at"] == FULL_DOC["starts_at"]  # untouched: written as it was given
    assert out["dependent_jobs"] == ["child"]
    assert out["tags"] == {}
    job.validate()


def test_minimal_document_gets_the_full_form() -> None:
    out = Job.from_dict(job_doc()).to_dict()
    assert out == {
        "name": "job-1",
        "displayname": "",
        "timezone": "",
        "schedule": "@every 1m",
        "owner": "",
        "owner_email": "",
        "disabled": False,
        "tags": {},
        "metadata": {},
        "retries": 0,
        "dependent_jobs": [],
        "parent_job": "",
        "processors": {},
        "concurrency": "",
        "executor": "shell",
        "executor_config": {"command": "/bin/true"},
        "ephemeral": False,
        "starts_at": None,
        "expires_at": None,
    }


def test_non_shell_executor_is_kept_as_is() -> None:
    doc = job_doc(executor="http", executor_config={"method": "GET", "url": "http://x", "timeout": 30})
    job = Job.from_dict(doc)
    assert job.executor_config == {"method": "GET", "url": "http://x", "timeout": "30"}
    with pytest.raises(JobError) as info:
        job.shell_config()
    assert info.value.field == "executor"


# ---------------------------------------------------------------------------------------------- short form


def test_short_form_from_the_seed() -> None:
    seed = {
        "name": "job_name",
        "command": "/bin/true",
        "schedule": "@every 2m",
        "tags": {"role": "web"},
        "processors": {"files": {"forward": True}},
    }
    job = Job.from_dict(seed)
    assert job.executor == "shell"
    assert job.executor_config == {"command": "/bin/true"}
    assert job.processors == {"files": {"forward": "true"}}
    out = job.to_dict()
    assert "command" not in out
    assert out["executor"] == "shell"
    assert out["executor_config"] == {"command": "/bin/true"}
    assert Job.from_dict(out) == job


def test_short_form_takes_the_shell_keys_along() -> None:
    job = Job.from_dict(
        {
            "name": "a",
            "command": "echo hi",
            "shell": True,
            "timeout": "5s",
            "env": ["A=1", "B=2"],
            "cwd": "/tmp",
        }
    )
    assert job.executor_config == {
        "command": "echo hi",
        "shell": "true",
        "timeout": "5s",
        "env": '["A=1","B=2"]',
        "cwd": "/tmp",
    }
    assert job.extra == {}
    cfg = job.shell_config()
    assert cfg.shell is True and cfg.timeout == 5.0 and cfg.env == [("A", "1"), ("B", "2")]


def test_shell_keys_without_a_top_level_command_are_just_extra() -> None:
    job = Job.from_dict(job_doc(shell=True))
    assert job.extra == {"shell": True}
    assert job.to_dict()["shell"] is True


# ---------------------------------------------------------------------------------------------- normalisation


def test_config_values_are_normalised_to_dkron_strings() -> None:
    doc = job_doc(
        executor="http",
        executor_config={
            "s": "text",
            "t": True,
            "f": False,
            "i": 42,
            "neg": -7,
            "x": 1.5,
            "big": 1e20,
            "small": 0.1,
            "list": ["a", 1, None],
            "obj": {"k": "v", "n": {"m": 2}},
        },
        processors={"log": {"forward": False}, "files": {"keep": 10, "per_job_dir": True}},
    )
    job = Job.from_dict(doc)
    assert job.executor_config == {
        "s": "text",
        "t": "true",
        "f": "false",
        "i": "42",
        "neg": "-7",
        "x": "1.5",
        "big": "1e+20",
        "small": "0.1",
        "list": '["a",1,null]',
        "obj": '{"k":"v","n":{"m":2}}',
    }
    assert job.processors == {"log": {"forward": "false"}, "files": {"keep": "10", "per_job_dir": "true"}}
    # Normalised values round-trip unchanged.
    assert Job.from_dict(job.to_dict()).to_dict() == job.to_dict()


def test_float_from_json_text() -> None:
    job = Job.from_json(b'{"name":"a","executor":"x","executor_config":{"n":1.0,"m":2.50}}')
    assert job.executor_config == {"n": "1.0", "m": "2.5"}


@pytest.mark.parametrize(
    "order",
    [["log", "files", "syslog"], ["syslog", "files", "log"], ["files", "log", "syslog", "mail"]],
)
def test_processor_order_is_document_order(order: list[str]) -> None:
    procs = {name: {"forward": "true"} for name in order}
    job = Job.from_json(orjson.dumps(job_doc(processors=procs)))
    assert list(job.processors) == order
    assert list(job.to_dict()["processors"]) == order
    assert list(orjson.loads(job.to_json())["processors"]) == order


def test_nulls_mean_defaults_and_are_written_back() -> None:
    doc = job_doc(tags=None, metadata=None, owner=None, processors=None, retries=None, disabled=None)
    job = Job.from_dict(doc)
    assert job.tags == {} and job.owner == "" and job.retries == 0 and job.disabled is False
    out = job.to_dict()
    for key in ("tags", "metadata", "owner", "processors", "retries", "disabled"):
        assert out[key] is None
    job.tags = {"a": "b"}
    assert job.to_dict()["tags"] == {"a": "b"}


# ---------------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        pytest.param(job_doc(name=...), "name", id="name-missing"),
        pytest.param(job_doc(name=""), "name", id="name-empty"),
        pytest.param(job_doc(name="Backup"), "name", id="name-uppercase"),
        pytest.param(job_doc(name="my job"), "name", id="name-space"),
        pytest.param(job_doc(name="a.b"), "name", id="name-dot"),
        pytest.param(job_doc(name=5), "name", id="name-not-string"),
        pytest.param(job_doc(schedule="0 0 25 * * *"), "schedule", id="schedule-hour"),
        pytest.param(job_doc(schedule="* * * * *"), "schedule", id="schedule-5-fields"),
        pytest.param(job_doc(schedule=5), "schedule", id="schedule-not-string"),
        pytest.param(job_doc(timezone="Mars/Olympus"), "timezone", id="timezone-unknown"),
        pytest.param(job_doc(timezone="../etc/passwd"), "timezone", id="timezone-path"),
        pytest.param(job_doc(concurrency="replace"), "concurrency", id="concurrency"),
        pytest.param(job_doc(retries=-1), "retries", id="retries-negative"),
        pytest.param(job_doc(retries=True), "retries", id="retries-bool"),
        pytest.param(job_doc(retries=1.5), "retries", id="retries-float"),
        pytest.param(job_doc(retries="3"), "retries", id="retries-string"),
        pytest.param(job_doc(parent_job="job-1"), "parent_job", id="parent-self"),
        pytest.param(job_doc(disabled="false"), "disabled", id="disabled-string"),
        pytest.param(job_doc(ephemeral=1), "ephemeral", id="ephemeral-int"),
        pytest.param(job_doc(tags=["a"]), "tags", id="tags-list"),
        pytest.param(job_doc(tags={"role": 1}), "tags.role", id="tags-value"),
        pytest.param(job_doc(metadata={"k": None}), "metadata.k", id="metadata-null-value"),
        pytest.param(job_doc(dependent_jobs="a"), "dependent_jobs", id="dependent-jobs"),
        pytest.param(job_doc(starts_at="yesterday"), "starts_at", id="starts-at-format"),
        pytest.param(job_doc(starts_at=1700000000), "starts_at", id="starts-at-number"),
        pytest.param(job_doc(expires_at="2024-02-30T00:00:00Z"), "expires_at", id="expires-at-date"),
        pytest.param(
            job_doc(starts_at="2025-01-01T00:00:00Z", expires_at="2024-01-01T00:00:00Z"),
            "expires_at",
            id="expires-before-starts",
        ),
        pytest.param(job_doc(processors=["log"]), "processors", id="processors-list"),
        pytest.param(job_doc(processors={"log": "yes"}), "processors.log", id="processor-not-object"),
        pytest.param(job_doc(processors={"log": None}), "processors.log", id="processor-null"),
        pytest.param(
            job_doc(processors={"files": {"forward": None}}),
            "processors.files.forward",
            id="processor-null-value",
        ),
        pytest.param(job_doc(executor_config="cmd"), "executor_config", id="executor-config-string"),
        pytest.param(job_doc(executor_config={"command": None}), "executor_config.command", id="config-null"),
        pytest.param(job_doc(executor=..., executor_config=...), "executor", id="no-executor-no-command"),
        pytest.param(job_doc(executor=3), "executor", id="executor-not-string"),
        pytest.param(shell_doc(command=""), "executor_config.command", id="shell-command-empty"),
        pytest.param(job_doc(executor_config={}), "executor_config.command", id="shell-command-missing"),
        pytest.param(shell_doc(shell="yes"), "executor_config.shell", id="shell-bool"),
        pytest.param(shell_doc(timeout="10"), "executor_config.timeout", id="timeout-no-unit"),
        pytest.param(shell_doc(timeout="-1s"), "executor_config.timeout", id="timeout-negative"),
        pytest.param(shell_doc(mem_limit="0"), "executor_config.mem_limit", id="mem-limit-zero"),
        pytest.param(shell_doc(mem_limit="1PB"), "executor_config.mem_limit", id="mem-limit-unit"),
        pytest.param(shell_doc(su="a:b:c"), "executor_config.su", id="su-format"),
        pytest.param(shell_doc(su=":wheel"), "executor_config.su", id="su-no-user"),
        pytest.param(shell_doc(payload="not base64!"), "executor_config.payload", id="payload"),
        pytest.param(shell_doc(payload="aGk"), "executor_config.payload", id="payload-padding"),
        pytest.param(shell_doc(env="NOEQUALS"), "executor_config.env", id="env-comma-form"),
        pytest.param(shell_doc(env="=v"), "executor_config.env", id="env-empty-key"),
        pytest.param(shell_doc(env='["A=1", 2]'), "executor_config.env", id="env-json-list"),
        pytest.param(shell_doc(env="[broken"), "executor_config.env", id="env-bad-json"),
        pytest.param(shell_doc(env={"A": None}), "executor_config.env.A", id="env-object-null"),
        pytest.param(shell_doc(x=float("nan")), "executor_config.x", id="config-nan"),
        pytest.param(shell_doc(x=object()), "executor_config.x", id="config-object"),
        pytest.param({"name": "a", "command": "true", "timeout": "soon"}, "timeout", id="short-form-timeout"),
        pytest.param({"name": "a", "command": ""}, "command", id="short-form-empty-command"),
        pytest.param({"name": "a", "command": "x", "executor": "http"}, "command", id="short-form-executor"),
        pytest.param(
            {"name": "a", "command": "x", "executor_config": {"command": "y"}},
            "command",
            id="short-form-twice",
        ),
    ],
)
def test_bad_documents(doc: dict[str, Any], field: str) -> None:
    with pytest.raises(JobError) as info:
        Job.from_dict(doc)
    assert info.value.field == field, str(info.value)
    assert info.value.reason
    assert str(info.value).startswith(f"{field}: ")


def test_schedule_error_names_the_field_and_value() -> None:
    with pytest.raises(JobError) as info:
        Job.from_dict(job_doc(schedule="0 0 25 * * *"))
    assert str(info.value) == "schedule: field 'hour' value '25' out of range 0-23 (got '0 0 25 * * *')"
    assert info.value.value == "0 0 25 * * *"


def test_not_an_object_and_not_json() -> None:
    with pytest.raises(JobError) as info:
        Job.from_dict(["a"])  # type: ignore[arg-type]
    assert info.value.field == "document"
    with pytest.raises(JobError) as info:
        Job.from_json("{nope")
    assert info.value.field == "document"
    with pytest.raises(JobError) as info:
        Job.from_json("[]")
    assert info.value.field == "document"


@pytest.mark.parametrize("name", ["a", "job-1_x", "tâche", "straße", "ελληνικά", "0"])
def test_good_names(name: str) -> None:
    assert Job.from_dict(job_doc(name=name)).name == name


def test_good_optional_fields() -> None:
    # No schedule (run on demand), a child job, a valid zone, "Local", the short time form.
    assert Job.from_dict(job_doc(schedule=...)).schedule == ""
    assert Job.from_dict(job_doc(parent_job="other", schedule="")).parent_job == "other"
    assert Job.from_dict(job_doc(timezone="America/New_York", schedule="0 0 9 * * *")).timezone
    assert Job.from_dict(job_doc(timezone="Local")).timezone == "Local"
    job = Job.from_dict(job_doc(starts_at="2024-01-01T10:00", expires_at=None))
    assert job.starts_at == datetime(2024, 1, 1, 10, tzinfo=UTC)
    assert Job.from_dict(job_doc(concurrency="allow")).forbids_concurrency is False


def test_validate_catches_later_edits() -> None:
    job = Job.from_dict(job_doc())
    job.executor_config["timeout"] = "forever"
    with pytest.raises(JobError) as info:
        job.validate()
    assert info.value.field == "executor_config.timeout"
    with pytest.raises(JobError):
        job.shell_config()


# ---------------------------------------------------------------------------------------------- shell config


def test_shell_config_defaults() -> None:
    assert Job.from_dict(job_doc()).shell_config() == ShellConfig(command="/bin/true")


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ("", []),
        ("A=1", [("A", "1")]),
        ("A=1,B=x=y,,C=", [("A", "1"), ("B", "x=y"), ("C", "")]),
        ('["A=1,2", "B=two words"]', [("A", "1,2"), ("B", "two words")]),
        (["A=1", "B=2"], [("A", "1"), ("B", "2")]),
        ({"A": "1", "PORT": 8080, "DEBUG": True}, [("A", "1"), ("PORT", "8080"), ("DEBUG", "true")]),
        ('{"X": "a,b"}', [("X", "a,b")]),
    ],
)
def test_shell_env_forms(env: Any, expected: list[tuple[str, str]]) -> None:
    assert Job.from_dict(shell_doc(env=env)).shell_config().env == expected


@pytest.mark.parametrize("text", ["1", "t", "T", "TRUE", "true", "True"])
def test_go_booleans_true(text: str) -> None:
    assert Job.from_dict(shell_doc(shell=text)).shell_config().shell is True


@pytest.mark.parametrize("text", ["0", "f", "F", "FALSE", "false", "False"])
def test_go_booleans_false(text: str) -> None:
    assert Job.from_dict(shell_doc(shell=text)).shell_config().shell is False


@pytest.mark.parametrize("text", ["yes", "tRUE", "2", " true", "on"])
def test_go_booleans_refused_everywhere(text: str) -> None:
    # One parser for every boolean key: the shell executor's and each processor's.
    for doc, field in [
        (shell_doc(shell=text), "executor_config.shell"),
        (with_processors({"files": {"fsync": text}}), "processors.files.fsync"),
        (with_processors({"log": {"forward": text}}), "processors.log.forward"),
        (with_processors({"syslog": {"per_line": text}}), "processors.syslog.per_line"),
    ]:
        with pytest.raises(JobError) as err:
            Job.from_dict(doc)
        assert (err.value.field, err.value.value) == (field, text)


def test_shell_config_all_keys() -> None:
    cfg = Job.from_dict(
        shell_doc(
            shell=True,
            cwd="/work",
            timeout="1m30s",
            mem_limit=1024,
            su="nobody:nogroup",
            payload="aGVsbG8K",
        )
    ).shell_config()
    assert cfg.shell is True and cfg.cwd == "/work"
    assert cfg.timeout == 90.0 and cfg.mem_limit == 1024
    assert cfg.su == ("nobody", "nogroup")
    assert cfg.payload == b"hello\n"


def test_shell_config_edge_values() -> None:
    cfg = Job.from_dict(shell_doc(timeout="0", su="root", payload="", cwd="")).shell_config()
    assert cfg.timeout is None  # Dkron: a zero timeout is no timeout
    assert cfg.su == ("root", None)
    assert cfg.payload is None and cfg.cwd is None
    assert Job.from_dict(shell_doc(payload="aGVs\nbG8=")).shell_config().payload == b"hello"


# ---------------------------------------------------------------------------------------------- next_run


def test_next_run_window_and_switches() -> None:
    after = datetime(2024, 1, 1, tzinfo=UTC)
    hourly = Job.from_dict(job_doc(schedule="0 0 * * * *", timezone="UTC"))
    assert hourly.next_run(after) == after + timedelta(hours=1)
    assert Job.from_dict(job_doc(schedule="0 0 * * * *", disabled=True)).next_run(after) is None
    assert Job.from_dict(job_doc(schedule="")).next_run(after) is None
    assert Job.from_dict(job_doc(schedule="@manually")).next_run(after) is None
    assert Job.from_dict(job_doc(schedule="0 0 * * * *", parent_job="p")).next_run(after) is None
    # starts_at in the future: the first run at or after it (a run exactly at starts_at counts).
    job = Job.from_dict(job_doc(schedule="0 0 12 * * *", timezone="UTC", starts_at="2024-03-01T12:00:00Z"))
    assert job.next_run(after) == datetime(2024, 3, 1, 12, tzinfo=UTC)
    job = Job.from_dict(job_doc(schedule="0 0 12 * * *", timezone="UTC", starts_at="2024-03-01T12:00:01Z"))
    assert job.next_run(after) == datetime(2024, 3, 2, 12, tzinfo=UTC)
    # expires_at: nothing after it (exactly at it still runs).
    job = Job.from_dict(job_doc(schedule="0 0 12 * * *", timezone="UTC", expires_at="2024-01-01T12:00:00Z"))
    assert job.next_run(after) == datetime(2024, 1, 1, 12, tzinfo=UTC)
    assert job.next_run(datetime(2024, 1, 1, 12, tzinfo=UTC)) is None


def test_next_run_uses_name_hash_and_timezone() -> None:
    job = Job.from_dict(job_doc(name="abc", schedule="0 ~ 9 * * *", timezone="Asia/Tokyo"))
    # minute 294 % 60 = 54; 09:54 in Tokyo is 00:54Z
    got = job.next_run(datetime(2024, 1, 1))
    assert got == datetime(2024, 1, 1, 0, 54, tzinfo=UTC)


# ---------------------------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("-0", 0.0),
        ("1s", 1.0),
        ("+1s", 1.0),
        ("-1s", -1.0),
        ("1h30m", 5400.0),
        ("1.5s", 1.5),
        ("300ms", 0.3),
        ("2us", 2e-6),
        ("2µs", 2e-6),
        ("2μs", 2e-6),
        ("10ns", 1e-8),
        ("1h2m3s4ms5us6ns", 3723.004005006),
        (".5m", 30.0),
        ("1.m", 60.0),
        ("2h45m0.5s", 9900.5),
    ],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_go_duration(text) / 1e9 == pytest.approx(seconds, abs=1e-12)


def test_go_duration_nanoseconds_exact() -> None:
    assert parse_go_duration("1.000000001s") == 1_000_000_001
    assert parse_go_duration("0.1ns") == 0  # Go drops fractional nanoseconds
    assert parse_go_duration("2562047h47m16.854775807s") == (1 << 63) - 1
    assert parse_go_duration("-2562047h47m16.854775808s") == -(1 << 63)


@pytest.mark.parametrize(
    "text",
    ["", "1", "s", ".s", "1x", "1 s", "1s 2m", "1hour", "1.5.5s", "--1s", "2562047h47m16.854775808s", "1e3s"],
)
def test_bad_go_durations(text: str) -> None:
    with pytest.raises(ValueError, match="invalid Go duration"):
        parse_go_duration(text)
    if text:  # "" means unset
        with pytest.raises(JobError) as err:
            Job.from_dict(shell_doc(timeout=text))
        assert err.value.field == "executor_config.timeout"


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1", 1),
        ("1048576", 1048576),
        ("+5", 5),
        ("10B", 10),
        ("10bytes", 10),
        ("1k", 1024),
        ("1K", 1024),
        ("2KB", 2048),
        ("1kib", 1024),
        ("512MB", 512 << 20),
        ("512m", 512 << 20),
        ("1.5G", 3 << 29),
        ("1GiB", 1 << 30),
        ("2TB", 2 << 40),
        (" 64M ", 64 << 20),
        ("0.5K", 512),
        (".5k", 512),
    ],
)
def test_byte_sizes(text: str, size: int) -> None:
    assert Job.from_dict(shell_doc(mem_limit=text)).shell_config().mem_limit == size


@pytest.mark.parametrize(
    "text",
    [
        *["0", "-5", "0K", "0.0001K", "K", "1PB", "1.2.3M", "abc", "1e3", "-1K", "1_000", "1 MB"],
        *["9" * 30, "9" * 400],
    ],
)
def test_bad_byte_sizes(text: str) -> None:
    # mem_limit and the files processor's max_size share one parser.
    for doc, field in [
        (shell_doc(mem_limit=text), "executor_config.mem_limit"),
        (with_processors({"files": {"max_size": text}}), "processors.files.max_size"),
    ]:
        with pytest.raises(JobError) as err:
            Job.from_dict(doc)
        assert (err.value.field, err.value.value) == (field, text)


@pytest.mark.parametrize("spec", ["@every 5", "@every 5x", "@every", "@every 5 minutes"])
def test_a_bad_every_duration_quotes_the_spec_once(spec: str) -> None:
    """The schedule error names the field and quotes the value once, as every JobError does
    (it used to quote the duration again: ``... (got "5") (got '@every 5')``)."""
    with pytest.raises(JobError) as err:
        Job.from_dict(job_doc(schedule=spec, executor_config={"command": "/bin/true"}))
    message = str(err.value)
    assert err.value.field == "schedule" and err.value.value == spec
    assert message.startswith("schedule: invalid Go duration: ")
    assert message.endswith(f"(got {spec!r})")
    assert message.count("(got ") == 1 and "(got" not in err.value.reason


def test_to_json_is_text_like_json_dumps() -> None:
    job = Job.from_dict(FULL_DOC)
    written = job.to_json()
    assert isinstance(written, str)
    assert json.loads(written) == job.to_dict() and Job.from_json(written) == job


@pytest.mark.parametrize("text", ["5", "5x"])
def test_every_duration_error_lists_the_same_units(text: str) -> None:
    for doc in (shell_doc(timeout=text), job_doc(schedule=f"@every {text}")):
        with pytest.raises(JobError) as err:
            Job.from_dict(doc)
        assert "(use ns, us (or µs, μs), ms, s, m or h)" in str(err.value)
