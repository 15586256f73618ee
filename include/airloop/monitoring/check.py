"""One drift check of a model's prediction log: :func:`check_drift`, and :func:`assess` for a window in memory.

:func:`check_drift` = count the window (one COUNT; below the spec's minimum it says
``insufficient_data`` and runs nothing) + load the champion's reference + read the window
(sampled in the store when large) + :func:`assess` (Evidently, quality, the verdict) + the
report files + the MLflow run. It measures and records; the retrain policy is
:func:`~airloop.monitoring.state.decide_and_record`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airloop import registry
from airloop.decisions import INSUFFICIENT_DATA, DriftVerdict, drift_verdict
from airloop.fileio import as_utc
from airloop.monitoring.evidently_run import DriftRun, run_drift
from airloop.monitoring.model_quality import quality
from airloop.monitoring.reference import Reference, load_reference
from airloop.monitoring.reports import new_report_id, write_json, write_reports
from airloop.monitoring.results import LABEL, DriftCheck
from airloop.monitoring.sampling import stable_seed
from airloop.monitoring.timeseries import log_check
from airloop.monitoring.window import count_predictions, read_window
from airloop.settings import Settings, get_settings

if TYPE_CHECKING:
    import pandas as pd

    from airloop.spec import ModelSpec

__all__ = ["assess", "check_drift"]

log = logging.getLogger(__name__)


def check_drift(
    spec: ModelSpec,
    *,
    now: dt.datetime | str | None = None,
    window: dt.timedelta | None = None,
    settings: Settings | None = None,
    log_to_mlflow: bool = True,
) -> DriftCheck:
    """Check the window ``[now - spec.drift.window_hours, now)`` of the model's prediction log.

    ``now``: the window end (default: the current time; an ISO string is fine). ``window``: a
    different window length (e.g. for a manual run); the retrain policy treats any window by
    its start and end.

    Writes the HTML and JSON reports, logs the MLflow run (unless ``log_to_mlflow=False``) and
    returns the :class:`~airloop.monitoring.results.DriftCheck`. It does not decide anything:
    see :func:`~airloop.monitoring.state.decide_and_record`. Raises
    :class:`~airloop.monitoring.results.MonitorError` if enough predictions are logged but
    there is no champion.
    """
    s = settings or get_settings()
    end = as_utc(now) if now is not None else dt.datetime.now(dt.UTC).replace(microsecond=0)
    start = end - (window if window is not None else dt.timedelta(hours=spec.drift.window_hours))
    if start >= end:
        raise ValueError(f"the drift window must be positive, got {window}")
    report_id = new_report_id(spec, end)
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    rows = count_predictions(spec, start, end, s)
    seconds["count"] = time.perf_counter() - clock
    verdict = drift_verdict(spec.drift, rows=rows, window_start=start, window_end=end)
    if verdict.status == INSUFFICIENT_DATA:
        check = _unchecked(spec, verdict, report_id, start, end, rows, registry.champion_version(spec, s))
        check.seconds = seconds
        return _finish(spec, check, {}, s, log_to_mlflow)

    clock = time.perf_counter()
    reference = load_reference(spec, s)
    seconds["reference"] = time.perf_counter() - clock
    clock = time.perf_counter()
    current, rows, labelled, rescored = read_window(
        spec, start, end, reference, s, seed=stable_seed(spec.name, end.isoformat()), total=rows
    )
    seconds["read"] = time.perf_counter() - clock
    clock = time.perf_counter()
    check, snapshots = assess(
        spec, current, reference, window_start=start, window_end=end, report_id=report_id, rescored_rows=rescored,
        rows=rows, labelled=labelled,
    )
    seconds["compute"] = time.perf_counter() - clock
    check.seconds = {**seconds, **check.seconds}
    return _finish(spec, check, snapshots, s, log_to_mlflow)


def assess(
    spec: ModelSpec,
    current: pd.DataFrame,
    reference: Reference,
    *,
    window_start: dt.datetime,
    window_end: dt.datetime,
    report_id: str | None = None,
    rescored_rows: int = 0,
    sample_size: int | None = -1,
    rows: int | None = None,
    labelled: pd.DataFrame | None = None,
) -> tuple[DriftCheck, dict]:
    """The drift check of a window already in memory (see :func:`~airloop.monitoring.window.current_frame`).

    Runs Evidently (:func:`~airloop.monitoring.evidently_run.run_drift`, sampled per
    ``sample_size``) and the quality numbers and returns the check with the verdict's status,
    signals and message (:func:`airloop.decisions.drift_verdict`), and Evidently's snapshots; a
    window too small for a verdict is ``insufficient_data`` and runs nothing, as in
    :func:`check_drift`. Writes nothing. ``check_drift`` = read the log + this + reports +
    MLflow. When ``current`` is already a sample of the window, ``rows`` is the window's size
    and ``labelled`` its labelled rows (``label`` and ``prediction``; by default the labelled
    rows of ``current``).
    """
    window_start, window_end = as_utc(window_start), as_utc(window_end)
    report_id = report_id or new_report_id(spec, window_end)
    window_rows = max(rows or 0, len(current))
    verdict = drift_verdict(spec.drift, rows=window_rows, window_start=window_start, window_end=window_end)
    if verdict.status == INSUFFICIENT_DATA:
        return _unchecked(
            spec, verdict, report_id, window_start, window_end, window_rows, reference.version, reference.run_id
        ), {}
    result = run_drift(
        spec, current, reference, sample_size=sample_size, seed=stable_seed(spec.name, window_end.isoformat()),
        population=rows,
    )
    if labelled is None:
        labelled = current[current[LABEL].notna()] if LABEL in current else current.iloc[:0]
    q = quality(spec, labelled, reference.holdout_metrics) if len(labelled) else None
    verdict = result.verdict(q, window_start=window_start, window_end=window_end)
    if q is not None:  # the record says what the drop was judged against
        q.update(
            min_labels=verdict.thresholds.min_labels,
            allowed_drop=verdict.thresholds.quality_drop,
            enough_labels=verdict.enough_labels,
            degraded=verdict.quality_degraded,
        )
    check = _checked(spec, report_id, window_start, window_end, verdict, result, reference, q, rescored_rows)
    return check, result.snapshots


def _checked(
    spec: ModelSpec,
    report_id: str,
    window_start: dt.datetime,
    window_end: dt.datetime,
    verdict: DriftVerdict,
    result: DriftRun,
    reference: Reference,
    q: dict[str, Any] | None,
    rescored_rows: int,
) -> DriftCheck:
    """The check of a window Evidently compared: the run's numbers under the verdict."""
    unchecked = _unchecked(
        spec, verdict, report_id, window_start, window_end, result.rows, reference.version, reference.run_id
    )
    return dataclasses.replace(
        unchecked,
        signals=list(verdict.signals),
        drifted_share=result.drifted_share,
        drifted_columns=result.drifted_columns,
        feature_scores=result.feature_scores,
        feature_methods=result.feature_methods,
        feature_thresholds=result.feature_thresholds,
        empty_columns=result.empty_columns,
        prediction_drift=result.prediction_drift,
        prediction_drifted=result.prediction_drifted,
        prediction_method=result.prediction_method,
        prediction_threshold=result.prediction_threshold,
        rescored_rows=rescored_rows,
        quality=q,
        rows_checked=result.rows_checked,
        sampled=result.sampled,
        sample_seed=result.seed,
        sampling_error=result.sampling_error,
        borderline=result.borderline,
        decision_stable=verdict.stable,
        reference_rows=reference.training_rows,
        holdout_rows=reference.holdout_rows,
        seconds={"evidently": result.seconds},
    )


def _unchecked(
    spec: ModelSpec,
    verdict: DriftVerdict,
    report_id: str,
    window_start: dt.datetime,
    window_end: dt.datetime,
    rows: int,
    champion_version: str | None,
    champion_run_id: str | None = None,
) -> DriftCheck:
    """The check of a window too small for a verdict: nothing was compared."""
    return DriftCheck(
        model=spec.name,
        report_id=report_id,
        status=verdict.status,
        window_start=window_start,
        window_end=window_end,
        rows=rows,
        message=verdict.message,
        champion_version=champion_version,
        champion_run_id=champion_run_id,
        drift_share_threshold=verdict.thresholds.drift_share,
    )


def _finish(spec, check: DriftCheck, snapshots: dict, settings: Settings, log_to_mlflow: bool) -> DriftCheck:
    """Write the reports and (optionally) log the MLflow run of a finished check."""
    clock = time.perf_counter()
    write_reports(spec, check, snapshots, settings)
    check.seconds["reports"] = time.perf_counter() - clock
    if log_to_mlflow:
        clock = time.perf_counter()
        check.mlflow_run_id = log_check(spec, check, settings)
        check.seconds["mlflow"] = time.perf_counter() - clock
        # The JSON report on disk also says which run holds the time-series point.
        write_json(Path(check.json_path), check, snapshots)
    log.info("%s %s: %s", spec.name, check.report_id, check.message)
    return check
