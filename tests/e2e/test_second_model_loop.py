"""The second example's whole loop under a real Airflow scheduler, from its spec alone.

``trip_duration`` has another shape than the demo model: a regression, two entities, a static
and an hourly reference table landing beside the events, windowed statistics per vehicle and
per zone, and categorical inputs. The same demo driver runs it (``--model trip_duration``):
ingest (with a defective batch) -> features -> train -> gate -> package -> serve -> monitor ->
drift -> retrain -> the new champion served.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

# As tests/e2e/conftest.py runs it.
CLEAN_DAYS, DRIFT_DAYS = 14, 5

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3900)]


@pytest.fixture(scope="module")
def loop(both_loops):
    """trip_duration's loop (500 requests per wave), run beside late_delivery in one Airflow."""
    home, proc, summary = both_loops
    return home, proc, summary["models"]["trip_duration"]


def test_clean_traffic_is_no_drift_and_real_drift_retrains_once(loop):
    _, proc, summary = loop
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    checks = summary["steps"]["drift_checks"]
    # The day's weather and per-entity statistics differ from the training period's spread:
    # the spec's drift policy (exclude, per-column thresholds) keeps that from counting.
    assert checks[0]["status"] == "ok" and checks[0]["trigger"] is False, checks[0]
    assert checks[1]["status"] == "drift" and checks[1]["trigger"] is False, checks[1]
    assert checks[2]["status"] == "drift" and checks[2]["trigger"] is True, checks[2]
    assert checks[2]["quality"]["metric"] == "mae" and checks[2]["quality"]["degraded"]


def test_the_retrained_regression_wins_and_is_served(loop):
    _, _, summary = loop
    steps, facts = summary["steps"], summary["facts"]
    retrain = steps["retrain"]
    assert retrain["promoted"], retrain
    versions = {v["version"]: v for v in facts["model_versions"]}
    assert len(versions) == 2
    new = versions[str(retrain["version"])]
    assert new["trigger_reason"].startswith("drift:") and new["alias"] == "champion"
    assert str(steps["final_predict"]["model_version"]) == new["version"]
    assert isinstance(steps["final_predict"]["prediction"], float) and steps["final_predict"]["prediction"] > 0


def test_reference_tables_were_gated_versioned_and_are_in_the_lineage(loop):
    home, _, summary = loop
    facts = summary["facts"]
    assert facts["quarantined"] and all(name.startswith("trips_") for name in facts["quarantined"])
    assert len(facts["validated_batches"]) == CLEAN_DAYS + DRIFT_DAYS

    from airloop import ingest, registry
    from airloop.settings import environ, get_settings
    from airloop.spec import get_spec

    with environ({"AIRLOOP_HOME": str(home), "MLFLOW_TRACKING_URI": None}):
        settings, spec = get_settings(), get_spec("trip_duration")
        _, weather = ingest.committed_batches(spec.table("zone_weather"), settings)
        _, fleet = ingest.committed_batches(spec.table("vehicles"), settings)
        assert len(weather) == CLEAN_DAYS + DRIFT_DAYS and len(fleet) == 1
        client = registry.client(settings)
        champion = registry.champion_version(spec, settings)
        run_id = client.get_model_version("trip_duration", champion).run_id
        local = client.download_artifacts(run_id, "lineage/batches.json", str(home / "lineage"))
    recorded = {b["dataset"] for b in json.loads(Path(local).read_text())}
    assert recorded == {"trips", "vehicles", "zone_weather"}


def test_only_this_model_ran(loop):
    home, _, summary = loop
    # The Airflow runs both models; the runs this loop drove and waited for are its own.
    runs = {run["dag_id"] for run in summary["dag_runs"]}
    assert runs and all(dag_id.startswith("trip_duration__") for dag_id in runs), runs
    logs = home / "airflow" / "logs"
    ran = {p.name.removeprefix("dag_id=") for p in logs.glob("dag_id=*")}
    assert runs <= ran and all(dag_id.startswith(("trip_duration__", "late_delivery__")) for dag_id in ran), ran
    assert os.path.exists(summary["steps"]["drift_checks"][2]["html_report"])
