"""Fault: the Airflow metadata database (Postgres) restarts under a running scheduler.

A private Postgres cluster holds Airflow's metadata; Airflow's own components run against it
with the LocalExecutor (``AirflowStack``). While the late_delivery ingest run is validating and
versioning a landed batch, Postgres is stopped (``pg_ctl stop -m fast``: every session ends), kept
down a few seconds and started again.

What Airflow 3.3 does, as this test pins it down: the scheduler, the dag-processor and the
triggerer do not ride it out; each exits with status 1 on the psycopg2 ``OperationalError``
(the scheduler after its running tasks end). The api-server stays up and answers again once
the database is back (``[database] sql_alchemy_pool_pre_ping`` is on by default). Nothing
inside Airflow starts the exited components again: a supervisor must (compose's
``restart: always``, Kubernetes restarting the container; here ``restart_exited()``). Then the
run finishes, and the batch is versioned and announced exactly once.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import time

import pytest
import requests

from airloop.spec import example_data
from airloop.testing import AirflowStack, PostgresServer

pytestmark = pytest.mark.slow

datagen = example_data("late_delivery")
DOWN_SECONDS = 6
DAY = dt.date(2026, 10, 1)
EXITING = {"scheduler", "dag-processor", "triggerer"}
# How Postgres going away reads in a component's log: which one depends on whether the component
# asked while the server was stopping or after it had stopped.
LOST_CONNECTION = (
    "Connection refused",
    "the database system is shutting down",
    "terminating connection due to administrator command",
    "server closed the connection unexpectedly",
)


@pytest.fixture
def postgres():
    with PostgresServer() as server:
        yield server


def wait_for(condition, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not after {timeout} s")
        time.sleep(interval)
    return value


def commits_of(workspace, path: str) -> list[str]:
    out = subprocess.run(["git", "-C", str(workspace), "log", "--format=%H", "--", path],
                         capture_output=True, text=True, check=True).stdout
    return out.split()


def test_metadata_db_restart_under_a_running_ingest(tmp_path, postgres, demo_spec, monkeypatch):
    from airloop.settings import get_settings

    monkeypatch.setenv("AIRLOOP_HOME", str(tmp_path / "airloop"))
    settings = get_settings()
    url = postgres.create_database("airflow").replace("postgresql://", "postgresql+psycopg2://", 1)
    env = {"AIRLOOP_HOME": str(settings.home), "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": url}
    dag_id = demo_spec.dag_id("ingest")
    relpath = f"{demo_spec.dataset.name}/orders_{DAY:%Y-%m-%d}.csv"
    private_copy = settings.dvc_workspace / demo_spec.dataset.name / f".orders_{DAY:%Y-%m-%d}.csv.tmp"
    timings = {}

    with AirflowStack(tmp_path / "airflow", env=env) as stack:
        started = time.monotonic()
        stack.unpause(dag_id)
        # Unpausing starts the daily run at once: let it find nothing before the batch lands.
        for run in wait_for(lambda: stack.runs(dag_id), 60, "the scheduled run"):
            assert stack.wait_for_run(dag_id, run["dag_run_id"], timeout=180)["state"] == "success"
        datagen.write_batch(settings.landing_dir / demo_spec.dataset.name, DAY)
        run_id = stack.trigger(dag_id, conf={"batch_date": DAY.isoformat()})

        # The fault lands while the batch is being validated and versioned: its private copy in
        # the DVC workspace exists from the read until the commit (no database needed there).
        wait_for(private_copy.exists, 180, "validate_and_publish at work", interval=0.02)
        fault = time.monotonic()
        postgres.stop()
        time.sleep(DOWN_SECONDS)
        postgres.start()
        timings["down"] = time.monotonic() - fault

        # The scheduler, dag-processor and triggerer exit on the lost connection; the api-server stays.
        exited = wait_for(lambda: EXITING <= set(stack.exited()) and stack.exited(), 180, "components exiting")
        assert exited == dict.fromkeys(EXITING, 1), exited
        for name in EXITING:
            log = stack.logs(name)
            lost = [phrase for phrase in LOST_CONNECTION if phrase in log]
            assert "OperationalError" in log and lost, f"{name}:\n{log[-3000:]}"
        health = requests.get(f"{stack.url}/api/v2/monitor/health", timeout=10).json()
        assert health["metadatabase"]["status"] == "healthy"

        # Nothing in Airflow brings them back; a supervisor does. Then the run goes on.
        assert set(stack.restart_exited()) == EXITING
        stack.wait_healthy(180)
        run = stack.wait_for_run(dag_id, run_id, timeout=300)
        timings["recovered"] = time.monotonic() - fault
        tasks = {t["task_id"]: t for t in stack.task_instances(dag_id, run_id)}
        assert run["state"] == "success", (tasks, stack.logs("scheduler")[-3000:])
        publish = tasks["validate_and_publish"]
        assert (publish["state"], tasks["announce_validated"]["state"]) == ("success", "success")

        # Done once: one commit of the batch's .dvc, one validated event carrying its md5, the rows published.
        assert len(commits_of(settings.dvc_workspace, f"{relpath}.dvc")) == 1
        dvc_md5 = (settings.dvc_workspace / f"{relpath}.dvc").read_text().split("md5: ", 1)[1].split()[0]
        events = stack.api("GET", "/assets/events", params={"source_dag_id": dag_id})["asset_events"]
        assert [(e["extra"]["batch"], e["extra"]["md5"]) for e in events] == [(f"orders_{DAY:%Y-%m-%d}.csv", dvc_md5)]
        assert (settings.offline_dir / demo_spec.dataset.name / f"orders_{DAY:%Y-%m-%d}.parquet").exists()

        # A rerun for the same day finds the batch versioned, so nothing pending: no new version or event.
        again = stack.trigger(dag_id, conf={"batch_date": DAY.isoformat()})
        assert stack.wait_for_run(dag_id, again, timeout=180)["state"] == "success"
        states = {t["task_id"]: t["state"] for t in stack.task_instances(dag_id, again)}
        assert (states["validate_and_publish"], states["announce_validated"]) == ("skipped", "skipped"), states
        assert len(commits_of(settings.dvc_workspace, f"{relpath}.dvc")) == 1
        assert len(stack.api("GET", "/assets/events", params={"source_dag_id": dag_id})["asset_events"]) == 1
        timings["total"] = time.monotonic() - started
    print(f"validate_and_publish tries: {publish['try_number']}; seconds: "
          + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
