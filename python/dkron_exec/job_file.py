"""A job file read by the CLI and by ``serve``: one report for a file that is not a job document,
which names the file and never quotes its content (see :mod:`dkron_exec.json_errors`)."""

from __future__ import annotations

from typing import Any

import orjson

from . import json_errors
from .errors import DkronExecError
from .job import Job


class BadDocument(DkronExecError):
    """A job file that is not a JSON object. ``location`` is the one-line report
    (``FILE:LINE:COLUMN: not valid JSON: WHY``); ``excerpt`` the offending line with a caret under
    the column, or ``""`` (the message is both, on separate lines)."""

    def __init__(self, location: str, excerpt: str = "") -> None:
        self.location = location
        self.excerpt = excerpt
        super().__init__(location + (f"\n{excerpt}" if excerpt else ""))


def _json_type(doc: Any) -> str:
    if isinstance(doc, list):
        return "an array"
    if isinstance(doc, str):
        return "a string"
    if isinstance(doc, bool):
        return "a boolean"
    if doc is None:
        return "null"
    return "a number"


def load_job(source: str, data: bytes) -> Job:
    """The job of a file's bytes; ``source`` names the file in errors. Raises :class:`BadDocument`
    for bytes that are not a JSON object, :class:`~dkron_exec.JobError` for an invalid job."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BadDocument(json_errors.location(source, data, exc), json_errors.excerpt(data, exc)) from None
    if not isinstance(doc, dict):
        what = _json_type(doc)
        raise BadDocument(f"{source}: not a job document: the file holds {what}, not a JSON object")
    return Job.from_dict(doc)
