"""Fuzzing the job parser: valid jobs and hostile mutations of them, as dicts and as JSON text.

The property, for every input: ``Job.from_dict`` / ``Job.from_json`` either raise ``JobError`` whose
field names a field of the document (its first part is a top-level key, or ``document``), or give a
job that writes back: ``Job.from_json(job.to_json()) == job``, and writing that again gives the same
bytes. Nothing else may escape (no ``RecursionError``, ``OverflowError``, ``UnicodeEncodeError``, Rust
panic...).

Budget: the default ``ci`` profile runs a few seconds. ``HYPOTHESIS_PROFILE=long`` runs 100x more
examples per test (``scripts/fuzz-long.sh`` runs it; see docs/FUZZING.md).
"""

from __future__ import annotations

import copy
import json
import os
import re
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from dkron_exec.document import MAX_DEPTH
from dkron_exec.errors import JobError
from dkron_exec.job import Job

settings.register_profile(
    "ci",
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "long",
    max_examples=15_000,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# Applied per test, not loaded globally: other test modules keep hypothesis' defaults.
FUZZ = settings(settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci")))

# The fields a document may lack and still be blamed for (a required name, a missing executor).
FIELDS = ("name", "executor", "executor_config", "command")
SHORT_FORM_KEYS = ("command", "shell", "env", "cwd", "timeout", "mem_limit", "su", "payload")

# ------------------------------------------------------------------------------------------- values

names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-éß", min_size=1, max_size=12)
go_durations = st.sampled_from(["", "0", "1s", "1.5s", "250ms", "1h30m", "5m", "-1s", "10", "1e3s"])
sizes = st.sampled_from(["", "1", "1024", "512MB", "1.5g", "2KiB", "0", "-1", "1PB", "9" * 30])
booleans = st.sampled_from(["true", "false", "1", "0", "T", "False", ""])

# Scalars a JSON document can hold, with the edges: big and small ints, floats of every size.
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def nested(depth: int, leaf: Any = 1, as_object: bool = False) -> Any:
    value = leaf
    for _ in range(depth):
        value = {"k": value} if as_object else [value]
    return value


# What the fuzz of issue 9 found, and their relatives: every kind of value that is not plain JSON
# text a process can take.
hostile_scalars = st.one_of(
    st.integers(min_value=2**64, max_value=10**500),
    st.integers(max_value=-(2**63) - 1, min_value=-(10**500)),
    st.just(10**5000),
    st.sampled_from([float("nan"), float("inf"), float("-inf"), 1e308, -0.0, 5e-324]),
    st.sampled_from(
        [
            "9e20",
            "1e308",
            "nan",
            "inf",
            "-0",
            "~nosuchuser/logs",
            "~/x",
            "a\x00b",
            "\ud800",
            "x\udfffy",
            "/tmp/" + "a" * 300,
            "a" * 5000,
            "..",
            "../../etc",
            "%s%n",
            "\n",
            " ",
        ]
    ),
    st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=3),
    st.text(max_size=40),
    st.binary(max_size=8),
    st.builds(tuple, st.lists(st.integers(), max_size=2)),
    st.frozensets(st.integers(), max_size=2),
    st.builds(object),
)
hostile_values = st.one_of(
    hostile_scalars,
    st.builds(nested, st.integers(min_value=MAX_DEPTH - 3, max_value=400), json_scalars, st.booleans()),
    st.dictionaries(st.integers() | st.text(max_size=3), json_scalars, min_size=1, max_size=2),
    st.lists(hostile_scalars, min_size=1, max_size=3),
    st.dictionaries(st.text(max_size=5), hostile_scalars, min_size=1, max_size=3),
    json_values,
)

# --------------------------------------------------------------------------------------- valid jobs

shell_configs = st.fixed_dictionaries(
    {"command": st.sampled_from(["/bin/true", "echo hi", "sh -c 'exit 3'", "echo 'unbalanced"])},
    optional={
        "shell": booleans | st.booleans(),
        "env": st.sampled_from(["", "A=1,B=2", '["A=1"]', '{"A": 1, "B": [true]}', "NOEQUALS"]),
        "cwd": st.sampled_from(["", "/tmp", "relative", "/no/such/dir"]),
        "timeout": go_durations | st.integers(-5, 5),
        "mem_limit": sizes | st.integers(-5, 2**40),
        "su": st.sampled_from(["", "root", "nobody:nogroup", "a:b:c"]),
        "payload": st.sampled_from(["", "aGVsbG8K", "not base64"]),
        "zzz": json_values,
    },
)
files_configs = st.fixed_dictionaries(
    {},
    optional={
        "log_dir": st.sampled_from(["/tmp/dkron-fuzz-logs", "~/logs", "relative/logs", "", "/etc/passwd"]),
        "per_job_dir": booleans,
        "keep": st.sampled_from(["", "1", "10", "0", "-1", "x"]),
        "full_output": booleans,
        "max_size": sizes,
        "fsync": booleans,
        "forward": booleans | st.booleans(),
    },
)
syslog_configs = st.fixed_dictionaries(
    {},
    optional={
        "transport": st.sampled_from(["unixgram", "udp", "tcp", "unix", "relp", "carrier-pigeon"]),
        "address": st.sampled_from(["127.0.0.1:514", "[::1]:514", "/dev/log", "", "host:99999", "::"]),
        "format": st.sampled_from(["rfc5424", "rfc3164", "json"]),
        "facility": st.sampled_from(["user", "local7", "cron", "24", "nope"]),
        "severity": st.sampled_from(["info", "err", "7", "9"]),
        "tag": st.text(max_size=50),
        "hostname": st.text(max_size=20),
        "per_line": booleans,
        "max_message": st.sampled_from(["480", "8192", "64KB", "1", "0", "9" * 25]),
        "oversize": st.sampled_from(["split", "truncate", "drop"]),
        "timeout": go_durations | st.floats() | st.sampled_from([1e308, "9e20"]),
    },
)
plugin_configs = st.dictionaries(st.text(max_size=8), json_values, max_size=3)
processors = st.dictionaries(
    st.sampled_from(["files", "log", "syslog", "upper", "slack"]) | st.text(max_size=6),
    st.one_of(
        files_configs,
        st.fixed_dictionaries({}, optional={"forward": booleans}),
        syslog_configs,
        plugin_configs,
    ),
    max_size=3,
)
times = st.sampled_from(
    [
        None,
        "2024-01-01T00:00:00Z",
        "2030-01-01T00:00",
        "2024-05-01T00:30:01.123456789Z",
        "2024-01-01T00:00:00+01:00",
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
    ]
)

full_form = st.fixed_dictionaries(
    {"name": names, "executor": st.just("shell"), "executor_config": shell_configs},
    optional={
        "displayname": st.text(max_size=20),
        "schedule": st.sampled_from(
            ["", "@every 1m", "0 30 2 * * *", "@daily", "@at 2030-01-01T00:00:00Z", "* * * * *", "bogus"]
        ),
        "timezone": st.sampled_from(["", "UTC", "Europe/Berlin", "Nowhere/City"]),
        "owner": st.text(max_size=10),
        "tags": st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
        "metadata": st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
        "retries": st.integers(0, 10) | st.none(),
        "dependent_jobs": st.lists(names, max_size=3) | st.none(),
        "parent_job": names,
        "processors": processors,
        "concurrency": st.sampled_from(["", "allow", "forbid"]),
        "disabled": st.booleans() | st.none(),
        "ephemeral": st.booleans(),
        "starts_at": times,
        "expires_at": times,
        "status": json_values,
        "success_count": st.integers(0, 2**63 - 1),
        "next": times,
        "some_future_field": json_values,
    },
)
short_form = st.fixed_dictionaries(
    {"name": names, "command": st.sampled_from(["/bin/true", "echo hi"])},
    optional={
        "shell": st.booleans(),
        "timeout": go_durations,
        "mem_limit": sizes | st.integers(1, 2**40),
        "env": st.sampled_from(["A=1", {"A": 1}]),
        "processors": processors,
    },
)
documents = full_form | short_form


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a document a value sits at (keys of objects, indexes of arrays)."""
    found = [prefix] if prefix else []
    if len(prefix) >= 8:  # deep enough to reach every field; hostile nesting is not walked
        return found
    if isinstance(value, dict):
        for key, item in value.items():
            found += paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += paths(item, (*prefix, i))
    return found


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    """A generated document with one to three values replaced, or keys added, hostile or of a
    wrong type."""
    doc = copy.deepcopy(draw(documents))
    for _ in range(draw(st.integers(1, 3))):
        places = paths(doc)
        replace = places and draw(st.booleans())
        if replace:
            place = draw(st.sampled_from(places))
            parent = doc
            for part in place[:-1]:
                parent = parent[part]
            parent[place[-1]] = draw(hostile_values)
        else:
            containers = [()] + [p for p in places if isinstance(_at(doc, p), dict)]
            where = _at(doc, draw(st.sampled_from(containers)))
            key = draw(
                st.sampled_from(
                    [
                        *SHORT_FORM_KEYS,
                        "name",
                        "processors",
                        "retries",
                        "tags",
                        "x",
                        "log_dir",
                        "timeout",
                        "max_size",
                        "mem_limit",
                        "address",
                        "\ud800",
                    ]
                )
            )
            where[key] = draw(hostile_values)
    return doc


def _at(doc: Any, place: tuple[Any, ...]) -> Any:
    for part in place:
        doc = doc[part]
    return doc


# ------------------------------------------------------------------------------------------- checks

MOMENTS = (
    datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc),
    datetime(1, 1, 1, 0, 0, tzinfo=timezone(timedelta(hours=-12))),
    datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=14))),
    datetime(9999, 12, 31, 23, 59, 59),
)
_ROOT = re.compile(r"[^.\[]*")


def root_of(field: str) -> str:
    """The top-level key a dotted path starts with (``["a.b"]...`` quotes a key)."""
    if field.startswith('["'):
        key, _ = json.JSONDecoder().raw_decode(field[1:])
        return str(key)
    root = _ROOT.match(field)
    assert root is not None
    return root.group()


def check_loaded_or_refused(doc: Any, load: Any) -> Job | None:
    """The property: JobError naming a field of the document, or a job that writes back."""
    try:
        job = load()
    except JobError as exc:
        field = exc.field
        assert isinstance(field, str) and field, exc
        given = doc.keys() if isinstance(doc, dict) else ()
        assert field == "document" or root_of(field) in {*given, *FIELDS}, f"{field!r} names no field"
        message = str(exc)
        assert message.startswith(f"{field}: ") and "\n" not in message, message
        assert len(message) < 20_000
        return None
    written = job.to_json()
    again = Job.from_json(written)
    assert again == job
    assert again.to_json() == written
    assert Job.from_dict(job.to_dict()) == job
    for after in MOMENTS:  # a job that loads can say when it runs next, whatever the moment
        job.next_run(after)
    return job


@FUZZ
@given(documents)
def test_generated_documents_load_or_are_refused(doc: dict[str, Any]) -> None:
    check_loaded_or_refused(doc, lambda: Job.from_dict(doc))


@FUZZ
@given(mutated())
def test_hostile_mutations_are_job_errors_naming_the_field(doc: dict[str, Any]) -> None:
    check_loaded_or_refused(doc, lambda: Job.from_dict(doc))


@FUZZ
@given(st.data())
def test_json_text_loads_or_is_refused(data: st.DataObject) -> None:
    """The same through from_json, on text with bytes flipped, cut or inserted."""
    doc = data.draw(documents)
    text = bytearray(orjson.dumps(doc))
    for _ in range(data.draw(st.integers(0, 4))):
        at = data.draw(st.integers(0, len(text)))
        choice = data.draw(st.integers(0, 2))
        if choice == 0 and at < len(text):
            text[at] = data.draw(st.integers(0, 255))
        elif choice == 1:
            text[at:at] = data.draw(
                st.sampled_from([b"[", b"{", b"\\ud800", b"1e999", b"9" * 30, b"\x00", b"\xff"])
            )
        else:
            del text[at : at + data.draw(st.integers(1, 8))]
    try:
        parsed = orjson.loads(bytes(text))
    except orjson.JSONDecodeError:
        parsed = None
    check_loaded_or_refused(parsed if isinstance(parsed, dict) else {}, lambda: Job.from_json(bytes(text)))


@FUZZ
@given(json_values | hostile_values)
def test_any_value_as_a_whole_document(value: Any) -> None:
    assume(not isinstance(value, dict) or "name" not in value)
    check_loaded_or_refused(value if isinstance(value, dict) else {}, lambda: Job.from_dict(value))
