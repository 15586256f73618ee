import os
import re
import shutil
from pathlib import Path

import pytest
import yaml

from airloop.settings import REPO_ROOT, get_settings
from airloop.spec import SpecError, load_spec, load_specs

DEMO = REPO_ROOT / "include" / "models" / "late_delivery.yaml"


def _write(tmp_path: Path, name: str, data: dict) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_demo_spec_loads(demo_spec):
    assert demo_spec.name == "late_delivery"
    assert demo_spec.join_keys == ["restaurant_id"]
    assert demo_spec.dag_id("ingest") == "late_delivery__ingest"
    assert demo_spec.features.service == "late_delivery_v1"


def test_a_typo_in_a_spec_is_a_clear_error(tmp_path):
    raw = yaml.safe_load(DEMO.read_text())
    raw["promotion"]["min_improvment"] = 0.01
    with pytest.raises(SpecError, match=r"promotion\.min_improvment: Extra inputs are not permitted"):
        load_spec(_write(tmp_path, "late_delivery", raw))


def test_rules_must_name_declared_columns(tmp_path):
    raw = yaml.safe_load(DEMO.read_text())
    raw["validation"]["required"].append("tip")
    with pytest.raises(SpecError, match="columns not declared in dataset.columns: tip"):
        load_spec(_write(tmp_path, "late_delivery", raw))


def test_spec_name_must_match_file(tmp_path):
    raw = yaml.safe_load(DEMO.read_text())
    with pytest.raises(SpecError, match="must match the file name"):
        load_spec(_write(tmp_path, "other_model", raw))


def test_adding_a_spec_file_adds_a_model(tmp_path):
    raw = yaml.safe_load(DEMO.read_text())
    shutil.copytree(DEMO.parent / "late_delivery", tmp_path / "late_delivery")
    _write(tmp_path, "late_delivery", raw)
    raw["name"] = "late_delivery_lite"
    raw["features"]["definitions"] = "late_delivery/feature_repo"
    _write(tmp_path, "late_delivery_lite", raw)
    specs = load_specs(tmp_path)
    assert [s.name for s in specs] == ["late_delivery", "late_delivery_lite"]
    assert {s.definitions_dir for s in specs} == {tmp_path / "late_delivery" / "feature_repo"}


def _spec_problem(tmp_path: Path, edit) -> str:
    """The error loading the demo spec (its model directory alongside) after ``edit(raw)``."""
    shutil.copytree(DEMO.parent / "late_delivery", tmp_path / "late_delivery", dirs_exist_ok=True)
    raw = yaml.safe_load(DEMO.read_text())
    edit(raw)
    with pytest.raises(SpecError) as caught:
        load_spec(_write(tmp_path, "late_delivery", raw))
    return str(caught.value)


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda r: r["features"].update(transform="late_delivery.datagen.no_such_job"),
         "features.transform: 'late_delivery.datagen.no_such_job': .* defines no top-level function 'no_such_job'"),
        (lambda r: r["features"].update(transform="late_delivery.nowhere.compute"),
         "features.transform: 'late_delivery.nowhere.compute': no module file"),
        (lambda r: r["features"].update(transform="compute"), "features.transform: .*dotted path"),
        (lambda r: r["features"].update(definitions="elsewhere"), "features.definitions: no directory .*elsewhere"),
        (lambda r: r["features"]["request"].append("tip_amount"),
         "features.request: tip_amount neither a dataset column nor in features.derived"),
        (lambda r: r["features"]["derived"].update(order_hour={"part": "hour", "of": "zone"}),
         "features.derived.order_hour: 'zone' is not a timestamp column"),
        (lambda r: r["features"]["derived"].update(order_hour={"part": "hour", "of": "placed_at"}),
         "columns not declared in dataset.columns: placed_at"),
        (lambda r: r["features"]["derived"].update(order_minute={"part": "minute", "of": "event_timestamp"}),
         "features.derived.order_minute: not listed in features.request"),
        (lambda r: r["entities"].append({"name": "kitchen", "join_key": "restaurant_id"}),
         "entities: each entity needs its own join_key"),
        (lambda r: r["entities"].append({"name": "zone", "join_key": "zone"}) or r["dataset"]["columns"].pop("zone"),
         "columns not declared in dataset.columns: .*zone"),
        (lambda r: r.update(entities=[]), "entities: List should have at least 1 item"),
    ],
    ids=["unknown-function", "unknown-module", "not-dotted", "no-definitions", "unknown-request-field",
         "derived-from-non-timestamp", "derived-from-unknown-column", "derived-not-requested",
         "shared-join-key", "unknown-join-key", "no-entity"],
)
def test_a_spec_naming_something_unknown_fails_at_load_with_the_field_named(tmp_path, edit, expected):
    assert re.search(expected, _spec_problem(tmp_path, edit))


def test_settings_default_under_airloop_home_and_follow_env(monkeypatch, tmp_path):
    monkeypatch.setenv("AIRLOOP_HOME", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    s = get_settings()
    assert s.landing_dir == tmp_path / "landing"
    assert s.mlflow_tracking_uri == f"sqlite:///{tmp_path}/mlflow/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    monkeypatch.setenv("AIRLOOP_LANDING_DIR", "/data/landing")
    s = get_settings()
    assert s.mlflow_tracking_uri == "http://mlflow:5000"
    assert s.landing_dir == Path("/data/landing")
    assert s.as_env()["AIRLOOP_LANDING_DIR"] == "/data/landing"


def test_each_model_may_have_its_own_prediction_service_url(monkeypatch):
    """AIRLOOP_SERVE_URL__<MODEL> overrides AIRLOOP_SERVE_URL for that model and no other."""
    from airloop.settings import serve_url_env

    for name in [k for k in os.environ if k.startswith("AIRLOOP_SERVE_URL")]:
        monkeypatch.delenv(name)
    assert get_settings().serve_url_for("trip_duration") == "http://127.0.0.1:3300"  # the embedded default

    monkeypatch.setenv("AIRLOOP_SERVE_URL", "http://bento:3000")
    monkeypatch.setenv("AIRLOOP_SERVE_URL__TRIP_DURATION", "http://bento-trip-duration:3001")
    s = get_settings()
    assert serve_url_env("trip_duration") == "AIRLOOP_SERVE_URL__TRIP_DURATION"
    assert s.serve_url_for("trip_duration") == "http://bento-trip-duration:3001"
    assert s.serve_url_for("late_delivery") == "http://bento:3000"  # no variable of its own: the fallback
    assert s.serve_url == "http://bento:3000"
    # Subprocesses started with as_env() (the demo's Airflow, test servers) see both.
    env = s.as_env()
    assert env["AIRLOOP_SERVE_URL"] == "http://bento:3000"
    assert env["AIRLOOP_SERVE_URL__TRIP_DURATION"] == "http://bento-trip-duration:3001"

    # A blank override is unset, as for every other setting; a model named in lower case still matches.
    monkeypatch.setenv("AIRLOOP_SERVE_URL__TRIP_DURATION", "  ")
    monkeypatch.setenv("AIRLOOP_SERVE_URL__late_delivery", "http://127.0.0.1:3301")
    s = get_settings()
    assert s.serve_url_for("trip_duration") == "http://bento:3000"
    assert s.serve_url_for("late_delivery") == "http://127.0.0.1:3301"
    assert "AIRLOOP_SERVE_URL__TRIP_DURATION" not in s.as_env()


def test_no_machine_paths_in_the_code():
    offenders = []
    for path in list((REPO_ROOT / "include").rglob("*.py")) + list((REPO_ROOT / "dags").rglob("*.py")):
        text = path.read_text()
        for needle in ("/work/", "/home/", "/root/", "/Users/"):
            if needle in text:
                offenders.append(f"{path.relative_to(REPO_ROOT)}: {needle}")
    assert not offenders


def test_the_library_names_no_models_data():
    """The library runs any model from its spec: no model's name, table, key, target or column
    (the compound ones, which cannot be ordinary words) appears in ``include/airloop/``."""
    names = set()
    for spec in load_specs(REPO_ROOT / "include" / "models"):
        names.update([spec.name, *spec.dataset_names, *spec.join_keys, spec.target])
        for table in spec.tables:
            names.update(table.columns)
    names = {n for n in names if "_" in n} - {"event_timestamp"}  # the engine's own stamp column
    assert {"late_delivery", "restaurant_id", "was_late", "trip_duration", "zone_id"} <= names
    offenders = [
        f"{path.relative_to(REPO_ROOT)}:{text.count(chr(10), 0, m.start()) + 1}: {m.group()}"
        for path in sorted((REPO_ROOT / "include" / "airloop").rglob("*.py"))
        for text in [path.read_text()]
        for m in re.finditer(r"\b(" + "|".join(map(re.escape, sorted(names))) + r")\b", text)
    ]
    assert not offenders, offenders


def test_placeholder_and_short_secrets_are_refused_by_name():
    from airloop.settings import WeakSecretError, require_strong_secrets, weak_secrets

    strong = "x" * 32
    env = {
        "AIRFLOW__CORE__FERNET_KEY": strong,
        "AIRFLOW__API_AUTH__JWT_SECRET": "change-me",
        "AIRFLOW__API__SECRET_KEY": "",
        "AIRLOOP_ADMIN_PASSWORD": "short",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql+psycopg2://airloop:change-me@postgres:5432/airflow",
        "AIRLOOP_PREDICTION_STORE": f"postgresql://airloop:{strong}@postgres:5432/airloop",
        "MLFLOW_TRACKING_URI": "http://mlflow:5000",
    }
    assert weak_secrets(env) == [
        "AIRFLOW__API_AUTH__JWT_SECRET",
        "AIRFLOW__API__SECRET_KEY",
        "AIRLOOP_ADMIN_PASSWORD",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN (password)",
    ]
    with pytest.raises(WeakSecretError, match="AIRFLOW__API_AUTH__JWT_SECRET, AIRFLOW__API__SECRET_KEY"):
        require_strong_secrets(env)
    # Unset secrets (the embedded start) and passwordless local URLs are fine.
    assert weak_secrets({"AIRLOOP_PREDICTION_STORE": "postgresql://postgres@127.0.0.1:5432/x"}) == []


def test_the_env_example_is_refused_and_new_env_passes(tmp_path):
    """What compose's airflow-init runs first: the example's change-me values stop the stack."""
    import subprocess
    import sys

    from airloop.settings import REPO_ROOT

    def check(env_file):
        values = dict(
            line.split("=", 1) for line in env_file.read_text().splitlines()
            if "=" in line and not line.lstrip().startswith("#")
        )
        env = {  # the names compose gives them inside the containers
            "PATH": "/usr/bin:/bin",
            "AIRFLOW__CORE__FERNET_KEY": values["AIRFLOW_FERNET_KEY"],
            "AIRFLOW__API_AUTH__JWT_SECRET": values["AIRFLOW_JWT_SECRET"],
            "AIRFLOW__API__SECRET_KEY": values["AIRFLOW_API_SECRET_KEY"],
            "AIRLOOP_ADMIN_PASSWORD": values["AIRLOOP_ADMIN_PASSWORD"],
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN":
                f"postgresql+psycopg2://airloop:{values['POSTGRES_PASSWORD']}@postgres:5432/airflow",
        }
        return subprocess.run(
            [sys.executable, "-m", "airloop.cli", "check-secrets"], env=env, capture_output=True, text=True
        )

    refused = check(REPO_ROOT / ".env.example")
    assert refused.returncode == 1
    for name in ("FERNET_KEY", "JWT_SECRET", "API__SECRET_KEY", "ADMIN_PASSWORD", "SQL_ALCHEMY_CONN (password)"):
        assert name in refused.stderr
    fresh = tmp_path / ".env"
    subprocess.run(
        [sys.executable, str(REPO_ROOT / "docker" / "new_env.py"), "--output", str(fresh)], check=True, capture_output=True
    )
    assert check(fresh).returncode == 0


def test_airloop_home_is_owner_only(tmp_path, monkeypatch):
    import stat

    from airloop.settings import ensure_dirs

    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    monkeypatch.setenv("AIRLOOP_HOME", str(home))
    ensure_dirs()
    assert stat.S_IMODE(home.stat().st_mode) == 0o700


def test_ingest_parallelism_bounds_the_ingest_dags_mapped_batches(monkeypatch):
    assert get_settings().ingest_parallelism == 4
    monkeypatch.setenv("AIRLOOP_INGEST_PARALLELISM", "2")
    assert get_settings().as_env()["AIRLOOP_INGEST_PARALLELISM"] == "2"
    from airloop.testing import load_dag

    dag = load_dag("late_delivery__ingest")
    assert dag.get_task("validate_and_publish").max_active_tis_per_dagrun == 2
    monkeypatch.setenv("AIRLOOP_INGEST_PARALLELISM", "0")
    with pytest.raises(ValueError, match="AIRLOOP_INGEST_PARALLELISM must be a positive whole number, got '0'"):
        get_settings()
