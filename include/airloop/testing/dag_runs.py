"""DAG runs in this process (``dag.test()`` on a migrated metadata DB) and the demo as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from airloop.settings import REPO_ROOT

if TYPE_CHECKING:
    from airflow.sdk import DAG

__all__ = ["DagRunResult", "load_dag", "migrate_db", "run_dag", "run_demo"]

_MIGRATED: set[str] = set()


def migrate_db() -> None:
    """Create/upgrade the metadata DB named by the current Airflow config (once per process)."""
    from airflow.configuration import conf

    url = conf.get("database", "sql_alchemy_conn")
    if url in _MIGRATED:
        return
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    from airflow.utils.db import initdb

    initdb()
    _MIGRATED.add(url)


def load_dag(dag_id: str, dags_folder: Path | None = None) -> "DAG":
    """The DAG ``dag_id`` parsed from ``dags_folder`` (the project's by default); fails on any import error."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(dags_folder or REPO_ROOT / "dags"), safe_mode=False)
    if bag.import_errors:
        raise RuntimeError(f"DAG import errors: {bag.import_errors}")
    if dag_id not in bag.dags:
        raise KeyError(f"no DAG {dag_id!r}; have {sorted(bag.dag_ids)}")
    return bag.dags[dag_id]


@dataclass
class DagRunResult:
    """A finished DAG run: its state and each task's (mapped tasks as ``task[i]``)."""

    dag_id: str
    run_id: str
    state: str
    tasks: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.state == "success"


def run_dag(dag_id: str, conf: dict | None = None) -> DagRunResult:
    """Run one DAG run in-process with ``dag.test()`` and report every task's final state."""
    migrate_db()
    dag = load_dag(dag_id)
    dag_run = dag.test(run_conf=conf or {})
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = (
            session.query(TaskInstance.task_id, TaskInstance.map_index, TaskInstance.state)
            .filter(TaskInstance.dag_id == dag_id, TaskInstance.run_id == dag_run.run_id)
            .all()
        )
    tasks = {
        (task_id if map_index < 0 else f"{task_id}[{map_index}]"): str(state) for task_id, map_index, state in rows
    }
    return DagRunResult(dag_id=dag_id, run_id=dag_run.run_id, state=str(dag_run.state), tasks=tasks)


def run_demo(
    home: Path, args: Sequence[str] = (), *, quiet: bool = False, timeout: float | None = None
) -> tuple[subprocess.CompletedProcess, dict]:
    """``python -m airloop.demo`` in its own AIRLOOP_HOME, with none of this process's Airloop,
    Airflow or MLflow settings. Returns the finished process and the demo's summary."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRLOOP_", "AIRFLOW_", "AIRFLOW__", "MLFLOW_"))}
    env["AIRLOOP_HOME"] = str(home)
    proc = subprocess.run(
        [sys.executable, "-m", "airloop.demo", *args], env=env, text=True, timeout=timeout,
        stdout=subprocess.DEVNULL if quiet else subprocess.PIPE, stderr=None if quiet else subprocess.PIPE,
    )
    return proc, json.loads((Path(home) / "demo-summary.json").read_text())
