"""Benchmark: materializing restaurant statistics offline -> online, Feast path vs raw writes.

For N entities it writes synthetic ``restaurant_stats`` parquet (one file per day) and measures,
each in a fresh process, the wall time, rows/s and peak RSS growth of

* ``feast``: ``airloop.features.materialize``, the production path: daily chunks, latest row
  per entity per chunk, written with the stores' bulk write (``airloop.feast_online``) into
  Feast's own online layout, which Feast then reads;
* ``raw``: the same latest-per-entity rows read with pyarrow and written straight to the
  store in the layout Feast reads, without Feast: SQLite rows (entity key, feature name,
  serialized value) in Feast's table, one Redis hash per entity with one field per feature;
* ``raw-wide`` (SQLite only): one row per entity with one column per feature, the least any
  write can do (Feast's SQLite layout has one row per entity *and feature*);
* ``feast-stock`` (with ``--stock``): ``FeatureStore.materialize`` over the whole range,
  Feast's own conversion and writes, for comparison;

on SQLite and on Redis, for entities that appear once (``unique``) and entities repeated on
``--days`` consecutive days (``repeated``).

    .venv/bin/python bench/bench_materialize.py                 # 100k entities
    .venv/bin/python bench/bench_materialize.py --entities 1000000 --cases unique

Redis runs use ``--redis`` (default 127.0.0.1:6379, db 14), flushed before each run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DAY0 = dt.date(2024, 1, 1)
FEATURES = (
    "orders_1d", "orders_7d", "avg_prep_minutes_7d", "late_rate_7d", "avg_distance_km_7d", "avg_items_7d",
)


def write_stats(stats_dir: Path, entities: int, days: int) -> None:
    import numpy as np
    import pandas as pd

    stats_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(days):
        day = DAY0 + dt.timedelta(days=i)
        frame = pd.DataFrame(
            {
                "restaurant_id": np.arange(1, entities + 1, dtype="int64"),
                "event_timestamp": pd.Timestamp(day + dt.timedelta(days=1), tz="UTC"),
                "orders_1d": rng.integers(0, 50, entities),
                "orders_7d": rng.integers(0, 300, entities),
                "avg_prep_minutes_7d": rng.uniform(5, 30, entities),
                "late_rate_7d": rng.uniform(0, 1, entities),
                "avg_distance_km_7d": rng.uniform(1, 8, entities),
                "avg_items_7d": rng.uniform(1, 5, entities),
            }
        )
        frame.to_parquet(stats_dir / f"restaurant_stats_{day:%Y-%m-%d}.parquet", index=False)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def run_feast(days: int, write_batch_size: int, stock: bool = False) -> dict:
    """``airloop.features.materialize``, or with ``stock`` Feast's own ``FeatureStore.materialize``."""
    from airloop import features
    from airloop.settings import ensure_dirs

    settings = ensure_dirs()
    features.apply(settings)
    start = dt.datetime.combine(DAY0, dt.time(), tzinfo=dt.timezone.utc)
    end = start + dt.timedelta(days=days)
    store = features.get_store(settings, write_batch_size=write_batch_size) if stock else None
    before = rss_bytes()
    started = time.perf_counter()
    if stock:
        # This bench's view only: the other models' views (one Feast project) have no data here.
        store.materialize(start, end, feature_views=["restaurant_stats"])
    else:
        result = features.materialize(end, settings, write_batch_size=write_batch_size)
    seconds = time.perf_counter() - started
    if stock:
        rows, chunks = len(latest_per_entity((settings.offline_dir / "restaurant_stats"))), 1
    else:
        rows, chunks = result.rows, sum(1 for c in result.chunks if c.rows)
    return {"seconds": seconds, "rows": rows, "chunks": chunks, "rss_before": before, "peak": peak_rss_bytes()}


def latest_per_entity(stats_dir: Path):
    import pyarrow.dataset as ds

    frame = ds.dataset(stats_dir, format="parquet").to_table().to_pandas()
    return frame.sort_values("event_timestamp").drop_duplicates("restaurant_id", keep="last")


def run_raw(stats_dir: Path, write) -> dict:
    """Time reading the latest row per entity and ``write(latest)``, all without Feast."""
    before = rss_bytes()
    started = time.perf_counter()
    latest = latest_per_entity(stats_dir)
    write(latest)
    return {"seconds": time.perf_counter() - started, "rows": len(latest), "chunks": 1,
            "rss_before": before, "peak": peak_rss_bytes()}


def write_sqlite_feast_layout(latest, db_path: Path, batch: int) -> None:
    """Feast's SQLite layout: a row per entity and feature, keyed by the serialized entity key."""
    import sqlite3
    import struct

    conn = sqlite3.connect(db_path)
    conn.execute(
        "CREATE TABLE IF NOT EXISTS stats (entity_key BLOB, feature_name TEXT, value BLOB, value_text TEXT, "
        "vector_value BLOB, event_ts timestamp, created_ts timestamp, PRIMARY KEY(entity_key, feature_name))"
    )
    conn.execute("CREATE INDEX IF NOT EXISTS stats_ek ON stats (entity_key)")
    sql = (
        "INSERT INTO stats (entity_key, feature_name, value, value_text, event_ts, created_ts) "
        "VALUES (?, ?, ?, ?, ?, NULL) ON CONFLICT(entity_key, feature_name) DO UPDATE SET "
        "value = excluded.value, value_text = excluded.value_text, event_ts = excluded.event_ts"
    )
    prefix = struct.pack("<III", 1, 2, len("restaurant_id")) + b"restaurant_id" + struct.pack("<II", 4, 8)
    stamps = (latest["event_timestamp"].astype("int64") // 10**9).to_numpy()
    with conn:
        for lo in range(0, len(latest), batch):
            part = latest.iloc[lo : lo + batch]
            keys = [prefix + struct.pack("<q", e) for e in part["restaurant_id"].tolist()]
            columns = {f: part[f].tolist() for f in FEATURES}
            ts = stamps[lo : lo + batch].tolist()
            conn.executemany(sql, (
                (key, f, struct.pack("<d", columns[f][i]), str(columns[f][i]), ts[i])
                for i, key in enumerate(keys) for f in FEATURES
            ))
    conn.close()


def write_sqlite_wide(latest, db_path: Path, batch: int) -> None:
    """One row per entity, one column per feature."""
    import sqlite3

    conn = sqlite3.connect(db_path)
    columns = ", ".join(f"{f} REAL" for f in FEATURES)
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS restaurant_stats "
        f"(restaurant_id INTEGER PRIMARY KEY, {columns}, event_ts INTEGER)"
    )
    sql = f"INSERT OR REPLACE INTO restaurant_stats VALUES ({', '.join('?' * (len(FEATURES) + 2))})"
    stamps = latest["event_timestamp"].astype("int64").to_numpy()
    with conn:
        for lo in range(0, len(latest), batch):
            part = latest.iloc[lo : lo + batch]
            values = [part["restaurant_id"].tolist(), *(part[f].tolist() for f in FEATURES)]
            conn.executemany(sql, zip(*values, stamps[lo : lo + batch].tolist()))
    conn.close()


def redis_client(redis_url: str):
    """A client for Feast's ``host:port,db=N`` connection string."""
    import redis

    host_port, _, options = redis_url.partition(",")
    host, _, port = host_port.partition(":")
    db = int(dict(o.split("=") for o in options.split(",") if o).get("db", 0))
    return redis.Redis(host=host, port=int(port or 6379), db=db)


def write_redis(latest, client, batch: int) -> None:
    """One hash per entity, one field per feature plus the timestamp."""
    stamps = latest["event_timestamp"].astype("int64").to_numpy()
    for lo in range(0, len(latest), batch):
        part = latest.iloc[lo : lo + batch]
        with client.pipeline(transaction=False) as pipe:
            columns = [part[f].tolist() for f in FEATURES]
            for i, entity in enumerate(part["restaurant_id"].tolist()):
                mapping = {f: columns[j][i] for j, f in enumerate(FEATURES)}
                mapping["_ts"] = int(stamps[lo + i])
                pipe.hset(f"raw:restaurant_stats:{entity}", mapping=mapping)
            pipe.execute()


def child(args) -> None:
    import pandas  # noqa: F401  (import costs stay out of the measurements)
    import pyarrow.dataset  # noqa: F401

    from airloop.settings import get_settings

    settings = get_settings()
    stats_dir, batch = settings.offline_dir / "restaurant_stats", args.write_batch_size
    if args.path in ("feast", "feast-stock"):
        out = run_feast(args.days, batch, stock=args.path == "feast-stock")
    elif args.store == "sqlite":
        write = write_sqlite_wide if args.path == "raw-wide" else write_sqlite_feast_layout
        out = run_raw(stats_dir, lambda latest: write(latest, settings.home / "raw.db", batch))
    else:
        client = redis_client(args.redis)
        out = run_raw(stats_dir, lambda latest: write_redis(latest, client, batch))
    print(json.dumps(out))


def flush_redis(redis_url: str) -> None:
    redis_client(redis_url).flushdb()


def measure(home: Path, store: str, path: str, days: int, args) -> dict:
    env = {**os.environ, "AIRLOOP_HOME": str(home), "PYTHONWARNINGS": "ignore"}
    env.pop("AIRLOOP_FEAST_REDIS", None)
    if store == "redis":
        env["AIRLOOP_FEAST_REDIS"] = args.redis
        flush_redis(args.redis)
    shutil.rmtree(home / "feast", ignore_errors=True)  # a fresh registry and online store
    (home / "raw.db").unlink(missing_ok=True)
    cmd = [sys.executable, __file__, "--child", "--store", store, "--path", path, "--days", str(days),
           "--write-batch-size", str(args.write_batch_size), "--redis", args.redis]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO_ROOT)
    if done.returncode:
        raise RuntimeError(f"{store}/{path} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entities", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=3, help="days each entity repeats on (repeated case)")
    parser.add_argument("--cases", default="unique,repeated")
    parser.add_argument("--stores", default="sqlite,redis")
    parser.add_argument("--write-batch-size", type=int, default=10_000)
    parser.add_argument("--redis", default="127.0.0.1:6379,db=14")
    parser.add_argument("--stock", action="store_true", help="also time FeatureStore.materialize")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return 0

    print(f"entities={args.entities:,} write_batch_size={args.write_batch_size:,} repeated_days={args.days}")
    print(f"{'case':9} {'store':6} {'path':11} {'rows':>10} {'chunks':>6} {'wall s':>8} {'rows/s':>9} "
          f"{'peak RSS +MiB':>13} {'vs raw':>9} {'vs wide':>10}")
    with tempfile.TemporaryDirectory(prefix="airloop-bench-") as tmp:
        for case in args.cases.split(","):
            days = 1 if case == "unique" else args.days
            home = Path(tmp) / case
            write_stats(home / "offline" / "restaurant_stats", args.entities, days)
            for store in args.stores.split(","):
                paths = ["raw", "feast"] + (["raw-wide"] if store == "sqlite" else []) + (["feast-stock"] if args.stock else [])
                results = {path: measure(home, store, path, days, args) for path in paths}
                for path, r in results.items():
                    growth = (r["peak"] - r["rss_before"]) / 2**20
                    ratio = r["seconds"] / results["raw"]["seconds"]
                    wide = r["seconds"] / results["raw-wide"]["seconds"] if "raw-wide" in results else None
                    print(
                        f"{case:9} {store:6} {path:11} {r['rows']:>10,} {r['chunks']:>6} {r['seconds']:>8.1f} "
                        f"{r['rows'] / r['seconds']:>9,.0f} {growth:>13,.0f} {ratio:>9.2f} "
                        f"{'' if wide is None else f'{wide:.2f}':>10}",
                        flush=True,
                    )
    if "redis" in args.stores:
        flush_redis(args.redis)
    return 0



# --- for the report (bench.__main__) ----------------------------------------------------------------


def run(quick: bool = False, entities: list[int] | None = None, stores: list[str] | None = None,
        redis: str = "127.0.0.1:6379,db=14", write_batch_size: int = 10_000):
    """Airloop's materialize against Feast's own and raw writes, unique entities, at each size."""
    import argparse as _argparse

    from bench.results import BenchResult, Row

    entities = entities or ([20_000] if quick else [20_000, 100_000])  # quick: one size (a Feast import per case)
    stores = stores or (["sqlite"] if quick else ["sqlite", "redis"])
    args = _argparse.Namespace(write_batch_size=write_batch_size, redis=redis)
    out = BenchResult("materialize")
    figures = []
    with tempfile.TemporaryDirectory(prefix="airloop-bench-") as tmp:
        for n in entities:
            home = Path(tmp) / f"unique_{n}"
            write_stats(home / "offline" / "restaurant_stats", n, 1)
            for store in stores:
                for path in ("feast", "feast-stock", "raw"):
                    r = measure(home, store, path, 1, args)
                    figures.append({"entities": n, "store": store, "path": path, "seconds": r["seconds"],
                                    "rows": r["rows"], "growth_mib": (r["peak"] - r["rss_before"]) / 2**20})
    if "redis" in stores:
        flush_redis(redis)
    out.raw = figures
    by = {(f["entities"], f["store"], f["path"]): f for f in figures}
    top = max(entities)
    for store in stores:
        a = by[top, store, "feast"]
        for base, name in (("feast-stock", "Feast's own materialize"), ("raw", "raw writes")):
            b = by[top, store, base]
            target = f"materialize {top:,} entities ({store}): Airloop vs {name}"
            out.rows.append(Row(target, "seconds", round(a["seconds"], 2), round(b["seconds"], 2)))
            out.rows.append(Row(target, "peak growth MiB", round(a["growth_mib"]), round(b["growth_mib"])))
    names = {"feast": "Airloop features.materialize", "feast-stock": "Feast materialize", "raw": "raw writes"}
    out.series["memory_over_rows"] = {
        f"{names[p]} ({s})": [(f["entities"], f["growth_mib"]) for f in figures if f["store"] == s and f["path"] == p]
        for s in stores for p in names
    }
    out.series["memory_label"] = "peak RSS growth (MiB)"
    out.notes.append("each case in a fresh process; peak growth from getrusage's high-water mark over the RSS "
                     "before the call; entities appear once (the unique case)")
    return out


if __name__ == "__main__":
    raise SystemExit(main())
