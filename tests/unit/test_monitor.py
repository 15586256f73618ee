"""Drift monitoring for real: Evidently 0.7, an embedded MLflow registry and the SQLite prediction log.

One module-wide world: 14 days of demo orders with features computed like the training frame
(per-restaurant statistics of the 7 days before each order), a champion trained, logged and
gated with ``airloop.train``, and predictions of that champion logged with ``PredictionLog``
for a clean day, two drifted days (``datagen.Drift`` strength 0.6) and a quiet day.

The verdict and retrain policy rules themselves are tested from hand-built inputs in
test_decisions.py; here they meet real checks, reports, MLflow and the locked policy file.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from airloop import prediction_log, promotion, registry
from airloop.decisions import DRIFT, INSUFFICIENT_DATA, OK, decide
from airloop.spec import example_data

datagen = example_data("late_delivery")

FIRST_DAY = dt.date(2026, 9, 1)
REFERENCE_DAYS = [FIRST_DAY + dt.timedelta(days=i) for i in range(7, 14)]  # 7 days of full history
CLEAN_DAY = FIRST_DAY + dt.timedelta(days=14)
DRIFT_START = FIRST_DAY + dt.timedelta(days=15)
DRIFT_DAYS = [FIRST_DAY + dt.timedelta(days=22), FIRST_DAY + dt.timedelta(days=23)]
QUIET_DAY = FIRST_DAY + dt.timedelta(days=30)
QUIET_ROWS = 100
LABELLED = 300
PEAK_HOURS = {11, 12, 13, 18, 19, 20}


def midnight(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc)


def end_of(day: dt.date) -> dt.datetime:
    return midnight(day + dt.timedelta(days=1))


def with_features(orders_by_day: dict, day: dt.date):
    """The orders of ``day`` with the model's inputs, from the 7 days before it (as Feast would)."""
    import numpy as np
    import pandas as pd

    week = [orders_by_day[day - dt.timedelta(days=i)] for i in range(1, 8) if day - dt.timedelta(days=i) in orders_by_day]
    history = pd.concat(week)
    stats = history.groupby("restaurant_id").agg(
        orders_7d=("order_id", "size"),
        avg_prep_minutes_7d=("prep_minutes", "mean"),
        late_rate_7d=("was_late", "mean"),
        avg_distance_km_7d=("distance_km", "mean"),
        avg_items_7d=("items", "mean"),
    )
    yesterday = orders_by_day[day - dt.timedelta(days=1)].groupby("restaurant_id").size().rename("orders_1d")
    stats = stats.join(yesterday).fillna({"orders_1d": 0})
    orders = orders_by_day[day]
    frame = pd.DataFrame(
        {
            "restaurant_id": orders["restaurant_id"],
            "event_timestamp": orders["event_timestamp"],
            "distance_km": orders["distance_km"].astype("float64"),
            "items": orders["items"].astype("float64"),
            "order_hour": orders["event_timestamp"].dt.hour.astype("float64"),
            "was_late": orders["was_late"],
        }
    ).join(stats, on="restaurant_id")
    frame = frame[[*frame.columns[:6], "orders_1d", "orders_7d", "avg_prep_minutes_7d", "late_rate_7d",
                   "avg_distance_km_7d", "avg_items_7d"]]
    frame["expected_prep_minutes"] = frame["avg_prep_minutes_7d"] * frame["items"] / frame["avg_items_7d"]
    frame["distance_vs_usual"] = frame["distance_km"] / frame["avg_distance_km_7d"]
    frame["is_peak_hour"] = frame["order_hour"].isin(PEAK_HOURS).astype("float64")
    return frame.astype({c: "float64" for c in frame.columns[6:]}).replace([np.inf, -np.inf], np.nan)


@dataclass
class World:
    settings: object
    spec: object
    version: str
    columns: list
    logged: dict  # day -> rows logged


def log_day(plog, model, frame, columns, version: str, tag: str, limit: int | None = None) -> list[str]:
    """Predict a day's orders with the champion and log them as the service would."""
    import math

    from airloop import serve

    frame = frame.head(limit) if limit else frame
    predictions = model.predict_proba(frame[columns])[:, 1]
    scored, ids = [], []
    for i, (row, p) in enumerate(zip(frame.to_dict("records"), predictions)):
        features = {c: None if isinstance(row[c], float) and math.isnan(row[c]) else row[c] for c in columns}
        request_id = f"{tag}-{i:05d}"
        ids.append(request_id)
        scored.append(
            serve.Scored(
                request_id=request_id, model="late_delivery", model_version=version, entity=int(row["restaurant_id"]),
                features=features, prediction=float(p), missing_features=[c for c, v in features.items() if v is None],
                predicted_at=row["event_timestamp"].to_pydatetime(),
            )
        )
    plog.append(scored)
    plog.flush()
    return ids


@pytest.fixture(scope="module")
def world(tmp_path_factory, demo_spec):
    import pandas as pd

    home = tmp_path_factory.mktemp("monitor") / "airloop"
    from airloop import train
    from airloop.settings import ensure_dirs, environ, get_settings

    with environ({"AIRLOOP_HOME": str(home), "MLFLOW_TRACKING_URI": None}):
        settings = ensure_dirs(get_settings())
        spec = demo_spec
        drift = datagen.Drift(DRIFT_START, 0.6)
        days = [FIRST_DAY + dt.timedelta(days=i) for i in range(31)]
        orders = {d: datagen.generate_orders(d, drift=drift) for d in days}
        training = pd.concat([with_features(orders, d) for d in REFERENCE_DAYS], ignore_index=True)
        fit_on, holdout = train.time_split(training, "event_timestamp", spec.split.holdout_days)
        columns = train.feature_columns(spec, training)
        params = {"max_iter": 60, "learning_rate": 0.1}  # quicker than the spec's; still passes the floor
        light = spec.model_copy(update={"estimator": spec.estimator.model_copy(update={"params": params})})
        model = train.fit(light, fit_on, columns)
        metrics = train.evaluate(spec, model, holdout[columns], holdout[spec.target])
        _, version = train.log_training_run(
            spec, model, fit_on, holdout, columns, metrics, train.Lineage(trigger_reason="test"), settings
        )
        assert promotion.gate(spec, version, holdout, metrics, actor="test", settings=settings).promoted

        plog = prediction_log.PredictionLog(settings.prediction_store, settings=settings, flush_seconds=30, batch_size=2000)
        logged = {}
        try:
            for day, tag, limit in [(CLEAN_DAY, "clean", None), (DRIFT_DAYS[0], "drift1", None),
                                    (DRIFT_DAYS[1], "drift2", None), (QUIET_DAY, "quiet", QUIET_ROWS)]:
                frame = with_features(orders, day)
                ids = log_day(plog, model, frame, columns, version, tag, limit)
                logged[day] = len(ids)
                if tag in ("clean", "drift1"):  # feedback comes back for some predictions
                    labels = dict(zip(ids, frame["was_late"]))
                    for request_id in random.Random(7).sample(ids, LABELLED):
                        plog.attach_label(request_id, float(labels[request_id]))
        finally:
            plog.close()
        yield World(settings, spec, version, columns, logged)


@pytest.fixture(scope="module")
def checks(world):
    """The clean and the two drifted windows, checked once for the module."""
    from airloop import monitoring

    return {
        name: monitoring.check_drift(world.spec, now=end_of(day), settings=world.settings)
        for name, day in (("clean", CLEAN_DAY), ("drift1", DRIFT_DAYS[0]), ("drift2", DRIFT_DAYS[1]))
    }


def fresh_policy(world, tmp_path):
    """The world's settings with an empty policy state (reports_dir) for one test."""
    return dataclasses.replace(world.settings, reports_dir=tmp_path / "reports")


def variant(spec, **drift):
    """The spec with these drift settings, validated as a spec file's would be."""
    return spec.model_copy(update={"drift": spec.drift.model_validate({**spec.drift.model_dump(), **drift})})


def test_importing_monitoring_imports_no_heavy_library():
    import subprocess
    import sys

    code = "import sys, airloop.monitoring; print(sorted(m for m in ('pandas','evidently','mlflow','sklearn') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_clean_traffic_is_ok_and_does_not_trigger(world, checks, tmp_path):
    from airloop import monitoring

    check = checks["clean"]
    assert check.status == OK, check.message
    assert check.rows == world.logged[CLEAN_DAY] and check.rows_checked == check.rows and not check.sampled
    assert check.champion_version == world.version and check.rescored_rows == 0
    assert check.drifted_share < world.spec.drift.drift_share and check.prediction_drifted is False
    assert set(check.feature_scores) == set(world.columns)
    q = check.quality
    assert q["labelled_rows"] == LABELLED and q["metric"] == "roc_auc" and not q["degraded"]
    assert q["champion_value"] is not None and q["value"] > 0.6
    # What goes through XCom comes back the same (JSON-safe both ways).
    assert monitoring.DriftCheck.from_dict(json.loads(json.dumps(check.as_dict()))) == check
    decision = monitoring.decide_and_record(world.spec, check, training_active=False, settings=fresh_policy(world, tmp_path))
    assert not decision.trigger and decision.reason.startswith("no drift"), decision.reason


def test_reports_are_written(world, checks):
    check = checks["clean"]
    directory = world.settings.reports_dir / "late_delivery"
    html, report = Path(check.html_path), Path(check.json_path)
    assert html == directory / f"{check.report_id}.html" and report == directory / f"{check.report_id}.json"
    assert check.report_id.startswith("late_delivery-20260916T000000Z-")
    page = html.read_text()
    assert html.stat().st_size > 500_000 and "distance_km" in page
    # One page with both Evidently reports (data drift and prediction drift) and a summary.
    assert "Data drift: model inputs" in page and "Prediction drift: served predictions" in page
    assert "Value Drift for column prediction" in page and check.message in page
    document = json.loads(report.read_text())
    assert document["check"]["status"] == "ok" and document["check"]["mlflow_run_id"] == check.mlflow_run_id
    assert set(document["evidently"]) == {"data_drift", "prediction_drift"}
    # The reference is cached per champion run: the next checks do not touch MLflow artifacts.
    assert list((directory / "reference" / check.champion_run_id).glob("meta.*.json"))


def test_drifted_traffic_is_drift(world, checks):
    for name in ("drift1", "drift2"):
        check = checks[name]
        assert check.status == DRIFT, check.message
        assert {"distance_km", "avg_distance_km_7d", "avg_prep_minutes_7d"} <= set(check.drifted_columns)
        assert check.prediction_drifted and check.prediction_drift > check.prediction_threshold
        assert check.signals and check.message.startswith("drift: ")
    assert checks["drift1"].quality["labelled_rows"] == LABELLED


def test_hysteresis_first_drift_window_waits_the_second_triggers(world, checks, tmp_path):
    from airloop import monitoring

    settings = fresh_policy(world, tmp_path)
    assert world.spec.drift.consecutive_windows == 2
    first = monitoring.decide_and_record(world.spec, checks["drift1"], training_active=False, settings=settings)
    assert not first.trigger and first.streak == 1
    assert "drift in 1 consecutive window of the 2 required" in first.reason, first.reason
    second = monitoring.decide_and_record(world.spec, checks["drift2"], training_active=False, settings=settings)
    assert second.trigger and second.streak == 2, second.reason
    assert "drifted share" in second.reason or "prediction drift" in second.reason
    assert "drift in 2 consecutive windows" in second.reason
    history = monitoring.load_history(world.spec, settings)
    assert [t["report_id"] for t in history.triggers] == [checks["drift2"].report_id]
    assert [c["decision"]["trigger"] for c in history.checks] == [False, True]
    # A retry of the same window is not a new window, and the trigger used up the streak.
    retry = dataclasses.replace(checks["drift2"], report_id="retry")
    again = decide(world.spec, retry, history, training_active=False)
    assert not again.trigger and again.streak == 1


def _drift_at(check, start: dt.datetime, hours: int, name: str):
    return dataclasses.replace(
        check, report_id=name, window_start=start, window_end=start + dt.timedelta(hours=hours), mlflow_run_id=None
    )


def test_storm_of_drift_signals_gives_one_trigger_per_cooldown(world, checks, tmp_path):
    from airloop import monitoring

    settings = fresh_policy(world, tmp_path)
    spec = variant(world.spec, window_hours=1, consecutive_windows=2, cooldown_hours=24)
    t0 = dt.datetime(2026, 10, 1, tzinfo=dt.timezone.utc)
    storm = [_drift_at(checks["drift2"], t0 + dt.timedelta(hours=i), 1, f"storm-{i:02d}") for i in range(20)]
    random.Random(3).shuffle(storm)
    with ThreadPoolExecutor(max_workers=8) as pool:  # concurrent checks: the file lock serializes them
        decisions = list(pool.map(
            lambda c: monitoring.decide_and_record(spec, c, training_active=False, settings=settings), storm
        ))
    assert sum(d.trigger for d in decisions) == 1, [d.reason for d in decisions]
    history = monitoring.load_history(spec, settings)
    assert len(history.checks) == 20 and len(history.triggers) == 1
    assert any(d.reason.startswith("cooldown until") for d in decisions)
    # After the cooldown, persistent drift triggers again, once. (Whether at hour 30 or 31 depends
    # on which storm check won the race: drift windows after the trigger count toward the streak.)
    later = [_drift_at(checks["drift2"], t0 + dt.timedelta(hours=h), 1, f"later-{h}") for h in (50, 51, 52)]
    again = [monitoring.decide_and_record(spec, c, training_active=False, settings=settings) for c in later]
    assert sum(d.trigger for d in again) == 1 and not again[2].trigger
    assert len(monitoring.load_history(spec, settings).triggers) == 2


def test_no_trigger_while_training_is_active(world, checks, tmp_path):
    from airloop import monitoring

    settings = fresh_policy(world, tmp_path)
    spec = variant(world.spec, consecutive_windows=1)
    decision = monitoring.decide_and_record(spec, checks["drift1"], training_active=True, settings=settings)
    assert not decision.trigger and decision.training_active
    assert decision.reason.startswith("training already queued or running for late_delivery"), decision.reason
    assert monitoring.load_history(spec, settings).triggers == []
    # Once it finished, the next drift window triggers.
    assert monitoring.decide_and_record(spec, checks["drift2"], training_active=False, settings=settings).trigger


def test_a_trigger_whose_retrain_did_not_start_is_forgotten(world, checks, tmp_path):
    from airloop import monitoring

    settings = fresh_policy(world, tmp_path)
    spec = variant(world.spec, consecutive_windows=1, cooldown_hours=24 * 30)
    first = monitoring.decide_and_record(spec, checks["drift1"], training_active=False, settings=settings)
    assert first.trigger
    # Within the cooldown nothing triggers, unless the monitor DAG's trigger task failed and
    # its failure callback forgot the trigger: then the next drift check may retry.
    assert not monitoring.decide_and_record(spec, checks["drift2"], training_active=False, settings=settings).trigger
    assert monitoring.forget_trigger(spec, checks["drift1"].report_id, settings=settings)
    assert not monitoring.forget_trigger(spec, checks["drift1"].report_id, settings=settings)
    assert monitoring.decide_and_record(spec, checks["drift2"], training_active=False, settings=settings).trigger


def test_insufficient_data_is_explicit_and_raises_no_alarm(world, tmp_path):
    from airloop import monitoring

    check = monitoring.check_drift(world.spec, now=end_of(QUIET_DAY), settings=world.settings)
    assert check.status == INSUFFICIENT_DATA and check.rows == QUIET_ROWS
    assert check.message.startswith("insufficient data: 100 logged predictions") and "no alarm" in check.message
    assert check.drifted_share is None and check.html_path is None and Path(check.json_path).exists()
    decision = monitoring.decide_and_record(world.spec, check, training_active=False, settings=fresh_policy(world, tmp_path))
    assert not decision.trigger and decision.reason.startswith("insufficient data"), decision.reason
    # A shorter window (as a manual DAG run may ask), ending at an ISO string.
    short = monitoring.check_drift(world.spec, now=end_of(CLEAN_DAY).isoformat(), window=dt.timedelta(hours=2),
                                settings=world.settings, log_to_mlflow=False)
    assert short.status == INSUFFICIENT_DATA and 0 < short.rows < 500
    assert short.window_end - short.window_start == dt.timedelta(hours=2)
    # An empty window too (nothing logged at all).
    later = end_of(QUIET_DAY + dt.timedelta(days=5))
    empty = monitoring.check_drift(world.spec, now=later, settings=world.settings, log_to_mlflow=False)
    assert empty.status == INSUFFICIENT_DATA and empty.rows == 0


def test_sampled_check_says_so_and_matches_the_full_run(world, checks):
    from airloop import monitoring

    spec = variant(world.spec, sample_size=1000)
    full = checks["drift1"]
    sampled = monitoring.check_drift(spec, now=end_of(DRIFT_DAYS[0]), settings=world.settings, log_to_mlflow=False)
    assert sampled.sampled and sampled.rows == full.rows and sampled.rows_checked == 1000
    assert sampled.sample_seed is not None and "seeded sample of 1000" in sampled.message
    assert sampled.sampling_error["distance_km"] is not None and 0 < sampled.sampling_error["distance_km"] < 0.05
    assert sampled.status == full.status and sampled.prediction_drifted == full.prediction_drifted
    for column, score in full.feature_scores.items():
        assert abs(sampled.feature_scores[column] - score) < 0.1, column


def test_mlflow_has_the_time_series(world, checks):
    from airloop import monitoring

    runs = monitoring.monitoring_history(world.spec, world.settings)
    mine = runs[runs["tags.airloop.report_id"].isin([c.report_id for c in checks.values()])]
    assert len(mine) == 3
    assert list(mine["tags.airloop.report_id"]) == [checks[n].report_id for n in ("clean", "drift1", "drift2")]
    assert set(mine["tags.airloop.champion_version"]) == {world.version}
    assert list(mine["tags.airloop.status"]) == ["ok", "drift", "drift"]
    for column in ("metrics.drifted_share", "metrics.prediction_drift", "metrics.drift.distance_km",
                   "metrics.quality.roc_auc", "metrics.rows"):
        assert column in mine.columns, column
    assert mine["metrics.drifted_share"].iloc[0] < mine["metrics.drifted_share"].iloc[1]
    client = registry.client(world.settings)
    check = checks["drift1"]
    assert [a.path for a in client.list_artifacts(check.mlflow_run_id, "drift")] == [f"drift/{check.report_id}.json"]
    # Stamped with the window end, so the runs sort as a time series.
    assert mine["start_time"].iloc[1].to_pydatetime() == end_of(DRIFT_DAYS[0])


def test_large_windows_are_sampled_in_the_store(world):
    from airloop import monitoring

    spec = variant(world.spec, sample_size=1000)
    reference = monitoring.load_reference(spec, world.settings)
    start, end = midnight(DRIFT_DAYS[0]), end_of(DRIFT_DAYS[0])
    whole, rows, labelled, _ = monitoring.read_window(spec, start, end, reference, world.settings, sample_size=None)
    assert labelled is None and rows == len(whole) == world.logged[DRIFT_DAYS[0]]
    assert set(whole.columns) == set(world.columns) | {"prediction", "label"}
    assert whole["label"].notna().sum() == LABELLED
    part, rows, labelled, rescored = monitoring.read_window(spec, start, end, reference, world.settings, seed=1)
    assert rows == len(whole) and len(part) == 1000 and rescored == 0
    again, *_ = monitoring.read_window(spec, start, end, reference, world.settings, seed=1)
    assert again.equals(part)  # seeded
    assert len(labelled) == LABELLED and list(labelled.columns) == ["label", "prediction"]
    check, _ = monitoring.assess(spec, part, reference, window_start=start, window_end=end, rows=rows, labelled=labelled)
    assert check.sampled and check.rows == rows and check.rows_checked == 1000
    assert check.quality["labelled_rows"] == LABELLED and check.status == DRIFT
    assert check.quality["min_labels"] == spec.drift.min_labels
    assert check.quality["degraded"] == any(signal.startswith("roc_auc") for signal in check.signals)
    # Too few rows for a verdict: assess says so, as check_drift does, and runs nothing.
    tiny, snapshots = monitoring.assess(spec, whole.head(10), reference, window_start=start, window_end=end)
    assert tiny.status == INSUFFICIENT_DATA and snapshots == {} and tiny.drifted_share is None
    assert tiny.message.startswith("insufficient data: 10 logged predictions in 2026-09-23 00:00 .. 2026-09-24 00:00 UTC")


def test_rows_served_by_another_version_are_predicted_with_the_champion(world):
    from airloop import monitoring

    reference = monitoring.load_reference(world.spec, world.settings)
    frame = prediction_log.read_predictions(midnight(CLEAN_DAY), end_of(CLEAN_DAY), model=world.spec, settings=world.settings)
    served = frame["prediction"].copy()
    older = frame.index % 2 == 0
    frame.loc[older, "model_version"] = "0"
    frame.loc[older, "prediction"] = 0.5
    current, rescored = monitoring.current_frame(frame, reference, world.spec, world.settings)
    assert rescored == older.sum()
    assert (current["prediction"] - served).abs().max() < 1e-9
    # Their labels do not score the champion.
    assert current.loc[older, "label"].isna().all()


def test_predictions_without_a_champion_are_a_clear_error(world, tmp_path):
    from airloop import monitoring

    empty_registry = dataclasses.replace(world.settings, mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    with pytest.raises(monitoring.MonitorError, match="no @champion model"):
        monitoring.check_drift(world.spec, now=end_of(CLEAN_DAY), settings=empty_registry)


def test_excluded_and_tuned_inputs_change_the_share_through_evidently(world):
    """drift.exclude and drift.columns reach Evidently and the verdict on a real drifted window."""
    from airloop import monitoring
    from airloop.spec import SpecError

    start, end = midnight(DRIFT_DAYS[0]), end_of(DRIFT_DAYS[0])
    reference = monitoring.load_reference(world.spec, world.settings)
    window, rows, labelled, _ = monitoring.read_window(world.spec, start, end, reference, world.settings, sample_size=None)
    plain, _ = monitoring.assess(world.spec, window, reference, window_start=start, window_end=end)
    drifted = plain.drifted_columns
    assert plain.drifted_share >= world.spec.drift.drift_share and len(drifted) >= 3

    # Excluding every drifted input but one: still measured and reported, no longer counted.
    kept = drifted[0]
    calm = variant(world.spec, exclude=drifted[1:])
    check, _ = monitoring.assess(calm, window, reference, window_start=start, window_end=end)
    assert set(check.feature_scores) == set(plain.feature_scores)
    assert not any(s.startswith("drifted share") for s in check.signals), check.signals
    assert any(s.startswith("drifted share") for s in plain.signals)

    # A per-input threshold no score reaches takes that input out of the drifted ones.
    loose = variant(world.spec, columns={kept: {"stattest": "psi", "threshold": 1000.0}})
    tuned, _ = monitoring.assess(loose, window, reference, window_start=start, window_end=end)
    assert tuned.feature_methods[kept].lower().startswith("psi") and kept not in tuned.drifted_columns
    assert tuned.feature_thresholds[kept] == 1000.0

    # The prediction's own threshold (drift.columns.prediction).
    assert plain.prediction_drifted
    calm_prediction = variant(world.spec, columns={"prediction": {"threshold": 1000.0}})
    quiet, _ = monitoring.assess(calm_prediction, window, reference, window_start=start, window_end=end)
    assert quiet.prediction_drifted is False and quiet.prediction_threshold == 1000.0

    with pytest.raises(SpecError, match="drift.exclude names no_such_input"):
        monitoring.assess(variant(world.spec, exclude=["no_such_input"]), window, reference,
                          window_start=start, window_end=end)
