"""The registry of benchmark figures: what each group measures, against which baselines, with which targets.

A group is a ``benches/bench_*.py`` module that decorates a builder with :func:`group`. The builder gets an
:class:`Env` and returns :class:`Figure` objects; both ``python -m benches.compare`` and pytest read them,
so a figure is written once. A builder raises :class:`Missing` when a component it needs is not built yet:
the group is then skipped with a note. Any other error, an ``ImportError`` included, fails the group: a
broken bench must not pass for a skipped one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Mode = Literal["test", "bench", "quick", "full"]
PRIMARY = "dkron_exec"


class Missing(Exception):
    """A component the group measures does not exist (yet) in this build."""


@dataclass(frozen=True)
class Env:
    """Where and how hard to measure. ``test``: pytest with benchmarks disabled (every figure once, tiny);
    ``bench``: pytest-benchmark; ``quick`` / ``full``: the comparison runner."""

    mode: Mode
    results: Path

    @property
    def is_test(self) -> bool:
        return self.mode == "test"

    def pick(self, test: int, quick: int, full: int | None = None) -> int:
        """A size or count for this mode (``bench`` uses the quick one)."""
        if self.mode == "test":
            return test
        if self.mode == "full" and full is not None:
            return full
        return quick


@dataclass(frozen=True)
class Subject:
    """One way of doing the figure's work. ``sample()`` does one sample's worth of it and returns the
    figure's value (a rate, or a quantity such as peak RSS growth)."""

    name: str
    sample: Callable[[], float]
    note: str = ""


@dataclass(frozen=True)
class Target:
    """``ratio``: dkron_exec / ``baseline`` must be at least ``value`` (higher is better);
    ``at_most``: dkron_exec's value must be at most ``value`` (e.g. MiB of memory growth)."""

    kind: Literal["ratio", "at_most"]
    value: float
    baseline: str = ""
    label: str = ""
    """The issue's target this row counts towards (rows with the same label are summarised together)."""

    def describe(self) -> str:
        if self.kind == "ratio":
            return f">= {self.value:g}x {self.baseline}"
        return f"<= {self.value:g}"

    def met(self, values: dict[str, float], ratios: dict[str, float | None]) -> bool | None:
        """``values``: medians by subject; ``ratios``: dkron_exec / baseline by baseline."""
        if self.kind == "at_most":
            mine = values.get(PRIMARY)
            return None if mine is None else mine <= self.value
        ratio = ratios.get(self.baseline)
        return None if ratio is None else ratio >= self.value


@dataclass
class Figure:
    """One row of the table. ``subjects`` are dkron_exec, then its baselines: plain Python, then the C loop
    (the physical limit), all measured in the same run and interleaved.
    ``series``/``x`` place the figure on a scaling chart."""

    id: str
    title: str
    unit: str
    subjects: list[Subject]
    targets: list[Target] = field(default_factory=list)
    higher_is_better: bool = True
    series: str = ""
    x: float = 0.0
    timed: bool = True
    """False for figures that are not durations (memory): pytest runs them without the timer."""

    @property
    def baselines(self) -> list[str]:
        return [s.name for s in self.subjects[1:]]


Builder = Callable[[Env], list[Figure]]


@dataclass(frozen=True)
class Group:
    name: str
    title: str
    build: Builder


_GROUPS: dict[str, Group] = {}

# The groups the issue asks for, in table order; a missing one is reported as not built yet.
EXPECTED = {
    "spawn": "spawn, one at a time and N in flight",
    "capture": "output capture",
    "plugin": "plugin round trip",
    "files": "files processor",
    "syslog": "syslog processor",
    "job": "whole job: files + syslog + store",
}


def group(name: str, title: str = "") -> Callable[[Builder], Builder]:
    """Registers a group's figure builder under ``name``."""

    def register(build: Builder) -> Builder:
        _GROUPS[name] = Group(name, title or EXPECTED.get(name, name), build)
        return build

    return register


def registered() -> dict[str, Group]:
    return dict(_GROUPS)


def build(name: str, env: Env) -> list[Figure]:
    """The group's figures; raises Missing when the group or a component it needs is not there (only
    then: an ImportError is a broken bench, and fails)."""
    entry = _GROUPS.get(name)
    if entry is None:
        raise Missing(f"no benches/bench_*.py registers group {name!r} yet")
    return entry.build(env)
