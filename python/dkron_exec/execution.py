"""The record of one run of a job, shaped like Dkron's ``Execution``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def datetime_from_ns(ns: int) -> datetime:
    # Integer arithmetic: a float of ~1.7e18 ns cannot hold every microsecond.
    return EPOCH + timedelta(microseconds=ns // 1_000)


def ns_from_datetime(dt: datetime) -> int:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    delta = dt - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def format_time(dt: datetime | None) -> str | None:
    if dt is None:
        return None
    return dt.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _core_time(value: Any) -> Any:
    """A time from the Rust core: Unix nanoseconds, a datetime it passed through, or None."""
    if value is None or type(value) is datetime:
        return value
    return EPOCH + timedelta(microseconds=value // 1_000)


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def make_key(started_ns: int, node_name: str) -> str:
    """Dkron's ``Execution.Key()``: ``<StartedAt.UnixNano>-<NodeName>``."""
    return f"{started_ns}-{node_name}"


@dataclass
class Execution:
    """One run of a job: what happened, and what the processors made of its output.

    ``output`` holds the tail of stdout and stderr (``output_size`` counts every byte the job
    wrote; ``output_truncated`` says whether some were dropped). When the run failed, ``error``
    says why, and the same line ends ``output``. ``exit_code`` is the process's exit code, or
    minus the signal that ended it, or None when nothing ran. ``cpu_time_us`` (microseconds) and
    ``peak_memory`` (bytes) cover every process the job started; None when unknown (they come
    from the job's cgroup: see ``dkron_exec.isolation()``).
    """

    job_name: str
    started_at: datetime
    finished_at: datetime | None
    success: bool
    output: bytes = b""
    node_name: str = ""
    group: int = 0
    attempt: int = 1
    exit_code: int | None = None
    error: str | None = None
    output_truncated: bool = False
    output_size: int = 0
    processor_errors: list[str] = field(default_factory=list)
    # Dkron's key has nanosecond precision, which datetime lacks: kept as given.
    key: str = ""
    cpu_time_us: int | None = None
    peak_memory: int | None = None

    def __post_init__(self) -> None:
        if self.started_at.tzinfo is None:
            self.started_at = self.started_at.replace(tzinfo=timezone.utc)
        if self.finished_at is not None and self.finished_at.tzinfo is None:
            self.finished_at = self.finished_at.replace(tzinfo=timezone.utc)
        if not self.key:
            self.key = make_key(ns_from_datetime(self.started_at), self.node_name)

    @property
    def id(self) -> str:
        return self.key

    @property
    def output_text(self) -> str:
        return self.output.decode("utf-8", "replace")

    @property
    def duration(self) -> float | None:
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    def replace(self, **changes: Any) -> Execution:
        """A copy with some fields changed (what each processor step returns).

        A shallow copy of the fields, not ``dataclasses.replace``: that re-runs ``__init__`` and
        costs as much as a syslog send. Unknown names raise TypeError, as there.
        """
        unknown = changes.keys() - _FIELD_NAMES
        if unknown:
            raise TypeError(f"Execution has no field {sorted(unknown)[0]!r}")
        copy = object.__new__(Execution)
        copy.__dict__.update(self.__dict__, **changes)
        return copy

    def to_dict(self) -> dict[str, Any]:
        """Dkron's JSON field names (output as text), plus dkron_exec's own fields."""
        return {
            "id": self.key,
            "job_name": self.job_name,
            "started_at": format_time(self.started_at),
            "finished_at": format_time(self.finished_at),
            "success": self.success,
            "output": self.output_text,
            "node_name": self.node_name,
            "group": self.group,
            "attempt": self.attempt,
            "exit_code": self.exit_code,
            "error": self.error,
            "output_truncated": self.output_truncated,
            "output_size": self.output_size,
            "processor_errors": list(self.processor_errors),
            "cpu_time_us": self.cpu_time_us,
            "peak_memory": self.peak_memory,
        }

    def to_json(self) -> str:
        """:meth:`to_dict` as compact JSON text (``str``, like ``json.dumps``)."""
        return orjson.dumps(self.to_dict()).decode()

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Execution:
        started = parse_time(d.get("started_at"))
        if started is None:
            raise ValueError("started_at: an execution needs a start time")
        output = d.get("output", b"")
        return cls(
            job_name=d["job_name"],
            started_at=started,
            finished_at=parse_time(d.get("finished_at")),
            success=bool(d.get("success", False)),
            output=output.encode() if isinstance(output, str) else bytes(output),
            node_name=d.get("node_name", ""),
            group=int(d.get("group", 0)),
            attempt=int(d.get("attempt", 1)),
            exit_code=d.get("exit_code"),
            error=d.get("error"),
            output_truncated=bool(d.get("output_truncated", False)),
            output_size=int(d.get("output_size", 0)),
            processor_errors=list(d.get("processor_errors") or []),
            key=d.get("id") or d.get("key") or "",
            cpu_time_us=_optional_int(d.get("cpu_time_us")),
            peak_memory=_optional_int(d.get("peak_memory")),
        )

    @classmethod
    def from_json(cls, data: str | bytes) -> Execution:
        return cls.from_dict(orjson.loads(data))

    @classmethod
    def _from_core(cls, fields: tuple[Any, ...]) -> Execution:
        """Built by the Rust core (``rust/src/py_execution.rs``) from its record, in ``_CORE_FIELDS``
        order with times as Unix nanoseconds (or datetimes the core took from an execution it was given).
        Skips ``__init__``: the core's values are checked."""
        (job_name, key, started_ns, finished_ns, success, output, node_name, group, attempt, exit_code, error,
         output_truncated, output_size, processor_errors, cpu_time_us, peak_memory) = fields  # fmt: skip
        execution = object.__new__(cls)
        # One dict in field order, assigned whole: the cheapest way to fill a dataclass instance.
        execution.__dict__ = {
            "job_name": job_name,
            "started_at": _core_time(started_ns),
            "finished_at": _core_time(finished_ns),
            "success": success,
            "output": output,
            "node_name": node_name,
            "group": group,
            "attempt": attempt,
            "exit_code": exit_code,
            "error": error,
            "output_truncated": output_truncated,
            "output_size": output_size,
            "processor_errors": processor_errors,
            "key": key,
            "cpu_time_us": cpu_time_us,
            "peak_memory": peak_memory,
        }
        return execution

    def _to_core(self) -> tuple[Any, ...]:
        """The inverse of ``_from_core``: what the Rust core reads."""
        finished = None if self.finished_at is None else ns_from_datetime(self.finished_at)
        return (
            self.job_name,
            self.key,
            ns_from_datetime(self.started_at),
            finished,
            self.success,
            self.output,
            self.node_name,
            self.group,
            self.attempt,
            self.exit_code,
            self.error,
            self.output_truncated,
            self.output_size,
            self.processor_errors,
            self.cpu_time_us,
            self.peak_memory,
        )


_FIELD_NAMES = frozenset(f.name for f in dataclasses.fields(Execution))
# The order of the tuple the Rust core exchanges (see _from_core / _to_core).
_CORE_FIELDS = (
    "job_name", "key", "started_ns", "finished_ns", "success", "output", "node_name", "group", "attempt",
    "exit_code", "error", "output_truncated", "output_size", "processor_errors", "cpu_time_us", "peak_memory",
)  # fmt: skip
