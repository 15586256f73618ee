"""Running Evidently on one window: data drift per model input and prediction drift.

:func:`run_drift` compares a current frame (model inputs and the champion's prediction) with
a :class:`~airloop.monitoring.reference.Reference`: Evidently's ``DataDriftPreset`` over the
inputs, ``ValueDrift`` over the prediction. A frame larger than the sample size is sampled
(seeded); the result then gives a per-column bound on the sampling error of the score and
which columns are within it of their threshold. The numbers are judged by
:meth:`DriftRun.verdict` (:func:`airloop.decisions.drift_verdict`). No I/O.

Evidently and pandas are imported inside the functions.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airloop.decisions import DriftThresholds, DriftVerdict, drift_verdict
from airloop.monitoring.reference import Reference
from airloop.monitoring.results import PREDICTION
from airloop.monitoring.sampling import is_numeric, sample_rows, sampling_error

if TYPE_CHECKING:
    import pandas as pd

    from airloop.spec import DriftSpec, ModelSpec

__all__ = ["DriftRun", "run_drift"]

log = logging.getLogger(__name__)


@dataclass
class DriftRun:
    """Evidently's answers for one current frame; :func:`run_drift` makes it, :meth:`verdict` judges it."""

    drift_spec: DriftSpec  # the thresholds of the verdict
    rows: int
    rows_checked: int
    sampled: bool
    seed: int | None
    drifted_share: float | None  # drifted_columns / features_compared
    features_compared: int  # the inputs compared, and those empty in the window
    drifted_columns: list[str]
    feature_scores: dict[str, float]
    feature_methods: dict[str, str]
    feature_thresholds: dict[str, float]
    empty_columns: list[str]
    prediction_drift: float | None
    prediction_drifted: bool | None
    prediction_method: str | None
    prediction_threshold: float | None
    sampling_error: dict[str, float | None]
    borderline: list[str]  # columns (and the prediction) whose score is within the sampling error
    snapshots: dict[str, Any]  # "data_drift", "prediction_drift": Evidently snapshots
    seconds: float
    compared_columns: list[str] | None = None  # the inputs compared, empty ones included

    def verdict(
        self,
        quality: dict[str, Any] | None = None,
        *,
        window_start: dt.datetime | None = None,
        window_end: dt.datetime | None = None,
    ) -> DriftVerdict:
        """The drift verdict on these numbers and the quality numbers (see :func:`~airloop.monitoring.model_quality.quality`)."""
        return drift_verdict(
            self.drift_spec,
            rows=self.rows,
            window_start=window_start,
            window_end=window_end,
            drifted_share=self.drifted_share,
            drifted_columns=self.drifted_columns,
            features=self.features_compared,
            prediction_drift=self.prediction_drift,
            prediction_drifted=self.prediction_drifted,
            prediction_method=self.prediction_method,
            prediction_threshold=self.prediction_threshold,
            quality=quality,
            rows_checked=self.rows_checked,
            borderline=[c for c in self.borderline if c != PREDICTION],
            prediction_borderline=PREDICTION in self.borderline,
            compared=self.compared_columns,
        )

    @property
    def dataset_drift(self) -> bool:
        """Whether the drifted share of the inputs alone makes this drift."""
        return self.verdict().dataset_drift


def run_drift(
    spec: ModelSpec,
    current: pd.DataFrame,
    reference: Reference,
    *,
    sample_size: int | None = -1,
    seed: int = 0,
    population: int | None = None,
) -> DriftRun:
    """Evidently data drift (features) and prediction drift for ``current`` against ``reference``.

    ``current`` holds the reference's feature columns and a ``prediction`` column.
    ``sample_size``: -1 means ``spec.drift.sample_size``; None checks every row. A larger
    frame is replaced by a seeded random sample of that size (without replacement).
    ``population``: the window's row count when ``current`` is already a uniform sample of it.
    """
    started = time.perf_counter()
    policy = spec.drift
    _check_named_inputs(spec, reference)
    size = policy.sample_size if sample_size == -1 else sample_size
    rows = max(population or 0, len(current))
    sample = sample_rows(current, size, seed)
    sampled = len(sample) < rows
    columns, empty = _compared_columns(sample, reference)

    snapshots: dict[str, Any] = {}
    data_snapshot, (scores, methods, thresholds, drifted) = _data_drift(policy, sample, reference, columns)
    if data_snapshot is not None:
        snapshots["data_drift"] = data_snapshot
    drifted_columns = [c for c in columns if drifted.get(c)] + empty  # a feature gone from serving drifted
    counted = len(columns) + len(empty)

    pred_snapshot, (pred_score, pred_drifted, pred_method, pred_threshold) = _prediction_drift(policy, sample, reference)
    if pred_snapshot is not None:
        snapshots["prediction_drift"] = pred_snapshot

    bounded = {c: (reference.training[c], scores.get(c), methods.get(c), thresholds.get(c)) for c in columns}
    if pred_score is not None:
        bounded[PREDICTION] = (reference.predictions, pred_score, pred_method, pred_threshold)
    errors, borderline = _sampling_bounds(sample, bounded, rows) if sampled else ({}, [])
    return DriftRun(
        drift_spec=policy,
        rows=rows,
        rows_checked=len(sample),
        sampled=sampled,
        seed=seed if sampled else None,
        drifted_share=len(drifted_columns) / counted if counted else None,
        features_compared=counted,
        drifted_columns=drifted_columns,
        feature_scores=scores,
        feature_methods=methods,
        feature_thresholds=thresholds,
        empty_columns=empty,
        prediction_drift=pred_score,
        prediction_drifted=pred_drifted,
        prediction_method=pred_method,
        prediction_threshold=pred_threshold,
        sampling_error=errors,
        borderline=borderline,
        snapshots=snapshots,
        seconds=time.perf_counter() - started,
        compared_columns=columns + empty,
    )


def _check_named_inputs(spec: ModelSpec, reference: Reference) -> None:
    """A spec's drift.exclude / drift.columns may only name the model's inputs."""
    from airloop.spec import SpecError

    for field, allowed in (("exclude", set(reference.features)), ("columns", {*reference.features, PREDICTION})):
        unknown = sorted(set(getattr(spec.drift, field)) - allowed)
        if unknown:
            raise SpecError(
                f"{spec.name}: drift.{field} names {', '.join(unknown)}, not inputs of the model "
                f"(inputs: {', '.join(reference.features)})"
            )


def _compared_columns(sample: pd.DataFrame, reference: Reference) -> tuple[list[str], list[str]]:
    """The inputs to compare (with values in the window and in the reference), and those with no value in the window."""
    features = list(reference.features)
    present = {c: int(sample[c].notna().sum()) if c in sample else 0 for c in features}
    empty = [c for c in features if present[c] == 0]
    in_reference = [c for c in features if c in reference.training and reference.training[c].notna().any()]
    return [c for c in in_reference if c not in empty], empty


def _data_drift(policy: DriftSpec, sample: pd.DataFrame, reference: Reference, columns: list[str]):
    """Evidently's ``DataDriftPreset`` over ``columns``: (snapshot or None, per-column results)."""
    if not columns:
        return None, ({}, {}, {}, {})
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    # Strings (a model's categorical inputs) are compared as categories: share of each value.
    numerical = [c for c in columns if is_numeric(sample[c]) and is_numeric(reference.training[c])]
    categorical = [c for c in columns if c not in numerical]
    definition = DataDefinition(numerical_columns=numerical, categorical_columns=categorical)
    report = Report(
        [
            DataDriftPreset(
                columns=columns,
                # the verdict's own threshold, so Evidently's dataset drift test agrees with it
                drift_share=DriftThresholds.of(policy).drift_share,
                **_drift_methods(policy, numerical, categorical),
                **_per_column(policy, columns),
            )
        ],
        include_tests=True,
    )
    snapshot = report.run(
        Dataset.from_pandas(sample[columns].reset_index(drop=True), data_definition=definition),
        Dataset.from_pandas(reference.training[columns].reset_index(drop=True), data_definition=definition),
    )
    return snapshot, _value_drift_results(snapshot.dict())


def _drift_methods(policy: DriftSpec, numerical: list[str], categorical: list[str]) -> dict[str, Any]:
    """``DataDriftPreset``'s method and threshold arguments for the spec's ``stattest``.

    A method made for one kind of column only (``wasserstein``, ``ks``: numbers; ``chisquare``:
    categories) would fail on the other kind, so when both kinds are compared it is given for
    its own kind and the other keeps Evidently's default test and threshold. Otherwise (no
    method, a method for both kinds, or one kind of column only) it applies to every column.
    """
    method, threshold = policy.stattest, policy.stattest_threshold
    kinds = _stattest_kinds(method) if method is not None else None
    if kinds is None or not ((numerical and "num" not in kinds) or (categorical and "cat" not in kinds)):
        return {"method": method, "threshold": threshold}
    chosen: dict[str, Any] = {}
    if "num" in kinds:
        chosen.update(num_method=method, num_threshold=threshold)
    if "cat" in kinds:
        chosen.update(cat_method=method, cat_threshold=threshold)
    return chosen


def _per_column(policy: DriftSpec, columns: list[str]) -> dict[str, Any]:
    """``DataDriftPreset``'s per-column methods and thresholds from the spec's ``drift.columns``."""
    tuned = {c: policy.columns[c] for c in columns if c in policy.columns}  # the prediction's is its own
    methods = {c: t.stattest for c, t in tuned.items() if t.stattest is not None}
    thresholds = {c: t.threshold for c, t in tuned.items() if t.threshold is not None}
    return {"per_column_method": methods or None, "per_column_threshold": thresholds or None}


def _stattest_kinds(method: str) -> set[str] | None:
    """The column kinds (``num``, ``cat``) Evidently's registered test ``method`` takes; None if unknown."""
    from evidently.legacy.calculations.stattests.registry import get_registered_stattest
    from evidently.legacy.core import ColumnType

    kinds = set()
    for kind in (ColumnType.Numerical, ColumnType.Categorical):
        try:
            get_registered_stattest(method, kind)
        except Exception:  # noqa: BLE001 - Evidently raises its own errors for "not for this kind"
            continue
        kinds.add(kind.value)
    return kinds or None  # an unknown name: let Evidently report it as it does today


def _prediction_drift(policy: DriftSpec, sample: pd.DataFrame, reference: Reference):
    """Evidently's ``ValueDrift`` on the prediction: (snapshot or None, (score, drifted, method, threshold))."""
    predictions = sample[PREDICTION].dropna() if PREDICTION in sample else None
    if predictions is None or not len(predictions) or not len(reference.predictions.dropna()):
        return None, (None, None, None, None)
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    definition = DataDefinition(numerical_columns=[PREDICTION])
    own = policy.columns.get(PREDICTION)  # drift.columns.prediction: the prediction's own test
    method = own.stattest if own and own.stattest else policy.stattest
    threshold = own.threshold if own and own.threshold is not None else policy.stattest_threshold
    report = Report(
        [ValueDrift(column=PREDICTION, method=method, threshold=threshold)],
        include_tests=True,
    )
    snapshot = report.run(
        Dataset.from_pandas(predictions.to_frame(PREDICTION).reset_index(drop=True), data_definition=definition),
        Dataset.from_pandas(reference.predictions.to_frame(PREDICTION).reset_index(drop=True), data_definition=definition),
    )
    scores, methods, thresholds, drifted = _value_drift_results(snapshot.dict())
    return snapshot, (scores.get(PREDICTION), drifted.get(PREDICTION), methods.get(PREDICTION), thresholds.get(PREDICTION))


def _sampling_bounds(sample: pd.DataFrame, bounded: dict[str, tuple], rows: int) -> tuple[dict, list[str]]:
    """Per column (reference, score, method, threshold): the sampling error bound, and the
    columns whose score is within three bounds of the threshold (or has no bound)."""
    errors: dict[str, float | None] = {}
    borderline: list[str] = []
    for column, (ref, score, method, threshold) in bounded.items():
        error = errors[column] = sampling_error(sample[column], ref.dropna(), method, population=rows)
        if error is None or score is None or threshold is None or abs(score - threshold) <= 3 * error:
            borderline.append(column)
    return errors, borderline


def _value_drift_results(result: dict) -> tuple[dict, dict, dict, dict]:
    """Per column: score, method, threshold and Evidently's own drift verdict (its test)."""
    scores, methods, thresholds, drifted = {}, {}, {}, {}
    for metric in result.get("metrics", []):
        config = metric.get("config", {})
        if not str(config.get("type", "")).endswith(":ValueDrift"):
            continue
        column = config["column"]
        scores[column] = float(metric["value"])
        methods[column] = config.get("method")
        thresholds[column] = config.get("threshold")
    for test in result.get("tests", []):
        params = test.get("metric_config", {}).get("params", {})
        if str(params.get("type", "")).endswith(":ValueDrift"):
            drifted[params["column"]] = test.get("status") == "FAIL"
    for column in scores.keys() - drifted.keys():  # no test result: say so, do not guess
        log.warning("Evidently gave no drift verdict for %s; counting it as not drifted", column)
        drifted[column] = False
    return scores, methods, thresholds, drifted
