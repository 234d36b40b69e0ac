"""Runs one (figure, subject) pair under pytest: timed by pytest-benchmark, or once with it disabled."""

from __future__ import annotations

import math

import pytest

from ._registry import Figure, Subject


def run_case(case: tuple[Figure, Subject], request: pytest.FixtureRequest) -> None:
    figure, subject = case
    if figure.timed:
        benchmark = request.getfixturevalue("benchmark")
        benchmark.group = figure.id
        benchmark.extra_info.update(subject=subject.name, unit=figure.unit, note=subject.note)
        value = benchmark(subject.sample)
        benchmark.extra_info["value"] = value
    else:
        value = subject.sample()  # a quantity such as memory, not a duration: nothing to time
    # Not a timing assertion: a sample must be a number, or the measurement itself is broken.
    assert math.isfinite(value) and value >= 0, value
