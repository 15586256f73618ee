"""Airloop's reports and models inside the Airflow UI.

A FastAPI app mounted under the api-server at ``/airloop`` serves the Great Expectations Data
Docs and the Evidently drift reports from ``AIRLOOP_HOME``, a page per validation run
(``/airloop/validation/<dataset>/<result id>``: also for batches refused before Great Expectations
ran, which no Data Docs page mentions), the Models view (``/airloop/models/``, see
``airloop_models``) and each DAG run's decisions (``/airloop/runs/<dag>/<run>``, see
``airloop_runs``); external views put the index and the Models view in the UI's navigation and
the run page in an "Airloop" tab of every DAG run.

Reports hold data from CSV files (a cell can be ``<img src=x onerror=...>``) and come from the
api-server's own origin, where the UI keeps the user's JWT in a cookie that page scripts can
read. So nothing a report contains may run with that origin's rights: every response carries a
``Content-Security-Policy`` with ``sandbox`` (an opaque origin: no cookies, no same-origin API
calls) and no external hosts, ``nosniff`` and an explicit content type.

Access: every route needs an authenticated Airflow user (the UI's cookie or a bearer token); a
file also needs read access to the runs of the DAG that wrote it, as the auth manager decides.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from urllib.parse import quote

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag, requires_authenticated
from airflow.plugins_manager import AirflowPlugin

# Sibling modules of the plugins folder (on sys.path in every Airflow component).
from airloop_models import make_router
from airloop_runs import make_router as make_runs_router

PREFIX = "/airloop"

# Shared by every policy: nothing from other hosts, no network calls, no forms; images, styles
# and fonts only from the report itself. Not even 'self': a sandboxed page has an opaque origin,
# so its requests to this plugin carry no login cookie and would only get a 401.
_BASE_POLICY = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; font-src data:; "
    "connect-src 'none'; form-action 'none'; base-uri 'none'; frame-ancestors 'self'"
)
# Evidently draws its report with inline scripts: they run, but sandboxed in an opaque origin.
SCRIPTED_POLICY = f"sandbox allow-scripts; {_BASE_POLICY}; script-src 'unsafe-inline'"
# Everything else (Data Docs, the index, errors) needs no script at all: Data Docs' own scripts
# come from public CDNs, which the policy blocks anyway.
STATIC_POLICY = f"sandbox; {_BASE_POLICY}"
_POLICY_BY_ROOT = {"reports": SCRIPTED_POLICY, "datadocs": STATIC_POLICY}

# Types served inline; any other file is a download (application/octet-stream, attachment).
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".json": "application/json",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".svg": "image/svg+xml",
    ".ico": "image/x-icon",
}


def _roots() -> dict[str, Path]:
    """Report roots by the name used in ``/files/{root}/...``."""
    from airloop.settings import get_settings

    s = get_settings()
    return {
        "reports": s.reports_dir,
        "datadocs": s.validation_dir / "gx" / "uncommitted" / "data_docs" / "local_site",
    }


def _validation_records() -> Path:
    """Where ingest writes one JSON record per validation run: ``<dataset>/<result id>.json``."""
    from airloop.settings import get_settings

    return get_settings().validation_dir / "results"


def resolve_inside(base: Path, path: str) -> Path | None:
    """The regular file ``path`` names under ``base``, or None.

    Symlinks are followed and must end inside ``base``. Paths that the OS cannot take (a NUL
    byte, too long) give None rather than an exception, so they answer 404 and never 500.
    """
    if "\x00" in path:
        return None
    try:
        root = base.resolve()
        target = (root / path).resolve()
        return target if target.is_relative_to(root) and target.is_file() else None
    except (OSError, ValueError, RuntimeError):  # RuntimeError: a symlink loop
        return None


def newest_reports(base: Path, limit: int = 200) -> list[Path]:
    """``<model>/<name>.html`` paths under ``base`` that would be served, newest first."""
    return _newest(base, "*/*.html", limit)


def _newest(base: Path, pattern: str, limit: int) -> list[Path]:
    """Paths matching ``pattern`` under ``base`` that would be served, newest first."""
    found: list[tuple[float, Path]] = []
    for path in base.glob(pattern):
        rel = path.relative_to(base)
        target = resolve_inside(base, rel.as_posix())
        if target is None:  # e.g. a symlink out of the root
            continue
        try:
            found.append((target.stat().st_mtime, rel))
        except OSError:  # removed since the glob saw it
            continue
    return [rel for _, rel in sorted(found, key=lambda item: item[0], reverse=True)[:limit]]


def report_dag_id(root: str, relative: Path) -> str | None:
    """The DAG whose runs wrote a report, for authorization.

    ``reports/<model>/...`` come from the model's monitor DAG (``ModelSpec.dag_id("monitor")``
    is ``<model>__monitor``). Data Docs mix every dataset's ingest runs, so they need read
    access to DAG runs in general (None).
    """
    if root == "reports" and len(relative.parts) > 1:
        return f"{relative.parts[0]}__monitor"
    return None


def check_access(request: Request, user: GetUserDep, dag_id: str | None) -> None:
    """Raise 403 unless the auth manager lets ``user`` read the runs of ``dag_id``."""
    requires_access_dag("GET", DagAccessEntity.RUN, param_dag_id=dag_id)(request, user)


def may_read(request: Request, user: GetUserDep, dag_id: str | None) -> bool:
    """``check_access`` as a yes/no, for the index."""
    try:
        check_access(request, user, dag_id)
    except HTTPException:
        return False
    return True


class SecurityHeaders:
    """Give every response of the app the strict headers unless a route set its own policy.

    Plain ASGI rather than ``BaseHTTPMiddleware`` so file responses keep streaming.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                for name, value in (
                    (b"content-security-policy", STATIC_POLICY.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                ):
                    if name not in names:
                        headers.append((name, value))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


# No /docs, /redoc or /openapi.json: they would answer without login.
reports_app = FastAPI(
    title="Airloop reports",
    dependencies=[Depends(requires_authenticated())],
    docs_url=None,
    redoc_url=None,
    openapi_url=None,
)
reports_app.add_middleware(SecurityHeaders)
# The Models view: same login, same sandboxing headers, no API docs.
reports_app.include_router(make_router(PREFIX), prefix="/models")
# The run tab: same login and headers; the route checks read access to the DAG's runs.
reports_app.include_router(make_runs_router(), prefix="/runs")


@reports_app.get("/", response_class=HTMLResponse)
def index(request: Request, user: GetUserDep) -> str:
    """Links to the Data Docs and the newest 200 reports this user may read."""
    roots = _roots()
    items = []
    if (roots["datadocs"] / "index.html").is_file() and may_read(request, user, None):
        items.append(f'<li><a href="{PREFIX}/files/datadocs/index.html">Great Expectations Data Docs</a></li>')
    readable: dict[str, bool] = {}  # one decision per model directory
    for rel in newest_reports(roots["reports"]):
        model = rel.parts[0]
        if model not in readable:
            readable[model] = may_read(request, user, report_dag_id("reports", rel))
        if readable[model]:
            href = html.escape(f"{PREFIX}/files/reports/{quote(rel.as_posix())}")
            items.append(f'<li><a href="{href}">{html.escape(rel.as_posix())}</a></li>')
    items += _validation_items(request, user)
    body = "\n".join(items) or "<li>No reports yet: run an ingest or monitor DAG.</li>"
    return f"<!doctype html><title>Airloop reports</title><h1>Airloop reports</h1><ul>{body}</ul>"


@reports_app.get("/files/{root}/{path:path}")
def report_file(root: str, path: str, request: Request, user: GetUserDep) -> FileResponse:
    """One file of a report root, sandboxed; 404 for anything that is not a file inside it."""
    base = _roots().get(root)
    target = resolve_inside(base, path) if base is not None else None
    if target is None:
        raise HTTPException(404, "no such report")
    check_access(request, user, report_dag_id(root, target.relative_to(base.resolve())))
    headers = {"Content-Security-Policy": _POLICY_BY_ROOT[root]}  # SecurityHeaders adds the rest
    media_type = CONTENT_TYPES.get(target.suffix.lower())
    if media_type is None:
        return FileResponse(
            target, media_type="application/octet-stream", headers=headers,
            filename=target.name, content_disposition_type="attachment",
        )
    return FileResponse(target, media_type=media_type, headers=headers)


def _read_record(path: Path) -> dict | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("model"), str) else None


def _validation_items(request: Request, user: GetUserDep, limit: int = 100) -> list[str]:
    """Index entries for the newest validation runs the user may read: verdict, batch, model."""
    items = []
    readable: dict[str, bool] = {}
    for rel in _newest(_validation_records(), "*/*.json", limit):
        record = _read_record(_validation_records() / rel)
        if record is None:
            continue
        model = record["model"]
        if model not in readable:
            readable[model] = may_read(request, user, f"{model}__ingest")
        if readable[model]:
            verdict = "passed" if record.get("success") else "rejected"
            href = html.escape(f"{PREFIX}/validation/{quote(rel.parent.name)}/{quote(rel.stem)}")
            items.append(
                f'<li><a href="{href}">validation {verdict}: {html.escape(str(record.get("batch")))}</a>'
                f" ({html.escape(model)})</li>"
            )
    return items


@reports_app.get("/validation/{dataset}/{result_id}", response_class=HTMLResponse)
def validation_page(dataset: str, result_id: str, request: Request, user: GetUserDep) -> HTMLResponse:
    """One validation run: verdict, failures (short escaped excerpts) and its Data Docs page,
    if Great Expectations ran. Needs read access to the runs of the model's ingest DAG."""
    base = _validation_records()
    target = resolve_inside(base, f"{dataset}/{result_id}.json")
    record = _read_record(target) if target is not None else None
    if record is None:
        raise HTTPException(404, "no such validation record")
    check_access(request, user, f"{record['model']}__ingest")
    return HTMLResponse(render_validation(record, _data_docs_href(record.get("data_docs"))))


def _data_docs_href(path: str | None) -> str | None:
    """The plugin URL of a Data Docs page given as a file path (None if outside the site)."""
    if not path:
        return None
    site = _roots()["datadocs"].resolve()
    try:
        rel = Path(path).resolve().relative_to(site)
    except (OSError, ValueError, RuntimeError):
        return None
    return f"{PREFIX}/files/datadocs/{quote(rel.as_posix())}"


def render_validation(record: dict, data_docs_href: str | None) -> str:
    """A validation record as a page. Every value is escaped: batch names and failure examples
    come from untrusted files (the examples are already short excerpts)."""
    e = lambda value: html.escape("" if value is None else str(value))  # noqa: E731
    verdict = "passed" if record.get("success") else "rejected"
    rows = "".join(
        f"<tr><td>{e(f.get('column') or '(table)')}</td><td>{e(f.get('expectation'))}</td>"
        f"<td>{e(f.get('detail'))}</td><td>{e(', '.join(map(str, f.get('examples') or [])))}</td></tr>"
        for f in record.get("failures") or [] if isinstance(f, dict)
    )
    failures = (
        "<table><tr><th>column</th><th>expectation</th><th>detail</th><th>examples</th></tr>"
        f"{rows}</table>" if rows else "<p>No failing expectation.</p>"
    )
    if data_docs_href:
        docs = f'<p><a href="{e(data_docs_href)}">Great Expectations Data Docs of this run</a></p>'
    else:
        docs = ("<p>Great Expectations did not run: the file was refused as it was read "
                "(see the failures above), so no Data Docs page covers it.</p>")
    return (
        f"<!doctype html><title>Validation {e(verdict)}: {e(record.get('batch'))}</title>"
        f"<h1>Validation {e(verdict)}: {e(record.get('batch'))}</h1>"
        f"<p>Model {e(record.get('model'))}, batch day {e(record.get('day'))}, "
        f"rows {e(record.get('rows'))}, result {e(record.get('result_id'))}.</p>"
        f"{failures}{docs}<p><a href=\"{PREFIX}/\">All reports</a></p>"
    )


class AirloopPlugin(AirflowPlugin):
    name = "airloop"
    fastapi_apps = [{"app": reports_app, "url_prefix": PREFIX, "name": "Airloop reports"}]
    external_views = [
        {"name": "Airloop reports", "href": f"{PREFIX}/", "destination": "nav", "category": "browse"},
        # Under Browse, like the reports: the menu opens it in a tab of its own, where its links
        # work. Airflow 3.3's top-level nav entries render an external href as a button that does
        # not navigate, and its embedded views (url_route) run in an iframe sandbox that allows no
        # scripts and no way out, so every link (Airflow, MLflow, Evidently) would open blank.
        {"name": "Models", "href": f"{PREFIX}/models/", "destination": "nav", "category": "browse"},
        # A tab on every DAG run page (Airflow fills in the ids); it needs a url_route to be a tab.
        {"name": "Airloop", "href": f"{PREFIX}/runs/{{DAG_ID}}/{{RUN_ID}}", "destination": "dag_run",
         "url_route": "airloop"},
    ]
