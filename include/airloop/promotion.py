"""Promotion stage: the champion/challenger gate and rollback, applied to the registry.

The decision itself is pure (:func:`airloop.decisions.decide_promotion`); this module gathers
its inputs (the challenger's logged holdout metrics, the champion's score on that same holdout)
and applies it: aliases, version tags and the history entry. A registry fault raises and
promotes nothing.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from airloop import registry
from airloop.decisions import PromotionDecision, decide_promotion, floor_failures
from airloop.errors import PromotionError
from airloop.settings import Settings, get_settings

if TYPE_CHECKING:
    import pandas as pd

    from airloop.spec import ModelSpec

__all__ = ["PromotionDecision", "gate", "gate_version", "rollback"]

log = logging.getLogger(__name__)


def _champion_score(spec: "ModelSpec", version: str, holdout: "pd.DataFrame", settings: Settings) -> float:
    """The champion's promotion metric on the challenger's holdout."""
    from airloop.train import evaluate

    champion = registry.load_version(spec, version, settings)
    missing = [c for c in champion.inputs if c not in holdout.columns]
    if missing:
        raise PromotionError(f"champion v{version} needs columns missing from the holdout: {missing}")
    inputs = list(champion.inputs)
    return evaluate(spec, champion.model, holdout[inputs], holdout[spec.target])[spec.promotion.metric]


def gate(
    spec: "ModelSpec",
    version: str,
    holdout: "pd.DataFrame",
    metrics: dict[str, float],
    *,
    actor: str,
    settings: Settings | None = None,
) -> PromotionDecision:
    """Promote ``version`` only if it passes the floors and beats the champion on ``holdout``."""
    s = settings or get_settings()
    mlflow_client = registry.client(s)
    name = spec.registered_model_name
    current = registry.champion_version(spec, s, mlflow_client=mlflow_client)
    champion_score = None
    if current is not None and not floor_failures(spec.promotion, metrics):
        champion_score = _champion_score(spec, current, holdout, s)
    decision = decide_promotion(spec.promotion, metrics, champion_version=current, champion_score=champion_score)
    mlflow_client.set_model_version_tag(name, version, "airloop.gate", "promoted" if decision.promoted else "rejected")
    mlflow_client.set_model_version_tag(name, version, "airloop.gate_reason", decision.reason)
    if decision.promoted:
        mlflow_client.set_registered_model_alias(name, registry.CHAMPION, version)
        if current:
            mlflow_client.set_model_version_tag(name, current, "airloop.replaced_by", version)
    else:
        mlflow_client.set_registered_model_alias(name, registry.CHALLENGER, version)
    registry.record(
        spec,
        {"action": "promote" if decision.promoted else "reject", "version": version, "previous": current,
         "by": actor, "reason": decision.reason},
        s,
    )
    log.info("%s v%s %s: %s", spec.name, version, "promoted" if decision.promoted else "rejected", decision.reason)
    return decision


def gate_version(
    spec: "ModelSpec", version: str, *, actor: str | None = None, settings: Settings | None = None
) -> PromotionDecision:
    """Run the gate for a registered version on its own logged holdout and metrics."""
    s = settings or get_settings()
    mv = registry.client(s).get_model_version(spec.registered_model_name, version)
    run = registry.client(s).get_run(mv.run_id)
    holdout = registry.download_frame(mv.run_id, registry.HOLDOUT_ARTIFACT, s)
    metrics = registry.holdout_metrics(run.data.metrics)
    return gate(spec, version, holdout, metrics, actor=actor or registry.current_actor(), settings=s)


def rollback(
    spec: "ModelSpec",
    to_version: str | None = None,
    *,
    actor: str | None = None,
    reason: str = "manual rollback",
    settings: Settings | None = None,
) -> str:
    """Re-point ``@champion`` to ``to_version``, or to the champion before the current one."""
    s = settings or get_settings()
    mlflow_client = registry.client(s)
    name = spec.registered_model_name
    current = registry.champion_version(spec, s, mlflow_client=mlflow_client)
    if to_version is None:
        promoted = [e for e in registry.history(spec, s) if e["action"] in ("promote", "rollback")]
        previous = [e.get("previous") for e in reversed(promoted) if e["version"] == current]
        to_version = previous[0] if previous and previous[0] else None
        if to_version is None:
            raise PromotionError(f"{name}: no previous champion to roll back to from v{current}")
    mlflow_client.get_model_version(name, str(to_version))  # raises if the version does not exist
    mlflow_client.set_registered_model_alias(name, registry.CHAMPION, str(to_version))
    registry.record(
        spec,
        {"action": "rollback", "version": str(to_version), "previous": current,
         "by": actor or registry.current_actor(), "reason": reason},
        s,
    )
    return str(to_version)
