"""The ``airloop`` command and the promote / rollback actions, against a real Airflow.

One module-wide stack: api-server, scheduler, dag-processor and triggerer on an AIRLOOP_HOME
where two versions of the demo model are registered (v1 promoted by the gate; v2, trained on
shuffled labels, rejected by the gate at the roc_auc floor: @challenger), trained while Airflow
starts. The read commands and the error cases run ``airloop`` as a subprocess, as a user would;
the actions are triggered with the official ``apache-airflow-client`` and read back from Airflow (run, conf, triggering user,
the task's result) and from the registry (where ``@champion`` points), then once more from the
command line. A second user with Airflow's viewer role reads but may not trigger. Each model's
prediction service is configured where nothing listens.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from airloop.settings import Settings
from airloop.testing import AirflowStack, free_port

pytestmark = pytest.mark.slow

AIRLOOP = str(Path(sys.executable).parent / "airloop")
MODEL = "late_delivery"


@dataclass
class Trained:
    stack: AirflowStack
    settings: Settings
    spec: object
    good: str  # promoted by the gate at training time
    bad: str  # misses the roc_auc floor


@pytest.fixture(scope="module")
def trained(tmp_path_factory, demo_spec, train_example_versions) -> Trained:
    from airloop import promotion
    from airloop.settings import ensure_dirs, environ, get_settings

    path = tmp_path_factory.mktemp("cli") / "airloop"
    with environ({"AIRLOOP_HOME": str(path), "AIRLOOP_SERVE_URL": f"http://127.0.0.1:{free_port()}",
                  "MLFLOW_TRACKING_URI": None}):
        settings = ensure_dirs(get_settings())
    # A second user with the viewer role: may read everything, may trigger nothing.
    users = {"AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,viewer:viewer"}
    stack = AirflowStack(path.parent / "airflow", env={**settings.as_env(), **users})
    try:
        with ThreadPoolExecutor(1) as pool:  # the models train while Airflow starts
            starting = pool.submit(stack.start, 300)  # generous: training competes for the 2 cores
            ((good, good_metrics), (bad, bad_metrics)), holdout = train_example_versions(demo_spec, settings)
            assert promotion.gate(demo_spec, good, holdout, good_metrics, actor="test", settings=settings).promoted
            assert not promotion.gate(demo_spec, bad, holdout, bad_metrics, actor="test", settings=settings).promoted
            starting.result()
        for stage in ("promote", "rollback"):
            stack.unpause(demo_spec.dag_id(stage))
        yield Trained(stack, settings, demo_spec, good, bad)
    finally:
        stack.stop()


def airloop(trained: Trained, *args: str, **env: str) -> subprocess.CompletedProcess:
    """``airloop ARGS`` as a user runs it: only the AIRLOOP_AIRFLOW_* variables point it at Airflow."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AIRLOOP_", "AIRFLOW", "MLFLOW_"))}
    login = {"AIRLOOP_AIRFLOW_URL": trained.stack.url, "AIRLOOP_AIRFLOW_PASSWORD": trained.stack.password}
    return subprocess.run([AIRLOOP, *args], env={**base, **login, **env}, capture_output=True, text=True,
                          timeout=300)


def champion(trained: Trained) -> str | None:
    from airloop.registry import champion_version

    return champion_version(trained.spec, trained.settings)


def newest_event(trained: Trained) -> dict:
    from airloop.registry import history

    return history(trained.spec, trained.settings)[-1]


# -- reading -----------------------------------------------------------------------------------


def test_models_lists_every_model_with_its_champion(trained):
    shown = airloop(trained, "models")
    assert shown.returncode == 0, shown.stderr
    header, *rows = shown.stdout.splitlines()
    assert header.split()[:4] == ["MODEL", "CHAMPION", "SCORE", "CHALLENGER"]
    row = next(r for r in rows if r.startswith(MODEL))
    assert f"v{trained.good}" in row.split() and "unreachable" in row  # no prediction service runs here

    as_json = json.loads(airloop(trained, "models", "--json").stdout)
    model = next(m for m in as_json["models"] if m["model"] == MODEL)
    assert model["registry"]["champion"]["version"] == trained.good
    assert model["registry"]["challenger"]["version"] == trained.bad


def test_status_shows_versions_against_the_floors_and_the_dag_runs(trained):
    shown = airloop(trained, "status", MODEL)
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    champion_row = next(line for line in text.splitlines() if line.startswith("@champion"))
    assert f"v{trained.good}" in champion_row and "ok" in champion_row and "promoted" in champion_row
    challenger_row = next(line for line in text.splitlines() if line.startswith("@challenger"))
    assert "MISSED" in challenger_row and "rejected" in challenger_row
    assert "served: service unreachable" in text
    assert f"{MODEL}__promote" in text and "last runs:" in text

    status = json.loads(airloop(trained, "status", MODEL, "--json").stdout)
    assert status["model"]["registry"]["champion"]["version"] == trained.good
    assert [r["dag_id"] for r in status["runs"]] == [
        f"{MODEL}__{stage}" for stage in ("ingest", "features", "train", "promote", "rollback", "package", "monitor")]


def test_lineage_of_a_version(trained):
    shown = airloop(trained, "lineage", MODEL, trained.good, "--json")
    assert shown.returncode == 0, shown.stderr
    facts = json.loads(shown.stdout)
    assert facts["version"]["version"] == trained.good and "champion" in facts["version"]["aliases"]
    assert facts["version"]["trigger_reason"] == "test" and facts["version"]["gate"] == "promoted"
    run_id = facts["training_run"]["run_id"]
    assert run_id and facts["training_run"]["train_rows"]
    assert facts["features"]["columns"] and facts["features"]["service"] == trained.spec.features.service
    # Trained outside the train DAG: no batches recorded, and the lineage says so.
    assert facts["data"]["batches"] == [] and facts["data"]["batches_error"]
    assert [(e["action"], e["version"]) for e in facts["promotions"]] == [("promote", trained.good)]

    text = airloop(trained, "lineage", MODEL, trained.good).stdout
    assert f"{MODEL} v{trained.good}" in text and f"run {run_id} because test" in text and "gate:" in text


# -- errors: one line on stderr, an exit code per kind -------------------------------------------


@pytest.mark.parametrize(
    ("args", "env", "code", "message"),
    [
        (("status", "no_such_model"), {}, 5, "unknown model 'no_such_model'"),
        (("promote", "no_such_model", "1"), {}, 5, "unknown model 'no_such_model'"),
        (("lineage", MODEL, "999"), {}, 5, f"{MODEL} has no version '999'"),
        (("models",), {"AIRLOOP_AIRFLOW_PASSWORD": "wrong-password"}, 4, "refused the login of 'admin'"),
        (("models",), {"AIRLOOP_AIRFLOW_PASSWORD": ""}, 4, "no credentials: set AIRLOOP_AIRFLOW_PASSWORD"),
        (("models",), {"AIRLOOP_AIRFLOW_TOKEN": "not.a.jwt"}, 4, "did not accept the token"),
        (("status", MODEL), {"AIRLOOP_AIRFLOW_URL": "http://127.0.0.1:{port}"}, 3, "cannot reach Airflow at"),
    ],
    ids=["unknown-model", "promote-unknown-model", "unknown-version", "wrong-password", "no-password",
         "bad-token", "api-server-down"],
)
def test_errors_are_one_line_with_an_exit_code(trained, args, env, code, message):
    env = {k: v.format(port=free_port()) for k, v in env.items()}
    done = airloop(trained, *args, **env)
    assert done.returncode == code, (done.stdout, done.stderr)
    assert done.stdout == "" and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("airloop: ") and message in done.stderr, done.stderr
    assert trained.stack.password not in done.stderr


def test_a_user_who_may_not_trigger_the_dags_reads_but_cannot_act(trained):
    # The api-server generated the viewer's password into the stack's password file.
    password = json.loads((trained.stack.home / "passwords.json").read_text())["viewer"]
    viewer = {"AIRLOOP_AIRFLOW_USER": "viewer", "AIRLOOP_AIRFLOW_PASSWORD": password}
    assert airloop(trained, "status", MODEL, **viewer).returncode == 0
    refused = airloop(trained, "promote", MODEL, trained.bad, "--override-gate", **viewer)
    assert refused.returncode == 4 and refused.stderr.count("\n") == 1, refused.stderr
    assert refused.stderr.startswith(f"airloop: 'viewer' may not POST /api/v2/dags/{MODEL}__promote/dagRuns")
    assert champion(trained) == trained.good


# -- actions through Airflow, with the official client ------------------------------------------


@pytest.fixture
def api(trained):
    import airflow_client.client as af

    config = af.Configuration(host=trained.stack.url, access_token=trained.stack.token())
    with af.ApiClient(config) as client:
        yield client


def _trigger_and_wait(api, dag_id: str, conf: dict, timeout: float = 180):
    from airflow_client.client.api.dag_run_api import DagRunApi
    from airflow_client.client.models.trigger_dag_run_post_body import TriggerDAGRunPostBody

    runs = DagRunApi(api)
    run = runs.trigger_dag_run(dag_id, TriggerDAGRunPostBody(logical_date=None, conf=conf))
    deadline = time.monotonic() + timeout
    while run.state.value not in ("success", "failed"):
        assert time.monotonic() < deadline, f"{dag_id} {run.dag_run_id} still {run.state.value}"
        time.sleep(1)
        run = runs.get_dag_run(dag_id, run.dag_run_id)
    return run


def test_promote_and_rollback_through_the_official_client(trained, api):
    from airflow_client.client.api.x_com_api import XComApi
    from mlflow import MlflowClient

    from airloop import registry

    promote, rollback = trained.spec.dag_id("promote"), trained.spec.dag_id("rollback")
    assert champion(trained) == trained.good

    # The gate refuses the version that misses the floor: the run fails, @champion stays.
    refused = _trigger_and_wait(api, promote, {"version": trained.bad, "reason": "try the challenger"})
    assert refused.state.value == "failed"
    assert champion(trained) == trained.good
    event = newest_event(trained)
    assert (event["action"], event["version"], event["by"], event["user"]) == (
        "reject", trained.bad, refused.dag_run_id, "admin")
    assert "misses the floor" in event["reason"]

    # Overridden on purpose: promoted, and Airflow and the registry both say who and why.
    conf = {"version": trained.bad, "reason": "accept the risk", "override_gate": True}
    forced = _trigger_and_wait(api, promote, conf)
    assert forced.state.value == "success"
    assert forced.conf == conf and forced.triggering_user_name == "admin"
    result = XComApi(api).get_xcom_entry(promote, "promote_version", forced.dag_run_id, "return_value",
                                         deserialize=True).actual_instance.value
    assert result["gate"] == "overridden" and result["previous"] == trained.good
    assert champion(trained) == trained.bad
    event = newest_event(trained)
    assert (event["action"], event["user"], event["overridden"], event["stage"]) == ("promote", "admin", True, "promote")
    assert event["reason"].startswith("accept the risk (gate overridden: ")
    tags = MlflowClient(tracking_uri=trained.settings.mlflow_tracking_uri).get_model_version(
        trained.spec.registered_model_name, trained.bad).tags
    assert tags["airloop.gate"] == "overridden" and "by admin: accept the risk" in tags["airloop.gate_reason"]

    # Rolled back to the champion before it.
    back = _trigger_and_wait(api, rollback, {"reason": "v2 misbehaves"})
    assert back.state.value == "success" and back.conf == {"reason": "v2 misbehaves"}
    assert champion(trained) == trained.good
    event = newest_event(trained)
    assert (event["action"], event["version"], event["previous"], event["user"]) == (
        "rollback", trained.good, trained.bad, "admin")
    assert registry.champion_version(trained.spec, trained.settings) == trained.good


def test_promote_and_rollback_from_the_command_line(trained):
    assert champion(trained) == trained.good

    refused = airloop(trained, "promote", MODEL, trained.bad, "--wait")
    assert refused.returncode == 6 and refused.stderr.count("\n") == 1, refused.stderr
    assert f"failed: reject v{trained.bad}:" in refused.stderr and "misses the floor" in refused.stderr
    assert champion(trained) == trained.good

    forced = airloop(trained, "promote", MODEL, trained.bad, "--override-gate", "--reason", "from the cli",
                     "--wait", "--json")
    assert forced.returncode == 0, forced.stderr
    run = json.loads(forced.stdout)
    assert run["state"] == "success" and run["triggering_user_name"] == "admin"
    assert run["conf"] == {"version": trained.bad, "reason": "from the cli", "override_gate": True}
    assert run["history_event"]["action"] == "promote" and run["history_event"]["overridden"] is True
    assert champion(trained) == trained.bad

    back = airloop(trained, "rollback", MODEL, "--wait")
    assert back.returncode == 0, back.stderr
    assert f"{MODEL}__rollback run " in back.stdout and ": success (triggered by admin;" in back.stdout
    assert f"rollback v{trained.good}: manual rollback" in back.stdout
    assert champion(trained) == trained.good


def test_a_request_that_cannot_apply_is_refused_and_a_retry_is_idempotent(trained):
    """The library behind the promote DAG, on the same registry: what its task refuses outright."""
    from airloop import promotion
    from airloop.errors import PromotionError

    assert champion(trained) == trained.good
    with pytest.raises(PromotionError, match="has no version '999'"):
        promotion.promote(trained.spec, "999", actor="manual__retry", settings=trained.settings)
    with pytest.raises(PromotionError, match=f"v{trained.good} is already @champion"):
        promotion.promote(trained.spec, trained.good, actor="manual__other", settings=trained.settings)
    # A retry of the run that made it champion (its success report lost) succeeds without a new entry.
    before = newest_event(trained)
    again = promotion.promote(trained.spec, trained.good, actor="test", settings=trained.settings)
    assert again["gate"] == "already done" and newest_event(trained) == before
