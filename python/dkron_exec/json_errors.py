"""A JSON syntax error told as an editor would: the file, line and column, and the offending
line only (not the whole document, which may be kilobytes)."""

from __future__ import annotations

import orjson

_WIDTH = 100  # characters of the offending line shown around the column


def describe(source: str, data: bytes, exc: orjson.JSONDecodeError) -> str:
    """``FILE:LINE:COLUMN: not valid JSON: WHY`` then the line and a caret under the column."""
    lines = data.decode("utf-8", "replace").splitlines() or [""]
    line_no = max(1, min(exc.lineno, len(lines)))
    line = lines[line_no - 1].expandtabs(1)
    col = max(1, exc.colno)
    start = max(0, min(col - 1 - _WIDTH // 2, len(line) - _WIDTH))
    shown = line[start : start + _WIDTH]
    lead = "..." if start > 0 else ""
    tail = "..." if start + _WIDTH < len(line) else ""
    caret = " " * (len(lead) + col - 1 - start) + "^"
    return f"{source}:{line_no}:{col}: not valid JSON: {exc.msg}\n  {lead}{shown}{tail}\n  {caret}"
