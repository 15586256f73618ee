"""The champion's reference data, cached on disk per champion run.

What a window is compared with: the training set snapshot logged with the champion's run
(``reference/training_set.parquet``) for data drift, and the champion's own predictions on its
holdout set (``reference/holdout.parquet``) for prediction drift (holdout rather than training
predictions because a boosted model is sharper on the rows it was fit on), with the run's
holdout metrics for the quality numbers. Both are sampled to :func:`reference_rows` rows and
cached under ``reports_dir/<model>/reference/<run_id>/``.

Heavy libraries (pandas, mlflow) are imported inside the functions.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from airloop import registry
from airloop.fileio import atomic_path, write_atomic
from airloop.model_inputs import categorical_inputs
from airloop.monitoring.reports import model_dir
from airloop.monitoring.results import PREDICTION, MonitorError
from airloop.monitoring.sampling import sample_rows, stable_seed
from airloop.settings import Settings, get_settings

if TYPE_CHECKING:
    from collections.abc import Iterable

    import pandas as pd

    from airloop.spec import ModelSpec

__all__ = ["REFERENCE_ROWS", "Reference", "load_reference", "model_inputs", "reference_rows"]

log = logging.getLogger(__name__)

# The reference is sampled to max(this, spec.drift.sample_size) rows. Not tied to the window's
# sample size alone: Evidently picks p-value tests (KS, chi2) for references of <= 1000 rows.
REFERENCE_ROWS = 50_000


@dataclass
class Reference:
    """What the current window is compared with, for one champion run."""

    model: str
    version: str
    run_id: str
    features: list[str]
    training: pd.DataFrame  # the model inputs of the training set (at most reference_rows)
    predictions: pd.Series  # the champion's predictions on its holdout (at most reference_rows)
    holdout_metrics: dict[str, float]
    training_rows: int  # before sampling
    holdout_rows: int
    cache_dir: Path | None = None


def load_reference(
    spec: ModelSpec, settings: Settings | None = None, *, version: str | None = None
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


def reference_rows(spec: ModelSpec) -> int:
    """Rows the reference keeps: ``REFERENCE_ROWS``, or the spec's sample size if larger."""
    return max(REFERENCE_ROWS, spec.drift.sample_size)


def model_inputs(frame: pd.DataFrame, columns: Iterable[str], categorical: Iterable[str] = ()) -> pd.DataFrame:
    """``frame``'s columns by name, as floats where they are numbers; a column it lacks is all-NaN.

    A column holding strings (:func:`airloop.model_inputs.is_categorical`), or named in
    ``categorical`` (a model's string inputs, :func:`airloop.model_inputs.categorical_inputs`),
    stays as logged, None for missing: it is compared as categories, and the model encodes it
    itself. Numeric-looking categories ("1") are not cast, and a string input with no value in
    this frame still reaches the model as objects, not floats.
    """
    import numpy as np
    import pandas as pd

    from airloop.model_inputs import is_categorical

    strings = set(categorical)

    def column(name: str):
        if name not in frame:
            if name in strings:
                return pd.Series(None, index=frame.index, dtype="object")
            return np.full(len(frame), np.nan)
        values = frame[name]
        if name in strings:
            return values.astype("object").where(values.notna(), None)
        if is_categorical(values):
            return values
        try:
            return values.astype("float64")
        except (TypeError, ValueError):  # anything else non-numeric stays as logged
            return values

    return pd.DataFrame({c: column(c) for c in columns}, index=frame.index)


def _build_reference_cache(spec, settings, client, version, run_id, cache: Path, size: int) -> dict:
    import pandas as pd

    started = time.perf_counter()
    run = client.get_run(run_id)
    training, holdout = _download_reference_data(spec, settings, version, run_id, cache)
    model = registry.load_version(spec, version, settings)
    logged = run.data.params.get("feature_columns", "")
    features = [c for c in logged.split(",") if c] or list(model.inputs)
    training_rows, holdout_rows = len(training), len(holdout)
    seed = stable_seed(run_id)
    sample = sample_rows(training[features], size, seed)
    holdout_inputs = model_inputs(holdout, model.inputs, categorical_inputs(model.model))
    predictions = pd.DataFrame({PREDICTION: model.predict(holdout_inputs, spec.task)})
    predictions = sample_rows(predictions, size, seed)

    def parquet(frame: pd.DataFrame, name: str) -> None:
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
        "built_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    write_atomic(cache / f"meta.{size}.json", json.dumps(meta, indent=1, sort_keys=True))
    log.info("%s: cached the reference of v%s (run %s) in %.1fs", spec.name, version, run_id, time.perf_counter() - started)
    return meta


def _download_reference_data(spec, settings, version, run_id, cache: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The run's training set and holdout, downloaded beside ``cache`` and read; the download is removed."""
    import tempfile

    import mlflow
    import pandas as pd

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
        return pd.read_parquet(training_file), pd.read_parquet(holdout_file)
