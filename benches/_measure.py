"""Sampling: every subject of a figure in the same run, interleaved, reduced to medians."""

from __future__ import annotations

import statistics
import sys
import traceback
from dataclasses import dataclass, field

from ._registry import PRIMARY, Figure


@dataclass
class Result:
    figure: Figure
    samples: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def medians(self) -> dict[str, float]:
        return {name: statistics.median(v) for name, v in self.samples.items() if v}

    def ratio(self, baseline: str) -> float | None:
        """dkron_exec / baseline: the median of the per-round ratios. Subjects of one round run back to
        back, so pairing them cancels most of a shared machine's load drift; the ratio of medians is the
        fallback when a subject lost samples."""
        mine, theirs = self.samples.get(PRIMARY, []), self.samples.get(baseline, [])
        if not mine or not theirs:
            return None
        if len(mine) == len(theirs) and all(theirs):
            return statistics.median([a / b for a, b in zip(mine, theirs, strict=True)])
        base = statistics.median(theirs)
        return statistics.median(mine) / base if base else None

    @property
    def ratios(self) -> dict[str, float | None]:
        return {name: self.ratio(name) for name in self.figure.baselines}

    def spread(self, name: str) -> tuple[float, float] | None:
        values = self.samples.get(name)
        return (min(values), max(values)) if values else None


def measure(figure: Figure, reps: int, *, warmup: bool = True) -> Result:
    """``reps`` samples of each subject. Round r starts with subject r mod k, so no subject always runs
    first (or right after another one's cleanup); a subject that fails is dropped with its error."""
    result = Result(figure, {s.name: [] for s in figure.subjects})
    live = list(figure.subjects)
    if warmup and figure.timed:
        for subject in list(live):
            try:
                subject.sample()
            except Exception as exc:  # keep measuring the others; report this one
                result.errors[subject.name] = _describe(exc)
                live.remove(subject)
    for rep in range(reps):
        k = len(live)
        for subject in [live[(rep + i) % k] for i in range(k)] if k else []:
            if subject.name in result.errors:
                continue
            try:
                result.samples[subject.name].append(subject.sample())
            except Exception as exc:
                result.errors[subject.name] = _describe(exc)
    return result


def _describe(exc: BaseException) -> str:
    traceback.print_exception(exc, file=sys.stderr)
    return f"{type(exc).__name__}: {exc}"
