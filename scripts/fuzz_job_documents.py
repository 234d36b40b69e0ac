"""A plain random-mutation fuzzer for Job.from_dict / from_json, for runs of millions of inputs
(hypothesis, in tests/test_job_fuzz.py, is the smarter but slower one).

Each input is one of a few valid documents with 1 to 3 random edits: a value anywhere replaced by a
hostile one (huge or non-finite numbers, deep nesting, lone surrogates, NUL bytes, long text, wrong
types), a key added, or, for one input in four, the document's JSON text with bytes flipped, cut
or inserted. The property is the tests': a JobError whose message starts with its field and is one
line, or a job that writes back (``Job.from_json(job.to_json()) == job``). Anything else is a
failure, printed with the seed that reproduces it.

    python scripts/fuzz_job_documents.py [INPUTS] [SEED]
"""

from __future__ import annotations

import copy
import random
import sys
import time
from typing import Any

import orjson

from dkron_exec.errors import JobError, preview
from dkron_exec.job import Job

SEEDS: list[dict[str, Any]] = [
    {"name": "j", "executor": "shell", "executor_config": {"command": "/bin/true"}},
    {"name": "short", "command": "echo hi", "shell": True, "timeout": "5s", "env": {"A": 1}},
    {
        "id": "backup",
        "name": "backup",
        "displayname": "Backup",
        "timezone": "Europe/Berlin",
        "schedule": "0 30 2 * * *",
        "owner": "ops",
        "success_count": 3,
        "last_error": None,
        "disabled": False,
        "tags": {"role": "db"},
        "metadata": {"team": "ops"},
        "retries": 2,
        "dependent_jobs": ["after"],
        "parent_job": "",
        "concurrency": "forbid",
        "executor": "shell",
        "processors": {
            "log": {"forward": "true"},
            "files": {"log_dir": "/tmp/fuzz-logs", "per_job_dir": "true", "keep": "3", "max_size": "1MB"},
            "syslog": {"transport": "udp", "address": "127.0.0.1:514", "timeout": "2s", "tag": "t"},
            "upper": {"x": [1, {"y": None}]},
        },
        "executor_config": {"command": "/bin/echo a", "cwd": "/tmp", "mem_limit": "64MB", "su": "nobody"},
        "status": "success",
        "next": "2030-01-01T00:00:00Z",
        "starts_at": "2024-01-01T00:00:00+01:00",
        "expires_at": "2030-01-01T00:00",
        "future": {"nested": [1, 2.5, "x"]},
    },
]

KEYS = [
    "name", "command", "shell", "env", "cwd", "timeout", "mem_limit", "su", "payload", "retries", "tags",
    "processors", "files", "syslog", "log_dir", "max_size", "keep", "address", "transport", "schedule",
    "timezone", "starts_at", "", "a.b", "\n", "\ud800", "x",
]  # fmt: skip


def nested(depth: int, leaf: Any) -> Any:
    for _ in range(depth):
        leaf = [leaf]
    return leaf


def hostile(rng: random.Random) -> Any:
    pick = rng.randrange(16)
    if pick == 0:
        return rng.choice([10**5000, 2**64, -(2**63) - 1, 2**32, int("9" * 400), -1, 0])
    if pick == 1:
        return rng.choice([float("nan"), float("inf"), -float("inf"), 1e308, -0.0, 5e-324, 0.1])
    if pick == 2:
        return nested(rng.choice([62, 63, 64, 65, 254, 255, 300, 5000]), rng.choice([1, "x", {}]))
    if pick == 3:
        return "".join(chr(rng.randrange(0xD800, 0xE000)) for _ in range(rng.randrange(1, 3)))
    if pick == 4:
        return rng.choice(["a\x00b", "\x00", "/tmp/\x00"])
    if pick == 5:
        return rng.choice(["a" * 5000, "/tmp/" + "a" * 256, "/x" * 3000, "9" * 400])
    if pick == 6:
        return rng.choice(
            ["9e20", "1e308", "nan", "inf", "-1s", "0", "5m0.001s", "1PB", "~nosuchuser/x", "~/x"]
        )
    if pick == 7:
        return rng.choice([None, True, False, [], {}, "", " ", "\n", "\u2028"])
    if pick == 8:
        return rng.choice([{1, 2}, (1, 2), b"bytes", object(), {1: 2}, frozenset()])
    if pick == 9:
        return {rng.choice(KEYS): hostile(rng)}
    if pick == 10:
        return [hostile(rng) for _ in range(rng.randrange(1, 3))]
    if pick == 11:
        return "".join(chr(rng.randrange(0x20, 0x3000)) for _ in range(rng.randrange(0, 12)))
    if pick == 12:
        return rng.choice(
            ["@every 1s", "@every 9999999999999999h", "* * * * * * *", "@at 0001-01-01T00:00:00Z"]
        )
    if pick == 13:
        return rng.choice(["2024-02-30T00:00:00Z", "9999-12-31T23:59:59+23:59", "0000-01-01T00:00"])
    if pick == 14:
        return rng.choice(["files", "log", "syslog", "../x", "a/b"])
    return rng.randrange(-(10**6), 10**6)


def places(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if len(prefix) >= 8:  # deep enough to reach every field; hostile nesting is not walked
        return found
    if isinstance(value, dict):
        for key, item in value.items():
            found += places(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += places(item, (*prefix, i))
    return found


def mutate_document(rng: random.Random) -> dict[str, Any]:
    doc = copy.deepcopy(rng.choice(SEEDS))
    for _ in range(rng.randrange(1, 4)):
        spots = places(doc)
        if spots and rng.random() < 0.6:
            spot = rng.choice(spots)
            parent: Any = doc
            for part in spot[:-1]:
                parent = parent[part]
            parent[spot[-1]] = hostile(rng)
        else:
            containers = [doc] + [v for v in (_at(doc, s) for s in spots) if isinstance(v, dict)]
            rng.choice(containers)[rng.choice(KEYS)] = hostile(rng)
    return doc


def mutate_text(rng: random.Random) -> bytes:
    text = bytearray(orjson.dumps(rng.choice(SEEDS)))
    for _ in range(rng.randrange(1, 5)):
        at = rng.randrange(len(text) + 1)
        kind = rng.randrange(3)
        if kind == 0 and at < len(text):
            text[at] = rng.randrange(256)
        elif kind == 1:
            text[at:at] = rng.choice(
                [b"[", b"{", b'"\\ud800"', b"1e999", b"9" * 30, b"\x00", b"\xff", b"null"]
            )
        else:
            del text[at : at + rng.randrange(1, 9)]
    return bytes(text)


def _at(doc: Any, spot: tuple[Any, ...]) -> Any:
    for part in spot:
        doc = doc[part]
    return doc


def check(load: Any) -> None:
    try:
        job = load()
    except JobError as exc:
        message = str(exc)
        if not exc.field or not message.startswith(f"{exc.field}: ") or "\n" in message:
            raise AssertionError(f"bad JobError message: {message[:300]!r}") from None
        return
    written = job.to_json()
    if Job.from_json(written) != job:
        raise AssertionError(f"does not write back: {written[:300]!r}")


def main() -> int:
    inputs = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 9
    failures = 0
    started = time.monotonic()
    for n in range(inputs):
        rng = random.Random(seed * 1_000_003 + n)
        if rng.random() < 0.25:
            text = mutate_text(rng)
            subject: Any = text
            load: Any = lambda text=text: Job.from_json(text)  # noqa: E731
        else:
            doc = mutate_document(rng)
            subject = doc
            load = lambda doc=doc: Job.from_dict(doc)  # noqa: E731
        try:
            check(load)
        except Exception as exc:
            failures += 1
            if failures <= 20:
                print(f"FAIL input {n} (seed {seed}): {type(exc).__name__}: {str(exc)[:300]}")
                print(f"  subject: {preview(subject)}")
    elapsed = time.monotonic() - started
    print(f"fuzz_job_documents: {inputs} inputs, {failures} failures, {elapsed:.1f}s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
