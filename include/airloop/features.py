"""Feature stage: per-restaurant daily statistics, the Feast store, training sets and serving.

The offline source is parquet under ``settings.offline_dir``: validated orders
(``orders/orders_YYYY-MM-DD.parquet``, written by the ingest stage) and the statistics derived
here (``restaurant_stats/restaurant_stats_YYYY-MM-DD.parquet``). The Feast definitions live in
``feature_repo/``; the store configuration comes from the settings (see :func:`get_store`).

Statistics for day D summarize orders placed in [D, D+1) and are stamped D+1 00:00 UTC, so a
point-in-time join never gives an order statistics that include its own day.

Heavy libraries (feast, pandas, pyarrow) are imported inside the functions: DAG files import
this module at parse time.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airloop.fileio import as_utc, atomic_path
from airloop.settings import Settings, environ, get_settings

if TYPE_CHECKING:
    import pandas as pd
    from feast import FeatureService, FeatureStore
    from feast.repo_contents import RepoContents

    from airloop.spec import ModelSpec

log = logging.getLogger(__name__)

ORDERS_DATASET = "orders"
STATS_DATASET = "restaurant_stats"
STATS_WINDOW_DAYS = 7
DEFAULT_WRITE_BATCH_SIZE = 10_000
DEFAULT_MAX_ROWS_PER_CHUNK = 5_000_000
_STATS_INPUTS_KEY = b"airloop.inputs"
_ROW_ID = "__airloop_row"
_DIGEST_TAG = "airloop.definitions_sha256"
# Request fields that are derived from the order itself rather than sent as columns.
_DERIVED_REQUEST_FIELDS = {"order_hour": lambda orders, ts: orders[ts].dt.hour.astype("int64")}


# --- offline statistics ---------------------------------------------------------------


def orders_dir(settings: Settings) -> Path:
    return settings.offline_dir / ORDERS_DATASET


def restaurant_stats_dir(settings: Settings) -> Path:
    """The FileSource of the ``restaurant_stats`` feature view (a directory of parquet files)."""
    return settings.offline_dir / STATS_DATASET


@dataclass(frozen=True)
class StatsResult:
    written: list[dt.date]
    unchanged: int
    removed: list[dt.date]
    rows: int
    seconds: float


def compute_restaurant_stats(settings: Settings | None = None, *, force: bool = False) -> StatsResult:
    """Derive per-restaurant daily statistics from the orders offline source.

    One file per orders day D with one row per restaurant that had orders in the 7 days
    D-6..D. A day is recomputed only when its window's input files changed (name, size,
    mtime recorded in the output), so a new day costs one day and a late or corrected
    batch recomputes the 7 days that see it. Days missing from the orders source count as
    days without orders; statistics of days whose orders file is gone are removed.
    """
    started = time.perf_counter()
    s = settings or get_settings()
    orders = _dated_files(orders_dir(s), ORDERS_DATASET)
    out_dir = restaurant_stats_dir(s)
    out_dir.mkdir(parents=True, exist_ok=True)

    removed = []
    for day, path in _dated_files(out_dir, STATS_DATASET).items():
        if day not in orders:
            path.unlink()
            removed.append(day)

    daily: dict[dt.date, Any] = {}  # per-restaurant sums of one orders day, read once per call
    written, unchanged, rows = [], 0, 0
    for day in sorted(orders):
        window = [day - dt.timedelta(days=i) for i in range(STATS_WINDOW_DAYS)]
        inputs = {d: orders[d] for d in window if d in orders}
        fingerprint = _fingerprint(inputs.values())
        target = out_dir / f"{STATS_DATASET}_{day:%Y-%m-%d}.parquet"
        if not force and _stored_fingerprint(target) == fingerprint:
            unchanged += 1
            continue
        for d, path in inputs.items():
            if d not in daily:
                daily[d] = _daily_sums(path, d)
        stats = _window_stats(day, {d: daily[d] for d in inputs})
        _write_parquet(stats, target, {_STATS_INPUTS_KEY: fingerprint.encode()})
        written.append(day)
        rows += len(stats)
    return StatsResult(written, unchanged, removed, rows, time.perf_counter() - started)


def _dated_files(directory: Path, dataset: str) -> dict[dt.date, Path]:
    files = {}
    for path in sorted(directory.glob(f"{dataset}_*.parquet")):
        try:
            files[dt.date.fromisoformat(path.stem.removeprefix(f"{dataset}_"))] = path
        except ValueError:
            log.warning("ignoring %s: not named %s_YYYY-MM-DD.parquet", path, dataset)
    return files


def _fingerprint(paths) -> str:
    return json.dumps(sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in paths))


def _stored_fingerprint(path: Path) -> str | None:
    import pyarrow.parquet as pq

    if not path.exists():
        return None
    metadata = pq.read_schema(path).metadata or {}
    value = metadata.get(_STATS_INPUTS_KEY)
    return value.decode() if value else None


def _daily_sums(path: Path, day: dt.date) -> "pd.DataFrame":
    import pandas as pd

    columns = ["restaurant_id", "event_timestamp", "prep_minutes", "was_late", "distance_km", "items"]
    orders = pd.read_parquet(path, columns=columns)
    start = pd.Timestamp(day, tz="UTC")
    ts = pd.to_datetime(orders["event_timestamp"], utc=True)
    outside = ~ts.between(start, start + pd.Timedelta(days=1), inclusive="left")
    if outside.any():
        # Stamping this day's statistics at its end would leak these rows into earlier orders.
        raise ValueError(f"{path}: {int(outside.sum())} orders are not placed on {day}")
    return orders.groupby("restaurant_id").agg(
        orders=("restaurant_id", "size"),
        prep_sum=("prep_minutes", "sum"),
        prep_count=("prep_minutes", "count"),
        late_sum=("was_late", "sum"),
        distance_sum=("distance_km", "sum"),
        items_sum=("items", "sum"),
    )


def _window_stats(day: dt.date, daily: dict[dt.date, "pd.DataFrame"]) -> "pd.DataFrame":
    import pandas as pd

    week = pd.concat(daily.values()).groupby(level=0).sum()
    today = daily.get(day)
    orders_1d = today["orders"] if today is not None else pd.Series(dtype="int64")
    # prep_minutes is optional: average over the orders that report it.
    prep_count = week["prep_count"].where(week["prep_count"] > 0)
    return pd.DataFrame(
        {
            "restaurant_id": week.index.astype("int64"),
            "event_timestamp": pd.Timestamp(day + dt.timedelta(days=1), tz="UTC"),
            "orders_1d": orders_1d.reindex(week.index, fill_value=0).astype("int64").to_numpy(),
            "orders_7d": week["orders"].astype("int64").to_numpy(),
            "avg_prep_minutes_7d": (week["prep_sum"] / prep_count).astype("float64").to_numpy(),
            "late_rate_7d": (week["late_sum"] / week["orders"]).astype("float64").to_numpy(),
            "avg_distance_km_7d": (week["distance_sum"] / week["orders"]).astype("float64").to_numpy(),
            "avg_items_7d": (week["items_sum"] / week["orders"]).astype("float64").to_numpy(),
        }
    )


def _write_parquet(frame: "pd.DataFrame", path: Path, metadata: dict[bytes, bytes]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
    with atomic_path(path) as tmp:  # Feast never sees half a file
        pq.write_table(table, tmp)


# --- the store --------------------------------------------------------------------------


def repo_config(settings: Settings | None = None, *, write_batch_size: int | None = None):
    """The Feast ``RepoConfig`` for these settings.

    ``feature_store.yaml`` supplies the project and materialization options (and stays valid
    for the ``feast`` CLI on the embedded default); the registry and online store come from
    the settings: a SQL registry when ``feast_registry`` is a ``postgresql`` URL, else a file;
    Redis when ``feast_redis_url`` is set, else SQLite at ``feast_online_store``.
    """
    import yaml
    from feast.repo_config import RepoConfig

    s = settings or get_settings()
    raw = yaml.safe_load((s.feature_repo / "feature_store.yaml").read_text())

    if s.feast_registry.startswith("postgresql"):
        registry = {
            "registry_type": "sql",
            # Feast uses psycopg 3; name the driver so it does not rewrite the URL with a warning.
            "path": s.feast_registry.replace("postgresql://", "postgresql+psycopg://", 1),
            "sqlalchemy_config_kwargs": {"echo": False, "pool_pre_ping": True},
        }
    else:
        registry = {"registry_type": "file", "path": s.feast_registry}
    registry["cache_ttl_seconds"] = raw.get("registry", {}).get("cache_ttl_seconds", 60)

    # Feast's own stores, plus a bulk write that materialize() uses (see airloop.feast_online).
    if s.feast_redis_url:
        online = {
            "type": "airloop.feast_online.BulkRedisOnlineStore",
            "connection_string": _redis_connection_string(s.feast_redis_url),
        }
    else:
        online = {"type": "airloop.feast_online.BulkSqliteOnlineStore", "path": s.feast_online_store}

    materialization = dict(raw.get("materialization") or {})
    if write_batch_size is not None:
        materialization["online_write_batch_size"] = write_batch_size
    config = {
        **raw,
        "registry": registry,
        "online_store": online,
        "offline_store": {"type": "file"},
        "materialization": materialization,
    }
    return RepoConfig(repo_path=s.feature_repo, **config)


def _redis_connection_string(url: str) -> str:
    """Accept Feast's ``host:port,db=N`` form or a ``redis://[:password@]host:port/N`` URL."""
    if not url.startswith(("redis://", "rediss://")):
        return url
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    options = [f"{parts.hostname}:{parts.port or 6379}"]
    if parts.path.strip("/"):
        options.append(f"db={parts.path.strip('/')}")
    if parts.password:
        options.append(f"password={parts.password}")
    if parts.scheme == "rediss":
        options.append("ssl=true")
    return ",".join(options)


def get_store(settings: Settings | None = None, *, write_batch_size: int | None = None) -> "FeatureStore":
    from feast import FeatureStore

    s = settings or get_settings()
    config = repo_config(s, write_batch_size=write_batch_size)
    for path in (config.registry.path, getattr(config.online_store, "path", None)):
        if path and "://" not in path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    return FeatureStore(repo_path=str(s.feature_repo), config=config)


def load_definitions(settings: Settings | None = None, *, project: str | None = None) -> "RepoContents":
    """Import the feature repo's modules afresh and collect its objects, as ``feast apply`` does.

    The modules read the settings at import time (the FileSource path), so modules cached
    by an earlier call are dropped first and again afterwards. Not thread-safe: the working
    directory and environment change while the modules import.
    """
    from feast import Project
    from feast.repo_operations import parse_repo

    s = settings or get_settings()
    repo_dir = s.feature_repo
    _forget_modules_under(repo_dir)
    saved_path, saved_bytecode = list(sys.path), sys.dont_write_bytecode
    sys.path.insert(0, str(repo_dir))
    sys.dont_write_bytecode = True  # no __pycache__ in the feature repo
    try:
        # The modules call get_settings(): let them see these settings. parse_repo names
        # modules by their path relative to the working directory.
        with environ(s.as_env()), contextlib.chdir(repo_dir):
            contents = parse_repo(repo_dir)
    finally:
        sys.path[:] = saved_path
        sys.dont_write_bytecode = saved_bytecode
        _forget_modules_under(repo_dir)
    if not contents.projects:
        contents.projects.append(Project(name=project or repo_config(s).project))
    return contents


def _forget_modules_under(directory: Path) -> None:
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if path and Path(path).resolve().is_relative_to(directory):
            del sys.modules[name]


def apply(settings: Settings | None = None) -> bool:
    """Apply the feature repo to the registry and online store if its definitions changed.

    The digest of the applied definitions is kept as a tag of the Feast project in the
    registry itself, so the answer is right for a shared SQL registry and a fresh registry
    gets applied. (Feast's own plan diff is no use here: it reports every materialized
    feature view as changed.) Returns whether anything was applied.
    """
    from feast.repo_operations import apply_total_with_repo_instance

    s = settings or get_settings()
    store = get_store(s)
    contents = load_definitions(s, project=store.project)
    digest = definitions_digest(contents)
    if _applied_digest(store) == digest:
        log.info("feature definitions unchanged (%s): nothing to apply", digest[:12])
        return False
    project = contents.projects[0]
    project.tags = {**project.tags, _DIGEST_TAG: digest}
    apply_total_with_repo_instance(
        store, store.project, store.registry, contents, skip_source_validation=False
    )
    log.info("applied feature definitions %s", digest[:12])
    return True


def definitions_digest(contents: "RepoContents") -> str:
    """SHA-256 of the Feast objects' specs, without timestamps and pickled function bytes."""
    import hashlib

    objects = [
        obj
        for kind, objs in contents._asdict().items()
        if kind != "projects"
        for obj in objs
    ]
    specs = sorted(
        (type(obj).__name__, obj.name, _stable_proto(obj.to_proto()).SerializeToString(deterministic=True))
        for obj in objects
    )
    digest = hashlib.sha256()
    for kind, name, spec in specs:
        digest.update(f"{kind}:{name}:{len(spec)}:".encode() + spec)
    return digest.hexdigest()


def _stable_proto(message):
    """Drop what changes on every import: ``meta`` timestamps and dill ``body`` bytes.

    Feast rebuilds functions from their source text (``body_text``), which stays.
    """
    for fd, value in message.ListFields():
        if fd.name == "meta" or (fd.name == "body" and "UserDefinedFunction" in message.DESCRIPTOR.name):
            message.ClearField(fd.name)
        elif fd.message_type is not None:
            if fd.message_type.GetOptions().map_entry:
                items = value.values() if fd.message_type.fields_by_name["value"].message_type else []
            elif fd.is_repeated:
                items = value
            else:
                items = [value]
            for item in items:
                _stable_proto(item)
    return message


def _applied_digest(store: "FeatureStore") -> str | None:
    from feast.errors import FeastObjectNotFoundException

    try:
        return store.registry.get_project(store.project, allow_cache=False).tags.get(_DIGEST_TAG)
    except FeastObjectNotFoundException:
        return None


# --- materialization --------------------------------------------------------------------


@dataclass(frozen=True)
class MaterializedChunk:
    feature_view: str
    start: dt.datetime  # exclusive
    end: dt.datetime  # inclusive
    rows: int | None  # entities written (latest row per entity); None if not countable
    seconds: float


@dataclass(frozen=True)
class MaterializeResult:
    end: dt.datetime
    chunks: list[MaterializedChunk] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rows(self) -> int:
        return sum(c.rows or 0 for c in self.chunks)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


def materialize(
    end: dt.datetime,
    settings: Settings | None = None,
    *,
    start: dt.datetime | None = None,
    chunk: dt.timedelta = dt.timedelta(days=1),
    max_rows_per_chunk: int | None = DEFAULT_MAX_ROWS_PER_CHUNK,
    write_batch_size: int = DEFAULT_WRITE_BATCH_SIZE,
    feature_views: list[str] | None = None,
    store: "FeatureStore | None" = None,
) -> MaterializeResult:
    """Load offline rows stamped up to ``end`` into the online store, chunk by chunk.

    Incremental: each feature view continues after its last materialized end (first run:
    ``end - ttl``); pass ``start`` to redo from there (writes are idempotent).

    Memory stays bounded whatever the backlog: the range is cut on a fixed grid of
    ``chunk``-long intervals, and consecutive intervals are merged while their source rows
    stay within ``max_rows_per_chunk`` (None: never merge). A chunk's source is scanned in
    batches that keep only the latest row per entity, so a chunk holds at most one row per
    entity it touches, and rows are encoded and written ``write_batch_size`` at a time.
    Merging matters for speed: an entity is written once per chunk it appears in. Chunks run
    oldest first so the newest value wins. Progress is recorded per chunk in the registry,
    as Feast records it, so a failed run resumes where it stopped.

    Local parquet sources are written with the online store's bulk write
    (:mod:`airloop.feast_online`, same stored bytes as Feast's write, ~10x faster); other
    sources and stores go through ``FeatureStore.materialize``.
    """
    if chunk <= dt.timedelta(0):
        raise ValueError("chunk must be positive")
    started = time.perf_counter()
    end = as_utc(end)
    if store is None:
        store = get_store(settings, write_batch_size=write_batch_size)
    else:
        store.config.materialization_config.online_write_batch_size = write_batch_size

    chunks: list[MaterializedChunk] = []
    # The provider's instance, so the bulk write shares Feast's connection (no public accessor).
    online_store = store._get_provider().online_store
    views = [fv for fv in store.list_feature_views() if fv.online]
    if feature_views is not None:
        views = [fv for fv in views if fv.name in feature_views]
    tick = dt.timedelta(microseconds=1)
    for fv in views:
        if start is not None:
            lower = as_utc(start) - tick  # an explicit start is inclusive
        elif fv.most_recent_end_time is not None:
            lower = as_utc(fv.most_recent_end_time)
        elif fv.ttl:
            lower = end - fv.ttl
        else:
            raise ValueError(f"{fv.name} has no TTL and was never materialized: pass start")
        dataset = _source_dataset(fv)
        # Local parquet without renamed columns: read here, written by the store's bulk write.
        bulk = (
            dataset is not None and hasattr(online_store, "write_table")
            and not fv.batch_source.field_mapping and not fv.stream_source
        )
        for a, b in _plan_chunks(fv, list(_grid_intervals(lower, end, chunk)), max_rows_per_chunk, dataset):
            chunk_started = time.perf_counter()
            if bulk:
                latest = _latest_rows(fv, dataset, a, b)
                rows = online_store.write_table(store.config, fv, latest, write_batch_size) if latest is not None else 0
                store.registry.apply_materialization(fv, store.project, a + tick, b)
            elif (rows := _count_entities(fv, dataset, a, b)) == 0:
                store.registry.apply_materialization(fv, store.project, a + tick, b)
            else:
                # Feast's bounds are inclusive on both ends: skip the row at `a`, already written.
                with _quiet_dask():
                    store.materialize(a + tick, b, feature_views=[fv.name])
            chunks.append(MaterializedChunk(fv.name, a, b, rows, time.perf_counter() - chunk_started))
            log.info("materialized %s (%s, %s]: %s entities", fv.name, a, b, rows)
    return MaterializeResult(end=end, chunks=chunks, seconds=time.perf_counter() - started)


def stats_stamp(day: dt.date) -> dt.datetime:
    """When the statistics of ``day`` become visible: the end of that day (UTC)."""
    return dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=dt.timezone.utc)


def stats_days(settings: Settings | None = None) -> list[dt.date]:
    """The days that have statistics in the offline source, oldest first."""
    return sorted(_dated_files(restaurant_stats_dir(settings or get_settings()), STATS_DATASET))


def materialize_changed(
    days: "list[dt.date] | list[str]", end: dt.datetime, settings: Settings | None = None, **kwargs
) -> "MaterializeResult | None":
    """Materialize the statistics of (re)computed ``days``: from the earliest one up to ``end``.

    Statistics of past days land after their event time (a day's batch arrives the next
    morning; a corrected batch later still), so materializing only from the last run's end
    would skip them. Starting at the earliest changed day's stamp writes exactly what changed.
    Returns None when no day changed.
    """
    if not days:
        return None
    first = min(d if isinstance(d, dt.date) else dt.date.fromisoformat(d) for d in days)
    return materialize(end, settings, start=stats_stamp(first), **kwargs)


@contextlib.contextmanager
def _quiet_dask():
    # Feast's file offline store sorts with dask, whose shuffle emits pandas FutureWarnings
    # about dask's own internals on every read.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"dask\.")
        yield


def _grid_intervals(lower: dt.datetime, upper: dt.datetime, step: dt.timedelta):
    """(a, b] intervals covering (lower, upper], cut on multiples of ``step`` since the epoch."""
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    # The first cut after the first included instant (lower itself is excluded).
    cut = epoch + ((lower + dt.timedelta(microseconds=1) - epoch) // step + 1) * step
    while lower < upper:
        b = min(cut, upper)
        yield lower, b
        lower, cut = b, cut + step


def _plan_chunks(fv, intervals: list, max_rows: int | None, dataset) -> list:
    """Merge consecutive (a, b] intervals while their source rows fit in ``max_rows``."""
    counts = _rows_per_interval(fv, intervals, dataset) if max_rows is not None else None
    if counts is None:
        return intervals
    merged, merged_rows = [], 0
    for (a, b), rows in zip(intervals, counts):
        if merged and merged_rows + rows <= max_rows:
            merged[-1] = (merged[-1][0], b)
            merged_rows += rows
        else:
            merged.append((a, b))
            merged_rows = rows
    return merged


def _source_dataset(fv):
    """The parquet dataset of a local FileSource (None if the source is not one)."""
    import pyarrow.dataset as ds
    from feast import FileSource

    source = fv.batch_source
    if not isinstance(source, FileSource) or "://" in source.path:
        return None
    path = Path(source.path)
    files = sorted(path.glob("*.parquet")) if path.is_dir() else [p for p in [path] if p.exists()]
    return ds.dataset([str(f) for f in files], format="parquet")


def _between(fv, lower: dt.datetime, upper: dt.datetime):
    """Arrow filter for source rows stamped in (lower, upper]."""
    import pyarrow as pa
    import pyarrow.compute as pc

    ts, unit = pc.field(fv.batch_source.timestamp_field), pa.timestamp("us", tz="UTC")
    return (ts > pa.scalar(lower, unit)) & (ts <= pa.scalar(upper, unit))


def _rows_per_interval(fv, intervals: list, dataset) -> list[int] | None:
    """Source rows in each of the contiguous (a, b] intervals, scanned in bounded batches."""
    import numpy as np
    import pyarrow as pa

    if dataset is None:
        return None
    counts = np.zeros(len(intervals), dtype="int64")
    if not dataset.files or not intervals:
        return counts.tolist()
    ends = np.array([b.replace(tzinfo=None) for _, b in intervals], dtype="datetime64[us]")
    ts = fv.batch_source.timestamp_field
    for batch in dataset.to_batches(columns=[ts], filter=_between(fv, intervals[0][0], intervals[-1][1])):
        stamps = batch.column(0).cast(pa.timestamp("us", tz="UTC"), safe=False).to_numpy()
        counts += np.bincount(np.searchsorted(ends, stamps, side="left"), minlength=len(ends))
    return counts.tolist()


def _latest_rows(fv, dataset, lower: dt.datetime, upper: dt.datetime, merge_rows: int = 1_000_000):
    """The newest source row of each entity stamped in (lower, upper], as an arrow table.

    What Feast's ``pull_latest_from_table_or_query`` returns for the same bounds: rows are
    ordered by event time, then created time, and each entity keeps its last one. The source
    ``dataset`` is scanned in batches folded into the running result about every
    ``merge_rows`` rows, so memory follows the number of entities, not the number of source
    rows. None when the scan yields no batch.
    """
    if not dataset.files:
        return None
    source = fv.batch_source
    keys = [c.name for c in fv.entity_columns]
    order = [source.timestamp_field] + ([source.created_timestamp_column] if source.created_timestamp_column else [])
    columns = list(dict.fromkeys([*keys, *(f.name for f in fv.features), *order]))
    latest, pending, pending_rows = None, [], 0
    for batch in dataset.to_batches(columns=columns, filter=_between(fv, lower, upper)):
        pending.append(batch)
        pending_rows += batch.num_rows
        if pending_rows >= merge_rows:
            latest, pending, pending_rows = _keep_last(latest, pending, keys, order), [], 0
    return _keep_last(latest, pending, keys, order) if pending else latest


def _keep_last(latest, batches: list, keys: list[str], order: list[str]):
    """Fold ``batches`` into ``latest``: each entity's row with the greatest ``order`` values."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    pending = pa.Table.from_batches(batches)
    # No copy: only the winning rows are copied, by take().
    rows = pa.concat_tables([latest, pending]) if latest is not None else pending
    if rows.num_rows == 0:
        return rows
    order_by = pc.sort_indices(rows, sort_keys=[(k, "ascending") for k in [*keys, *order]])
    last = np.zeros(rows.num_rows, dtype=bool)
    last[-1] = True
    for key in keys:
        values = rows.column(key).take(order_by).to_numpy()
        last[:-1] |= values[1:] != values[:-1]
    return rows.take(order_by.filter(pa.array(last)))


def _count_entities(fv, dataset, lower: dt.datetime, upper: dt.datetime) -> int | None:
    """Distinct entities with a source row in (lower, upper] (None if not countable)."""
    if dataset is None:
        return None
    if not dataset.files:
        return 0
    rows = dataset.to_table(columns=[c.name for c in fv.entity_columns], filter=_between(fv, lower, upper))
    return rows.group_by(rows.column_names).aggregate([]).num_rows


# --- training and serving ---------------------------------------------------------------


def feature_names(
    spec: "ModelSpec", *, store: "FeatureStore | None" = None, settings: Settings | None = None
) -> list[str]:
    """The model's feature names in the service's order: use it to build model inputs."""
    store = store or get_store(settings)
    return _feature_names(feature_service(spec, store))


def feature_service(spec: "ModelSpec", store: "FeatureStore") -> "FeatureService":
    """The spec's FeatureService as the registry holds it now.

    Feast rebuilds the object from the registry's protobuf on every call (~0.4 ms), so a
    server should hold it and re-read it now and then rather than once per request.
    """
    return store.get_feature_service(spec.features.service, allow_cache=True)


def _feature_names(service: "FeatureService") -> list[str]:
    return [f.name for projection in service.feature_view_projections for f in projection.features]


def entity_df_from_orders(spec: "ModelSpec", orders: "pd.DataFrame") -> "pd.DataFrame":
    """Entity rows for :func:`build_training_set` from order rows: key, time, request fields, label."""
    import pandas as pd

    ts = spec.dataset.timestamp
    frame = pd.DataFrame({spec.entity.join_key: orders[spec.entity.join_key].to_numpy()}, index=orders.index)
    frame["event_timestamp"] = pd.to_datetime(orders[ts], utc=True)
    for name in spec.features.request:
        derive = _DERIVED_REQUEST_FIELDS.get(name)
        frame[name] = derive(orders, ts) if name not in orders and derive else orders[name]
    frame[spec.target] = orders[spec.target]
    return frame.reset_index(drop=True)


def build_training_set(
    spec: "ModelSpec",
    entity_df: "pd.DataFrame",
    *,
    store: "FeatureStore | None" = None,
    settings: Settings | None = None,
) -> "pd.DataFrame":
    """Point-in-time correct features for each entity row, through the model's FeatureService.

    ``entity_df`` needs the join key, ``event_timestamp``, the spec's request fields and
    (for training) the label; rows must be unique on (join key, event_timestamp). A feature
    value is joined only if stamped at or before the row's time and within the view's TTL.
    Returns one row per input row, in input order: the input columns, then the service's
    features (null where no value qualifies).

    Feast 0.67's file offline store drops rows whose entity has values but none in the
    window, and fails on rows whose entity has no value at all. Those rows are therefore
    kept out of the Feast query and get null stored features, and the service's on-demand
    features are computed for them with the same registered transformations.
    """
    import pandas as pd

    key = spec.entity.join_key
    required = [key, "event_timestamp", *spec.features.request]
    missing = [c for c in required if c not in entity_df.columns]
    if missing:
        raise ValueError(f"entity_df is missing columns: {', '.join(missing)}")
    frame = entity_df.reset_index(drop=True).copy()
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
    if frame.duplicated([key, "event_timestamp"]).any():
        # The file offline store would silently merge such rows (feast-dev/feast#6787).
        raise ValueError(f"entity_df rows must be unique on ({key}, event_timestamp)")
    frame[_ROW_ID] = range(len(frame))

    store = store or get_store(settings)
    service = store.get_feature_service(spec.features.service)
    on_demand = {v.name: v for v in store.list_on_demand_feature_views()}
    matched = pd.Series(True, index=frame.index)
    for projection in service.feature_view_projections:
        if projection.name not in on_demand:
            matched &= _has_value_in_window(store.get_feature_view(projection.name), frame)

    parts = []
    if matched.any():
        with _quiet_dask():
            parts.append(store.get_historical_features(entity_df=frame[matched], features=service).to_df())
    if not matched.all():
        parts.append(_without_stored_values(frame[~matched], service, on_demand))
    joined = pd.concat(parts, ignore_index=True).sort_values(_ROW_ID)
    columns = [c for c in entity_df.columns if c != _ROW_ID] + _feature_names(service)
    return joined[columns].reset_index(drop=True)


def _has_value_in_window(view, frame: "pd.DataFrame") -> "pd.Series":
    """Whether each entity row has a row of ``view`` stamped in [time - ttl, time]."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    dataset = _source_dataset(view)
    if dataset is None:  # not a local parquet source: leave the rows to Feast
        return pd.Series(True, index=frame.index)
    if not dataset.files:
        return pd.Series(False, index=frame.index)
    keys = [c.name for c in view.entity_columns]
    ts = view.batch_source.timestamp_field
    unit = pa.timestamp("us", tz="UTC")
    window = pc.field(ts) <= pa.scalar(frame["event_timestamp"].max().to_pydatetime(), unit)
    if view.ttl:
        lowest = frame["event_timestamp"].min() - view.ttl
        window &= pc.field(ts) >= pa.scalar(lowest.to_pydatetime(), unit)
    stamped = dataset.to_table(columns=[*keys, ts], filter=window).to_pandas()
    stamped = stamped.rename(columns={ts: "__stamped"}).astype({"__stamped": "datetime64[ns, UTC]"})
    rows = frame[[*keys, "event_timestamp", _ROW_ID]].sort_values("event_timestamp")
    found = pd.merge_asof(
        rows,
        stamped.sort_values("__stamped"),
        left_on="event_timestamp",
        right_on="__stamped",
        by=keys,
        tolerance=view.ttl or None,
    )
    return frame[_ROW_ID].isin(found.loc[found["__stamped"].notna(), _ROW_ID])


def _without_stored_values(
    frame: "pd.DataFrame", service: "FeatureService", on_demand: dict
) -> "pd.DataFrame":
    """Null stored features plus the service's on-demand features computed on them."""
    import pyarrow as pa
    from feast.types import from_feast_to_pyarrow_type

    table = pa.Table.from_pandas(frame, preserve_index=False)
    projections = service.feature_view_projections
    for projection in (p for p in projections if p.name not in on_demand):
        for f in projection.features:
            table = table.append_column(f.name, pa.nulls(len(table), from_feast_to_pyarrow_type(f.dtype)))
    for projection in (p for p in projections if p.name in on_demand):
        derived = on_demand[projection.name].transform_arrow(table, full_feature_names=False)
        for f in projection.features:
            # All-null results come back untyped: give them the declared type.
            table = table.append_column(f.name, derived[f.name].cast(from_feast_to_pyarrow_type(f.dtype)))
    return table.to_pandas()


def get_online_features(
    spec: "ModelSpec",
    rows: list[dict],
    *,
    store: "FeatureStore | None" = None,
    settings: Settings | None = None,
    service: "FeatureService | None" = None,
) -> list[dict]:
    """Serving features for each request row (join key plus request fields), in row order.

    Each result maps feature name to value, in the service's feature order; an unknown
    entity gets ``None`` for its stored and derived features. When serving, pass a
    long-lived ``store`` (building one loads the registry) and ``service`` (see
    :func:`feature_service`).
    """
    store = store or get_store(settings)
    service = service or feature_service(spec, store)
    keys = [spec.entity.join_key, *spec.features.request]
    entity_rows = [{k: row[k] for k in keys} for row in rows]
    values = store.get_online_features(features=service, entity_rows=entity_rows).to_dict()
    # to_dict() does not keep the service's feature order: rebuild each row by name.
    names = _feature_names(service)
    return [{name: values[name][i] for name in names} for i in range(len(rows))]
