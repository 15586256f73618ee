"""Feast's SQLite and Redis online stores with a bulk write for materialization.

Feast's own materialization turns every value into a ``ValueProto`` object in Python and, on
SQLite, runs one statement per value: for 100k entities x 6 features that is ~95% of its
~15 s. These subclasses add :meth:`write_table`, which encodes whole arrow columns at once
and writes the same keys, bytes and rows as Feast's ``online_write_batch`` would (checked
against Feast's own encoders at run time and in the tests), so reads, schema management and
teardown stay Feast's. :func:`airloop.features.materialize` uses it; everything else that
writes (``store.materialize``, pushes) still goes through Feast's path.

One difference, on purpose: Feast's Redis write skips a row whose timestamp is not newer
than the stored one, so a corrected batch (same event time, new values) never reaches
Redis. ``write_table`` always writes; materialization orders the writes instead (oldest
interval first, every later interval rewritten), so the newest value is the one left.

Select them with ``online_store.type`` = ``airloop.feast_online.BulkSqliteOnlineStore`` or
``airloop.feast_online.BulkRedisOnlineStore`` (:func:`airloop.features.repo_config` does).
This module imports Feast at import time: only Feast loads it, when a store is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import _mmh3
from feast.infra.online_stores.redis import (
    RedisOnlineStore,
    RedisOnlineStoreConfig,
    _versioned_fv_name,
)
from feast.infra.online_stores.sqlite import (
    SqliteOnlineStore,
    SqliteOnlineStoreConfig,
    _quote_id,
    _table_id,
)
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.type_map import python_values_to_proto_values
from feast.value_type import ValueType
from google.protobuf.timestamp_pb2 import Timestamp

if TYPE_CHECKING:
    from feast import FeatureView
    from feast.repo_config import RepoConfig

# ValueProto fields written as fixed-width records: (wire tag byte, little-endian dtype). Public so
# a test can plant a wrong tag and see the check against Feast's own encoding stop the write.
FIXED_WIDTH = {ValueType.DOUBLE: (0x29, "<f8"), ValueType.FLOAT: (0x35, "<f4")}
# Types whose SQLite ``value_text`` Feast fills with str(value) (see extract_text_and_num).
_TEXT_TYPES = {ValueType.INT32, ValueType.INT64, ValueType.DOUBLE, ValueType.FLOAT, ValueType.BOOL}


class EncodingMismatch(RuntimeError):
    """The bulk encoder disagrees with Feast's own encoding (a Feast upgrade changed it)."""


# --- encoding -----------------------------------------------------------------------------------


def encode_values(column: pa.Array | pa.ChunkedArray, value_type: ValueType) -> list[bytes]:
    """Serialized ``ValueProto`` bytes of each value, ``b""`` for nulls (Feast's empty Value)."""
    column = _combined(column)
    n = len(column)
    if value_type in FIXED_WIDTH:
        tag, dtype = FIXED_WIDTH[value_type]
        values = column.fill_null(0).to_numpy(zero_copy_only=False).astype(dtype, copy=False)
        records = np.empty(n, dtype=[("tag", "u1"), ("value", dtype)])
        records["tag"], records["value"] = tag, values
        width, buffer = records.dtype.itemsize, records.tobytes()
        out = [buffer[i : i + width] for i in range(0, n * width, width)]
        # Feast writes NaN as an empty Value too.
        missing = column.is_null(nan_is_null=True)
    else:
        # Few distinct values (counts, flags, categories): let Feast encode each one once.
        encoded = column.dictionary_encode()
        dictionary = encoded.dictionary.to_pylist()
        serialized = [p.SerializeToString() for p in python_values_to_proto_values(dictionary, value_type)]
        indices = encoded.indices.fill_null(0).to_numpy(zero_copy_only=False)
        out = [serialized[i] for i in indices.tolist()] if dictionary else [b""] * n
        missing = column.is_null()
    if pc.any(missing).as_py():
        for i in np.flatnonzero(missing.to_numpy(zero_copy_only=False)).tolist():
            out[i] = b""
    _check_values(column, value_type, out)
    return out


def value_texts(column: pa.Array | pa.ChunkedArray, value_type: ValueType) -> list[str | None]:
    """The SQLite store's ``value_text`` column: str(value) for numbers and bools, else None."""
    column = _combined(column)
    if value_type == ValueType.STRING:
        return column.to_pylist()
    if value_type not in _TEXT_TYPES:
        return [None] * len(column)
    missing = column.is_null(nan_is_null=True).to_numpy(zero_copy_only=False)
    return [None if m else str(v) for v, m in zip(column.to_pylist(), missing.tolist())]


def encode_entity_keys(keys: dict[str, pa.Array], types: dict[str, ValueType], version: int) -> list[bytes]:
    """Feast's serialized entity key of each row (``serialize_entity_key``)."""
    n = len(next(iter(keys.values())))
    if len(keys) == 1 and next(iter(types.values())) == ValueType.INT64:
        (name, column), = keys.items()
        column = _combined(column)
        if column.null_count == 0:
            # The serialization ends with the 8-byte little-endian value: one prefix for all.
            prefix = serialize_entity_key(_entity_key({name: 0}, types), version)[:-8]
            buffer = column.to_numpy(zero_copy_only=False).astype("<i8", copy=False).tobytes()
            out = [prefix + buffer[i : i + 8] for i in range(0, 8 * n, 8)]
            _check_keys(keys, types, version, out)
            return out
    rows = zip(*(_combined(c).to_pylist() for c in keys.values()))
    return [serialize_entity_key(_entity_key(dict(zip(keys, row)), types), version) for row in rows]


def epoch_seconds(column: pa.Array | pa.ChunkedArray) -> list[int | None]:
    """Whole seconds since the epoch, as Feast's SQLite store writes ``event_ts``."""
    micros = _combined(column).cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
    return pc.divide(micros, 1_000_000).to_pylist()  # integer division truncates, like int()


def timestamp_protos(column: pa.Array | pa.ChunkedArray) -> list[bytes]:
    """Serialized ``google.protobuf.Timestamp`` of each value (Feast's Redis ``_ts`` field)."""
    micros = _combined(column).cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
    encoded = micros.dictionary_encode()
    serialized = []
    for value in encoded.dictionary.to_pylist():
        seconds, rest = divmod(value, 1_000_000)
        serialized.append(Timestamp(seconds=seconds, nanos=rest * 1000).SerializeToString())
    return [serialized[i] for i in encoded.indices.to_numpy(zero_copy_only=False).tolist()]


def _combined(column):
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def _entity_key(values: dict, types: dict[str, ValueType]) -> EntityKeyProto:
    protos = [python_values_to_proto_values([v], types[k])[0] for k, v in values.items()]
    return EntityKeyProto(join_keys=list(values), entity_values=protos)


def _check_values(column: pa.Array, value_type: ValueType, out: list[bytes]) -> None:
    """Compare the first non-null value with Feast's own encoding."""
    valid = column.is_valid().to_numpy(zero_copy_only=False)
    first = int(np.argmax(valid)) if valid.any() else None
    if first is None:
        return
    value = column[first].as_py()
    if value_type in FIXED_WIDTH and value != value:  # NaN: written as an empty Value
        return
    expected = python_values_to_proto_values([value], value_type)[0].SerializeToString()
    if out[first] != expected:
        raise EncodingMismatch(f"value {value!r} ({value_type.name}): {out[first]!r} != Feast's {expected!r}")


def _check_keys(keys: dict[str, pa.Array], types: dict[str, ValueType], version: int, out: list[bytes]) -> None:
    for i in {0, len(out) - 1}:
        expected = serialize_entity_key(_entity_key({k: _combined(c)[i].as_py() for k, c in keys.items()}, types), version)
        if out[i] != expected:
            raise EncodingMismatch(f"entity key row {i}: {out[i]!r} != Feast's {expected!r}")


class EncodedBatch:
    """One arrow batch of a feature view, encoded as Feast's online stores store it."""

    def __init__(self, config: "RepoConfig", view: "FeatureView", batch: pa.RecordBatch | pa.Table):
        source = view.batch_source
        join_keys = {c.name: c.dtype.to_value_type() for c in view.entity_columns}
        self.rows = batch.num_rows
        self.features = [(f.name, f.dtype.to_value_type()) for f in view.features]
        self.keys = encode_entity_keys(
            {k: batch.column(k) for k in join_keys}, join_keys, config.entity_key_serialization_version
        )
        self.values = {name: encode_values(batch.column(name), vt) for name, vt in self.features}
        self.timestamps = batch.column(source.timestamp_field)
        created = source.created_timestamp_column
        self.created = batch.column(created) if created else None


# --- the stores -------------------------------------------------------------------------------


class BulkSqliteOnlineStoreConfig(SqliteOnlineStoreConfig):
    """Feast's SQLite online store settings, naming :class:`BulkSqliteOnlineStore` as the store type."""

    type: Literal["airloop.feast_online.BulkSqliteOnlineStore"] = "airloop.feast_online.BulkSqliteOnlineStore"


class BulkSqliteOnlineStore(SqliteOnlineStore):
    """Feast's SQLite online store plus :meth:`write_table` (one ``executemany`` per batch)."""

    def write_table(
        self, config: "RepoConfig", table: "FeatureView", rows: pa.Table, batch_size: int = 10_000
    ) -> int:
        """Upsert ``rows`` (latest row per entity) into the view's table, ``batch_size`` at a time.

        Rows go in the byte order of their serialized entity keys, so the table's two key
        indexes grow at their ends instead of at random pages: half the time of entity order.
        """
        online = config.online_store
        if online.vector_enabled or getattr(online, "enable_openai_compatible_store", False):
            raise NotImplementedError("bulk writes do not fill vector or value_num columns")
        if rows.num_rows == 0:
            return 0
        rows = rows.take(pa.array(_key_byte_order(table, rows, config.entity_key_serialization_version)))
        name = _quote_id(_table_id(config.project, table, config.registry.enable_online_feature_view_versioning))
        sql = (
            f"INSERT INTO {name} (entity_key, feature_name, value, value_text, event_ts, created_ts) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(entity_key, feature_name) DO UPDATE SET "
            "value = excluded.value, value_text = excluded.value_text, "
            "event_ts = excluded.event_ts, created_ts = excluded.created_ts;"
        )
        conn = self._get_conn(config)
        for batch in rows.to_batches(max_chunksize=batch_size):
            encoded = EncodedBatch(config, table, batch)
            event_ts = epoch_seconds(encoded.timestamps)
            created_ts = epoch_seconds(encoded.created) if encoded.created is not None else [None] * encoded.rows
            texts = {f: value_texts(batch.column(f), vt) for f, vt in encoded.features}
            features = [f for f, _ in encoded.features]
            values = (
                (key, f, encoded.values[f][i], texts[f][i], event_ts[i], created_ts[i])
                for i, key in enumerate(encoded.keys)
                for f in features
            )
            with conn:
                conn.executemany(sql, values)
        return rows.num_rows


def _key_byte_order(table: "FeatureView", rows: pa.Table, version: int) -> np.ndarray:
    """Row order that sorts the rows' serialized entity keys bytewise."""
    join_keys = {c.name: c.dtype.to_value_type() for c in table.entity_columns}
    if len(join_keys) == 1 and next(iter(join_keys.values())) == ValueType.INT64:
        column = rows.column(next(iter(join_keys)))
        if column.null_count == 0:
            # One shared prefix, then the value's 8 little-endian bytes: comparing those bytes
            # in order compares the byte-swapped value as an unsigned integer.
            values = column.to_numpy().astype("<i8")
            return np.argsort(values.byteswap().view("<u8"), kind="stable")
    keys = encode_entity_keys({k: rows.column(k) for k in join_keys}, join_keys, version)
    return np.array(sorted(range(len(keys)), key=keys.__getitem__))


class BulkRedisOnlineStoreConfig(RedisOnlineStoreConfig):
    """Feast's Redis online store settings, naming :class:`BulkRedisOnlineStore` as the store type."""

    type: Literal["airloop.feast_online.BulkRedisOnlineStore"] = "airloop.feast_online.BulkRedisOnlineStore"


class BulkRedisOnlineStore(RedisOnlineStore):
    """Feast's Redis online store plus :meth:`write_table` (one pipeline per batch)."""

    def write_table(
        self, config: "RepoConfig", table: "FeatureView", rows: pa.Table, batch_size: int = 10_000
    ) -> int:
        """HSET each entity's values and ``_ts`` field as Feast lays them out, a pipeline per batch."""
        online = config.online_store
        view = _versioned_fv_name(table, config)
        ts_field = f"_ts:{view}"
        project = config.project.encode("utf-8")
        client = self._get_client(online)
        field_names = {f.name: _mmh3(f"{view}:{f.name}") for f in table.features}
        for batch in rows.to_batches(max_chunksize=batch_size):
            encoded = EncodedBatch(config, table, batch)
            fields = [(field_names[name], encoded.values[name]) for name, _ in encoded.features]
            stamps = timestamp_protos(encoded.timestamps)
            with client.pipeline(transaction=False) as pipe:
                for i, key in enumerate(encoded.keys):
                    mapping = {ts_field: stamps[i]}
                    for field, values in fields:
                        mapping[field] = values[i]
                    pipe.hset(key + project, mapping=mapping)
                    if online.key_ttl_seconds:
                        pipe.expire(name=key + project, time=online.key_ttl_seconds)
                pipe.execute()
        return rows.num_rows
