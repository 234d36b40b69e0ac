"""The job model: Dkron job documents, their validation, and the shell executor's config.

:meth:`Job.from_dict` / :meth:`Job.from_json` accept a Dkron job document as Dkron's API returns it (all
fields, read-only ones included) and validate it; every problem is a :class:`~dkron_exec.errors.JobError`
whose ``field`` is a dotted path such as ``executor_config.timeout`` or ``processors.files.forward``.
``Job.from_dict(d).to_dict()`` gives ``d`` back (same keys, same values after the normalisation below);
fields this module does not know are kept in :attr:`Job.extra` and written back. Before any field is read,
every value must be JSON that writes back and text a process can take (:mod:`dkron_exec.document`: at most
64 levels of nesting, 64-bit integers, finite floats, no lone surrogates), so that a bad document is a
JobError whatever the value, and ``Job.from_json(job.to_json()) == job`` for every job that loads.

Differences from Dkron, on purpose:

* ``schedule`` is optional: an embedded library runs jobs on demand. When given it must parse (see
  :mod:`dkron_exec.schedule`).
* Executor and processor config values may be JSON strings, booleans, numbers, arrays or objects (Dkron
  only takes strings, #1033/#1460/#523). They are normalised to the strings Dkron would have wanted:
  ``true`` -> ``"true"``, ``42`` -> ``"42"``, ``1.5`` -> ``"1.5"``, arrays and objects -> compact JSON
  text. ``null`` is rejected.
* The shell executor's config is fully checked up front (command, ``shell``, ``env``, ``timeout``,
  ``mem_limit``, ``su``, ``payload``, ``keep_daemons``), where Dkron checks only ``timeout`` and
  ``mem_limit`` and fails the other mistakes at run time (an invalid ``shell`` even silently means false
  there).
* ``null`` for a field means its default (as in Go); ``to_dict()`` writes ``null`` back while the field still
  holds that default.

**Short form.** A document with a top-level ``"command"`` (the form in Dkron's plugin docs) means the
``shell`` executor with that command; the top-level keys ``shell``, ``env``, ``cwd``, ``timeout``,
``mem_limit``, ``su``, ``payload`` and ``keep_daemons`` go into ``executor_config`` too, but only when
``command`` is there. ``executor`` must then be absent, empty or ``"shell"``, and a key may not be given
both at the top level and in ``executor_config``. ``to_dict()`` of such a job gives the full form: no
top-level ``command``; ``"executor": "shell"`` and ``"executor_config": {"command": ..., ...}`` with
normalised string values. For example ``{"name": "a", "command": "/bin/true", "shell": true}`` becomes
``{..., "name": "a", ..., "executor": "shell", "executor_config": {"command": "/bin/true", "shell": "true"},
...}`` with every other writable field at its default.
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson

from . import _core
from .document import check_document, key_path
from .errors import JobError
from .schedule import Schedule, ScheduleError, load_timezone, parse_rfc3339

__all__ = ["Job", "ShellConfig"]

# Dkron's JSON field order (dkron/job.go); read-only fields are written back only when they were given.
_FIELD_ORDER = (
    "id", "name", "displayname", "timezone", "schedule", "owner", "owner_email", "success_count",
    "error_count", "last_success", "last_error", "disabled", "tags", "metadata", "retries", "dependent_jobs",
    "parent_job", "processors", "concurrency", "executor", "executor_config", "status", "next", "ephemeral",
    "starts_at", "expires_at",
)  # fmt: skip
_READ_ONLY = ("id", "status", "next", "success_count", "error_count", "last_success", "last_error")
_STRING_FIELDS = (
    "displayname", "schedule", "timezone", "owner", "owner_email", "parent_job", "executor", "concurrency",
)  # fmt: skip
_SHELL_KEYS = tuple(_core.SHELL_KEYS)  # the short form's top-level keys
_CONCURRENCY = ("", "allow", "forbid")
_SHORT_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}")  # Go layout 2006-01-02T15:04, read as UTC
_SLUG_EXTRA = frozenset("0123456789_-")
_MAX_RETRIES = 2**32 - 1  # Dkron's uint; the runtime counts attempts in 32 bits


@dataclass(frozen=True)
class ShellConfig:
    """The ``shell`` executor's ``executor_config``, as the Rust runtime parses and runs it."""

    command: str
    shell: bool = False
    """Run through ``/bin/sh -c``; otherwise the command is split into words and exec'd."""
    env: list[tuple[str, str]] = field(default_factory=list)
    """Extra environment, in order, on top of the host's (later entries win)."""
    cwd: str | None = None
    timeout: float | None = None
    """Seconds; ``None`` when unset or zero (Dkron treats a zero timeout as none)."""
    mem_limit: int | None = None
    """Bytes."""
    su: tuple[str, str | None] | None = None
    """``(user, group or None)``."""
    payload: bytes | None = None
    """Written to the command's stdin; ``None`` when unset or empty."""
    keep_daemons: bool = False
    """Leave what the job started running when it ends on its own (by default it all dies)."""

    @classmethod
    def from_config(cls, config: Mapping[str, str]) -> ShellConfig:
        """Parse an ``executor_config``; JobError naming ``executor_config.<key>``."""
        return cls(*_core.parse_shell_config(dict(config)))


# ---------------------------------------------------------------------------------------------- values


def _config_string(path: str, value: Any) -> str:
    """Normalise one executor/processor config value to Dkron's string form."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise JobError(path, value, "numbers must be finite")
        return repr(value)  # shortest text that reads back as the same float
    if value is None:
        raise JobError(path, value, "null is not a valid config value (use a string)")
    if isinstance(value, (list, dict)):
        try:
            return orjson.dumps(value).decode()
        except TypeError as exc:
            raise JobError(path, value, f"cannot be written as JSON: {exc}") from None
    raise JobError(path, value, "must be a string, number, boolean, array or object")


def _config_map(path: str, value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise JobError(path, value, "must be an object")
    out = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise JobError(path, key, "keys must be strings")
        out[key] = _config_string(key_path(path, key), item)
    return out


def _string_map(path: str, value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise JobError(path, value, "must be an object of strings")
    for key, item in value.items():
        if not isinstance(key, str):
            raise JobError(path, key, "keys must be strings")
        if not isinstance(item, str):
            raise JobError(key_path(path, key), item, "must be a string")
    return dict(value)


def _parse_time(path: str, value: Any) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise JobError(path, value, "must be an RFC 3339 time string or null")
    if _SHORT_TIME.fullmatch(value):
        try:
            return datetime.strptime(value, "%Y-%m-%dT%H:%M").replace(tzinfo=timezone.utc)
        except ValueError as exc:
            raise JobError(path, value, str(exc)) from None
    try:
        return parse_rfc3339(value)
    except ValueError:
        raise JobError(
            path, value, "expected RFC 3339 (2006-01-02T15:04:05Z07:00) or 2006-01-02T15:04"
        ) from None


def _format_time(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    text = value.isoformat(timespec="microseconds" if value.microsecond else "seconds")
    if value.microsecond:
        head, _, tail = text.partition(".")
        digits, zone = tail[:6].rstrip("0"), tail[6:]
        text = f"{head}.{digits}{zone}"
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def _check_name(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise JobError("name", value, "required: a non-empty string")
    for ch in value:
        # Dkron's isSlug: only \p{Ll}, ASCII digits, '_' and '-'.
        if ch not in _SLUG_EXTRA and unicodedata.category(ch) != "Ll":
            raise JobError(
                "name", value, f"contains illegal character {ch!r} (use lowercase letters, digits, _ and -)"
            )
    return value


@functools.lru_cache(maxsize=256)
def _schedule_for(spec: str, job_name: str, job_timezone: str) -> Schedule:
    return Schedule.parse(spec, job_name=job_name, timezone=job_timezone)


# ---------------------------------------------------------------------------------------------- Job


@dataclass
class Job:
    """A Dkron job. Build it with :meth:`from_dict` / :meth:`from_json`, which validate; constructing it
    directly does not (call :meth:`validate`)."""

    name: str
    displayname: str = ""
    schedule: str = ""
    timezone: str = ""
    owner: str = ""
    owner_email: str = ""
    parent_job: str = ""
    executor: str = ""
    disabled: bool = False
    ephemeral: bool = False
    tags: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    retries: int = 0
    dependent_jobs: list[str] = field(default_factory=list)
    concurrency: str = ""
    processors: dict[str, dict[str, str]] = field(default_factory=dict)
    """Processor name -> config, in document order (the order processors run in)."""
    executor_config: dict[str, str] = field(default_factory=dict)
    starts_at: datetime | None = None
    expires_at: datetime | None = None
    read_only: dict[str, Any] = field(default_factory=dict)
    """Dkron's computed fields as given: id, status, next, success/error counts, last_success/last_error."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Fields this library does not know; kept and written back."""
    # How the document spelled things we normalise, so to_dict() can write them back unchanged.
    _nulls: frozenset[str] = field(default=frozenset(), init=False, repr=False, compare=False)
    _time_text: dict[str, str] = field(default_factory=dict, init=False, repr=False, compare=False)
    # The top-level fields the short form moved into executor_config, to blame in errors.
    _paths: dict[str, str] = field(default_factory=dict, init=False, repr=False, compare=False)
    # (fingerprint of the fields the plan reads, the plan): rebuilt when those fields change.
    _plan_cache: tuple[bytes, _core.JobPlan] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    # ------------------------------------------------------------------------------------------ reading

    @classmethod
    def from_json(cls, data: str | bytes) -> Job:
        """Parse and validate a JSON job document."""
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            preview = data[:200] if isinstance(data, (str, bytes)) else data
            raise JobError("document", preview, f"not valid JSON: {exc}") from None
        return cls.from_dict(doc)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Job:
        """Validate a job document (a JSON object as a mapping) and build the Job."""
        if not isinstance(d, Mapping):
            raise JobError("document", d, "a job document must be a JSON object")
        doc = dict(d)
        check_document(doc)  # JSON that writes back, text a process can take: before any field is read
        nulls = frozenset(key for key in _FIELD_ORDER if key in doc and doc[key] is None)
        name = _check_name(doc.get("name"))
        strings = {}
        for key in _STRING_FIELDS:
            value = doc.get(key)
            if value is not None and not isinstance(value, str):
                raise JobError(key, value, "must be a string")
            strings[key] = value or ""
        flags = {}
        for key in ("disabled", "ephemeral"):
            value = doc.get(key)
            if value is not None and not isinstance(value, bool):
                raise JobError(key, value, "must be true or false")
            flags[key] = bool(value)
        retries = doc.get("retries")
        if retries is None:
            retries = 0
        if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= _MAX_RETRIES:
            raise JobError("retries", retries, f"must be an integer from 0 to {_MAX_RETRIES}")
        dependent = doc.get("dependent_jobs")
        if dependent is None:
            dependent = []
        if not isinstance(dependent, list) or not all(isinstance(j, str) for j in dependent):
            raise JobError("dependent_jobs", dependent, "must be a list of job names")
        processors = doc.get("processors")
        if processors is not None and not isinstance(processors, Mapping):
            raise JobError("processors", processors, "must be an object of processor name -> config object")
        processor_configs = {}
        for proc_name, proc_config in (processors or {}).items():
            if not isinstance(proc_config, Mapping):
                raise JobError(
                    key_path("processors", proc_name), proc_config, "a processor's config must be an object"
                )
            processor_configs[proc_name] = _config_map(key_path("processors", proc_name), proc_config)
        executor_config = _config_map("executor_config", doc.get("executor_config"))
        executor, paths = cls._merge_short_form(doc, strings["executor"], executor_config)

        job = cls(
            name=name,
            displayname=strings["displayname"],
            schedule=strings["schedule"],
            timezone=strings["timezone"],
            owner=strings["owner"],
            owner_email=strings["owner_email"],
            parent_job=strings["parent_job"],
            executor=executor,
            disabled=flags["disabled"],
            ephemeral=flags["ephemeral"],
            tags=_string_map("tags", doc.get("tags")),
            metadata=_string_map("metadata", doc.get("metadata")),
            retries=retries,
            dependent_jobs=list(dependent),
            concurrency=strings["concurrency"],
            processors=processor_configs,
            executor_config=executor_config,
            starts_at=_parse_time("starts_at", doc.get("starts_at")),
            expires_at=_parse_time("expires_at", doc.get("expires_at")),
            read_only={key: doc[key] for key in _READ_ONLY if key in doc},
            extra={key: value for key, value in doc.items() if key not in _FIELD_ORDER},
        )
        job._nulls = nulls
        job._time_text = {k: doc[k] for k in ("starts_at", "expires_at") if isinstance(doc.get(k), str)}
        job._paths = dict(paths)
        job._check(paths)
        return job

    @staticmethod
    def _merge_short_form(
        doc: dict[str, Any], executor: str, executor_config: dict[str, str]
    ) -> tuple[str, dict[str, str]]:
        """Move a top-level ``command`` (and its siblings) into ``executor_config``; remove them from ``doc``.

        Returns the executor and, for the moved keys, the top-level field to blame in errors.
        """
        if doc.get("command") is None:
            doc.pop("command", None)
            if not executor:
                raise JobError(
                    "executor", executor, "no executor: set executor and executor_config, or a command"
                )
            return executor, {}
        if executor not in ("", "shell"):
            raise JobError(
                "command", doc["command"], f"a top-level command needs the shell executor, not {executor!r}"
            )
        paths = {}
        for key in _SHELL_KEYS:
            if key not in doc:
                continue
            value = doc.pop(key)
            if key in executor_config:
                raise JobError(key, value, f"given both at the top level and in executor_config.{key}")
            executor_config[key] = _config_string(key, value)
            paths[key] = key
        return "shell", paths

    def _check(self, paths: Mapping[str, str] | None = None) -> None:
        """Cross-field checks, run after every field has the right type."""
        if self.parent_job == self.name:
            raise JobError("parent_job", self.parent_job, "a job cannot be its own parent")
        if self.concurrency not in _CONCURRENCY:
            raise JobError("concurrency", self.concurrency, 'must be "", "allow" or "forbid"')
        try:
            load_timezone(self.timezone)
        except ValueError as exc:
            raise JobError("timezone", self.timezone, str(exc)) from None
        if self.schedule:
            try:
                _schedule_for(self.schedule, self.name, self.timezone)
            except ScheduleError as exc:
                raise JobError("schedule", self.schedule, exc.reason) from None
        if (
            self.starts_at is not None
            and self.expires_at is not None
            and _aware(self.expires_at) <= _aware(self.starts_at)
        ):
            raise JobError("expires_at", self.expires_at, "must be after starts_at")
        # The executor's and processors' configs are parsed by the Rust plan, once: what is
        # checked here is what runs.
        self._plan_cache = self._build_plan(paths)

    def _plan_fingerprint(self) -> bytes:
        return orjson.dumps(
            (self.name, self.executor, self.executor_config, self.processors, self.retries, self.concurrency)
        )

    def _build_plan(self, paths: Mapping[str, str] | None = None) -> tuple[bytes, _core.JobPlan]:
        paths = self._paths if paths is None else paths
        try:
            plan = _core.JobPlan(
                self.name,
                self.executor,
                self.executor_config,
                list(self.processors.items()),
                retries=self.retries,
                forbid=self.forbids_concurrency,
            )
        except JobError as exc:
            # A short-form key is blamed where the document wrote it (top level).
            key = exc.field.removeprefix("executor_config.")
            if exc.field.startswith("executor_config.") and key in paths:
                raise JobError(paths[key], exc.value, exc.reason) from None
            raise
        return self._plan_fingerprint(), plan

    @property
    def plan(self) -> _core.JobPlan:
        """The job's executor and processors as the Rust core runs them, parsed from the
        current fields (rebuilt after an edit; JobError if the edit made them invalid)."""
        cached = self._plan_cache
        try:
            fingerprint = self._plan_fingerprint()
        except TypeError:
            # An edit put in a value JSON cannot hold (a lone surrogate, a huge int): the
            # document's rules name the field.
            self.validate()
            raise
        if cached is None or cached[0] != fingerprint:
            cached = self._plan_cache = self._build_plan()
        return cached[1]

    def validate(self) -> None:
        """Check the job as it is now (after edits); raises JobError like :meth:`from_dict`."""
        type(self).from_dict(self.to_dict())

    # ------------------------------------------------------------------------------------------ writing

    def to_dict(self) -> dict[str, Any]:
        """The job as a Dkron document (full form), in Dkron's field order, unknown fields last."""
        values: dict[str, Any] = {
            "name": self.name,
            "displayname": self.displayname,
            "timezone": self.timezone,
            "schedule": self.schedule,
            "owner": self.owner,
            "owner_email": self.owner_email,
            "disabled": self.disabled,
            "tags": dict(self.tags),
            "metadata": dict(self.metadata),
            "retries": self.retries,
            "dependent_jobs": list(self.dependent_jobs),
            "parent_job": self.parent_job,
            "processors": {name: dict(config) for name, config in self.processors.items()},
            "concurrency": self.concurrency,
            "executor": self.executor,
            "executor_config": dict(self.executor_config),
            "ephemeral": self.ephemeral,
            "starts_at": self._time_out("starts_at", self.starts_at),
            "expires_at": self._time_out("expires_at", self.expires_at),
        }
        out: dict[str, Any] = {}
        for key in _FIELD_ORDER:
            if key in self.read_only:
                out[key] = self.read_only[key]
            elif key in values:
                value = values[key]
                # A null in the document stays null while the field still holds its default.
                out[key] = None if key in self._nulls and not value else value
        out.update(self.extra)
        return out

    def _time_out(self, key: str, value: datetime | None) -> str | None:
        if value is None:
            return None
        text = self._time_text.get(key)
        if text is not None and _parse_time(key, text) == value:
            return text
        return _format_time(value)

    def to_json(self) -> str:
        """:meth:`to_dict` as compact JSON text (``str``, like ``json.dumps``)."""
        return orjson.dumps(self.to_dict()).decode()

    # ------------------------------------------------------------------------------------------ behaviour

    @property
    def forbids_concurrency(self) -> bool:
        """``concurrency`` is ``"forbid"``: a new run must not start while one is in flight."""
        return self.concurrency == "forbid"

    def shell_config(self) -> ShellConfig:
        """The parsed ``shell`` executor config; JobError if not the shell executor or the config is bad."""
        if self.executor != "shell":
            raise JobError("executor", self.executor, "not the shell executor")
        return ShellConfig.from_config(self.executor_config)

    def next_run(self, after: datetime) -> datetime | None:
        """When the schedule fires next, strictly after ``after`` (naive = UTC), within starts_at/expires_at.

        ``None`` when the job is disabled, has no schedule, is a child job (Dkron runs those after their
        parent, not on their own schedule), or will not fire again inside its window. Like Dkron, a run at
        exactly ``starts_at`` or ``expires_at`` counts as inside. A run past year 9999 (where ``datetime``
        ends) is ``None`` too.
        """
        if self.disabled or not self.schedule or self.parent_job:
            return None
        schedule = _schedule_for(self.schedule, self.name, self.timezone)
        after = _aware(after)
        start = after
        if self.starts_at is not None and after < _aware(self.starts_at):
            start = _aware(self.starts_at) - timedelta(microseconds=1)  # so a run at starts_at itself counts
        try:
            found = schedule.next(start)
            if found is None or (self.expires_at is not None and found > _aware(self.expires_at)):
                return None
            return found.astimezone(after.tzinfo)
        except (OverflowError, ValueError):
            # The next run lies past year 9999, where datetime ends: for us it never comes.
            return None
