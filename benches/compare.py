"""One command: dkron_exec against plain Python and the C limit, on this machine, in one run.

    python -m benches.compare            # quick: a few minutes
    python -m benches.compare --full     # more samples, bigger loops
    python -m benches.compare --only spawn --reps 3

Prints the table (medians, ratios, targets), writes ``bench-results/results.json`` (plus a timestamped
copy), ``bench-results/table.md`` and PNG charts. Every group is a ``benches/bench_*.py`` module that
registers its figures (see ``_registry.py``); a group whose component is not built (``Missing``) is skipped
with a note. A group that fails (its module does not import, its builder raises, or a subject fails to
measure) is marked failed with its error in the table and the files, the other groups are still measured
and written, and the command exits 1 at the end naming the failed groups.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
import time
from pathlib import Path

from . import _baselines, _charts, _machine, _report
from ._measure import Result, _describe, measure
from ._registry import EXPECTED, Env, Missing, build, registered

PACKAGE = Path(__file__).parent


def discover() -> dict[str, str]:
    """Imports every benches/bench_NAME.py; returns the error of each that does not import, by group
    NAME (a broken bench is a failed group, not a skipped one)."""
    broken = {}
    for info in pkgutil.iter_modules([str(PACKAGE)]):
        if info.name.startswith("bench_"):
            try:
                importlib.import_module(f"{__package__}.{info.name}")
            except Exception as exc:
                broken[info.name.removeprefix("bench_")] = _describe(exc)
    return broken


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benches.compare", description=__doc__.split("\n")[0])
    parser.add_argument("--full", action="store_true", help="more samples and bigger loops (slower)")
    parser.add_argument("--reps", type=int, help="samples per subject (default: 7 quick, 11 full)")
    parser.add_argument("--only", help="comma-separated groups to run (default: all)")
    parser.add_argument("--out", type=Path, default=_baselines.RESULTS, help="results folder")
    parser.add_argument("--no-charts", action="store_true", help="skip the PNG charts")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env = Env(mode="full" if args.full else "quick", results=args.out)
    reps = args.reps or (11 if args.full else 7)
    args.out.mkdir(parents=True, exist_ok=True)
    failed = discover()
    names = list(dict.fromkeys([*EXPECTED, *registered(), *failed]))
    if args.only:
        names = [n for n in names if n in args.only.split(",")]
    failed = {name: error for name, error in failed.items() if name in names}

    machine = _machine.describe()
    print(f"# dkron_exec benchmarks ({env.mode}, median of {reps})\n\n{_machine.one_line(machine)}\n")
    results: list[tuple[str, Result]] = []
    skipped: dict[str, str] = {}
    started = time.time()
    for name in names:
        if name in failed:
            print(f"[FAILED] {name}: {failed[name]}", file=sys.stderr)
            continue
        try:
            figures = build(name, env)
        except Missing as exc:
            skipped[name] = str(exc)
            print(f"[skip] {name}: {exc}", file=sys.stderr)
            continue
        except Exception as exc:  # this group is lost; the others are still measured
            failed[name] = _describe(exc)
            print(f"[FAILED] {name}: {failed[name]}", file=sys.stderr)
            continue
        errors = []
        for figure in figures:
            t0 = time.perf_counter()
            try:
                result = measure(figure, reps)
            except Exception as exc:
                errors.append(f"{figure.id}: {_describe(exc)}")
                continue
            results.append((name, result))
            errors += [f"{figure.id} {subject}: {error}" for subject, error in result.errors.items()]
            print(f"[{time.perf_counter() - t0:5.1f}s] {_report.row(result)}", file=sys.stderr)
        if errors:
            failed[name] = "; ".join(errors)
    machine["loadavg_end"] = _machine.describe()["loadavg"]

    only = [r for _, r in results]
    measured = {g for g, _ in results}
    lost = {name: error for name, error in failed.items() if name not in measured}
    summary = _report.target_summary(only)
    text = "\n".join(
        [
            _report.table(only, lost),
            "",
            "Targets:",
            *_report.summary_lines(summary, skipped, failed),
            "",
            "Baselines:",
            *_report.legend(only),
        ]
    )
    print(text)
    record = {
        "mode": env.mode,
        "reps": reps,
        "started": started,
        "seconds": time.time() - started,
        "machine": machine,
        "figures": [_report.record(r, g) for g, r in results],
        "targets": summary,
        "skipped": skipped,
        "failed": failed,
    }
    blob = json.dumps(record, indent=2)
    (args.out / "results.json").write_text(blob)
    (args.out / time.strftime("results-%Y%m%d-%H%M%S.json", time.localtime(started))).write_text(blob)
    (args.out / "table.md").write_text(f"{_machine.one_line(machine)}\n\n{text}\n")
    charts = [] if args.no_charts else _charts.draw(only, args.out)
    print(f"\nwrote {args.out / 'results.json'}, {args.out / 'table.md'}", *charts, sep="\n  ")
    if failed:
        print(f"benches.compare: {len(failed)} group(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
