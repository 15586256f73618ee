"""String model inputs end to end, with the real components: Feast (DuckDB offline store, SQLite
online store), scikit-learn, skops through MLflow and the registry's own loader, the SQLite
prediction log, Evidently and a real ``bentoml serve``.

A tiny synthetic model (``ride_delay``, written into a temporary models directory): whether a
ride starts late, from a request field ``service_class`` (a string with declared categories), a
number ``distance_km``, and the Feast features of a static fleet table: ``vehicle_type`` (a
``String`` feature; a fifth of the vehicles are missing from the table, so it is often null) and
``seats``. Lateness is driven by the categories (``xl`` rides and vans are late), so a model that
does not use them is no better than chance.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from airloop import model_inputs, prediction_log, promotion, registry, serve

SPEC = """
name: ride_delay
description: Whether a ride starts late.
dataset:
  name: rides
  pattern: "rides_*.csv"
  timestamp: ride_at
  columns: {ride_id: string, vehicle_id: int, ride_at: timestamp, service_class: string, distance_km: float,
            was_late: int}
entities:
  - {name: vehicle, join_key: vehicle_id, description: A vehicle of the fleet.}
validation:
  ranges: {distance_km: [0.1, 50.0]}
  categories: {service_class: [economy, comfort, xl]}
features:
  service: ride_delay_v1
  request: [service_class, distance_km]
target: was_late
task: classification
estimator: {class: sklearn.ensemble.HistGradientBoostingClassifier, params: {max_iter: 40, learning_rate: 0.1}}
split: {holdout_days: 2, recency_half_life_days: 2}
promotion: {metric: roc_auc}
drift: {min_rows: 100, window_hours: 24}
"""

DEFINITIONS = """
from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Int64, String

vehicle = Entity(name="vehicle", join_keys=["vehicle_id"], value_type=ValueType.INT64)
# A static fleet table: every row stamped at the epoch, valid forever (no TTL).
vehicle_attributes = FeatureView(
    name="vehicle_attributes",
    entities=[vehicle],
    ttl=timedelta(0),
    schema=[Field(name="vehicle_id", dtype=Int64), Field(name="vehicle_type", dtype=String),
            Field(name="seats", dtype=Int64)],
    source=FileSource(name="vehicle_attributes_source", path="vehicle_attributes", timestamp_field="valid_from"),
)
ride_delay_v1 = FeatureService(name="ride_delay_v1", features=[vehicle_attributes])
"""

TYPES = ["sedan", "hatchback", "van", "electric"]
CLASSES = ["economy", "comfort", "xl"]
FLEET = 40  # vehicles 0..39 are in the fleet table
UNKNOWN_VEHICLES = range(FLEET, FLEET + 10)  # requested, but not in the table: vehicle_type is null
START = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
DAYS = 6
STRING_INPUTS = ("service_class", "vehicle_type")


@dataclass
class World:
    settings: object
    spec: object
    frame: object  # the training set, as Feast built it
    fit_on: object
    holdout: object
    columns: list
    model: object  # fitted by airloop.train.fit
    metrics: dict
    version: str  # registered and promoted: the @champion
    vehicle_types: dict


def make_rides(rng, n: int, start: dt.datetime, days: float, vehicle_types: dict, classes=None):
    """``n`` rides over ``days`` days from ``start``; late mostly for ``xl`` and for vans."""
    import numpy as np
    import pandas as pd

    events = pd.DataFrame({
        "ride_id": [f"r{start:%m%d}-{i}" for i in range(n)],
        "vehicle_id": rng.integers(0, FLEET + len(UNKNOWN_VEHICLES), n),
        "ride_at": pd.Timestamp(start) + pd.to_timedelta(np.sort(rng.uniform(0, days * 86400, n)), unit="s"),
        "service_class": rng.choice(classes or CLASSES, n),
        "distance_km": rng.uniform(0.5, 30, n).round(2),
    })
    kind = events["vehicle_id"].map(vehicle_types)
    p = 0.08 + 0.55 * (events["service_class"] == "xl") + 0.3 * (kind == "van") + 0.004 * events["distance_km"]
    events["was_late"] = (rng.uniform(size=n) < p.clip(0, 0.95)).astype("int64")
    return events


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    import numpy as np
    import pandas as pd
    from airloop import features, train
    from airloop.settings import ensure_dirs, get_settings
    from airloop.spec import load_spec

    root = tmp_path_factory.mktemp("categorical")
    models = root / "models"
    (models / "ride_delay" / "feature_repo").mkdir(parents=True)
    (models / "ride_delay" / "feature_repo" / "definitions.py").write_text(DEFINITIONS)
    (models / "ride_delay.yaml").write_text(SPEC)
    with pytest.MonkeyPatch.context() as mp:
        # The feature repo reads the settings from the environment when it is applied.
        mp.setenv("AIRLOOP_HOME", str(root / "airloop"))
        mp.setenv("AIRLOOP_MODELS_DIR", str(models))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        settings = ensure_dirs(get_settings())
        spec = load_spec(models / "ride_delay.yaml")
        rng = np.random.default_rng(7)
        fleet = pd.DataFrame({
            "vehicle_id": np.arange(FLEET), "vehicle_type": rng.choice(TYPES, FLEET),
            # Seats say nothing about the type: a model without the strings cannot recover them.
            "seats": rng.choice([4, 5], FLEET), "valid_from": pd.Timestamp(0, tz="UTC"),
        })
        out = settings.offline_dir / "vehicle_attributes"
        out.mkdir(parents=True)
        fleet.to_parquet(out / "vehicle_attributes_2026-01-01.parquet", index=False)
        assert features.apply(settings)
        vehicle_types = dict(zip(fleet["vehicle_id"], fleet["vehicle_type"]))

        events = make_rides(rng, 2400, START, DAYS, vehicle_types)
        frame = features.build_training_set(spec, features.entity_df_from_events(spec, events), settings=settings)
        fit_on, holdout = train.time_split(frame, spec.dataset.timestamp, spec.split.holdout_days)
        columns = train.feature_columns(spec, frame)
        model = train.fit(spec, fit_on, columns)
        metrics = train.evaluate(spec, model, holdout[columns], holdout[spec.target])
        _, version = train.log_training_run(
            spec, model, fit_on, holdout, columns, metrics, train.Lineage(trigger_reason="test"), settings
        )
        assert promotion.gate(spec, version, holdout, metrics, actor="test", settings=settings).promoted
        yield World(settings, spec, frame, fit_on, holdout, columns, model, metrics, version, vehicle_types)


# --- training -------------------------------------------------------------------------------


def test_feast_gives_strings_and_nulls(world):
    frame = world.frame
    assert world.columns == ["service_class", "distance_km", "vehicle_type", "seats"]
    assert model_inputs.categorical_columns(frame, world.columns) == list(STRING_INPUTS)
    assert set(frame["vehicle_type"].dropna()) == set(TYPES)
    assert frame["vehicle_type"].isna().sum() > 100  # unknown vehicles: null String features


def test_training_encodes_the_strings_in_the_model_and_they_matter(world):
    from airloop import train
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline

    model = world.model
    assert isinstance(model, Pipeline)
    assert [name for name, _ in model.steps] == [model_inputs.ENCODE_STEP, model_inputs.MODEL_STEP]
    assert isinstance(model.named_steps["encode"], ColumnTransformer)
    assert isinstance(model.named_steps["model"], HistGradientBoostingClassifier)
    assert model_inputs.categorical_inputs(model) == STRING_INPUTS
    assert list(model.feature_names_in_) == world.columns  # what the registry reads as the inputs
    # Native categorical splits only when the registry's loader can load them (see below).
    expected = list(STRING_INPUTS) if model_inputs.native_categorical_loadable() else "from_dtype"
    assert model.named_steps["model"].categorical_features == expected

    # The categories drive the label: without them the same estimator is about chance.
    numeric = [c for c in world.columns if c not in STRING_INPUTS]
    without = train.fit(world.spec, world.fit_on, numeric)
    assert not isinstance(without, Pipeline)  # nothing to encode: the bare estimator
    baseline = train.evaluate(world.spec, without, world.holdout[numeric], world.holdout[world.spec.target])
    assert world.metrics["roc_auc"] > 0.75
    assert world.metrics["roc_auc"] > baseline["roc_auc"] + 0.15, (world.metrics, baseline)

    # Unknown categories and nulls predict (as "unknown"), they do not fail.
    odd = world.holdout[world.columns].head(3).copy()
    odd["service_class"] = ["limousine", None, "xl"]
    odd["vehicle_type"] = [None, "tractor", float("nan")]
    assert ((p := model.predict_proba(odd)[:, 1]) >= 0).all() and (p <= 1).all()
    # None (Feast, parquet, JSON), NaN (pandas) and an unknown category get the same code.
    codes = model.named_steps["encode"].transform(odd)
    assert codes["vehicle_type"].isna().all() and codes["service_class"].isna().tolist() == [True, True, False]


def test_recency_weights_reach_the_estimator_in_the_pipeline(world):
    import numpy as np
    from airloop import train

    fitted = train.fit(world.spec, world.fit_on, world.columns)
    unweighted_spec = world.spec.model_copy(
        update={"split": world.spec.split.model_copy(update={"recency_half_life_days": None})}
    )
    unweighted = train.fit(unweighted_spec, world.fit_on, world.columns)
    X = world.holdout[world.columns]
    weights = train.recency_weights(world.spec, world.fit_on)
    assert weights is not None and weights.min() < 1
    by_hand = train.make_estimator(world.spec, world.fit_on[world.columns])
    by_hand.fit(world.fit_on[world.columns], world.fit_on[world.spec.target], model__sample_weight=weights)
    assert np.array_equal(fitted.predict_proba(X), by_hand.predict_proba(X))
    assert not np.array_equal(fitted.predict_proba(X), unweighted.predict_proba(X))


def test_a_numeric_only_spec_keeps_the_bare_estimator(demo_spec):
    import numpy as np
    import pandas as pd
    from airloop import train
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.default_rng(0)
    days = pd.date_range("2026-09-01", periods=10, freq="D", tz="UTC").repeat(30)
    frame = pd.DataFrame({
        "event_timestamp": days, "restaurant_id": 1, "distance_km": rng.uniform(0, 10, len(days)),
        # An integer feature with gaps comes out of a join as objects: still numbers, not categories.
        "orders_7d": pd.Series([None if i % 7 == 0 else int(i % 5) for i in range(len(days))], dtype="object"),
        "was_late": rng.integers(0, 2, len(days)),
    })
    columns = train.feature_columns(demo_spec, frame)
    assert model_inputs.categorical_columns(frame, columns) == []
    bare = train.make_estimator(demo_spec)
    assert type(train.make_estimator(demo_spec, frame[columns])) is HistGradientBoostingClassifier
    assert train.make_estimator(demo_spec, frame[columns]).get_params() == bare.get_params()
    model = train.fit(demo_spec, frame, columns)
    assert type(model) is HistGradientBoostingClassifier and model.get_params() == bare.get_params()
    # Exactly what the training did before string inputs existed: weights passed as before.
    before = train.make_estimator(demo_spec).fit(
        frame[columns], frame["was_late"], sample_weight=train.recency_weights(demo_spec, frame)
    )
    assert np.array_equal(model.predict_proba(frame[columns]), before.predict_proba(frame[columns]))
    assert model_inputs.categorical_inputs(model) == () and model_inputs.fit_params(model, None) == {}


def test_an_estimator_without_missing_values_gets_a_code_for_unknowns():
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    frame = pd.DataFrame({"kind": ["a", "b", None, "a"] * 10, "x": np.arange(40.0)})
    model = model_inputs.encode_inputs(LogisticRegression(), frame)
    model.fit(frame, [0, 1] * 20)
    codes = model.named_steps["encode"].transform(pd.DataFrame({"kind": ["zz", None, "b"], "x": [1.0, 2.0, 3.0]}))
    assert codes["kind"].tolist() == [-1.0, -1.0, 1.0]  # unknown and missing: -1, no NaN for the estimator


# --- saving and loading without pickle ---------------------------------------------------------


def test_the_registry_loads_the_pipeline_without_pickle_and_predicts_the_same(world):
    import numpy as np
    from mlflow.models import Model

    uri = f"models:/{world.spec.name}/{world.version}"
    loaded = registry.load_version(world.spec, world.version, world.settings)
    assert loaded.inputs == tuple(world.columns)
    assert model_inputs.categorical_inputs(loaded.model) == STRING_INPUTS
    X = world.holdout[world.columns]
    assert np.array_equal(loaded.predict(X, "classification"), world.model.predict_proba(X)[:, 1])

    import mlflow

    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(world.settings.home / "dl")))
    flavor = Model.load(str(local / "MLmodel")).flavors["sklearn"]
    assert flavor["serialization_format"] == "skops" and flavor["pickled_model"].endswith(".skops")
    assert not list(local.rglob("*.pkl"))
    # What skops is asked to trust: scikit-learn's own types only.
    import skops.io

    asked = skops.io.get_untrusted_types(file=local / flavor["pickled_model"])
    assert asked and all(registry.is_trusted_type(t) for t in asked), asked
    assert all(t.startswith("sklearn.") or t == "functools.partial" for t in asked), asked


def test_native_categories_round_trip_through_the_loader_without_pickle(world):
    """HistGradientBoosting with ``categorical_features`` saves a ``functools.partial`` of
    sklearn's ``check_array``: the loader trusts exactly that name (skops checks the function
    inside on its own), so the native model logs, loads and predicts the same."""
    import numpy as np
    from airloop import train

    assert model_inputs.native_categorical_loadable()
    assert not registry.is_trusted_type("functools.partialmethod") and not registry.is_trusted_type("os.system")
    native = train.fit(world.spec, world.fit_on, world.columns)
    assert native.named_steps["model"].categorical_features == list(STRING_INPUTS)
    assert native.named_steps["model"].is_categorical_.tolist() == [True, True, False, False]
    metrics = train.evaluate(world.spec, native, world.holdout[world.columns], world.holdout[world.spec.target])
    _, version = train.log_training_run(
        world.spec, native, world.fit_on, world.holdout, world.columns, metrics,
        train.Lineage(trigger_reason="native"), world.settings,
    )
    loaded = registry.load_version(world.spec, version, world.settings)
    X = world.holdout[world.columns]
    assert np.array_equal(loaded.predict(X, "classification"), native.predict_proba(X)[:, 1])


# --- serving ------------------------------------------------------------------------------------


def test_request_schema_lists_the_categories_and_refuses_others(world):
    from pydantic import ValidationError

    Request = serve.request_model(world.spec)
    schema = Request.model_json_schema()["properties"]["service_class"]
    assert schema["enum"] == CLASSES and schema["type"] == "string"
    assert "One of: economy, comfort, xl" in schema["description"]
    ok = Request.model_validate_json(json.dumps({"vehicle_id": 3, "service_class": "xl", "distance_km": 2.5}))
    assert ok.service_class == "xl"
    with pytest.raises(ValidationError) as err:
        Request.model_validate_json(json.dumps({"vehicle_id": 3, "service_class": "first", "distance_km": 2.5}))
    (problem,) = err.value.errors()
    assert problem["type"] == "literal_error" and problem["loc"] == ("service_class",)
    assert problem["msg"] == "Input should be 'economy', 'comfort' or 'xl'"
    for example in serve.request_examples(world.spec):  # the OpenAPI examples are valid requests
        assert Request.model_validate_json(json.dumps(example)).service_class in CLASSES
    assert serve.schema.sample_value(world.spec, "service_class") in CLASSES  # the warm-up request too


def test_model_frame_keeps_strings_and_casts_numbers():
    rows = [{"kind": "van", "x": 1, "y": None}, {"kind": None, "x": None, "y": 2.5}, {"x": 3}]
    frame = serve.model_frame(("x", "kind", "y"), rows, categorical=("kind",))
    assert list(frame.columns) == ["x", "kind", "y"]
    assert frame["kind"].dtype == object and frame["kind"].tolist() == ["van", None, None]
    assert str(frame["x"].dtype) == str(frame["y"].dtype) == "float64"
    assert frame["x"].tolist()[::2] == [1.0, 3.0] and frame["y"].isna().tolist() == [True, False, True]
    # Numeric-only models: exactly the float frame as before.
    assert serve.model_frame(("x", "y"), rows).dtypes.tolist() == ["float64", "float64"]


@pytest.fixture(scope="module")
def online(world):
    """The fleet table materialized into the SQLite online store; the store to read it through."""
    from airloop import features

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRLOOP_HOME", str(world.settings.home))
        mp.setenv("AIRLOOP_MODELS_DIR", str(world.settings.models_dir))
        derived = features.Derived(changed_since=None)
        assert features.refresh_online(world.spec, derived, START, world.settings, applied=True) is not None
        yield features.get_store(world.settings)


def scored_rows(world, online, loaded, rows: list[dict], at: dt.datetime) -> list:
    """Rows predicted through the real lookup, stamped ``at`` (as if served then)."""
    return [dataclasses.replace(s, predicted_at=at) for s in serve.lookup_and_predict(world.spec, rows, loaded, online)]


def test_lookup_and_predict_sends_the_model_strings(world, online):
    import numpy as np
    import pandas as pd

    loaded = registry.load_version(world.spec, world.version, world.settings)
    known = next(v for v, kind in world.vehicle_types.items() if kind == "van")
    rows = [
        {"vehicle_id": known, "service_class": "xl", "distance_km": 4.0},
        {"vehicle_id": known, "service_class": "economy", "distance_km": 4.0},
        {"vehicle_id": UNKNOWN_VEHICLES[0], "service_class": "comfort", "distance_km": 12.5},
    ]
    scored = serve.lookup_and_predict(world.spec, rows, loaded, online)
    assert [s.features["vehicle_type"] for s in scored] == ["van", "van", None]
    assert [s.features["service_class"] for s in scored] == ["xl", "economy", "comfort"]
    assert scored[2].features_missing and set(scored[2].missing_features) == {"vehicle_type", "seats"}
    assert scored[0].prediction > scored[1].prediction  # an xl ride in a van is later
    # The same as the model on the same values, straight from a frame.
    expected = world.model.predict_proba(pd.DataFrame([s.features for s in scored])[world.columns])[:, 1]
    assert np.allclose([s.prediction for s in scored], expected, rtol=0, atol=1e-12)


def test_string_features_round_trip_through_the_prediction_log(world, online, tmp_path):
    loaded = registry.load_version(world.spec, world.version, world.settings)
    url = f"sqlite:///{tmp_path / 'predictions.db'}"
    plog = prediction_log.PredictionLog(url, settings=world.settings, spill_dir=tmp_path / "spill")
    at = START + dt.timedelta(days=DAYS, hours=1)
    rows = [{"vehicle_id": v, "service_class": c, "distance_km": 3.0}
            for v, c in ((1, "xl"), (UNKNOWN_VEHICLES[1], "economy"))]
    scored = scored_rows(world, online, loaded, rows, at)
    # A category that looks like a number stays a string (the JSON says it is one).
    numeric_looking = {**scored[0].features, "vehicle_type": "7"}
    scored.append(dataclasses.replace(scored[0], request_id="numeric-looking", features=numeric_looking))
    plog.append(scored)
    plog.close()
    frame = prediction_log.read_predictions(model=world.spec, settings=world.settings, url=url)
    # Rows logged at the same moment come back in request-id order: read them by id.
    ids = [s.request_id for s in scored]
    by_id = frame.set_index("request_id").loc[ids]
    assert by_id["vehicle_id"].tolist() == [1, UNKNOWN_VEHICLES[1], 1]
    assert by_id["vehicle_type"].tolist() == [world.vehicle_types[1], None, "7"]
    assert by_id["service_class"].tolist() == ["xl", "economy", "xl"]
    assert str(frame["distance_km"].dtype) == "float64" and str(frame["seats"].dtype) == "float64"
    assert by_id["features_missing"].tolist() == [False, True, False]


# --- monitoring -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def drift_checks(world, online):
    """Two days of served rides logged to the prediction store: the training mix, then mostly xl."""
    import numpy as np
    from airloop import monitoring

    loaded = registry.load_version(world.spec, world.version, world.settings)
    plog = prediction_log.PredictionLog(settings=world.settings)
    rng = np.random.default_rng(11)
    days = {"same": START + dt.timedelta(days=10), "changed": START + dt.timedelta(days=11)}
    mixes = {"same": CLASSES, "changed": ["xl"] * 8 + ["economy"]}
    for name, day in days.items():
        rides = make_rides(rng, 400, day, 1, world.vehicle_types, classes=mixes[name])
        rows = [{**r, "vehicle_id": int(r["vehicle_id"])}
                for r in rides[["vehicle_id", "service_class", "distance_km"]].to_dict("records")]
        scored = serve.lookup_and_predict(world.spec, rows, loaded, online)
        plog.append([dataclasses.replace(s, predicted_at=t.to_pydatetime()) for s, t in zip(scored, rides["ride_at"])])
    plog.close()
    return {
        name: monitoring.check_drift(world.spec, now=day + dt.timedelta(days=1), settings=world.settings)
        for name, day in days.items()
    }


def test_drift_compares_strings_as_categories(world, drift_checks):
    same, changed = drift_checks["same"], drift_checks["changed"]
    for check in (same, changed):
        assert check.rows == 400 and set(check.feature_scores) == set(world.columns)
        assert "Jensen-Shannon" in check.feature_methods["service_class"]  # a categorical test
        assert "Wasserstein" in check.feature_methods["distance_km"]  # a numeric one
        assert Path(check.html_path).stat().st_size > 100_000 and check.mlflow_run_id
    assert "service_class" not in same.drifted_columns and "vehicle_type" not in same.drifted_columns
    assert "service_class" in changed.drifted_columns
    assert changed.feature_scores["service_class"] > 3 * same.feature_scores["service_class"]
    # The reference the champion is compared with keeps the strings too.
    from airloop import monitoring

    reference = monitoring.load_reference(world.spec, world.settings)
    assert reference.training["service_class"].dtype == object
    assert set(reference.training["vehicle_type"].dropna()) == set(TYPES)


def test_a_numbers_only_drift_method_leaves_the_strings_to_a_categorical_one(world, drift_checks):
    from airloop import monitoring

    spec = world.spec.model_copy(update={"drift": world.spec.drift.model_copy(update={"stattest": "wasserstein"})})
    reference = monitoring.load_reference(spec, world.settings)
    end = START + dt.timedelta(days=12)
    current, _, _, _ = monitoring.read_window(spec, end - dt.timedelta(days=1), end, reference, world.settings)
    assert current["service_class"].dtype == object and current["seats"].dtype == "float64"
    result = monitoring.run_drift(spec, current, reference)
    methods = {c: m.lower() for c, m in result.feature_methods.items()}
    assert methods["distance_km"] == methods["seats"] == "wasserstein", methods
    assert "jensen-shannon" in methods["service_class"] and "jensen-shannon" in methods["vehicle_type"], methods
    assert "service_class" in result.drifted_columns


# --- the HTTP service --------------------------------------------------------------------------


@pytest.mark.slow
def test_the_service_takes_categories_and_refuses_unknown_ones(world, drift_checks, tmp_path):
    """A real ``bentoml serve`` of the categorical champion (after the drift checks: it logs)."""
    import requests
    from airloop.testing import BentoServer

    server = BentoServer(world.settings, tmp_path / "server.log", AIRLOOP_SERVE_MODEL=world.spec.name)
    try:
        server.start().wait_ready()
        body = {"vehicle_id": 2, "service_class": "comfort", "distance_km": 3.5}
        ok = requests.post(f"{server.url}/predict", json=body, timeout=30)
        assert ok.status_code == 200, ok.text
        bad = requests.post(f"{server.url}/predict", json={**body, "service_class": "first"}, timeout=30)
        assert bad.status_code == 400, bad.text  # the service's status for every invalid body
        assert bad.json()["detail"][0]["msg"] == "Input should be 'economy', 'comfort' or 'xl'"
        document = requests.get(f"{server.url}/docs.json", timeout=30).json()
        schema = document["components"]["schemas"][serve.request_model(world.spec).__name__]
        assert schema["properties"]["service_class"]["enum"] == CLASSES
    finally:
        server.stop()
    logged = prediction_log.read_predictions(model=world.spec, settings=world.settings).set_index("request_id")
    row = logged.loc[ok.json()["request_id"]]
    assert row["service_class"] == "comfort" and row["vehicle_type"] == world.vehicle_types[2]
