"""Cost of a drift check: time and peak RSS of the Evidently part, sampled vs. every row.

    python -m bench.bench_drift [--sizes 10000,100000,1000000] [--full 1000000] [--seeds 5]
                                [--log-read 100000] [--json]

Each measurement runs in a fresh process so its peak RSS is its own. The frames are built in
memory (nothing goes through the prediction log): a reference of 50k training rows with the
late_delivery model's 12 inputs, computed from ``datagen`` orders like the training frame
(per-restaurant statistics of the 7 days before each order), a small HistGradientBoosting model
for the predictions, and a current window of N rows drawn (seeded, with replacement) from
drifted days (``datagen.Drift`` strength 0.6; ``--scenario clean`` for undrifted days), 5% of
them labelled.

Timed: ``monitoring.assess`` (sampling + Evidently data and prediction drift + quality) and
``monitoring.write_reports`` (HTML + JSON), i.e. ``check_drift`` without the log read and MLflow.
Peak RSS is the process high-water mark reset just before the timed part (``/proc/self/clear_refs``),
so it includes what the process already holds (imports, the N-row frame) plus the check's own
peak. ``--full N`` also runs the unsampled check at N rows; the sampled decision is compared with
it, and ``--seeds K`` reruns the sampled check with K other seeds to compare each column's score
with the unsampled one against the stated sampling-error bound.

``--log-read N`` measures the part not above: N predictions are written to a scratch SQLite
log, then read back by ``monitoring.read_window`` (what ``check_drift`` does: a COUNT, and above
``sample_size`` rows the request ids, a seeded sample of them fetched and parsed, and the
labelled rows' label and prediction) and, for comparison, by ``prediction_log.read_predictions`` (every
row parsed) + ``monitoring.current_frame``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
FIRST_DAY = dt.date(2026, 1, 1)
REFERENCE_DAYS = 34  # ~51k rows with 7 days of history each
POOL_DAYS = 3
PEAK_HOURS = {11, 12, 13, 18, 19, 20}
WINDOW_END = dt.datetime(2026, 6, 1, tzinfo=dt.timezone.utc)


# --- memory -----------------------------------------------------------------------------------


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def reset_peak() -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0)."""
    Path("/proc/self/clear_refs").write_text("5")


def rss_mib() -> float:
    return _status_kib("VmRSS") / 1024


def peak_mib() -> float:
    return _status_kib("VmHWM") / 1024


def _cpu_since(start) -> float:
    now = os.times()
    return (now.user - start.user) + (now.system - start.system)


# --- data -------------------------------------------------------------------------------------


def with_features(orders_by_day: dict, day: dt.date):
    """The orders of ``day`` with the model's inputs, from the 7 days before it."""
    import numpy as np
    import pandas as pd

    history = pd.concat([orders_by_day[day - dt.timedelta(days=i)] for i in range(1, 8)])
    stats = history.groupby("restaurant_id").agg(
        orders_7d=("order_id", "size"),
        avg_prep_minutes_7d=("prep_minutes", "mean"),
        late_rate_7d=("was_late", "mean"),
        avg_distance_km_7d=("distance_km", "mean"),
        avg_items_7d=("items", "mean"),
    )
    yesterday = orders_by_day[day - dt.timedelta(days=1)].groupby("restaurant_id").size().rename("orders_1d")
    stats = stats.join(yesterday).fillna({"orders_1d": 0})
    orders = orders_by_day[day]
    frame = pd.DataFrame(
        {
            "event_timestamp": orders["event_timestamp"],
            "restaurant_id": orders["restaurant_id"],
            "was_late": orders["was_late"],
            "distance_km": orders["distance_km"].astype("float64"),
            "items": orders["items"].astype("float64"),
            "order_hour": orders["event_timestamp"].dt.hour.astype("float64"),
        }
    ).join(stats, on="restaurant_id")
    frame = frame[[*frame.columns[:6], "orders_1d", "orders_7d", "avg_prep_minutes_7d", "late_rate_7d",
                   "avg_distance_km_7d", "avg_items_7d"]]
    frame["expected_prep_minutes"] = frame["avg_prep_minutes_7d"] * frame["items"] / frame["avg_items_7d"]
    frame["distance_vs_usual"] = frame["distance_km"] / frame["avg_distance_km_7d"]
    frame["is_peak_hour"] = frame["order_hour"].isin(PEAK_HOURS).astype("float64")
    return frame.astype({c: "float64" for c in frame.columns[3:]}).replace([np.inf, -np.inf], np.nan)


def build(spec, rows: int, scenario: str):
    """(reference, current frame, feature names, model) for one measurement."""
    import numpy as np
    import pandas as pd
    from sklearn.ensemble import HistGradientBoostingClassifier

    from airloop import monitoring, train
    from airloop.spec import example_data

    datagen = example_data("late_delivery")

    ref_last = FIRST_DAY + dt.timedelta(days=7 + REFERENCE_DAYS - 1)
    drift = datagen.Drift(ref_last + dt.timedelta(days=1), 0.6) if scenario == "drift" else None
    days = [FIRST_DAY + dt.timedelta(days=i) for i in range(7 + REFERENCE_DAYS + 7 + POOL_DAYS)]
    orders = {d: datagen.generate_orders(d, drift=drift) for d in days}
    reference_days = days[7 : 7 + REFERENCE_DAYS]
    frame = pd.concat([with_features(orders, d) for d in reference_days], ignore_index=True)
    features = list(frame.columns[3:])
    fit_on, holdout = train.time_split(frame, "event_timestamp", spec.split.holdout_days)
    model = HistGradientBoostingClassifier(max_iter=60, learning_rate=0.1, random_state=0)
    model.fit(fit_on[features], fit_on["was_late"])
    holdout_pred = model.predict_proba(holdout[features])[:, 1]
    size = monitoring.reference_rows(spec)
    training = fit_on[features].sample(n=min(size, len(fit_on)), random_state=1).reset_index(drop=True)
    reference = monitoring.Reference(
        model=spec.name, version="bench", run_id="bench", features=features, training=training,
        predictions=pd.Series(holdout_pred, name="prediction"),
        holdout_metrics=train.evaluate(spec, model, holdout[features], holdout["was_late"]),
        training_rows=len(fit_on), holdout_rows=len(holdout),
    )
    pool = pd.concat([with_features(orders, d) for d in days[-POOL_DAYS:]], ignore_index=True)
    pool_pred = model.predict_proba(pool[features])[:, 1]
    rng = np.random.default_rng(2026)
    pick = rng.integers(0, len(pool), rows)
    current = pool[features].iloc[pick].reset_index(drop=True)
    current["prediction"] = pool_pred[pick]
    labelled = rng.random(rows) < 0.05
    current["label"] = np.where(labelled, pool["was_late"].to_numpy()[pick], np.nan)
    return reference, current


def verdict(check) -> dict:
    return {
        "status": check.status,
        "dataset_drift": bool(check.drifted_share is not None and check.drifted_share >= check.drift_share_threshold),
        "prediction_drifted": bool(check.prediction_drifted),
        "drifted_columns": sorted(check.drifted_columns),
    }


# --- one measurement (child process) -------------------------------------------------------------

_BUILT: dict = {}  # (rows, scenario) -> (reference, current), reused by --many


def measure(rows: int, mode: str, scenario: str, seeds: int) -> dict:
    os.environ.setdefault("DO_NOT_TRACK", "1")
    if "AIRLOOP_HOME" not in os.environ or not _BUILT:
        os.environ["AIRLOOP_HOME"] = tempfile.mkdtemp(prefix="airloop-bench-drift-")
    started = time.perf_counter()
    import evidently  # noqa: F401 - imported up front: a task process has it loaded too
    import mlflow  # noqa: F401
    import pandas as pd  # noqa: F401
    import sklearn  # noqa: F401

    from airloop import monitoring
    from airloop.settings import ensure_dirs, get_settings
    from airloop.spec import load_spec

    imports = time.perf_counter() - started
    settings = ensure_dirs(get_settings())
    spec = load_spec(REPO_ROOT / "include" / "models" / "late_delivery.yaml")
    if (rows, scenario) not in _BUILT:
        _BUILT.clear()  # one size at a time: the frames of another would count in this one's RSS
        _BUILT[rows, scenario] = build(spec, rows, scenario)
    reference, current = _BUILT[rows, scenario]
    sample_size = -1 if mode == "sampled" else None
    # Warm-up on a tiny frame: Evidently's first run pays lazy imports and registry set-up.
    monitoring.assess(spec, current.head(2000), reference, window_start=WINDOW_END - dt.timedelta(hours=24),
                   window_end=WINDOW_END - dt.timedelta(hours=1))
    before = rss_mib()
    reset_peak()
    cpu = os.times()
    clock = time.perf_counter()
    check, snapshots = monitoring.assess(
        spec, current, reference, window_start=WINDOW_END - dt.timedelta(hours=24), window_end=WINDOW_END,
        sample_size=sample_size,
    )
    assessed = time.perf_counter() - clock
    assess_cpu = _cpu_since(cpu)
    monitoring.write_reports(spec, check, snapshots, settings)
    total = time.perf_counter() - clock
    total_cpu = _cpu_since(cpu)
    peak = peak_mib()
    out = {
        "rows": rows, "mode": mode, "scenario": scenario, "imports_s": round(imports, 2),
        "assess_s": round(assessed, 2), "assess_cpu_s": round(assess_cpu, 2),
        "evidently_s": round(check.seconds["evidently"], 2),
        "with_reports_s": round(total, 2), "with_reports_cpu_s": round(total_cpu, 2),
        "rss_before_mib": round(before), "peak_mib": round(peak),
        "check_delta_mib": round(peak - before), "rows_checked": check.rows_checked, "sampled": check.sampled,
        "verdict": verdict(check), "scores": check.feature_scores, "prediction_drift": check.prediction_drift,
        "sampling_error": check.sampling_error, "borderline": check.borderline,
        "decision_stable": check.decision_stable, "html_bytes": Path(check.html_path).stat().st_size,
    }
    if mode == "sampled" and seeds:
        runs = []
        for seed in range(1, seeds + 1):
            result = monitoring.run_drift(spec, current, reference, seed=seed)
            runs.append({
                "seed": seed, "seconds": round(result.seconds, 2),
                "verdict": [result.dataset_drift, bool(result.prediction_drifted), sorted(result.drifted_columns)],
                "scores": result.feature_scores, "prediction_drift": result.prediction_drift,
            })
        out["seeds"] = runs
    return out


# --- the log read (child process) ----------------------------------------------------------------


def measure_log_read(rows: int) -> dict:
    home = Path(tempfile.mkdtemp(prefix="airloop-bench-drift-log-"))
    os.environ["AIRLOOP_HOME"] = str(home)
    import numpy as np

    from airloop import monitoring, prediction_log, serve
    from airloop.settings import ensure_dirs, get_settings
    from airloop.spec import load_spec

    settings = ensure_dirs(get_settings())
    spec = load_spec(REPO_ROOT / "include" / "models" / "late_delivery.yaml")
    names = ["distance_km", "items", "order_hour", "orders_1d", "orders_7d", "avg_prep_minutes_7d", "late_rate_7d",
             "avg_distance_km_7d", "avg_items_7d", "expected_prep_minutes", "distance_vs_usual", "is_peak_hour"]
    rng = np.random.default_rng(0)
    values = rng.normal(10, 3, (rows, len(names))).round(3)
    start = WINDOW_END - dt.timedelta(hours=24)
    clock = time.perf_counter()
    plog = prediction_log.PredictionLog(settings.prediction_store, settings=settings, flush_seconds=5, batch_size=5000,
                               max_pending=rows + 1)
    for lo in range(0, rows, 10_000):
        plog.append([
            serve.Scored(
                request_id=f"r{i:08d}", model=spec.name, model_version="1", entity=1001 + i % 120,
                features=dict(zip(names, values[i].tolist())), prediction=float(rng.random()), missing_features=[],
                predicted_at=start + dt.timedelta(seconds=i * 86400 / rows),
            )
            for i in range(lo, min(lo + 10_000, rows))
        ])
    plog.close(timeout=600)
    written = time.perf_counter() - clock
    reference = monitoring.Reference(spec.name, "1", "bench", names, None, None, {}, 0, 0)
    out = {"rows": rows, "write_s": round(written, 1)}
    # The check's reader first (sampled in the store), then one read_predictions of it all.
    before = rss_mib()
    reset_peak()
    clock = time.perf_counter()
    sample, total, _, _ = monitoring.read_window(spec, start, WINDOW_END, reference, settings)
    out["read_window"] = {
        "seconds": round(time.perf_counter() - clock, 2), "rows": total, "kept": len(sample),
        "rss_before_mib": round(before), "peak_mib": round(peak_mib()), "delta_mib": round(peak_mib() - before),
    }
    del sample
    before = rss_mib()
    reset_peak()
    clock = time.perf_counter()
    frame = prediction_log.read_predictions(start, WINDOW_END, model=spec, settings=settings)
    read = time.perf_counter() - clock
    current, _ = monitoring.current_frame(frame, reference, spec, settings)
    out["read_predictions"] = {
        "seconds": round(read, 2), "with_frame_s": round(time.perf_counter() - clock, 2), "rows": len(current),
        "rss_before_mib": round(before), "peak_mib": round(peak_mib()), "delta_mib": round(peak_mib() - before),
    }
    return out


# --- the driver ------------------------------------------------------------------------------------


def child(*args: str) -> dict:
    env = {**os.environ, "DO_NOT_TRACK": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    out = subprocess.run(
        [sys.executable, "-m", "bench.bench_drift", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    if out.returncode != 0:
        raise RuntimeError(f"bench child {args} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def compare(sampled: dict, full: dict) -> dict:
    """Sampled vs. unsampled at the same size: decision, and score gaps vs. the stated bound."""
    runs = [{"seed": "check", "verdict": sampled["verdict"], "scores": sampled["scores"],
             "prediction_drift": sampled["prediction_drift"]}] + sampled.get("seeds", [])
    gaps, exceeded = [], []
    for run in runs:
        for column, score in run["scores"].items():
            gap = abs(score - full["scores"][column])
            gaps.append(gap)
            bound = sampled["sampling_error"].get(column)
            if bound is not None and gap > 3 * bound:
                exceeded.append((run["seed"], column, round(gap, 4), round(3 * bound, 4)))
        gaps.append(abs(run["prediction_drift"] - full["prediction_drift"]))
    full_verdict = full["verdict"]
    same = [
        (v["status"], v["dataset_drift"], v["prediction_drifted"], v["drifted_columns"]) if isinstance(v, dict)
        else (None, v[0], v[1], v[2])
        for v in (r["verdict"] for r in runs)
    ]
    target = (full_verdict["status"], full_verdict["dataset_drift"], full_verdict["prediction_drifted"],
              full_verdict["drifted_columns"])
    decisions_match = all(s[1:3] == target[1:3] and (s[0] in (None, target[0])) for s in same)
    columns_match = all(s[3] == target[3] for s in same)
    bounds = {k: v for k, v in sampled["sampling_error"].items() if v is not None}
    return {
        "runs": len(runs), "decision_matches": decisions_match, "drifted_columns_match": columns_match,
        "max_score_gap": round(max(gaps), 4), "max_stated_error_x3": round(3 * max(bounds.values()), 4) if bounds else None,
        "gaps_beyond_3x_bound": exceeded,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--full", default="1000000", help="sizes to also run unsampled ('' for none)")
    parser.add_argument("--seeds", type=int, default=5, help="extra sampled seeds at the largest full size")
    parser.add_argument("--scenario", choices=("drift", "clean"), default="drift")
    parser.add_argument("--log-read", type=int, default=0, help="also time reading N rows from a SQLite log")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--one", nargs=3, metavar=("ROWS", "MODE", "SCENARIO"), help=argparse.SUPPRESS)
    parser.add_argument("--one-log-read", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--many", help=argparse.SUPPRESS)  # ROWS:MODE,ROWS:MODE,...
    args = parser.parse_args(argv)
    if args.many:  # several measurements in one process: imports and frames paid once
        cases = [c.split(":") for c in args.many.split(",")]
        try:
            print(json.dumps([measure(int(rows), mode, args.scenario, 0) for rows, mode in cases]))
        finally:
            shutil.rmtree(os.environ["AIRLOOP_HOME"], ignore_errors=True)
        return 0
    if args.one:
        rows, mode, scenario = int(args.one[0]), args.one[1], args.one[2]
        try:
            print(json.dumps(measure(rows, mode, scenario, args.seeds)))
        finally:
            shutil.rmtree(os.environ["AIRLOOP_HOME"], ignore_errors=True)
        return 0
    if args.one_log_read:
        try:
            print(json.dumps(measure_log_read(args.one_log_read)))
        finally:
            shutil.rmtree(os.environ["AIRLOOP_HOME"], ignore_errors=True)
        return 0

    sizes = [int(s) for s in args.sizes.split(",") if s]
    fulls = [int(s) for s in args.full.split(",") if s]
    results = []
    for rows in sizes:
        seeds = args.seeds if rows == max(fulls, default=-1) else 0
        results.append(child("--one", str(rows), "sampled", args.scenario, "--seeds", str(seeds)))
        if not args.json:
            r = results[-1]
            print(f"{r['rows']:>9} sampled  {r['assess_s']:>6.2f} s wall, {r['assess_cpu_s']:.2f} s cpu  "
                  f"(+reports {r['with_reports_s']:.2f} s)  "
                  f"peak {r['peak_mib']} MiB (held before {r['rss_before_mib']}, +{r['check_delta_mib']})  "
                  f"checked {r['rows_checked']} rows  -> {r['verdict']['status']}", flush=True)
    comparisons = {}
    for rows in fulls:
        full = child("--one", str(rows), "full", args.scenario, "--seeds", "0")
        results.append(full)
        sampled = next((r for r in results if r["rows"] == rows and r["mode"] == "sampled"), None)
        if sampled:
            comparisons[rows] = compare(sampled, full)
        if not args.json:
            print(f"{full['rows']:>9} full     {full['assess_s']:>6.2f} s wall, {full['assess_cpu_s']:.2f} s cpu  "
                  f"(+reports {full['with_reports_s']:.2f} s)  "
                  f"peak {full['peak_mib']} MiB (held before {full['rss_before_mib']}, +{full['check_delta_mib']})  "
                  f"-> {full['verdict']['status']}", flush=True)
            if rows in comparisons:
                print(f"          sampled vs full at {rows}: {json.dumps(comparisons[rows])}", flush=True)
    log_read = child("--one-log-read", str(args.log_read)) if args.log_read else None
    if log_read and not args.json:
        print(f"log read  {json.dumps(log_read)}")
    if args.json:
        print(json.dumps({"results": results, "comparisons": comparisons, "log_read": log_read}, indent=1))
    return 0



# --- for the report (bench.__main__) -------------------------------------------------------------


def run(quick: bool = False, sizes: list[int] | None = None, full_sizes: list[int] | None = None):
    """Airloop's sampled check next to a full Evidently run (every row), at each size.

    Quick: one process measures all (imports paid once; peaks reset before each); otherwise one
    fresh process per measurement, as ``main`` runs them.
    """
    from bench.results import BenchResult, Row

    sizes = sizes or ([10_000, 60_000] if quick else [10_000, 100_000, 1_000_000])
    full_sizes = full_sizes if full_sizes is not None else ([60_000] if quick else [100_000, 1_000_000])
    cases = [(r, "sampled") for r in sizes] + [(r, "full") for r in full_sizes]
    if quick:
        results = child("--many", ",".join(f"{r}:{m}" for r, m in cases))
    else:
        results = [child("--one", str(r), m, "drift", "--seeds", "0") for r, m in cases]
    out = BenchResult("drift", raw=results)
    by = {(r["rows"], r["mode"]): r for r in results}
    for rows in full_sizes:
        s, f = by.get((rows, "sampled")), by[(rows, "full")]
        if not s:
            continue
        target = f"drift check, {rows:,} rows: sampled vs full Evidently"
        out.rows.append(Row(target, "assess + reports s", s["with_reports_s"], f["with_reports_s"]))
        out.rows.append(Row(target, "peak growth MiB", s["check_delta_mib"], f["check_delta_mib"]))
        same = s["verdict"]["dataset_drift"] == f["verdict"]["dataset_drift"]
        out.notes.append(f"{rows:,} rows: sampled checked {s['rows_checked']:,} rows; dataset drift "
                         f"{'the same' if same else 'DIFFERENT'} as the full run ({f['verdict']['status']})")
    out.series["memory_over_rows"] = {
        mode: [(r["rows"], r["check_delta_mib"]) for r in results if r["mode"] == mode] for mode in ("sampled", "full")
    }
    out.series["memory_label"] = "peak RSS growth of the check (MiB)"
    return out


if __name__ == "__main__":
    raise SystemExit(main())
