"""Training stage: build the training set, fit, evaluate, log to MLflow and register.

Plain functions; heavy libraries (sklearn, mlflow, matplotlib) are imported inside them.
Promotion is a separate stage (:mod:`airloop.promotion`); the registry conventions live in
:mod:`airloop.registry`.
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
import logging
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airloop import registry
from airloop.decisions import PromotionDecision
from airloop.registry import HOLDOUT_ARTIFACT, REFERENCE_ARTIFACT
from airloop.settings import REPO_ROOT, Settings, get_settings

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from airloop.spec import ModelSpec

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Lineage:
    """Where a model's data came from and why it was trained."""

    dvc_md5: str = ""
    dvc_rev: str = ""
    validation_result_id: str = ""
    feature_service: str = ""
    trigger_reason: str = "manual"
    drift_report_id: str = ""
    code_version: str = ""

    def as_tags(self) -> dict[str, str]:
        return {f"airloop.{k}": str(v) for k, v in asdict(self).items() if v}


@dataclass
class TrainResult:
    """One training run: the registered version, its holdout metrics, the gate's decision and lineage."""

    model_name: str
    version: str
    run_id: str
    metrics: dict[str, float]
    decision: PromotionDecision
    lineage: Lineage
    feature_columns: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["decision"] = asdict(self.decision)
        return out


# -- pure training -----------------------------------------------------------------------


def time_split(
    frame: "pd.DataFrame", timestamp: str, holdout_days: int, warmup_days: int = 0, timezone: str = "UTC"
) -> "tuple[pd.DataFrame, pd.DataFrame]":
    """Train on everything before the last ``holdout_days`` days; never shuffle across.

    Rows of the first ``warmup_days`` days of ``frame`` are left out of both. Days are cut at
    midnight in the IANA zone ``timezone`` (the dataset's).
    """
    import pandas as pd

    ts = _local_times(frame[timestamp], timezone)
    cutoff = ts.max().normalize() - pd.Timedelta(days=holdout_days - 1)
    kept = ts >= ts.min().normalize() + pd.Timedelta(days=warmup_days)
    train, holdout = frame[kept & (ts < cutoff)], frame[kept & (ts >= cutoff)]
    if train.empty or holdout.empty:
        raise ValueError(
            f"need data after the {warmup_days} warm-up day(s) and before the holdout cutoff "
            f"{cutoff:%Y-%m-%d}: {len(train)} training rows, {len(holdout)} holdout rows"
        )
    return train.sort_values(timestamp), holdout.sort_values(timestamp)


def _local_times(stamps: "pd.Series", timezone: str) -> "pd.Series":
    """Times as naive wall-clock times of ``timezone``: calendar days (23 or 25 hours on a DST
    day) are then whole ``Timedelta(days=...)`` apart."""
    import pandas as pd

    return pd.to_datetime(stamps, utc=True).dt.tz_convert(timezone).dt.tz_localize(None)


def make_estimator(spec: "ModelSpec", inputs: "pd.DataFrame | None" = None) -> Any:
    """The spec's estimator, unfitted; with ``inputs`` (the training inputs), ready for them.

    When some input column holds strings, the estimator comes behind an encoder of those
    columns in one scikit-learn ``Pipeline`` (:func:`airloop.model_inputs.encode_inputs`), so
    callers send categories and the model encodes them. All-numeric inputs (and no ``inputs``)
    give the bare estimator, exactly as before.
    """
    module_name, _, class_name = spec.estimator.class_.rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    params = dict(spec.estimator.params)
    if "random_state" in cls().get_params():
        params.setdefault("random_state", spec.estimator.seed)
    estimator = cls(**params)
    if inputs is None:
        return estimator
    from airloop.model_inputs import encode_inputs

    return encode_inputs(estimator, inputs)


def evaluate(spec: "ModelSpec", model: Any, X: "pd.DataFrame", y: "pd.Series") -> dict[str, float]:
    """The model's metrics on ``X``, ``y``. A classifier: roc_auc, pr_auc, log_loss, brier and
    accuracy (at 0.5) of its probability of class 1, and the positive rate; a regressor: rmse,
    mae and r2."""
    from sklearn import metrics as m

    if spec.task == "classification":
        proba = model.predict_proba(X)[:, 1]
        return {
            "roc_auc": float(m.roc_auc_score(y, proba)),
            "pr_auc": float(m.average_precision_score(y, proba)),
            "log_loss": float(m.log_loss(y, proba, labels=[0, 1])),
            "brier": float(m.brier_score_loss(y, proba)),
            "accuracy": float(m.accuracy_score(y, proba >= 0.5)),
            "positive_rate": float(sum(y) / len(y)),
        }
    pred = model.predict(X)
    return {
        "rmse": float(m.root_mean_squared_error(y, pred)),
        "mae": float(m.mean_absolute_error(y, pred)),
        "r2": float(m.r2_score(y, pred)),
    }


def feature_columns(spec: "ModelSpec", frame: "pd.DataFrame") -> list[str]:
    """Model inputs: every column of the training set but the timestamp, the label and the join
    keys (a key is an input only if ``features.request`` lists it)."""
    keys = {k for k in spec.join_keys if k not in spec.features.request}
    excluded = {*keys, spec.dataset.timestamp, spec.target}
    return [c for c in frame.columns if c not in excluded]


def recency_weights(spec: "ModelSpec", train: "pd.DataFrame") -> "np.ndarray | None":
    """Per-row sample weights from ``split.recency_half_life_days`` (None: unweighted).

    After drift the newest days describe the world the model will serve; halving a day's
    weight every half-life lets a few of them outweigh weeks of the old regime.
    """
    half_life = spec.split.recency_half_life_days
    if half_life is None:
        return None
    days = _local_times(train[spec.dataset.timestamp], spec.dataset.timezone).dt.normalize()
    age = (days.max() - days).dt.days.to_numpy()
    return 0.5 ** (age / half_life)


def fit(spec: "ModelSpec", train: "pd.DataFrame", columns: list[str]) -> Any:
    """Fit the spec's estimator (behind an encoder if some input holds strings) on ``columns``."""
    from airloop.model_inputs import fit_params

    inputs = train[columns]
    model = make_estimator(spec, inputs)
    # The recency weights reach the estimator itself, inside a pipeline too.
    model.fit(inputs, train[spec.target], **fit_params(model, recency_weights(spec, train)))
    return model


# -- MLflow ------------------------------------------------------------------------------


def code_version() -> str:
    """The project's git commit (``git rev-parse HEAD``), or "" outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def _log_plots(spec: "ModelSpec", model, X, y, columns: list[str], out_dir: Path) -> list[Path]:
    """Evaluation plots people would rather look at than read."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from sklearn.calibration import CalibrationDisplay
    from sklearn.inspection import permutation_importance
    from sklearn.metrics import PrecisionRecallDisplay, RocCurveDisplay

    paths = []

    def save(fig, name):
        path = out_dir / name
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)

    if spec.task == "classification":
        for name, display in (
            ("roc_curve.png", RocCurveDisplay),
            ("pr_curve.png", PrecisionRecallDisplay),
            ("calibration.png", CalibrationDisplay),
        ):
            fig, ax = plt.subplots(figsize=(5, 4))
            display.from_estimator(model, X, y, ax=ax)
            ax.set_title(f"{spec.name}: {name.removesuffix('.png').replace('_', ' ')} (holdout)")
            save(fig, name)
    importance = permutation_importance(
        model, X, y, n_repeats=3, random_state=spec.estimator.seed, n_jobs=1,
        scoring="roc_auc" if spec.task == "classification" else "r2",
    )
    order = np.argsort(importance.importances_mean)
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(columns) + 1.5))
    ax.barh([columns[i] for i in order], importance.importances_mean[order])
    ax.set_title(f"{spec.name}: permutation importance (holdout)")
    save(fig, "feature_importance.png")
    return paths


@registry.quiet_model_io()  # skops' module scans would write ~1,160 warnings into the task log
def log_training_run(
    spec: "ModelSpec",
    model: Any,
    train: "pd.DataFrame",
    holdout: "pd.DataFrame",
    columns: list[str],
    metrics: dict[str, float],
    lineage: Lineage,
    settings: Settings,
    *,
    batches: list[dict] | None = None,
) -> tuple[str, str]:
    """Log params, metrics, plots, data and the model; register a new version."""
    import mlflow
    from mlflow.models import infer_signature

    registry.client(settings)
    experiment_id = registry.ensure_experiment(spec.name, model=spec.name, settings=settings)
    X_holdout = holdout[columns]
    output = model.predict_proba(X_holdout) if spec.task == "classification" else model.predict(X_holdout)
    signature = infer_signature(X_holdout, output)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"{spec.name}-{lineage.trigger_reason}") as run:
        mlflow.set_tags({**lineage.as_tags(), "airloop.model": spec.name})
        mlflow.log_params(
            {
                "estimator": spec.estimator.class_,
                "estimator_spec": json.dumps(spec.estimator.model_dump(by_alias=True), sort_keys=True),
                "seed": spec.estimator.seed,
                "holdout_days": spec.split.holdout_days,
                "split_spec": json.dumps(spec.split.model_dump(), sort_keys=True),
                "feature_service": spec.features.service,
                "feature_columns": ",".join(columns),
                "train_rows": len(train),
                "holdout_rows": len(holdout),
                "train_start": str(train[spec.dataset.timestamp].min()),
                "holdout_start": str(holdout[spec.dataset.timestamp].min()),
                "holdout_end": str(holdout[spec.dataset.timestamp].max()),
                **{f"param.{k}": v for k, v in spec.estimator.params.items()},
            }
        )
        mlflow.log_metrics({f"holdout_{k}": v for k, v in metrics.items()})
        dataset = mlflow.data.from_pandas(
            # The data registry path; the exact version is the digest (DVC md5) and the rev tag.
            train, source=str(settings.dvc_workspace / spec.dataset.name),
            targets=spec.target, name=f"{spec.name}-training-set", digest=lineage.dvc_md5 or None,
        )
        mlflow.log_input(dataset, context="training")
        with tempfile.TemporaryDirectory() as tmp:
            tmp_path = Path(tmp)
            (tmp_path / "reference").mkdir()
            train.to_parquet(tmp_path / REFERENCE_ARTIFACT, index=False)
            holdout.to_parquet(tmp_path / HOLDOUT_ARTIFACT, index=False)
            mlflow.log_artifacts(str(tmp_path / "reference"), "reference")
            plots = tmp_path / "plots"
            plots.mkdir()
            _log_plots(spec, model, X_holdout, holdout[spec.target], columns, plots)
            mlflow.log_artifacts(str(plots), "plots")
            if batches is not None:
                mlflow.log_dict(batches, "lineage/batches.json")
        info = mlflow.sklearn.log_model(
            model, name="model", signature=signature, input_example=X_holdout.head(5),
            registered_model_name=spec.registered_model_name,
            skops_trusted_types=_own_model_types(model),
            # Inferring requirements re-imports the model in a subprocess (~10 s); we know them.
            pip_requirements=_model_requirements(),
        )
    version = str(info.registered_model_version)
    client = registry.client(settings)
    for key, value in {**lineage.as_tags(), "airloop.run_id": run.info.run_id}.items():
        client.set_model_version_tag(spec.registered_model_name, version, key, value)
    return run.info.run_id, version


def _model_requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{pkg}=={version(pkg)}" for pkg in ("scikit-learn", "skops", "pandas", "numpy", "mlflow")]


def _own_model_types(model) -> list[str]:
    """Types skops does not trust by default; this model was trained in this process."""
    import skops.io

    return skops.io.get_untrusted_types(data=skops.io.dumps(model))


# -- the training job --------------------------------------------------------------------


def _day_of(batch: str) -> dt.date:
    return dt.date.fromisoformat(Path(batch).stem.rsplit("_", 1)[-1])


def _batches_in_window(versions, start: dt.date | None, end: dt.date | None):
    return [v for v in versions if (start is None or _day_of(v.batch) >= start) and (end is None or _day_of(v.batch) <= end)]


def _data_digest(versions) -> str:
    """One md5 for a training set's data: over the DVC md5 of every batch in it, by name."""
    import hashlib

    lines = "".join(f"{v.batch} {v.md5}\n" for v in sorted(versions, key=lambda v: v.batch))
    return hashlib.md5(lines.encode()).hexdigest()


def read_events(spec: "ModelSpec", offline_dir: Path, batches: list[str]) -> "pd.DataFrame":
    """The validated rows of ``batches`` from the offline store, in batch order."""
    import pandas as pd

    paths = [offline_dir / spec.dataset.name / f"{Path(b).stem}.parquet" for b in batches]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(f"offline source lacks versioned batches: {missing}")
    return pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)


def build_dataset(spec: "ModelSpec", events: "pd.DataFrame", settings: Settings) -> "pd.DataFrame":
    """Point-in-time-correct training set from dataset rows, through the spec's FeatureService."""
    from airloop import features

    entity_df = features.entity_df_from_events(spec, events)
    return features.build_training_set(spec, entity_df, settings=settings)


def train_model(
    spec: "ModelSpec",
    *,
    reason: str = "manual",
    drift_report_id: str = "",
    start: dt.date | None = None,
    end: dt.date | None = None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Build the training set from the versioned data, fit, evaluate, log and register.

    Returns the new version, its run id, holdout metrics and lineage. Promotion is a
    separate step (:func:`gate_version`), so a failure here never touches the aliases.
    """
    from airloop.ingest import committed_batches

    s = settings or get_settings()
    rev, versions = committed_batches(spec.events, s)
    versions = _batches_in_window(versions, start, end)
    if not versions:
        raise ValueError(f"{spec.name}: no validated batches in the data window {start} .. {end}")
    events = read_events(spec, s.offline_dir, [v.batch for v in versions])
    # Reference tables hold what was known up to the window's end; earlier rows still count.
    references = [
        v for table in spec.reference_tables
        for v in _batches_in_window(committed_batches(table, s)[1], None, end)
    ]
    frame = build_dataset(spec, events, s)
    train, holdout = time_split(
        frame, spec.dataset.timestamp, spec.split.holdout_days, spec.split.warmup_days, spec.dataset.timezone
    )
    columns = feature_columns(spec, frame)
    model = fit(spec, train, columns)
    metrics = evaluate(spec, model, holdout[columns], holdout[spec.target])
    lineage = Lineage(
        dvc_md5=_data_digest(versions + references),
        dvc_rev=rev,
        validation_result_id=versions[-1].validation_result_id,
        feature_service=spec.features.service,
        trigger_reason=reason,
        drift_report_id=drift_report_id or "",
        code_version=code_version(),
    )
    batches = [asdict(v) for v in versions + references]
    run_id, version = log_training_run(
        spec, model, train, holdout, columns, metrics, lineage, s, batches=batches
    )
    log.info("%s v%s trained (run %s): %s", spec.name, version, run_id, metrics)
    return {
        "model_name": spec.registered_model_name,
        "version": version,
        "run_id": run_id,
        "metrics": metrics,
        "lineage": asdict(lineage),
        "batches": len(versions),
        "reference_batches": len(references),
        "train_rows": len(train),
        "holdout_rows": len(holdout),
    }


def reproduce(spec: "ModelSpec", version: str, *, settings: Settings | None = None) -> dict[str, Any]:
    """Retrain a registered version from its recorded lineage and compare the metrics.

    The data is read back from the DVC workspace at the recorded revision (not from the
    current offline source), the features are rebuilt from it in a scratch Feast registry,
    and the estimator is refit with the recorded parameters and seed.
    """
    import dataclasses

    from airloop import features
    from airloop.ingest import read_version
    from airloop.validation import read_typed

    s = settings or get_settings()
    client = registry.client(s)
    mv = client.get_model_version(spec.registered_model_name, version)
    run = client.get_run(mv.run_id)
    recorded = json.loads(run.data.params["estimator_spec"])
    rev = run.data.tags["airloop.dvc_rev"]
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        batches_file = mlflow.artifacts.download_artifacts(run_id=mv.run_id, artifact_path="lineage/batches.json", dst_path=tmp)
        batches = json.loads(Path(batches_file).read_text())
        scratch = Path(tmp) / "scratch"
        scratch_settings = dataclasses.replace(
            s,
            offline_dir=scratch / "offline",
            feast_registry=str(scratch / "feast" / "registry.db"),
            feast_online_store=str(scratch / "feast" / "online.db"),
            feast_redis_url="",
        )
        for batch in batches:
            # Records written before reference tables existed name no dataset: the events.
            table = spec.table(batch.get("dataset") or spec.dataset.name)
            frame, failures = read_typed(table, read_version(table, batch["batch"], rev, s))
            if failures:
                raise ValueError(f"{batch['batch']} at {rev} no longer reads cleanly: {failures}")
            out = scratch_settings.offline_dir / table.name
            out.mkdir(parents=True, exist_ok=True)
            frame.to_parquet(out / f"{Path(batch['batch']).stem}.parquet", index=False)
        features.derive(spec, scratch_settings)
        features.apply(scratch_settings)
        event_batches = [b["batch"] for b in batches if b.get("dataset", spec.dataset.name) == spec.dataset.name]
        events = read_events(spec, scratch_settings.offline_dir, event_batches)
        frame = build_dataset(spec, events, scratch_settings)
    update = {"estimator": spec.estimator.model_validate(recorded)}
    if "split_spec" in run.data.params:
        update["split"] = spec.split.model_validate(json.loads(run.data.params["split_spec"]))
    respec = spec.model_copy(update=update)
    train, holdout = time_split(
        frame, respec.dataset.timestamp, respec.split.holdout_days, respec.split.warmup_days, respec.dataset.timezone
    )
    columns = feature_columns(respec, frame)
    model = fit(respec, train, columns)
    metrics = evaluate(respec, model, holdout[columns], holdout[respec.target])
    original = registry.holdout_metrics(run.data.metrics)
    return {"version": version, "rev": rev, "original": original, "reproduced": metrics,
            "identical": all(original.get(k) == v for k, v in metrics.items())}
