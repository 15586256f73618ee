"""The prediction service for real: a BentoML server started with ``bentoml serve`` on a real
Feast store and a real MLflow registry in a temporary AIRLOOP_HOME, plus the serving library
(schemas, model input by name, the prediction log on SQLite and Postgres) in-process."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from airloop import errors, prediction_log, promotion, registry, serve
from airloop.settings import ServeConfigError, Settings, ensure_dirs, get_settings, serve_config
from airloop.testing import BentoServer, free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVICE = "airloop.bento_service:PredictionService"
DAYS = 10
ORDERS_PER_DAY = 600
UNKNOWN = 999_999


def row(restaurant_id: int, distance_km: float = 3.2, items: int = 2, order_hour: int = 19) -> dict:
    return {"restaurant_id": restaurant_id, "distance_km": distance_km, "items": items, "order_hour": order_hour}


def scored(request_id: str, entity: int = 1001, prediction: float = 0.25, minutes_ago: float = 0.0) -> serve.Scored:
    return serve.Scored(
        request_id=request_id,
        model="late_delivery",
        model_version="1",
        entity=entity,
        features={"distance_km": 3.2, "items": 2, "order_hour": 19, "orders_7d": None},
        prediction=prediction,
        missing_features=["orders_7d"],
        predicted_at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=minutes_ago),
    )


@pytest.fixture(autouse=True)
def _no_leaked_tracking_uri(monkeypatch):
    """mlflow.set_tracking_uri() exports MLFLOW_TRACKING_URI, which get_settings() would follow."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


# --- the library, in-process ----------------------------------------------------------------


def test_importing_serve_imports_no_heavy_library():
    code = (
        "import sys, airloop.serve, airloop.package, airloop.prediction_log; "
        "print(sorted({'mlflow', 'feast', 'pandas', 'sqlalchemy', 'psycopg', 'psycopg2', 'bentoml', 'sklearn'}"
        " & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_request_schema_comes_from_the_spec(demo_spec):
    from pydantic import ValidationError

    Request = serve.request_model(demo_spec)
    assert list(Request.model_fields) == ["restaurant_id", "distance_km", "items", "order_hour"]
    assert Request.model_validate_json(json.dumps(row(1001, distance_km=3))).distance_km == 3.0
    bad = {
        "restaurant_id": "1001",  # strict: a string is not an integer
        "distance_km": 61.0,  # validation range [0, 60]
        "items": 2.0,  # strict: not an integer
        "order_hour": 24,  # derived field range [0, 23]
        "zone": "north",  # unknown field
    }
    with pytest.raises(ValidationError) as err:
        Request.model_validate_json(json.dumps(bad))
    assert {e["loc"][0] for e in err.value.errors()} == set(bad)

    Batch = serve.batch_request_model(demo_spec, max_rows=3)
    assert len(Batch.model_validate({"rows": [row(1)] * 3}).rows) == 3
    for rows in ([], [row(1)] * 4):
        with pytest.raises(ValidationError):
            Batch.model_validate({"rows": rows})


def test_model_input_is_built_by_name():
    inputs = ("b", "a", "c")
    frame = serve.model_frame(inputs, [{"a": 1, "b": 2, "c": None}, {"c": 3, "a": 4, "b": 5}])
    assert list(frame.columns) == list(inputs)
    assert frame.to_numpy().tolist()[1] == [5.0, 4.0, 3.0]
    assert frame.to_numpy().tolist()[0][:2] == [2.0, 1.0] and frame["c"].isna().tolist() == [True, False]


def test_a_model_needing_unserved_inputs_is_refused(demo_spec):
    model = registry.LoadedModel("late_delivery", "7", "run", None, ("distance_km", "bogus"), dt.datetime.now())
    with pytest.raises(errors.ModelNotServable, match="v7 needs inputs .* bogus"):
        serve.check_servable(demo_spec, model, {"distance_km", "items"})
    serve.check_servable(demo_spec, model, {"distance_km", "bogus"})


def test_serve_config_from_env(monkeypatch):
    monkeypatch.setenv("AIRLOOP_SERVE_POLL_SECONDS", "0.25")
    monkeypatch.setenv("AIRLOOP_SERVE_MAX_BATCH_ROWS", "50")
    config = serve_config()
    assert (config.poll_seconds, config.max_batch_rows, config.max_body_bytes) == (0.25, 50, 1_048_576)
    monkeypatch.setenv("AIRLOOP_SERVE_MAX_BATCH_ROWS", "lots")
    with pytest.raises(ServeConfigError, match="AIRLOOP_SERVE_MAX_BATCH_ROWS='lots'"):
        serve_config()
    monkeypatch.setenv("AIRLOOP_SERVE_MAX_BATCH_ROWS", "0")
    with pytest.raises(ServeConfigError, match="must be positive"):
        serve_config()
    monkeypatch.setenv("AIRLOOP_SERVE_MAX_BATCH_ROWS", "50")
    monkeypatch.setenv("AIRLOOP_SERVE_WORKERS", "2")
    monkeypatch.setenv("AIRLOOP_SERVE_ACCESS_LOG", "False")
    config = serve_config()
    assert (config.workers, config.threads, config.access_log, config.predict_in_thread) == (2, 1, False, False)
    assert config.trace_predict is False
    monkeypatch.setenv("AIRLOOP_SERVE_TRACE_PREDICT", "true")
    assert serve_config().trace_predict is True
    monkeypatch.setenv("AIRLOOP_SERVE_PREDICT_IN_THREAD", "1")
    monkeypatch.setenv("AIRLOOP_SERVE_TIMEOUT_SECONDS", "2.5")
    assert (serve_config().predict_in_thread, serve_config().timeout_seconds) == (True, 2.5)
    # The settings command shows the serving knobs with the rest of the settings.
    shown = subprocess.run(
        [sys.executable, "-m", "airloop.cli", "settings"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert {"AIRLOOP_SERVE_WORKERS=2", "AIRLOOP_SERVE_PREDICT_IN_THREAD=true", "AIRLOOP_SERVE_TIMEOUT_SECONDS=2.5"} <= set(shown)
    monkeypatch.setenv("AIRLOOP_SERVE_ACCESS_LOG", "off-ish")
    with pytest.raises(ServeConfigError, match="is not true or false"):
        serve_config()


def check_prediction_log(settings: Settings, url: str, demo_spec) -> None:
    """Append, flush, label, filter and read back on any SQL store."""
    log = prediction_log.PredictionLog(url, settings=settings, flush_seconds=30)
    try:
        log.append([scored("old", minutes_ago=90), scored("a", 1002, 0.5), scored("b", UNKNOWN, 0.75)])
        assert log.pending == 3  # queued, not yet written (flush interval 30 s)
        log.flush()
        assert (log.pending, log.written) == (0, 3)
        log.append([scored("a", 1002, 0.99)])  # a duplicate request id never doubles a row
        log.attach_label("a", 1)  # flushes first
        with pytest.raises(errors.UnknownRequestId):
            log.attach_label("nope", 0)
    finally:
        log.close()

    frame = prediction_log.read_predictions(model=demo_spec, settings=settings, url=url)
    assert list(frame["request_id"]) == ["old", "a", "b"]  # oldest first
    assert list(frame.columns[:9]) == [
        "request_id", "timestamp", "model", "model_version", "restaurant_id", "prediction",
        "features_missing", "label", "labeled_at",
    ]
    assert str(frame["timestamp"].dt.tz) == "UTC" and frame["restaurant_id"].dtype == "int64"
    a = frame.set_index("request_id").loc["a"]
    assert (a["prediction"], a["label"], a["restaurant_id"], a["distance_km"]) == (0.5, 1.0, 1002, 3.2)
    assert a["labeled_at"] >= a["timestamp"]
    assert frame.set_index("request_id").loc["b", "orders_7d"] != frame.set_index("request_id").loc["b", "orders_7d"]
    since = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=30)
    assert list(prediction_log.read_predictions(since=since, model="late_delivery", settings=settings, url=url)["request_id"]) == ["a", "b"]
    assert list(prediction_log.read_predictions(until=since, settings=settings, url=url, expand_features=False)["request_id"]) == ["old"]
    assert prediction_log.read_predictions(model="other_model", settings=settings, url=url).empty


def test_prediction_log_on_sqlite(settings, demo_spec):
    check_prediction_log(settings, settings.prediction_store, demo_spec)
    assert Path(settings.prediction_store.removeprefix("sqlite:///")).parent == settings.home / "predictions"


def test_prediction_log_keeps_every_key_of_a_two_entity_model(settings, demo_spec):
    from airloop.spec import EntitySpec

    two_keys = demo_spec.model_copy(update={
        "name": "two_keys",
        "dataset": demo_spec.dataset.model_copy(update={"columns": {**demo_spec.dataset.columns, "zone_id": "int"}}),
        "entities": [*demo_spec.entities, EntitySpec(name="zone", join_key="zone_id")],
    })
    log = prediction_log.PredictionLog(settings=settings, flush_seconds=30)
    try:
        answer = scored("z1", entity={"restaurant_id": 1002, "zone_id": 7})
        log.append([dataclasses.replace(answer, model="two_keys")])
    finally:
        log.close()
    frame = prediction_log.read_predictions(model=two_keys, settings=settings)
    assert list(frame.columns[4:6]) == ["restaurant_id", "zone_id"]
    assert frame.loc[0, ["restaurant_id", "zone_id"]].tolist() == [1002, 7]
    assert frame["zone_id"].dtype == "int64"


def _break_store(settings) -> None:
    """A real store failure: the table disappears under the running log."""
    import sqlalchemy as sa

    engine = prediction_log.make_engine(settings.prediction_store)
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE {prediction_log.PREDICTIONS_TABLE}"))
    engine.dispose()


def test_prediction_log_spills_to_disk_when_the_store_fails(settings, demo_spec):
    log = prediction_log.PredictionLog(settings=settings, flush_seconds=30)
    _break_store(settings)
    log.append([scored(f"r{i}") for i in range(5)])
    log.close()  # clean shutdown with the store down: the rows go to a spill file
    spilled = list(log.spill_dir.glob("predictions-*.jsonl"))
    assert len(spilled) == 1 and len(spilled[0].read_text().splitlines()) == 5
    assert "no such table" in log.last_error

    prediction_log.PredictionLog(settings=settings).close()  # the next start loads the spill files
    assert sorted(prediction_log.read_predictions(settings=settings, model=demo_spec)["request_id"]) == [f"r{i}" for i in range(5)]
    assert not list(log.spill_dir.glob("*"))


def test_prediction_spill_is_capped_with_a_clear_error_and_loses_nothing(settings, demo_spec):
    log = prediction_log.PredictionLog(
        settings=settings, flush_seconds=0.05, batch_size=10, max_pending=10, max_spill_bytes=8_000
    )  # 10 rows take ~6 kB on disk: one spill file fits, a second does not
    _break_store(settings)
    accepted, deadline = [], time.monotonic() + 60
    refused = None
    while refused is None:
        assert time.monotonic() < deadline, (log.pending, log.spill_full, log.last_error)
        batch = [scored(f"r{len(accepted) + i}") for i in range(10)]
        try:
            log.append(batch)
            accepted += [b.request_id for b in batch]
        except errors.PredictionStoreError as exc:
            refused = str(exc)
        time.sleep(0.2)
    assert "spill files" in refused and "are full (8000 bytes" in refused and "no such table" in refused
    assert 0 < sum(p.stat().st_size for p in log.spill_dir.iterdir()) <= 8_000
    # The store comes back (a new log creates the table): queued rows are written by the
    # writer's next retry, the spill files replayed, nothing lost.
    prediction_log.PredictionLog(settings=settings).close()
    while log.pending or log.spill_full:
        assert time.monotonic() < deadline + 60, (log.pending, log.last_error)
        time.sleep(0.2)
    log.close()
    prediction_log.PredictionLog(settings=settings).close()
    logged = prediction_log.read_predictions(settings=settings, model=demo_spec)
    assert sorted(logged["request_id"]) == sorted(accepted)


def test_unreachable_prediction_store_is_a_clear_error(settings):
    url = f"postgresql://postgres:secret@127.0.0.1:{free_port()}/airloop_predictions"
    with pytest.raises(errors.PredictionStoreError) as err:
        prediction_log.PredictionLog(url, settings=settings, connect_timeout=2)
    message = str(err.value)
    assert "prediction store postgresql://postgres:***@127.0.0.1:" in message and "is not usable" in message
    assert "secret" not in message


def test_watcher_without_a_champion_is_not_ready(settings, demo_spec):
    watcher = serve.ChampionWatcher(demo_spec, settings, poll_seconds=60)
    assert watcher.try_refresh() is False
    with pytest.raises(errors.NotReady, match="no servable @champion model for 'late_delivery' yet.*no @champion alias"):
        watcher.get()
    assert watcher.status()["model_version"] is None


@pytest.mark.services
def test_prediction_log_on_postgres(settings, pg_database, demo_spec):
    check_prediction_log(settings, pg_database, demo_spec)


@pytest.mark.services
def test_services_starting_together_on_a_new_store_all_start(settings, pg_database, run_together):
    """``docker compose up`` starts every model's prediction service at once on a new database.

    Both create the predictions table; without taking turns, one CREATE TABLE lost the race
    (``DuplicateTable``, ``DuplicateObject``) in 3 to 7 of 60 openings here (one run of four saw
    none), and that service did not start."""
    import sqlalchemy as sa

    engine = sa.create_engine(pg_database)
    failures: list[str] = []
    for round_no in range(40):
        with engine.begin() as conn:  # a new store each round
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {prediction_log.PREDICTIONS_TABLE} CASCADE"))

        def open_log(n: int = round_no) -> None:
            spill = settings.home / f"spill-{n}-{threading.get_ident()}"
            prediction_log.PredictionLog(pg_database, settings=settings, spill_dir=spill).close()

        failures += run_together(open_log)
    engine.dispose()
    assert failures == []


def test_services_starting_together_on_a_new_sqlite_store_all_start(settings, tmp_path, run_together):
    """The same on the embedded default: the demo starts one service per model on one SQLite
    file. Without taking turns, 95 of 180 openings here failed with ``table airloop_predictions
    already exists`` (and once the demo's second model lost its service)."""
    failures: list[str] = []
    for round_no in range(20):
        url = f"sqlite:///{tmp_path / f'predictions-{round_no}.db'}"  # a new store each round

        def open_log(url: str = url) -> None:
            spill = tmp_path / f"spill-{threading.get_ident()}"
            prediction_log.PredictionLog(url, settings=settings, spill_dir=spill).close()

        failures += run_together(open_log)
    assert failures == []


# --- a real server ----------------------------------------------------------------------------


@dataclass
class Demo:
    """A trained, served setup: features online, v1 is @champion, v2 registered without alias."""

    settings: Settings
    spec: object
    store: object
    champion: str
    challenger: str
    restaurants: list[int]
    models: dict = field(default_factory=dict)

    def model(self, version: str):
        if version not in self.models:
            self.models[version] = registry.load_sklearn_model(f"models:/{self.spec.name}/{version}", self.settings)
        return self.models[version]

    def expected(self, version: str, rows: list[dict]) -> list[float]:
        """What the model predicts, loaded straight from MLflow, on the same online features."""
        import pandas as pd
        from airloop import features

        model = self.model(version)
        looked_up = features.get_online_features(self.spec, rows, store=self.store)
        records = [{**{k: r[k] for k in self.spec.features.request}, **f} for r, f in zip(rows, looked_up)]
        frame = pd.DataFrame.from_records(records)[list(model.feature_names_in_)].astype("float64")
        return list(model.predict_proba(frame)[:, 1])


def prepare_demo(home: Path, spec) -> Demo:
    """Orders -> statistics -> Feast (applied, materialized) -> training set -> v1 champion, v2."""
    import pandas as pd
    from airloop import features, train
    from airloop.spec import example_data

    datagen = example_data("late_delivery")

    settings = ensure_dirs(get_settings())
    assert settings.home == home
    today = dt.datetime.now(dt.timezone.utc).date()
    out = (settings.offline_dir / "orders")
    out.mkdir(parents=True, exist_ok=True)
    for i in range(DAYS, 0, -1):
        day = today - dt.timedelta(days=i)
        datagen.generate_orders(day, orders_per_day=ORDERS_PER_DAY).to_parquet(out / f"orders_{day:%Y-%m-%d}.parquet")
    features.derive(spec, settings)
    features.apply(settings)
    # Only this model's views: the other models' (applied too, one Feast project) have no data here.
    applied = features.get_store(settings)
    features.materialize(
        dt.datetime.now(dt.timezone.utc), settings, feature_views=features.stored_views(spec, applied), store=applied
    )

    orders = pd.concat(pd.read_parquet(p) for p in sorted(out.glob("*.parquet")))
    training = features.build_training_set(spec, features.entity_df_from_events(spec, orders), settings=settings)
    fit_on, holdout = train.time_split(training, spec.dataset.timestamp, spec.split.holdout_days)
    columns = train.feature_columns(spec, training)
    versions = []
    for params in (None, {"max_iter": 25, "learning_rate": 0.2}):
        trained = spec if params is None else spec.model_copy(
            update={"estimator": spec.estimator.model_copy(update={"params": params})}
        )
        model = train.fit(trained, fit_on, columns)
        metrics = train.evaluate(spec, model, holdout[columns], holdout[spec.target])
        _, version = train.log_training_run(
            spec, model, fit_on, holdout, columns, metrics, train.Lineage(trigger_reason="test"), settings
        )
        if params is None:
            assert promotion.gate(spec, version, holdout, metrics, actor="test", settings=settings).promoted
        versions.append(version)
    assert registry.champion_version(spec, settings) == versions[0]
    store = features.get_store(settings)
    return Demo(settings, spec, store, versions[0], versions[1], sorted(orders["restaurant_id"].unique().tolist()))


@pytest.fixture(scope="module")
def demo(tmp_path_factory, demo_spec):
    home = tmp_path_factory.mktemp("serve") / "airloop"
    # The feature repo reads the settings from the environment when it is applied.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRLOOP_HOME", str(home))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)  # mlflow.set_tracking_uri() exports it
        yield prepare_demo(home, demo_spec)


@pytest.fixture(scope="module")
def server(demo):
    # The models directory holds several specs: a service must be told which one it serves.
    srv = BentoServer(demo.settings, demo.settings.home / "server.log", AIRLOOP_SERVE_MODEL=demo.spec.name,
                      AIRLOOP_SERVE_POLL_SECONDS="0.5")
    try:
        yield srv.start().wait_ready()
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def issued() -> list[str]:
    """Request ids of every prediction the module's server answered."""
    return []


def post(server: BentoServer, path: str, payload=None, *, data: bytes | None = None, headers=None):
    """POST as the service's clients do: /feedback with the service's feedback token."""
    import requests

    if path == "/feedback":
        headers = {"Authorization": f"Bearer {server.feedback_token}", **(headers or {})}
    return requests.post(f"{server.url}{path}", json=payload, data=data, headers=headers, timeout=30)


@pytest.mark.slow
def test_predictor_holds_the_feature_service_between_registry_reads(demo, monkeypatch):
    predictor = serve.Predictor(demo.spec, demo.settings, store=demo.store, poll_seconds=3600)
    predictor.watcher.refresh()
    rows = [row(r) for r in demo.restaurants[:3]]
    expected = demo.expected(demo.champion, rows)
    reads = []
    real_read = demo.store.get_feature_service
    monkeypatch.setattr(demo.store, "get_feature_service", lambda *a, **k: reads.append(1) or real_read(*a, **k))
    first = predictor.predict(rows)
    assert predictor.predict(rows)[0].prediction == first[0].prediction
    assert len(reads) == 1  # one registry read for both requests

    def registry_down(*args, **kwargs):
        raise ConnectionError("registry unreachable")

    fresh = serve.Predictor(demo.spec, demo.settings, store=demo.store, poll_seconds=3600)
    fresh.watcher.refresh()
    monkeypatch.setattr(demo.store, "get_feature_service", registry_down)
    predictor.service_seconds = 0  # due for a re-read: it fails, the service read last keeps serving
    assert [s.prediction for s in predictor.predict(rows)] == pytest.approx(expected)
    with pytest.raises(errors.FeatureLookupError, match="registry unreachable") as err:
        fresh.predict(rows)  # never read it: nothing to fall back on
    assert err.value.status == 503


@pytest.mark.slow
def test_predictions_match_the_champion_loaded_directly(server, demo, issued):
    import bentoml

    rows = [row(r, distance_km=1.0 + (r % 9), items=1 + r % 4, order_hour=r % 24) for r in demo.restaurants[:12]]
    with bentoml.SyncHTTPClient(server.url) as client:
        answers = [client.predict(**r) for r in rows[:6]]
    answers = [a if isinstance(a, dict) else a.model_dump() for a in answers]
    answers += [post(server, "/predict", r).json() for r in rows[6:]]  # plain HTTP too

    assert {a["model_version"] for a in answers} == {demo.champion}
    assert all(a["model"] == "late_delivery" and not a["features_missing"] for a in answers)
    assert [a["prediction"] for a in answers] == pytest.approx(demo.expected(demo.champion, rows), abs=1e-12)
    assert len({a["request_id"] for a in answers}) == len(rows)
    issued.extend(a["request_id"] for a in answers)


@pytest.mark.slow
def test_batch_endpoint_answers_in_row_order(server, demo, issued):
    rows = [row(r, order_hour=h) for r in demo.restaurants[:40] for h in (3, 12)] + [row(UNKNOWN)]
    resp = post(server, "/predict_batch", {"rows": rows})
    assert resp.status_code == 200, resp.text
    answers = resp.json()["predictions"]
    assert len(answers) == len(rows) and len({a["request_id"] for a in answers}) == len(rows)
    version = answers[0]["model_version"]
    assert {a["model_version"] for a in answers} == {version}
    assert [a["prediction"] for a in answers] == pytest.approx(demo.expected(version, rows), abs=1e-12)
    assert [a["features_missing"] for a in answers] == [False] * (len(rows) - 1) + [True]
    issued.extend(a["request_id"] for a in answers)


@pytest.mark.slow
def test_unknown_entity_is_predicted_with_missing_features_flagged(server, demo, issued):
    resp = post(server, "/predict", row(UNKNOWN))
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    issued.append(answer["request_id"])
    assert answer["features_missing"] is True
    stats = ["orders_1d", "orders_7d", "avg_prep_minutes_7d", "late_rate_7d", "avg_distance_km_7d", "avg_items_7d"]
    assert set(stats) <= set(answer["missing_features"])
    assert "distance_km" not in answer["missing_features"] and "is_peak_hour" not in answer["missing_features"]
    assert 0.0 <= answer["prediction"] <= 1.0
    assert answer["prediction"] == pytest.approx(demo.expected(answer["model_version"], [row(UNKNOWN)])[0], abs=1e-12)


BIG_BATCH = json.dumps({"rows": [row(1001)] * 20_000}).encode()  # ~1.5 MB, over the 1 MiB cap


@pytest.mark.slow
@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "says"),
    [
        ("/predict", b'{"restaurant_id": 1001, "distance_km": ', None, 400, "Invalid JSON"),
        ("/predict", b"", None, 400, "Field required"),
        ("/predict", b"[1, 2]", None, 400, "Input should be an object"),
        ("/predict", json.dumps({**row(1001), "restaurant_id": "1001"}).encode(), None, 400, "valid integer"),
        ("/predict", json.dumps({**row(1001), "distance_km": "far"}).encode(), None, 400, "valid number"),
        ("/predict", json.dumps({**row(1001), "items": 2.5}).encode(), None, 400, "valid integer"),
        ("/predict", json.dumps({"restaurant_id": 1001, "items": 2}).encode(), None, 400, "Field required"),
        ("/predict", json.dumps({**row(1001), "distance_km": -1}).encode(), None, 400, "greater than or equal to 0"),
        ("/predict", json.dumps({**row(1001), "order_hour": 24}).encode(), None, 400, "less than or equal to 23"),
        ("/predict", json.dumps({**row(1001), "restaurant_id": 2**64}).encode(), None, 400, "less than or equal"),
        ("/predict", json.dumps({**row(1001), "zone": "x"}).encode(), None, 400, "Extra inputs are not permitted"),
        ("/predict", json.dumps(row(1001)).encode(), {"Content-Type": "text/csv"}, 415, "send application/json"),
        ("/predict", json.dumps(row(1001)).encode(), {"Content-Type": "multipart/form-data"}, 415, "application/json"),
        ("/predict_batch", json.dumps({"rows": []}).encode(), None, 400, "at least 1 item"),
        ("/predict_batch", json.dumps({"rows": [row(1001)] * 1001}).encode(), None, 400, "at most 1000 items"),
        ("/predict_batch", json.dumps({"rows": [row(1001), {**row(1002), "items": 0}]}).encode(), None, 400, "rows"),
        ("/predict_batch", BIG_BATCH, None, 413, "request body too large"),
        ("/predict_batch", iter([BIG_BATCH[i : i + 65536] for i in range(0, len(BIG_BATCH), 65536)]), None, 413,
         "request body too large"),  # chunked, no Content-Length
        ("/feedback", json.dumps({"request_id": "no-such-id", "label": 1}).encode(), None, 404, "no prediction"),
        ("/feedback", json.dumps({"request_id": "x y", "label": 1}).encode(), None, 400, "request_id"),
        ("/feedback", json.dumps({"request_id": "abc"}).encode(), None, 400, "Field required"),
        ("/feedback", json.dumps({"request_id": "abc", "label": 1}).encode(), {"Authorization": ""}, 401,
         "feedback token"),
        ("/feedback", json.dumps({"request_id": "abc", "label": 1}).encode(), {"Authorization": "Bearer wrong"}, 401,
         "feedback token"),
    ],
    ids=lambda v: v if isinstance(v, str) and v.startswith("/") else None,
)
def test_bad_requests_get_a_clear_4xx(server, path, body, headers, status, says):
    resp = post(server, path, data=body, headers={"Content-Type": "application/json", **(headers or {})})
    assert resp.status_code == status, resp.text
    assert says in resp.text
    assert "error" in resp.json()


@pytest.mark.slow
def test_bad_request_through_the_bentoml_client(server):
    import bentoml
    from bentoml.exceptions import BentoMLException

    with bentoml.SyncHTTPClient(server.url) as client:
        with pytest.raises(BentoMLException) as err:
            client.predict(restaurant_id=1001, distance_km=3.0, items=2, order_hour=99)
    assert err.value.error_code == 400 and "order_hour" in str(err.value)


@pytest.mark.slow
def test_bentoml_endpoints_stay_available(server, demo, issued):
    import requests

    for path in ("/healthz", "/livez", "/readyz"):
        assert requests.get(f"{server.url}{path}", timeout=10).status_code == 200, path
    metrics = requests.get(f"{server.url}/metrics", timeout=10).text
    assert 'endpoint="/predict"' in metrics and "bentoml_service_request" in metrics
    status = post(server, "/status")
    body = status.json()
    assert body["model"] == "late_delivery" and body["last_error"] is None
    assert body["prediction_log"]["failures"] == 0
    # BentoML's request span (its id is this header) is skipped on the prediction routes only.
    assert status.headers.get("X-BentoML-Request-ID")
    predicted = post(server, "/predict", row(demo.restaurants[0]))
    issued.append(predicted.json()["request_id"])
    assert predicted.status_code == 200 and "X-BentoML-Request-ID" not in predicted.headers


@pytest.mark.slow
def test_confirming_a_version_checks_the_model_served_too(server, demo):
    """The package DAG's confirm_served: the right version of another model is not a success."""
    serving = post(server, "/status").json()["model_version"]
    status = serve.wait_until_serving(demo.spec, serving, url=server.url, timeout=10)
    assert (status["model"], status["model_version"]) == ("late_delivery", serving)
    other = demo.spec.model_copy(update={"name": "courier_eta"})
    started = time.monotonic()
    with pytest.raises(errors.WrongModelServed, match="serves model 'late_delivery', not 'courier_eta'"):
        serve.wait_until_serving(other, serving, url=server.url, timeout=60)
    assert time.monotonic() - started < 10  # at once: waiting would not change the model


@pytest.mark.slow
def test_prediction_log_rows_match_requests_one_for_one(server, demo, issued):
    rows = [row(r, items=1 + i % 5) for i, r in enumerate(demo.restaurants[:15])] + [row(UNKNOWN)]
    answers = [post(server, "/predict", r).json() for r in rows]
    answers += post(server, "/predict_batch", {"rows": rows}).json()["predictions"]
    issued.extend(a["request_id"] for a in answers)
    wanted = {a["request_id"]: (r, a) for r, a in zip(rows + rows, answers)}

    deadline = time.monotonic() + 20
    while True:
        logged = prediction_log.read_predictions(model=demo.spec, settings=demo.settings)
        logged = logged[logged["request_id"].isin(wanted)]
        if len(logged) == len(wanted) or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert sorted(logged["request_id"]) == sorted(wanted)  # each request exactly once
    for rec in logged.to_dict("records"):
        sent, answer = wanted[rec["request_id"]]
        assert rec["restaurant_id"] == sent["restaurant_id"]
        assert rec["prediction"] == answer["prediction"] and rec["model_version"] == answer["model_version"]
        assert rec["features_missing"] == answer["features_missing"]
        assert (rec["distance_km"], rec["items"], rec["order_hour"]) == (
            sent["distance_km"], sent["items"], sent["order_hour"],
        )
        assert rec["timestamp"] > dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=10)
    # The features logged are the features the model used: predicting from them again agrees.
    model = demo.model(logged["model_version"].iloc[0])
    columns = list(model.feature_names_in_)
    same = logged[logged["model_version"] == logged["model_version"].iloc[0]]
    assert list(model.predict_proba(same[columns])[:, 1]) == pytest.approx(list(same["prediction"]), abs=1e-12)


@pytest.mark.slow
def test_feedback_attaches_the_true_label(server, demo, issued):
    first, second = (post(server, "/predict", row(r)).json() for r in demo.restaurants[:2])
    issued.extend([first["request_id"], second["request_id"]])
    resp = post(server, "/feedback", {"request_id": first["request_id"], "label": 1})  # right away
    assert resp.status_code == 200, resp.text
    assert resp.json()["request_id"] == first["request_id"] and resp.json()["label"] == 1.0
    assert post(server, "/feedback", {"request_id": second["request_id"], "label": 0.5}).status_code == 400
    assert post(server, "/feedback", {"request_id": second["request_id"], "label": 0}).status_code == 200

    logged = prediction_log.read_predictions(model=demo.spec, settings=demo.settings).set_index("request_id")
    assert logged.loc[first["request_id"], "label"] == 1.0
    assert logged.loc[second["request_id"], "label"] == 0.0
    assert logged.loc[first["request_id"], "labeled_at"] >= logged.loc[first["request_id"], "timestamp"]


@pytest.mark.slow
def test_model_swap_under_continuous_requests(server, demo, issued):
    import requests


    stop = threading.Event()
    results: list[list[tuple]] = [[], []]
    failures: list[str] = []

    def client(out: list, restaurant: int) -> None:
        with requests.Session() as session:
            while not stop.is_set():
                try:
                    resp = session.post(f"{server.url}/predict", json=row(restaurant), timeout=30)
                except requests.RequestException as exc:
                    failures.append(repr(exc))
                    continue
                if resp.status_code != 200:
                    failures.append(f"{resp.status_code} {resp.text}")
                    continue
                answer = resp.json()
                out.append((answer["model_version"], answer["request_id"], answer["prediction"]))

    threads = [threading.Thread(target=client, args=(results[i], demo.restaurants[i])) for i in range(2)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.5)
        registry.client(demo.settings).set_registered_model_alias(demo.spec.name, "champion", demo.challenger)
        deadline = time.monotonic() + 60
        while not any(v == demo.challenger for out in results for v, *_ in out[-5:]):
            assert time.monotonic() < deadline, "the new champion never showed up in answers"
            assert not failures, failures[:3]
            time.sleep(0.2)
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    for out in results:
        issued.extend(rid for _, rid, _ in out)

    assert failures == []
    for i, out in enumerate(results):
        versions = [v for v, *_ in out]
        assert versions[0] == demo.champion and versions[-1] == demo.challenger
        switched = versions.index(demo.challenger)
        assert set(versions[switched:]) == {demo.challenger}  # never back to the old model
        predictions = {v: p for v, _, p in out}
        expected = {v: demo.expected(v, [row(demo.restaurants[i])])[0] for v in predictions}
        assert predictions == pytest.approx(expected, abs=1e-12)
    assert post(server, "/status").json()["model_version"] == demo.challenger


def _needs_an_input_nobody_serves():
    import pandas as pd
    from sklearn.ensemble import HistGradientBoostingClassifier

    frame = pd.DataFrame({"distance_km": [1.0, 2.0, 3.0, 4.0] * 10, "bogus": [0.0, 1.0] * 20})
    return HistGradientBoostingClassifier(max_iter=5).fit(frame, [0, 1, 0, 1] * 10)


def _asks_to_trust_os_system():
    import os

    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    return make_pipeline(FunctionTransformer(os.system), HistGradientBoostingClassifier(max_iter=5))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("make_model", "says"),
    [(_needs_an_input_nobody_serves, ["bogus"]), (_asks_to_trust_os_system, ["untrusted types", "system"])],
    ids=["unserved-input", "untrusted-artifact"],
)
def test_a_champion_the_service_cannot_serve_is_refused(server, demo, issued, make_model, says):
    """@champion moved to a model that cannot be served (an input nobody provides), or whose
    artifact's own trusted-types list lets in os.system: the old champion keeps serving."""
    import mlflow
    import skops.io

    client = registry.client(demo.settings)
    before = post(server, "/status").json()["model_version"]
    model = make_model()
    experiment = client.get_experiment_by_name(demo.spec.name)  # its artifacts stay under AIRLOOP_HOME
    with mlflow.start_run(experiment_id=experiment.experiment_id):
        info = mlflow.sklearn.log_model(
            model, name="model", registered_model_name=demo.spec.name,
            skops_trusted_types=skops.io.get_untrusted_types(data=skops.io.dumps(model)),
        )
    bad = str(info.registered_model_version)
    client.set_registered_model_alias(demo.spec.name, "champion", bad)
    try:
        deadline = time.monotonic() + 60
        while f"v{bad} refused" not in ((status := post(server, "/status").json())["last_error"] or ""):
            assert time.monotonic() < deadline, status
            time.sleep(0.3)
        assert all(text in status["last_error"] for text in says), status["last_error"]
        answer = post(server, "/predict", row(demo.restaurants[0])).json()
        issued.append(answer["request_id"])
        assert answer["model_version"] == before == status["model_version"]
    finally:
        client.set_registered_model_alias(demo.spec.name, "champion", before)


@pytest.mark.slow
def test_clean_shutdown_writes_every_prediction(server, demo, issued):
    answers = [post(server, "/predict", row(r)).json() for r in demo.restaurants[:10]]
    answers += post(server, "/predict_batch", {"rows": [row(r) for r in demo.restaurants[:30]]}).json()["predictions"]
    issued.extend(a["request_id"] for a in answers)

    assert server.stop() == 0
    logs = server.logs()
    assert "prediction log closed" in logs
    # No warning is written to stderr per request.
    assert "model_fields" not in logs
    logged = prediction_log.read_predictions(model=demo.spec, settings=demo.settings)
    assert len(logged) == len(issued) and set(logged["request_id"]) == set(issued)


@pytest.mark.slow
@pytest.mark.services
def test_server_logs_to_postgres_and_flushes_on_shutdown(demo, pg_database, tmp_path):
    srv = BentoServer(
        demo.settings, tmp_path / "pg-server.log", AIRLOOP_SERVE_MODEL=demo.spec.name,
        AIRLOOP_PREDICTION_STORE=pg_database,
        AIRLOOP_PREDICTION_LOG_FLUSH_SECONDS="3600",  # nothing is written before shutdown but by feedback
        AIRLOOP_SERVE_PREDICT_IN_THREAD="true",  # the other /predict path (the module server has the default)
        AIRLOOP_SERVE_THREADS="2",
        AIRLOOP_SERVE_TRACE_PREDICT="true",
    )
    try:
        srv.start().wait_ready()
        answers = [post(srv, "/predict", row(r)) for r in demo.restaurants[:5]]
        assert all(a.headers.get("X-BentoML-Request-ID") for a in answers)  # traced on request
        first = [a.json() for a in answers]
        assert post(srv, "/feedback", {"request_id": first[0]["request_id"], "label": 1}).status_code == 200
        later = post(srv, "/predict_batch", {"rows": [row(r) for r in demo.restaurants[:20]]}).json()["predictions"]
        assert post(srv, "/status").json()["prediction_log"]["pending"] == 20
        assert srv.stop() == 0
    finally:
        srv.stop()
    logged = prediction_log.read_predictions(model=demo.spec, settings=demo.settings, url=pg_database)
    assert sorted(logged["request_id"]) == sorted(a["request_id"] for a in first + later)
    assert logged.set_index("request_id").loc[first[0]["request_id"], "label"] == 1.0


@pytest.mark.slow
def test_server_refuses_to_start_without_its_prediction_store(demo, tmp_path):
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/airloop_predictions"
    srv = BentoServer(
        demo.settings, tmp_path / "down.log", AIRLOOP_SERVE_MODEL=demo.spec.name, AIRLOOP_PREDICTION_STORE=url
    ).start()
    try:
        code = srv.proc.wait(timeout=120)
    finally:
        srv.stop()
    assert code != 0
    logs = srv.logs()
    assert f"prediction store {url} is not usable" in logs
    assert "Service airloop initialized" not in logs


@pytest.mark.slow
def test_killing_the_server_stops_its_worker(demo, tmp_path):
    """kill -9 of `bentoml serve` must not leave its worker (own process group) serving."""
    import psutil
    import requests

    srv = BentoServer(
        demo.settings, tmp_path / "killed.log", AIRLOOP_SERVE_MODEL=demo.spec.name, AIRLOOP_SERVE_FEEDBACK_TOKEN=None
    ).start().wait_ready()
    try:
        # With no token configured, feedback is off rather than open.
        refused = post(srv, "/feedback", {"request_id": "abc", "label": 1})
        assert refused.status_code == 403 and "AIRLOOP_SERVE_FEEDBACK_TOKEN" in refused.text
        workers = psutil.Process(srv.proc.pid).children(recursive=True)
        assert workers, "bentoml serve started no worker"
        answer = post(srv, "/predict", row(demo.restaurants[0])).json()
        srv.proc.kill()  # SIGKILL: the server gets no chance to stop anything
        srv.proc.wait(10)
        gone, alive = psutil.wait_procs(workers, timeout=60)
        assert not alive, f"workers outlived the server: {[p.pid for p in alive]}"
        with pytest.raises(requests.ConnectionError):
            requests.post(f"{srv.url}/predict", json=row(demo.restaurants[0]), timeout=5)
    finally:
        srv.stop()
    # The worker got SIGTERM, so it shut down cleanly: its prediction is in the log.
    logged = prediction_log.read_predictions(model=demo.spec, settings=demo.settings)
    assert answer["request_id"] in set(logged["request_id"])


# --- which service a model's checks ask -----------------------------------------------------


class _StatusHandler:
    """A stand-in service answering ``POST /status`` for one model (no BentoML needed)."""

    @staticmethod
    def serve(model: str, version: str):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = json.dumps({"model": model, "model_version": version}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server


def test_each_model_is_checked_at_its_own_service(demo_spec, monkeypatch):
    """wait_until_serving and service_status ask AIRLOOP_SERVE_URL__<MODEL>, else AIRLOOP_SERVE_URL."""
    late = _StatusHandler.serve("late_delivery", "4")
    trips = _StatusHandler.serve("trip_duration", "7")
    try:
        monkeypatch.setenv("AIRLOOP_SERVE_URL", f"http://127.0.0.1:{late.server_port}")
        monkeypatch.setenv("AIRLOOP_SERVE_URL__TRIP_DURATION", f"http://127.0.0.1:{trips.server_port}")
        trip_spec = demo_spec.model_copy(update={"name": "trip_duration"})
        assert serve.wait_until_serving(trip_spec, "7", timeout=5)["model"] == "trip_duration"
        assert serve.wait_until_serving(demo_spec, "4", timeout=5)["model"] == "late_delivery"  # the fallback
        assert serve.service_status(model="trip_duration")["model"] == "trip_duration"
        assert serve.service_status()["model"] == "late_delivery"  # no model: the shared URL

        # Pointed at another model's service, the check fails at once and names the variable to set.
        monkeypatch.setenv("AIRLOOP_SERVE_URL__TRIP_DURATION", f"http://127.0.0.1:{late.server_port}")
        with pytest.raises(errors.WrongModelServed, match="point AIRLOOP_SERVE_URL__TRIP_DURATION"):
            serve.wait_until_serving(trip_spec, "7", timeout=5)
    finally:
        late.shutdown()
        trips.shutdown()
