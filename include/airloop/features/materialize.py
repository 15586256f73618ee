"""Materialization: loading offline rows into the online store in bounded chunks."""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airloop.daily_windows import Derived
from airloop.errors import OnlineStoreError
from airloop.features.online import feature_service
from airloop.features.store import get_store, registry_writes
from airloop.fileio import as_utc
from airloop.settings import Settings, get_settings

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.dataset as ds
    from feast import FeatureStore, FeatureView

    from airloop.spec import ModelSpec

log = logging.getLogger(__name__)

DEFAULT_WRITE_BATCH_SIZE = 10_000
DEFAULT_MAX_ROWS_PER_CHUNK = 5_000_000


@dataclass(frozen=True)
class MaterializedChunk:
    """One feature view's time chunk (start, end] written to the online store."""

    feature_view: str
    start: dt.datetime  # exclusive
    end: dt.datetime  # inclusive
    rows: int | None  # entities written (latest row per entity); None if not countable
    seconds: float


@dataclass(frozen=True)
class MaterializeResult:
    """A materialization up to ``end``: its chunks and the time it took."""

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
    ``end - ttl``, or a view without expiry from its earliest source row); pass ``start`` to
    redo from there (writes are idempotent).

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
        elif (earliest := _earliest_source_row(fv)) is not None:
            lower = earliest - tick  # a table without expiry (a static one): all of it
        elif source_dataset(fv) is not None:
            continue  # a local source without rows yet
        else:
            raise ValueError(f"{fv.name} has no TTL and was never materialized: pass start")
        dataset = source_dataset(fv)
        # Local parquet without renamed columns: read here, written by the store's bulk write.
        bulk = (
            dataset is not None and hasattr(online_store, "write_table")
            and not fv.batch_source.field_mapping and not fv.stream_source
        )
        for a, b in _plan_chunks(fv, list(_grid_intervals(lower, end, chunk)), max_rows_per_chunk, dataset):
            chunk_started = time.perf_counter()
            latest = latest_rows(fv, dataset, a, b) if bulk else None
            rows = None if bulk else _count_entities(fv, dataset, a, b)
            try:
                if bulk:
                    rows = online_store.write_table(store.config, fv, latest, write_batch_size) if latest is not None else 0
                elif rows != 0:
                    # Feast's bounds are inclusive on both ends: skip the row at `a`, already written.
                    store.materialize(a + tick, b, feature_views=[fv.name])
            except _store_errors() as exc:
                # Only what was written before is recorded (per chunk); this chunk and the rest are not.
                raise OnlineStoreError(
                    f"the online store ({_describe(store.config.online_store)}) failed while materializing "
                    f"{fv.name} ({a}, {b}]: {exc}. That chunk and the rest of the run are not recorded as "
                    "materialized: run the step again once the store answers"
                ) from exc
            if bulk or rows == 0:
                store.registry.apply_materialization(fv, store.project, a + tick, b)
            chunks.append(MaterializedChunk(fv.name, a, b, rows, time.perf_counter() - chunk_started))
            log.info("materialized %s (%s, %s]: %s entities", fv.name, a, b, rows)
    return MaterializeResult(end=end, chunks=chunks, seconds=time.perf_counter() - started)


def _store_errors() -> tuple[type[BaseException], ...]:
    """What an online store's client raises when the store fails (not a bug in the caller)."""
    import sqlite3

    errors: list[type[BaseException]] = [OSError, sqlite3.Error]
    try:
        from redis.exceptions import RedisError
    except ImportError:
        pass
    else:
        errors.append(RedisError)
    return tuple(errors)


def _describe(online_config) -> str:
    """The online store's kind and address, without credentials."""
    if connection := getattr(online_config, "connection_string", None):
        return f"Redis at {connection.split(',')[0]}"
    if path := getattr(online_config, "path", None):
        return f"SQLite at {path}"
    return str(getattr(online_config, "type", type(online_config).__name__))


def stored_views(spec: "ModelSpec", store: "FeatureStore") -> list[str]:
    """The names of the model's feature views that the online store holds (not on-demand)."""
    online = {fv.name for fv in store.list_feature_views() if fv.online}
    return [p.name for p in feature_service(spec, store).feature_view_projections if p.name in online]


def refresh_online(
    spec: "ModelSpec",
    derived: Derived,
    end: dt.datetime,
    settings: Settings | None = None,
    *,
    applied: bool = False,
    store: "FeatureStore | None" = None,
    **kwargs: Any,
) -> MaterializeResult | None:
    """Materialize the model's own views after its feature job ran.

    New definitions (``applied``) load each view's whole source; otherwise what changed, from
    ``derived.changed_since`` (rows of past days land after their event time, so continuing
    from the last run's end would skip them). Returns None when there is nothing to load.
    Once loaded, the published tables in ``derived.detail["tables"]`` are recorded as covered.
    Other keyword arguments go to :func:`materialize`.
    """
    from airloop.table_changes import record_refreshed

    s = settings or get_settings()
    with registry_writes(s):  # other models' features runs share the registry
        store = store or get_store(s, write_batch_size=kwargs.get("write_batch_size"))
        views = stored_views(spec, store)
        if not views:
            return None
        if applied:
            # Not local or empty: from the last materialized end, or one TTL back.
            known = [t for name in views if (t := _earliest_source_row(store.get_feature_view(name)))]
            start = min(known) if known else None
        elif derived.changed_since is not None:
            start = derived.changed_since
        else:
            return None
        result = materialize(end, s, start=start, feature_views=views, store=store, **kwargs)
    if "tables" in derived.detail:
        record_refreshed(spec, derived.detail["tables"], s)
    return result


def _earliest_source_row(fv) -> dt.datetime | None:
    """The earliest event time in a local parquet source (None: none, or not local)."""
    import pyarrow.compute as pc

    dataset = source_dataset(fv)
    if dataset is None or not dataset.files:
        return None
    column = dataset.to_table(columns=[fv.batch_source.timestamp_field]).column(0)
    earliest = pc.min(column).as_py()
    return None if earliest is None else as_utc(earliest)


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


def source_dataset(fv: "FeatureView") -> "ds.Dataset | None":
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


def latest_rows(
    fv: "FeatureView", dataset: "ds.Dataset", lower: dt.datetime, upper: dt.datetime, merge_rows: int = 1_000_000
) -> "pa.Table | None":
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
