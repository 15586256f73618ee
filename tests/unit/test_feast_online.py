"""The bulk online write stores exactly what Feast's own materialization stores, much faster."""

from __future__ import annotations

import datetime as dt
import math
import sqlite3

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from airloop import features
from airloop.daily_windows import Derived, end_of_day
from airloop.settings import Settings, ensure_dirs, environ, get_settings

UTC = dt.timezone.utc
DAY0 = dt.date(2025, 3, 1)
DAYS = 4


def feast_bytes(values: list, value_type) -> list[bytes]:
    from feast.type_map import python_values_to_proto_values

    return [p.SerializeToString() for p in python_values_to_proto_values(values, value_type)]


@pytest.mark.parametrize(
    ("values", "arrow_type", "value_type"),
    [
        ([0.0, -0.0, 1.5, -2.25, 1e308, 5e-324, math.inf, -math.inf], pa.float64(), "DOUBLE"),
        ([0.0, 1.5, -3.25, 3.4e38], pa.float32(), "FLOAT"),
        ([0, 1, -1, 127, 128, 2**40, -(2**63), 2**63 - 1], pa.int64(), "INT64"),
        ([0, -5, 2**31 - 1], pa.int32(), "INT32"),
        ([True, False, True], pa.bool_(), "BOOL"),
        (["", "a", "kitchen ü", "a"], pa.string(), "STRING"),
    ],
)
def test_values_are_encoded_as_feast_encodes_them(values, arrow_type, value_type):
    from feast.value_type import ValueType

    from airloop.feast_online import encode_values, value_texts

    vt = ValueType[value_type]
    column = pa.array(values, arrow_type)
    assert encode_values(column, vt) == feast_bytes(column.to_pylist(), vt)
    with_nulls = pa.array([None, *values, None], arrow_type)
    encoded = encode_values(with_nulls, vt)
    assert encoded[0] == encoded[-1] == b"" and encoded[1:-1] == feast_bytes(column.to_pylist(), vt)
    texts = value_texts(with_nulls, vt)
    assert texts[0] is None and texts[1:-1] == [v if vt == ValueType.STRING else str(v) for v in column.to_pylist()]


def test_nan_is_stored_as_feast_stores_a_missing_value():
    from feast.value_type import ValueType

    from airloop.feast_online import encode_values, value_texts

    column = pa.array(np.array([1.0, np.nan, 2.0]))
    assert encode_values(column, ValueType.DOUBLE)[1] == b""
    assert value_texts(column, ValueType.DOUBLE)[1] is None


def test_entity_keys_and_timestamps_are_encoded_as_feast_encodes_them():
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value
    from feast.value_type import ValueType
    from google.protobuf.timestamp_pb2 import Timestamp

    from airloop.feast_online import encode_entity_keys, epoch_seconds, timestamp_protos

    ids = [1, 0, -7, 255, 256, 2**62, -(2**63)]
    got = encode_entity_keys({"restaurant_id": pa.array(ids)}, {"restaurant_id": ValueType.INT64}, 3)
    expected = [
        serialize_entity_key(EntityKey(join_keys=["restaurant_id"], entity_values=[Value(int64_val=i)]), 3) for i in ids
    ]
    assert got == expected
    # Two join keys (one a string) take Feast's own path.
    two = encode_entity_keys(
        {"b": pa.array(["x", "y"]), "a": pa.array([1, 2])}, {"b": ValueType.STRING, "a": ValueType.INT64}, 3
    )
    assert two[1] == serialize_entity_key(
        EntityKey(join_keys=["b", "a"], entity_values=[Value(string_val="y"), Value(int64_val=2)]), 3
    )

    stamps = [dt.datetime(2025, 3, 2, tzinfo=UTC), dt.datetime(2025, 3, 2, 10, 30, 15, 123456, tzinfo=UTC)]
    column = pa.array(stamps, pa.timestamp("us", tz="UTC"))
    assert epoch_seconds(column) == [int(s.timestamp()) for s in stamps]
    for got_ts, stamp in zip(timestamp_protos(column), stamps):
        ts = Timestamp()
        ts.FromDatetime(stamp)
        assert got_ts == ts.SerializeToString()


# --- whole materializations: bulk vs Feast's own -------------------------------------------------


def make_settings(home, **env: str) -> Settings:
    with environ({"AIRLOOP_HOME": str(home), **env}):
        return ensure_dirs(get_settings())


def write_history(settings: Settings, seed: int = 3) -> None:
    """Statistics for DAYS days: entities repeat across days, some appear once, some values NaN."""
    rng = np.random.default_rng(seed)
    out = (settings.offline_dir / "restaurant_stats")
    out.mkdir(parents=True, exist_ok=True)
    for i in range(DAYS):
        day = DAY0 + dt.timedelta(days=i)
        ids = np.concatenate([np.arange(1, 301), np.arange(1000 + 50 * i, 1050 + 50 * i)])
        n = len(ids)
        prep = rng.uniform(5, 30, n)
        prep[rng.random(n) < 0.1] = np.nan
        pd.DataFrame(
            {
                "restaurant_id": ids.astype("int64"),
                "event_timestamp": pd.Timestamp(day + dt.timedelta(days=1), tz="UTC"),
                "orders_1d": rng.integers(0, 50, n),
                "orders_7d": rng.integers(0, 300, n),
                "avg_prep_minutes_7d": prep,
                "late_rate_7d": rng.uniform(0, 1, n),
                "avg_distance_km_7d": rng.uniform(1, 8, n),
                "avg_items_7d": rng.uniform(1, 5, n),
            }
        ).to_parquet(out / f"restaurant_stats_{day:%Y-%m-%d}.parquet", index=False)


def end_of_history() -> dt.datetime:
    return dt.datetime.combine(DAY0 + dt.timedelta(days=DAYS), dt.time(), tzinfo=UTC)


def materialize_with_feast(settings: Settings) -> None:
    """Feast's own path: FeatureStore.materialize, one interval, Feast's conversion and writes."""
    store = features.get_store(settings)
    start = dt.datetime.combine(DAY0, dt.time(), tzinfo=UTC)
    # The demo's view only: the registry holds other models' views, without data here.
    store.materialize(start, end_of_history(), feature_views=["restaurant_stats"])


def sqlite_rows(settings: Settings) -> list[tuple]:
    with sqlite3.connect(settings.feast_online_store) as conn:
        return conn.execute(
            "SELECT entity_key, feature_name, value, value_text, event_ts, created_ts "
            "FROM airloop_restaurant_stats ORDER BY entity_key, feature_name"
        ).fetchall()


def test_bulk_write_stores_what_feast_stores_on_sqlite(tmp_path):
    bulk, feast = make_settings(tmp_path / "bulk"), make_settings(tmp_path / "feast")
    for s in (bulk, feast):
        write_history(s)
        features.apply(s)
    result = features.materialize(end_of_history(), bulk)
    materialize_with_feast(feast)

    rows = sqlite_rows(bulk)
    assert result.rows == 300 + 50 * DAYS  # each entity's latest row, written once per chunk
    assert len(rows) == 6 * len({r[0] for r in rows}) and rows == sqlite_rows(feast)
    assert any(r[2] == b"" and r[3] is None for r in rows)  # NaN stored as Feast stores it


@pytest.fixture
def redis_client(redis_db):
    import redis

    return redis.Redis(host="127.0.0.1", port=6379, db=redis_db)


def redis_snapshot(client) -> dict:
    return {key: client.hgetall(key) for key in client.scan_iter(count=1000)}


@pytest.mark.services
def test_bulk_write_stores_what_feast_stores_on_redis(tmp_path, redis_db, redis_client, pg_database, demo_spec):
    def settings(name: str) -> Settings:
        return make_settings(
            tmp_path / name, AIRLOOP_FEAST_REDIS=f"127.0.0.1:6379,db={redis_db}", AIRLOOP_FEAST_REGISTRY=pg_database
        )

    feast, bulk = settings("feast"), settings("bulk")
    write_history(feast)
    features.apply(feast)
    materialize_with_feast(feast)
    stored_by_feast = redis_snapshot(redis_client)
    assert len(stored_by_feast) == 300 + 50 * DAYS

    redis_client.flushdb()
    write_history(bulk)
    assert features.apply(bulk) is True  # the same registry, now with bulk's offline source
    result = features.materialize(end_of_history(), bulk, start=dt.datetime.combine(DAY0, dt.time(), tzinfo=UTC))
    assert result.rows == 300 + 50 * DAYS and redis_snapshot(redis_client) == stored_by_feast

    # A corrected batch keeps its event time: Feast's Redis write would skip it as not newer;
    # the bulk write stores it, and reads through Feast see the correction.
    last = DAY0 + dt.timedelta(days=DAYS - 1)
    path = (bulk.offline_dir / "restaurant_stats") / f"restaurant_stats_{last:%Y-%m-%d}.parquet"
    corrected = pd.read_parquet(path).assign(orders_7d=lambda f: f["orders_7d"] + 1000)
    corrected.to_parquet(path, index=False)
    features.refresh_online(demo_spec, Derived(changed_since=end_of_day(last)), end_of_history(), bulk)
    served = features.get_online_features(
        demo_spec, [{"restaurant_id": 1, "distance_km": 2.0, "items": 2, "order_hour": 12}], settings=bulk
    )
    assert served[0]["orders_7d"] == int(corrected.loc[corrected["restaurant_id"] == 1, "orders_7d"].iloc[0])


def test_a_feast_encoding_change_is_caught_not_written(monkeypatch):
    """If a Feast upgrade changed how values serialize, the write stops with a clear error."""
    from feast.value_type import ValueType

    from airloop import feast_online

    monkeypatch.setitem(feast_online.FIXED_WIDTH, ValueType.DOUBLE, (0x31, "<f8"))  # a wrong tag
    with pytest.raises(feast_online.EncodingMismatch, match="DOUBLE"):
        feast_online.encode_values(pa.array([1.5]), ValueType.DOUBLE)


def test_latest_rows_folds_batches_into_one_row_per_entity(tmp_path):
    """The scan keeps each entity's newest row however often it folds (what Feast pulls)."""
    settings = make_settings(tmp_path / "airloop")
    write_history(settings)
    features.apply(settings)
    view = features.get_store(settings).get_feature_view("restaurant_stats")
    dataset = features.source_dataset(view)
    lower = dt.datetime.combine(DAY0, dt.time(), tzinfo=UTC)  # exclusive: the first day's stamp is later
    upper = end_of_history() - dt.timedelta(days=1)  # inclusive: leaves out the last day
    frames = [pd.read_parquet(p) for p in sorted((settings.offline_dir / "restaurant_stats").glob("*.parquet"))]
    source = pd.concat(frames)
    stamps = source["event_timestamp"]
    expected = (
        source[(stamps > pd.Timestamp(lower)) & (stamps <= pd.Timestamp(upper))]
        .sort_values("event_timestamp")
        .drop_duplicates("restaurant_id", keep="last")
        .sort_values("restaurant_id")
        .reset_index(drop=True)
    )
    for merge_rows in (1, 97, 10**9):
        got = features.latest_rows(view, dataset, lower, upper, merge_rows=merge_rows).to_pandas()
        got = got.sort_values("restaurant_id").reset_index(drop=True)
        pd.testing.assert_frame_equal(got[expected.columns], expected, check_dtype=False)
