"""Dkron schedule specs: parsing and "when does it fire next".

Dkron parses schedules with robfig/cron v3 (``Second|Minute|Hour|Dom|Month|Dow|Descriptor``) plus a few
extensions of its own (``extcron``, ``scheduler.go``). This module implements the same language:

* Six whitespace-separated fields, seconds first: ``second minute hour day-of-month month day-of-week``.
  Each field is a comma list of ``*``/``?``, ``N``, ``N-M``, with an optional ``/step``; ``N/step`` means
  ``N-max/step``. Months ``JAN``-``DEC`` and weekdays ``SUN``-``SAT`` may be given by name
  (case-insensitive); weekdays are 0-6 with Sunday 0. ``L``, ``W`` and ``#`` are not supported.
* Day matching follows robfig: if either day field is a plain ``*``/``?`` (without a step > 1) a day must
  match both fields, otherwise it matches when *either* field matches.
* Descriptors ``@yearly``/``@annually``, ``@monthly``, ``@weekly``, ``@daily``/``@midnight``,
  ``@hourly``, and Dkron's ``@minutely`` (``0 * * * * *``), ``@manually`` (never fires),
  ``@at <RFC3339>`` (fires once, if still in the future) and ``@every <Go duration>`` (a constant
  interval, rounded down to whole seconds, at least 1s: the next run is ``after`` truncated to the second
  plus the interval).
* A ``TZ=<zone> `` or ``CRON_TZ=<zone> `` prefix selects the time zone the fields are read in.
* ``~`` in a field is replaced by a value derived from the job name (Dkron's "hash"): with ``h`` the sum of
  the name's code points, seconds and minutes get ``h % 60``, hours ``h % 24``, day-of-month
  ``h % 28 + 1``, month ``h % 12 + 1`` and day-of-week ``h % 7``. Specs starting with ``@`` are left alone.
* A job ``timezone`` applies as if ``CRON_TZ=<timezone> `` were prepended, but only when the spec does not
  start with ``@``, ``TZ=`` or ``CRON_TZ=``. So, as in Dkron, **descriptors (``@daily`` ...) ignore the job
  time zone and use the local time zone of the process** (``$TZ``, else ``/etc/localtime``, else UTC, the
  way Go picks ``time.Local``), unless the spec itself carries a ``TZ=`` prefix.

:meth:`Schedule.next` follows robfig's field-by-field search, including how it moves across daylight-saving
changes: hours, minutes and seconds advance in real (elapsed) time, so a wall time that does not exist on a
spring-forward day is skipped for that day, and a wall time that occurs twice on a fall-back day fires twice.
It gives up (returns ``None``) when nothing fires within five years.

Small differences from Dkron, all additions: a ``TZ=`` prefix may precede Dkron's own descriptors
(``@minutely``, ``@manually``, ``@at``), which Dkron rejects; surrounding whitespace is ignored; an empty
field (``"1,,2"`` is fine, ``","`` is not) is an error rather than a field that never matches; ``~`` is
counted per field even if fields are separated by several spaces.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo

from . import _core

__all__ = ["Schedule", "ScheduleError", "load_timezone", "local_timezone", "parse_rfc3339"]

_UTC = timezone.utc
_EPOCH = datetime(1970, 1, 1, tzinfo=_UTC)
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_SEARCH_YEARS = 5  # robfig gives up after this many years


class ScheduleError(ValueError):
    """A schedule spec is invalid. ``reason`` says why, without repeating the spec."""

    def __init__(self, spec: str, reason: str) -> None:
        self.spec = spec
        self.reason = reason
        super().__init__(f"invalid schedule {spec!r}: {reason}")


# ---------------------------------------------------------------------------------------------- time zones


def load_timezone(name: str) -> tzinfo | None:
    """Load a zone the way Go's ``time.LoadLocation`` names it.

    ``""`` and ``"UTC"`` are UTC; ``"Local"`` returns ``None``, meaning "the process's local zone, looked up
    when used". Raises ``ValueError`` for an unknown zone.
    """
    if name in ("", "UTC"):
        return _UTC
    if name == "Local":
        return None
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError, OSError) as exc:  # ZoneInfoNotFoundError is a KeyError
        raise ValueError(f"unknown time zone {name!r}") from exc


def local_timezone() -> tzinfo:
    """The process's local zone, chosen like Go's ``time.Local``: ``$TZ``, else /etc/localtime, else UTC."""
    return _local_timezone_for(os.environ.get("TZ"))


@functools.lru_cache(maxsize=8)
def _local_timezone_for(tz_env: str | None) -> tzinfo:
    path: str | None = None
    if tz_env is None:
        path = "/etc/localtime"
    else:
        name = tz_env.removeprefix(":")
        if name in ("", "UTC"):
            return _UTC
        if name.startswith("/"):
            path = name
        else:
            try:
                return ZoneInfo(name)
            except (KeyError, ValueError, OSError):
                return _UTC  # Go falls back to UTC too
    try:
        with open(path, "rb") as fh:
            return ZoneInfo.from_file(fh, key="Local")
    except (OSError, ValueError):
        return _UTC


_RFC3339 = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})")


def parse_rfc3339(text: str) -> datetime:
    """Parse an RFC 3339 time like Go's ``time.Parse(time.RFC3339, ...)``; sub-microseconds are dropped."""
    m = _RFC3339.fullmatch(text)
    if m is None:
        raise ValueError(f"not an RFC 3339 time (like 2006-01-02T15:04:05Z): {text!r}")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    micros = int((m.group(7) or "0").ljust(6, "0")[:6])
    zone = m.group(8)
    if zone == "Z":
        tz: tzinfo = _UTC
    else:
        hours, minutes = int(zone[1:3]), int(zone[4:6])
        if hours > 23 or minutes > 59:
            raise ValueError(f"bad time zone offset in {text!r}")
        sign = -1 if zone[0] == "-" else 1
        tz = timezone(sign * timedelta(hours=hours, minutes=minutes))
    try:
        return datetime(year, month, day, hour, minute, second, micros, tzinfo=tz)
    except ValueError as exc:
        raise ValueError(f"bad date or time in {text!r}: {exc}") from None


def _offset_at(ts: int, tz: tzinfo) -> int:
    offset = datetime.fromtimestamp(ts, tz).utcoffset()
    return 0 if offset is None else int(offset.total_seconds())


def _go_date(tz: tzinfo, year: int, month: int, day: int, hour: int, minute: int, second: int) -> int:
    """Unix time of a wall time, normalised like Go's ``time.Date`` (out-of-range fields carry over).

    A wall time that falls in a DST gap or overlap is resolved the way Go does it: take the offset in force
    at the wall time read as UTC, and re-check it once at the resulting instant.
    """
    year += (month - 1) // 12
    month = (month - 1) % 12 + 1
    days = date(year, month, 1).toordinal() - _EPOCH_ORDINAL + day - 1
    wall = days * 86400 + hour * 3600 + minute * 60 + second
    offset = _offset_at(wall, tz)
    if offset:
        corrected = _offset_at(wall - offset, tz)
        if corrected != offset:
            offset = corrected
    return wall - offset


# ---------------------------------------------------------------------------------------------- cron fields


@dataclass(frozen=True)
class _FieldSpec:
    name: str
    low: int
    high: int
    names: dict[str, int] | None = None


_MONTH_NAMES = {
    "jan": 1, "feb": 2, "mar": 3, "apr": 4, "may": 5, "jun": 6,
    "jul": 7, "aug": 8, "sep": 9, "oct": 10, "nov": 11, "dec": 12,
}  # fmt: skip
_DAY_NAMES = {"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}
_FIELD_SPECS = (
    _FieldSpec("second", 0, 59),
    _FieldSpec("minute", 0, 59),
    _FieldSpec("hour", 0, 23),
    _FieldSpec("day-of-month", 1, 31),
    _FieldSpec("month", 1, 12, _MONTH_NAMES),
    _FieldSpec("day-of-week", 0, 6, _DAY_NAMES),
)
_HASH_MODULI = ((60, 0), (60, 0), (24, 0), (28, 1), (12, 1), (7, 0))  # (modulus, offset) per field
_DESCRIPTORS = {
    "@yearly": "0 0 0 1 1 *",
    "@annually": "0 0 0 1 1 *",
    "@monthly": "0 0 0 1 * *",
    "@weekly": "0 0 0 * * 0",
    "@daily": "0 0 0 * * *",
    "@midnight": "0 0 0 * * *",
    "@hourly": "0 0 * * * *",
    "@minutely": "0 * * * * *",  # Dkron's extension
}
_ATOI = re.compile(r"[+-]?[0-9]+")  # what Go's strconv.Atoi accepts
_TZ_PREFIX = re.compile(r"(?:CRON_)?TZ=(\S*)\s+(\S.*)", re.DOTALL)


@dataclass(frozen=True)
class _CronFields:
    """One bit per allowed value; ``*_star`` mark a day field given as an unrestricted ``*``/``?``."""

    second: int
    minute: int
    hour: int
    dom: int
    month: int
    dow: int
    dom_star: bool
    dow_star: bool

    def day_matches(self, t: datetime) -> bool:
        dom_ok = bool(self.dom >> t.day & 1)
        dow_ok = bool(self.dow >> ((t.weekday() + 1) % 7) & 1)  # Python's Monday=0 -> cron's Monday=1
        if self.dom_star or self.dow_star:
            return dom_ok and dow_ok
        return dom_ok or dow_ok


def _parse_number(token: str, field: _FieldSpec) -> int:
    if field.names is not None and token.lower() in field.names:
        return field.names[token.lower()]
    if not _ATOI.fullmatch(token):
        what = "a number or name" if field.names else "a number"
        raise ValueError(f"field {field.name!r} value {token!r} is not {what}")
    value = int(token)
    if value < 0:
        raise ValueError(f"field {field.name!r} value {token!r} is negative")
    return value


def _parse_item(item: str, field: _FieldSpec) -> tuple[int, bool]:
    """Parse one comma-separated item into (bits, is_star), following robfig's ``getRange``."""
    range_and_step = item.split("/")
    if len(range_and_step) > 2:
        raise ValueError(f"field {field.name!r} item {item!r} has more than one '/'")
    low_high = range_and_step[0].split("-")
    star = False
    if low_high[0] in ("*", "?"):
        # robfig ignores anything after "*-", so "*-5" means "*"; kept for compatibility.
        start, end, star = field.low, field.high, True
        start_token, end_token = low_high[0], low_high[0]
    else:
        if len(low_high) > 2:
            raise ValueError(f"field {field.name!r} item {item!r} has more than one '-'")
        start_token = low_high[0]
        end_token = low_high[-1]
        start = _parse_number(start_token, field)
        end = _parse_number(end_token, field) if len(low_high) == 2 else start
    step = 1
    if len(range_and_step) == 2:
        step_token = range_and_step[1]
        if not _ATOI.fullmatch(step_token) or int(step_token) < 0:
            raise ValueError(f"field {field.name!r} step {step_token!r} is not a non-negative number")
        step = int(step_token)
        if len(low_high) == 1:
            end, end_token = field.high, str(field.high)  # "N/step" means "N-max/step"
        if step > 1:
            star = False
    if start < field.low:
        raise ValueError(f"field {field.name!r} value {start_token!r} out of range {field.low}-{field.high}")
    if end > field.high:
        raise ValueError(f"field {field.name!r} value {end_token!r} out of range {field.low}-{field.high}")
    if start > end:
        raise ValueError(f"field {field.name!r} range {item!r} starts after it ends")
    if step == 0:
        raise ValueError(f"field {field.name!r} step in {item!r} must be a positive number")
    bits = 0
    for value in range(start, end + 1, step):
        bits |= 1 << value
    return bits, star


def _parse_field(text: str, field: _FieldSpec) -> tuple[int, bool]:
    items = [item for item in text.split(",") if item]  # robfig skips empty items
    if not items:
        raise ValueError(f"field {field.name!r} is empty")
    bits, star = 0, False
    for item in items:
        item_bits, item_star = _parse_item(item, field)
        bits |= item_bits
        star = star or item_star
    return bits, star


_EVERY_UNITS = {"second": "s", "sec": "s", "minute": "m", "min": "m", "hour": "h"}


def _field_count_hint(parts: list[str]) -> str:
    """A way out for the two usual mistakes: classic five-field cron, and English."""
    if len(parts) == 5:
        return f"; Dkron's schedules start with a seconds field: did you mean {'0 ' + ' '.join(parts)!r}?"
    if len(parts) == 3 and parts[0].lower() == "every" and parts[1].isdigit():
        unit = _EVERY_UNITS.get(parts[2].lower().rstrip("s"))
        if unit:
            return f"; for an interval use @every: did you mean {f'@every {parts[1]}{unit}'!r}?"
    return ""


def _go_duration(text: str) -> int:
    """``_core.parse_go_duration`` with its ``(got "...")`` left off: the caller quotes the whole
    spec, so the message quotes one value, once."""
    try:
        return _core.parse_go_duration(text)
    except ValueError as exc:
        why = str(exc)
        # The binding appends ` (got <Rust debug of text>)`; the text's own quotes are escaped there,
        # so the first ` (got "` is where that suffix starts.
        cut = why.find(' (got "')
        raise ValueError(why[:cut] if cut >= 0 else why) from None


def _parse_fields(text: str) -> _CronFields:
    parts = text.split()
    if len(parts) != 6:
        raise ValueError(
            "expected exactly 6 fields (second minute hour day-of-month month day-of-week), "
            f"found {len(parts)}{_field_count_hint(parts)}"
        )
    parsed = [_parse_field(part, spec) for part, spec in zip(parts, _FIELD_SPECS, strict=True)]
    return _CronFields(
        second=parsed[0][0],
        minute=parsed[1][0],
        hour=parsed[2][0],
        dom=parsed[3][0],
        month=parsed[4][0],
        dow=parsed[5][0],
        dom_star=parsed[3][1],
        dow_star=parsed[5][1],
    )


def _name_hash(job_name: str) -> int:
    return sum(ord(ch) for ch in job_name)


def _replace_hash(fields_text: str, job_name: str) -> str:
    """Replace ``~`` in each field by the value Dkron derives from the job name."""
    if "~" not in fields_text:
        return fields_text
    h = _name_hash(job_name)
    out = []
    for index, part in enumerate(fields_text.split()):
        modulus, offset = _HASH_MODULI[index] if index < len(_HASH_MODULI) else (60, 0)
        out.append(part.replace("~", str(h % modulus + offset)))
    return " ".join(out)


def _split_tz_prefix(text: str) -> tuple[str | None, str]:
    """Split ``TZ=<zone> <rest>`` / ``CRON_TZ=<zone> <rest>`` into the zone name and the rest."""
    if not text.startswith(("TZ=", "CRON_TZ=")):
        return None, text
    m = _TZ_PREFIX.fullmatch(text)
    if m is None:
        raise ValueError("a TZ=/CRON_TZ= prefix must be followed by a space and a schedule")
    return m.group(1), m.group(2)


# ---------------------------------------------------------------------------------------------- Schedule


class Schedule:
    """A parsed Dkron schedule. Build it with :meth:`Schedule.parse`; ask :meth:`next` when it fires."""

    __slots__ = ("_at", "_delay", "_fields", "_tz", "kind", "spec")

    spec: str
    """The spec as given to :meth:`parse`."""
    kind: str
    """``"cron"``, ``"every"``, ``"at"`` or ``"never"``."""

    def __init__(self) -> None:
        self.spec = ""
        self.kind = "never"
        self._fields: _CronFields | None = None
        self._tz: tzinfo | None = None  # None: the process's local zone, looked up on each next()
        self._delay = 0
        self._at: datetime | None = None

    def __repr__(self) -> str:
        return f"Schedule.parse({self.spec!r})"

    @property
    def location(self) -> tzinfo | None:
        """The zone cron fields are read in; ``None`` means the local zone of the process."""
        return self._tz

    @property
    def interval(self) -> float | None:
        """For ``@every``: the interval in whole seconds, else ``None``."""
        return float(self._delay) if self.kind == "every" else None

    @classmethod
    def parse(cls, spec: str, *, job_name: str = "", timezone: str = "") -> Schedule:
        """Parse a Dkron schedule spec; ``job_name`` feeds ``~`` and ``timezone`` is the job's time zone.

        Raises :class:`ScheduleError` (a ``ValueError``) naming what is wrong.
        """
        if not isinstance(spec, str):
            raise ScheduleError(repr(spec), "a schedule must be a string")
        try:
            return cls._parse(spec, job_name, timezone)
        except ScheduleError:
            raise
        except ValueError as exc:
            raise ScheduleError(spec, str(exc)) from None

    @classmethod
    def _parse(cls, spec: str, job_name: str, job_timezone: str) -> Schedule:
        text = spec.strip()
        if not text:
            raise ValueError("empty schedule")
        if job_timezone and not text.startswith(("@", "TZ=", "CRON_TZ=")):
            text = f"CRON_TZ={job_timezone} {text}"
        zone_name, body = _split_tz_prefix(text)
        self = cls()
        self.spec = spec
        self._tz = load_timezone(zone_name) if zone_name is not None else None
        if not body.startswith("@"):
            self.kind = "cron"
            self._fields = _parse_fields(_replace_hash(body, job_name))
            return self
        word, _, argument = body.partition(" ")
        argument = argument.strip()
        if word == "@manually" and not argument:
            self.kind = "never"
        elif word == "@at":
            self.kind = "at"
            self._at = parse_rfc3339(argument)
        elif word == "@every":
            self.kind = "every"
            delay_ns = _go_duration(argument)
            # robfig: at least one second, and whole seconds only.
            self._delay = max(delay_ns, 1_000_000_000) // 1_000_000_000
        elif word in _DESCRIPTORS and not argument:
            self.kind = "cron"
            self._fields = _parse_fields(_DESCRIPTORS[word])
        else:
            raise ValueError(
                f"unknown descriptor {body!r} (use @yearly, @annually, @monthly, @weekly, @daily, @midnight, "
                "@hourly, @minutely, @manually, @at <RFC3339 time> or @every <duration>)"
            )
        return self

    def next(self, after: datetime) -> datetime | None:
        """The first time strictly after ``after`` when the schedule fires, in ``after``'s time zone.

        A naive ``after`` is taken as UTC (and the result is then in UTC). ``None`` when it never fires
        again: ``@manually``, a past ``@at``, or no match within five years.
        """
        if after.tzinfo is None:
            after = after.replace(tzinfo=_UTC)
        out_tz = after.tzinfo or _UTC
        if self.kind == "never":
            return None
        if self.kind == "at":
            assert self._at is not None
            return self._at.astimezone(out_tz) if self._at > after else None
        after_ts = (after - _EPOCH) // timedelta(seconds=1)  # floor, exact
        if self.kind == "every":
            return datetime.fromtimestamp(after_ts + self._delay, out_tz)
        assert self._fields is not None
        tz = self._tz if self._tz is not None else local_timezone()
        try:
            found = _cron_next(self._fields, tz, after_ts + 1)
        except (OverflowError, ValueError):  # ran past year 9999
            return None
        return None if found is None else datetime.fromtimestamp(found, out_tz)


def _cron_next(f: _CronFields, tz: tzinfo, t: int) -> int | None:
    """robfig's ``SpecSchedule.Next`` on Unix seconds: the first matching second at or after ``t``.

    Each field is advanced in turn; when one overflows into the next larger unit the search restarts
    ("wraps"). Days and months move in wall-clock terms (Go's ``AddDate``), hours, minutes and seconds in
    elapsed time, which is what makes DST gaps skip and DST overlaps repeat.
    """

    def local(ts: int) -> datetime:
        return datetime.fromtimestamp(ts, tz)

    year_limit = local(t).year + _SEARCH_YEARS
    added = False  # once a field moved, the smaller fields start from zero
    while True:
        lt = local(t)
        if lt.year > year_limit:
            return None

        wrapped = False
        while not f.month >> lt.month & 1:
            if not added:
                added = True
                lt = local(t := _go_date(tz, lt.year, lt.month, 1, 0, 0, 0))
            lt = local(t := _go_date(tz, lt.year, lt.month + 1, lt.day, lt.hour, lt.minute, lt.second))
            if lt.month == 1:
                wrapped = True
                break
        if wrapped:
            continue

        while not f.day_matches(lt):
            if not added:
                added = True
                lt = local(t := _go_date(tz, lt.year, lt.month, lt.day, 0, 0, 0))
            lt = local(t := _go_date(tz, lt.year, lt.month, lt.day + 1, lt.hour, lt.minute, lt.second))
            # Midnight may not exist (DST at 00:00): pull back to the day's start, as robfig does.
            if lt.hour != 0:
                t += (24 - lt.hour) * 3600 if lt.hour > 12 else -lt.hour * 3600
                lt = local(t)
            if lt.day == 1:
                wrapped = True
                break
        if wrapped:
            continue

        while not f.hour >> lt.hour & 1:
            if not added:
                added = True
                lt = local(t := _go_date(tz, lt.year, lt.month, lt.day, lt.hour, 0, 0))
            lt = local(t := t + 3600)
            if lt.hour == 0:
                wrapped = True
                break
        if wrapped:
            continue

        while not f.minute >> lt.minute & 1:
            if not added:
                added = True
                t -= t % 60
            lt = local(t := t + 60)
            if lt.minute == 0:
                wrapped = True
                break
        if wrapped:
            continue

        while not f.second >> lt.second & 1:
            added = True
            lt = local(t := t + 1)
            if lt.second == 0:
                wrapped = True
                break
        if wrapped:
            continue
        return t
