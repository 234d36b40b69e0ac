"""Go durations and Dkron memory sizes, parsed the way Dkron parses them.

* :func:`parse_go_duration` follows Go's ``time.ParseDuration``: an optional sign, then one or more
  ``<number><unit>`` parts (``"1h30m"``, ``"1.5s"``, ``"-300ms"``), units ``ns``, ``us``, ``µs``,
  ``μs``, ``ms``, ``s``, ``m``, ``h``; a bare ``"0"`` is the only unit-less value. Like Go, the
  value must fit in a signed 64-bit count of nanoseconds.
* :func:`parse_byte_size` follows Dkron's ``validateMemoryLimit`` (``dkron/job.go``, v4), which
  decides what a shell job's ``mem_limit`` may be: a positive integer number of bytes, or a decimal
  number followed by a unit ``B``/``BYTES``, ``K``/``KB``, ``M``/``MB``, ``G``/``GB``,
  ``T``/``TB`` (case-insensitive, powers of 1024). As a documented extension the IEC spellings
  ``KiB``/``MiB``/``GiB``/``TiB`` are accepted too (same powers of 1024, as cloudfoundry's bytefmt
  reads them).
"""

from __future__ import annotations

import re

__all__ = ["parse_byte_size", "parse_go_duration", "parse_go_duration_ns"]

_NS_PER_UNIT = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # MICRO SIGN, as Go accepts
    "\u03bcs": 1_000,  # GREEK SMALL LETTER MU, as Go accepts
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60 * 1_000_000_000,
    "h": 3600 * 1_000_000_000,
}
_INT64_MAX = (1 << 63) - 1
# One "<digits>[.<digits>]<unit>" part; the unit is everything up to the next digit or dot, as in Go.
_PART = re.compile(r"([0-9]*)(?:\.([0-9]*))?([^0-9.]*)")


def parse_go_duration_ns(text: str) -> int:
    """Parse a Go duration string into integer nanoseconds (may be negative)."""
    if not isinstance(text, str):
        raise ValueError(f"invalid Go duration {text!r}: expected a string")
    body = text
    negative = False
    if body[:1] in ("-", "+"):
        negative = body[0] == "-"
        body = body[1:]
    if body == "0":
        return 0
    if body == "":
        raise ValueError(f"invalid Go duration {text!r}: empty")
    total = 0
    pos = 0
    while pos < len(body):
        m = _PART.match(body, pos)
        assert m is not None  # the pattern can match the empty string
        whole, frac, unit = m.group(1), m.group(2), m.group(3)
        if not whole and not frac:
            raise ValueError(f"invalid Go duration {text!r}: expected a number at {body[pos:]!r}")
        if not unit:
            raise ValueError(f"invalid Go duration {text!r}: missing unit (use ns, us, ms, s, m or h)")
        scale = _NS_PER_UNIT.get(unit)
        if scale is None:
            raise ValueError(
                f"invalid Go duration {text!r}: unknown unit {unit!r} (use ns, us, µs, ms, s, m or h)"
            )
        value = int(whole or "0") * scale
        if frac:
            # Go drops the fractional nanoseconds rather than rounding them.
            value += int(frac) * scale // 10 ** len(frac)
        total += value
        if total > _INT64_MAX + (1 if negative else 0):
            raise ValueError(f"invalid Go duration {text!r}: out of range (more than ~292 years)")
        pos = m.end()
    return -total if negative else total


def parse_go_duration(text: str) -> float:
    """Parse a Go duration string (``"1h30m"``, ``"1.5s"``, ``"300ms"``, ``"-1s"``) into seconds."""
    return parse_go_duration_ns(text) / 1_000_000_000


_BYTE_UNITS = {
    "": 1,
    "B": 1,
    "BYTES": 1,
    "K": 1 << 10,
    "KB": 1 << 10,
    "KIB": 1 << 10,
    "M": 1 << 20,
    "MB": 1 << 20,
    "MIB": 1 << 20,
    "G": 1 << 30,
    "GB": 1 << 30,
    "GIB": 1 << 30,
    "T": 1 << 40,
    "TB": 1 << 40,
    "TIB": 1 << 40,
}
_PLAIN_INT = re.compile(r"[+-]?[0-9]+")  # what Go's strconv.ParseInt(s, 10, 64) accepts
_SIZE = re.compile(r"([0-9.]+)(.*)")


def parse_byte_size(text: str) -> int:
    """Parse a Dkron ``mem_limit`` (``"1048576"``, ``"512MB"``, ``"1.5g"``) into a positive byte count."""
    if not isinstance(text, str):
        raise ValueError(f"invalid memory size {text!r}: expected a string")
    if _PLAIN_INT.fullmatch(text):
        value = int(text)
        if value <= 0:
            raise ValueError(f"invalid memory size {text!r}: must be greater than 0")
        if value > _INT64_MAX:  # int64, like Dkron
            raise ValueError(f"invalid memory size {text!r}: too large")
        return value
    m = _SIZE.fullmatch(text.strip().upper())
    if m is None:
        raise ValueError(f"invalid memory size {text!r}: expected a number of bytes or a number with a unit")
    number, unit = m.groups()
    if number.count(".") > 1 or number == ".":
        raise ValueError(f"invalid memory size {text!r}: bad number {number!r}")
    scale = _BYTE_UNITS.get(unit)
    if scale is None:
        raise ValueError(
            f"invalid memory size {text!r}: unknown unit {unit!r} (use B, K/KB, M/MB, G/GB or T/TB)"
        )
    value = int(float(number) * scale)
    if value <= 0:
        raise ValueError(f"invalid memory size {text!r}: must be at least 1 byte")
    if value > _INT64_MAX:
        raise ValueError(f"invalid memory size {text!r}: too large")
    return value
