"""A JSON syntax error told as an editor would: the file, line and column, and the offending
line only (not the whole document, which may be kilobytes).

The line is shown only when the file is the text of a JSON object gone wrong: a file that is not
(a symlink to a key file, a binary) is refused without a byte of it in the message, since
messages end up in logs that others read."""

from __future__ import annotations

import orjson

_WIDTH = 100  # characters of the offending line shown around the column
_BLANK = b" \t\r\n"
_BOM = b"\xef\xbb\xbf"


def looks_like_a_json_object(data: bytes) -> bool:
    """UTF-8 text that starts (after blanks) with ``{``, without control characters: what a job file
    with a typo is, and what a file of secrets or a binary is not."""
    body = data.removeprefix(_BOM).lstrip(_BLANK)
    if not body.startswith(b"{"):
        return False
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(ch >= " " or ch in "\t\r\n" for ch in text) and "\x7f" not in text


def location(source: str, data: bytes, exc: orjson.JSONDecodeError) -> str:
    """``FILE:LINE:COLUMN: not valid JSON: WHY`` (orjson's reason quotes nothing of the data)."""
    why = exc.msg
    if not looks_like_a_json_object(data):
        why += " (the file is not a JSON object; its content is not shown)"
    return f"{source}:{max(1, exc.lineno)}:{max(1, exc.colno)}: not valid JSON: {why}"


def excerpt(data: bytes, exc: orjson.JSONDecodeError) -> str:
    """The offending line and a caret under the column, indented; ``""`` when the file is not a
    JSON object's text (see :func:`looks_like_a_json_object`)."""
    if not looks_like_a_json_object(data):
        return ""
    lines = data.decode("utf-8").splitlines() or [""]
    line_no = max(1, min(exc.lineno, len(lines)))
    line = lines[line_no - 1].expandtabs(1)
    col = max(1, exc.colno)
    start = max(0, min(col - 1 - _WIDTH // 2, len(line) - _WIDTH))
    shown = line[start : start + _WIDTH]
    lead = "..." if start > 0 else ""
    tail = "..." if start + _WIDTH < len(line) else ""
    caret = " " * (len(lead) + col - 1 - start) + "^"
    return f"  {lead}{shown}{tail}\n  {caret}"


def describe(source: str, data: bytes, exc: orjson.JSONDecodeError) -> str:
    """:func:`location`, then the :func:`excerpt` on the lines below (when there is one)."""
    shown = excerpt(data, exc)
    return location(source, data, exc) + (f"\n{shown}" if shown else "")
