"""The pure decisions, from hand-built inputs: no MLflow, Evidently or Airflow (milliseconds)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import pytest

from airloop.decisions import (
    DRIFT,
    INSUFFICIENT_DATA,
    OK,
    DriftVerdict,
    History,
    decide,
    decide_promotion,
    drift_verdict,
    floor_failures,
    greater_is_better,
    metric_drop,
)
from airloop.spec import DriftSpec, PromotionSpec, SpecError


def promotion(**kw) -> PromotionSpec:
    return PromotionSpec.model_validate({"metric": "roc_auc", **kw})


def test_metric_direction_is_one_rule():
    assert greater_is_better("roc_auc", promotion())
    assert not greater_is_better("rmse", promotion(metric="rmse"))
    assert not greater_is_better("log_loss", promotion())  # a floor on another metric
    # An unknown metric takes the spec's word, and greater is better by default.
    assert not greater_is_better("cost", promotion(metric="cost", greater_is_better=False))
    assert greater_is_better("cost", promotion(metric="cost"))


def test_a_direction_that_contradicts_the_metric_is_refused_at_load():
    with pytest.raises(ValueError, match="contradicts 'rmse', where lower is better"):
        promotion(metric="rmse", greater_is_better=True)
    assert promotion(metric="rmse", greater_is_better=False).greater_is_better is False


def test_first_model_must_pass_the_floors():
    spec = promotion(floors={"roc_auc": 0.7, "brier": 0.2})
    first = decide_promotion(spec, {"roc_auc": 0.8, "brier": 0.1}, champion_version=None, champion_score=None)
    assert first.promoted and first.reason.startswith("first model")
    low = decide_promotion(spec, {"roc_auc": 0.65, "brier": 0.1}, champion_version=None, champion_score=None)
    assert not low.promoted and "roc_auc=0.6500 misses the floor 0.7" in low.reason
    # brier is lower-is-better: 0.25 is above its ceiling.
    assert floor_failures(spec, {"roc_auc": 0.8, "brier": 0.25}) == ["brier=0.2500 misses the floor 0.2"]
    assert floor_failures(spec, {"roc_auc": 0.8}) == ["brier is missing; its floor is 0.2"]


def test_floors_are_checked_before_the_champion_and_win_over_a_better_score():
    spec = promotion(floors={"accuracy": 0.9})
    decision = decide_promotion(spec, {"roc_auc": 0.99, "accuracy": 0.5}, champion_version="3", champion_score=0.6)
    assert not decision.promoted and "accuracy" in decision.reason


def test_min_improvement_boundary_greater_is_better():
    spec = promotion(min_improvement=0.01)
    at = decide_promotion(spec, {"roc_auc": 0.81}, champion_version="1", champion_score=0.80)
    assert at.promoted, at.reason  # exactly the margin counts as beating
    below = decide_promotion(spec, {"roc_auc": 0.8099}, champion_version="1", champion_score=0.80)
    assert not below.promoted and "does not beat champion v1" in below.reason


def test_lower_is_better_metric_promotes_the_smaller_error():
    spec = promotion(metric="rmse", min_improvement=0.5, floors={"rmse": 10.0})
    better = decide_promotion(spec, {"rmse": 4.0}, champion_version="2", champion_score=4.5)
    assert better.promoted and better.champion_version == "2"
    worse = decide_promotion(spec, {"rmse": 4.2}, champion_version="2", champion_score=4.5)
    assert not worse.promoted
    over_floor = decide_promotion(spec, {"rmse": 11.0}, champion_version=None, champion_score=None)
    assert not over_floor.promoted and "rmse=11.0000 misses the floor 10.0" in over_floor.reason


def test_missing_promotion_metric_is_an_error_not_a_decision():
    with pytest.raises(KeyError, match="promotion metric 'roc_auc'"):
        decide_promotion(promotion(), {"accuracy": 0.9}, champion_version=None, champion_score=None)


def test_spec_with_contradicting_direction_fails_to_load(tmp_path, demo_spec):
    import yaml

    from airloop.spec import load_spec

    raw = demo_spec.model_dump(by_alias=True, mode="json")
    raw["promotion"] = {"metric": "log_loss", "greater_is_better": True}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError, match="promotion"):
        load_spec(path)


# --- the drift verdict ------------------------------------------------------------------------

T0 = dt.datetime(2026, 10, 1, tzinfo=dt.timezone.utc)
DAY = dt.timedelta(days=1)


def drift_spec(**kw) -> DriftSpec:
    return DriftSpec.model_validate({"drift_share": 0.5, "min_rows": 500, "quality_drop": 0.05, "min_labels": 200, **kw})


def verdict(spec: DriftSpec | None = None, **kw) -> DriftVerdict:
    """A verdict on a quiet window of 12 inputs unless told otherwise."""
    numbers = {
        "rows": 1000, "drifted_share": 1 / 12, "drifted_columns": ["distance_km"], "features": 12,
        "prediction_drift": 0.02, "prediction_drifted": False, "prediction_method": "wasserstein",
        "prediction_threshold": 0.1,
    }
    return drift_verdict(spec or drift_spec(), **{**numbers, **kw})


def labelled(labelled_rows: int, value: float, champion: float, metric: str = "roc_auc", **promotion_kw) -> dict:
    """The quality numbers as monitoring.quality gives them (the drop in the metric's direction)."""
    drop = metric_drop(promotion(metric=metric, **promotion_kw), metric, value, champion)
    return {"labelled_rows": labelled_rows, "metric": metric, "value": value, "champion_value": champion, "drop": drop}


def test_fewer_rows_than_min_rows_is_insufficient_data_and_nothing_else():
    below = verdict(rows=499, drifted_share=1.0, prediction_drifted=True, window_start=T0, window_end=T0 + DAY)
    assert below.status == INSUFFICIENT_DATA and below.signals == () and not below.dataset_drift
    assert below.message == (
        "insufficient data: 499 logged predictions in 2026-10-01 00:00 .. 2026-10-02 00:00 UTC, fewer than "
        "min_rows=500; no drift check was run and no alarm is raised"
    )
    assert verdict(rows=0).status == INSUFFICIENT_DATA  # nothing logged at all
    at = verdict(rows=500)
    assert at.status == OK and at.message.startswith("no drift: drifted share 0.08 < 0.5; prediction drift 0.020")
    # On the row count alone (before anything was compared), a window with enough rows is not insufficient.
    assert drift_verdict(drift_spec(), rows=500).status == OK


def test_drifted_share_exactly_at_the_threshold_is_drift():
    columns = ["a", "b", "c", "d", "e", "f"]
    at = verdict(drifted_share=6 / 12, drifted_columns=columns)
    assert at.status == DRIFT and at.dataset_drift
    assert at.signals == ("drifted share 0.50 >= 0.5 (6 of 12 features: a, b, c, d, e, f)",)
    assert at.message == "drift: " + at.signals[0]
    below = verdict(drifted_share=5 / 12, drifted_columns=columns[:5])
    assert below.status == OK and not below.dataset_drift and below.signals == ()
    assert below.message == "no drift: drifted share 0.42 < 0.5; prediction drift 0.020 under its threshold 0.1"
    assert verdict(drift_spec(drift_share=0.4), drifted_share=5 / 12).status == DRIFT  # the spec's threshold


def test_prediction_drift_alone_is_drift():
    alone = verdict(prediction_drift=0.25, prediction_drifted=True)
    assert alone.status == DRIFT and not alone.dataset_drift
    assert alone.signals == ("prediction drift 0.250 (wasserstein, threshold 0.1)",)
    # Nothing compared at all (no inputs, no prediction): ok, and the message says n/a.
    empty = drift_verdict(drift_spec(), rows=800)
    assert empty.status == OK and "drifted share n/a < 0.5; prediction drift n/a" in empty.message


def test_quality_drop_is_a_signal_only_with_enough_labels():
    worse = labelled(200, 0.70, 0.80)  # roc_auc 0.10 below the champion's holdout
    degraded = verdict(quality=worse)
    assert degraded.status == DRIFT and degraded.quality_degraded and degraded.enough_labels
    assert degraded.signals == (
        "roc_auc 0.700 on 200 labelled predictions is 0.100 worse than the champion's holdout 0.800 (more than 0.05)",
    )
    few = verdict(quality={**worse, "labelled_rows": 199})
    assert few.status == OK and not few.quality_degraded and not few.enough_labels
    assert few.message.endswith("; roc_auc 0.700 on 199 labelled rows (champion holdout 0.800)")
    within = verdict(drift_spec(quality_drop=0.25), quality=labelled(500, 0.5, 0.75))  # exactly quality_drop: no
    assert within.status == OK and within.enough_labels and not within.quality_degraded
    assert verdict(quality=None).enough_labels is False
    # No champion value to compare with: measured, reported, never a signal.
    alone = verdict(quality=labelled(500, 0.5, None))
    assert alone.status == OK and alone.message.endswith("roc_auc 0.500 on 500 labelled rows (champion holdout n/a)")


def test_lower_is_better_quality_metric_drops_when_it_rises():
    assert metric_drop(promotion(metric="rmse"), "rmse", 5.2, 4.0) == pytest.approx(1.2)
    assert metric_drop(promotion(), "roc_auc", 0.7, 0.8) == pytest.approx(0.1)
    assert metric_drop(promotion(), "roc_auc", 0.7, None) is None
    spec = drift_spec(quality_drop=0.5)
    rose = verdict(spec, quality=labelled(300, 5.2, 4.0, metric="rmse"))
    assert rose.status == DRIFT and rose.signals[0].startswith("rmse 5.200 on 300 labelled predictions is 1.200 worse")
    fell = verdict(spec, quality=labelled(300, 3.0, 4.0, metric="rmse"))  # a smaller error is better
    assert fell.status == OK and not fell.quality_degraded
    # An unknown metric takes the promotion spec's direction.
    cost = labelled(300, 12.0, 10.0, metric="cost", greater_is_better=False)
    assert cost["drop"] == pytest.approx(2.0) and verdict(spec, quality=cost).status == DRIFT


def test_a_sampled_verdict_says_whether_the_sampling_error_could_flip_it():
    six = ["a", "b", "c", "d", "e", "f"]
    sampled = {"rows": 100_000, "rows_checked": 1000}
    # 6 of 12 drifted, exactly at the threshold: if borderline "a" is not really drifted, it is not drift.
    edge = verdict(**sampled, drifted_share=6 / 12, drifted_columns=six, borderline=["a"])
    assert edge.status == DRIFT and edge.stable is False
    assert edge.message.endswith("[checked a seeded sample of 1000 of 100000 rows; borderline under the sampling error: a]")
    # A borderline input that is not drifted cannot take 6 of 12 below the threshold.
    up = verdict(**sampled, drifted_share=6 / 12, drifted_columns=six, borderline=["g"])
    assert up.stable is True and up.message.endswith("; the verdict is stable under the sampling error]")
    # A borderline prediction can always flip the verdict.
    flip = verdict(**sampled, drifted_share=8 / 12, drifted_columns=[*six, "g", "h"], borderline=["g", "h"],
                   prediction_borderline=True)
    assert flip.stable is False and flip.message.endswith("borderline under the sampling error: g, h, prediction]")
    assert verdict(rows=1000, rows_checked=1000).stable is None  # every row checked: nothing to say


def test_each_verdict_threshold_is_read_in_one_place():
    """``drift.drift_share`` and friends (on a spec's drift section) are read in decisions.py only, once."""
    import ast
    from pathlib import Path

    import airloop

    names = ("drift_share", "min_rows", "quality_drop", "min_labels")
    reads: dict[str, list[str]] = {name: [] for name in names}
    for path in sorted(Path(airloop.__file__).parent.rglob("*.py")):
        source = path.read_text()
        if not any(name in source for name in names):
            continue
        for node in ast.walk(ast.parse(source)):
            if not (isinstance(node, ast.Attribute) and node.attr in names):
                continue
            owner = node.value
            if (isinstance(owner, ast.Name) and owner.id in ("drift", "policy")) or (
                isinstance(owner, ast.Attribute) and owner.attr == "drift"
            ):
                reads[node.attr].append(f"{path.name}:{node.lineno}")
    assert all(len(where) == 1 and where[0].startswith("decisions.py:") for where in reads.values()), reads


def test_decisions_import_no_tool_and_not_the_monitor():
    import ast

    import airloop.decisions

    tree = ast.parse(open(airloop.decisions.__file__).read())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert not {m.split(".")[0] for m in imported} & {"pandas", "numpy", "evidently", "mlflow", "sklearn", "airflow"}
    assert not {m for m in imported if m.startswith("airloop") and m not in ("airloop.spec", "airloop.fileio")}, imported


# --- the retrain policy -------------------------------------------------------------------------


@dataclass
class Check:
    """A drift check as the policy sees it (monitoring.DriftCheck has these and more)."""

    report_id: str
    status: str
    window_start: dt.datetime
    window_end: dt.datetime
    champion_version: str | None = "1"
    signals: list[str] = field(default_factory=list)
    message: str = ""


def check(name: str, status: str, start: dt.datetime, hours: int = 24, version: str = "1") -> Check:
    signals = ["drifted share 0.60 >= 0.5 (6 of 10 features: a, b, c, d, e, f)"] if status == DRIFT else []
    message = {DRIFT: "drift: " + "; ".join(signals), OK: "no drift: drifted share 0.10 < 0.5",
               INSUFFICIENT_DATA: "insufficient data: 3 logged predictions, fewer than min_rows=500"}[status]
    return Check(name, status, start, start + dt.timedelta(hours=hours), version, signals, message)


def day(i: int, status: str = DRIFT, **kw) -> Check:
    return check(f"{status}-{i}", status, T0 + i * DAY, **kw)


def history(*checks: Check, triggers: tuple = ()) -> History:
    """What the policy file holds: ISO strings, as airloop.monitoring records them."""
    entries = [
        {"report_id": c.report_id, "status": c.status, "window_start": c.window_start.isoformat(),
         "window_end": c.window_end.isoformat(), "champion_version": c.champion_version}
        for c in checks
    ]
    return History("late_delivery", entries, list(triggers))


def trigger(c: Check, at: dt.datetime | None = None) -> dict:
    return {"at": (at or c.window_end).isoformat(), "report_id": c.report_id,
            "window_start": c.window_start.isoformat(), "window_end": c.window_end.isoformat()}


@pytest.fixture
def policy(demo_spec):
    def make(**drift):
        drift = {"consecutive_windows": 2, "cooldown_hours": 24, **drift}
        return demo_spec.model_copy(update={"drift": demo_spec.drift.model_copy(update=drift)})

    return make


def test_drift_must_hold_in_consecutive_windows(policy):
    spec = policy(consecutive_windows=3)
    first = decide(spec, day(0), history(), training_active=False)
    assert not first.trigger and first.streak == 1 and first.required == 3
    assert first.reason.endswith("drift in 1 consecutive window of the 3 required; not triggering yet")
    second = decide(spec, day(1), history(day(0)), training_active=False)
    assert not second.trigger and second.streak == 2
    third = decide(spec, day(2), history(day(0), day(1)), training_active=False)
    assert third.trigger and third.streak == 3
    assert third.reason == (
        "drifted share 0.60 >= 0.5 (6 of 10 features: a, b, c, d, e, f); drift in 3 consecutive windows "
        "(consecutive_windows=3): retrain"
    )
    assert third.decided_at == day(2).window_end  # now defaults to the window end
    # A gap of a day with no check at all does not break the streak either: checks are walked back.
    assert decide(spec, day(3), history(day(0), day(1)), training_active=False).streak == 3


def test_insufficient_data_neither_counts_nor_breaks(policy):
    spec = policy()
    decision = decide(spec, day(2), history(day(0), day(1, INSUFFICIENT_DATA)), training_active=False)
    assert decision.trigger and decision.streak == 2
    quiet = decide(spec, day(1, INSUFFICIENT_DATA), history(day(0)), training_active=False)
    assert not quiet.trigger and quiet.streak == 1 and quiet.status == INSUFFICIENT_DATA
    assert quiet.reason == (
        "insufficient data: 3 logged predictions, fewer than min_rows=500; the streak stays at 1 of 2 consecutive windows"
    )


def test_an_ok_window_breaks_the_streak(policy):
    spec = policy()
    decision = decide(spec, day(2), history(day(0), day(1, OK)), training_active=False)
    assert not decision.trigger and decision.streak == 1
    ok = decide(spec, day(1, OK), history(day(0)), training_active=False)
    assert not ok.trigger and ok.streak == 0 and ok.reason == "no drift: drifted share 0.10 < 0.5; no retrain"


def test_an_overlapping_recheck_is_not_a_new_window(policy):
    spec = policy(consecutive_windows=4)
    retry = Check("retry-1", DRIFT, day(1).window_start, day(1).window_end, "1", day(1).signals)
    # The same window checked twice (a retry) and a window reaching into the current one.
    overlapping = check("late", DRIFT, T0 + 2 * DAY - dt.timedelta(hours=12))
    decision = decide(spec, day(2), history(day(0), day(1), retry, overlapping), training_active=False)
    assert not decision.trigger and decision.streak == 3  # days 0, 1 and 2; not 5
    again = decide(spec, Check("retry-2", DRIFT, day(1).window_start, day(1).window_end, "1", day(1).signals),
                   history(day(0), day(1)), training_active=False)
    assert again.streak == 2  # day 0 and this window, not day 1 again
    # A later check is never counted for an earlier window.
    assert decide(spec, day(1), history(day(0), day(2)), training_active=False).streak == 2


def test_another_champion_version_ends_the_streak(policy):
    spec = policy()
    decision = decide(spec, day(1, version="2"), history(day(0)), training_active=False)
    assert not decision.trigger and decision.streak == 1 and decision.champion_version == "2"


def test_no_trigger_while_training_is_active(policy):
    spec = policy(consecutive_windows=1)
    blocked = decide(spec, day(0), history(), training_active=True)
    assert not blocked.trigger and blocked.training_active and blocked.streak == 1
    assert blocked.reason.startswith("training already queued or running for late_delivery: no new retrain trigger")
    assert decide(spec, day(0), history(), training_active=False).trigger


def test_cooldown_boundary(policy):
    spec = policy(consecutive_windows=1, cooldown_hours=24)
    last = day(0)
    past = history(last, triggers=(trigger(last),))
    inside = decide(spec, day(1), past, now=last.window_end + dt.timedelta(hours=24, seconds=-1), training_active=False)
    assert not inside.trigger and inside.cooldown_until == last.window_end + DAY
    assert inside.reason.startswith(
        "cooldown until 2026-10-03 00:00 UTC: the last retrain was triggered at 2026-10-02 00:00 UTC by drift-0"
    )
    at = decide(spec, day(1), past, now=(last.window_end + DAY).isoformat(), training_active=False)
    assert at.trigger and at.last_trigger_at == last.window_end
    assert decide(policy(consecutive_windows=1, cooldown_hours=0), day(1), past, training_active=False).trigger


def test_a_trigger_uses_up_its_windows(policy):
    spec = policy(cooldown_hours=0)
    fired = history(day(0), day(1), triggers=(trigger(day(1)),))
    after = decide(spec, day(2), fired, training_active=False)
    assert not after.trigger and after.streak == 1  # days 0 and 1 went into the last retrain
    fired.checks.append(history(day(2)).checks[0])
    assert decide(spec, day(3), fired, training_active=False).trigger
    # The latest trigger is the one that counts, whatever order they were recorded in.
    both = history(day(0), day(1), day(2), triggers=(trigger(day(2)), trigger(day(0))))
    assert both.last_trigger()["report_id"] == "drift-2"
    assert decide(spec, day(3), both, training_active=False).streak == 1


def test_decision_as_dict_is_json_safe(policy):
    import json

    decision = decide(policy(consecutive_windows=1), day(1), history(day(0), triggers=(trigger(day(0)),)),
                      training_active=False)
    out = json.loads(json.dumps(decision.as_dict()))
    assert out["decided_at"] == "2026-10-03T00:00:00+00:00" and out["cooldown_until"] == "2026-10-03T00:00:00+00:00"


# --- drift that knows normal from new -----------------------------------------------------------

INPUTS = ["distance_km", "passengers", "pickup_hour", "temperature_c", "rain_mm", "zone_trips_7d"]


def test_excluded_inputs_are_reported_but_do_not_count_in_the_share():
    drifted = ["pickup_hour", "temperature_c", "rain_mm"]
    plain = verdict(drifted_share=3 / 6, drifted_columns=drifted, features=6)
    assert plain.status == DRIFT and plain.dataset_drift
    # A short window's hour mix and the day's weather are not the model's drift.
    spec = drift_spec(exclude=["pickup_hour", "temperature_c"])
    judged = verdict(spec, drifted_share=3 / 6, drifted_columns=drifted, features=6, compared=INPUTS)
    assert judged.status == OK and not judged.dataset_drift
    assert judged.message.startswith("no drift: drifted share 0.25 < 0.5")
    # The remaining inputs still count: half of the four left drifting is drift.
    more = verdict(spec, drifted_share=4 / 6, drifted_columns=[*drifted, "zone_trips_7d"], features=6, compared=INPUTS)
    assert more.dataset_drift and "2 of 4 features: rain_mm, zone_trips_7d" in more.signals[0]


def test_required_companions_gate_data_drift():
    spec = drift_spec(require=["quality_drop"])
    alone = verdict(spec, drifted_share=0.75, drifted_columns=INPUTS[:4], features=4)
    assert alone.status == OK and not alone.dataset_drift
    assert "data drift (drifted share 0.75" in alone.message and "without the required quality_drop" in alone.message
    confirmed = verdict(spec, drifted_share=0.75, drifted_columns=INPUTS[:4], features=4,
                        quality=labelled(400, 0.70, 0.80))
    assert confirmed.status == DRIFT and confirmed.dataset_drift and confirmed.quality_degraded
    assert len(confirmed.signals) == 2
    # Prediction drift still fires on its own: require only gates the data-drift signal.
    both = drift_spec(require=["prediction_drift", "quality_drop"])
    assert verdict(both, prediction_drift=0.4, prediction_drifted=True).status == DRIFT


def test_a_column_both_excluded_and_tuned_is_a_spec_error():
    with pytest.raises(ValueError, match="rain_mm both excluded and given a test"):
        drift_spec(exclude=["rain_mm"], columns={"rain_mm": {"stattest": "psi"}})
