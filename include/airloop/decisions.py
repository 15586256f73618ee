"""Pure decisions: metric direction and the promotion gate.

No MLflow, Evidently or Airflow here: metrics and spec sections in, a decision and its reason
out, so each rule is tested in milliseconds from hand-built inputs. The promotion thresholds
(``promotion.floors``, ``promotion.min_improvement``) are read here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airloop.spec import PromotionSpec

__all__ = [
    "GREATER_IS_BETTER",
    "LOWER_IS_BETTER",
    "PromotionDecision",
    "beats",
    "decide_promotion",
    "floor_failures",
    "greater_is_better",
    "known_direction",
]

# Metrics Airloop computes (train.evaluate, monitor.quality) and which way is better.
GREATER_IS_BETTER = frozenset({"roc_auc", "pr_auc", "accuracy", "r2", "positive_rate"})
LOWER_IS_BETTER = frozenset({"rmse", "mae", "log_loss", "brier"})


def known_direction(metric: str) -> bool | None:
    """True if a larger ``metric`` is better, False if a smaller one is, None if unknown."""
    if metric in GREATER_IS_BETTER:
        return True
    if metric in LOWER_IS_BETTER:
        return False
    return None


def greater_is_better(metric: str, promotion: "PromotionSpec") -> bool:
    """The one direction rule: a known metric's own direction, else the spec's word for its metric.

    The spec loader refuses a ``greater_is_better`` that contradicts a known metric, so both
    sources agree wherever both speak.
    """
    known = known_direction(metric)
    if known is not None:
        return known
    if metric == promotion.metric and promotion.greater_is_better is not None:
        return promotion.greater_is_better
    return True


def floor_failures(promotion: "PromotionSpec", metrics: dict[str, float]) -> list[str]:
    """Each floor of ``promotion.floors`` that ``metrics`` misses (a missing metric misses)."""
    failures = []
    for metric, floor in promotion.floors.items():
        value = metrics.get(metric)
        if value is None:
            failures.append(f"{metric} is missing; its floor is {floor}")
        elif (value < floor) if greater_is_better(metric, promotion) else (value > floor):
            failures.append(f"{metric}={value:.4f} misses the floor {floor}")
    return failures


def beats(promotion: "PromotionSpec", challenger: float, champion: float) -> bool:
    """Whether ``challenger`` improves on ``champion`` by at least ``min_improvement``."""
    margin = promotion.min_improvement
    if greater_is_better(promotion.metric, promotion):
        return challenger >= champion + margin
    return challenger <= champion - margin


@dataclass(frozen=True)
class PromotionDecision:
    """What the gate decided for a challenger, and why."""

    promoted: bool
    reason: str
    metric: str
    challenger_score: float
    champion_score: float | None = None
    champion_version: str | None = None


def decide_promotion(
    promotion: "PromotionSpec",
    metrics: dict[str, float],
    *,
    champion_version: str | None,
    champion_score: float | None,
) -> PromotionDecision:
    """Champion/challenger: promote only past every floor and, with a champion, beating it.

    ``metrics`` are the challenger's holdout metrics; ``champion_score`` is the champion's
    promotion metric on the same holdout (None when there is no champion).
    """
    metric = promotion.metric
    if metric not in metrics:
        raise KeyError(f"the challenger's metrics lack the promotion metric {metric!r}: {sorted(metrics)}")
    score = metrics[metric]
    failures = floor_failures(promotion, metrics)
    if failures:
        return PromotionDecision(False, "; ".join(failures), metric, score, champion_score, champion_version)
    if champion_version is None:
        reason = f"first model to pass the floors ({metric}={score:.4f})"
        return PromotionDecision(True, reason, metric, score, None, None)
    if champion_score is None:
        raise ValueError(f"champion v{champion_version} has no {metric} score to compare with")
    if beats(promotion, score, champion_score):
        reason = (
            f"{metric} {score:.4f} beats champion v{champion_version} ({champion_score:.4f}) "
            f"by at least {promotion.min_improvement}"
        )
        return PromotionDecision(True, reason, metric, score, champion_score, champion_version)
    reason = (
        f"{metric} {score:.4f} does not beat champion v{champion_version} ({champion_score:.4f}) "
        f"by {promotion.min_improvement}"
    )
    return PromotionDecision(False, reason, metric, score, champion_score, champion_version)
