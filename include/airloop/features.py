"""Feature stage: each model's feature job, the Feast store, training sets and serving.

A model's features belong to the model (see its spec's ``features:``): its Feast declarations
live in its own directory (``features.definitions``), and its own job (``features.transform``)
writes its views' sources from its validated dataset under ``settings.offline_dir``. This
module runs those jobs, applies every model's declarations to the one Feast registry, keeps
the online store fresh and builds point-in-time training sets and serving rows through each
model's FeatureService. It names no dataset, entity, column or feature of any model.

The store configuration comes from the settings (see :func:`get_store`). Heavy libraries
(feast, pandas, pyarrow) are imported inside the functions: DAG files import this module at
parse time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from airloop.daily_windows import Derived
from airloop.fileio import as_utc
from airloop.settings import Settings, get_settings

if TYPE_CHECKING:
    import pandas as pd
    from feast import FeatureService, FeatureStore
    from feast.repo_contents import RepoContents

    from airloop.spec import ModelSpec

log = logging.getLogger(__name__)

DEFAULT_WRITE_BATCH_SIZE = 10_000
DEFAULT_MAX_ROWS_PER_CHUNK = 5_000_000
_ROW_ID = "__airloop_row"
_DIGEST_TAG = "airloop.definitions_sha256"


# --- the model's own feature job --------------------------------------------------------


def load_transform(spec: "ModelSpec") -> Callable[..., Derived] | None:
    """The function named by the spec's ``features.transform`` (None if it names none).

    The dotted path is imported with the spec's directory first on ``sys.path``, and must
    resolve to a module under that directory (not an installed module of the same name).
    """
    from airloop.spec import SpecError, import_model_module

    dotted = spec.features.transform
    if dotted is None:
        return None
    module_name, _, function = dotted.rpartition(".")
    try:
        module = import_model_module(spec, module_name)
    except SpecError as exc:
        raise SpecError(f"features.transform {dotted!r}: {exc}") from None
    job = getattr(module, function, None)
    if not callable(job):
        raise SpecError(f"{spec.name}: features.transform {dotted!r}: {module_name} has no function {function!r}")
    return job


def derive(spec: "ModelSpec", settings: Settings | None = None, *, force: bool = False) -> Derived:
    """Run the model's feature job (views without one read the published tables as they are).

    ``changed_since`` covers both what the job rewrote and the published tables (events,
    reference tables) changed since the last online refresh; ``detail["tables"]`` is what
    :func:`refresh_online` records once it has loaded them.
    """
    from airloop.table_changes import changed_tables

    s = settings or get_settings()
    tables = changed_tables(spec, s)
    job = load_transform(spec)
    result = Derived(changed_since=None) if job is None else job(spec, s, force=force)
    if not isinstance(result, Derived):
        raise TypeError(f"{spec.features.transform} returned {type(result).__name__}, not airloop.daily_windows.Derived")
    since = [t for t in (result.changed_since, tables.since) if t is not None]
    detail = {**result.detail, "changed_files": len(tables.files), "tables": tables.snapshot}
    return dataclasses.replace(result, changed_since=min(since) if since else None, detail=detail)


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
        # DuckDB joins point-in-time correctly in bounded memory; Feast's default file store
        # (dask) drops and merges rows and grew to 18 GiB on 10k rows (bench/bench_pit_join.py).
        "offline_store": {"type": "duckdb"},
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


def load_definitions(
    settings: Settings | None = None, *, project: str | None = None, specs: "list[ModelSpec] | None" = None
) -> "RepoContents":
    """Every model's Feast declarations, collected as ``feast apply`` collects a repo.

    Each model's directory (``spec.definitions_dir``) is parsed on its own, its modules
    imported afresh and dropped again (models may reuse module names such as
    ``entities.py``). A relative ``FileSource`` path is a directory under the offline store.
    Two models declaring different objects of one kind under one name is an error; identical
    declarations (a shared entity) are kept once. Not thread-safe: the working directory and
    ``sys.path`` change while the modules import.
    """
    from feast import Project
    from feast.repo_contents import RepoContents

    from airloop.spec import SpecError, load_specs

    s = settings or get_settings()
    specs = load_specs(s.models_dir) if specs is None else specs
    merged: dict[str, dict[str, Any]] = {}
    owners: dict[tuple[str, str], str] = {}
    for spec in specs:
        contents = _parse_definitions(spec.definitions_dir)
        _resolve_file_sources(contents, s.offline_dir)
        for kind, objects in contents._asdict().items():
            if kind == "projects":
                continue
            for obj in objects:
                known = merged.setdefault(kind, {}).get(obj.name)
                if known is not None and _stable_proto(known.to_proto()) != _stable_proto(obj.to_proto()):
                    raise SpecError(
                        f"{kind} {obj.name!r} is declared differently by models "
                        f"{owners[kind, obj.name]!r} and {spec.name!r}: rename one"
                    )
                merged[kind].setdefault(obj.name, obj)
                owners.setdefault((kind, obj.name), spec.name)
    fields = {kind: list(merged.get(kind, {}).values()) for kind in RepoContents._fields if kind != "projects"}
    return RepoContents(projects=[Project(name=project or repo_config(s).project)], **fields)


def _parse_definitions(directory: Path) -> "RepoContents":
    from feast.repo_operations import parse_repo

    directory = directory.resolve()
    _forget_modules_under(directory)
    saved_path, saved_bytecode = list(sys.path), sys.dont_write_bytecode
    sys.path.insert(0, str(directory))
    sys.dont_write_bytecode = True  # no __pycache__ next to the declarations
    try:
        # parse_repo names modules by their path relative to the working directory.
        with contextlib.chdir(directory):
            return parse_repo(directory)
    finally:
        sys.path[:] = saved_path
        sys.dont_write_bytecode = saved_bytecode
        _forget_modules_under(directory)


def _resolve_file_sources(contents: "RepoContents", offline_dir: Path) -> None:
    """Make relative FileSource paths absolute under ``offline_dir`` (URLs stay as they are).

    What Airloop writes there is parquet, so such a source's format is parquet unless it says
    otherwise (the DuckDB offline store needs the format for a directory of files).
    """
    from feast import FileSource
    from feast.data_format import ParquetFormat

    sources = [*contents.data_sources]
    for view in [*contents.feature_views, *contents.stream_feature_views]:
        sources.append(view.batch_source)
    for source in sources:
        if isinstance(source, FileSource) and "://" not in source.path and not Path(source.path).is_absolute():
            source.file_options.uri = str(offline_dir / source.path)
            if source.file_options.file_format is None:
                source.file_options.file_format = ParquetFormat()


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
            if bulk:
                latest = latest_rows(fv, dataset, a, b)
                rows = online_store.write_table(store.config, fv, latest, write_batch_size) if latest is not None else 0
                store.registry.apply_materialization(fv, store.project, a + tick, b)
            elif (rows := _count_entities(fv, dataset, a, b)) == 0:
                store.registry.apply_materialization(fv, store.project, a + tick, b)
            else:
                # Feast's bounds are inclusive on both ends: skip the row at `a`, already written.
                store.materialize(a + tick, b, feature_views=[fv.name])
            chunks.append(MaterializedChunk(fv.name, a, b, rows, time.perf_counter() - chunk_started))
            log.info("materialized %s (%s, %s]: %s entities", fv.name, a, b, rows)
    return MaterializeResult(end=end, chunks=chunks, seconds=time.perf_counter() - started)


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


def source_dataset(fv):
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


def latest_rows(fv, dataset, lower: dt.datetime, upper: dt.datetime, merge_rows: int = 1_000_000):
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



def entity_df_from_events(spec: "ModelSpec", events: "pd.DataFrame") -> "pd.DataFrame":
    """Entity rows for :func:`build_training_set` from dataset rows: keys, time, request fields, label.

    Request fields the spec derives (``features.derived``) are computed from the event row,
    in UTC; the others are the dataset's columns.
    """
    import pandas as pd

    from airloop.spec import TIME_PARTS

    ts = spec.dataset.timestamp
    frame = pd.DataFrame({key: events[key].to_numpy() for key in spec.join_keys}, index=events.index)
    frame[ts] = pd.to_datetime(events[ts], utc=True)
    for name in spec.features.request:
        derived = spec.features.derived.get(name)
        if derived is None:
            frame[name] = events[name]
        else:
            stamps = pd.to_datetime(events[derived.of], utc=True)
            frame[name] = getattr(stamps.dt, TIME_PARTS[derived.part].accessor).astype("int64")
    frame[spec.target] = events[spec.target]
    return frame.reset_index(drop=True)


def build_training_set(
    spec: "ModelSpec",
    entity_df: "pd.DataFrame",
    *,
    store: "FeatureStore | None" = None,
    settings: Settings | None = None,
) -> "pd.DataFrame":
    """Point-in-time correct features for each entity row, through the model's FeatureService.

    ``entity_df`` needs the join keys, the spec's timestamp column, its request fields and
    (for training) the label. A feature value is joined only if stamped at or before the
    row's time and within its view's TTL; each view is matched on its own, so a row missing
    one view's values keeps the others'. Returns one row per input row, in input order (rows
    sharing key and time stay separate rows): the input columns, then the service's features
    (null where no value qualifies).
    """
    import pandas as pd

    ts = spec.dataset.timestamp
    required = [*spec.join_keys, ts, *spec.features.request]
    missing = [c for c in required if c not in entity_df.columns]
    if missing:
        raise ValueError(f"entity_df is missing columns: {', '.join(missing)}")
    frame = entity_df.reset_index(drop=True).copy()
    # DuckDB's store fails on a sub-microsecond time; flooring never lets a later value in.
    frame[ts] = pd.to_datetime(frame[ts], utc=True).dt.floor("us")
    frame[_ROW_ID] = range(len(frame))  # the offline store returns rows in its own order

    store = store or get_store(settings)
    service = store.get_feature_service(spec.features.service)
    joined = store.get_historical_features(entity_df=frame, features=service).to_df()
    if len(joined) != len(frame):
        raise RuntimeError(f"the offline store returned {len(joined)} rows for {len(frame)} entity rows")
    columns = [c for c in entity_df.columns if c != _ROW_ID] + _feature_names(service)
    return joined.sort_values(_ROW_ID)[columns].reset_index(drop=True)


def get_online_features(
    spec: "ModelSpec",
    rows: list[dict],
    *,
    store: "FeatureStore | None" = None,
    settings: Settings | None = None,
    service: "FeatureService | None" = None,
) -> list[dict]:
    """Serving features for each request row (join keys plus request fields), in row order.

    Each result maps feature name to value, in the service's feature order; an unknown
    entity gets ``None`` for its stored and derived features. When serving, pass a
    long-lived ``store`` (building one loads the registry) and ``service`` (see
    :func:`feature_service`).
    """
    store = store or get_store(settings)
    service = service or feature_service(spec, store)
    keys = list(dict.fromkeys([*spec.join_keys, *spec.features.request]))
    entity_rows = [{k: row[k] for k in keys} for row in rows]
    values = store.get_online_features(features=service, entity_rows=entity_rows).to_dict()
    # to_dict() does not keep the service's feature order: rebuild each row by name.
    names = _feature_names(service)
    return [{name: values[name][i] for name in names} for i in range(len(rows))]
