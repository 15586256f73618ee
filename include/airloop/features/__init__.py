"""Feature stage: each model's feature job, the Feast store, training sets and serving.

A model's features belong to the model (see its spec's ``features:``): its Feast declarations
live in its own directory (``features.definitions``); its declared windowed statistics
(``features.aggregations``) and its own job, if any (``features.transform``), write its views'
sources from its validated dataset under ``settings.offline_dir``. This package runs those,
applies every model's declarations to the one Feast registry, keeps the online store fresh and
builds point-in-time training sets and serving rows through each model's FeatureService. It
names no dataset, entity, column or feature of any model.

The store configuration comes from the settings (see :func:`get_store`). Heavy libraries
(feast, pandas, pyarrow) are imported inside the functions: DAG files import this package at
parse time.

Its rooms: :mod:`.jobs` (the model's feature jobs), :mod:`.aggregations` (declared windowed
statistics per key on :mod:`airloop.daily_windows`), :mod:`.store` (configuration, declarations,
apply), :mod:`.materialize` (the online store's loading), :mod:`.training` (training sets)
and :mod:`.online` (the FeatureService and online lookups).
"""

from airloop.daily_windows import Derived
from airloop.features.aggregations import aggregate
from airloop.features.jobs import derive, load_transform
from airloop.features.materialize import (
    DEFAULT_MAX_ROWS_PER_CHUNK,
    DEFAULT_WRITE_BATCH_SIZE,
    MaterializedChunk,
    MaterializeResult,
    latest_rows,
    materialize,
    refresh_online,
    source_dataset,
    stored_views,
)
from airloop.features.online import feature_names, feature_service, get_online_features
from airloop.features.store import (
    apply,
    definitions_digest,
    get_store,
    load_definitions,
    registry_writes,
    repo_config,
)
from airloop.features.training import build_training_set, entity_df_from_events

__all__ = [
    "DEFAULT_MAX_ROWS_PER_CHUNK",
    "DEFAULT_WRITE_BATCH_SIZE",
    "Derived",
    "MaterializeResult",
    "MaterializedChunk",
    "aggregate",
    "apply",
    "build_training_set",
    "definitions_digest",
    "derive",
    "entity_df_from_events",
    "feature_names",
    "feature_service",
    "get_online_features",
    "get_store",
    "latest_rows",
    "load_definitions",
    "load_transform",
    "materialize",
    "refresh_online",
    "registry_writes",
    "repo_config",
    "source_dataset",
    "stored_views",
]
