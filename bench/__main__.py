"""Every benchmark next to its baseline in one run: ``python -m bench [--quick] [--only a,b] [--skip a,b]``.

Prints one table of ratios (Airloop / baseline, goals from ``bench.results.GOALS``) and writes
``report.md``, ``results.json`` and PNG plots under ``$AIRLOOP_HOME/bench/<UTC timestamp>/``.
``--quick`` runs smaller sizes and fewer repeats through the same code; it runs no Airflow (the
ingest DAG is left out; the loop's timing is read from the last demo's summary if there is one).
Each benchmark also runs alone: ``python -m bench.<module> --help``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import os
import sys
import time
import traceback
from pathlib import Path

from bench import report
from bench.results import BenchResult

# name -> module; run in this order (cheap first). Each module has run(quick=...) -> BenchResult.
BENCHES = {
    "parse": "bench.parse_dags",
    "ingest_read": "bench.bench_ingest",
    "materialize": "bench.bench_materialize",
    "pit_join": "bench.bench_pit_join",
    "drift": "bench.bench_drift",
    "serve": "bench.bench_serve",
    "aggregations": "bench.bench_aggregations",
    "ingest_dag": "bench.bench_ingest_dag",
    "loop": "bench.bench_loop",
}
# Not run with --quick, and why.
NOT_QUICK = {
    "ingest_dag": "starts Airflow twice and runs 14 batches each (minutes); run make bench",
    "aggregations": "a fresh Feast process per case and scope (minutes on 2 cores); run make bench",
}


def home() -> Path:
    return Path(os.environ.get("AIRLOOP_HOME") or Path.cwd() / ".airloop")


def cpu_seconds() -> float:
    """User + system CPU of this process and its finished children (what load does not inflate)."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def run_one(name: str, quick: bool, kwargs: dict) -> BenchResult:
    started, cpu = time.perf_counter(), cpu_seconds()
    try:
        result = importlib.import_module(BENCHES[name]).run(quick=quick, **kwargs)
    except Exception as e:  # noqa: BLE001 - one failing benchmark is reported, the others still run
        result = BenchResult(name, error=f"{type(e).__name__}: {str(e)[-500:]}")
        traceback.print_exc()
    result.name = name
    result.seconds = time.perf_counter() - started
    result.cpu_seconds = cpu_seconds() - cpu
    return result


def main(argv: list[str] | None = None, bench_kwargs: dict | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats (under 3 minutes)")
    parser.add_argument("--only", help=f"comma-separated, of {', '.join(BENCHES)}")
    parser.add_argument("--skip", default="", help="comma-separated names to leave out")
    parser.add_argument("--all", action="store_true", help=argparse.SUPPRESS)  # the old flag: all run by default
    parser.add_argument("--out", type=Path, help="report directory (default $AIRLOOP_HOME/bench/<timestamp>)")
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else list(BENCHES)
    unknown = [n for n in names + [s for s in args.skip.split(",") if s] if n not in BENCHES]
    if unknown:
        parser.error(f"unknown benchmarks {unknown}; known: {', '.join(BENCHES)}")
    names = [n for n in names if n not in args.skip.split(",")]
    bench_kwargs = bench_kwargs or {}
    # The serving bench reuses one prepared home (a trained champion) from run to run.
    bench_kwargs.setdefault("serve", {}).setdefault("home", home() / "bench" / "serve-home")
    stamp = dt.datetime.now(dt.timezone.utc)
    out_dir = args.out or home() / "bench" / f"{stamp:%Y%m%dT%H%M%SZ}"
    load_before = os.getloadavg()
    started, cpu = time.perf_counter(), cpu_seconds()
    results = []
    for name in names:
        if args.quick and name in NOT_QUICK and not (args.only and name in args.only.split(",")):
            results.append(BenchResult(name, skipped=f"not in --quick: {NOT_QUICK[name]}"))
            continue
        print(f"== {name}", flush=True)
        results.append(run_one(name, args.quick, bench_kwargs.get(name, {})))
        print(f"   {report.status_lines(results[-1:])[0]}", flush=True)
    wall = time.perf_counter() - started
    header = [f"Run {stamp:%Y-%m-%d %H:%M} UTC{' (--quick)' if args.quick else ''}: {wall:.0f} s wall, "
              f"{cpu_seconds() - cpu:.0f} s CPU (this process and its children; servers and Airflow's task "
              f"processes only where they were its children); "
              f"{os.cpu_count()} CPUs; load average {load_before[0]:.1f} at the start, "
              f"{os.getloadavg()[0]:.1f} at the end (other work shares this machine: compare ratios)."]
    path = report.write(results, out_dir, header)
    print()
    print("\n".join(report.table_lines(results)))
    print()
    print("\n".join(report.status_lines(results)))
    print(f"\n{header[0]}\nreport: {path}")
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
