"""The fenced snippets of README.md and docs/*.md, with their annotations.

An HTML comment on the line before a fence annotates it::

    <!-- snippet: not-run reason="why it cannot run here" -->
    <!-- snippet: timeout=120 needs=go -->
    <!-- snippet: continues -->          (runs after the previous snippet, in the same folder)
    <!-- snippet: excerpt-of=examples/plugins/tag_processor.py -->

``python``, ``sh``, ``bash`` and ``console`` fences run; a ``json`` fence that is a whole job
document is validated; other fences (output, formats, diagrams) are only text.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUN_LANGUAGES = {"python", "sh", "bash", "console"}
_FENCE = re.compile(r"^```([\w-]*)\s*$")
_ANNOTATION = re.compile(r"^<!--\s*snippet:(.*?)-->\s*$")
KNOWN_KEYS = {"not-run", "reason", "timeout", "needs", "continues", "excerpt-of"}


@dataclass
class Snippet:
    path: str  # relative to the repository root
    line: int  # the line of the opening fence (1-based)
    language: str
    text: str
    options: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"

    @property
    def runs(self) -> bool:
        return (
            self.language in RUN_LANGUAGES
            and "not-run" not in self.options
            and "excerpt-of" not in self.options
        )


def _parse_annotation(body: str, where: str) -> dict[str, str]:
    options: dict[str, str] = {}
    for word in shlex.split(body):
        key, _, value = word.partition("=")
        if key not in KNOWN_KEYS:
            raise ValueError(f"{where}: unknown snippet annotation {key!r} (known: {sorted(KNOWN_KEYS)})")
        options[key] = value
    if "not-run" in options and not options.get("reason"):
        raise ValueError(f'{where}: a not-run snippet needs reason="..."')
    return options


def snippets(path: Path) -> list[Snippet]:
    lines = path.read_text(encoding="utf-8").splitlines()
    rel = str(path.relative_to(ROOT))
    found: list[Snippet] = []
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        start = i
        end = start + 1
        while end < len(lines) and lines[end].rstrip() != "```":
            end += 1
        options: dict[str, str] = {}
        if start > 0 and (note := _ANNOTATION.match(lines[start - 1].strip())):
            options = _parse_annotation(note.group(1), f"{rel}:{start}")
        found.append(
            Snippet(rel, start + 1, match.group(1).lower(), "\n".join(lines[start + 1 : end]) + "\n", options)
        )
        i = end + 1
    return found


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def all_snippets() -> list[Snippet]:
    return [s for doc in documents() for s in snippets(doc)]


def groups(found: list[Snippet]) -> list[list[Snippet]]:
    """Runnable snippets; one marked ``continues`` joins the previous runnable one of its file."""
    out: list[list[Snippet]] = []
    for s in found:
        if not s.runs:
            continue
        if "continues" in s.options:
            if not out or out[-1][0].path != s.path:
                raise ValueError(f"{s.where}: 'continues' but no runnable snippet before it in {s.path}")
            out[-1].append(s)
        else:
            out.append([s])
    return out


def console_commands(text: str) -> str:
    """The commands of a console block: its ``$ `` lines."""
    return "".join(line[2:] + "\n" for line in text.splitlines() if line.startswith("$ "))
