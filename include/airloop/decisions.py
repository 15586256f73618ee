"""Pure decisions: metric direction, the promotion gate, the drift verdict and the retrain policy.

No MLflow, Evidently or Airflow here: numbers and spec sections in, a decision and its reason
out, so each rule is tested in milliseconds from hand-built inputs. The promotion thresholds
(``promotion.floors``, ``promotion.min_improvement``), the drift verdict thresholds
(``drift.drift_share``, ``min_rows``, ``quality_drop``, ``min_labels``: :class:`DriftThresholds`)
and the retrain policy's (``drift.consecutive_windows``, ``cooldown_hours``: :func:`decide`) are
read here and nowhere else.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Protocol, Sequence

from airloop.fileio import as_utc

if TYPE_CHECKING:
    from airloop.spec import DriftSpec, ModelSpec, PromotionSpec

__all__ = [
    "DRIFT",
    "GREATER_IS_BETTER",
    "INSUFFICIENT_DATA",
    "LOWER_IS_BETTER",
    "OK",
    "STATUSES",
    "Decision",
    "DriftThresholds",
    "DriftVerdict",
    "History",
    "PolicyCheck",
    "PromotionDecision",
    "beats",
    "decide",
    "decide_promotion",
    "drift_verdict",
    "floor_failures",
    "greater_is_better",
    "known_direction",
    "metric_drop",
]


# Metrics Airloop computes (train.evaluate, monitoring.quality) and which way is better.
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


# --- the drift verdict ------------------------------------------------------------------------

INSUFFICIENT_DATA = "insufficient_data"
OK = "ok"
DRIFT = "drift"
STATUSES = (INSUFFICIENT_DATA, OK, DRIFT)


def metric_drop(promotion: "PromotionSpec", metric: str, value: float | None, baseline: float | None) -> float | None:
    """How much worse ``value`` is than ``baseline`` in ``metric``'s direction (negative: better)."""
    if value is None or baseline is None:
        return None
    return (baseline - value) if greater_is_better(metric, promotion) else (value - baseline)


@dataclass(frozen=True)
class DriftThresholds:
    """The drift verdict's thresholds; :meth:`of` is the one place they are read from a spec."""

    drift_share: float  # a drifted share of the model's inputs at or above this is data drift
    min_rows: int  # fewer rows in the window: no verdict
    quality_drop: float  # a drop of the promotion metric beyond this is a drift signal ...
    min_labels: int  # ... once at least this many predictions have their label

    @classmethod
    def of(cls, drift: "DriftSpec") -> "DriftThresholds":
        return cls(drift.drift_share, drift.min_rows, drift.quality_drop, drift.min_labels)


@dataclass(frozen=True)
class DriftVerdict:
    """The status of one window (insufficient_data | ok | drift), the signals behind it, a message."""

    status: str
    signals: tuple[str, ...]
    message: str
    thresholds: DriftThresholds
    dataset_drift: bool = False  # the drifted share reached drift_share
    quality_degraded: bool = False  # the quality drop exceeded quality_drop with enough labels
    enough_labels: bool = False
    stable: bool | None = None  # sampled: could the sampling error flip it? (None: not sampled)


def drift_verdict(
    drift: "DriftSpec",
    *,
    rows: int,
    window_start: dt.datetime | None = None,
    window_end: dt.datetime | None = None,
    drifted_share: float | None = None,
    drifted_columns: Sequence[str] = (),
    features: int = 0,
    prediction_drift: float | None = None,
    prediction_drifted: bool | None = None,
    prediction_method: str | None = None,
    prediction_threshold: float | None = None,
    quality: Mapping[str, Any] | None = None,
    rows_checked: int | None = None,
    borderline: Sequence[str] = (),
    prediction_borderline: bool = False,
    compared: Sequence[str] | None = None,
) -> DriftVerdict:
    """The drift verdict of one window, from the measured numbers. Pure.

    - Fewer than ``min_rows`` rows: ``insufficient_data`` (nothing else is looked at).
    - ``drift`` if any signal fires: the drifted share (``drifted_columns`` of ``features``
      compared inputs) is at least ``drift_share``; the prediction drift flag; or the promotion
      metric on labelled predictions dropped by more than ``quality_drop`` below the champion's
      holdout value with at least ``min_labels`` labels. Otherwise ``ok``.

    ``quality``: ``labelled_rows``, ``metric``, ``value``, ``champion_value`` and ``drop``
    (see :func:`metric_drop`), or None when no label came back. ``rows_checked`` below ``rows``
    means the scores come from a sample: ``borderline`` names the inputs whose score is within
    the sampling error of its threshold (``prediction_borderline`` the prediction), and the
    verdict is stable if flipping all of them could not change it. ``window_start`` and
    ``window_end`` only go into the message.

    ``compared``: the names of the compared inputs; with it, the inputs in ``drift.exclude``
    do not count in the drifted share. With ``drift.require``, data drift is a signal only when
    the required signals (prediction drift, a quality drop) fire too.
    """
    t = DriftThresholds.of(drift)
    if rows < t.min_rows:
        where = ""
        if window_start is not None and window_end is not None:
            where = f" in {window_start:%Y-%m-%d %H:%M} .. {window_end:%Y-%m-%d %H:%M} UTC"
        return DriftVerdict(
            INSUFFICIENT_DATA,
            (),
            f"insufficient data: {rows} logged predictions{where}, fewer than min_rows={t.min_rows}; "
            "no drift check was run and no alarm is raised",
            t,
        )
    if compared is not None and drift.exclude:
        counted = [c for c in compared if c not in drift.exclude]
        drifted_columns = [c for c in drifted_columns if c in counted]
        borderline = [c for c in borderline if c in counted]
        features = len(counted)
        drifted_share = len(drifted_columns) / features if features else None
    dataset_drift = drifted_share is not None and drifted_share >= t.drift_share
    q = quality or {}
    enough = bool(quality) and q["labelled_rows"] >= t.min_labels
    degraded = bool(enough and q.get("drop") is not None and q["drop"] > t.quality_drop)
    fired = {"prediction_drift": bool(prediction_drifted), "quality_drop": degraded}
    missing = [name for name in drift.require if not fired[name]]

    signals = []
    if dataset_drift and missing:
        unconfirmed = (f"data drift (drifted share {drifted_share:.2f}: {', '.join(drifted_columns)}) "
                       f"without the required {' and '.join(missing)}")
        dataset_drift = False
    else:
        unconfirmed = ""
    if dataset_drift:
        signals.append(
            f"drifted share {drifted_share:.2f} >= {t.drift_share} "
            f"({len(drifted_columns)} of {features} features: {', '.join(drifted_columns)})"
        )
    if prediction_drifted:
        signals.append(f"prediction drift {prediction_drift:.3f} ({prediction_method}, threshold {prediction_threshold})")
    if degraded:
        signals.append(
            f"{q['metric']} {q['value']:.3f} on {q['labelled_rows']} labelled predictions is {q['drop']:.3f} "
            f"worse than the champion's holdout {q['champion_value']:.3f} (more than {t.quality_drop})"
        )
    if signals:
        message = "drift: " + "; ".join(signals)
    else:
        parts = [
            f"drifted share {_fmt(drifted_share, 2)} < {t.drift_share}",
            f"prediction drift {_fmt(prediction_drift)} under its threshold {prediction_threshold}",
        ]
        if q.get("value") is not None:
            parts.append(
                f"{q['metric']} {q['value']:.3f} on {q['labelled_rows']} labelled rows "
                f"(champion holdout {_fmt(q.get('champion_value'))})"
            )
        message = "no drift: " + "; ".join([unconfirmed, *parts] if unconfirmed else parts)

    stable = None
    if rows_checked is not None and rows_checked < rows:
        # Data drift without its required companions cannot fire, whichever way inputs flip.
        data_stable = bool(missing) or _stable(drifted_columns, borderline, features, t.drift_share)
        stable = data_stable and not prediction_borderline
        named = [*borderline, *(["prediction"] if prediction_borderline else [])]
        message += (
            f" [checked a seeded sample of {rows_checked} of {rows} rows; "
            + ("the verdict is stable under the sampling error]" if stable
               else f"borderline under the sampling error: {', '.join(named)}]")
        )
    return DriftVerdict(DRIFT if signals else OK, tuple(signals), message, t, dataset_drift, degraded, enough, stable)


def _stable(drifted: Sequence[str], borderline: Sequence[str], features: int, drift_share: float) -> bool:
    """Whether the data drift verdict holds whichever way each borderline input flips."""
    if not features:
        return True
    flip_down = sum(1 for c in borderline if c in drifted)
    flip_up = sum(1 for c in borderline if c not in drifted)
    low = (len(drifted) - flip_down) / features >= drift_share
    high = (len(drifted) + flip_up) / features >= drift_share
    return low == high


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


# --- the retrain policy -------------------------------------------------------------------------


class PolicyCheck(Protocol):
    """What the retrain policy reads of a drift check (``monitoring.DriftCheck`` has it all)."""

    report_id: str
    status: str  # insufficient_data | ok | drift
    window_start: dt.datetime
    window_end: dt.datetime
    champion_version: str | None
    signals: list[str]
    message: str


@dataclass
class Decision:
    """Whether a check triggers a retrain, and why (``reason`` is meant for people)."""

    trigger: bool
    reason: str
    model: str
    report_id: str
    status: str
    streak: int  # consecutive drift windows including this check
    required: int  # spec.drift.consecutive_windows
    training_active: bool
    decided_at: dt.datetime
    champion_version: str | None = None
    cooldown_until: dt.datetime | None = None
    last_trigger_at: dt.datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key in ("decided_at", "cooldown_until", "last_trigger_at"):
            out[key] = out[key].isoformat() if out[key] else None
        return out


@dataclass
class History:
    """The durable policy state of one model: recorded checks and retrain triggers, oldest first.

    :func:`decide` reads ``report_id``, ``status``, ``window_start``, ``window_end`` and
    ``champion_version`` of each check, and ``at``, ``report_id`` and ``window_end`` of each
    trigger (timestamps as ISO strings or datetimes). ``path``: where it is kept, if anywhere.
    """

    model: str
    checks: list[dict[str, Any]]
    triggers: list[dict[str, Any]]
    path: Path | None = None

    def last_trigger(self) -> dict[str, Any] | None:
        return max(self.triggers, key=lambda t: as_utc(t["at"])) if self.triggers else None


def decide(
    spec: "ModelSpec",
    check: PolicyCheck,
    history: History,
    *,
    now: dt.datetime | str | None = None,
    training_active: bool,
) -> Decision:
    """Should this check trigger a retrain? Pure: reads ``history``, changes nothing.

    Rules, from ``spec.drift``:

    - A check with status ``drift`` is a drift signal (see :func:`drift_verdict`).
    - Hysteresis: drift must hold in ``consecutive_windows`` consecutive windows. Walking back
      from this check: an ``ok`` check breaks the streak; an ``insufficient_data`` check is
      skipped (it neither counts nor breaks: a quiet night says nothing either way); a drift
      check counts if its window ends at or before the start of the last counted window (a
      re-check of overlapping data, e.g. a retry, is skipped, it is not a new window); checks
      against another champion version, or already used by the last trigger, end the streak.
    - No trigger while a training run of the model is queued or running (``training_active``).
    - Cooldown: no trigger within ``cooldown_hours`` of the last trigger.

    ``now`` defaults to the check's window end (the logical time of a scheduled run).
    """
    now = as_utc(now) if now is not None else as_utc(check.window_end)
    required = spec.drift.consecutive_windows
    last = history.last_trigger()
    last_at = as_utc(last["at"]) if last else None
    cooldown = dt.timedelta(hours=spec.drift.cooldown_hours)
    cooldown_until = last_at + cooldown if last_at is not None and cooldown else None

    def decision(trigger: bool, reason: str, streak: int) -> Decision:
        return Decision(
            trigger=trigger,
            reason=reason,
            model=spec.name,
            report_id=check.report_id,
            status=check.status,
            streak=streak,
            required=required,
            training_active=training_active,
            decided_at=now,
            champion_version=check.champion_version,
            cooldown_until=cooldown_until,
            last_trigger_at=last_at,
        )

    streak = _streak(check, history, last)
    if check.status == INSUFFICIENT_DATA:
        return decision(False, f"{check.message}; the streak stays at {streak} of {required} consecutive windows", streak)
    if check.status == OK:
        return decision(False, f"{check.message}; no retrain", 0)
    signals = "; ".join(check.signals) or check.message
    streak += 1
    windows = f"{streak} consecutive window{'s' if streak != 1 else ''}"
    if streak < required:
        return decision(False, f"{signals}: drift in {windows} of the {required} required; not triggering yet", streak)
    if training_active:
        return decision(
            False,
            f"training already queued or running for {spec.name}: no new retrain trigger ({signals}, drift in {windows})",
            streak,
        )
    if last_at is not None and abs(now - last_at) < cooldown:
        return decision(
            False,
            f"cooldown until {cooldown_until:%Y-%m-%d %H:%M} UTC: the last retrain was triggered at "
            f"{last_at:%Y-%m-%d %H:%M} UTC by {last['report_id']} ({signals}, drift in {windows})",
            streak,
        )
    return decision(True, f"{signals}; drift in {windows} (consecutive_windows={required}): retrain", streak)


def _streak(check: PolicyCheck, history: History, last_trigger: dict | None) -> int:
    """Earlier consecutive drift windows before ``check`` (see :func:`decide`)."""
    consumed = as_utc(last_trigger["window_end"]) if last_trigger else None
    end_of_check = as_utc(check.window_end)
    boundary = as_utc(check.window_start)
    earlier = [c for c in history.checks if c["report_id"] != check.report_id and as_utc(c["window_end"]) <= end_of_check]
    streak = 0
    for c in sorted(earlier, key=lambda c: as_utc(c["window_end"]), reverse=True):
        end = as_utc(c["window_end"])
        if c["status"] == INSUFFICIENT_DATA:
            continue
        if c["status"] == OK:
            break
        if c.get("champion_version") != check.champion_version or (consumed is not None and end <= consumed):
            break
        if end > boundary:  # overlaps a window already counted: not a new window
            continue
        streak += 1
        boundary = as_utc(c["window_start"])
    return streak
