"""Dkron's ``tags`` as message-queue names, for dispatching jobs to the nodes they select.

In Dkron a job runs on the nodes whose tags match *all* of the job's tags. Here a job goes to
one queue named after all of its tags, and a worker listens to one queue per combination of its
own tags, so a worker receives exactly the jobs whose tags it has:

* job tags ``{"role": "web"}`` -> queue ``dkron.role.web``
* job tags ``{"role": "web", "dc": "eu"}`` -> ``dkron.dc.eu+role.web`` (keys sorted)
* no tags -> ``dkron`` (:data:`DEFAULT_QUEUE`), which every worker listens to
* a worker tagged ``role=web, dc=eu`` listens to ``dkron``, ``dkron.dc.eu``, ``dkron.role.web``
  and ``dkron.dc.eu+role.web``

In a key or value, ``%``, ``.`` and ``+`` are written ``%25``, ``%2E`` and ``%2B`` so that no
two tag sets share a queue. Dkron's ``:N`` suffix on a job's tag value (run on N nodes) is
parsed and removed; the job is still sent once, so one node runs it (see :func:`tag_count`).

This module needs nothing beyond the standard library (``dkron-exec celery-queues`` uses it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from itertools import combinations

from ..errors import JobError

__all__ = [
    "DEFAULT_QUEUE",
    "MAX_WORKER_TAGS",
    "parse_tag_options",
    "queue_for_tags",
    "split_tag_value",
    "tag_count",
    "worker_queues",
]

DEFAULT_QUEUE = "dkron"
"""The queue of jobs without tags; every worker started with :func:`worker_queues` listens to it."""

MAX_WORKER_TAGS = 8
"""A worker listens to 2**n - 1 tag queues for n tags: beyond 8 (255 queues) we refuse."""

_ESCAPES = str.maketrans({"%": "%25", ".": "%2E", "+": "%2B"})


def _escape(text: str) -> str:
    return text.translate(_ESCAPES)


def split_tag_value(key: str, value: str) -> tuple[str, int]:
    """A job tag's value and its count: ``"web:2"`` -> ``("web", 2)``, ``"web"`` -> ``("web", 1)``.

    As in Dkron, only a final ``:N`` with N a positive integer is a count; ``"a:b"`` is a value."""
    if not isinstance(value, str):
        raise JobError(f"tags.{key}", value, "a tag value must be a string")
    head, sep, tail = value.rpartition(":")
    if sep and tail.isdigit():
        count = int(tail)
        if count < 1:
            raise JobError(f"tags.{key}", value, "the count after ':' must be at least 1")
        return head, count
    return value, 1


def _clean_tags(tags: Mapping[str, str], *, counted: bool) -> dict[str, str]:
    """The tags without their ``:N`` counts (a job's tags are ``counted``, a worker's are not)."""
    clean = {}
    for key, value in tags.items():
        if not isinstance(key, str) or not key:
            raise JobError("tags", dict(tags), "a tag key must be a non-empty string")
        if not isinstance(value, str):
            raise JobError(f"tags.{key}", value, "a tag value must be a string")
        clean[key] = split_tag_value(key, value)[0] if counted else value
    return clean


def _queue_name(pairs: Iterable[tuple[str, str]]) -> str:
    parts = [f"{_escape(k)}.{_escape(v)}" for k, v in sorted(pairs)]
    return f"{DEFAULT_QUEUE}.{'+'.join(parts)}" if parts else DEFAULT_QUEUE


def queue_for_tags(tags: Mapping[str, str]) -> str:
    """The queue a job with these (job) tags is sent to; ``:N`` counts are ignored."""
    return _queue_name(_clean_tags(tags, counted=True).items())


def tag_count(tags: Mapping[str, str]) -> int:
    """How many nodes Dkron would run the job on: the largest ``:N`` among its tags (1 without)."""
    return max((split_tag_value(k, v)[1] for k, v in tags.items()), default=1)


def worker_queues(tags: Mapping[str, str]) -> list[str]:
    """The queues a worker (node) with these tags listens to: the default queue and one per
    non-empty combination of its tags, so it gets every job whose tags are a subset of its own."""
    clean = _clean_tags(tags, counted=False)
    if len(clean) > MAX_WORKER_TAGS:
        raise JobError("tags", dict(tags), f"a worker may have at most {MAX_WORKER_TAGS} tags")
    pairs = sorted(clean.items())
    queues = [DEFAULT_QUEUE]
    for size in range(1, len(pairs) + 1):
        queues.extend(_queue_name(combo) for combo in combinations(pairs, size))
    return queues


def parse_tag_options(options: Iterable[str]) -> dict[str, str]:
    """``["role=web", "dc=eu"]`` (command-line ``--tag`` values) as a tag mapping."""
    tags: dict[str, str] = {}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or not key:
            raise JobError("--tag", option, "must be KEY=VALUE")
        if key in tags:
            raise JobError("--tag", option, f"tag {key!r} is given twice")
        tags[key] = value
    return tags
