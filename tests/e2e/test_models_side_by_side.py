"""Both example models' loops ran at the same time in ONE Airflow, and nothing mixed.

Reads the combined run of tests/e2e/conftest.py: the two loops' DAG runs overlapped in time,
and each model's DAG runs, asset events, registered versions, Bentos and logged predictions
are its own.
"""

from __future__ import annotations

import datetime as dt

import pytest
import yaml

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3900)]

MODELS = ("late_delivery", "trip_duration")


def _time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def _model_of(dag_id: str) -> str:
    model, sep, _ = dag_id.partition("__")
    assert sep and model in MODELS, dag_id
    return model


def test_both_loops_closed_in_one_demo(both_loops):
    _, proc, summary = both_loops
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert set(summary["models"]) == set(MODELS)
    for name, loop in summary["models"].items():
        assert loop["model"] == name and "error" not in loop, loop.get("error")
        assert set(loop["stage_seconds"]) == {"land", "start", "ingest", "train", "serve", "drift", "monitor", "retrain"}
    # One demo, one wall clock: the loops ran inside it.
    assert max(loop["wall_seconds"] for loop in summary["models"].values()) <= summary["wall_seconds"]


def test_the_two_loops_dag_runs_overlapped_in_time(both_loops):
    _, _, summary = both_loops
    spans = {}
    for name in MODELS:
        runs = summary["models"][name]["dag_runs"]
        assert runs and all(r["start_date"] and r["end_date"] for r in runs), runs
        spans[name] = [(_time(r["start_date"]), _time(r["end_date"])) for r in runs]
    # Some run of one model was running while some run of the other was: the same scheduler
    # and executor had both models' work at once, not one loop after the other.
    overlap = max(
        (min(a_end, b_end) - max(a_start, b_start)).total_seconds()
        for a_start, a_end in spans["late_delivery"] for b_start, b_end in spans["trip_duration"]
    )
    assert overlap > 0, spans
    first = {name: min(s for s, _ in spans[name]) for name in MODELS}
    last = {name: max(e for _, e in spans[name]) for name in MODELS}
    assert max(first.values()) < min(last.values()), (first, last)


def test_each_model_drove_and_waited_for_its_own_dags_only(both_loops):
    home, _, summary = both_loops
    seen = set()
    for name in MODELS:
        runs = summary["models"][name]["dag_runs"]
        dag_ids = {r["dag_id"] for r in runs}
        assert {_model_of(d) for d in dag_ids} == {name}, dag_ids
        assert {f"{name}__{stage}" for stage in ("ingest", "features", "train", "package", "monitor")} <= dag_ids
        seen |= dag_ids
    logs = {p.name.removeprefix("dag_id=") for p in (home / "airflow" / "logs").glob("dag_id=*")}
    assert logs == seen, (logs, seen)


def test_asset_events_stay_within_their_model(both_loops):
    _, _, summary = both_loops
    events = summary["asset_events"]
    assert {_model_of(e["source_dag_id"]) for e in events} == set(MODELS)
    for event in events:
        model = _model_of(event["source_dag_id"])
        assert event["name"].startswith(f"{model}__") and event["uri"].startswith(f"airloop://{model}/"), event
        # An asset event starts runs of its own model's DAGs only.
        assert all(_model_of(dag_id) == model for dag_id in event["created_dagruns"]), event
    created = {d for e in events for d in e["created_dagruns"]}
    assert {f"{m}__features" for m in MODELS} | {f"{m}__package" for m in MODELS} <= created


def test_registered_versions_and_bentos_belong_to_their_model(both_loops):
    home, _, summary = both_loops
    from airloop import registry
    from airloop.settings import environ, get_settings
    from airloop.spec import get_spec

    with environ({"AIRLOOP_HOME": str(home), "MLFLOW_TRACKING_URI": None}):
        settings = get_settings()
        client = registry.client(settings)
        for name in MODELS:
            spec = get_spec(name)
            facts = summary["models"][name]["facts"]
            versions = client.search_model_versions(f"name='{spec.registered_model_name}'")
            assert sorted(str(v.version) for v in versions) == [v["version"] for v in facts["model_versions"]]
            for version in versions:
                run = client.get_run(version.run_id)
                experiment = client.get_experiment(run.info.experiment_id)
                assert experiment.tags.get("airloop.model") == name, (version, experiment.tags)
                bento = version.tags.get("airloop.bento_tag")
                assert bento and bento.startswith(f"{spec.registered_model_name}:"), version.tags
            steps = summary["models"][name]["steps"]
            for packaged in (steps["first_bento"], steps["final_bento"]):
                assert packaged["model"] == spec.registered_model_name, packaged
                assert packaged["bento_tag"].startswith(f"{spec.registered_model_name}:"), packaged
        # The BentoML store: each Bento is labelled with its own model and holds that model only.
        store = settings.bentoml_home / "bentos"
        names = {get_spec(m).registered_model_name for m in MODELS}
        built = sorted(store.glob("*/*/bento.yaml"))
        assert {p.parents[1].name for p in built} == names, built
        for path in built:
            info = yaml.safe_load(path.read_text())
            assert info["labels"]["airloop.model"] == info["name"] == path.parents[1].name, info
            assert all(m["tag"].startswith(f"{info['name']}:") for m in info["models"]), info["models"]


def test_each_service_logged_its_own_predictions_only(both_loops):
    home, _, summary = both_loops
    from airloop.prediction_log import read_predictions
    from airloop.settings import environ, get_settings

    with environ({"AIRLOOP_HOME": str(home)}):
        rows = read_predictions(settings=get_settings(), expand_features=False)
    assert set(rows["model"]) == set(MODELS), rows["model"].value_counts()
    inputs = {}
    for name in MODELS:
        loop = summary["models"][name]
        mine = rows[rows["model"] == name]
        versions = {v["version"] for v in loop["facts"]["model_versions"]}
        # Every request this loop sent (its traffic waves and the final /predict), and no other.
        assert len(mine) == sum(w["requests"] for w in loop["steps"]["traffic"]) + 1, len(mine)
        assert set(mine["model_version"].astype(str)) <= versions, (set(mine["model_version"]), versions)
        assert int(mine["label"].notna().sum()) == sum(w["requests"] for w in loop["steps"]["traffic"])
        keys = {frozenset(f) for f in mine["features"]}
        assert len(keys) == 1, keys  # one model's inputs on every row
        inputs[name] = next(iter(keys))
    assert inputs["late_delivery"] != inputs["trip_duration"], inputs
