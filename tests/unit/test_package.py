"""Packaging the @champion as a Bento: real MLflow registry, real BentoML stores, no mocks."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from airloop import promotion, registry
from airloop.settings import ensure_dirs, get_settings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def champion(tmp_path_factory, demo_spec):
    """A registered @champion trained on order columns directly (no feature store needed)."""
    import pandas as pd
    from airloop import train
    from airloop.spec import example_data

    datagen = example_data("late_delivery")

    home = tmp_path_factory.mktemp("package") / "airloop"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRLOOP_HOME", str(home))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)  # mlflow.set_tracking_uri() exports it
        settings = ensure_dirs(get_settings())
        days = [dt.date(2024, 3, 1) + dt.timedelta(days=i) for i in range(6)]
        orders = pd.concat([datagen.generate_orders(d, orders_per_day=400) for d in days], ignore_index=True)
        frame = orders[["restaurant_id", "event_timestamp", "distance_km", "items", "prep_minutes", "was_late"]]
        fit_on, holdout = train.time_split(frame, "event_timestamp", demo_spec.split.holdout_days)
        columns = train.feature_columns(demo_spec, frame)
        model = train.fit(demo_spec, fit_on, columns)
        metrics = train.evaluate(demo_spec, model, holdout[columns], holdout[demo_spec.target])
        run_id, version = train.log_training_run(
            demo_spec, model, fit_on, holdout, columns, metrics, train.Lineage(trigger_reason="test"), settings
        )
        assert promotion.gate(demo_spec, version, holdout, metrics, actor="test", settings=settings).promoted
        yield settings, version, run_id


@pytest.fixture(scope="module")
def packaged(champion, demo_spec):
    from airloop.package import package_champion

    settings, _, _ = champion
    return package_champion(demo_spec, settings)


def test_staged_sources_hold_every_library_package(tmp_path, demo_spec):
    """Each subpackage of the library (prediction_log, validation, serve, ...) goes into the Bento
    whole, and imports from the staged copy alone."""
    from airloop.package import stage_sources
    from airloop.settings import REPO_ROOT

    copied = set(stage_sources(tmp_path, demo_spec))
    library = REPO_ROOT / "include" / "airloop"
    packages = sorted(p.parent for p in library.rglob("__init__.py") if p.parent != library)
    assert {"prediction_log", "validation", "serve", "features", "monitoring"} <= {p.name for p in packages}
    for module in (m for package in packages for m in package.glob("*.py")):
        relative = str(module.relative_to(REPO_ROOT))
        assert relative in copied and (tmp_path / relative).is_file(), relative
    names = [f"airloop.{p.name}" for p in packages]
    code = f"import importlib, json; print(json.dumps([importlib.import_module(n).__file__ for n in {names!r}]))"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path / "include", capture_output=True, text=True,
                         timeout=120, env={**os.environ, "PYTHONPATH": str(tmp_path / "include")})
    assert out.returncode == 0, out.stderr[-3000:]
    for name, file in zip(names, json.loads(out.stdout)):
        assert Path(file).is_relative_to(tmp_path), (name, file)


def test_package_champion_builds_a_labelled_bento(champion, packaged, demo_spec):
    import bentoml
    from airloop.package import bentoml_home

    settings, version, run_id = champion
    assert packaged["model"] == "late_delivery"
    assert (packaged["model_version"], packaged["run_id"]) == (version, run_id)
    assert packaged["bento_model_tag"] == f"late_delivery:v{version}"
    assert Path(packaged["bento_path"]).is_relative_to(settings.bentoml_home)

    with bentoml_home(settings.bentoml_home):
        bento = bentoml.bentos.get(packaged["bento_tag"])
        model = bentoml.models.get(packaged["bento_model_tag"])
    labels = {"airloop.model": "late_delivery", "airloop.model_version": version, "airloop.run_id": run_id}
    assert labels.items() <= bento.info.labels.items()
    assert labels.items() <= model.info.labels.items()
    assert [str(m.tag) for m in bento.info.models] == [packaged["bento_model_tag"]]
    assert (Path(model.path) / "mlflow_model" / "MLmodel").exists()  # the version's own artifact

    src = Path(bento.path) / "src"
    for path in ("airloop_bento.py", "include/airloop/bento_service.py", "include/airloop/serve/__init__.py",
                 "include/airloop/prediction_log/__init__.py", "include/airloop/prediction_log/writer.py",
                 "include/airloop/validation/__init__.py", "include/airloop/validation/csv_batch.py",
                 "include/models/late_delivery.yaml", "include/models/late_delivery/feature_repo/feature_services.py",
                 "feature_repo/feature_store.yaml"):
        assert (src / path).is_file(), path
    assert not list(src.rglob("*.db")) and not (src / ".venv").exists()
    requirements = (Path(bento.path) / "env" / "python" / "requirements.txt").read_text().split()
    assert "scikit-learn==1.9.1" in requirements or any(r.startswith("scikit-learn==") for r in requirements)
    info = yaml.safe_load((Path(bento.path) / "bento.yaml").read_text())
    assert {"name": "AIRLOOP_SERVE_MODEL", "value": "late_delivery", "stage": "all"} in info["envs"]
    paths = {r["route"] for r in info["schema"]["routes"]}
    assert {"/predict", "/predict_batch", "/feedback"} <= paths


def test_mlflow_version_records_the_bento_tag(champion, packaged):

    settings, version, _ = champion
    tags = registry.client(settings).get_model_version("late_delivery", version).tags
    assert tags["airloop.bento_tag"] == packaged["bento_tag"]
    assert tags["airloop.bento_model_tag"] == packaged["bento_model_tag"]


def test_bento_runs_its_bundled_sources(champion, packaged):
    """The Bento's entry module imports the service from the Bento, not from this checkout."""
    settings, _, _ = champion
    src = Path(packaged["bento_path"]) / "src"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRLOOP_")}
    env.update(AIRLOOP_HOME=str(settings.home), BENTOML_HOME=str(settings.bentoml_home), BENTOML_DO_NOT_TRACK="true")
    code = (
        "import airloop_bento, airloop, airloop.bento_service as s; "
        "print(airloop.__file__); print(s.PredictionService.name, s._SPEC.name, sorted(s.PredictRequest.model_fields))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=src, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    first, second = out.stdout.strip().splitlines()[-2:]
    assert Path(first).resolve() == (src / "include" / "airloop" / "__init__.py").resolve()
    assert second == "airloop late_delivery ['distance_km', 'items', 'order_hour', 'restaurant_id']"


def test_packaging_again_reuses_the_imported_model(champion, packaged, demo_spec):
    from airloop.package import package_champion

    settings, version, _ = champion
    again = package_champion(demo_spec, settings)
    assert again["bento_model_tag"] == packaged["bento_model_tag"]
    assert again["bento_tag"] != packaged["bento_tag"]  # a new build of the service code
    tags = registry.client(settings).get_model_version("late_delivery", version).tags
    assert tags["airloop.bento_tag"] == again["bento_tag"]


def test_no_champion_is_a_clear_error(champion, demo_spec):
    from airloop.package import PackagingError, package_champion

    settings, _, _ = champion
    with pytest.raises(PackagingError, match="'no_such_model' has no @champion"):
        package_champion(demo_spec.model_copy(update={"name": "no_such_model"}), settings)
