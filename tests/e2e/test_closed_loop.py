"""The closed loop end to end with a real Airflow scheduler: ``make demo``'s job, as a test.

Airflow's components (api-server, scheduler, dag-processor, triggerer, LocalExecutor on SQLite)
and the Bento server run as processes; the demo drives them over REST. Clean traffic is checked
and triggers nothing; drift (data and concept) is injected -> detected in two consecutive
windows -> training triggered with the reason and the report id -> a new version registered,
better on the fresh holdout, promoted -> packaged -> the running service answers with it.
"""

from __future__ import annotations

import os

import pytest

# As tests/e2e/conftest.py runs it.
CLEAN_DAYS, DRIFT_DAYS = 14, 5

# Covers the combined run of both models (tests/e2e/conftest.py) when it is the first to use it.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(3900)]


@pytest.fixture(scope="module")
def loop(both_loops):
    """The demo's defaults for late_delivery: 14 clean days (7 warm-up, 4 training, 3 holdout),
    then 5 drifted days; run beside trip_duration in one Airflow."""
    _, proc, summary = both_loops
    return proc, summary["models"]["late_delivery"]


def test_clean_traffic_triggers_nothing_and_drift_triggers_one_retrain(loop):
    proc, summary = loop
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    checks = summary["steps"]["drift_checks"]
    assert checks[0]["status"] == "ok" and checks[0]["trigger"] is False, checks[0]
    # Hysteresis: the first drifted window is drift but not yet a retrain; the second is.
    assert checks[1]["status"] == "drift" and checks[1]["trigger"] is False, checks[1]
    assert checks[2]["status"] == "drift" and checks[2]["trigger"] is True, checks[2]
    assert checks[2]["reason"] and os.path.exists(checks[2]["html_report"])


def test_the_retrained_model_carries_the_reason_wins_and_is_served(loop):
    _, summary = loop
    steps, facts = summary["steps"], summary["facts"]
    trigger = steps["drift_checks"][2]
    retrain = steps["retrain"]
    assert retrain["promoted"], retrain
    versions = {v["version"]: v for v in facts["model_versions"]}
    assert len(versions) == 2
    new = versions[str(retrain["version"])]
    assert new["trigger_reason"].startswith("drift:")
    assert new["drift_report_id"] == trigger["report_id"]
    assert new["alias"] == "champion" and new["gate"] == "promoted"
    assert new["bento_tag"] and new["bento_tag"] != versions[str(steps["first_champion"]["version"])]["bento_tag"]
    # The running service swapped to it, and the loop's timeline was measured.
    assert str(steps["final_predict"]["model_version"]) == new["version"]
    assert steps["traffic"][0]["model_versions"] == [str(steps["first_champion"]["version"])]
    timing = steps["loop_timing"]
    assert 0 < timing["work_seconds"] <= timing["wall_seconds"]


def test_bad_data_was_stopped_and_everything_else_versioned(loop):
    _, summary = loop
    facts = summary["facts"]
    assert len(facts["quarantined"]) == 1 and facts["quarantined"][0].startswith("orders_")
    assert len(facts["validated_batches"]) == CLEAN_DAYS + DRIFT_DAYS
    assert all(len(b["md5"]) == 32 and b["validation_result_id"] for b in facts["validated_batches"])
    # One features run per ingest run that published (the daily run, then the re-delivery),
    # not one per batch.
    assert summary["steps"]["ingest"]["features_runs"] == 2
