"""Train, register and gate with real MLflow (embedded SQLite, and a server on Postgres)."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
import uuid

import pytest
from airloop import errors, promotion, registry
from airloop.spec import example_data

datagen = example_data("late_delivery")

pytestmark = pytest.mark.slow
# 7 warm-up days (the spec), 6 training days, 3 holdout days.
DAYS = [dt.date(2026, 9, 1) + dt.timedelta(days=i) for i in range(16)]


def _variant(spec, **params):
    return spec.model_copy(update={"estimator": spec.estimator.model_copy(update={"params": params})})


@pytest.fixture(scope="module")
def data_home(tmp_path_factory):
    """A home with 16 ingested days and applied features, shared by the module."""
    home = tmp_path_factory.mktemp("train") / "airloop"
    saved = os.environ.get("AIRLOOP_HOME")
    os.environ["AIRLOOP_HOME"] = str(home)
    from airloop import features, ingest
    from airloop.settings import ensure_dirs
    from airloop.spec import get_spec

    settings = ensure_dirs()
    spec = get_spec("late_delivery")
    for day in DAYS:
        ingest.ingest_batch(spec, datagen.write_batch(settings.landing_dir / "orders", day))
    features.derive(spec, settings)
    features.apply(settings)
    yield home
    if saved is None:
        os.environ.pop("AIRLOOP_HOME", None)
    else:
        os.environ["AIRLOOP_HOME"] = saved


@pytest.fixture
def home(data_home, monkeypatch, tmp_path):
    """The shared data with a fresh, empty MLflow store per test."""
    monkeypatch.setenv("AIRLOOP_HOME", str(data_home))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("AIRLOOP_MLFLOW_ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    return data_home


def test_champion_challenger_rollback_and_reproduce(home, demo_spec):
    from airloop import train

    medium = _variant(demo_spec, max_iter=8, max_depth=1, learning_rate=0.1)
    weak = _variant(demo_spec, max_iter=2, max_depth=1, learning_rate=0.1)

    first = train.train_model(medium, reason="bootstrap")
    decision = promotion.gate_version(demo_spec, first["version"], actor="tester")
    assert decision.promoted and decision.reason.startswith("first model")
    assert registry.champion_version(demo_spec) == first["version"]

    worse = train.train_model(weak, reason="worse on purpose")
    decision = promotion.gate_version(demo_spec, worse["version"], actor="tester")
    assert not decision.promoted
    assert registry.champion_version(demo_spec) == first["version"]
    client = registry.client()
    tags = client.get_model_version(demo_spec.name, worse["version"]).tags
    assert tags["airloop.gate"] == "rejected" and tags["airloop.gate_reason"] == decision.reason
    assert str(client.get_model_version_by_alias(demo_spec.name, "challenger").version) == worse["version"]

    better = train.train_model(demo_spec, reason="drift", drift_report_id="report-123")
    decision = promotion.gate_version(demo_spec, better["version"], actor="tester")
    assert decision.promoted, decision.reason
    assert decision.champion_version == first["version"]
    assert decision.challenger_score >= decision.champion_score + demo_spec.promotion.min_improvement
    assert registry.champion_version(demo_spec) == better["version"]

    # Lineage travels with the version and the run.
    mv = client.get_model_version(demo_spec.name, better["version"])
    run = client.get_run(mv.run_id)
    for key in ("airloop.dvc_md5", "airloop.dvc_rev", "airloop.validation_result_id", "airloop.feature_service"):
        assert mv.tags[key] == run.data.tags[key] != ""
    assert run.data.tags["airloop.trigger_reason"] == "drift"
    assert run.data.tags["airloop.drift_report_id"] == "report-123"
    dataset_inputs = run.inputs.dataset_inputs
    assert dataset_inputs[0].dataset.digest == mv.tags["airloop.dvc_md5"]
    artifacts = {a.path for a in client.list_artifacts(mv.run_id, "plots")}
    assert {"plots/roc_curve.png", "plots/pr_curve.png", "plots/calibration.png", "plots/feature_importance.png"} <= artifacts

    assert promotion.rollback(demo_spec, actor="tester", reason="bad on call") == first["version"]
    assert registry.champion_version(demo_spec) == first["version"]
    actions = [(e["action"], e["version"], e["by"]) for e in registry.history(demo_spec)]
    assert actions == [
        ("promote", first["version"], "tester"),
        ("reject", worse["version"], "tester"),
        ("promote", better["version"], "tester"),
        ("rollback", first["version"], "tester"),
    ]

    reproduced = train.reproduce(demo_spec, better["version"])
    assert reproduced["identical"], reproduced


def test_rollback_with_nothing_before_is_a_clear_error(home, demo_spec):
    from airloop import train

    first = train.train_model(demo_spec)
    promotion.gate_version(demo_spec, first["version"], actor="tester")
    with pytest.raises(errors.PromotionError, match="no previous champion"):
        promotion.rollback(demo_spec)


def test_too_little_data_for_a_holdout_is_a_clear_error(home, demo_spec):
    from airloop import train

    with pytest.raises(ValueError, match="need data after the 7 warm-up day.* and before the holdout cutoff"):
        train.train_model(demo_spec, start=DAYS[-2], end=DAYS[-1])


def test_split_leaves_out_the_warm_up_and_weighs_recent_days_up(demo_spec):
    import pandas as pd
    from airloop import train

    days = pd.date_range("2026-09-01", periods=12, freq="D", tz="UTC")
    frame = pd.DataFrame({"event_timestamp": days.repeat(2), "was_late": [0, 1] * 12})
    fit_on, holdout = train.time_split(frame, "event_timestamp", holdout_days=3, warmup_days=7)
    assert fit_on["event_timestamp"].dt.day.unique().tolist() == [8, 9]
    assert holdout["event_timestamp"].dt.day.unique().tolist() == [10, 11, 12]
    weights = train.recency_weights(demo_spec, fit_on)  # half-life 2 days in the demo spec
    assert weights.tolist() == pytest.approx([0.5 ** 0.5] * 2 + [1.0] * 2)
    flat = demo_spec.model_copy(update={"split": demo_spec.split.model_copy(update={"recency_half_life_days": None})})
    assert train.recency_weights(flat, fit_on) is None


# -- MLflow tracking server on the machine's Postgres --------------------------------------


def _free_port() -> int:
    from airloop.testing import free_port

    return free_port()


def _start_mlflow(db_url: str, artifacts, port: int) -> subprocess.Popen:
    exe = os.path.join(os.path.dirname(sys.executable), "mlflow")
    proc = subprocess.Popen(
        [exe, "server", "--backend-store-uri", db_url, "--artifacts-destination", str(artifacts),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    import requests

    # Generous: the first start migrates a new Postgres database, slow on a busy 2-core machine.
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=1).ok:
                return proc
        except requests.RequestException:
            pass
        if proc.poll() is not None:
            raise RuntimeError("mlflow server exited")
        time.sleep(0.5)
    raise TimeoutError("mlflow server did not start")


@pytest.fixture
def mlflow_server(home, tmp_path, monkeypatch):
    import psycopg

    name = f"airloop_mlflow_{uuid.uuid4().hex[:8]}"
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    port = _free_port()
    db_url = f"postgresql://postgres@127.0.0.1:5432/{name}"
    proc = _start_mlflow(db_url, tmp_path / "artifacts", port)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    # Fail fast when the server is down instead of MLflow's minutes of backoff. A stopped server
    # refuses at once; the timeout only bounds a slow answer of the live one (a busy machine).
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    server = {"proc": proc, "port": port, "db_url": db_url, "artifacts": tmp_path / "artifacts"}
    yield server
    os.killpg(server["proc"].pid, 15)
    server["proc"].wait(30)
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.services
def test_on_an_mlflow_server_and_with_the_server_down(mlflow_server, demo_spec):
    from mlflow.exceptions import MlflowException

    from airloop import train

    first = train.train_model(demo_spec, reason="bootstrap")
    assert promotion.gate_version(demo_spec, first["version"], actor="tester").promoted
    assert registry.champion_version(demo_spec) == first["version"]
    second = train.train_model(demo_spec, reason="challenger")
    holdout = registry.download_frame(second["run_id"], registry.HOLDOUT_ARTIFACT)
    history_before = registry.history(demo_spec)

    os.killpg(mlflow_server["proc"].pid, 15)
    mlflow_server["proc"].wait(30)
    with pytest.raises(MlflowException, match="API request to .* failed"):
        train.train_model(demo_spec, reason="server down")
    # The registry fails in the middle of the gate: its champion read must raise, not read
    # as "no champion" (which would promote the challenger as a first model).
    with pytest.raises(errors.RegistryError, match="cannot read @champion"):
        promotion.gate(demo_spec, second["version"], holdout, second["metrics"], actor="tester")

    mlflow_server["proc"] = _start_mlflow(mlflow_server["db_url"], mlflow_server["artifacts"], mlflow_server["port"])
    assert registry.champion_version(demo_spec) == first["version"]
    client = registry.client()
    versions = client.search_model_versions(f"name='{demo_spec.name}'")
    # Nothing half-registered: the failed run left no version behind and no alias moved.
    assert sorted(str(v.version) for v in versions) == sorted([first["version"], second["version"]])
    assert str(client.get_model_version_by_alias(demo_spec.name, "champion").version) == first["version"]
    assert "airloop.gate" not in client.get_model_version(demo_spec.name, second["version"]).tags
    assert registry.history(demo_spec) == history_before
