"""Windowed per-key statistics: Airloop's daily_windows engine against Feast's BatchFeatureView.

    python -m bench.bench_aggregations [--days 30] [--rows-per-day 20000] [--keys 300]
                                       [--quick] [--json] [--workdir DIR]

The issue asks whether Feast's own constructs (``BatchFeatureView`` with ``Aggregation``s on the
local compute engine) should compute a model's windowed statistics instead of
``airloop.daily_windows.recompute``. Both compute, per restaurant and event day D, the
late_delivery kind of statistics: ``orders_1d`` (orders on D), ``orders_7d``,
``avg_prep_minutes_7d`` (mean over the orders that report it: the column has nulls) and
``late_rate_7d`` (mean of ``was_late``), over days D-6..D.

Data (seeded): ``--days`` days of ``--rows-per-day`` orders on ``--keys`` restaurants of very
uneven popularity (the rarest have days, and whole weeks, without orders), written as the
validated dataset is, one ``orders_YYYY-MM-DD.parquet`` per UTC day, timestamps in whole
microseconds; ~15% of ``prep_minutes`` are null, and one restaurant never reports it. A few
orders sit exactly on midnight (the first instant of their day) and at 23:59:59.999999.

Cases, each in a fresh process (``peak +MiB`` is the timed part's high-water mark over the RSS
before it, ``/proc/self/clear_refs``; imports and the Feast repo's ``apply`` are not timed):

* ``daily_windows``: ``recompute`` with a summarize (per-day sums and counts) and a combine
  defined here; one parquet file per day, stamped at the end of the day.
* ``feast_engine``: the only way Feast 0.67 ran these aggregations here: a ``BatchFeatureView``
  with window-less ``Aggregation``s (count, mean) passed *as an object* to the local compute
  engine's ``get_historical_features`` with a ``HistoricalRetrievalTask`` whose start/end are
  the window, once per day and per window length (a 1-day and a 7-day view), from the same
  daily files (a ``FileSource`` on ``orders_*.parquet``, duckdb offline store, pandas backend).
* ``feast_materialize``: the same views through the engine's ``materialize`` (a
  ``MaterializationTask`` per day and view) into the SQLite online store; ``read-back`` is the
  read of every key's values after each day (``get_online_features``), not in ``seconds``.

Then the incremental cases, after the full runs: ``+1 day`` (the next day's file arrives:
daily_windows writes what its fingerprints say changed; Feast has no change tracking, so the
same days are recomputed by calling it for them) and ``fix 1 day`` (a day in the middle is
rewritten with 10% of its orders dropped: the 7 days whose window sees it).

Checks, not timed: every (restaurant, day) value of each Feast path against daily_windows
(nulls equal, floats to 1e-9 relative); and what does *not* run or gives other values, each
actually tried on the same data: the public API (``FeatureStore.apply`` + ``materialize``),
time-windowed ``Aggregation``s, Airloop's own materialization setting
(``pull_latest_features: true``) and the window's end passed as the end of the day (Feast
filters the source with an inclusive end). ``--quick``: 10 days x 500 orders on 30 restaurants
(a few minutes on a busy 2-core machine, nearly all of it starting Feast in each process).

What Feast 0.67 offers, read in its source (``feast/batch_feature_view.py``,
``feast/aggregation/``, ``feast/infra/compute_engines/local/``):

* ``Aggregation(column, function, time_window, slide_interval, name)``: ``function`` is handed
  to pandas' ``groupby().agg`` (count = non-null count, mean skips nulls). The local engine
  refuses any ``time_window``; tiling (sliding windows) exists only for ``StreamFeatureView``
  on the Spark and Ray engines.
* The local engine's plan is read source rows in [start, end] (both ends inclusive) -> filter
  -> group by the view's entity names over all those rows -> write. No window per output row,
  no time stamp on the output, no change tracking: one call aggregates one range.
* ``FeatureStore.apply`` keeps no aggregations (``FeatureViewSpec`` has no such field; only
  ``StreamFeatureViewSpec`` does): ``materialize`` and ``get_historical_features`` see a plain
  ``FeatureView``. ``FeatureStore.get_historical_features`` never reaches the compute engine
  (the offline store joins); the engine's own is reachable only from the provider.
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
import traceback
from pathlib import Path

from bench.bench_drift import peak_mib, reset_peak, rss_mib

REPO_ROOT = Path(__file__).resolve().parents[1]
FIRST_DAY = dt.date(2025, 1, 1)
WINDOW_DAYS = 7
STATS = ("orders_1d", "orders_7d", "avg_prep_minutes_7d", "late_rate_7d")
COLUMNS = ["restaurant_id", "prep_minutes", "was_late"]
PROJECT = "agg_bench"
ONE_US = dt.timedelta(microseconds=1)
CHECKS = ("feast_store_api", "feast_time_window", "feast_pull_latest", "feast_inclusive_end")


# --- data -------------------------------------------------------------------------------------


def make_day(day: dt.date, rows: int, keys: int, seed: int):
    """One day's orders: restaurant_id, event_timestamp (us, UTC), prep_minutes (nulls), was_late."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng([seed, day.toordinal()])
    popularity = np.exp(-np.arange(keys) / (keys / 6))  # the rarest ~1/400 of the first
    key = rng.choice(np.arange(1, keys + 1), size=rows, p=popularity / popularity.sum())
    start = pd.Timestamp(day, tz="UTC")
    offset_us = rng.integers(0, 86_400 * 10**6, rows)
    edge = rng.random(rows)
    offset_us[edge < 0.002] = 0  # exactly midnight: the first instant of this day
    offset_us[edge > 0.998] = 86_400 * 10**6 - 1  # the last microsecond of this day
    prep = rng.normal(15, 4, rows).round(2)
    prep[(rng.random(rows) < 0.15) | (key == keys)] = np.nan  # the last restaurant never reports it
    frame = pd.DataFrame({
        "restaurant_id": key.astype("int64"),
        "event_timestamp": (start + pd.to_timedelta(offset_us, unit="us")).astype("datetime64[us, UTC]"),
        "prep_minutes": prep,
        "was_late": (rng.random(rows) < 0.1 + 0.3 * (key % 3 == 0)).astype("int64"),
    })
    return frame.sort_values("event_timestamp", kind="stable").reset_index(drop=True)


def write_day(source: Path, day: dt.date, frame) -> None:
    frame.to_parquet(source / f"orders_{day:%Y-%m-%d}.parquet", index=False)


# --- daily_windows: the summarize and combine of these statistics -----------------------------


def daily_sums(orders):
    return orders.groupby("restaurant_id").agg(
        orders=("restaurant_id", "size"),
        prep_sum=("prep_minutes", "sum"),
        prep_count=("prep_minutes", "count"),
        late_sum=("was_late", "sum"),
    )


def window_stats(day: dt.date, daily: dict):
    import pandas as pd

    week = pd.concat(daily.values()).groupby(level=0).sum()
    today = daily.get(day)
    orders_1d = today["orders"] if today is not None else pd.Series(dtype="int64")
    prep_count = week["prep_count"].where(week["prep_count"] > 0)
    return pd.DataFrame({
        "restaurant_id": week.index.astype("int64"),
        "orders_1d": orders_1d.reindex(week.index, fill_value=0).astype("int64").to_numpy(),
        "orders_7d": week["orders"].astype("int64").to_numpy(),
        "avg_prep_minutes_7d": (week["prep_sum"] / prep_count).astype("float64").to_numpy(),
        "late_rate_7d": (week["late_sum"] / week["orders"]).astype("float64").to_numpy(),
    })


def run_daily_windows(source: Path, out: Path) -> dict:
    from airloop.daily_windows import recompute

    result = recompute(source, out, name="stats", window_days=WINDOW_DAYS, timestamp="event_timestamp",
                       columns=COLUMNS, summarize=daily_sums, combine=window_stats)
    return {"days": [d.isoformat() for d in result.written], "unchanged": result.unchanged}


def read_daily_windows(out: Path, days: list[dt.date]):
    """The outputs of ``days`` with a ``day`` column (the day each file summarizes)."""
    import pandas as pd

    frames = []
    for day in days:
        frame = pd.read_parquet(out / f"stats_{day:%Y-%m-%d}.parquet")
        frame["day"] = day.isoformat()
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


# --- Feast ------------------------------------------------------------------------------------


def day_range(day: dt.date, window_days: int, inclusive_end: bool = False) -> tuple[dt.datetime, dt.datetime]:
    """The source time range a Feast call aggregates for ``day``'s window.

    Feast filters ``start <= ts <= end`` (both inclusive, in microseconds): the window's end is
    the last microsecond of ``day``, unless ``inclusive_end`` (then an order at the next
    midnight, which belongs to the next day, is counted too).
    """
    start = dt.datetime.combine(day - dt.timedelta(days=window_days - 1), dt.time(), tzinfo=dt.UTC)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    return start, end if inclusive_end else end - ONE_US


def feast_repo(repo: Path, source_glob: str, pull_latest: bool = False):
    """A Feast repo (duckdb offline, SQLite online, local engine) and the two views, as objects.

    The entity is named like its join key: the local engine groups by the view's *entity
    names* (``KeyError: 'restaurant'`` with Airloop's ``restaurant`` entity).
    """
    import yaml
    from feast import BatchFeatureView, Entity, FeatureStore, Field, FileSource
    from feast.aggregation import Aggregation
    from feast.data_format import ParquetFormat
    from feast.types import Float64, Int64
    from feast.value_type import ValueType

    repo.mkdir(parents=True, exist_ok=True)
    (repo / "feature_store.yaml").write_text(yaml.safe_dump({
        "project": PROJECT, "provider": "local",
        "registry": {"registry_type": "file", "path": str(repo / "registry.db")},
        "online_store": {"type": "sqlite", "path": str(repo / "online.db")},
        "offline_store": {"type": "duckdb"},
        "batch_engine": {"type": "local"},
        "entity_key_serialization_version": 3,
        "materialization": {"pull_latest_features": pull_latest, "online_write_batch_size": 10_000},
    }))
    entity = Entity(name="restaurant_id", join_keys=["restaurant_id"], value_type=ValueType.INT64)
    source = FileSource(name="orders", path=source_glob, timestamp_field="event_timestamp",
                        file_format=ParquetFormat())
    # Rows out of an aggregation have no time stamp, and writing them online needs one
    # (KeyError: 'Field "event_timestamp" does not exist in schema'): max(event_timestamp)
    # under the timestamp's own name stamps each row with the key's last order in the window.
    stamp = Aggregation(column="event_timestamp", function="max", name="event_timestamp")
    views = {
        1: BatchFeatureView(
            name="orders_1d_view", entities=[entity], source=source, ttl=dt.timedelta(days=1), online=True,
            schema=[Field(name="restaurant_id", dtype=Int64), Field(name="orders_1d", dtype=Int64)],
            aggregations=[Aggregation(column="was_late", function="count", name="orders_1d"), stamp]),
        WINDOW_DAYS: BatchFeatureView(
            name="stats_7d_view", entities=[entity], source=source, ttl=dt.timedelta(days=WINDOW_DAYS), online=True,
            schema=[Field(name="restaurant_id", dtype=Int64), Field(name="orders_7d", dtype=Int64),
                    Field(name="avg_prep_minutes_7d", dtype=Float64), Field(name="late_rate_7d", dtype=Float64)],
            aggregations=[Aggregation(column="was_late", function="count", name="orders_7d"),
                          Aggregation(column="prep_minutes", function="mean", name="avg_prep_minutes_7d"),
                          Aggregation(column="was_late", function="mean", name="late_rate_7d"), stamp]),
    }
    store = FeatureStore(repo_path=str(repo))
    store.apply([entity, source, *views.values()])
    return store, views


def engine_frame(store, view, day: dt.date, window_days: int, inclusive_end: bool = False):
    from feast.infra.common.retrieval_task import HistoricalRetrievalTask

    start, end = day_range(day, window_days, inclusive_end)
    # entity_df plays no part for a view on one source: every key of the range comes back.
    task = HistoricalRetrievalTask(project=PROJECT, entity_df=None, feature_view=view, full_feature_name=False,
                                   registry=store.registry, start_time=start, end_time=end)
    job = store._get_provider().batch_engine.get_historical_features(store.registry, task)
    if job.error():
        raise job.error()
    return job.to_df()


def day_stats(frames: dict, day: dt.date):
    """One day's 7-day frame with the 1-day counts joined in (0 where a key had no order that day)."""
    week, today = frames[WINDOW_DAYS], frames[1]
    stamps = week.pop("event_timestamp")
    week = week.merge(today.drop(columns="event_timestamp"), on="restaurant_id", how="left")
    week["orders_1d"] = week["orders_1d"].fillna(0).astype("int64")
    week["day"] = day.isoformat()
    week["feast_stamp"] = stamps.to_numpy()
    return week


def run_feast_engine(store, views, days: list[dt.date], inclusive_end: bool = False):
    import pandas as pd

    out = []
    for day in days:
        frames = {w: engine_frame(store, views[w], day, w, inclusive_end) for w in views}
        out.append(day_stats(frames, day))
    return pd.concat(out, ignore_index=True)


def run_feast_materialize(store, views, days: list[dt.date], keys: int) -> tuple:
    """Materialize each day's windows through the engine, then read every key back (timed apart)."""
    import pandas as pd
    from feast.infra.common.materialization_job import MaterializationTask

    engine = store._get_provider().batch_engine
    compute = read = 0.0
    out = []
    rows = [{"restaurant_id": k} for k in range(1, keys + 1)]
    refs = [f"{v.name}:{f.name}" for v in views.values() for f in v.features]
    for day in days:
        clock = time.perf_counter()
        for w, view in views.items():
            start, end = day_range(day, w)
            job = engine.materialize(store.registry, MaterializationTask(
                project=PROJECT, feature_view=view, start_time=start, end_time=end))[0]
            if job.error():
                raise job.error()
        compute += time.perf_counter() - clock
        clock = time.perf_counter()
        frame = store.get_online_features(features=refs, entity_rows=rows).to_df()
        read += time.perf_counter() - clock
        frame["day"] = day.isoformat()
        out.append(frame)
    return pd.concat(out, ignore_index=True), compute, read


# --- one case, in a fresh process -------------------------------------------------------------


def run_case(case: str, work: Path, days: list[dt.date], keys: int, out_path: Path) -> dict:
    import pandas as pd
    import pyarrow.parquet  # noqa: F401  (imports are not the work's cost)

    source, figures = work / "orders", {}
    if case.startswith("feast"):
        import feast.infra.compute_engines.local.compute
        import feast.infra.offline_stores.duckdb  # noqa: F401

        repo = work / f"repo_{case}"
        shutil.rmtree(repo, ignore_errors=True)  # an empty online store
        store, views = feast_repo(repo, str(source / "orders_*.parquet"))
    before = rss_mib()
    reset_peak()
    clock, cpu = time.perf_counter(), os.times()
    if case == "daily_windows":
        figures.update(run_daily_windows(source, work / "daily_out"))
    elif case == "feast_engine":
        result = run_feast_engine(store, views, days)
    elif case == "feast_materialize":
        result, compute, read = run_feast_materialize(store, views, days, keys)
        figures["read_seconds"] = read
    else:
        raise ValueError(case)
    seconds = time.perf_counter() - clock
    now = os.times()
    peak = peak_mib()
    if case == "feast_materialize":
        seconds = compute
    if case == "daily_windows":
        written = [dt.date.fromisoformat(d) for d in figures["days"]]
        result = read_daily_windows(work / "daily_out", written) if written else pd.DataFrame()
    result.to_parquet(out_path, index=False)
    return {**figures, "seconds": seconds, "cpu_seconds": (now.user - cpu.user) + (now.system - cpu.system),
            "growth_mib": peak - before, "before_mib": before, "rows": len(result)}


def run_check(check: str, work: Path, days: list[dt.date], out_path: Path) -> dict:
    """A Feast path that is not the bench's: the exact error it raises, or its values to compare."""
    source = str(work / "orders" / "orders_*.parquet")
    repo = work / f"repo_{check}"
    shutil.rmtree(repo, ignore_errors=True)
    try:
        if check == "feast_store_api":
            # What a repo definition gets: apply stores the view, materialize reads it back.
            store, views = feast_repo(repo, source)
            stored = store.registry.get_feature_view(views[WINDOW_DAYS].name, PROJECT)
            note = (f"the registry returns {type(stored).__name__} with aggregations="
                    f"{getattr(stored, 'aggregations', None)!r}")
            start, end = day_range(days[-1], WINDOW_DAYS)
            store.materialize(start, end, feature_views=[views[WINDOW_DAYS].name])
            return {"error": None, "note": note}
        if check == "feast_time_window":
            from feast.aggregation import Aggregation

            store, views = feast_repo(repo, source)
            view = views[WINDOW_DAYS]
            view.aggregations = [Aggregation(column=a.column, function=a.function, name=a.name,
                                             time_window=dt.timedelta(days=WINDOW_DAYS))
                                 for a in view.aggregations]
            engine_frame(store, view, days[-1], WINDOW_DAYS)
            return {"error": None}
        if check == "feast_pull_latest":  # Airloop's feature_store.yaml: pull_latest_features: true
            store, views = feast_repo(repo, source, pull_latest=True)
            result = run_feast_engine(store, views, days)
        elif check == "feast_inclusive_end":
            store, views = feast_repo(repo, source)
            result = run_feast_engine(store, views, days, inclusive_end=True)
        else:
            raise ValueError(check)
    except Exception as e:  # noqa: BLE001 - the error is the finding
        inner = e.__context__ if isinstance(e, UnboundLocalError) and e.__context__ else e
        return {"error": f"{type(inner).__name__}: {inner}"[:300],
                "where": traceback.extract_tb(inner.__traceback__)[-1].filename.split("site-packages/")[-1]}
    result.to_parquet(out_path, index=False)
    return {"error": None}


def measure(kind: str, name: str, work: Path, days: list[dt.date], keys: int, timeout: float) -> dict:
    out_path = work / f"out_{name}_{days[0]}_{len(days)}.parquet"
    out_path.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "bench.bench_aggregations", "--child", kind, name, str(work),
           ",".join(d.isoformat() for d in days), str(keys), str(out_path)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    started = time.monotonic()
    try:
        done = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"killed after {timeout:.0f} s", "seconds": time.monotonic() - started}
    if done.returncode:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        return {"error": lines[-1][:300] if lines else f"exit {done.returncode}", "stderr_tail": done.stderr[-3000:]}
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    if out_path.exists():
        figures["out_path"] = str(out_path)
    return figures


# --- checking ---------------------------------------------------------------------------------


def compare(got, expected, columns=STATS) -> dict:
    """Every (restaurant, day) of ``expected`` against ``got``; nulls equal, floats to 1e-9."""
    import numpy as np

    keys = ["day", "restaurant_id"]
    merged = expected.merge(got, on=keys, how="outer", suffixes=("", "_got"), indicator=True)
    missing = int((merged["_merge"] == "left_only").sum())
    extra = int((merged["_merge"] == "right_only").sum())
    both = merged[merged["_merge"] == "both"]
    different = np.zeros(len(both), dtype=bool)
    by_column = {}
    for column in columns:
        a = both[column].to_numpy(dtype="float64")
        b = both[f"{column}_got"].to_numpy(dtype="float64")
        same = (np.isnan(a) & np.isnan(b)) | np.isclose(a, b, rtol=1e-9, atol=0)
        if (~same).any():
            by_column[column] = int((~same).sum())
        different |= ~same
    return {"points": len(expected), "missing": missing, "extra": extra, "different": int(different.sum()),
            "by_column": by_column, "agree": missing == extra == int(different.sum()) == 0}


def one_day_counts(got, expected) -> dict:
    """Where the online orders_1d is not the day's count: null (never written), or an older day's."""
    both = expected.merge(got, on=["day", "restaurant_id"], suffixes=("", "_got"))
    off = both[both["orders_1d"] != both["orders_1d_got"]]
    null = off["orders_1d_got"].isna()
    return {"orders_1d_null": int(null.sum()), "orders_1d_stale": int((~null & (off["orders_1d"] == 0)).sum()),
            "orders_1d_other": int((~null & (off["orders_1d"] != 0)).sum())}


def midnight_points(work: Path, days: list[dt.date]) -> int:
    """(restaurant, day) windows with an order exactly at the midnight that ends them."""
    import pandas as pd

    count = 0
    for day in days:
        path = work / "orders" / f"orders_{day + dt.timedelta(days=1):%Y-%m-%d}.parquet"
        if path.exists():
            frame = pd.read_parquet(path)
            count += frame.loc[frame["event_timestamp"] == pd.Timestamp(day + dt.timedelta(days=1), tz="UTC"),
                               "restaurant_id"].nunique()
    return count


# --- main -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=None, help="event days (default 30, 10 with --quick)")
    parser.add_argument("--rows-per-day", type=int, default=None, help="orders a day (default 20000, 500 with --quick)")
    parser.add_argument("--keys", type=int, default=None, help="restaurants (default 300, 30 with --quick)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="10 days x 500 orders, 30 restaurants")
    parser.add_argument("--no-checks", action="store_true", help="skip the not-supported and other-semantics runs")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per case before it is killed")
    parser.add_argument("--workdir", help="keep the data and results here (default: a temp dir)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--child", nargs=6, metavar=("KIND", "NAME", "WORK", "DAYS", "KEYS", "OUT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        kind, name, work, days, keys, out = args.child
        days = [dt.date.fromisoformat(d) for d in days.split(",")]
        if kind == "case":
            figures = run_case(name, Path(work), days, int(keys), Path(out))
        else:  # the checks, one after the other in this process
            figures = {}
            for check in name.split(","):
                path = Path(out).with_name(f"check_{check}.parquet")
                path.unlink(missing_ok=True)
                figures[check] = run_check(check, Path(work), days, path)
                if path.exists():
                    figures[check]["out_path"] = str(path)
        print(json.dumps(figures, default=str))
        return 0
    args.days = args.days or (10 if args.quick else 30)
    args.rows_per_day = args.rows_per_day or (500 if args.quick else 20_000)
    args.keys = args.keys or (30 if args.quick else 300)
    if args.days < WINDOW_DAYS + 2:
        parser.error(f"--days must be at least {WINDOW_DAYS + 2}")
    with tempfile.TemporaryDirectory(prefix="bench-aggregations-") as tmp:
        work = Path(args.workdir or tmp)
        report = bench(work, args)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    return 0


def bench(work: Path, args) -> dict:
    import pandas as pd

    work.mkdir(parents=True, exist_ok=True)
    source = work / "orders"
    shutil.rmtree(source, ignore_errors=True)
    shutil.rmtree(work / "daily_out", ignore_errors=True)
    source.mkdir()
    days = [FIRST_DAY + dt.timedelta(days=i) for i in range(args.days)]
    for day in days:
        write_day(source, day, make_day(day, args.rows_per_day, args.keys, args.seed))
    say = (lambda *a, **k: None) if args.json else (lambda *a, **k: print(*a, **k, flush=True))
    say(f"orders: {args.days} days x {args.rows_per_day:,} = {args.days * args.rows_per_day:,} rows, "
        f"{args.keys} restaurants; statistics {', '.join(STATS)}; {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}")
    say(f"{'case':<20} {'scope':<10} {'days':>4} {'seconds':>8} {'cpu s':>7} {'peak +MiB':>10} "
        f"{'x daily_windows':>15}  values")
    report: dict = {"setup": {"days": args.days, "rows_per_day": args.rows_per_day, "keys": args.keys},
                    "results": [], "checks": {}}
    reference: dict[str, pd.DataFrame] = {}

    def run(scope: str, case_days: list[dt.date]) -> None:
        base = None
        for case in ("daily_windows", "feast_engine", "feast_materialize"):
            r = {"case": case, "scope": scope, **measure("case", case, work, case_days, args.keys, args.timeout)}
            if case == "daily_windows" and "error" not in r:
                written = [dt.date.fromisoformat(d) for d in r["days"]]
                r["days_computed"] = len(written)
                reference[scope] = pd.read_parquet(r.pop("out_path"))
                case_days[:] = written  # Feast recomputes what daily_windows had to
                base = r["seconds"]
            elif "error" not in r:
                r["days_computed"] = len(case_days)
                got = pd.read_parquet(r.pop("out_path"))
                if case == "feast_materialize":
                    # The read-back has every key: null where none was ever written; a key
                    # written on an earlier day and absent from this day's window keeps its
                    # old values (counted as extra: stale).
                    got = got[got["orders_7d"].notna()]
                r.update(compare(got, reference[scope]))
                if case == "feast_materialize":
                    r.update(one_day_counts(got, reference[scope]))
            if base and "error" not in r:
                r["ratio"] = r["seconds"] / base
            report["results"].append(r)
            say(row_line(r))

    run("full", list(days))
    new_day = FIRST_DAY + dt.timedelta(days=args.days)
    write_day(source, new_day, make_day(new_day, args.rows_per_day, args.keys, args.seed))
    run("+1 day", [new_day])
    fixed = days[len(days) // 2]
    frame = pd.read_parquet(source / f"orders_{fixed:%Y-%m-%d}.parquet")
    write_day(source, fixed, frame.sample(frac=0.9, random_state=args.seed).sort_values("event_timestamp"))
    run("fix 1 day", [fixed])

    if not args.no_checks:
        full = reference["full"].copy()
        # Checks run on the data as it is now: the full range's windows that the fix left alone.
        touched = {(fixed + dt.timedelta(days=i)).isoformat() for i in range(WINDOW_DAYS)}
        check_days = [d for d in days if d.isoformat() not in touched]
        full = full[full["day"].isin({d.isoformat() for d in check_days})]
        done = measure("checks", ",".join(CHECKS), work, check_days, args.keys, args.timeout)
        for check in CHECKS:
            c = done.get(check, {"error": done.get("error", "no result")})
            if c.get("error") is None and "out_path" in c:
                c.update(compare(pd.read_parquet(c.pop("out_path")), full))
                if check == "feast_inclusive_end":
                    c["midnight_points"] = midnight_points(work, check_days)
            report["checks"][check] = c
        say(check_lines(report["checks"]))
    return report


def row_line(r: dict) -> str:
    head = f"{r['case']:<20} {r['scope']:<10}"
    if "error" in r:
        return f"{head} {'':>4} {'':>8} {'':>7} {'':>10} {'':>15}  not supported: {r['error']}"
    ratio = f"{r['ratio']:.1f}" if r.get("ratio") is not None else ""
    if r["case"] == "daily_windows":
        values = f"reference ({r['rows']:,} rows, {r['unchanged']} days unchanged)"
    else:
        values = ("agree" if r["agree"] else
                  f"{r['different']} different {r['by_column']}, {r['missing']} missing, {r['extra']} extra") + \
                 f" on {r['points']:,} points"
        if "read_seconds" in r:
            values += (f"; orders_1d null {r['orders_1d_null']}, stale {r['orders_1d_stale']}, "
                       f"other {r['orders_1d_other']}; read-back {r['read_seconds']:.2f} s")
    return (f"{head} {r['days_computed']:>4} {r['seconds']:>8.2f} {r['cpu_seconds']:>7.1f} "
            f"{r['growth_mib']:>10,.0f} {ratio:>15}  {values}")


def check_lines(checks: dict) -> str:
    lines = ["checks (other Feast paths on the same data):"]
    for name, c in checks.items():
        if c.get("error"):
            lines.append(f"  {name}: not supported: {c['error']} (raised in {c.get('where', '?')})")
        elif "points" in c:
            extra = (f"; {c['midnight_points']} windows have an order exactly at their closing midnight"
                     if "midnight_points" in c else "")
            verdict = "agree" if c["agree"] else (f"{c['different']} of {c['points']:,} points different "
                                                  f"{c['by_column']}, {c['missing']} missing, {c['extra']} extra")
            lines.append(f"  {name}: {verdict}{extra}")
        else:
            lines.append(f"  {name}: ran without error {c.get('note', '')}")
    return "\n".join(lines)



# --- for the report (bench.__main__) ----------------------------------------------------------------


def run(quick: bool = False, checks: bool | None = None):
    """daily_windows against Feast's BatchFeatureView engine and materialize, full and incremental."""
    from bench.results import BenchResult, Row

    args = argparse.Namespace(days=9 if quick else 30, rows_per_day=500 if quick else 20_000, keys=30 if quick else 300,
                              seed=0, no_checks=not (checks if checks is not None else not quick), timeout=900.0,
                              json=True)
    with tempfile.TemporaryDirectory(prefix="bench-aggregations-") as tmp:
        report = bench(Path(tmp), args)
    out = BenchResult("aggregations", raw=report)
    results = report["results"]
    for scope in dict.fromkeys(r["scope"] for r in results):
        ours = next(r for r in results if r["scope"] == scope and r["case"] == "daily_windows")
        for r in results:
            if r["scope"] != scope or r["case"] == "daily_windows":
                continue
            target = f"windowed statistics ({scope}): daily_windows vs Feast {r['case'].removeprefix('feast_')}"
            if "error" in r or "error" in ours:
                out.notes.append(f"{target}: {r.get('error') or ours.get('error')}")
                continue
            out.rows.append(Row(target, "seconds", round(ours["seconds"], 2), round(r["seconds"], 2)))
            out.notes.append(f"{target}: Feast's values {'agree' if r['agree'] else 'DIFFER'} on {r['points']:,} points")
    out.notes.append(f"{args.days} days x {args.rows_per_day:,} orders, {args.keys} restaurants; each case in a fresh "
                     f"process; the other-Feast-path checks {'skipped' if args.no_checks else 'run: ' + check_lines(report['checks'])}")
    return out


if __name__ == "__main__":
    raise SystemExit(main())
