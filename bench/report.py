"""The table of ratios, printed and written as markdown, and the report's PNG plots."""

from __future__ import annotations

import json
import math
from pathlib import Path

from bench.results import BenchResult, Row

HEADER = ("target", "metric", "airloop", "baseline", "ratio", "goal", "met?")


def _num(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
    return f"{value:,}"


def cells(row: Row) -> list[str]:
    goal = row.goal_spec
    met = {True: "yes", False: "NO", None: "—"}[row.met]
    return [row.target, row.metric, _num(row.airloop), _num(row.baseline),
            "—" if row.ratio is None else f"{row.ratio:.2f}x", goal.text() if goal else "—", met]


def table_lines(results: list[BenchResult]) -> list[str]:
    rows = [cells(r) for res in results for r in res.rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(HEADER)]
    fmt = lambda cols: "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cols, widths)))  # noqa: E731
    return [fmt(HEADER), fmt(["-" * w for w in widths]), *(fmt(r) for r in rows)]


def status_lines(results: list[BenchResult]) -> list[str]:
    lines = []
    for res in results:
        state = f"skipped: {res.skipped}" if res.skipped else f"FAILED: {res.error}" if res.error else "ran"
        lines.append(f"{res.name}: {state} ({res.seconds:.0f} s wall, {res.cpu_seconds:.0f} s CPU)")
    return lines


# --- plots ------------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_latency(latency: dict, path: Path) -> None:
    """p50 and p99 per target, one group per client count."""
    plt = _pyplot()
    clients = sorted({int(k.split("/")[1]) for k in latency})
    targets = list(dict.fromkeys(k.split("/")[0] for k in latency))
    fig, axes = plt.subplots(1, len(clients), figsize=(5 * len(clients), 4), squeeze=False)
    for ax, n in zip(axes[0], clients):
        xs = range(len(targets))
        width = 0.38
        p50 = [latency[f"{t}/{n}"]["p50_ms"] for t in targets]
        p99 = [latency[f"{t}/{n}"]["p99_ms"] for t in targets]
        ax.bar([x - width / 2 for x in xs], p50, width, label="p50")
        ax.bar([x + width / 2 for x in xs], p99, width, label="p99")
        ax.set_xticks(list(xs), targets, rotation=20, ha="right")
        ax.set_title(f"{n} client{'s' if n > 1 else ''}")
        ax.set_ylabel("latency (ms)")
        ax.legend()
    fig.suptitle("Serving latency percentiles per target")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_memory(series: dict, label: str, title: str, path: Path) -> None:
    """Peak memory growth over rows, one line per path."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, points in series.items():
        if points:
            xs, ys = zip(*sorted(points))
            ax.plot(xs, ys, marker="o", label=name)
    ax.set_xscale("log")
    ax.set_xlabel("rows")
    ax.set_ylabel(label)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_timeline(timing: dict, path: Path) -> None:
    """Each task of the loop as a bar from drift detected; the gaps between are orchestration wait."""
    import datetime as dt

    plt = _pyplot()

    def t(value: str) -> float:
        return (dt.datetime.fromisoformat(value.replace("Z", "+00:00")) - start).total_seconds()

    start = dt.datetime.fromisoformat(timing["drift_detected_at"].replace("Z", "+00:00"))
    wall = timing["wall_seconds"]
    tasks = timing["tasks"]
    spans = sorted((max(0.0, t(x["start"])), min(wall, t(x["end"]))) for x in tasks)
    work, cursor = [], 0.0  # the union of the tasks' spans; wait is what it leaves of [0, wall]
    for a, b in spans:
        if work and a <= work[-1][1]:
            work[-1] = (work[-1][0], max(work[-1][1], b))
        elif b > a:
            work.append((a, b))
    wait = []
    for a, b in work + [(wall, wall)]:
        if a > cursor:
            wait.append((cursor, a - cursor))
        cursor = max(cursor, b)
    fig, ax = plt.subplots(figsize=(8, 0.35 * (len(tasks) + 2) + 1.5))
    ax.broken_barh([(a, b - a) for a, b in work], (-2.4, 0.8), color="tab:gray")
    ax.broken_barh(wait, (-1.4, 0.8), color="tab:red")
    colors = {"monitor": "tab:blue", "train": "tab:green", "package": "tab:orange"}
    for i, task in enumerate(tasks):
        a, b = max(0.0, t(task["start"])), t(task["end"])
        ax.barh(i, b - a, left=a, color=colors.get(task["stage"], "tab:gray"))
    ax.set_yticks([-2, -1, *range(len(tasks))], ["task work", "orchestration wait",
                  *(f"{x['stage']}: {x['task_id']}" for x in tasks)], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, wall)
    ax.set_xlabel("seconds since drift detected")
    ax.set_title(f"Loop {timing['wall_seconds']:.0f} s: task work {timing['work_seconds']:.0f} s, orchestration "
                 f"wait {timing['wait_seconds']:.0f} s ({timing['wait_share']:.0%})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plots(results: list[BenchResult], out_dir: Path) -> list[Path]:
    written = []
    for res in results:
        s = res.series
        if "latency" in s:
            written.append(out_dir / "serve_latency.png")
            plot_latency(s["latency"], written[-1])
        if "memory_over_rows" in s:
            written.append(out_dir / f"{res.name}_memory.png")
            plot_memory(s["memory_over_rows"], s.get("memory_label", "MiB"), f"{res.name}: memory over rows",
                        written[-1])
        if "timeline" in s:
            written.append(out_dir / "loop_timeline.png")
            plot_timeline(s["timeline"], written[-1])
    return written


# --- the report ---------------------------------------------------------------------------------


def write(results: list[BenchResult], out_dir: Path, header: list[str]) -> Path:
    """report.md, results.json and the PNGs under ``out_dir``; returns the markdown's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    pngs = plots(results, out_dir)
    md = ["# Airloop benchmark report", "", *header, "",
          "Ratio = Airloop / baseline, both measured in this run. Goals are `bench/results.py` GOALS.", "",
          "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    md += ["| " + " | ".join(c.replace("|", "\\|") for c in cells(r)) + " |" for res in results for r in res.rows]
    md += ["", "## Benchmarks", ""]
    for res, line in zip(results, status_lines(results)):
        md.append(f"- {line}")
        md += [f"  - {n}" for n in res.notes]
    md += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in pngs]
    path = out_dir / "report.md"
    path.write_text("\n".join(md) + "\n")
    raw = [{"name": r.name, "seconds": r.seconds, "skipped": r.skipped, "error": r.error,
            "cpu_seconds": r.cpu_seconds, "rows": [row.as_dict() for row in r.rows], "notes": r.notes, "raw": r.raw} for r in results]
    (out_dir / "results.json").write_text(json.dumps(raw, indent=1, default=str))
    return path
