"""Task logs as Airflow writes them: a train, gate or drift-check task shows its decision on the
first screen of its log and repeats no warning. The same stack then proves the monitor DAG's
guard against retrain storms: drift that is real, checked while a retrain is queued, starts nothing.

Airflow's own components run the train and monitor DAGs (LocalExecutor: every task in a process
of its own, as in production) and the test reads the log files under ``AIRFLOW_HOME/logs``.
Measured before the fix: skops' module scan wrote ~1,160 Airflow deprecation warnings into every
task that saved or loaded a model, and the gate's decision was line ~1,170 of its log.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
from pathlib import Path

import pytest
from airloop.spec import example_data
from airloop.testing import AirflowStack

datagen = example_data("late_delivery")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

# 7 warm-up days (the spec), 2 training days, 3 holdout days; small days train quickly.
DAYS = [dt.date(2026, 9, 1) + dt.timedelta(days=i) for i in range(12)]
ORDERS_PER_DAY = 400
FIRST_SCREEN = 50  # lines


def read_task_log(airflow_home: Path, dag_id: str, run_id: str, task_id: str) -> list[dict]:
    """The records of a task's first attempt, as the task process wrote them (JSON lines)."""
    [path] = (airflow_home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}").glob("attempt=1.log")
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            records.append({"level": "", "event": line})
    return records


def warnings_in(records: list[dict]) -> list[str]:
    """Every warning of a task log: logged ones (Python warnings included) and those a library
    printed to stderr itself (Airflow records stderr lines at error level)."""
    return [
        str(r.get("event")) for r in records
        if r.get("level") == "warning" or " WARNING " in str(r.get("event"))
    ]


def log_predictions(spec, settings, version: str, now: dt.datetime, *, drifted: bool = False) -> int:
    """The champion's holdout rows served by the champion during the hour before ``now``;
    ``drifted``: with every numeric input moved far from what the champion was trained on."""
    from airloop import prediction_log, registry

    champion = registry.load_version(spec, version, settings)
    rows = registry.download_frame(champion.run_id, registry.HOLDOUT_ARTIFACT, settings)
    if drifted:
        numeric = [c for c in champion.inputs if rows[c].dtype.kind in "if"]
        rows[numeric] = rows[numeric] * 3 + 25
    scores = champion.predict(rows[list(champion.inputs)], spec.task)
    prefix = f"logs-{now:%H%M%S}-{'drifted' if drifted else 'clean'}"
    plog = prediction_log.PredictionLog(settings.prediction_store, settings=settings, batch_size=2000)
    try:
        plog.append(
            prediction_log.LoggedPrediction(
                request_id=f"{prefix}-{i:05d}", model=spec.registered_model_name, model_version=version,
                entity=int(row[spec.join_keys[0]]), features={c: _value(row[c]) for c in champion.inputs},
                prediction=float(p), missing_features=[c for c in champion.inputs if _value(row[c]) is None],
                predicted_at=now - dt.timedelta(seconds=3600 * (i + 1) / (len(rows) + 1)),
            )
            for i, (row, p) in enumerate(zip(rows.to_dict("records"), scores))
        )
        plog.flush()
    finally:
        plog.close()
    return len(rows)


def _value(x):
    return None if x != x else float(x)  # NaN: a missing value


@pytest.fixture(scope="module")
def runs(tmp_path_factory, demo_spec):
    """A champion registered in this process; then, run by a real scheduler, a train run (its gate
    loads the champion) and a drift check of an hour of the champion's predictions."""
    from airloop import features, ingest, promotion, train
    from airloop.settings import ensure_dirs, environ, get_settings

    root = tmp_path_factory.mktemp("task-logs")
    home, airflow_home = root / "airloop", root / "airflow"
    spec = demo_spec
    with environ({"AIRLOOP_HOME": str(home), "MLFLOW_TRACKING_URI": None}):
        settings = ensure_dirs(get_settings())
        for day in DAYS:
            batch = datagen.write_batch(settings.landing_dir / spec.dataset.name, day, orders_per_day=ORDERS_PER_DAY)
            ingest.ingest_batch(spec, batch)
        features.derive(spec, settings)
        features.apply(settings)
        champion = train.train_model(spec, reason="test", settings=settings)["version"]
        assert promotion.gate_version(spec, champion, actor="test", settings=settings).promoted
        now = dt.datetime.now(dt.timezone.utc)
        served = log_predictions(spec, settings, champion, now)
        assert served >= spec.drift.min_rows

        env = {"AIRLOOP_HOME": str(home), "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False"}  # triggered runs only
        with AirflowStack(airflow_home, env=env) as stack:
            done = {}
            for stage, conf in (("train", {"reason": "task log test"}),
                                ("monitor", {"window_end": now.isoformat(), "window_minutes": 61})):
                dag_id = spec.dag_id(stage)
                stack.unpause(dag_id)
                run_id = stack.trigger(dag_id, conf=conf)
                run = stack.wait_for_run(dag_id, run_id, timeout=600)
                states = {ti["task_id"]: ti["state"] for ti in stack.task_instances(dag_id, run_id)}
                assert run["state"] == "success", (states, stack.logs("scheduler")[-3000:])
                done[stage] = dag_id, run_id

            def xcom(stage, task_id):
                dag_id, run_id = done[stage]
                return stack.api(
                    "GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value",
                    params={"deserialize": True, "stringify": False},
                )["value"]

            tasks = (("train", "train_and_register"), ("train", "champion_challenger_gate"),
                     ("monitor", "check_drift"), ("monitor", "apply_retrain_policy"))
            results = {task_id: xcom(stage, task_id) for stage, task_id in tasks}
            results["tabs"] = run_tabs(stack, done)
            results["during_retrain"] = drift_checks_while_a_retrain_is_queued(stack, spec, settings, champion, now)
    logs = {task_id: read_task_log(airflow_home, *done[stage], task_id) for stage, task_id in tasks}
    return spec, champion, results, logs


def run_tabs(stack, done: dict) -> dict:
    """Each run's "Airloop" tab: its page over HTTP (with and without a login, and for a run that
    does not exist), and the tab as the UI shows it in headless Chromium, with a screenshot."""
    import os
    import shutil

    import requests
    from playwright.sync_api import sync_playwright

    bearer = {"Authorization": f"Bearer {stack.token()}"}
    tabs: dict = {}
    for stage, (dag_id, run_id) in done.items():
        page = requests.get(f"{stack.url}/airloop/runs/{dag_id}/{run_id}", headers=bearer, timeout=60)
        tabs[stage] = {"status": page.status_code, "csp": page.headers.get("content-security-policy"),
                       "text": page.text}
    dag_id, run_id = done["train"]
    tabs["anonymous"] = requests.get(f"{stack.url}/airloop/runs/{dag_id}/{run_id}", timeout=60).status_code
    tabs["unknown_run"] = requests.get(f"{stack.url}/airloop/runs/{dag_id}/no_such_run", headers=bearer,
                                       timeout=60).status_code

    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is missing: `make system-deps` installs it"
    shots = Path(os.environ.get("AIRLOOP_TEST_ARTIFACTS") or stack.home)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.add_cookies([{"name": "_token", "value": stack.token(), "url": stack.url}])
        ui = context.new_page()
        ui.goto(f"{stack.url}/dags/{dag_id}/runs/{run_id}")
        ui.get_by_role("link", name="Airloop", exact=True).click(timeout=60_000)  # the run page's tab
        frame = ui.frame_locator("iframe")
        frame.locator("div.decision").first.wait_for(timeout=60_000)
        tabs["ui"] = {"url": ui.url, "decision": frame.locator("div.decision").first.inner_text()}
        ui.screenshot(path=str(shots / "train-run-airloop-tab.png"), full_page=True)
        browser.close()
    return tabs


def drift_checks_while_a_retrain_is_queued(stack, spec, settings, champion: str, now: dt.datetime) -> dict:
    """Queue a train run (its DAG paused, so it cannot start), then check two consecutive windows
    of drifted traffic through the monitor DAG: the second completes the policy's streak."""
    train_dag, monitor_dag = spec.dag_id("train"), spec.dag_id("monitor")
    stack.pause(train_dag)
    queued = stack.trigger(train_dag, conf={"reason": "queued before the drift checks"})
    windows = [now + dt.timedelta(hours=1), now + dt.timedelta(hours=2)]
    for end in windows:
        log_predictions(spec, settings, champion, end, drifted=True)
    checks = []
    for end in windows:
        run_id = stack.trigger(monitor_dag, conf={"window_end": end.isoformat(), "window_minutes": 60})
        assert stack.wait_for_run(monitor_dag, run_id, timeout=600)["state"] == "success"
        policy = stack.api(
            "GET", f"/dags/{monitor_dag}/dagRuns/{run_id}/taskInstances/apply_retrain_policy/xcomEntries/return_value",
            params={"deserialize": True, "stringify": False},
        )["value"]
        states = {ti["task_id"]: ti["state"] for ti in stack.task_instances(monitor_dag, run_id)}
        checks.append({"policy": policy, "states": states})
    train_runs = [(r["dag_run_id"], r["state"]) for r in stack.runs(train_dag)]
    return {"queued": queued, "checks": checks, "train_runs": train_runs}


def test_no_warning_is_repeated_in_a_task_log(runs):
    _, _, _, logs = runs
    for task_id, records in logs.items():
        repeated = {m[:120]: n for m, n in collections.Counter(warnings_in(records)).items() if n > 1}
        assert not repeated, f"{task_id}: {len(records)} lines, warnings repeated: {list(repeated.items())[:5]}"


def test_each_decision_is_on_the_first_screen(runs):
    spec, champion, results, logs = runs
    trained, gate = results["train_and_register"], results["champion_challenger_gate"]
    check, policy = results["check_drift"], results["apply_retrain_policy"]
    # The challenger was trained on the champion's data: the gate compared it with the champion
    # it loaded, and kept the champion.
    assert gate["champion_version"] == champion and not gate["promoted"], gate
    decisions = {
        "train_and_register": f"{spec.name} v{trained['version']} trained (run {trained['run_id']})",
        "champion_challenger_gate": f"v{gate['version']}: not promoted: {gate['reason']}",
        "check_drift": f"{check['status']}: {check['message']}",
        "apply_retrain_policy": f"{'RETRAIN' if policy['trigger'] else 'no retrain'}: {policy['reason']}",
    }
    for task_id, text in decisions.items():
        records = logs[task_id]
        matches = [i for i, r in enumerate(records, 1) if text in str(r.get("event"))]
        assert matches, f"{task_id}: no line with {text!r} in its {len(records)} lines"
        assert matches[0] <= FIRST_SCREEN, f"{task_id}: the decision is line {matches[0]} of {len(records)}"


def test_each_run_has_an_airloop_tab_with_its_decisions(runs):
    """The run page's "Airloop" tab shows what the run decided: the gate on a train run, the
    drift verdict and the retrain policy on a monitor run, escaped and sandboxed, for a logged-in
    user who may read the DAG's runs."""
    import html

    spec, _, results, _ = runs
    tabs, gate = results["tabs"], results["champion_challenger_gate"]
    check, policy = results["check_drift"], results["apply_retrain_policy"]
    for stage in ("train", "monitor"):
        assert tabs[stage]["status"] == 200, tabs[stage]["text"][:500]
        assert tabs[stage]["csp"].startswith("sandbox;"), tabs[stage]["csp"]
    train, monitor = tabs["train"]["text"], tabs["monitor"]["text"]
    assert html.escape(gate["reason"]) in train and "promoted: <b>false</b>" in train
    assert html.escape(policy["reason"]) in monitor and "trigger: <b>" in monitor
    assert html.escape(check["message"]) in monitor and check["report_id"] in monitor
    assert "<script" not in train + monitor
    assert tabs["anonymous"] in (401, 403) and tabs["unknown_run"] == 404
    # In the Airflow UI: the tab of the train run's page shows the gate's decision first.
    assert tabs["ui"]["url"].endswith("/plugin/airloop"), tabs["ui"]
    assert "champion_challenger_gate" in tabs["ui"]["decision"] and gate["reason"] in tabs["ui"]["decision"]


def test_drift_checked_while_a_retrain_is_queued_starts_no_second_one(runs):
    """The monitor DAG asks Airflow for the model's queued or running train runs
    (``ti.get_dr_count``); with one queued, real drift in the required windows triggers nothing."""
    spec, _, results, _ = runs
    during = results["during_retrain"]
    first, second = during["checks"]
    assert not first["policy"]["trigger"] and "not triggering yet" in first["policy"]["reason"], first
    assert not second["policy"]["trigger"], second
    assert f"training already queued or running for {spec.name}" in second["policy"]["reason"], second
    assert f"drift in {spec.drift.consecutive_windows} consecutive windows" in second["policy"]["reason"], second
    assert second["states"]["trigger_training"] == "skipped", second["states"]
    # The queued run is still the only one waiting: nothing was added behind it.
    waiting = [run for run, state in during["train_runs"] if state in ("queued", "running")]
    assert waiting == [during["queued"]], during["train_runs"]
