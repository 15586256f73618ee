"""The pure decisions, from hand-built inputs: no MLflow, Evidently or Airflow (milliseconds)."""

from __future__ import annotations

import pytest

from airloop.decisions import decide_promotion, floor_failures, greater_is_better
from airloop.spec import PromotionSpec, SpecError


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
