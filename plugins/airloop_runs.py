"""The "Airloop" tab of a DAG run page: what each task of the run decided, in one screen.

Airflow shows it as a tab on every run page (an external view with the ``dag_run``
destination, ``/dags/<dag>/runs/<run>/plugin/airloop``), in an iframe. The page is the route
``GET /airloop/runs/{dag_id}/{run_id}`` of the reports app (``airloop_plugin``), so it has the
same login, the same sandboxing headers and no API docs, and needs read access to the DAG's runs.

It reads the run's task instances and their return values (XComs) from Airflow's own database:
the gate's decision on a train run, the drift verdict and the retrain policy's decision on a
monitor run, each batch's validation result on an ingest run. A ``reason`` is the headline.
Everything shown is escaped (XComs carry names and values that came from data files), and
nothing is a link: the tab's frame is sandboxed without a login, so links would open blank; the
addresses are shown as text, and the Models view (under Browse) links them all.
"""

from __future__ import annotations

import html
import json
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.common.db.common import SessionDep
from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag

# The keys of a task's return value that say what the run decided, in the order shown first.
DECISION_KEYS = ("promoted", "trigger", "status", "reason")
# Longest value shown in full; longer ones (feature lists, long messages) are cut.
MAX_VALUE_CHARS = 600

_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:1rem;color:#1a202c}
h1{font-size:1.2rem;margin:0 0 .5rem}h2{font-size:1rem;margin:1.25rem 0 .3rem}
table{border-collapse:collapse;margin:.25rem 0 .75rem}td,th{border:1px solid #cbd5e0;padding:.2rem .5rem;
text-align:left;vertical-align:top}th{background:#edf2f7;font-weight:600}
.decision{background:#f0fff4;border:1px solid #38a169;padding:.4rem .6rem;margin:.3rem 0}
.refused{background:#fff5f5;border-color:#c53030}.muted{color:#718096}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, sort_keys=True)
    if len(text) > MAX_VALUE_CHARS:
        text = f"{text[:MAX_VALUE_CHARS]}… ({len(text)} characters)"
    return _e(text)


def task_label(task: dict) -> str:
    """``task_id``, with ``[i]`` for a mapped task instance."""
    index = task.get("map_index", -1)
    return task["task_id"] if index is None or index < 0 else f"{task['task_id']}[{index}]"


def decisions(tasks: list[dict]) -> list[tuple[str, dict]]:
    """The tasks whose return value holds a decision (a ``reason``), with those values."""
    return [
        (task_label(t), t["value"]) for t in tasks
        if isinstance(t.get("value"), dict) and t["value"].get("reason") is not None
    ]


def _decision(label: str, value: dict) -> str:
    refused = value.get("promoted") is False or value.get("status") == "refused"
    parts = [f"<b>{_e(label)}</b>"] + [
        f"{_e(key)}: <b>{_value(value[key])}</b>" for key in DECISION_KEYS if key in value and key != "reason"
    ]
    return (
        f'<div class="decision{" refused" if refused else ""}">{" · ".join(parts)}'
        f"<br>{_e(value['reason'])}</div>"
    )


def _returned(value: Any) -> str:
    if isinstance(value, dict):
        rows = "".join(f"<tr><th>{_e(k)}</th><td>{_value(v)}</td></tr>" for k, v in value.items())
        return f"<table>{rows}</table>"
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        keys = list(dict.fromkeys(k for v in value for k in v))
        head = "".join(f"<th>{_e(k)}</th>" for k in keys)
        body = "".join("<tr>" + "".join(f"<td>{_value(v.get(k))}</td>" for k in keys) + "</tr>" for v in value)
        return f"<table><tr>{head}</tr>{body}</table>"
    return f"<p>{_value(value)}</p>"


def render_run(dag_id: str, run_id: str, tasks: list[dict]) -> str:
    """The tab's page: decisions first, then each task's state and return value.

    ``tasks``: one dict per task instance in run order, with ``task_id``, ``map_index``,
    ``state`` and, if it returned something, ``value``.
    """
    found = decisions(tasks)
    head = "".join(_decision(label, value) for label, value in found) or (
        '<p class="muted">No task of this run has recorded a decision.</p>'
    )
    rows = "".join(
        f"<tr><td>{_e(task_label(t))}</td><td>{_e(t.get('state') or 'no state')}</td></tr>" for t in tasks
    )
    sections = "".join(
        f"<h2>{_e(task_label(t))} returned</h2>{_returned(t['value'])}" for t in tasks if "value" in t
    )
    return (
        f"<!doctype html><title>Airloop: {_e(dag_id)}</title><style>{_STYLE}</style>"
        f"<h1>{_e(dag_id)} <span class=\"muted\">{_e(run_id)}</span></h1>{head}"
        f"<table><tr><th>task</th><th>state</th></tr>{rows}</table>{sections}"
        '<p class="muted">Reports, MLflow runs and lineage: Browse → Models.</p>'
    )


def run_tasks(session, dag_id: str, run_id: str) -> list[dict] | None:
    """The run's task instances with their return values, or ``None`` if there is no such run."""
    from sqlalchemy import select

    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel

    run = session.scalar(select(DagRun.id).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))
    if run is None:
        return None
    instances = session.execute(
        select(TaskInstance.task_id, TaskInstance.map_index, TaskInstance.state, TaskInstance.start_date)
        .where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)
    ).all()
    returned = {
        (x.task_id, x.map_index): XComModel.deserialize_value(x)
        for x in session.scalars(XComModel.get_many(run_id=run_id, dag_ids=dag_id, key="return_value"))
    }
    tasks = []
    for ti in sorted(instances, key=lambda t: (t.start_date is None, t.start_date or 0, t.task_id, t.map_index)):
        task = {"task_id": ti.task_id, "map_index": ti.map_index, "state": ti.state}
        if (ti.task_id, ti.map_index) in returned:
            task["value"] = returned[(ti.task_id, ti.map_index)]
        tasks.append(task)
    return tasks


def make_router() -> APIRouter:
    """The run tab's route (the router goes under ``/runs``)."""
    router = APIRouter()

    @router.get("/{dag_id}/{run_id}", response_class=HTMLResponse)
    def run_page(dag_id: str, run_id: str, request: Request, user: GetUserDep, session: SessionDep) -> HTMLResponse:
        requires_access_dag("GET", DagAccessEntity.RUN, param_dag_id=dag_id)(request, user)
        tasks = run_tasks(session, dag_id, run_id)
        if tasks is None:
            raise HTTPException(404, "no such DAG run")
        return HTMLResponse(render_run(dag_id, run_id, tasks), headers={"Cache-Control": "no-store"})

    return router
