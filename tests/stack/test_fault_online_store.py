"""Fault: the online store (Redis, as in production) stops in the middle of a materialization.

A private redis-server (no persistence, like a cache restarted empty) backs the late_delivery
model's online store. It is stopped once the first entities are in, while the refresh still has
most of them to write. The user must see an error that names the online store, nothing may
record the data as materialized, and once the same Redis is back, running the same step again
must leave every entity's values right.
"""

from __future__ import annotations

import datetime as dt
import threading
import time

import pandas as pd
import pytest

from airloop import features
from airloop.daily_windows import Derived
from airloop.errors import OnlineStoreError
from airloop.settings import Settings, ensure_dirs, environ, get_settings
from airloop.testing import RedisServer
from bench.bench_materialize import DAY0, FEATURES
from bench.bench_materialize import write_stats as write_bench_stats

pytestmark = pytest.mark.slow

UTC = dt.timezone.utc
ENTITIES = 20_000
DAYS = 2


@pytest.fixture
def redis_server(tmp_path):
    with RedisServer(tmp_path / "redis") as server:
        yield server


def write_stats(settings: Settings) -> pd.DataFrame:
    """DAYS days of statistics for every restaurant (the benchmark's); returns the newest row of each."""
    out = settings.offline_dir / "restaurant_stats"
    write_bench_stats(out, ENTITIES, DAYS)
    return pd.read_parquet(sorted(out.glob("*.parquet"))[-1]).set_index("restaurant_id")


def watermark(settings: Settings):
    return features.get_store(settings).get_feature_view("restaurant_stats").most_recent_end_time


def test_redis_stopped_during_materialize_fails_records_nothing_and_a_rerun_restores_every_entity(
    tmp_path, redis_server, demo_spec
):
    import redis

    with environ({"AIRLOOP_HOME": str(tmp_path / "airloop"), "AIRLOOP_FEAST_REDIS": redis_server.connection_string}):
        settings = ensure_dirs(get_settings())
    assert features.get_store(settings).config.online_store.type == "airloop.feast_online.BulkRedisOnlineStore"
    expected = write_stats(settings)
    end = dt.datetime.combine(DAY0 + dt.timedelta(days=DAYS), dt.time(), tzinfo=UTC)
    assert features.apply(settings) is True
    changed = Derived(changed_since=dt.datetime.combine(DAY0, dt.time(), tzinfo=UTC))
    assert watermark(settings) is None

    # The features DAG's step, with small write batches: 20 pipelines to write.
    outcome: dict = {}

    def refresh() -> None:
        try:
            outcome["result"] = features.refresh_online(demo_spec, changed, end, settings, write_batch_size=1000)
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            outcome["error"] = exc

    worker = threading.Thread(target=refresh, daemon=True)
    started = time.monotonic()
    worker.start()
    client = redis_server.client(retry=None)
    while (keys_before_stop := client.dbsize()) == 0:
        assert worker.is_alive(), f"the refresh ended before writing anything: {outcome}"
        time.sleep(0.002)
    redis_server.stop()
    worker.join(120)
    assert not worker.is_alive()
    assert 0 < keys_before_stop < ENTITIES  # stopped mid-run, not before or after

    # What the user sees: an error naming the online store, its address and the view, caused by
    # the Redis client's connection error; no result, so the DAG task fails (no features_fresh).
    error = outcome.get("error")
    assert isinstance(error, OnlineStoreError), outcome
    message = str(error)
    assert f"online store (Redis at {redis_server.connection_string})" in message
    assert "restaurant_stats" in message and "not recorded as materialized" in message
    assert isinstance(error.__cause__, redis.exceptions.ConnectionError)
    # What is kept: nothing records the view as materialized.
    assert watermark(settings) is None
    stopped_after = time.monotonic() - started

    # The same instance back (empty: no persistence); the same step again.
    redis_server.start()
    assert client.dbsize() == 0
    result = features.refresh_online(demo_spec, changed, end, settings, write_batch_size=1000)
    assert result.rows == ENTITIES and client.dbsize() == ENTITIES
    assert watermark(settings) == end

    # Every entity reads back its newest values through Feast's online read.
    store = features.get_store(settings)
    served = store.get_online_features(
        features=[f"restaurant_stats:{name}" for name in FEATURES],
        entity_rows=[{"restaurant_id": i} for i in expected.index.tolist()],
    ).to_df().set_index("restaurant_id")
    pd.testing.assert_frame_equal(served[list(FEATURES)], expected[list(FEATURES)], check_dtype=False)
    # And a model's request through its FeatureService sees them too.
    request = {"restaurant_id": int(expected.index[-1]), "distance_km": 2.0, "items": 2, "order_hour": 12}
    (one,) = features.get_online_features(demo_spec, [request], store=store)
    assert [one[name] for name in FEATURES] == pytest.approx(expected.loc[request["restaurant_id"], list(FEATURES)].tolist())
    print(f"stopped with {keys_before_stop} of {ENTITIES} entities written; failed {stopped_after:.1f} s after start")
