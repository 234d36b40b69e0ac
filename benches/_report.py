"""The comparison table (Markdown, readable in a terminal too), the target summary, and the JSON record."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ._measure import Result
from ._registry import EXPECTED, PRIMARY, Target

BASELINES = ("python", "c")
HEADER = "| figure | unit | dkron_exec | Python | dkron/Py | C limit | dkron/C | target | met |"


def number(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def verdict(met: bool | None) -> str:
    return {True: "yes", False: "**no**", None: "n/a"}[met]


def target_cell(target: Target, result: Result) -> str:
    text = target.describe().replace(" c", " C").replace(" python", " Py")
    if target.kind == "ratio" and target.baseline not in BASELINES:
        # A baseline with no column of its own (e.g. the bare spawn rate): show the ratio here.
        theirs = number(result.medians.get(target.baseline))
        text += f" (now {ratio(result.ratio(target.baseline))}; {target.baseline} {theirs})"
    return text


def row(result: Result) -> str:
    fig, med = result.figure, result.medians
    cells = [fig.title, fig.unit, number(med.get(PRIMARY))]
    for name in BASELINES:
        cells += [number(med.get(name)), ratio(result.ratio(name))]
    cells.append("; ".join(target_cell(t, result) for t in fig.targets))
    cells.append("; ".join(verdict(t.met(med, result.ratios)) for t in fig.targets))
    if result.errors:
        cells[0] += " (failed: " + ", ".join(result.errors) + ")"
    return "| " + " | ".join(cells) + " |"


def one_line(error: str, limit: int = 300) -> str:
    """An error as one table-safe line (a build's stderr has newlines and may be long)."""
    text = " ".join(error.split()).replace("|", "/")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def failed_row(group: str, error: str) -> str:
    """The row of a group that has no figure to show: it failed before measuring anything."""
    title = EXPECTED.get(group, group)
    cells = [f"{title} (group {group!r} FAILED: {one_line(error)})", *["-"] * (HEADER.count(" | ") - 1)]
    cells.append("**failed**")
    return "| " + " | ".join(cells) + " |"


def table(results: Iterable[Result], lost: dict[str, str] | None = None) -> str:
    """The figures' rows, then one row per group in ``lost`` (group: error) that measured nothing."""
    lines = [HEADER, "|" + "---|" * HEADER.count(" | ") + "---|"]
    lines += [row(r) for r in results]
    lines += [failed_row(group, error) for group, error in (lost or {}).items()]
    return "\n".join(lines)


def target_summary(results: Iterable[Result]) -> dict[str, dict[str, Any]]:
    """Each of the issue's targets: met only when every row that counts towards it is met."""
    summary: dict[str, dict[str, Any]] = {}
    for result in results:
        for target in result.figure.targets:
            entry = summary.setdefault(target.label, {"met": True, "missed": [], "unmeasured": []})
            met = target.met(result.medians, result.ratios)
            if met is None:
                entry["unmeasured"].append(result.figure.title)
            elif not met:
                entry["met"] = False
                entry["missed"].append(result.figure.title)
    for entry in summary.values():
        if entry["met"] and entry["unmeasured"]:
            entry["met"] = None
    return summary


def summary_lines(
    summary: dict[str, dict[str, Any]], skipped: dict[str, str], failed: dict[str, str] | None = None
) -> list[str]:
    lines = []
    for label, entry in summary.items():
        status = {True: "met", False: "NOT met", None: "not measured"}[entry["met"]]
        detail = f" (missed at: {', '.join(entry['missed'])})" if entry["missed"] else ""
        lines.append(f"- {label}: {status}{detail}")
    lines += [f"- {name}: not measured ({reason})" for name, reason in skipped.items()]
    lines += [f"- {name}: group FAILED ({one_line(error)})" for name, error in (failed or {}).items()]
    return lines


def legend(results: Iterable[Result]) -> list[str]:
    """What each column means, per figure family (the notes of the first figure of each)."""
    seen: dict[str, str] = {}
    for result in results:
        family = result.figure.series or result.figure.id
        if family not in seen:
            notes = "; ".join(f"{s.name}: {s.note}" for s in result.figure.subjects if s.note)
            seen[family] = f"- {family}: {notes}"
    return list(seen.values())


def record(result: Result, group: str) -> dict[str, Any]:
    fig = result.figure
    return {
        "id": fig.id,
        "group": group,
        "title": fig.title,
        "unit": fig.unit,
        "higher_is_better": fig.higher_is_better,
        "series": fig.series,
        "x": fig.x,
        "subjects": {s.name: s.note for s in fig.subjects},
        "samples": result.samples,
        "medians": result.medians,
        "ratios": result.ratios,
        "targets": [
            {"target": t.describe(), "label": t.label, "met": t.met(result.medians, result.ratios)}
            for t in fig.targets
        ],
        "errors": result.errors,
    }
