"""The drift checks as an MLflow time series: one run per check in the experiment ``<model>-monitoring``.

Each run starts at its window's end and holds the check's numbers as metrics
(``drifted_share``, ``drift.<feature>``, ``prediction_drift``, ``quality.<metric>``, ...) and the
JSON report as artifact ``drift/<report_id>.json``, so the experiment is the time series.
MLflow and pandas are imported inside the functions.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from airloop import registry
from airloop.monitoring.results import DriftCheck
from airloop.settings import Settings, get_settings

if TYPE_CHECKING:
    import pandas as pd

    from airloop.decisions import Decision
    from airloop.spec import ModelSpec

__all__ = ["EXPERIMENT_SUFFIX", "experiment_name", "log_check", "monitoring_history", "tag_decision"]

log = logging.getLogger(__name__)

EXPERIMENT_SUFFIX = "-monitoring"


def experiment_name(spec: ModelSpec) -> str:
    """``<model>-monitoring``: the MLflow experiment of the model's drift checks."""
    return f"{spec.name}{EXPERIMENT_SUFFIX}"


def log_check(spec: ModelSpec, check: DriftCheck, settings: Settings | None = None) -> str:
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


def tag_decision(check: DriftCheck, decision: Decision, settings: Settings | None = None) -> None:
    """Set the retrain decision as tags on the check's MLflow run, if it has one (best effort)."""
    if not check.mlflow_run_id:
        return
    try:
        client = registry.client(settings or get_settings())
        client.set_tag(check.mlflow_run_id, "airloop.trigger", str(decision.trigger).lower())
        client.set_tag(check.mlflow_run_id, "airloop.decision", decision.reason[:5000])
    except Exception as exc:  # noqa: BLE001 - the decision is recorded; the tag is a convenience
        log.warning("could not tag MLflow run %s with the decision: %s", check.mlflow_run_id, exc)


def monitoring_history(spec: ModelSpec, settings: Settings | None = None) -> pd.DataFrame:
    """The time series logged by :func:`log_check`: one row per check, oldest first."""
    import mlflow
    import pandas as pd

    client = registry.client(settings or get_settings())
    experiment = client.get_experiment_by_name(experiment_name(spec))
    if experiment is None:
        return pd.DataFrame()
    runs = mlflow.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"], max_results=50_000)
    return runs.reset_index(drop=True)
