"""The Models view: each model's champion, challenger, served version, promotions and drift checks.

Routes of the reports app (``airloop_plugin``), which mounts them under ``/airloop/models``, so
they share its login requirement, its sandboxing headers (``Content-Security-Policy: sandbox``,
no scripts) and its lack of API docs:

- ``GET /airloop/models/``: one HTML page, every model the user may read;
- ``GET /airloop/models/api/models`` and ``/api/models/{name}``: the same facts as JSON, for scripts;
- ``GET /airloop/models/api/models/{name}/versions/{version}/lineage``: one version's lineage
  (:func:`airloop.model_overview.lineage`), what ``airloop lineage`` prints.

The facts come from :func:`airloop.model_overview.overview`; this module only renders them.
Everything shown is escaped: model names, reasons and actors come from the registry. A model is
shown to users who may read the runs of its ``__train`` and ``__monitor`` DAGs.
"""

from __future__ import annotations

import datetime as dt
import html
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag

# The DAGs whose runs make what the view shows: the registry's versions and promotions (train),
# the drift checks (monitor).
READ_STAGES = ("train", "monitor")

_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:1.5rem;color:#1a202c;max-width:72rem}
h1{font-size:1.5rem}h2{font-size:1.25rem;margin:2rem 0 .25rem}h3{font-size:1rem;margin:1.25rem 0 .4rem}
table{border-collapse:collapse;margin:.25rem 0 .75rem}td,th{border:1px solid #cbd5e0;padding:.2rem .5rem;
text-align:left;vertical-align:top}th{background:#edf2f7}.num{text-align:right;font-variant-numeric:tabular-nums}
.warning{background:#fffbea;border:1px solid #d69e2e;padding:.4rem .6rem}
.error{background:#fff5f5;border:1px solid #c53030;padding:.4rem .6rem}
.ok{color:#276749}.bad{color:#c53030;font-weight:600}.muted{color:#718096}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _link(href: str | None, text: Any) -> str:
    return f'<a href="{_e(href)}">{_e(text)}</a>' if href else _e(text)


def _num(value: Any, digits: int = 4) -> str:
    if value is None:
        return '<span class="muted">–</span>'
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return _e(value)


def _when(value: Any) -> str:
    """An ISO time as ``YYYY-MM-DD HH:MM UTC`` (as given if it is not one)."""
    if value is None:
        return _num(None)
    try:
        moment = dt.datetime.fromisoformat(str(value))
    except ValueError:
        return _e(value)
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.timezone.utc)
    return _e(f"{moment:%Y-%m-%d %H:%M} UTC")


def _table(headers: list[str], rows: list[list[str]], *, cls: str = "") -> str:
    """A table of already-rendered cells; headers are escaped here."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _error(text: str) -> str:
    return f'<p class="error" role="alert">{_e(text)}</p>'


# -- one model ---------------------------------------------------------------------------------


def _floors(facts: dict) -> str:
    parts = []
    for f in facts["floors"]:
        sign = "≥" if f["greater_is_better"] else "≤"
        mark = '<span class="ok">passes</span>' if f["passes"] else '<span class="bad">misses</span>'
        parts.append(f"{_e(f['metric'])} {_num(f['value'])} {sign} {_e(f['floor'])}: {mark}")
    return "<br>".join(parts) or '<span class="muted">no floors</span>'


def _versions(model: dict) -> str:
    reg = model["registry"]
    out = []
    if reg["error"]:
        out.append(_error(f"registry unreadable: {reg['error']}"))
    elif reg["registered"] is False:
        out.append(f"<p>No version of {_e(model['registered_model'])} is registered yet: run the train DAG.</p>")
    elif reg["champion"] is None:
        out.append('<p class="warning">No @champion yet: no version has passed the promotion gate.</p>')
    rows = []
    for role in ("champion", "challenger", "latest"):
        facts = reg.get(role)
        if not facts:
            continue
        label = {"champion": "@champion", "challenger": "@challenger", "latest": "newest (no alias)"}[role]
        links = facts["links"]
        row_links = " ".join(
            _link(links[key], text) for key, text in
            (("mlflow_run", "MLflow run"), ("mlflow_version", "MLflow version"), ("drift_report", "drift report"))
            if links.get(key)
        )
        gate = _e(facts["gate"] or "not gated")
        if facts["gate_reason"]:
            gate += f'<br><span class="muted">{_e(facts["gate_reason"])}</span>'
        rows.append([
            _e(label), f'<span class="version">v{_e(facts["version"])}</span>', _when(facts["created_at"]),
            f'<span class="num">{_num(facts["score"]["value"])}</span>', _floors(facts), gate,
            _e(facts["trigger_reason"]), row_links or '<span class="muted">–</span>',
        ])
    if rows:
        metric = model["promotion"]["metric"]
        direction = "higher is better" if model["promotion"]["greater_is_better"] else "lower is better"
        headers = ["", "version", "registered", f"holdout {metric} ({direction})", "floors", "gate", "trained because",
                   "links"]
        out.append(_table(headers, rows, cls="versions"))
    return "".join(out)


def _serving(model: dict) -> str:
    serving = model["serving"]
    if serving["warning"]:
        return f'<p class="warning served-warning" role="alert">{_e(serving["warning"])}</p>'
    where = f" by the prediction service at {_e(serving['url'])}"  # each model has its own service
    if serving["state"] == "no_champion":
        return f"<p>Served now{where}: v{_e(serving['model_version'])} (no @champion to compare with).</p>"
    return f'<p class="ok">Served now{where}: v{_e(serving["model_version"])}, the @champion.</p>'


def _by(event: dict) -> str:
    """Who made a history entry: the Airflow run (linked) and, when recorded, the user who triggered it."""
    run = _link(event["links"]["airflow_run"], event.get("by"))
    return f"{_e(event['user'])} ({run})" if event.get("user") else run


def _history(model: dict) -> str:
    history = model["history"]
    if history["error"]:
        return _error(f"promotion history unreadable: {history['error']}")
    if not history["events"]:
        return "<p>No promotion, rejection or rollback recorded yet.</p>"
    rows = [
        [_when(e.get("at")), _e(e.get("action")), f"v{_e(e.get('version'))}",
         f"v{_e(e['previous'])}" if e.get("previous") else '<span class="muted">–</span>',
         _by(e), _e(e.get("reason"))]
        for e in history["events"]
    ]
    more = len(history["events"]) < (history["total"] or 0)
    note = f'<p class="muted">The newest {len(rows)} of {history["total"]}.</p>' if more else ""
    return _table(["when", "action", "version", "previous champion", "by", "reason"], rows, cls="history") + note


def _quality(check: dict) -> str:
    if check["quality_error"]:
        return f'<span class="bad">unreadable: {_e(check["quality_error"])}</span>'
    q = check["quality"]
    if not q:
        return '<span class="muted">no labels</span>'
    text = f"{_e(q['metric'])} {_num(q['value'])} on {_e(q['labelled_rows'])} labels"
    if q.get("drop") is not None:
        text += f", drop {_num(q['drop'])}"
    return text + (' <span class="bad">degraded</span>' if check["quality_degraded"] else "")


def _drift(model: dict) -> str:
    drift = model["drift"]
    if drift["error"]:
        return _error(f"drift checks unreadable: {drift['error']}")
    if not drift["checks"]:
        return f"<p>No drift check recorded yet ({_link(model['links']['monitor'], 'monitor DAG')}).</p>"
    rows = []
    for c in drift["checks"]:
        decision = c.get("decision") or {}
        if decision:
            verdict = ('<span class="bad">retrain triggered</span>' if decision.get("trigger") else "no retrain")
            verdict += f'<br><span class="muted">{_e(decision.get("reason"))}</span>'
        else:
            verdict = '<span class="muted">not decided</span>'
        prediction = _num(c["prediction_drift"])
        if c["prediction_drifted"]:
            prediction += ' <span class="bad">drifted</span>'
        status = _e(c["status"]) if c["status"] != "drift" else '<span class="bad">drift</span>'
        rows.append([
            _when(c["window_end"]), status, f'<span class="num">{_e(c["rows"])}</span>', _num(c["drifted_share"], 3),
            prediction, _quality(c), verdict, _link(c["links"]["report"], "report") if c["links"]["report"] else "–",
        ])
    headers = ["window end", "status", "rows", "drifted share", "prediction drift", "quality", "decision", "report"]
    return _table(headers, rows, cls="drift")


def render_model(model: dict) -> str:
    name = model["model"]
    dags = " · ".join(_link(href, f"{stage} DAG") for stage, href in model["links"].items())
    return (
        f'<section id="model-{_e(name)}"><h2>{_e(name)}</h2>'
        f'<p class="muted">{_e(model["description"])} Owner: {_e(model["owner"])}. {dags}</p>'
        f"{_serving(model)}<h3>Versions</h3>{_versions(model)}"
        f"<h3>Promotion history</h3>{_history(model)}<h3>Last drift checks</h3>{_drift(model)}</section>"
    )


def _service_line(service: dict) -> str:
    """One prediction service: the models it is configured for, and whether it answers."""
    models = ", ".join(_e(m) for m in service["models"])
    if service["unreachable"]:
        state = f'<span class="bad">service unreachable</span> at {_e(service["url"])}'
    elif service["error"]:
        state = f'<span class="bad">error</span> at {_e(service["url"])}: {_e(service["error"])}'
    else:
        state = f"answering at {_e(service['url'])}"
    return f'<li class="service">{models}: {state}</li>'


def render_page(result: dict, reports_href: str) -> str:
    services = "".join(_service_line(s) for s in result["services"])
    services = f'<p>Prediction services:</p><ul class="services">{services}</ul>' if services else ""
    body = "".join(render_model(m) for m in result["models"]) or "<p>No model you may read.</p>"
    return (
        f"<!doctype html><html lang=en><meta charset=utf-8><title>Airloop models</title><style>{_STYLE}</style>"
        f"<h1>Models</h1><p>{_link(reports_href, 'Reports')}</p>{services}{body}</html>"
    )


# -- routes ------------------------------------------------------------------------------------


def may_read_model(request: Request, user: GetUserDep, spec) -> bool:
    """Whether the auth manager lets ``user`` read the runs of the model's train and monitor DAGs."""
    try:
        for stage in READ_STAGES:
            requires_access_dag("GET", DagAccessEntity.RUN, param_dag_id=spec.dag_id(stage))(request, user)
    except HTTPException:
        return False
    return True


def make_router(prefix: str) -> APIRouter:
    """The Models routes for an app mounted at ``prefix`` (the router goes under ``/models``)."""
    router = APIRouter()

    def context(request: Request):
        """Settings, the specs and the links, as seen from this request's mount point."""
        from airloop.model_overview import Links, mlflow_ui_url
        from airloop.settings import get_settings
        from airloop.spec import load_specs

        settings = get_settings()
        try:
            specs = load_specs(settings.models_dir)
        except Exception as exc:  # a broken spec file: an error, not an empty list
            raise HTTPException(500, f"cannot load the model specs: {type(exc).__name__}: {exc}") from exc
        app_root = request.scope.get("root_path", "") or prefix  # the mount point, under any base URL
        links = Links(
            airflow=app_root.removesuffix(prefix), reports=f"{app_root}/files/reports", mlflow=mlflow_ui_url(settings)
        )
        return settings, specs, links, app_root

    def gather(request: Request, user) -> tuple[dict, str]:
        """Every model this user may read, and the app's mount point."""
        from airloop.model_overview import overviews

        settings, specs, links, app_root = context(request)
        readable = [spec for spec in specs if may_read_model(request, user, spec)]
        return overviews(readable, settings, links=links), app_root

    @router.get("/", response_class=HTMLResponse)
    def models_page(request: Request, user: GetUserDep) -> HTMLResponse:
        try:
            result, app_root = gather(request, user)
        except HTTPException as exc:
            page = f"<!doctype html><title>Airloop models</title><h1>Models</h1>{_error(str(exc.detail))}"
            return HTMLResponse(page, status_code=exc.status_code)
        return HTMLResponse(render_page(result, f"{app_root}/"), headers={"Cache-Control": "no-store"})

    @router.get("/api/models")
    def models_api(request: Request, user: GetUserDep) -> JSONResponse:
        result, _ = gather(request, user)
        return JSONResponse(result, headers={"Cache-Control": "no-store"})

    def readable(name: str, request: Request, user):
        """The context and the spec called ``name``: 404 if there is none, 403 if not readable."""
        settings, specs, links, _ = context(request)
        spec = next((s for s in specs if s.name == name), None)
        if spec is None:
            raise HTTPException(404, "no such model")
        if not may_read_model(request, user, spec):
            raise HTTPException(403, "no read access to this model's DAG runs")
        return settings, spec, links

    @router.get("/api/models/{name}")
    def model_api(name: str, request: Request, user: GetUserDep) -> JSONResponse:
        from airloop.model_overview import overview

        settings, spec, links = readable(name, request, user)
        return JSONResponse(overview(spec, settings, links=links), headers={"Cache-Control": "no-store"})

    @router.get("/api/models/{name}/versions/{version}/lineage")
    def lineage_api(name: str, version: str, request: Request, user: GetUserDep) -> JSONResponse:
        from airloop.model_overview import lineage

        settings, spec, links = readable(name, request, user)
        try:
            facts = lineage(spec, version, settings, links=links)
        except LookupError as exc:
            raise HTTPException(404, str(exc)) from None
        return JSONResponse(facts, headers={"Cache-Control": "no-store"})

    return router
