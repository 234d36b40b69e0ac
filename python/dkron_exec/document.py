"""The rules every value of a job document follows, whatever its field: it must be JSON that can be
written back as it was read, and text that can be handed to a process.

:func:`check_document` walks the whole document (known fields, Dkron's read-only fields and unknown
ones alike) before any field is read, and raises :class:`~dkron_exec.errors.JobError` naming the
first value that breaks a rule:

* **Nesting**: arrays and objects at most :data:`MAX_DEPTH` deep, counting the document itself.
  JSON writers stop somewhere (orjson at 255 levels) and a document that loads must write back.
* **Strings** (values and keys) must be encodable as UTF-8: a lone surrogate (U+D800..U+DFFF) can be
  neither written as JSON nor passed to a process.
* **Numbers**: floats must be finite (JSON has no NaN or infinity); integers must lie in
  -2**63 .. 2**64-1, the range JSON writers and the Rust core take.
* **Types**: only ``str``, ``int``, ``float``, ``bool``, ``None``, ``list`` and ``dict`` with string
  keys (what ``json.loads`` gives; subclasses too, except of ``float``, such as ``numpy.float64``, which
  JSON writers refuse); a tuple, a set or bytes would not read back the same.

Paths name objects' keys with dots and arrays' items with ``[i]``: ``executor_config.env``,
``dependent_jobs[2]``, ``processors.files``; a key that is empty, holds ``.``, ``[``, ``]`` or ``"``,
or a control character, is quoted (:func:`key_path`): ``tags["a.b"]``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .errors import JobError

__all__ = ["MAX_DEPTH", "check_document", "key_path"]

MAX_DEPTH = 64
"""How deep arrays and objects may nest, the document counting as the first level."""

_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1


def check_document(doc: Mapping[str, Any]) -> None:
    """Raise JobError for the first value (in document order) that breaks a rule above."""
    _check(doc, [], top=True)


# The path to the value being checked, as keys and indexes; made into text only for an error.
_Parts = list[str | int]


def _check(value: Any, parts: _Parts, top: bool = False) -> None:
    """One value and, depth first, what it holds. Recursion is bounded: nothing deeper than
    MAX_DEPTH is entered."""
    kind = type(value)
    if kind is str:
        if not value.isascii():
            _check_text(parts, value)
    elif (
        kind is dict or (top and isinstance(value, Mapping)) or (kind is not list and isinstance(value, dict))
    ):
        _check_depth(parts, value)
        for key, item in value.items():
            if type(key) is not str and not isinstance(key, str):
                raise JobError(_path(parts), key, "object keys must be strings")
            if not key.isascii():
                _check_text(parts, key, what="an object key")
            parts.append(key)
            _check(item, parts)
            parts.pop()
    elif kind is list or isinstance(value, list):
        _check_depth(parts, value)
        for i, item in enumerate(value):
            parts.append(i)
            _check(item, parts)
            parts.pop()
    elif value is None or kind is bool:
        pass
    elif kind is int or (isinstance(value, int) and not isinstance(value, bool)):
        if not _INT_MIN <= value <= _INT_MAX:
            raise JobError(_path(parts), value, "integer out of range (JSON writers take -2**63 .. 2**64-1)")
    elif kind is float:  # a subclass (numpy.float64) is not JSON to the writer
        if not math.isfinite(value):
            raise JobError(_path(parts), value, "numbers must be finite (JSON has no NaN or infinity)")
    elif isinstance(value, str):
        _check_text(parts, value)
    else:
        raise JobError(
            _path(parts),
            value,
            f"not a JSON value: {type(value).__name__} "
            "(use a string, number, boolean, null, array or object)",
        )


def _path(parts: _Parts) -> str:
    """The dotted path of ``parts``; the document itself is ``document``."""
    path = ""
    for part in parts:
        path = f"{path}[{part}]" if isinstance(part, int) else key_path(path, part)
    return path or "document"


def key_path(path: str, key: str) -> str:
    """``path.key``; a key that is empty, holds ``. [ ] "`` or breaks a line is quoted as a JSON
    string, ``path["a.b"]``, so that a path is one line and reads back. The Rust core's
    ``config::key_path`` follows the same rule."""
    if key and not any(c in '.[]"' or _breaks(c) for c in key):
        return f"{path}.{key}" if path else key
    quoted = "".join("\\" + c if c in '"\\' else f"\\u{ord(c):04x}" if _breaks(c) else c for c in key)
    return f'{path}["{quoted}"]'


def _breaks(c: str) -> bool:
    """A control character (Unicode's Cc) or a line or paragraph separator."""
    n = ord(c)
    return n < 0x20 or 0x7F <= n <= 0x9F or n in (0x2028, 0x2029)


def _check_depth(parts: _Parts, value: Any) -> None:
    # The document is level 1, so a container at len(parts) holds level len(parts) + 1.
    if len(parts) + 1 > MAX_DEPTH:
        raise JobError(_path(parts), value, f"nested deeper than {MAX_DEPTH} levels of arrays and objects")


def _check_text(parts: _Parts, text: str, what: str = "the text") -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise JobError(
            _path(parts),
            text,
            f"{what} contains a lone surrogate {text[exc.start]!r} at {exc.start}: it cannot be "
            "encoded as UTF-8, written as JSON or passed to a process",
        ) from None
