"""Airflow's real components (api-server, scheduler, dag-processor, triggerer) driving Airloop
DAGs over the REST API v2, as a user's script would."""

from __future__ import annotations

import datetime as dt
import html
import re

import pytest
import requests

from airloop.spec import example_data
from airloop.testing import AirflowStack

datagen = example_data("late_delivery")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    home = tmp_path_factory.mktemp("airloop-stack")
    env = {"AIRLOOP_HOME": str(home / "airloop")}
    with AirflowStack(home / "airflow", env=env) as running:
        running.airloop_home = home / "airloop"
        yield running


def test_anonymous_api_requests_are_rejected(stack):
    assert requests.get(f"{stack.url}/api/v2/dags", timeout=10).status_code in (401, 403)
    bad = requests.post(f"{stack.url}/auth/token", json={"username": "admin", "password": "nope"}, timeout=10)
    assert bad.status_code in (401, 403)
    # The reports plugin mounted under the api-server is protected the same way.
    assert requests.get(f"{stack.url}/airloop/", timeout=10).status_code in (401, 403)
    assert requests.get(f"{stack.url}/airloop/files/reports/x.html", timeout=10).status_code in (401, 403)


def test_reports_plugin_serves_data_docs_to_a_logged_in_user(stack):
    headers = {"Authorization": f"Bearer {stack.token()}"}
    index = requests.get(f"{stack.url}/airloop/", headers=headers, timeout=10)
    assert index.status_code == 200 and "Airloop reports" in index.text
    # Path escapes are sent as-is (an HTTP client would normalize '..' away) in
    # tests/dags/test_reports_security.py, against a file that really exists outside the root.


def test_ingest_triggered_over_rest_emits_the_validated_asset(stack, demo_spec, monkeypatch):
    from airloop.settings import get_settings

    monkeypatch.setenv("AIRLOOP_HOME", str(stack.airloop_home))
    landing = get_settings().landing_dir / demo_spec.dataset.name
    day = dt.date(2026, 10, 1)
    datagen.write_batch(landing, day)
    dag_id = demo_spec.dag_id("ingest")
    stack.unpause(dag_id)
    run_id = stack.trigger(dag_id, conf={"batch_date": day.isoformat()})
    run = stack.wait_for_run(dag_id, run_id, timeout=300)
    assert run["state"] == "success", stack.logs("scheduler")[-3000:]
    # Unpausing also lets the daily schedule start a run; whichever run came first ingested
    # the batch, and the other found it already versioned: one event in all.
    for other in stack.runs(dag_id):
        assert stack.wait_for_run(dag_id, other["dag_run_id"], timeout=300)["state"] == "success"
    events = stack.api("GET", "/assets/events", params={"source_dag_id": dag_id})
    extras = [e["extra"] for e in events["asset_events"]]
    assert [e["batch"] for e in extras] == ["orders_2026-10-01.csv"]
    assert extras[0]["md5"]


def test_data_docs_are_reachable_from_the_ui_after_an_ingest(stack):
    headers = {"Authorization": f"Bearer {stack.token()}"}
    index = requests.get(f"{stack.url}/airloop/", headers=headers, timeout=10)
    assert "Great Expectations Data Docs" in index.text
    docs = requests.get(f"{stack.url}/airloop/files/datadocs/index.html", headers=headers, timeout=10)
    assert docs.status_code == 200 and "late_delivery" in docs.text
    # The ingest's asset event links to its validation record's page, which links to the run's
    # own Data Docs page: URLs of the UI, never file paths.
    events = stack.api("GET", "/assets/events", params={"source_dag_id": "late_delivery__ingest"})
    page = events["asset_events"][0]["extra"]["validation_page"]
    record = requests.get(f"{stack.url}{page}", headers=headers, timeout=10)
    assert record.status_code == 200 and "Validation passed: orders_2026-10-01.csv" in record.text
    run_docs = re.search(r'href="(/airloop/files/datadocs/[^"]+)">Great Expectations Data Docs of this run', record.text)
    assert run_docs, record.text[:1000]
    assert requests.get(f"{stack.url}{html.unescape(run_docs.group(1))}", headers=headers, timeout=10).status_code == 200


def _mapped_libraries(pid: int) -> set[str]:
    """The compiled libraries of pandas and scikit-learn mapped into a process."""
    maps = open(f"/proc/{pid}/maps").read()
    return {name for name in ("pandas/_libs", "sklearn/") if name in maps}


def test_task_processes_are_forked_with_the_libraries_loaded(stack):
    """The scheduler imports the tasks' libraries before it forks its LocalExecutor workers
    (airloop.preload): every worker, and so every task forked from it, has them loaded. The
    dag-processor and the api-server load none of them."""
    import psutil

    scheduler = psutil.Process(stack.procs["scheduler"].pid)
    assert "airloop preload:" in stack.logs("scheduler")
    workers = [p for p in scheduler.children() if "LocalExecutor" in " ".join(p.cmdline())]
    assert workers, [p.cmdline() for p in scheduler.children()]
    for worker in workers:
        assert _mapped_libraries(worker.pid) == {"pandas/_libs", "sklearn/"}, worker.cmdline()
    for name in ("dag-processor", "api-server"):
        assert _mapped_libraries(stack.procs[name].pid) == set(), name


def test_every_run_is_listed_past_one_page(stack, demo_spec, monkeypatch):
    """The demo and the tests wait on run lists; a list cut at one page would hide the newest runs."""
    dag_id = demo_spec.dag_id("rollback")  # paused: its triggered runs stay queued and touch nothing
    stack.pause(dag_id)
    triggered = [stack.trigger(dag_id, conf={"reason": f"page test {i}"}) for i in range(5)]
    monkeypatch.setattr(stack, "PAGE", 2)
    listed = [run["dag_run_id"] for run in stack.runs(dag_id)]
    assert listed == triggered  # all five, oldest first, over three pages
    assert [run["dag_run_id"] for run in stack.runs_of([dag_id])] == triggered
