"""The closed loop's wall time, from drift detected to the new model serving.

    python -m bench.bench_loop [--summary PATH] [--json] [-- demo options]

Runs the demo (``python -m airloop.demo``) in a temporary AIRLOOP_HOME, or reads the summary
of a demo that already ran (``--summary .airloop/demo-summary.json``), and prints how the loop's
wall time splits into task work and orchestration wait (see ``airloop.timeline``), per stage.
Goal: orchestration wait under 25% of the loop's wall time.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from airloop.testing import run_demo

GOAL_WAIT_SHARE = 0.25


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--summary", type=Path, help="a demo-summary.json to read instead of running the demo")
    parser.add_argument("--json", action="store_true")
    args, demo_args = parser.parse_known_args()
    demo_args = [a for a in demo_args if a != "--"]
    if args.summary:
        summary = json.loads(args.summary.read_text())
    else:
        with tempfile.TemporaryDirectory(prefix="airloop-bench-loop-") as tmp:
            _, summary = run_demo(Path(tmp) / "airloop", demo_args, quiet=True)
    timing = summary.get("steps", {}).get("loop_timing")
    if not timing:
        print(f"the demo did not close the loop with a new champion: {summary.get('error') or summary['steps'].get('retrain')}")
        return 1
    if args.json:
        print(json.dumps(timing, indent=2))
        return 0
    print(f"demo wall time {summary.get('wall_seconds')} s")
    print(f"drift detected -> new model serving: {timing['wall_seconds']:.1f} s")
    print(f"  task work            {timing['work_seconds']:7.1f} s")
    for stage, seconds in timing["work_by_stage"].items():
        print(f"    {stage:<18} {seconds:7.1f} s")
    print(f"  orchestration wait   {timing['wait_seconds']:7.1f} s  ({timing['wait_share']:.0%}; goal < {GOAL_WAIT_SHARE:.0%}: "
          f"{'met' if timing['wait_share'] < GOAL_WAIT_SHARE else 'missed'})")
    print("  tasks (start .. end, UTC):")
    for t in timing["tasks"]:
        print(f"    {t['stage']:<8} {t['task_id']:<26} {t['start'][11:23]} .. {t['end'][11:23]}")
    return 0



def run(quick: bool = False, summary: Path | None = None, demo_args: list[str] = ()):
    """The loop's wall time against its task work (the wait is the rest), and the demo's wall time.

    Quick reads the last demo's summary (``$AIRLOOP_HOME/demo-summary.json``) if there is one
    and runs nothing; otherwise the demo runs in a temporary AIRLOOP_HOME.
    """
    import os

    from bench.results import BenchResult, Row

    out = BenchResult("loop")
    if summary is None and quick:
        summary = Path(os.environ.get("AIRLOOP_HOME", ".airloop")) / "demo-summary.json"
        if not summary.exists():
            out.skipped = f"--quick runs no demo and {summary} does not exist (run make demo first)"
            return out
    if summary is not None:
        data = json.loads(Path(summary).read_text())
        import datetime as dt

        written = dt.datetime.fromtimestamp(Path(summary).stat().st_mtime, dt.timezone.utc)
        out.notes.append(f"read from {summary} (written {written:%Y-%m-%d %H:%M} UTC by an earlier demo), "
                         "not measured in this run")
    else:
        with tempfile.TemporaryDirectory(prefix="airloop-bench-loop-") as tmp:
            _, data = run_demo(Path(tmp) / "airloop", list(demo_args), quiet=True)
    out.raw = data
    if data.get("wall_seconds") is not None:
        out.rows.append(Row("make demo (python -m airloop.demo)", "wall seconds", data["wall_seconds"], None,
                            "demo_seconds"))
    timing = data.get("steps", {}).get("loop_timing")
    if not timing:
        out.notes.append(f"the demo did not close the loop: {data.get('error') or data.get('steps', {}).get('retrain')}")
        return out
    out.rows.append(Row("loop, drift detected -> new model serving: wall vs task work", "seconds",
                        timing["wall_seconds"], timing["work_seconds"], "loop_wall_vs_work"))
    out.series["timeline"] = timing
    return out


if __name__ == "__main__":
    raise SystemExit(main())
