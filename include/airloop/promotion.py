"""Promotion stage: the champion/challenger gate and rollback, applied to the registry.

The decision itself is pure (:func:`airloop.decisions.decide_promotion`); this module gathers
its inputs (the challenger's logged holdout metrics, the champion's score on that same holdout)
and applies it: aliases, version tags and the history entry. A registry fault raises and
promotes nothing. :func:`promote` is the same gate for a named version someone asks for (the
promote DAG), which they may explicitly override; :func:`rollback` re-points ``@champion``
without a gate.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from airloop import registry
from airloop.decisions import PromotionDecision, decide_promotion, floor_failures
from airloop.errors import PromotionError, PromotionRefused
from airloop.settings import Settings, get_settings

if TYPE_CHECKING:
    import pandas as pd

    from airloop.spec import ModelSpec

__all__ = ["PromotionDecision", "gate", "gate_version", "promote", "rollback"]

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


def _decide(
    spec: "ModelSpec", holdout: "pd.DataFrame", metrics: dict[str, float], settings: Settings, mlflow_client
) -> tuple[PromotionDecision, str | None]:
    """The gate's decision for a version with these holdout ``metrics``, and the current champion."""
    current = registry.champion_version(spec, settings, mlflow_client=mlflow_client)
    champion_score = None
    if current is not None and not floor_failures(spec.promotion, metrics):
        champion_score = _champion_score(spec, current, holdout, settings)
    decision = decide_promotion(spec.promotion, metrics, champion_version=current, champion_score=champion_score)
    return decision, current


def _crown(spec: "ModelSpec", version: str, current: str | None, verdict: str, reason: str, mlflow_client) -> None:
    """Tag ``version`` with the gate's verdict and reason, and point ``@champion`` at it."""
    name = spec.registered_model_name
    mlflow_client.set_model_version_tag(name, version, "airloop.gate", verdict)
    mlflow_client.set_model_version_tag(name, version, "airloop.gate_reason", reason)
    mlflow_client.set_registered_model_alias(name, registry.CHAMPION, version)
    if current:
        mlflow_client.set_model_version_tag(name, current, "airloop.replaced_by", version)


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
    decision, current = _decide(spec, holdout, metrics, s, mlflow_client)
    if decision.promoted:
        _crown(spec, version, current, "promoted", decision.reason, mlflow_client)
    else:
        mlflow_client.set_model_version_tag(name, version, "airloop.gate", "rejected")
        mlflow_client.set_model_version_tag(name, version, "airloop.gate_reason", decision.reason)
        mlflow_client.set_registered_model_alias(name, registry.CHALLENGER, version)
    registry.record(
        spec,
        {"action": "promote" if decision.promoted else "reject", "version": version, "previous": current,
         "by": actor, "reason": decision.reason},
        s,
    )
    log.info("%s v%s %s: %s", spec.name, version, "promoted" if decision.promoted else "rejected", decision.reason)
    return decision


def _logged_holdout(spec: "ModelSpec", version: str, s: Settings) -> tuple["pd.DataFrame", dict[str, float]]:
    """A registered version's holdout set and holdout metrics, as its training run logged them."""
    mlflow_client = registry.client(s)
    mv = mlflow_client.get_model_version(spec.registered_model_name, version)
    run = mlflow_client.get_run(mv.run_id)
    return registry.download_frame(mv.run_id, registry.HOLDOUT_ARTIFACT, s), registry.holdout_metrics(run.data.metrics)


def gate_version(
    spec: "ModelSpec", version: str, *, actor: str | None = None, settings: Settings | None = None
) -> PromotionDecision:
    """Run the gate for a registered version on its own logged holdout and metrics."""
    s = settings or get_settings()
    holdout, metrics = _logged_holdout(spec, version, s)
    return gate(spec, version, holdout, metrics, actor=actor or registry.current_actor(), settings=s)


def promote(
    spec: "ModelSpec",
    version: str,
    *,
    actor: str,
    user: str | None = None,
    reason: str = "manual promotion",
    override_gate: bool = False,
    settings: Settings | None = None,
) -> dict:
    """Make a named version ``@champion`` on request (the promote DAG), under the gate's rules.

    The gate judges the version on its own logged holdout, as after training: it must pass the
    floors and beat ``@champion``. If it does not, nothing moves, the refusal is recorded in the
    history and :class:`PromotionRefused` says why, unless ``override_gate``: then the version is
    promoted anyway, tagged ``airloop.gate=overridden``, and the history names the ``user``, the
    ``reason`` and the gate's verdict that was overridden. ``actor`` is the Airflow run id.

    Returns ``{"version", "previous", "gate", "gate_reason", "overridden"}``.
    """
    s = settings or get_settings()
    mlflow_client = registry.client(s)
    name = spec.registered_model_name
    version = str(version)
    try:
        mlflow_client.get_model_version(name, version)
    except Exception as exc:
        if registry.is_not_found(exc):
            raise PromotionError(f"{name} has no version {version!r}") from None
        raise
    current = registry.champion_version(spec, s, mlflow_client=mlflow_client)
    if current == version:
        done = [e for e in registry.history(spec, s) if e.get("by") == actor and e["action"] == "promote"]
        if done:  # this run promoted it already (a retry after a lost success report)
            return {"version": version, "previous": done[-1].get("previous"), "gate": "already done",
                    "gate_reason": done[-1].get("gate_reason"), "overridden": bool(done[-1].get("overridden"))}
        raise PromotionError(f"{name} v{version} is already @champion")
    holdout, metrics = _logged_holdout(spec, version, s)
    decision, current = _decide(spec, holdout, metrics, s, mlflow_client)
    event = {"version": version, "previous": current, "by": actor, "user": user, "stage": "promote",
             "gate_reason": decision.reason}
    if not decision.promoted and not override_gate:
        registry.record(spec, {"action": "reject", **event, "reason": f"{reason} (refused: {decision.reason})"}, s)
        raise PromotionRefused(
            f"{name} v{version} not promoted: {decision.reason}. Set override_gate to promote it anyway."
        )
    overridden = not decision.promoted
    verdict = "overridden" if overridden else "promoted"
    gate_reason = f"gate overridden by {user or actor}: {reason} (gate: {decision.reason})" if overridden \
        else decision.reason
    _crown(spec, version, current, verdict, gate_reason, mlflow_client)
    note = f"gate overridden: {decision.reason}" if overridden else f"gate passed: {decision.reason}"
    registry.record(spec, {"action": "promote", **event, "overridden": overridden, "reason": f"{reason} ({note})"}, s)
    log.info("%s v%s promoted on request by %s (%s)", spec.name, version, user or actor, note)
    return {"version": version, "previous": current, "gate": verdict, "gate_reason": decision.reason,
            "overridden": overridden}


def rollback(
    spec: "ModelSpec",
    to_version: str | None = None,
    *,
    actor: str | None = None,
    user: str | None = None,
    reason: str = "manual rollback",
    settings: Settings | None = None,
) -> str:
    """Re-point ``@champion`` to ``to_version``, or to the champion before the current one.

    ``user``: who asked (the Airflow run's triggering user), recorded beside ``actor``.
    """
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
         "by": actor or registry.current_actor(), **({"user": user} if user else {}), "reason": reason},
        s,
    )
    return str(to_version)
