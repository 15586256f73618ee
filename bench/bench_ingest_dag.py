"""A model's daily ingest under the real scheduler, with and without the preloaded libraries.

    python -m bench.bench_ingest_dag [--batches 14] [--orders 1500] [--json]

Each case starts its own Airflow (LocalExecutor on SQLite, as ``make demo`` runs it) in a fresh
AIRLOOP_HOME, lands ``--batches`` days of the late_delivery example, triggers the ingest DAG and
times the run from trigger to its end, plus each mapped task's run time. The baseline is the
same run with ``AIRLOOP_PRELOAD=false``: every task process then imports pandas and Great
Expectations itself (DVC is imported by the task in both cases: see ``airloop.preload``). Goal (issue "Fast loop"): 14 batches of 1,500 rows in <= 40 s.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

GOAL_SECONDS = 40.0
MODEL = "late_delivery"


def run_case(preload: bool, batches: int, orders: int) -> dict:
    """One Airflow, one ingest run of ``batches`` landed days; seconds and task figures."""
    from airloop.settings import ensure_dirs, get_settings
    from airloop.spec import example_data, get_spec
    from airloop.testing import AirflowStack

    with tempfile.TemporaryDirectory(prefix="airloop-bench-ingest-") as tmp:
        os.environ["AIRLOOP_HOME"] = str(Path(tmp) / "airloop")
        ensure_dirs()
        settings = get_settings()
        spec = get_spec(MODEL, settings.models_dir)
        data = example_data(spec)
        first = dt.date(2026, 1, 1)
        for i in range(batches):
            data.write_day(settings.landing_dir, first + dt.timedelta(days=i), size=orders)
        env = {**settings.as_env(), "AIRLOOP_PRELOAD": "true" if preload else "false"}
        started = time.monotonic()
        stack = AirflowStack(settings.home / "airflow", env=env)
        try:
            stack.start(timeout=900)
            ready = time.monotonic() - started
            dag_id = spec.dag_id("ingest")
            stack.unpause(dag_id)
            triggered = time.monotonic()
            run_id = stack.trigger(dag_id)
            run = stack.wait_for_run(dag_id, run_id, timeout=1800)
            wall = time.monotonic() - triggered
            tasks = [t for t in stack.task_instances(dag_id, run_id) if t["task_id"] == "validate_and_publish"]
        finally:
            stack.stop()
    durations = [
        (dt.datetime.fromisoformat(t["end_date"]) - dt.datetime.fromisoformat(t["start_date"])).total_seconds()
        for t in tasks if t.get("start_date") and t.get("end_date")
    ]
    return {
        "preload": preload, "state": run["state"], "batches": batches, "orders_per_batch": orders,
        "stack_ready_seconds": round(ready, 1), "run_seconds": round(wall, 1),
        "task_seconds_median": round(statistics.median(durations), 2) if durations else None,
        "task_seconds_max": round(max(durations), 2) if durations else None,
        "tasks": len(tasks),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=14)
    parser.add_argument("--orders", type=int, default=1500, help="orders per batch (on average)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    cases = [run_case(preload, args.batches, args.orders) for preload in (False, True)]
    if args.json:
        print(json.dumps(cases, indent=2))
    else:
        print(f"{'case':<22} {'state':<8} {'run s':>7} {'task s (median/max)':>20} {'Airflow ready s':>16}")
        for case in cases:
            name = "preloaded" if case["preload"] else "baseline (no preload)"
            print(f"{name:<22} {case['state']:<8} {case['run_seconds']:>7.1f} "
                  f"{case['task_seconds_median']!s:>9}/{case['task_seconds_max']!s:<10} {case['stack_ready_seconds']:>16.1f}")
        base, pre = cases
        print(f"preloaded / baseline run time: {pre['run_seconds'] / base['run_seconds']:.2f}x; "
              f"goal {args.batches} batches <= {GOAL_SECONDS:.0f} s: {'met' if pre['run_seconds'] <= GOAL_SECONDS else 'missed'}")
    return 0 if all(c["state"] == "success" for c in cases) else 1



def run(quick: bool = False, batches: int = 14, orders: int = 1500):
    """The ingest DAG preloaded against the same run without preload, two Airflows one after the other."""
    from bench.results import BenchResult, Row

    base, pre = (run_case(preload, batches, orders) for preload in (False, True))
    out = BenchResult("ingest_dag", raw=[base, pre])
    target = f"ingest DAG, {batches} batches x {orders:,} rows: preloaded vs no preload"
    goal = "ingest_dag_14x1500_seconds" if (batches, orders) == (14, 1500) else None
    out.rows.append(Row(target, "run seconds", pre["run_seconds"], base["run_seconds"], goal))
    out.rows.append(Row(target, "task seconds (median)", pre["task_seconds_median"], base["task_seconds_median"]))
    out.notes.append(f"states {base['state']} / {pre['state']}; Airflow ready in {base['stack_ready_seconds']} / "
                     f"{pre['stack_ready_seconds']} s (not counted)")
    return out


if __name__ == "__main__":
    raise SystemExit(main())
