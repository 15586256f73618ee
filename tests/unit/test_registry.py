"""The registry adapter on a real MLflow store: strict champion reads and loading without pickle."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from airloop import errors, registry, serve
from airloop.settings import get_settings

COLUMNS = ["distance_km", "items", "order_hour"]


def _frame(rows: int = 60) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.random((rows, len(COLUMNS))), columns=COLUMNS)
    return X, (X["distance_km"] > 0.5).astype(int).to_numpy()


def _register(spec, model, **kwargs) -> str:
    import mlflow

    registry.client(get_settings())
    X, _ = _frame(5)
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            model, name="model", registered_model_name=spec.registered_model_name, input_example=X, **kwargs
        )
    return str(info.registered_model_version)


@pytest.fixture
def store(settings, demo_spec):
    """An empty embedded MLflow store under a fresh AIRLOOP_HOME."""
    return demo_spec


def test_no_model_and_no_alias_read_as_no_champion(store):
    from sklearn.linear_model import LogisticRegression

    assert registry.champion_version(store) is None  # no registered model at all
    X, y = _frame()
    _register(store, LogisticRegression().fit(X, y))
    assert registry.champion_version(store) is None  # a model, no @champion alias yet


def test_any_other_registry_error_raises(monkeypatch, demo_spec):
    from airloop.testing import free_port

    # Nothing listens there: a registry that is down must never read as "no champion".
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    with pytest.raises(errors.RegistryError, match="cannot read @champion of 'late_delivery'"):
        registry.champion_version(demo_spec)


def test_models_load_without_pickle_and_untrusted_artifacts_are_refused(store):
    import os

    import mlflow.sklearn
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    import skops.io

    X, y = _frame()
    model = HistGradientBoostingClassifier(max_iter=5).fit(X, y)
    # As training logs it: the types of the model this process just fitted.
    good = _register(store, model, skops_trusted_types=skops.io.get_untrusted_types(data=skops.io.dumps(model)))
    client = registry.client()
    client.set_registered_model_alias(store.registered_model_name, registry.CHAMPION, good)
    watcher = serve.ChampionWatcher(store, get_settings())
    assert watcher.refresh() and watcher.current.version == good
    assert watcher.current.inputs == tuple(COLUMNS)

    # An artifact that asks skops to trust a function (os.system): its own trusted list says
    # yes, Airloop's fixed list says no.
    evil_model = make_pipeline(FunctionTransformer(os.system), HistGradientBoostingClassifier(max_iter=5))
    evil = _register(
        store, evil_model, skops_trusted_types=skops.io.get_untrusted_types(data=skops.io.dumps(evil_model))
    )
    with pytest.raises(errors.UntrustedModel, match="untrusted types .*system"):
        registry.load_version(store, evil)
    client.set_registered_model_alias(store.registered_model_name, registry.CHAMPION, evil)
    assert not watcher.refresh()
    assert watcher.current.version == good, "the current champion keeps serving"
    assert "refused" in watcher.last_error and "system" in watcher.last_error
    assert not watcher.refresh(), "a refused version is not retried until the alias moves"

    # A pickled model is refused by Airloop, and MLflow's own loader refuses it too by default.
    pickled = _register(store, HistGradientBoostingClassifier(max_iter=5).fit(X, y), serialization_format="cloudpickle")
    with pytest.raises(errors.UntrustedModel, match="'cloudpickle'"):
        registry.load_version(store, pickled)
    with pytest.raises(Exception, match="MLFLOW_ALLOW_PICKLE_DESERIALIZATION"):
        mlflow.sklearn.load_model(f"models:/{store.registered_model_name}/{pickled}")
    assert registry.load_version(store, good).loaded_at <= dt.datetime.now(dt.timezone.utc)


def test_a_tree_with_out_of_range_node_indices_is_refused():
    from sklearn.ensemble import HistGradientBoostingClassifier

    X, y = _frame()
    model = HistGradientBoostingClassifier(max_iter=3).fit(X, y)
    registry.check_tree_bounds(model)  # a fitted model passes
    tree = model._predictors[0][0]
    inner = ~tree.nodes["is_leaf"].astype(bool)
    tree.nodes["left"][inner.nonzero()[0][0]] = len(tree.nodes) + 10
    with pytest.raises(errors.UntrustedModel, match="out of range"):
        registry.check_tree_bounds(model)


def test_processes_opening_a_fresh_sqlite_store_at_once_all_get_a_complete_one(tmp_path):
    """Two models' services (or training tasks) open the embedded store at the same moment:
    MLflow alone migrates an empty database in each of them side by side and fails."""
    import subprocess
    import sys

    code = ("from airloop import registry; from airloop.settings import get_settings; "
            "c = registry.client(get_settings()); c.search_registered_models(max_results=1); "
            "print(c.search_experiments(max_results=1)[0].name)")
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith(("AIRLOOP_", "MLFLOW_"))}
    env["AIRLOOP_HOME"] = str(tmp_path / "airloop")
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(3)]
    results = [(p.wait(180), *p.communicate()) for p in procs]
    assert all(code == 0 and out.strip() == "Default" for code, out, _ in results), results
