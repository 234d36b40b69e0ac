"""PNG charts of the scaling series (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

from ._measure import Result

COLOURS = {"dkron_exec": "tab:blue", "python": "tab:orange", "c": "tab:green"}
LABELS = {"dkron_exec": "dkron_exec", "python": "plain Python", "c": "C (physical limit)"}


def _series(results: list[Result], series: str) -> list[Result]:
    return sorted((r for r in results if r.figure.series == series), key=lambda r: r.figure.x)


def line_chart(results: list[Result], series: str, path: Path, title: str, xlabel: str, yscale: str) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = _series(results, series)
    if not points:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name in COLOURS:
        xs = [r.figure.x for r in points if name in r.medians]
        ys = [r.medians[name] for r in points if name in r.medians]
        if xs:
            ax.plot(xs, ys, marker="o", color=COLOURS[name], label=LABELS[name])
    ax.set_xscale("log")
    if yscale == "symlog":
        ax.set_yscale("symlog", linthresh=1.0)  # memory growth can be 0
    else:
        ax.set_yscale(yscale)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(points[0].figure.unit)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def ratio_chart(results: list[Result], path: Path) -> bool:
    """dkron_exec / C for every rate figure, with its target as a tick."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(r, r.ratio("c")) for r in results if r.figure.higher_is_better]
    rows = [(r, x) for r, x in rows if x is not None]
    if not rows:
        return False
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(rows) + 1.2))
    names = [r.figure.title for r, _ in rows]
    ax.barh(names, [x for _, x in rows], color="tab:blue")
    for i, (r, _) in enumerate(rows):
        for t in r.figure.targets:
            if t.kind == "ratio" and t.baseline == "c":
                ax.plot([t.value, t.value], [i - 0.4, i + 0.4], color="tab:red")
    ax.axvline(1.0, color="grey", linewidth=0.8)
    ax.invert_yaxis()
    ax.set_xlabel("dkron_exec / C limit (red: target)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def draw(results: list[Result], out: Path) -> list[Path]:
    made = []
    specs = [
        ("spawn-inflight", "spawn_concurrency.png", "Spawn rate vs N in flight", "in flight", "linear"),
        ("capture", "capture_throughput.png", "Capture throughput vs output size", "output bytes", "log"),
        ("capture-rss", "capture_memory.png", "Host peak RSS growth vs output", "output bytes", "symlog"),
    ]
    for series, name, title, xlabel, yscale in specs:
        if line_chart(results, series, out / name, title, xlabel, yscale):
            made.append(out / name)
    if ratio_chart(results, out / "ratios.png"):
        made.append(out / "ratios.png")
    return made
