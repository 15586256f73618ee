"""Airloop's reports inside the Airflow UI.

A FastAPI app mounted under the api-server at ``/airloop`` serves the Great Expectations Data
Docs and the Evidently drift reports from ``AIRLOOP_HOME``; an external view puts it in the
UI's navigation. Every route requires an authenticated Airflow user (the UI's session cookie
or an API bearer token), like the rest of the API.
"""

from __future__ import annotations

import html
from pathlib import Path

from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import FileResponse, HTMLResponse

from airflow.api_fastapi.core_api.security import requires_authenticated
from airflow.plugins_manager import AirflowPlugin

PREFIX = "/airloop"


def _roots() -> dict[str, Path]:
    from airloop.settings import get_settings

    s = get_settings()
    return {
        "reports": s.reports_dir,
        "datadocs": s.validation_dir / "gx" / "uncommitted" / "data_docs" / "local_site",
    }


reports_app = FastAPI(title="Airloop reports", dependencies=[Depends(requires_authenticated())])


@reports_app.get("/", response_class=HTMLResponse)
def index() -> str:
    roots = _roots()
    items = []
    docs = roots["datadocs"] / "index.html"
    if docs.exists():
        items.append(f'<li><a href="{PREFIX}/files/datadocs/index.html">Great Expectations Data Docs</a></li>')
    for report in sorted(roots["reports"].glob("*/*.html"), key=lambda p: p.stat().st_mtime, reverse=True)[:200]:
        rel = report.relative_to(roots["reports"]).as_posix()
        items.append(f'<li><a href="{PREFIX}/files/reports/{html.escape(rel)}">{html.escape(rel)}</a></li>')
    body = "\n".join(items) or "<li>No reports yet: run an ingest or monitor DAG.</li>"
    return f"<!doctype html><title>Airloop reports</title><h1>Airloop reports</h1><ul>{body}</ul>"


@reports_app.get("/files/{root}/{path:path}")
def report_file(root: str, path: str) -> FileResponse:
    base = _roots().get(root)
    if base is None:
        raise HTTPException(404, f"unknown report root {root!r}")
    target = (base / path).resolve()
    if not target.is_relative_to(base.resolve()) or not target.is_file():
        raise HTTPException(404, "no such report")
    return FileResponse(target)


class AirloopPlugin(AirflowPlugin):
    name = "airloop"
    fastapi_apps = [{"app": reports_app, "url_prefix": PREFIX, "name": "Airloop reports"}]
    external_views = [
        {"name": "Airloop reports", "href": f"{PREFIX}/", "destination": "nav", "category": "browse"},
    ]
