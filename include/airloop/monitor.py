"""Monitoring stage: drift checks of the prediction log against the champion, and the retrain policy.

One check (:func:`check_drift`) looks at the last ``spec.drift.window_hours`` of logged
predictions of a model and compares them with the ``@champion``'s reference data:

- **data drift** per model input with Evidently's ``DataDriftPreset`` (reference: the training
  set snapshot logged with the champion's run, ``reference/training_set.parquet``);
- **prediction drift** with Evidently's ``ValueDrift`` on the prediction (reference: the
  champion's own predictions on its holdout set, ``reference/holdout.parquet``; holdout rather
  than training predictions because a boosted model is sharper on the rows it was fit on);
- **model quality** on the predictions whose label has come back, against the champion's
  logged holdout metrics (``holdout_<metric>``).

Below the spec's minimum row count (one COUNT) the check says ``insufficient_data`` and runs
nothing. A window larger than ``spec.drift.sample_size`` rows is sampled in the prediction store
(seeded, uniform; only the sampled rows are fetched and parsed, see :func:`read_window`); the
result says so and gives a per-column bound on the sampling error of the score (see
:func:`sampling_error`) and whether the verdict could flip within it. The reference is cached on
disk per champion run under ``reports_dir/<model>/reference/<run_id>/``.

Each check writes ``reports_dir/<model>/<report_id>.html`` (Evidently's report, ~4 MB, kept
on disk only) and ``<report_id>.json`` (the numbers and Evidently's metric results), and logs
one MLflow run in the experiment ``<model>-monitoring`` (run start = window end, metrics
``drifted_share``, ``drift.<feature>``, ``prediction_drift``, ``quality.<metric>``, ...; the
JSON report as artifact ``drift/<report_id>.json``), so the experiment is the time series.

The verdict (status, signals, message) and the retrain policy are pure and live in
:mod:`airloop.decisions` (:func:`~airloop.decisions.drift_verdict`,
:func:`~airloop.decisions.decide`): this module measures and keeps records. :func:`decide_and_record`
applies the policy under a file lock to the durable history in ``reports_dir/<model>/policy.json``
and records the check and any trigger in the same critical section, so concurrent checks cannot
both trigger.

Heavy libraries (pandas, evidently, mlflow, sklearn) are imported inside the functions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import logging
import math
import time
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from airloop import prediction_log, registry
from airloop.decisions import (
    DRIFT,
    INSUFFICIENT_DATA,
    Decision,
    DriftThresholds,
    DriftVerdict,
    History,
    decide,
    drift_verdict,
    metric_drop,
)
from airloop.fileio import as_utc, atomic_path, write_atomic
from airloop.settings import Settings, get_settings

if TYPE_CHECKING:
    import pandas as pd

    from airloop.spec import DriftSpec, ModelSpec

log = logging.getLogger(__name__)

PREDICTION = "prediction"
LABEL = "label"
EXPERIMENT_SUFFIX = "-monitoring"
STATE_FILE = "policy.json"
LOCK_FILE = "policy.lock"
MAX_HISTORY = 2000  # checks kept in the policy file (triggers are all kept)
# The reference is sampled to max(this, spec.drift.sample_size) rows. Not tied to the window's
# sample size alone: Evidently picks p-value tests (KS, chi2) for references of <= 1000 rows.
REFERENCE_ROWS = 50_000
UTC = dt.timezone.utc


class MonitorError(RuntimeError):
    """A drift check cannot run (e.g. predictions are logged but there is no champion)."""


# --- results ----------------------------------------------------------------------------------


@dataclass
class DriftCheck:
    """The outcome of one drift check. ``as_dict()`` is JSON-safe (XCom, the JSON report)."""

    model: str
    report_id: str
    status: str  # insufficient_data | ok | drift
    window_start: dt.datetime
    window_end: dt.datetime
    rows: int  # logged predictions in the window
    message: str
    champion_version: str | None = None
    champion_run_id: str | None = None
    signals: list[str] = field(default_factory=list)  # why the status is "drift"
    # data drift over the model's inputs
    drift_share_threshold: float | None = None
    drifted_share: float | None = None
    drifted_columns: list[str] = field(default_factory=list)
    feature_scores: dict[str, float] = field(default_factory=dict)
    feature_methods: dict[str, str] = field(default_factory=dict)
    feature_thresholds: dict[str, float] = field(default_factory=dict)
    empty_columns: list[str] = field(default_factory=list)  # no value at all in the window
    # prediction drift
    prediction_drift: float | None = None
    prediction_drifted: bool | None = None
    prediction_method: str | None = None
    prediction_threshold: float | None = None
    rescored_rows: int = 0  # rows served by another version, re-predicted with the champion
    # model quality on labelled rows
    quality: dict[str, Any] | None = None
    # sampling
    rows_checked: int = 0
    sampled: bool = False
    sample_seed: int | None = None
    sampling_error: dict[str, float | None] = field(default_factory=dict)
    borderline: list[str] = field(default_factory=list)
    decision_stable: bool | None = None
    reference_rows: int | None = None
    holdout_rows: int | None = None
    # where it went
    html_path: str | None = None
    json_path: str | None = None
    mlflow_run_id: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def drift(self) -> bool:
        return self.status == DRIFT

    @property
    def quality_degraded(self) -> bool:
        return bool(self.quality and self.quality.get("degraded"))

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["window_start"] = self.window_start.isoformat()
        out["window_end"] = self.window_end.isoformat()
        return _json_safe(out)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DriftCheck":
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        for key in ("window_start", "window_end"):
            values[key] = as_utc(values[key])
        return cls(**values)

    def metrics(self) -> dict[str, float]:
        """The numbers logged to MLflow for this check (finite values only)."""
        out: dict[str, float] = {
            "rows": self.rows,
            "rows_checked": self.rows_checked,
            "sampled": float(self.sampled),
            "drift_detected": float(self.status == DRIFT),
            "insufficient_data": float(self.status == INSUFFICIENT_DATA),
        }
        if self.drifted_share is not None:
            out["drifted_share"] = self.drifted_share
            out["drifted_columns"] = len(self.drifted_columns)
        out.update({f"drift.{name}": score for name, score in self.feature_scores.items()})
        if self.prediction_drift is not None:
            out["prediction_drift"] = self.prediction_drift
            out["prediction_drifted"] = float(bool(self.prediction_drifted))
        if self.quality:
            out["quality.labelled_rows"] = self.quality.get("labelled_rows", 0)
            out.update({f"quality.{k}": v for k, v in (self.quality.get("metrics") or {}).items()})
            if self.quality.get("drop") is not None:
                out["quality.drop"] = self.quality["drop"]
        return {k: float(v) for k, v in out.items() if v is not None and math.isfinite(float(v))}


# --- small helpers ----------------------------------------------------------------------------


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def model_dir(spec: "ModelSpec", settings: Settings | None = None) -> Path:
    """``reports_dir/<model>``: reports, the reference cache and the policy state."""
    return (settings or get_settings()).reports_dir / spec.name


def new_report_id(spec: "ModelSpec", window_end: dt.datetime) -> str:
    return f"{spec.name}-{as_utc(window_end):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def _seed(*parts: object) -> int:
    return zlib.crc32("|".join(str(p) for p in parts).encode())


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


# --- the champion's reference -----------------------------------------------------------------


@dataclass
class Reference:
    """What the current window is compared with, for one champion run."""

    model: str
    version: str
    run_id: str
    features: list[str]
    training: "pd.DataFrame"  # the model inputs of the training set (at most reference_rows)
    predictions: "pd.Series"  # the champion's predictions on its holdout (at most reference_rows)
    holdout_metrics: dict[str, float]
    training_rows: int  # before sampling
    holdout_rows: int
    cache_dir: Path | None = None


def load_reference(
    spec: "ModelSpec", settings: Settings | None = None, *, version: str | None = None
) -> Reference:
    """The champion's (or ``version``'s) reference, from the disk cache or built from MLflow.

    Built once per run id: the training set and holdout are downloaded from the run's
    artifacts, the training set and the holdout predictions are sampled down to
    :func:`reference_rows` rows (seeded by the run id), the champion model predicts the holdout, and the result is written under
    ``reports_dir/<model>/reference/<run_id>/`` per sample size (atomic files; ``meta.<size>.json``
    is written last, so a cache with a meta file is complete).
    """
    import pandas as pd

    s = settings or get_settings()
    client = registry.client(s)
    version = version or registry.champion_version(spec, s)
    if version is None:
        raise MonitorError(f"{spec.name}: no @{registry.CHAMPION} model to compare the predictions with")
    mv = client.get_model_version(spec.registered_model_name, str(version))
    run_id = mv.run_id
    cache = model_dir(spec, s) / "reference" / run_id
    size = reference_rows(spec)
    meta_path = cache / f"meta.{size}.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else None
    if meta is None:
        meta = _build_reference_cache(spec, s, client, str(version), run_id, cache, size)
    training = pd.read_parquet(cache / f"training.{size}.parquet")
    predictions = pd.read_parquet(cache / f"holdout_predictions.{size}.parquet")[PREDICTION]
    return Reference(
        model=spec.name,
        version=str(version),
        run_id=run_id,
        features=list(meta["features"]),
        training=training,
        predictions=predictions,
        holdout_metrics=dict(meta["holdout_metrics"]),
        training_rows=int(meta["training_rows"]),
        holdout_rows=int(meta["holdout_rows"]),
        cache_dir=cache,
    )


def reference_rows(spec: "ModelSpec") -> int:
    return max(REFERENCE_ROWS, spec.drift.sample_size)


def _build_reference_cache(spec, settings, client, version, run_id, cache: Path, size: int) -> dict:
    import tempfile

    import mlflow
    import pandas as pd

    started = time.perf_counter()
    run = client.get_run(run_id)
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache.parent) as tmp:
        try:
            training_file, holdout_file = (
                mlflow.artifacts.download_artifacts(
                    run_id=run_id, artifact_path=path, dst_path=tmp, tracking_uri=settings.mlflow_tracking_uri
                )
                for path in (registry.REFERENCE_ARTIFACT, registry.HOLDOUT_ARTIFACT)
            )
        except Exception as exc:
            raise MonitorError(
                f"{spec.name} v{version}: cannot get the reference data {registry.REFERENCE_ARTIFACT} and "
                f"{registry.HOLDOUT_ARTIFACT} of run {run_id}: {type(exc).__name__}: {exc}"
            ) from exc
        training = pd.read_parquet(training_file)
        holdout = pd.read_parquet(holdout_file)
    model = registry.load_version(spec, version, settings)
    logged = run.data.params.get("feature_columns", "")
    features = [c for c in logged.split(",") if c] or list(model.inputs)
    training_rows, holdout_rows = len(training), len(holdout)
    seed = _seed(run_id)
    sample = training[features]
    if len(sample) > size:
        sample = sample.sample(n=size, random_state=seed % 2**32)
    holdout_inputs = _inputs(holdout, model.inputs)
    predictions = pd.DataFrame({PREDICTION: model.predict(holdout_inputs, spec.task)})
    if len(predictions) > size:
        predictions = predictions.sample(n=size, random_state=seed % 2**32)

    def parquet(frame: "pd.DataFrame", name: str) -> None:
        with atomic_path(cache / name) as tmp:
            frame.reset_index(drop=True).to_parquet(tmp, index=False)

    numeric = {c: "float64" for c in features if pd.api.types.is_numeric_dtype(sample[c])}
    parquet(sample.astype(numeric), f"training.{size}.parquet")
    parquet(predictions, f"holdout_predictions.{size}.parquet")
    meta = {
        "model": spec.name,
        "version": version,
        "run_id": run_id,
        "features": features,
        "sample_size": size,
        "seed": seed,
        "training_rows": training_rows,
        "holdout_rows": holdout_rows,
        "holdout_metrics": registry.holdout_metrics(run.data.metrics),
        "built_at": dt.datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_atomic(cache / f"meta.{size}.json", json.dumps(meta, indent=1, sort_keys=True))
    log.info("%s: cached the reference of v%s (run %s) in %.1fs", spec.name, version, run_id, time.perf_counter() - started)
    return meta


def _inputs(frame: "pd.DataFrame", columns) -> "pd.DataFrame":
    """``frame``'s columns by name, as floats where they are numbers; a column it lacks is all-NaN."""
    import numpy as np
    import pandas as pd

    def column(name: str):
        if name not in frame:
            return np.full(len(frame), np.nan)
        try:
            return frame[name].astype("float64")
        except (TypeError, ValueError):  # a categorical input stays as logged
            return frame[name]

    return pd.DataFrame({c: column(c) for c in columns}, index=frame.index)


# --- the drift computation (no I/O) -------------------------------------------------------------


@dataclass
class DriftRun:
    """Evidently's answers for one current frame; :func:`run_drift` makes it, :meth:`verdict` judges it."""

    drift_spec: "DriftSpec"  # the thresholds of the verdict
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

    def verdict(
        self,
        quality: dict[str, Any] | None = None,
        *,
        window_start: dt.datetime | None = None,
        window_end: dt.datetime | None = None,
    ) -> DriftVerdict:
        """The drift verdict on these numbers and the quality numbers (see :func:`quality`)."""
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
        )

    @property
    def dataset_drift(self) -> bool:
        """Whether the drifted share of the inputs alone makes this drift."""
        return self.verdict().dataset_drift


def run_drift(
    spec: "ModelSpec",
    current: "pd.DataFrame",
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
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift
    from evidently.presets import DataDriftPreset

    started = time.perf_counter()
    policy = spec.drift
    size = policy.sample_size if sample_size == -1 else sample_size
    rows = max(population or 0, len(current))
    trim = size is not None and len(current) > size
    sample = current.sample(n=size, random_state=seed % 2**32) if trim else current
    sampled = len(sample) < rows
    features = list(reference.features)

    present = {c: int(sample[c].notna().sum()) if c in sample else 0 for c in features}
    empty = [c for c in features if present[c] == 0]
    in_reference = [c for c in features if c in reference.training and reference.training[c].notna().any()]
    columns = [c for c in in_reference if c not in empty]
    numerical = [c for c in columns if _is_numeric(sample[c]) and _is_numeric(reference.training[c])]
    categorical = [c for c in columns if c not in numerical]

    snapshots: dict[str, Any] = {}
    scores: dict[str, float] = {}
    methods: dict[str, str] = {}
    thresholds: dict[str, float] = {}
    drifted: dict[str, bool] = {}
    if columns:
        definition = DataDefinition(numerical_columns=numerical, categorical_columns=categorical)
        report = Report(
            [
                DataDriftPreset(
                    columns=columns,
                    # the verdict's own threshold, so Evidently's dataset drift test agrees with it
                    drift_share=DriftThresholds.of(policy).drift_share,
                    method=policy.stattest,
                    threshold=policy.stattest_threshold,
                )
            ],
            include_tests=True,
        )
        snapshot = report.run(
            Dataset.from_pandas(sample[columns].reset_index(drop=True), data_definition=definition),
            Dataset.from_pandas(reference.training[columns].reset_index(drop=True), data_definition=definition),
        )
        snapshots["data_drift"] = snapshot
        scores, methods, thresholds, drifted = _value_drift_results(snapshot.dict())
    drifted_columns = [c for c in columns if drifted.get(c)] + empty  # a feature gone from serving drifted
    counted = len(columns) + len(empty)
    share = len(drifted_columns) / counted if counted else None

    pred_score = pred_drifted = pred_method = pred_threshold = None
    predictions = sample[PREDICTION].dropna() if PREDICTION in sample else None
    if predictions is not None and len(predictions) and len(reference.predictions.dropna()):
        definition = DataDefinition(numerical_columns=[PREDICTION])
        report = Report(
            [ValueDrift(column=PREDICTION, method=policy.stattest, threshold=policy.stattest_threshold)],
            include_tests=True,
        )
        snapshot = report.run(
            Dataset.from_pandas(predictions.to_frame(PREDICTION).reset_index(drop=True), data_definition=definition),
            Dataset.from_pandas(reference.predictions.to_frame(PREDICTION).reset_index(drop=True), data_definition=definition),
        )
        snapshots["prediction_drift"] = snapshot
        p_scores, p_methods, p_thresholds, p_drifted = _value_drift_results(snapshot.dict())
        pred_score, pred_method = p_scores.get(PREDICTION), p_methods.get(PREDICTION)
        pred_threshold, pred_drifted = p_thresholds.get(PREDICTION), p_drifted.get(PREDICTION)

    errors: dict[str, float | None] = {}
    borderline: list[str] = []
    if sampled:
        for column in columns + ([PREDICTION] if pred_score is not None else []):
            method = pred_method if column == PREDICTION else methods.get(column)
            ref = reference.predictions if column == PREDICTION else reference.training[column]
            errors[column] = sampling_error(sample[column], ref.dropna(), method, population=rows)
        for column, error in errors.items():
            score = pred_score if column == PREDICTION else scores.get(column)
            threshold = pred_threshold if column == PREDICTION else thresholds.get(column)
            if error is None or score is None or threshold is None or abs(score - threshold) <= 3 * error:
                borderline.append(column)
    return DriftRun(
        drift_spec=policy,
        rows=rows,
        rows_checked=len(sample),
        sampled=sampled,
        seed=seed if sampled else None,
        drifted_share=share,
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
    )


def _is_numeric(series) -> bool:
    import pandas as pd

    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


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


def sampling_error(sample, reference, method: str | None, *, population: int) -> float | None:
    """Bound on the expected |score(sample) - score(whole window)| for one column, or None.

    The score is a distance d(current, reference) and a metric, so the error is at most
    d(sample, window) (triangle inequality). For the normed Wasserstein distance,
    E W1(sample, window) <= fpc * J / sqrt(n) with J = integral of sqrt(F(1-F)) dx (Jensen on
    the empirical CDF; fpc the finite-population correction), divided by the reference std as
    Evidently does. For Jensen-Shannon distance over k categories the expected distance of a
    sample's shares is about sqrt((k-1) / (8n)) (chi-square approximation). Other methods
    (p-value tests, PSI, KL): None, no bound is given.
    """
    import numpy as np

    values = np.sort(np.asarray(sample.dropna(), dtype="float64")) if _is_numeric(sample) else None
    n = int(sample.notna().sum())
    if n < 2 or method is None:
        return None
    fpc = math.sqrt(max(population - n, 0) / max(population - 1, 1))
    name = method.lower()
    if "wasserstein" in name and values is not None:
        cdf = np.arange(1, n) / n
        j = float(np.sum(np.sqrt(cdf * (1 - cdf)) * np.diff(values)))
        norm = max(float(np.std(np.asarray(reference, dtype="float64"))), 0.001)
        return fpc * j / math.sqrt(n) / norm
    if "jensen" in name:
        k = max(int(sample.nunique()), 2)
        return fpc * math.sqrt((k - 1) / (8 * n))
    return None


# --- model quality ----------------------------------------------------------------------------


def quality(spec: "ModelSpec", labelled: "pd.DataFrame", holdout_metrics: dict[str, float]) -> dict[str, Any]:
    """Metrics of the champion's predictions on the labelled rows, and the drop vs. its holdout.

    Measured numbers only: whether the drop is a drift signal is the verdict's to say
    (:meth:`DriftRun.verdict`; :func:`assess` adds it to the dict).
    """
    import numpy as np
    from sklearn import metrics as m

    y = labelled[LABEL].to_numpy(dtype="float64")
    p = labelled[PREDICTION].to_numpy(dtype="float64")
    values: dict[str, float] = {}
    if len(y):
        if spec.task == "classification":
            y = (y >= 0.5).astype(int)
            if len(np.unique(y)) == 2:
                values["roc_auc"] = float(m.roc_auc_score(y, p))
                values["pr_auc"] = float(m.average_precision_score(y, p))
            values["log_loss"] = float(m.log_loss(y, np.clip(p, 1e-15, 1 - 1e-15), labels=[0, 1]))
            values["brier"] = float(m.brier_score_loss(y, p))
            values["accuracy"] = float(m.accuracy_score(y, p >= 0.5))
            values["positive_rate"] = float(y.mean())
        else:
            values["rmse"] = float(m.root_mean_squared_error(y, p))
            values["mae"] = float(m.mean_absolute_error(y, p))
            if len(y) > 1:
                values["r2"] = float(m.r2_score(y, p))
    metric = spec.promotion.metric
    value, champion = values.get(metric), holdout_metrics.get(metric)
    return {
        "labelled_rows": int(len(y)),
        "metric": metric,
        "value": value,
        "champion_value": champion,
        "drop": metric_drop(spec.promotion, metric, value, champion),
        "metrics": values,
        "champion_metrics": {k: v for k, v in holdout_metrics.items() if k in values},
    }


# --- the check --------------------------------------------------------------------------------


def current_frame(
    frame: "pd.DataFrame",
    reference: Reference,
    spec: "ModelSpec",
    settings: Settings | None = None,
    *,
    models: dict | None = None,
):
    """The model inputs, the champion's prediction and the label of every logged row.

    Rows served by another version than the reference's are re-predicted with the champion, so
    the prediction column is always the champion's; their labels are dropped (the quality
    numbers score the champion on what it served). ``models`` caches the loaded champion
    between calls. Returns (frame, rescored rows).
    """
    current = _inputs(frame, reference.features)
    current[PREDICTION] = frame[PREDICTION].astype("float64")
    current[LABEL] = frame[LABEL].astype("float64") if LABEL in frame else float("nan")
    other = frame["model_version"].astype(str) != str(reference.version) if "model_version" in frame else None
    rescored = int(other.sum()) if other is not None else 0
    if rescored:

        models = {} if models is None else models
        if reference.version not in models:
            models[reference.version] = registry.load_version(spec, reference.version, settings or get_settings())
        model = models[reference.version]
        current.loc[other, PREDICTION] = model.predict(_inputs(frame.loc[other], model.inputs), spec.task)
        current.loc[other, LABEL] = float("nan")
    return current.reset_index(drop=True), rescored


def count_predictions(spec: "ModelSpec", start: dt.datetime, end: dt.datetime, settings: Settings) -> int:
    """Logged predictions of the model with ``start <= time < end`` (one indexed COUNT)."""
    return prediction_log.count_predictions(spec.registered_model_name, start, end, url=settings.prediction_store)


def read_window(
    spec: "ModelSpec",
    start: dt.datetime,
    end: dt.datetime,
    reference: Reference,
    settings: Settings,
    *,
    seed: int = 0,
    sample_size: int | None = -1,
    total: int | None = None,
):
    """The window as model inputs + champion prediction + label, with time and memory bounded.

    A window of at most ``sample_size`` rows (-1: ``spec.drift.sample_size``; None: no limit)
    is read whole. A larger one is sampled in the store: the request ids of the window are
    read, a seeded uniform sample of ``sample_size`` of them is drawn, and only those rows are
    fetched and parsed; the label and prediction of every labelled row the champion served are
    read separately (two numbers per row) for the quality numbers. Labels of rows served by
    another version are left out of the quality numbers in both cases (they score the champion).

    Returns (frame, rows in the window, labelled rows or None, rows re-predicted).
    """
    import numpy as np
    import pandas as pd

    size = spec.drift.sample_size if sample_size == -1 else sample_size
    total = count_predictions(spec, start, end, settings) if total is None else total
    rows, total, labelled = prediction_log.read_window_rows(
        spec.registered_model_name, start, end, url=settings.prediction_store, total=total,
        sample_size=size, seed=seed, labelled_version=str(reference.version),
    )
    frame = pd.DataFrame.from_records(
        [json.loads(r.features) for r in rows], index=pd.RangeIndex(len(rows)), columns=list(reference.features)
    )
    frame["model_version"] = [r.model_version for r in rows]
    frame[PREDICTION] = np.array([r.prediction for r in rows], dtype="float64")
    frame[LABEL] = np.array([np.nan if r.label is None else r.label for r in rows], dtype="float64")
    del rows
    current, rescored = current_frame(frame, reference, spec, settings)
    return current, (total if labelled is not None else len(current)), labelled, rescored


def check_drift(
    spec: "ModelSpec",
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
    returns the :class:`DriftCheck`. It does not decide anything: see :func:`decide_and_record`.
    Raises :class:`MonitorError` if enough predictions are logged but there is no champion.
    """
    s = settings or get_settings()
    end = as_utc(now) if now is not None else dt.datetime.now(UTC).replace(microsecond=0)
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
        spec, start, end, reference, s, seed=_seed(spec.name, end.isoformat()), total=rows
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
    spec: "ModelSpec",
    current: "pd.DataFrame",
    reference: Reference,
    *,
    window_start: dt.datetime,
    window_end: dt.datetime,
    report_id: str | None = None,
    rescored_rows: int = 0,
    sample_size: int | None = -1,
    rows: int | None = None,
    labelled: "pd.DataFrame | None" = None,
) -> tuple[DriftCheck, dict]:
    """The drift check of a window already in memory (see :func:`current_frame`).

    Runs Evidently (:func:`run_drift`, sampled per ``sample_size``) and the quality numbers and
    returns the check with the verdict's status, signals and message
    (:func:`airloop.decisions.drift_verdict`), and Evidently's snapshots; a window too small for
    a verdict is ``insufficient_data`` and runs nothing, as in :func:`check_drift`. Writes
    nothing. ``check_drift`` = read the log + this + reports + MLflow. When ``current`` is
    already a sample of the window, ``rows`` is the window's size and ``labelled`` its labelled
    rows (``label`` and ``prediction``; by default the labelled rows of ``current``).
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
        spec, current, reference, sample_size=sample_size, seed=_seed(spec.name, window_end.isoformat()),
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
    check = DriftCheck(
        model=spec.name,
        report_id=report_id,
        status=verdict.status,
        window_start=window_start,
        window_end=window_end,
        rows=result.rows,
        message=verdict.message,
        champion_version=reference.version,
        champion_run_id=reference.run_id,
        signals=list(verdict.signals),
        drift_share_threshold=verdict.thresholds.drift_share,
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
    return check, result.snapshots


def _unchecked(
    spec: "ModelSpec",
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
    clock = time.perf_counter()
    write_reports(spec, check, snapshots, settings)
    check.seconds["reports"] = time.perf_counter() - clock
    if log_to_mlflow:
        clock = time.perf_counter()
        check.mlflow_run_id = log_check(spec, check, settings)
        check.seconds["mlflow"] = time.perf_counter() - clock
        # The JSON report on disk also says which run holds the time-series point.
        _write_json(Path(check.json_path), check, snapshots)
    log.info("%s %s: %s", spec.name, check.report_id, check.message)
    return check


# --- reports ----------------------------------------------------------------------------------


def write_reports(spec: "ModelSpec", check: DriftCheck, snapshots: dict, settings: Settings | None = None) -> None:
    """``<report_id>.json`` always; ``<report_id>.html`` when Evidently ran."""
    directory = model_dir(spec, settings)
    directory.mkdir(parents=True, exist_ok=True)
    json_path = directory / f"{check.report_id}.json"
    if snapshots:
        html_path = directory / f"{check.report_id}.html"
        write_atomic(html_path, _html(check, snapshots))
        check.html_path = str(html_path)
    check.json_path = str(json_path)
    _write_json(json_path, check, snapshots)


def _write_json(path: Path, check: DriftCheck, snapshots: dict) -> None:
    document = {
        "report_id": check.report_id,
        "model": check.model,
        "check": check.as_dict(),
        "evidently": {name: _json_safe(snapshot.dict()) for name, snapshot in snapshots.items()},
    }
    write_atomic(path, json.dumps(document, indent=1, default=str))


def _html(check: DriftCheck, snapshots: dict) -> str:
    """One page: a summary, then Evidently's data drift and prediction drift widgets.

    Evidently 0.7 renders one snapshot per page; the two snapshots' widgets are put on one page
    with its own renderer. If that internal layout changes, the data drift page alone is kept.
    """
    try:
        from evidently.core.metric_types import metric_tests_widget, render_widgets
        from evidently.core.report import metric_tests_stats
        from evidently.legacy.renderers.html_widgets import CounterData, counter, group_widget

        summary = [
            CounterData("status", check.status),
            CounterData("rows", f"{check.rows_checked} of {check.rows}" + (" (sampled)" if check.sampled else "")),
            CounterData("drifted share", f"{_fmt(check.drifted_share, 2)} (>= {check.drift_share_threshold} is drift)"),
            CounterData("prediction drift", f"{_fmt(check.prediction_drift)} ({check.prediction_method})"),
            CounterData("champion", f"v{check.champion_version}"),
        ]
        if check.quality and check.quality.get("value") is not None:
            q = check.quality
            summary.append(
                CounterData(q["metric"], f"{q['value']:.3f} vs {_fmt(q['champion_value'])} on {q['labelled_rows']} labels")
            )
        widgets = [counter(counters=summary, title=f"{check.report_id}: {check.message}")]
        tests = []
        for name, title in (("data_drift", "Data drift: model inputs vs. the training set"),
                            ("prediction_drift", "Prediction drift: served predictions vs. the champion on its holdout")):
            if name in snapshots:
                widgets.append(group_widget(title=title, widgets=list(snapshots[name]._widgets)))
                tests.extend(snapshots[name].tests_results)
        if tests:
            widgets += [metric_tests_stats(tests), metric_tests_widget(tests)]
        return render_widgets(widgets)
    except Exception as exc:  # noqa: BLE001 - fall back to Evidently's own page
        log.warning("combined drift report page failed (%s: %s); writing the data drift page only", type(exc).__name__, exc)
        snapshot = snapshots.get("data_drift") or next(iter(snapshots.values()))
        return snapshot.get_html_str(as_iframe=False)


# --- MLflow time series -------------------------------------------------------------------------


def experiment_name(spec: "ModelSpec") -> str:
    return f"{spec.name}{EXPERIMENT_SUFFIX}"


def log_check(spec: "ModelSpec", check: DriftCheck, settings: Settings | None = None) -> str:
    """One MLflow run per check in ``<model>-monitoring``, stamped with the window end."""
    from mlflow.entities import Metric, Param, RunTag

    s = settings or get_settings()
    client = registry.client(s)
    experiment_id = registry.ensure_experiment(experiment_name(spec), model=spec.name, settings=s)
    stamp = int(check.window_end.timestamp() * 1000)
    tags = {
        "airloop.model": spec.name,
        "airloop.report_id": check.report_id,
        "airloop.status": check.status,
        "airloop.champion_version": check.champion_version or "",
        "airloop.champion_run_id": check.champion_run_id or "",
        "airloop.sampled": str(check.sampled).lower(),
        "airloop.window_start": check.window_start.isoformat(),
        "airloop.window_end": check.window_end.isoformat(),
        "airloop.report_html": check.html_path or "",
        "airloop.report_json": check.json_path or "",
        "mlflow.note.content": check.message,
    }
    run = client.create_run(experiment_id, start_time=stamp, run_name=check.report_id, tags=tags)
    run_id = run.info.run_id
    try:
        params = {
            "window_hours": spec.drift.window_hours,
            "drift_share": check.drift_share_threshold,
            "stattest": spec.drift.stattest or "evidently-default",
            "sample_size": spec.drift.sample_size,
        }
        client.log_batch(
            run_id,
            metrics=[Metric(k, v, stamp, 0) for k, v in sorted(check.metrics().items())],
            params=[Param(k, str(v)) for k, v in params.items()],
            tags=[RunTag("airloop.signals", "; ".join(check.signals)[:5000])] if check.signals else [],
        )
        if check.json_path:
            client.log_artifact(run_id, check.json_path, artifact_path="drift")
    except Exception:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED", end_time=stamp + int(sum(check.seconds.values()) * 1000))
    return run_id


def monitoring_history(spec: "ModelSpec", settings: Settings | None = None) -> "pd.DataFrame":
    """The time series logged by :func:`log_check`: one row per check, oldest first."""
    import mlflow
    import pandas as pd

    client = registry.client(settings or get_settings())
    experiment = client.get_experiment_by_name(experiment_name(spec))
    if experiment is None:
        return pd.DataFrame()
    runs = mlflow.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"], max_results=50_000)
    return runs.reset_index(drop=True)


# --- the retrain policy's records (the policy itself: airloop.decisions.decide) ----------------


def _summary(check: DriftCheck) -> dict[str, Any]:
    return {
        "report_id": check.report_id,
        "status": check.status,
        "window_start": check.window_start.isoformat(),
        "window_end": check.window_end.isoformat(),
        "rows": check.rows,
        "champion_version": check.champion_version,
        "drifted_share": check.drifted_share,
        "prediction_drift": check.prediction_drift,
        "prediction_drifted": check.prediction_drifted,
        "quality_degraded": check.quality_degraded,
        "signals": list(check.signals),
        "mlflow_run_id": check.mlflow_run_id,
    }


def _state_path(spec: "ModelSpec", settings: Settings | None) -> Path:
    return model_dir(spec, settings) / STATE_FILE


@contextlib.contextmanager
def _locked(spec: "ModelSpec", settings: Settings | None, *, write: bool) -> Iterator[dict]:
    """The policy state under an exclusive (write) or shared (read) ``flock``.

    The lock is on a separate file so the state can be replaced atomically; it serializes
    checks of one model across threads and processes on one host (or on a shared file
    system that supports ``flock``).
    """
    import fcntl

    path = _state_path(spec, settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(LOCK_FILE), "a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX if write else fcntl.LOCK_SH)
        try:
            state = json.loads(path.read_text()) if path.exists() else {}
            state.setdefault("model", spec.name)
            state.setdefault("checks", [])
            state.setdefault("triggers", [])
            yield state
            if write:
                state["checks"] = state["checks"][-MAX_HISTORY:]
                write_atomic(path, json.dumps(state, indent=1, default=str))
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def _history(spec, state: dict, settings) -> History:
    return History(spec.name, list(state["checks"]), list(state["triggers"]), _state_path(spec, settings))


def load_history(spec: "ModelSpec", settings: Settings | None = None) -> History:
    with _locked(spec, settings, write=False) as state:
        return _history(spec, state, settings)


def _put_check(state: dict, check: DriftCheck, decision: Decision | None) -> None:
    entry = _summary(check)
    if decision is not None:
        entry["decision"] = {"trigger": decision.trigger, "reason": decision.reason, "at": decision.decided_at.isoformat()}
    state["checks"] = [c for c in state["checks"] if c["report_id"] != check.report_id] + [entry]


def _put_trigger(state: dict, decision: Decision, check: DriftCheck) -> None:
    entry = {
        "at": decision.decided_at.isoformat(),
        "report_id": decision.report_id,
        "window_start": check.window_start.isoformat(),
        "window_end": check.window_end.isoformat(),
        "champion_version": decision.champion_version,
        "reason": decision.reason,
    }
    state["triggers"] = [t for t in state["triggers"] if t["report_id"] != decision.report_id] + [entry]


def record_check(
    spec: "ModelSpec", check: DriftCheck, *, decision: Decision | None = None, settings: Settings | None = None
) -> History:
    """Add (or replace, by report id) a check in the policy history."""
    with _locked(spec, settings, write=True) as state:
        _put_check(state, check, decision)
        return _history(spec, state, settings)


def record_trigger(
    spec: "ModelSpec", decision: Decision, check: DriftCheck, *, settings: Settings | None = None
) -> History:
    """Record that ``decision`` triggered a retrain (starts the cooldown, uses up the streak)."""
    with _locked(spec, settings, write=True) as state:
        _put_check(state, check, decision)
        _put_trigger(state, decision, check)
        return _history(spec, state, settings)


def forget_trigger(spec: "ModelSpec", report_id: str, *, settings: Settings | None = None) -> bool:
    """Undo a recorded trigger whose retrain could not be started (so the next check may retry)."""
    with _locked(spec, settings, write=True) as state:
        before = len(state["triggers"])
        state["triggers"] = [t for t in state["triggers"] if t["report_id"] != report_id]
        return len(state["triggers"]) < before


def decide_and_record(
    spec: "ModelSpec",
    check: DriftCheck,
    *,
    training_active: bool,
    now: dt.datetime | str | None = None,
    settings: Settings | None = None,
) -> Decision:
    """:func:`decide`, then record the check (and the trigger, if any) in one locked step.

    This is what a DAG should call: two checks running at the same time cannot both trigger.
    The decision is also set as tags on the check's MLflow run (best effort).
    """
    with _locked(spec, settings, write=True) as state:
        decision = decide(spec, check, _history(spec, state, settings), now=now, training_active=training_active)
        _put_check(state, check, decision)
        if decision.trigger:
            _put_trigger(state, decision, check)
    if check.mlflow_run_id:
        try:
            client = registry.client(settings or get_settings())
            client.set_tag(check.mlflow_run_id, "airloop.trigger", str(decision.trigger).lower())
            client.set_tag(check.mlflow_run_id, "airloop.decision", decision.reason[:5000])
        except Exception as exc:  # noqa: BLE001 - the decision is recorded; the tag is a convenience
            log.warning("could not tag MLflow run %s with the decision: %s", check.mlflow_run_id, exc)
    log.info("%s %s: %s", spec.name, check.report_id, decision.reason)
    return decision
