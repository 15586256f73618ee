"""Native rehearsal of docker-compose.yaml: the compose services started as processes with the
same commands and environment (see ``native.py`` for the translation), against this machine's
Postgres and Redis, driven from outside like a user would: Airflow's REST API v2 with a JWT.

Flow: land ten daily batches, unpause the model's DAGs, trigger ingest, let the validated-data
Asset schedule the features DAG, trigger training (reason "rehearsal"), let the champion Asset
schedule packaging, then check the tasks ran on the Celery worker and the Bento server answers
``/predict`` with the promoted version. Step timings are printed (``pytest -s``) and written
to ``rehearsal-timings.json`` in the rehearsal's directory.

airflow-init runs with ``AIRLOOP_UNPAUSE_DAGS`` set to the Asset-scheduled DAGs only (a
documented compose setting): unpausing a time-scheduled DAG starts its latest due run at once,
and the rehearsal lands its data first. It unpauses ingest and train itself, over REST.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import json
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from airloop.testing import AirflowREST

sys.path.insert(0, str(Path(__file__).parent))
from native import NativeStack  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.services, pytest.mark.timeout(1800)]

MODEL = "late_delivery"
DAYS = 11  # 7 warm-up days (the spec), then at least 1 training day and the 3-day holdout
REASON = "rehearsal"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    native = NativeStack(
        tmp_path_factory.mktemp("native-stack"),
        overrides={"AIRLOOP_UNPAUSE_DAGS": f"^{MODEL}__(features|package)$"},
    )
    pool = ThreadPoolExecutor(1)
    try:
        native.load()
        # Like `docker compose up -d`: the services come up in dependency order in the background;
        # the pipeline starts once Airflow answers, every healthcheck is checked meanwhile.
        native.start(background=True)
        native.wait_healthy(["airflow-apiserver", "airflow-scheduler"])
        native.mark("Airflow up")
        native.all_healthy = pool.submit(native.wait_healthy, parallel=False)
        yield native
    finally:
        try:
            native.stop()
            pool.shutdown(wait=False, cancel_futures=True)
        finally:
            native.cleanup()  # drop the databases, flush the Redis dbs
            (native.workdir / "rehearsal-timings.json").write_text(json.dumps(native.timings, indent=2))
            print("\nrehearsal timings (s since start):\n" + "\n".join(f"  {v:>6}  {k}" for k, v in native.timings.items()))


@pytest.fixture(scope="module")
def api(stack) -> AirflowREST:
    api = AirflowREST(stack.url("airflow-apiserver", 8080), "admin", stack.dotenv["AIRLOOP_ADMIN_PASSWORD"])
    api.PAGE = 4  # the lists read here (11 ingest events, every run) span several pages
    return api


@contextlib.contextmanager
def service_settings(stack: NativeStack, service: str):
    """Airloop's settings as the given service sees them."""
    from airloop.settings import environ, get_settings

    env = {k: v for k, v in stack.services[service].env.items() if k.startswith(("AIRLOOP_", "MLFLOW_", "BENTOML_"))}
    with environ(env):
        yield get_settings()


def _ts(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def wait_for_all_runs(api: AirflowREST, dag_id: str, timeout: float) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        runs = api.runs(dag_id)
        if runs and all(r["state"] in ("success", "failed") for r in runs):
            return runs
        if time.monotonic() > deadline:
            raise TimeoutError(f"{dag_id} runs not finished after {timeout}s: {[(r['dag_run_id'], r['state']) for r in runs]}")
        time.sleep(2)


def wait_for_asset_run(api: AirflowREST, dag_id: str, after: dt.datetime, timeout: float) -> dict:
    """The first finished run of an Asset-scheduled DAG queued after the producing event."""
    deadline = time.monotonic() + timeout
    while True:
        runs = [r for r in api.runs(dag_id) if r.get("queued_at") and _ts(r["queued_at"]) >= after]
        done = [r for r in runs if r["state"] in ("success", "failed")]
        if done and not [r for r in runs if r["state"] in ("queued", "running")]:
            return done[-1]
        if time.monotonic() > deadline:
            raise TimeoutError(f"no finished {dag_id} run after {after}: {[(r['dag_run_id'], r['state']) for r in runs]}")
        time.sleep(2)


def failed_tasks(api: AirflowREST, dag_id: str, run_id: str) -> list[str]:
    return [f"{t['task_id']}={t['state']}" for t in api.task_instances(dag_id, run_id) if t["state"] != "success"]


def test_anonymous_requests_are_rejected(stack, api):
    assert requests.get(f"{api.url}/api/v2/dags", timeout=10).status_code in (401, 403)
    bad = requests.post(f"{api.url}/auth/token", json={"username": "admin", "password": "change-me"}, timeout=10)
    assert bad.status_code in (401, 403)
    # The password comes from .env (written by airflow-init), not generated.
    assert api("GET", "/dags", params={"limit": 1})["total_entries"] > 0
    # MLflow wants a login (its basic-auth app), and answers only the Host names compose gives it.
    stack.wait_healthy(["mlflow"])
    mlflow = stack.url("mlflow", 5000)
    search = f"{mlflow}/api/2.0/mlflow/experiments/search?max_results=1"
    assert requests.get(search, timeout=10).status_code == 401
    assert requests.get(search, auth=(mlflow_login(stack)[0], "not-the-password-1234"), timeout=10).status_code == 401
    # The first request past the login can take minutes on a busy machine (each MLflow worker
    # loads the auth app then); refusals come at once.
    assert requests.get(search, auth=mlflow_login(stack), timeout=300).status_code == 200
    assert requests.get(search, auth=mlflow_login(stack), headers={"Host": "evil.example"},
                        timeout=10).status_code in (400, 403)


def mlflow_login(stack: NativeStack) -> tuple[str, str]:
    env = stack.services["mlflow"].env
    return env["MLFLOW_AUTH_ADMIN_USERNAME"], env["MLFLOW_AUTH_ADMIN_PASSWORD"]


def test_pipeline_runs_on_celery_and_serves_the_promoted_model(stack, api):
    from airloop.spec import example_data

    datagen = example_data("late_delivery")

    with service_settings(stack, "airflow-worker") as settings:
        landing = settings.landing_dir / "orders"
        today = dt.datetime.now(dt.timezone.utc).date()
        batches = [datagen.write_batch(landing, today - dt.timedelta(days=DAYS - i)) for i in range(DAYS)]
    stack.mark(f"{DAYS} batches landed")

    ingest, features, train, package = (f"{MODEL}__{s}" for s in ("ingest", "features", "train", "package"))
    assert not api.wait_for_dag(features)["is_paused"], "airflow-init unpauses the Asset-scheduled DAGs"
    assert not api.wait_for_dag(package)["is_paused"]

    # Ingest: unpausing also starts the daily run that is due; whichever runs first takes the batches.
    api.wait_for_dag(ingest)
    api("PATCH", f"/dags/{ingest}", json={"is_paused": False})
    manual = api.trigger(ingest)
    runs = wait_for_all_runs(api, ingest, timeout=900)
    stack.mark("ingest runs done")
    assert all(r["state"] == "success" for r in runs), [(r["dag_run_id"], failed_tasks(api, ingest, r["dag_run_id"])) for r in runs]
    assert manual in {r["dag_run_id"] for r in runs}
    validated = api.events(ingest)
    assert sorted(e["extra"]["batch"] for e in validated) == sorted(p.name for p in batches)

    # Features: scheduled by the validated-data Asset.
    run = wait_for_asset_run(api, features, after=max(_ts(e["timestamp"]) for e in validated), timeout=600)
    stack.mark("features run done")
    assert run["state"] == "success", failed_tasks(api, features, run["dag_run_id"])

    # Train: unpause (the weekly run that is due starts too), trigger with a reason.
    api("PATCH", f"/dags/{train}", json={"is_paused": False})
    rehearsal = api.trigger(train, conf={"reason": REASON})
    runs = wait_for_all_runs(api, train, timeout=900)
    stack.mark("train runs done")
    assert all(r["state"] == "success" for r in runs), [(r["dag_run_id"], failed_tasks(api, train, r["dag_run_id"])) for r in runs]
    champions = api.events(train)
    assert len(champions) == 1, "the same data trained twice: only the first version is promoted"
    champion = str(champions[0]["extra"]["version"])
    reasons = {r["dag_run_id"]: r["conf"].get("reason", "manual") for r in runs}
    assert reasons[rehearsal] == REASON

    # Package: scheduled by the champion Asset; it waits until the Bento server serves it.
    stack.wait_started(timeout=300)
    run = wait_for_asset_run(api, package, after=_ts(champions[0]["timestamp"]), timeout=600)
    stack.mark("package run done")
    assert run["state"] == "success", failed_tasks(api, package, run["dag_run_id"])
    served = {t["task_id"]: t["state"] for t in api.task_instances(package, run["dag_run_id"])}
    assert served == {"build_bento": "success", "confirm_served": "success"}

    # MLflow's registry agrees, and the Bento server answers with that version.
    mlflow = stack.url("mlflow", 5000)
    alias = requests.get(f"{mlflow}/api/2.0/mlflow/registered-models/alias", auth=mlflow_login(stack),
                         params={"name": MODEL, "alias": "champion"}, timeout=10).json()
    assert alias["model_version"]["version"] == champion
    with open(batches[-1]) as f:
        restaurant = int(next(csv.DictReader(f))["restaurant_id"])
    bento = stack.url("bento", 3000)
    answer = requests.post(f"{bento}/predict", json={
        "restaurant_id": restaurant, "distance_km": 3.2, "items": 2, "order_hour": 19}, timeout=30)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model_version"] == champion and not body["features_missing"], body
    assert 0.0 <= body["prediction"] <= 1.0
    stack.mark("prediction answered")

    # Every task ran on the Celery worker: the worker received each one from the Redis queue.
    worker_log = stack.services["airflow-worker"].logs(10**8)
    received = re.findall(r"Executing workload in Celery: .*?task_id='([^']+)', dag_id='([^']+)', run_id='([^']+)'",
                          worker_log)
    for dag_id in (ingest, features, train, package):
        for r in api.runs(dag_id):
            for ti in api.task_instances(dag_id, r["dag_run_id"]):
                if ti["state"] == "skipped" and ti["try_number"] == 0:
                    continue  # never queued (e.g. announce_champion of an unpromoted run)
                assert ti["queue"] == "default" and ti["hostname"], ti
                assert (ti["task_id"], dag_id, r["dag_run_id"]) in set(received), f"{dag_id}.{ti['task_id']} not in worker log"


def test_every_service_passes_its_compose_healthcheck(stack):
    healthy = stack.all_healthy.result(timeout=900)  # the dag-processor, triggerer and worker checks included
    stack.wait_started(timeout=60)
    assert set(healthy) == {n for n, s in stack.services.items() if not s.one_shot}
    assert stack.services["airflow-init"].exited is not None
    init_log = stack.services["airflow-init"].logs(20000)
    assert "airflow-init done" in init_log and f"{MODEL}__features" in init_log
