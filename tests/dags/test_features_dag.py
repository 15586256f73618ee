"""The features DAG run for real after ingests, as the Asset schedule runs it."""

from __future__ import annotations

import datetime as dt

import pytest

from airloop.spec import example_data
from airloop.testing import run_dag

datagen = example_data("late_delivery")

pytestmark = pytest.mark.slow


def test_late_arriving_days_reach_the_online_store(settings, demo_spec):
    """Each day's batch lands after its event time: every features run must still put the
    newest statistics online, not only those newer than the previous run's wall clock."""
    from airloop import features, ingest

    today = dt.datetime.now(dt.timezone.utc).date()
    days = [today - dt.timedelta(days=4 - i) for i in range(4)]
    landing = settings.landing_dir / demo_spec.dataset.name

    for day in days[:2]:
        ingest.ingest_batch(demo_spec, datagen.write_batch(landing, day, orders_per_day=400))
    first = run_dag(demo_spec.dag_id("features"))
    assert first.ok, first.tasks

    for day in days[2:]:
        ingest.ingest_batch(demo_spec, datagen.write_batch(landing, day, orders_per_day=400))
    second = run_dag(demo_spec.dag_id("features"))
    assert second.ok, second.tasks

    latest = datagen.generate_orders(days[-1], orders_per_day=400)
    restaurant = int(latest["restaurant_id"].value_counts().index[0])
    [row] = features.get_online_features(
        demo_spec, [{"restaurant_id": restaurant, "distance_km": 3.0, "items": 2, "order_hour": 12}]
    )
    expected = int((latest["restaurant_id"] == restaurant).sum())
    assert row["orders_1d"] == expected  # the statistics of the newest day, served online

    idle = run_dag(demo_spec.dag_id("features"))  # nothing changed: nothing to write
    assert idle.ok
