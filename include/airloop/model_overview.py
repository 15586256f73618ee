"""The model at a glance: what the registry, the prediction service and the records say about a spec.

:func:`overview` gathers, for one model spec, as a JSON-safe dict:

- ``registry``: the ``@champion`` and ``@challenger`` versions (and the newest version when it is
  neither), each with its holdout metrics, the promotion metric and every floor of
  ``spec.promotion`` passed or missed (the rule is :func:`airloop.decisions.floor_failures`);
- ``serving``: the version the model's prediction service (``AIRLOOP_SERVE_URL__<MODEL>``, else
  ``AIRLOOP_SERVE_URL``) answers with now, and a ``warning`` when it is not ``@champion``
  (another version, another model, none loaded, or the service unreachable);
- ``history``: promotions, rejections and rollbacks with their reasons, newest first
  (:func:`airloop.registry.history`);
- ``drift``: the last drift checks from the policy history (:func:`airloop.monitoring.load_history`)
  with the model quality their MLflow runs logged.

:func:`lineage` follows one version from its data to what came after it: the DVC batches and
revision, the validation result, the feature service and columns, the training run, the gate,
the Bento it was packaged into, its promotions and the drift checks made while it served, all
from what training, the gate, packaging and monitoring recorded in MLflow and the policy history.

Each part fails on its own and says so: a part that cannot be read has an ``error`` string (the
registry down, the service unreachable), never an empty value that would read as "nothing there".
Links are URLs (the Airflow UI, the Airloop reports app, the MLflow UI when one is configured),
never file system paths. MLflow and requests are imported inside the functions, so the Airflow
plugin that renders this imports nothing heavy.
"""

from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from airloop import registry
from airloop.decisions import floor_failures, greater_is_better
from airloop.settings import Settings, get_settings

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from airloop.spec import ModelSpec, PromotionSpec

__all__ = [
    "Links",
    "floor_checks",
    "lineage",
    "mlflow_ui_url",
    "overview",
    "overviews",
    "query_service",
    "serving_facts",
    "version_facts",
]

# The MLflow UI as a browser reaches it, when that is not the tracking URI (compose: the
# tracking URI is http://mlflow:5000, the browser's is http://127.0.0.1:5000).
HISTORY_LIMIT = 20
CHECK_LIMIT = 10
SERVICE_TIMEOUT = 3.0
# Airflow run ids start with their run type: a history entry made inside a task names its run.
_RUN_TYPES = ("manual__", "scheduled__", "asset_triggered__", "backfill__")
# History actions and the DAG whose runs take them.
_ACTION_STAGE = {"promote": "train", "reject": "train", "rollback": "rollback"}


def mlflow_ui_url(settings: Settings | None = None) -> str | None:
    """``AIRLOOP_MLFLOW_UI_URL``, else an http(s) tracking URI; None with a local store (no UI)."""
    s = settings or get_settings()
    for candidate in (s.mlflow_ui_url.strip(), s.mlflow_tracking_uri):
        parts = urlsplit(candidate)
        if parts.scheme in ("http", "https") and parts.hostname:
            # Never show credentials a tracking URI may carry.
            netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
            return f"{parts.scheme}://{netloc}{parts.path}".rstrip("/")
    return None


@dataclass(frozen=True)
class Links:
    """URL prefixes of the pages the overview links to.

    ``airflow``: the Airflow UI's base ("" on the api-server's own origin); ``reports``: the
    Airloop reports app's file route; ``mlflow``: the MLflow UI, None for no MLflow links.
    """

    airflow: str = ""
    reports: str = "/airloop/files/reports"
    mlflow: str | None = None

    def dag(self, dag_id: str) -> str:
        return f"{self.airflow}/dags/{quote(dag_id, safe='')}"

    def dag_run(self, dag_id: str, run_id: str) -> str:
        return f"{self.dag(dag_id)}/runs/{quote(run_id, safe='')}"

    def report(self, model: str, report_id: str) -> str:
        return f"{self.reports}/{quote(model, safe='')}/{quote(report_id, safe='')}.html"

    def mlflow_run(self, experiment_id: str, run_id: str) -> str | None:
        if not self.mlflow:
            return None
        return f"{self.mlflow}/#/experiments/{quote(experiment_id, safe='')}/runs/{quote(run_id, safe='')}"

    def mlflow_version(self, name: str, version: str) -> str | None:
        if not self.mlflow:
            return None
        return f"{self.mlflow}/#/models/{quote(name, safe='')}/versions/{quote(version, safe='')}"


def _iso_ms(millis: int | None) -> str | None:
    if not millis:
        return None
    return dt.datetime.fromtimestamp(millis / 1000, dt.timezone.utc).isoformat(timespec="seconds")


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


# -- registry ----------------------------------------------------------------------------------


def floor_checks(promotion: "PromotionSpec", metrics: dict[str, float]) -> list[dict[str, Any]]:
    """Each floor of ``promotion`` with the metric's value and whether it passes (the gate's rule)."""
    return [
        {
            "metric": metric,
            "floor": floor,
            "value": metrics.get(metric),
            "greater_is_better": greater_is_better(metric, promotion),
            "passes": not floor_failures(promotion.model_copy(update={"floors": {metric: floor}}), metrics),
        }
        for metric, floor in promotion.floors.items()
    ]


def _alias_version(mlflow_client: "MlflowClient", name: str, alias: str) -> str | None:
    """The version ``alias`` points at; None only if it does not exist (other faults raise)."""
    try:
        return str(mlflow_client.get_model_version_by_alias(name, alias).version)
    except Exception as exc:
        if registry.is_not_found(exc):
            return None
        raise


def _report_link(spec: "ModelSpec", report_id: str | None, settings: Settings, links: Links) -> str | None:
    """The reports app's page of a drift check, if its HTML report is on disk."""
    from airloop import monitoring

    if not report_id or "/" in report_id:
        return None
    if not (monitoring.model_dir(spec, settings) / f"{report_id}.html").is_file():
        return None
    return links.report(spec.name, report_id)


def version_facts(
    spec: "ModelSpec", mlflow_client: "MlflowClient", version: str, settings: Settings, links: Links
) -> dict[str, Any]:
    """One registered version: its run's holdout metrics against the spec's promotion rules."""
    name = spec.registered_model_name
    mv = mlflow_client.get_model_version(name, version)
    run = mlflow_client.get_run(mv.run_id) if mv.run_id else None
    metrics = registry.holdout_metrics(run.data.metrics) if run else {}
    metric = spec.promotion.metric
    floors = floor_checks(spec.promotion, metrics)
    tags = dict(mv.tags or {})
    drift_report = tags.get("airloop.drift_report_id")
    return {
        "version": str(mv.version),
        "aliases": sorted(getattr(mv, "aliases", None) or []),
        "created_at": _iso_ms(mv.creation_timestamp),
        "run_id": mv.run_id,
        "gate": tags.get("airloop.gate"),
        "gate_reason": tags.get("airloop.gate_reason"),
        "trigger_reason": tags.get("airloop.trigger_reason"),
        "drift_report_id": drift_report,
        "metrics": metrics,
        "score": {"metric": metric, "value": metrics.get(metric),
                  "greater_is_better": greater_is_better(metric, spec.promotion)},
        "floors": floors,
        "passes_floors": all(f["passes"] for f in floors),
        "links": {
            "mlflow_run": links.mlflow_run(run.info.experiment_id, mv.run_id) if run else None,
            "mlflow_version": links.mlflow_version(name, str(mv.version)),
            "drift_report": _report_link(spec, drift_report, settings, links),
        },
    }


def _registry_facts(spec: "ModelSpec", settings: Settings, links: Links) -> dict[str, Any]:
    """``@champion``, ``@challenger`` and the newest version, or the error that kept them unread."""
    name = spec.registered_model_name
    out: dict[str, Any] = {"error": None, "registered": None, "champion": None, "challenger": None, "latest": None}
    try:
        mlflow_client = registry.client(settings)
        try:
            mlflow_client.get_registered_model(name)
        except Exception as exc:
            if not registry.is_not_found(exc):
                raise
            out["registered"] = False
            return out
        out["registered"] = True
        champion = registry.champion_version(spec, settings, mlflow_client=mlflow_client)
        challenger = _alias_version(mlflow_client, name, registry.CHALLENGER)
        newest = mlflow_client.search_model_versions(
            f"name = '{name}'", max_results=1, order_by=["version_number DESC"]
        )
        latest = str(newest[0].version) if newest else None
        for key, version in (("champion", champion), ("challenger", challenger)):
            if version is not None:
                out[key] = version_facts(spec, mlflow_client, version, settings, links)
        if latest is not None and latest not in (champion, challenger):
            out["latest"] = version_facts(spec, mlflow_client, latest, settings, links)
    except Exception as exc:  # noqa: BLE001 - shown as the registry's error, never as "no model"
        out["error"] = _error(exc)
    return out


def _history_facts(spec: "ModelSpec", settings: Settings, links: Links, limit: int) -> dict[str, Any]:
    """Promotions, rejections and rollbacks, newest first, linked to the Airflow run that made them."""
    try:
        events = registry.history(spec, settings)
    except Exception as exc:  # noqa: BLE001
        return {"events": [], "total": None, "error": _error(exc)}
    out = []
    for event in reversed(events[-limit:]):
        by = str(event.get("by") or "")
        # An entry names the stage whose run made it (a manual promotion: the promote DAG) or not.
        stage = event.get("stage") or _ACTION_STAGE.get(str(event.get("action")))
        run = links.dag_run(spec.dag_id(stage), by) if stage and by.startswith(_RUN_TYPES) else None
        out.append({**event, "links": {"airflow_run": run}})
    return {"events": out, "total": len(events), "error": None}


# -- one version's lineage --------------------------------------------------------------------


def _recorded_batches(mlflow_client: "MlflowClient", run_id: str) -> tuple[list[dict], str | None]:
    """The batches a training run recorded (``lineage/batches.json``), or why there are none."""
    import json
    import tempfile
    from pathlib import Path

    if not any(a.path == "lineage/batches.json" for a in mlflow_client.list_artifacts(run_id, "lineage")):
        return [], "no batch list recorded with the training run"
    with tempfile.TemporaryDirectory() as tmp:
        path = mlflow_client.download_artifacts(run_id, "lineage/batches.json", tmp)
        return json.loads(Path(path).read_text()), None


def lineage(
    spec: "ModelSpec", version: str, settings: Settings | None = None, *, links: Links | None = None
) -> dict[str, Any]:
    """One registered version from its data to what followed it (see the module docstring), JSON-safe.

    Raises :class:`LookupError` if the model has no such version; a registry fault raises as it is.
    """
    from airloop.monitoring.results import json_safe
    from airloop.package import BENTO_TAG

    s = settings or get_settings()
    links = links or Links(mlflow=mlflow_ui_url(s))
    mlflow_client = registry.client(s)
    try:
        facts = version_facts(spec, mlflow_client, str(version), s, links)
    except Exception as exc:
        if registry.is_not_found(exc):
            raise LookupError(f"{spec.registered_model_name} has no version {version!r}") from None
        raise
    mv = mlflow_client.get_model_version(spec.registered_model_name, facts["version"])
    tags = dict(mv.tags or {})
    run = mlflow_client.get_run(facts["run_id"]) if facts["run_id"] else None
    params = run.data.params if run else {}
    batches, batches_error = _recorded_batches(mlflow_client, facts["run_id"]) if run else ([], "no training run")
    history = _history_facts(spec, s, links, limit=10_000)
    drift = _drift_facts(spec, s, links, limit=10_000)
    return json_safe({
        "model": spec.name,
        "registered_model": spec.registered_model_name,
        "version": facts,
        "data": {
            "dvc_rev": tags.get("airloop.dvc_rev", ""),
            "dvc_md5": tags.get("airloop.dvc_md5", ""),
            "validation_result_id": tags.get("airloop.validation_result_id", ""),
            "batches": batches,
            "batches_error": batches_error,
        },
        "features": {
            "service": tags.get("airloop.feature_service") or params.get("feature_service", ""),
            "columns": [c for c in params.get("feature_columns", "").split(",") if c],
        },
        "training_run": {
            "run_id": facts["run_id"],
            "link": facts["links"]["mlflow_run"],
            "code_version": tags.get("airloop.code_version", ""),
            **{key: params.get(key) for key in ("estimator", "train_rows", "holdout_rows", "holdout_start",
                                                "holdout_end")},
        },
        "bento_tag": tags.get(BENTO_TAG),
        "promotions": [e for e in history["events"] if str(e.get("version")) == facts["version"]],
        "drift_checks": [c for c in drift["checks"] if str(c.get("champion_version")) == facts["version"]],
        "errors": {"history": history["error"], "drift": drift["error"]},
    })


# -- the prediction service --------------------------------------------------------------------


def query_service(
    settings: Settings | None = None, *, model: str | None = None, timeout: float = SERVICE_TIMEOUT
) -> dict[str, Any]:
    """``POST /status`` of ``model``'s prediction service: its answer, or why there is none.

    The service is at ``settings.serve_url_for(model)`` (``settings.serve_url`` without a model).
    ``{"url", "status": dict | None, "unreachable": bool, "error": str | None}``.
    """
    s = settings or get_settings()
    return _query_url(s.serve_url_for(model) if model else s.serve_url, timeout)


def _query_url(url: str, timeout: float) -> dict[str, Any]:
    """``POST /status`` of the service at ``url``, as :func:`query_service` answers."""
    from airloop.errors import ServiceUnreachable
    from airloop.prediction_log import safe_url
    from airloop.serve import service_status

    out: dict[str, Any] = {"url": safe_url(url), "status": None, "unreachable": False, "error": None}
    try:
        out["status"] = service_status(url, timeout=timeout)
    except ServiceUnreachable as exc:
        out.update(unreachable=True, error=str(exc))
    except Exception as exc:  # noqa: BLE001 - an HTTP error or a body that is not JSON
        out["error"] = _error(exc)
    return out


def serving_facts(
    spec: "ModelSpec", champion: str | None, service: dict[str, Any], *, registry_error: str | None = None
) -> dict[str, Any]:
    """What the service serves for ``spec`` compared with ``@champion`` (``champion``).

    ``state``: ``serving_champion``, ``other_version``, ``other_model``, ``no_model_loaded``,
    ``no_champion``, ``registry_error``, ``unreachable`` or ``error``; every state but
    ``serving_champion`` and ``no_champion`` carries a ``warning`` for people.
    """
    status = service.get("status") or {}
    out: dict[str, Any] = {
        "url": service.get("url"),
        "model": status.get("model"),
        "model_version": None if status.get("model_version") is None else str(status["model_version"]),
        "loaded_at": status.get("loaded_at"),
        "last_error": status.get("last_error"),
        "champion_version": champion,
        "state": None,
        "warning": None,
        "error": service.get("error"),
    }
    where = f"the prediction service at {out['url']}"
    if service.get("unreachable"):
        out["state"] = "unreachable"
        out["warning"] = f"service unreachable: {where} does not answer, so no version is confirmed as served"
    elif service.get("error"):
        out["state"] = "error"
        out["warning"] = f"{where} answered with an error: {service['error']}"
    elif out["model"] != spec.registered_model_name:
        out["state"] = "other_model"
        out["warning"] = f"{where} serves model {out['model']!r}, not {spec.registered_model_name!r}"
    elif out["model_version"] is None:
        out["state"] = "no_model_loaded"
        out["warning"] = f"{where} has no model loaded" + (
            f" (last error: {out['last_error']})" if out["last_error"] else ""
        )
    elif registry_error:
        out["state"] = "registry_error"
        out["warning"] = f"{where} serves v{out['model_version']}; the registry could not be read to compare"
    elif champion is None:
        out["state"] = "no_champion"
    elif out["model_version"] != str(champion):
        out["state"] = "other_version"
        out["warning"] = (
            f"{where} serves v{out['model_version']}, but @champion is v{champion}. It follows @champion "
            "within AIRLOOP_SERVE_POLL_SECONDS; if this lasts, see its last error"
            + (f": {out['last_error']}" if out["last_error"] else "")
        )
    else:
        out["state"] = "serving_champion"
    return out


# -- drift checks ------------------------------------------------------------------------------


def _quality(mlflow_client: "MlflowClient", run_id: str, metric: str) -> dict[str, Any] | None:
    """The quality numbers a check's MLflow run logged (``quality.*``); None with no labels."""
    metrics = mlflow_client.get_run(run_id).data.metrics
    if "quality.labelled_rows" not in metrics:
        return None
    return {
        "metric": metric,
        "value": metrics.get(f"quality.{metric}"),
        "drop": metrics.get("quality.drop"),
        "labelled_rows": int(metrics["quality.labelled_rows"]),
    }


def _drift_facts(spec: "ModelSpec", settings: Settings, links: Links, limit: int) -> dict[str, Any]:
    """The last ``limit`` drift checks, newest first, with their retrain decisions."""
    from airloop import monitoring
    from airloop.monitoring.state import STATE_FILE

    out: dict[str, Any] = {"checks": [], "total": 0, "last_trigger": None, "error": None}
    # Reading through load_history creates the lock file: with no state yet there is nothing to read.
    if not (monitoring.model_dir(spec, settings) / STATE_FILE).exists():
        return out
    try:
        history = monitoring.load_history(spec, settings)
    except Exception as exc:  # noqa: BLE001
        out["error"] = _error(exc)
        return out
    out["total"] = len(history.checks)
    out["last_trigger"] = history.last_trigger()
    mlflow_client = None
    for check in reversed(history.checks[-limit:]):
        row = {
            key: check.get(key)
            for key in ("report_id", "status", "window_start", "window_end", "rows", "champion_version",
                        "drifted_share", "prediction_drift", "prediction_drifted", "quality_degraded",
                        "signals", "decision")
        }
        row["quality"], row["quality_error"] = None, None
        run_id = check.get("mlflow_run_id")
        if run_id:
            try:
                mlflow_client = mlflow_client or registry.client(settings)
                row["quality"] = _quality(mlflow_client, run_id, spec.promotion.metric)
            except Exception as exc:  # noqa: BLE001 - this row's quality is unknown, and says so
                row["quality_error"] = _error(exc)
        row["links"] = {
            "report": _report_link(spec, check.get("report_id"), settings, links),
            "monitor_dag": links.dag(spec.dag_id("monitor")),
        }
        out["checks"].append(row)
    return out


# -- together ----------------------------------------------------------------------------------


def overview(
    spec: "ModelSpec",
    settings: Settings | None = None,
    *,
    service: dict[str, Any] | None = None,
    links: Links | None = None,
    history_limit: int = HISTORY_LIMIT,
    check_limit: int = CHECK_LIMIT,
) -> dict[str, Any]:
    """Everything about one model at a glance (see the module docstring), JSON-safe.

    ``service``: a :func:`query_service` answer for this model's service to reuse (queried now
    if None).
    """
    from airloop.monitoring.results import json_safe

    s = settings or get_settings()
    links = links or Links(mlflow=mlflow_ui_url(s))
    service = service if service is not None else query_service(s, model=spec.name)
    facts = _registry_facts(spec, s, links)
    champion = facts["champion"]["version"] if facts["champion"] else None
    promotion = spec.promotion
    return json_safe({
        "model": spec.name,
        "registered_model": spec.registered_model_name,
        "description": spec.description,
        "owner": spec.owner,
        "generated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "promotion": {
            "metric": promotion.metric,
            "greater_is_better": greater_is_better(promotion.metric, promotion),
            "min_improvement": promotion.min_improvement,
            "floors": dict(promotion.floors),
        },
        "registry": facts,
        "serving": serving_facts(spec, champion, service, registry_error=facts["error"]),
        "history": _history_facts(spec, s, links, history_limit) if facts["registered"] else
        {"events": [], "total": 0, "error": facts["error"]},
        "drift": _drift_facts(spec, s, links, check_limit),
        "links": {
            stage: links.dag(spec.dag_id(stage)) for stage in ("train", "monitor", "package", "promote", "rollback")
        },
    })


def overviews(
    specs: "list[ModelSpec]", settings: Settings | None = None, *, links: Links | None = None
) -> dict[str, Any]:
    """:func:`overview` of each spec, each compared with its own prediction service.

    ``services``: one entry per distinct service URL (``url``, ``models`` it is configured for,
    ``unreachable``, ``error``); a URL that several specs share is asked once.
    """
    s = settings or get_settings()
    links = links or Links(mlflow=mlflow_ui_url(s))
    urls = {spec.name: s.serve_url_for(spec.name) for spec in specs}
    distinct = list(dict.fromkeys(urls.values()))
    # Side by side: a service that does not answer costs its timeout once, not once per model.
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(distinct)))) as pool:
        answers = dict(zip(distinct, pool.map(lambda url: _query_url(url, SERVICE_TIMEOUT), distinct)))
    return {
        "services": [
            {**{k: answer[k] for k in ("url", "unreachable", "error")},
             "models": [name for name, used in urls.items() if used == url]}
            for url, answer in answers.items()
        ],
        "models": [overview(spec, s, service=answers[urls[spec.name]], links=links) for spec in specs],
    }
