"""Monitoring stage: drift checks of the prediction log against the champion, and the retrain policy's records.

One check (:func:`check_drift`) looks at the last ``spec.drift.window_hours`` of logged
predictions of a model and compares them with the ``@champion``'s reference data:

- **data drift** per model input with Evidently's ``DataDriftPreset`` (reference: the training
  set snapshot logged with the champion's run, ``reference/training_set.parquet``);
- **prediction drift** with Evidently's ``ValueDrift`` on the prediction (reference: the
  champion's own predictions on its holdout set, ``reference/holdout.parquet``);
- **model quality** on the predictions whose label has come back, against the champion's
  logged holdout metrics (``holdout_<metric>``).

Below the spec's minimum row count (one COUNT) the check says ``insufficient_data`` and runs
nothing. A window larger than ``spec.drift.sample_size`` rows is sampled in the prediction store
(seeded, uniform; see :func:`read_window`); the result says so and gives a per-column bound on
the sampling error of the score (see :func:`sampling_error`) and whether the verdict could flip
within it. Each check writes ``reports_dir/<model>/<report_id>.html`` and ``.json`` and logs one
MLflow run in the experiment ``<model>-monitoring``, so the experiment is the time series.

The verdict and the retrain policy are pure and live in :mod:`airloop.decisions`; this package
measures and keeps records. :func:`decide_and_record` applies the policy under a file lock to
the durable history in ``reports_dir/<model>/policy.json``.

The public names are re-exported here; import them from ``airloop.monitoring``. The modules
behind them, one concern each:

- ``check``: :func:`check_drift` and :func:`assess`, one check end to end;
- ``window``: reading a window of the prediction log (:func:`read_window`, :func:`current_frame`);
- ``reference``: the champion's reference data and its disk cache (:func:`load_reference`);
- ``evidently_run``: running Evidently on a window (:func:`run_drift`);
- ``sampling``: seeded sampling and :func:`sampling_error`;
- ``model_quality``: quality numbers on labelled rows (:func:`quality`);
- ``results``: the :class:`DriftCheck` record and :class:`MonitorError`;
- ``reports``: the HTML and JSON report files (:func:`write_reports`);
- ``timeseries``: the MLflow runs (:func:`log_check`, :func:`monitoring_history`);
- ``state``: the policy history, its lock, :func:`decide_and_record`.

Heavy libraries (pandas, evidently, mlflow, sklearn) are imported inside the functions, so
importing this package (as a DAG file does) loads none of them.
"""

from airloop.monitoring.check import assess, check_drift
from airloop.monitoring.evidently_run import DriftRun, run_drift
from airloop.monitoring.model_quality import quality
from airloop.monitoring.reference import Reference, load_reference, reference_rows
from airloop.monitoring.reports import model_dir, new_report_id, write_reports
from airloop.monitoring.results import DriftCheck, MonitorError
from airloop.monitoring.sampling import sampling_error
from airloop.monitoring.state import (
    decide_and_record,
    forget_trigger,
    load_history,
    record_check,
    record_trigger,
)
from airloop.monitoring.timeseries import experiment_name, log_check, monitoring_history
from airloop.monitoring.window import count_predictions, current_frame, read_window

__all__ = [
    "DriftCheck",
    "DriftRun",
    "MonitorError",
    "Reference",
    "assess",
    "check_drift",
    "count_predictions",
    "current_frame",
    "decide_and_record",
    "experiment_name",
    "forget_trigger",
    "load_history",
    "load_reference",
    "log_check",
    "model_dir",
    "monitoring_history",
    "new_report_id",
    "quality",
    "read_window",
    "record_check",
    "record_trigger",
    "reference_rows",
    "run_drift",
    "sampling_error",
    "write_reports",
]
