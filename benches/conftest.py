"""pytest side of the benchmarks: every registered figure becomes one test per subject.

With ``--benchmark-disable`` each runs once with tiny sizes (CI: the benches cannot rot); otherwise
pytest-benchmark times them. Groups whose component is missing are skipped with the reason.
"""

from __future__ import annotations

import pytest

from benches._baselines import RESULTS
from benches._registry import Env, Missing, build


def _env(config: pytest.Config) -> Env:
    disabled = config.getoption("benchmark_disable", False) or config.getoption("benchmark_skip", False)
    return Env(mode="test" if disabled else "bench", results=RESULTS)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case" not in metafunc.fixturenames:
        return
    try:
        figures = build(metafunc.module.GROUP, _env(metafunc.config))
    except Missing as exc:
        metafunc.parametrize("case", [pytest.param(None, marks=pytest.mark.skip(reason=str(exc)))])
        return
    params = [pytest.param((f, s), id=f"{f.id}-{s.name}") for f in figures for s in f.subjects]
    metafunc.parametrize("case", params)
