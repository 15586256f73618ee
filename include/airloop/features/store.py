"""The Feast store: its configuration, every model's declarations, and applying them to the registry."""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from airloop.settings import Settings, get_settings

if TYPE_CHECKING:
    from feast import FeatureStore
    from feast.repo_config import RepoConfig
    from feast.repo_contents import RepoContents

    from airloop.spec import ModelSpec

log = logging.getLogger(__name__)

_DIGEST_TAG = "airloop.definitions_sha256"


def repo_config(settings: Settings | None = None, *, write_batch_size: int | None = None) -> "RepoConfig":
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
    """A Feast ``FeatureStore`` on :func:`repo_config` (its local registry and online store directories created)."""
    from feast import FeatureStore

    s = settings or get_settings()
    config = repo_config(s, write_batch_size=write_batch_size)
    for path in (config.registry.path, getattr(config.online_store, "path", None)):
        if path and "://" not in path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    store = FeatureStore(repo_path=str(s.feature_repo), config=config)
    if config.registry.registry_type == "sql":
        _open_sql_registry(store, config.registry.path)
    return store


def _open_sql_registry(store: "FeatureStore", url: str) -> None:
    """Open the store's SQL registry now, one process at a time.

    Feast creates the registry's tables on first use, test-then-create: two processes opening a
    new registry at once (two prediction services, two models' features runs) collide in
    Postgres' catalogue and one fails.
    """
    import sqlalchemy as sa

    from airloop.advisory_lock import advisory_lock

    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with advisory_lock(engine, "airloop.feast.registry.create"):
            store.registry  # noqa: B018 - Feast builds it, and its tables, on first access
    finally:
        engine.dispose()


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
        contents = parse_definitions(spec.definitions_dir)
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


def parse_definitions(directory: Path) -> "RepoContents":
    """The Feast objects declared in one model's definitions directory (its feature repo),
    imported without leaving its modules, ``sys.path`` entry or bytecode behind."""
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


@contextlib.contextmanager
def registry_writes(settings: Settings | None = None) -> Iterator[None]:
    """One writer at a time for a file-based Feast registry.

    Every model applies to and materializes into the same Feast project. A file registry is
    read whole, changed and written back whole (truncated, then written) by each ``apply`` and
    each materialized interval's bookkeeping: two models' features runs at once would lose each
    other's changes or read a half-written registry. A SQL registry has transactions of its
    own, and then nothing is locked. Not reentrant: never nest it.
    """
    from airloop.fileio import exclusive

    s = settings or get_settings()
    if "://" in s.feast_registry:
        yield
        return
    with exclusive(Path(s.feast_registry + ".lock")):
        yield


def apply(settings: Settings | None = None) -> bool:
    """Apply the feature repo to the registry and online store if its definitions changed.

    The digest of the applied definitions is kept as a tag of the Feast project in the
    registry itself, so the answer is right for a shared SQL registry and a fresh registry
    gets applied. (Feast's own plan diff is no use here: it reports every materialized
    feature view as changed.) Returns whether anything was applied.
    """
    from feast.repo_operations import apply_total_with_repo_instance

    s = settings or get_settings()
    with registry_writes(s):
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
