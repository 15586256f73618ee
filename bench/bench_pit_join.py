"""Point-in-time joins: Feast's embedded offline stores against a pandas merge_asof reference.

    python -m bench.bench_pit_join [--rows 1000,100000,1000000] [--stores file,duckdb]
                                   [--locations 50] [--hours 8760] [--layout file|dir]
                                   [--parquet-format] [--precision us|ns]
                                   [--quick] [--all] [--json]

Writes a seeded hourly feature view (``--locations`` x ``--hours``, 6 float features, a few
gaps of 1-12 hours per location and ~0.2% null cells; TTL 2 h) as parquet, and entity frames
of R rows: a row id, ``location_id``, a ``datetime64[ns, UTC]`` ``event_timestamp`` (whole
microseconds, or with ``--precision ns`` any nanosecond) and pass-through columns (``label``
and the request fields ``distance_km`` and ``channel``). Most rows are random (location, time)
pairs over the year; seeded edge rows are mixed in (``KINDS``): times exactly on a value,
exactly TTL after one, 1 us (and 1 ns) past the TTL, 1 us (and 1 ns) before the next hour, in
a gap, before the first value, a location with no values at all, and duplicates of another
row's (location, time) with their own row id and label.

Each case runs in a fresh process. The Feast repo (Entity, FileSource, FeatureView,
FeatureService) is applied beforehand per offline store; the child imports everything, reads
the entity frame, starts ray's or spark's engine if that is the store, resets its peak RSS
(``/proc/self/clear_refs``) and times ``get_historical_features(entity_df,
features=service).to_df()``. ``peak +MiB`` is the call's peak over the RSS before it (for ray
and spark, whose work runs in other processes, the sampled peak of the process tree's summed
RSS), ``cpu s`` the child's own CPU time. The ``merge_asof`` rows are the reference, measured
the same way (read the view's parquet, ``pandas.merge_asof`` by location, backward, tolerance
= TTL, back in row order); ``x merge_asof`` divides a store's seconds by the reference's at the
same row count. Every output row is checked against the reference by row id (stores may
reorder rows): ``mismatches`` counts rows missing, repeated, or with any feature or
pass-through value different (nulls compare equal); the notes name the kinds of entity row they
fall on and whether ``event_timestamp`` came back changed.

Stores: ``file`` (dask) and ``duckdb`` (``feast[duckdb]``); ``ray`` and ``spark`` too when
their packages are installed (they are not Airloop requirements; spark reads a SparkSource of
the same parquet). Defaults: ``file`` at 1k and 10k rows only (it needs ~2 GB at 1k and more
than 18 GiB at 10k; ``--all`` runs it at every size), the others at 1k, 100k and 1M rows, on 50
locations x 8,760 hours. ``--quick`` is 1k rows on 10 locations x 30 days (under a minute). A
case is killed past ``--timeout`` seconds or ``--max-rss-gib`` of RSS. The issue's goal is 1M
rows within 60 s and 2 GiB of peak growth, with the reference's rows.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.bench_drift import peak_mib, reset_peak, rss_mib

REPO_ROOT = Path(__file__).resolve().parents[1]
START = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
TTL = dt.timedelta(hours=2)
FEATURES = ("demand_1h", "supply_1h", "eta_p50_min", "eta_p90_min", "rain_mm", "temp_c")
PASSTHROUGH = ("location_id", "label", "distance_km", "channel")
VIEW, SERVICE = "location_hourly", "location_hourly_service"
# Entity rows besides the random ones: (kind, share of R, at least). See make_entities.
KINDS = (
    ("exact", 0.01, 3),  # on a value's timestamp: that value
    ("hour_minus_1ns", 0.005, 3),  # 1 ns before the next hourly value: the previous one (ns only)
    ("hour_minus_1us", 0.005, 3),  # 1 us before it: the same
    ("ttl_edge", 0.005, 3),  # exactly TTL after the last value before a gap: that value
    ("ttl_out_1ns", 0.005, 3),  # 1 ns past it: null (ns only)
    ("ttl_out_1us", 0.005, 3),  # 1 us past it: null
    ("in_gap", 0.005, 3),  # 2.5 h into a gap: null
    ("before_first", 0.002, 3),  # before the view's first hour: null
    ("unknown_location", 0.005, 3),  # a location with no values at all: null
    ("duplicate", 0.01, 3),  # another row's (location, time), own row id and label
)
DEFAULT_ROWS = {"file": (1_000, 10_000), "duckdb": (1_000, 100_000, 1_000_000)}
# Other offline stores that run on this machine without a service, when their package is
# installed (neither is in requirements.txt): ray starts a local cluster, spark a local JVM.
OPTIONAL_STORES = {"ray": "ray", "spark": "pyspark"}
FILE_MAX_ROWS = 10_000  # the file store peaks at ~2 GiB with 1k rows and passes 18 GiB with 10k


# --- data -------------------------------------------------------------------------------------


def make_view(locations: int, hours: int, seed: int):
    """The hourly view: every (location, hour) but for gap runs, ~0.2% of feature cells null."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    keep = np.ones((locations, hours), dtype=bool)
    gaps = max(2, hours // 400)  # ~22 gaps per location over a year
    for loc in range(locations):
        lengths = rng.choice([1, 1, 2, 3, 4, 6, 12], size=gaps)
        for start, length in zip(rng.integers(1, hours - 12, size=gaps), lengths):
            keep[loc, start : start + length] = False
    loc_idx, hour_idx = np.nonzero(keep)
    stamps = (pd.Timestamp(START) + pd.to_timedelta(hour_idx, unit="h")).astype("datetime64[us, UTC]")
    frame = pd.DataFrame({"location_id": (loc_idx + 1).astype("int64"), "event_timestamp": stamps})
    for i, name in enumerate(FEATURES):
        values = rng.normal(10 * (i + 1), 3, len(frame))
        values[rng.random(len(frame)) < 0.002] = np.nan
        frame[name] = values
    return frame


def write_view(frame, root: Path, layout: str) -> Path:
    """``file``: one parquet file; ``dir``: a directory of daily files, as Airloop's models write."""
    if layout == "file":
        path = root / f"{VIEW}.parquet"
        frame.to_parquet(path, index=False)
        return path
    path = root / VIEW
    path.mkdir(parents=True, exist_ok=True)
    for day, part in frame.groupby(frame["event_timestamp"].dt.floor("D")):
        part.to_parquet(path / f"{VIEW}_{day:%Y-%m-%d}.parquet", index=False)
    return path


def make_entities(view, rows: int, locations: int, hours: int, seed: int, precision: str = "us"):
    """R entity rows in random order, and each row's kind (indexed by row id).

    ``event_timestamp`` is always ``datetime64[ns, UTC]``; with ``precision="us"`` its values
    are whole microseconds (as parsed order times are) and the 1 ns kinds are left out.
    """
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed + rows)
    start_ns = pd.Timestamp(START).value
    hour, ttl = 3_600 * 10**9, int(TTL.total_seconds()) * 10**9
    keys = view["location_id"].to_numpy()
    stamps = view["event_timestamp"].astype("datetime64[ns, UTC]").astype("int64").to_numpy()
    # Consecutive values of one location (the view is sorted by location, then time).
    same = keys[1:] == keys[:-1]
    step = stamps[1:] - stamps[:-1]
    followed = np.nonzero(same & (step == hour))[0]  # a value with the next hour present
    before_gap = np.nonzero(same & (step >= 3 * hour))[0]  # last value before a gap of >= 2 h
    counts = {kind: max(floor, int(rows * share)) for kind, share, floor in KINDS
              if precision == "ns" or not kind.endswith("_1ns")}
    parts: list[tuple[str, np.ndarray, np.ndarray]] = []

    def pick(candidates, n):
        return candidates[rng.integers(0, len(candidates), n)]

    i = pick(np.arange(len(keys)), counts["exact"])
    parts.append(("exact", keys[i], stamps[i]))
    for kind, offset in (("hour_minus_1ns", hour - 1), ("hour_minus_1us", hour - 1_000)):
        if kind in counts:
            i = pick(followed, counts[kind])
            parts.append((kind, keys[i], stamps[i] + offset))
    for kind, offset in (("ttl_edge", ttl), ("ttl_out_1ns", ttl + 1), ("ttl_out_1us", ttl + 1_000),
                         ("in_gap", ttl + hour // 2)):
        if kind in counts:
            i = pick(before_gap, counts[kind])
            parts.append((kind, keys[i], stamps[i] + offset))
    n = counts["before_first"]
    early = start_ns - rng.integers(1, ttl // 1_000, n) * 1_000  # whole microseconds
    parts.append(("before_first", rng.integers(1, locations + 1, n), early))
    n = counts["unknown_location"]
    parts.append(("unknown_location", np.full(n, locations + 1), start_ns + rng.integers(0, hours, n) * hour))
    n = rows - sum(counts.values())
    if n < 0:
        raise ValueError(f"{rows} rows are too few for the edge rows ({sum(counts.values())})")
    random_ns = start_ns + rng.integers(0, hours * hour, n)
    if precision == "us":
        random_ns -= random_ns % 1_000
    parts.append(("random", rng.integers(1, locations + 1, n), random_ns))
    kinds = np.concatenate([np.full(len(k), kind) for kind, k, _ in parts])
    loc = np.concatenate([k for _, k, _ in parts]).astype("int64")
    ts = np.concatenate([t for _, _, t in parts]).astype("int64")
    i = rng.integers(0, len(loc), counts["duplicate"])  # copies of rows already drawn
    kinds = np.concatenate([kinds, np.full(len(i), "duplicate")])
    loc, ts = np.concatenate([loc, loc[i]]), np.concatenate([ts, ts[i]])
    order = rng.permutation(len(loc))
    frame = pd.DataFrame(
        {
            "row_id": np.arange(len(loc), dtype="int64"),
            "location_id": loc[order],
            "event_timestamp": pd.to_datetime(ts[order], unit="ns", utc=True),
            "label": rng.integers(0, 2, len(loc)).astype("int64"),
            "distance_km": rng.uniform(0.3, 9.0, len(loc)).round(3),
            "channel": rng.choice(np.array(["app", "web", "phone"], dtype=object), len(loc)),
        }
    )
    return frame, pd.Series(kinds[order], index=frame["row_id"], name="kind")


def merge_asof(entities, view):
    """The reference: each row's latest value at or before its time, within the TTL, in row order."""
    import pandas as pd

    view = view.astype({"event_timestamp": "datetime64[ns, UTC]"}).sort_values("event_timestamp", kind="stable")
    left = entities.sort_values("event_timestamp", kind="stable")
    joined = pd.merge_asof(left, view, on="event_timestamp", by="location_id", direction="backward",
                           tolerance=pd.Timedelta(TTL), allow_exact_matches=True)
    return joined.sort_values("row_id").reset_index(drop=True)


# --- Feast repo -------------------------------------------------------------------------------


def store_config(store: str, repo: Path) -> dict:
    if store == "duckdb":
        return {"type": "duckdb"}
    if store == "ray":
        return {"type": "ray", "storage_path": str(repo / "ray_storage")}
    if store == "spark":
        return {"type": "spark", "spark_conf": {
            "spark.master": "local[*]", "spark.ui.enabled": "false", "spark.sql.session.timeZone": "UTC",
            "spark.driver.memory": "2g", "spark.sql.shuffle.partitions": "8",
            "spark.sql.execution.arrow.pyspark.enabled": "true",
        }}
    return {"type": "file"}


def apply_repo(repo: Path, store: str, source_path: Path, parquet_format: bool = False) -> None:
    """A minimal repo: the location entity, the view's FileSource, the view and its service.

    The FileSource names no file format, as Airloop's models declare theirs, unless
    ``parquet_format`` (the duckdb store reads a path without one only if it ends in .parquet).
    """
    import yaml
    from feast import Entity, FeatureService, FeatureStore, FeatureView, Field, FileSource
    from feast.data_format import ParquetFormat
    from feast.types import Float64, Int64
    from feast.value_type import ValueType

    repo.mkdir(parents=True, exist_ok=True)
    config = {
        "project": "pit_bench",
        "provider": "local",
        "registry": {"registry_type": "file", "path": str(repo / "registry.db")},
        "online_store": {"type": "sqlite", "path": str(repo / "online.db")},
        "offline_store": store_config(store, repo),
        "entity_key_serialization_version": 3,
    }
    (repo / "feature_store.yaml").write_text(yaml.safe_dump(config))
    location = Entity(name="location", join_keys=["location_id"], value_type=ValueType.INT64)
    if store == "spark":  # the spark store reads SparkSources only
        from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource

        source = SparkSource(name=f"{VIEW}_source", path=str(source_path), file_format="parquet",
                             timestamp_field="event_timestamp")
    else:
        source = FileSource(name=f"{VIEW}_source", path=str(source_path), timestamp_field="event_timestamp",
                            file_format=ParquetFormat() if parquet_format else None)
    view = FeatureView(
        name=VIEW,
        entities=[location],
        ttl=TTL,
        schema=[Field(name="location_id", dtype=Int64), *(Field(name=f, dtype=Float64) for f in FEATURES)],
        source=source,
    )
    service = FeatureService(name=SERVICE, features=[view])
    FeatureStore(repo_path=str(repo)).apply([location, source, view, service])


# --- one case, in a fresh process -------------------------------------------------------------


def tree_rss_mib() -> float:
    """RSS of this process and its descendants (ray's local cluster, spark's JVM)."""
    import psutil

    total = 0
    for p in [psutil.Process(), *psutil.Process().children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total / 2**20


def start_engine(store: str, feature_store) -> float:
    """Start what ray and spark start on first use (a local cluster, a JVM); returns seconds."""
    clock = time.perf_counter()
    config = feature_store.config
    if store == "ray":
        from feast.infra.offline_stores.contrib.ray_offline_store.ray import RayOfflineStore

        RayOfflineStore._ensure_ray_initialized(config)
    elif store == "spark":
        from feast.infra.offline_stores.contrib.spark_offline_store.spark import (
            get_spark_session_or_start_new_with_repoconfig,
        )

        get_spark_session_or_start_new_with_repoconfig(config.offline_store)
    return time.perf_counter() - clock


def run_case(store: str, repo: Path, entities_path: Path, view_path: Path, out_path: Path) -> dict:
    """Time one join in this process; write its result to ``out_path``; return the figures."""
    import pandas as pd
    import pyarrow.parquet  # noqa: F401  (imports are not the join's cost)

    entities = pd.read_parquet(entities_path)
    started, startup = out_path.with_suffix(".started"), 0.0
    if store == "merge_asof":
        before, tree_before = rss_mib(), tree_rss_mib()
        started.touch()
        reset_peak()
        clock, cpu = time.perf_counter(), os.times()
        result = merge_asof(entities, pd.read_parquet(view_path))
    else:
        from feast import FeatureStore

        if store == "duckdb":
            import feast.infra.offline_stores.duckdb  # noqa: F401
        elif store in ("file", "dask"):
            import dask.dataframe  # noqa: F401
            import feast.infra.offline_stores.dask  # noqa: F401
        feature_store = FeatureStore(repo_path=str(repo))
        service = feature_store.get_feature_service(SERVICE)
        startup = start_engine(store, feature_store)
        before, tree_before = rss_mib(), tree_rss_mib()
        started.touch()  # the parent samples the process tree's RSS from here on
        reset_peak()
        clock, cpu = time.perf_counter(), os.times()
        result = feature_store.get_historical_features(entity_df=entities, features=service).to_df()
    seconds = time.perf_counter() - clock
    now = os.times()
    cpu_seconds = (now.user - cpu.user) + (now.system - cpu.system)
    peak = peak_mib()
    result.to_parquet(out_path, index=False)
    return {"seconds": seconds, "cpu_seconds": cpu_seconds, "startup_seconds": startup, "before_mib": before,
            "peak_mib": peak, "tree_before_mib": tree_before, "out_rows": len(result),
            "dtypes": {c: str(t) for c, t in result.dtypes.items()}}


def measure(store: str, rows: int, work: Path, repo: Path | None, view_path: Path, args) -> dict:
    """``run_case`` in a fresh process, killed past ``--timeout`` s or ``--max-rss-gib``."""
    import psutil

    out_path = work / f"out_{store}_{rows}.parquet"
    started_path = out_path.with_suffix(".started")
    out_path.unlink(missing_ok=True)
    started_path.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "bench.bench_pit_join", "--child", store, str(repo or "-"),
           str(work / f"entities_{rows}.parquet"), str(view_path), str(out_path)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    limit = args.max_rss_gib * 2**30
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        child = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=stdout, stderr=stderr, text=True)
        proc, started, tree_peak, killed = psutil.Process(child.pid), time.monotonic(), 0, None
        tree: list = [proc]
        while child.poll() is None:
            try:
                tree = [proc, *proc.children(recursive=True)]
                rss = sum(p.memory_info().rss for p in tree)
                if started_path.exists():  # only the timed call's peak counts
                    tree_peak = max(tree_peak, rss)
            except psutil.Error:
                rss = 0
            if rss > limit or time.monotonic() - started > args.timeout:
                killed = (f"killed at {rss / 2**30:.1f} GiB RSS" if rss > limit
                          else f"killed after {args.timeout:.0f} s")
                for p in reversed(tree):
                    try:
                        p.kill()
                    except psutil.Error:
                        pass
                child.wait()
                break
            time.sleep(0.1)
        stdout.seek(0)
        stderr.seek(0)
        out, err = stdout.read(), stderr.read()
    if killed or child.returncode:
        lines = [line for line in err.strip().splitlines() if line.strip()]
        return {"error": killed or (lines[-1][:200] if lines else f"exit {child.returncode}"),
                "stderr_tail": err[-3000:], "seconds": time.monotonic() - started}
    figures = json.loads(out.strip().splitlines()[-1])
    # Stores that work in other processes (ray, spark) hold memory outside the child's own
    # peak: their growth is the sampled peak of the process tree's summed RSS over its RSS
    # before the call (sampled every 0.1 s, so a shorter spike can be missed).
    figures["tree_peak_mib"] = tree_peak / 2**20
    figures["growth_mib"] = max(figures["peak_mib"] - figures["before_mib"],
                                figures["tree_peak_mib"] - figures["tree_before_mib"])
    figures["out_path"] = str(out_path)
    return figures


# --- checking ---------------------------------------------------------------------------------


def check(got, reference, kinds) -> dict:
    """Compare a store's rows with the reference's, by row id; nulls compare equal."""
    import numpy as np
    import pandas as pd

    ref = reference.set_index("row_id")
    if "row_id" not in got.columns:
        return {"correct": False, "mismatches": len(ref), "missing": len(ref), "repeated": 0,
                "different": 0, "by_kind": {}, "timestamps": "no row_id column"}
    counts = got["row_id"].value_counts()
    repeated = set(counts.index[counts > 1])
    missing = set(ref.index) - set(counts.index)
    unknown = set(counts.index) - set(ref.index)
    once = got[~got["row_id"].isin(repeated | unknown)].set_index("row_id")
    ids = ref.index.intersection(once.index)
    once, expected = once.loc[ids], ref.loc[ids]
    different = pd.Series(False, index=ids)
    differing_columns = []
    for column in (*PASSTHROUGH, *FEATURES):
        if column not in once.columns:
            different[:] = True
            differing_columns.append(f"{column} (absent)")
            continue
        a, b = once[column].to_numpy(dtype=object), expected[column].to_numpy(dtype=object)
        a_null, b_null = pd.isna(once[column]).to_numpy(), pd.isna(expected[column]).to_numpy()
        with np.errstate(invalid="ignore"):
            same = (a_null & b_null) | (~a_null & ~b_null & (a == b))
        if not same.all():
            differing_columns.append(column)
        different |= ~same
    bad = missing | repeated | unknown | set(ids[different.to_numpy()])
    by_kind = kinds.reindex(sorted(bad & set(kinds.index))).value_counts().to_dict()
    by_kind = {k: int(v) for k, v in sorted(by_kind.items())}
    stamps_got = pd.to_datetime(once["event_timestamp"], utc=True).astype("datetime64[ns, UTC]").astype("int64")
    stamps_ref = expected["event_timestamp"].astype("int64")
    changed = int((stamps_got != stamps_ref).sum())
    return {
        "correct": not bad,
        "mismatches": len(bad),
        "missing": len(missing),
        "repeated": len(repeated),
        "different": int(different.sum()),
        "differing_columns": differing_columns,
        "by_kind": by_kind,
        "timestamps_changed": changed,
        "timestamp_dtype": str(got["event_timestamp"].dtype) if "event_timestamp" in got else None,
    }


# --- main -------------------------------------------------------------------------------------


def plan(args) -> list[tuple[str, int]]:
    """(store, rows) cases, merge_asof first at each size."""
    stores = [s for s in args.stores.split(",") if s != "merge_asof"]
    cases: list[tuple[str, int]] = []
    for store in stores:
        sizes = ([int(r) for r in args.rows.split(",")] if args.rows
                 else [1_000] if args.quick else DEFAULT_ROWS.get(store, DEFAULT_ROWS["duckdb"]))
        if store == "file" and not args.all:
            if any(r > FILE_MAX_ROWS for r in sizes):
                print(f"file store: sizes above {FILE_MAX_ROWS:,} rows skipped (--all to run them)", file=sys.stderr)
            sizes = [r for r in sizes if r <= FILE_MAX_ROWS]
        cases += [(store, r) for r in sizes]
    sizes = sorted({r for _, r in cases})
    return [("merge_asof", r) for r in sizes] + sorted(cases, key=lambda c: (c[1], stores.index(c[0])))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", help="entity rows, comma-separated (default: per store, see --help)")
    parser.add_argument("--stores", default=None, help="offline stores: file,duckdb (and ray, spark if installed)")
    parser.add_argument("--locations", type=int, default=None, help="default 50 (10 with --quick)")
    parser.add_argument("--hours", type=int, default=None, help="default 8760 (720 with --quick)")
    parser.add_argument("--layout", choices=("file", "dir"), default="file",
                        help="the view as one parquet file, or a directory of daily files")
    parser.add_argument("--parquet-format", action="store_true",
                        help="declare file_format=ParquetFormat() on the FileSource (default: none, as Airloop)")
    parser.add_argument("--precision", choices=("us", "ns"), default="us",
                        help="entity times in whole microseconds, or with nanoseconds (both datetime64[ns, UTC])")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="1k rows, 10 locations x 30 days")
    parser.add_argument("--all", action="store_true", help="also run the file store above 10k rows")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per case before it is killed")
    parser.add_argument("--max-rss-gib", type=float, default=18.0, help="RSS per case before it is killed")
    parser.add_argument("--workdir", help="keep the data and results here (default: a temp dir)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--child", nargs=5, metavar=("STORE", "REPO", "ENTITIES", "VIEW", "OUT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        store, repo, entities, view, out = args.child
        print(json.dumps(run_case(store, Path(repo), Path(entities), Path(view), Path(out))))
        return 0

    if args.stores is None:
        optional = [store for store, module in OPTIONAL_STORES.items() if importlib.util.find_spec(module)]
        args.stores = ",".join(["file", "duckdb", *optional])
    args.locations = args.locations or (10 if args.quick else 50)
    args.hours = args.hours or (720 if args.quick else 8_760)
    results = run_cases(args, say=None if args.json else print)
    if args.json:
        print(json.dumps(results, indent=2, default=str))
    return 0


def run_cases(args, say=None) -> list[dict]:
    """Every planned case on one view, each checked against the reference; ``say`` prints progress."""
    import pandas as pd

    cases = plan(args)
    with tempfile.TemporaryDirectory(prefix="bench-pit-join-") as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        view = make_view(args.locations, args.hours, args.seed)
        view_path = write_view(view, work, args.layout)
        repos = {}
        for store in {s for s, _ in cases if s != "merge_asof"}:
            repos[store] = work / f"repo_{store}"
            apply_repo(repos[store], store, view_path, args.parquet_format)
        if say:
            layout = args.layout + (", ParquetFormat" if args.parquet_format else "")
            times = "whole microseconds" if args.precision == "us" else "nanoseconds"
            say(f"view: {args.locations} locations x {args.hours:,} hours = {len(view):,} rows ({layout}), "
                f"{len(FEATURES)} features, TTL {TTL}; entity times in {times}; {os.cpu_count()} CPUs")
            say(f"load average {os.getloadavg()[0]:.1f} at the start (wall seconds suffer from other "
                f"work; cpu s is this process's own, not ray's or spark's other processes)")
            say(f"{'store':<10} {'rows':>9} {'seconds':>8} {'cpu s':>7} {'peak +MiB':>10} {'correct':>7} "
                f"{'mismatches':>10} {'x merge_asof':>12}", flush=True)
        frames, results, baseline = {}, [], {}
        for store, rows in cases:
            if rows not in frames:
                entities, kinds = make_entities(view, rows, args.locations, args.hours, args.seed, args.precision)
                entities.to_parquet(work / f"entities_{rows}.parquet", index=False)
                frames[rows] = (merge_asof(entities, view), kinds)
            reference, kinds = frames[rows]
            r = {"store": store, "rows": len(reference), **measure(store, rows, work, repos.get(store),
                                                                     view_path, args)}
            if "error" not in r:
                r.update(check(pd.read_parquet(r.pop("out_path")), reference, kinds))
                if store == "merge_asof":
                    baseline[rows] = r["seconds"]
                r["ratio"] = r["seconds"] / baseline[rows] if rows in baseline else None
            results.append(r)
            if say:
                say(row_line(r), flush=True)
        if say:
            print_notes(results)
            say(f"  load average {os.getloadavg()[0]:.1f} at the end")
    return results


def row_line(r: dict) -> str:
    if "error" in r:
        return (f"{r['store']:<10} {r['rows']:>9,} {r['seconds']:>8.1f} {'':>7} {'':>10} {'no':>7} {'':>10} "
                f"{'':>12}  {r['error']}")
    ratio = f"{r['ratio']:.1f}" if r.get("ratio") is not None else ""
    return (f"{r['store']:<10} {r['rows']:>9,} {r['seconds']:>8.2f} {r['cpu_seconds']:>7.1f} "
            f"{r['growth_mib']:>10,.0f} {'yes' if r['correct'] else 'no':>7} {r['mismatches']:>10,} {ratio:>12}")


def print_notes(results: list[dict]) -> None:
    for r in results:
        head = f"  {r['store']} {r['rows']:,}:"
        if "error" in r:
            print(f"{head} failed: {r['error']}")
            continue
        notes = []
        if r.get("startup_seconds", 0) >= 0.5:
            notes.append(f"engine startup {r['startup_seconds']:.1f} s before the timed call (not counted)")
        if not r["correct"]:
            notes.append(f"missing {r['missing']}, repeated {r['repeated']}, different {r['different']} "
                         f"({', '.join(r['differing_columns']) or '-'}); by kind {r['by_kind']}")
        if r["timestamps_changed"]:
            notes.append(f"event_timestamp changed on {r['timestamps_changed']:,} rows "
                         f"(returned as {r['timestamp_dtype']})")
        if notes:
            print(f"{head} " + "; ".join(notes))
    goal = [r for r in results if r["store"] != "merge_asof" and r["rows"] >= 1_000_000]
    for r in goal:
        met = "error" not in r and r["correct"] and r["seconds"] <= 60 and r["growth_mib"] <= 2048
        print(f"  goal (1M rows: <= 60 s, <= 2 GiB growth, reference rows) {r['store']}: "
              f"{'met' if met else 'not met'}")


# --- for the report (bench.__main__) -----------------------------------------------------------


def run(quick: bool = False, rows: list[int] | None = None, store: str = "duckdb"):
    """Airloop's offline store (duckdb, see feature_repo/feature_store.yaml) against merge_asof."""
    from bench.results import BenchResult, Row

    rows = rows or ([1_000] if quick else [1_000, 100_000, 1_000_000])
    args = argparse.Namespace(
        stores=store, rows=",".join(map(str, rows)), quick=quick, all=False, locations=10 if quick else 50,
        hours=720 if quick else 8_760, seed=0, layout="file", parquet_format=False, precision="us", workdir=None,
        timeout=900.0, max_rss_gib=18.0,
    )
    results = run_cases(args)
    out = BenchResult("pit_join", raw=results)
    by = {(r["store"], r["rows"]): r for r in results}
    for (name, n), r in by.items():
        if name != store:
            continue
        base = by.get(("merge_asof", n), {})
        target = f"point-in-time join {n:,} rows: Feast {store} vs merge_asof"
        if "error" in r:
            out.notes.append(f"{target}: {r['error']}")
            continue
        at_goal = n >= 1_000_000
        out.rows.append(Row(target, "seconds", round(r["seconds"], 2), round(base.get("seconds", 0), 2) or None,
                            "pit_join_1m_seconds" if at_goal else None))
        out.rows.append(Row(target, "peak growth MiB", round(r["growth_mib"]), round(base.get("growth_mib", 0)) or None,
                            "pit_join_1m_growth_mib" if at_goal else None))
        out.rows.append(Row(target, "rows unlike the reference", r["mismatches"], base.get("mismatches"),
                            "pit_join_mismatches"))
    out.notes.append(f"view {args.locations} locations x {args.hours:,} hours; each case in a fresh process; "
                     "the goals (60 s, 2 GiB) are stated for 1M rows")
    return out


if __name__ == "__main__":
    raise SystemExit(main())
