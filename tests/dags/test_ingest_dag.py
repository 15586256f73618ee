"""The ingest DAG run for real (dag.test on a migrated metadata DB)."""

from __future__ import annotations

import datetime as dt

import pytest

from airloop.notifiers import read_alerts
from airloop.spec import example_data
from airloop.testing import run_dag

datagen = example_data("late_delivery")

pytestmark = pytest.mark.slow
DAYS = [dt.date(2026, 10, 1) + dt.timedelta(days=i) for i in range(3)]


def _asset_events(dag_id: str, run_id: str) -> list[dict]:
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(AssetEvent).filter(
            AssetEvent.source_dag_id == dag_id, AssetEvent.source_run_id == run_id
        )
        assert {e.source_task_id for e in rows} <= {"announce_validated"}
        return [dict(e.extra) for e in rows]


def test_ingest_dag_publishes_good_batches_and_alerts_on_bad(settings, demo_spec):
    landing = settings.landing_dir / demo_spec.dataset.name
    datagen.write_batch(landing, DAYS[0])
    datagen.write_batch(landing, DAYS[1], defect="unknown_category")
    datagen.write_batch(landing, DAYS[2])
    dag_id = demo_spec.dag_id("ingest")

    result = run_dag(dag_id)

    assert result.state == "failed"  # a rejected batch fails its task and the run
    mapped = {k: v for k, v in result.tasks.items() if k.startswith("validate_and_publish[")}
    assert sorted(mapped.values()) == ["failed", "success", "success"]
    # The good batches are announced together; a separate task fails the run.
    assert result.tasks["announce_validated"] == "success"
    assert result.tasks["fail_on_rejected_batch"] == "failed"
    events = _asset_events(dag_id, result.run_id)
    assert sorted(e["batch"] for e in events) == ["orders_2026-10-01.csv", "orders_2026-10-03.csv"]
    assert all(len(e["md5"]) == 32 and e["dvc_rev"] and e["validation_result_id"] for e in events)
    alerts = [a for a in read_alerts() if a["run_id"] == result.run_id]
    assert len(alerts) == 1
    assert "zone: expect_column_values_to_be_in_set" in alerts[0]["message"]
    assert (settings.quarantine_dir / "orders" / "orders_2026-10-02.csv").exists()

    # Re-delivered clean and asked for by date through the DAG's Param.
    datagen.write_batch(landing, DAYS[1])
    again = run_dag(dag_id, conf={"batch_date": DAYS[1].isoformat()})
    assert again.state == "success"
    assert again.tasks["fail_on_rejected_batch"] == "skipped"
    assert [e["batch"] for e in _asset_events(dag_id, again.run_id)] == ["orders_2026-10-02.csv"]

    # Nothing pending: the run succeeds, maps over nothing and emits no event.
    idle = run_dag(dag_id)
    assert idle.state == "success"
    assert idle.tasks["announce_validated"] == "skipped"
    assert _asset_events(dag_id, idle.run_id) == []
