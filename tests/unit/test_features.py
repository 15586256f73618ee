"""Feature stage on real Feast: file offline store + SQLite + file registry by default, and
Redis + a SQL registry on Postgres for the tests marked ``services``."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import uuid
from pathlib import Path

import pandas as pd
import pytest

from airloop import features
from airloop.settings import Settings, ensure_dirs, get_settings
from airloop.spec import example_data, load_spec

datagen = example_data("late_delivery")

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_SPEC = load_spec(REPO_ROOT / "include" / "models" / "late_delivery.yaml")
DAY0 = dt.date(2024, 3, 1)
HISTORY_DAYS = 31
PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


def make_settings(home: Path, **env: str) -> Settings:
    """Settings for an AIRLOOP_HOME plus overrides, without leaving the env changed."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRLOOP_HOME", str(home))
        for name, value in env.items():
            mp.setenv(name, value)
        return ensure_dirs(get_settings())


def midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.timezone.utc)


def write_orders(settings: Settings, days: list[dt.date], seed: int = 7) -> None:
    """What the ingest stage writes: one typed parquet per batch day."""
    out = (settings.offline_dir / "orders")
    out.mkdir(parents=True, exist_ok=True)
    for day in days:
        datagen.generate_orders(day, seed=seed).to_parquet(out / f"orders_{day:%Y-%m-%d}.parquet")


def read_orders(settings: Settings) -> pd.DataFrame:
    return pd.concat(pd.read_parquet(p) for p in sorted((settings.offline_dir / "orders").glob("*.parquet")))


def stats_file(settings: Settings, day: dt.date) -> Path:
    return (settings.offline_dir / "restaurant_stats") / f"restaurant_stats_{day:%Y-%m-%d}.parquet"


def request_row(restaurant_id: int, hour: int = 12) -> dict:
    return {"restaurant_id": restaurant_id, "distance_km": 3.5, "items": 3, "order_hour": hour}


@pytest.fixture(scope="module")
def history(tmp_path_factory) -> Settings:
    """31 days of orders and their statistics, applied to an embedded (SQLite) store."""
    settings = make_settings(tmp_path_factory.mktemp("history") / "airloop")
    write_orders(settings, [DAY0 + dt.timedelta(days=i) for i in range(HISTORY_DAYS)])
    result = features.derive(DEMO_SPEC, settings)
    assert len(result.written) == HISTORY_DAYS
    assert features.apply(settings) is True
    return settings


# --- library and repo shape ---------------------------------------------------------------


def test_importing_features_imports_no_heavy_library():
    code = "import sys, airloop.features; print(sorted({'feast', 'pandas', 'pyarrow'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_feature_repo_matches_the_spec(history, demo_spec):
    contents = features.load_definitions(history, specs=[demo_spec])
    services = {fs.name: fs for fs in contents.feature_services}
    assert demo_spec.features.service in services
    (request,) = [s for s in contents.data_sources if type(s).__name__ == "RequestSource"]
    assert sorted(f.name for f in request.schema) == sorted(demo_spec.features.request)
    (entity,) = [e for e in contents.entities if e.name == demo_spec.entities[0].name]
    assert entity.join_key == demo_spec.join_keys[0]
    # The repo's modules are not left importable under their bare names.
    assert "features" not in sys.modules and "entities" not in sys.modules


def test_feature_store_yaml_is_valid_for_the_cli_and_matches_get_store(history):
    from feast.repo_config import load_repo_config

    repo = history.feature_repo
    cli = load_repo_config(repo, repo / "feature_store.yaml")
    assert cli.online_store.type == "sqlite" and cli.registry.registry_type == "file"
    # On the default settings the CLI and the library point at the same files.
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("AIRLOOP_HOME")
        default = get_settings()
    assert Path(repo / cli.registry.path).resolve() == Path(default.feast_registry)
    assert Path(repo / cli.online_store.path).resolve() == Path(default.feast_online_store)
    assert features.repo_config(default).project == cli.project


def test_store_config_embedded_default(history):
    config = features.get_store(history).config
    assert config.offline_store.type == "duckdb"
    # Feast's SQLite store with a bulk write for materialization (airloop.feast_online).
    assert config.online_store.type == "airloop.feast_online.BulkSqliteOnlineStore"
    assert config.online_store.path == history.feast_online_store
    assert config.registry.registry_type == "file" and config.registry.path == history.feast_registry
    # Bounded materialization: latest row per entity, bounded write batches.
    assert config.materialization_config.pull_latest_features is True
    assert config.materialization_config.online_write_batch_size == 10_000
    source = features.get_store(history).get_feature_view("restaurant_stats").batch_source
    assert source.path == str((history.offline_dir / "restaurant_stats"))


def test_store_config_from_service_settings(tmp_path):
    settings = make_settings(
        tmp_path,
        AIRLOOP_FEAST_REGISTRY="postgresql://feast:pw@db:5432/feast",
        AIRLOOP_FEAST_REDIS="redis:6379,db=1",
    )
    config = features.repo_config(settings, write_batch_size=500)
    assert config.registry.registry_type == "sql"
    assert config.registry.path == "postgresql+psycopg://feast:pw@db:5432/feast"
    assert config.online_store.type == "airloop.feast_online.BulkRedisOnlineStore"
    assert config.online_store.connection_string == "redis:6379,db=1"
    assert config.offline_store.type == "duckdb"
    assert config.materialization_config.online_write_batch_size == 500
    url = make_settings(tmp_path, AIRLOOP_FEAST_REDIS="redis://:secret@cache:6380/2")
    assert features.repo_config(url).online_store.connection_string == "cache:6380,db=2,password=secret"


# --- statistics ---------------------------------------------------------------------------


def test_restaurant_stats_summarize_the_last_7_days(history):
    day = DAY0 + dt.timedelta(days=10)
    stats = pd.read_parquet(stats_file(history, day)).set_index("restaurant_id")
    orders = read_orders(history)
    order_day = orders["event_timestamp"].dt.date
    week = orders[(order_day > day - dt.timedelta(days=7)) & (order_day <= day)]
    expected = week.groupby("restaurant_id").agg(
        orders_7d=("order_id", "size"),
        avg_prep_minutes_7d=("prep_minutes", "mean"),
        late_rate_7d=("was_late", "mean"),
        avg_distance_km_7d=("distance_km", "mean"),
        avg_items_7d=("items", "mean"),
    )
    expected["orders_1d"] = orders[order_day == day].groupby("restaurant_id").size()
    expected["orders_1d"] = expected["orders_1d"].fillna(0).astype("int64")
    assert sorted(stats.index) == sorted(expected.index)
    pd.testing.assert_frame_equal(
        stats[expected.columns].sort_index(), expected.sort_index(), check_names=False
    )
    # Stamped at the end of the day they summarize.
    assert (stats["event_timestamp"] == pd.Timestamp(day + dt.timedelta(days=1), tz="UTC")).all()


def test_restaurant_stats_recompute_only_what_changed(tmp_path):
    settings = make_settings(tmp_path)
    days = [DAY0 + dt.timedelta(days=i) for i in range(12)]
    write_orders(settings, days[:10])
    assert len(features.derive(DEMO_SPEC, settings).written) == 10

    again = features.derive(DEMO_SPEC, settings)
    assert (again.written, again.unchanged) == ([], 10)

    write_orders(settings, days[10:])  # two new days
    assert features.derive(DEMO_SPEC, settings).written == days[10:]

    write_orders(settings, [days[3]], seed=99)  # a corrected batch: its 7-day windows change
    assert features.derive(DEMO_SPEC, settings).written == days[3:10]

    (settings.offline_dir / "orders").joinpath(f"orders_{days[11]:%Y-%m-%d}.parquet").unlink()
    result = features.derive(DEMO_SPEC, settings)
    assert result.removed == [days[11]] and not stats_file(settings, days[11]).exists()


def test_restaurant_stats_reject_orders_outside_their_day(tmp_path):
    settings = make_settings(tmp_path)
    orders = datagen.generate_orders(DAY0)
    orders.loc[0, "event_timestamp"] = pd.Timestamp(DAY0 + dt.timedelta(days=1), tz="UTC")
    (settings.offline_dir / "orders").mkdir(parents=True)
    orders.to_parquet((settings.offline_dir / "orders") / f"orders_{DAY0:%Y-%m-%d}.parquet")
    with pytest.raises(ValueError, match="not stamped on 2024-03-01"):
        features.derive(DEMO_SPEC, settings)


# --- apply --------------------------------------------------------------------------------


def test_apply_only_when_definitions_change(tmp_path):
    settings = make_settings(tmp_path / "airloop")
    assert features.apply(settings) is True
    assert features.apply(settings) is False
    features.materialize(midnight(DAY0), settings)  # materialization is not a definition change
    assert features.apply(settings) is False
    moved = make_settings(tmp_path / "airloop", AIRLOOP_OFFLINE_DIR=str(tmp_path / "elsewhere"))
    assert features.apply(moved) is True  # the FileSource path changed
    assert features.apply(moved) is False


# --- training sets ------------------------------------------------------------------------


def write_stats(settings: Settings, rows: list[dict]) -> None:
    frame = pd.DataFrame(rows)
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
    out = (settings.offline_dir / "restaurant_stats")
    out.mkdir(parents=True, exist_ok=True)
    for stamp, group in frame.groupby("event_timestamp"):
        day = (stamp - pd.Timedelta(days=1)).date()
        group.to_parquet(out / f"restaurant_stats_{day:%Y-%m-%d}.parquet", index=False)


def stats_row(restaurant_id: int, stamp: dt.datetime, prep: float) -> dict:
    return {
        "restaurant_id": restaurant_id,
        "event_timestamp": stamp,
        "orders_1d": int(prep),
        "orders_7d": 7 * int(prep),
        "avg_prep_minutes_7d": prep,
        "late_rate_7d": 0.25,
        "avg_distance_km_7d": 2.0,
        "avg_items_7d": 2.0,
    }


def test_training_set_is_point_in_time_correct(tmp_path, demo_spec):
    settings = make_settings(tmp_path / "airloop")
    t1, t2 = midnight(DAY0 + dt.timedelta(days=1)), midnight(DAY0 + dt.timedelta(days=2))
    write_stats(settings, [stats_row(7, t1, 10.0), stats_row(7, t2, 20.0)])
    features.apply(settings)
    second = dt.timedelta(seconds=1)
    ttl = dt.timedelta(days=7)
    cases = [  # (restaurant, order time, expected avg_prep_minutes_7d)
        (7, t1 - second, None),  # before any statistics
        (7, t2 - second, 10.0),  # the value stamped at t2 is in this order's future
        (7, t2, 20.0),  # stamped when the day ended: visible from then on
        (7, t2, 20.0),  # a second order at the same time stays its own row (its own label)
        (7, t2 + ttl - second, 20.0),  # still within the TTL
        (7, t2 + ttl + second, None),  # older than the TTL: not used
        (8, t2, None),  # unknown restaurant
    ]
    entity_df = pd.DataFrame(
        {
            "restaurant_id": [c[0] for c in cases],
            "event_timestamp": [c[1] for c in cases],
            "distance_km": 3.0,
            "items": 4,
            "order_hour": 12,
            "was_late": range(len(cases)),
        }
    )
    frame = features.build_training_set(demo_spec, entity_df, settings=settings)

    assert list(frame["was_late"]) == list(range(len(cases)))  # input order kept
    assert list(frame.columns[: len(entity_df.columns)]) == list(entity_df.columns)
    names = features.feature_names(demo_spec, settings=settings)
    assert list(frame.columns[len(entity_df.columns):]) == names
    got = [None if pd.isna(v) else v for v in frame["avg_prep_minutes_7d"]]
    assert got == [c[2] for c in cases]
    # On-demand features combine the joined statistics with the request fields.
    expected_prep = [None if c[2] is None else c[2] * 4 / 2.0 for c in cases]
    assert [None if pd.isna(v) else v for v in frame["expected_prep_minutes"]] == expected_prep
    assert set(frame["is_peak_hour"]) == {1}


def test_training_rows_never_see_statistics_of_their_own_day(history, demo_spec):
    day = DAY0 + dt.timedelta(days=12)
    orders = pd.read_parquet((history.offline_dir / "orders") / f"orders_{day:%Y-%m-%d}.parquet")
    entity_df = features.entity_df_from_events(demo_spec, orders)
    frame = features.build_training_set(demo_spec, entity_df, settings=history)
    assert len(frame) == len(orders)
    assert (frame["order_hour"] == orders["event_timestamp"].dt.hour.to_numpy()).all()
    # Every order gets the statistics of the day before: its own day has not ended yet.
    previous = pd.read_parquet(stats_file(history, day - dt.timedelta(days=1))).set_index("restaurant_id")
    expected = previous["orders_1d"].reindex(frame["restaurant_id"]).to_numpy()
    assert (frame["orders_1d"].to_numpy() == expected).all()


# --- materialization and serving ----------------------------------------------------------


def check_materialize_and_serve(settings: Settings, spec, days_per_chunk: int) -> None:
    """The online path on any backend: backlog in chunks, idempotent reruns, latest values."""
    first_end = midnight(DAY0 + dt.timedelta(days=1))
    # The model's own views: the registry holds every model's.
    mine = features.stored_views(spec, features.get_store(settings))
    first = features.materialize(first_end, settings, feature_views=mine)
    assert [c.rows for c in first.chunks if c.rows] == [len(pd.read_parquet(stats_file(settings, DAY0)))]

    # A 30-day backlog, in chunks of whole days holding at most max_rows source rows.
    end = midnight(DAY0 + dt.timedelta(days=HISTORY_DAYS))
    days = [DAY0 + dt.timedelta(days=i) for i in range(1, HISTORY_DAYS)]
    day_rows = {d: pd.read_parquet(stats_file(settings, d))["restaurant_id"] for d in days}
    max_rows = max(len(r) for r in day_rows.values()) * days_per_chunk
    backlog = features.materialize(end, settings, max_rows_per_chunk=max_rows, feature_views=mine)
    assert len(backlog.chunks) >= len(days) // days_per_chunk
    assert backlog.chunks[0].start == first_end and backlog.chunks[-1].end == end
    for c in backlog.chunks:
        in_chunk = [d for d in days if c.start < midnight(d + dt.timedelta(days=1)) <= c.end]
        assert sum(len(day_rows[d]) for d in in_chunk) <= max_rows
        assert c.rows == pd.concat([day_rows[d] for d in in_chunk]).nunique()  # entities written
    assert backlog.rows_per_second > 0

    latest = pd.read_parquet(stats_file(settings, days[-1]))
    store = features.get_store(settings)
    rows = [request_row(int(r)) for r in latest["restaurant_id"]]
    served = features.get_online_features(spec, rows, store=store)
    assert [list(r) for r in served[:1]] == [features.feature_names(spec, store=store)]
    for got, expected in zip(served, latest.to_dict("records")):
        for name in ("orders_1d", "orders_7d", "avg_prep_minutes_7d", "late_rate_7d"):
            assert got[name] == pytest.approx(expected[name]), name
        assert got["expected_prep_minutes"] == pytest.approx(
            expected["avg_prep_minutes_7d"] * 3 / expected["avg_items_7d"]
        )

    # Nothing new: nothing to do. Redoing the last days writes the same values again.
    assert features.materialize(end, settings, feature_views=mine).chunks == []
    redo_from = midnight(days[-5])  # inclusive: redoes the statistics stamped then too
    redo = features.materialize(end, settings, start=redo_from, max_rows_per_chunk=None, store=store,
                                feature_views=mine)
    assert redo.chunks[0].start < redo_from < redo.chunks[0].end and redo.chunks[-1].end == end
    assert all(c.rows for c in redo.chunks)
    assert features.get_online_features(spec, rows, store=store) == served

    # Unknown entity: None for stored and derived features, no error; rows keep their order.
    unknown, known = features.get_online_features(spec, [request_row(999_999, hour=19), rows[0]], store=store)
    assert unknown["orders_7d"] is None and unknown["expected_prep_minutes"] is None
    assert unknown["is_peak_hour"] == 1  # from the request alone
    assert known == served[0]


def test_materialize_and_serve_embedded(history, demo_spec):
    check_materialize_and_serve(history, demo_spec, days_per_chunk=1)


# --- the same on Redis and a Postgres SQL registry -----------------------------------------


@pytest.fixture
def services(history, tmp_path, redis_db):
    """An empty Redis database and a throw-away Postgres database for the registry."""
    psycopg = pytest.importorskip("psycopg")
    database = f"airloop_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    try:
        yield make_settings(
            tmp_path / "airloop",
            AIRLOOP_OFFLINE_DIR=str(history.offline_dir),  # the same parquet offline source
            AIRLOOP_FEAST_REGISTRY=f"postgresql://postgres@127.0.0.1:5432/{database}",
            AIRLOOP_FEAST_REDIS=f"127.0.0.1:6379,db={redis_db}",
        )
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


@pytest.mark.services
def test_redis_and_sql_registry(services, demo_spec):
    config = features.get_store(services).config
    assert (config.online_store.type, config.registry.registry_type) == (
        "airloop.feast_online.BulkRedisOnlineStore", "sql"
    )
    assert features.apply(services) is True
    assert features.apply(services) is False
    check_materialize_and_serve(services, demo_spec, days_per_chunk=7)
    assert features.apply(services) is False

    day = DAY0 + dt.timedelta(days=20)
    orders = pd.read_parquet((services.offline_dir / "orders") / f"orders_{day:%Y-%m-%d}.parquet").head(200)
    entity_df = features.entity_df_from_events(demo_spec, orders)
    frame = features.build_training_set(demo_spec, entity_df, settings=services)
    previous = pd.read_parquet(stats_file(services, day - dt.timedelta(days=1))).set_index("restaurant_id")
    expected = previous["orders_7d"].reindex(frame["restaurant_id"]).to_numpy()
    assert (frame["orders_7d"].to_numpy() == expected).all()


@pytest.mark.services
def test_opening_a_new_sql_registry_at_once_never_fails(tmp_path, pg_database, run_together):
    """Two prediction services (or two models' features tasks) opening a new SQL registry at
    once both create Feast's tables; without taking turns one CREATE TABLE lost the race in
    Postgres' catalogue (a unique violation) in 21 of 30 openings here."""
    import sqlalchemy as sa

    settings = make_settings(tmp_path / "airloop", AIRLOOP_FEAST_REGISTRY=pg_database)
    engine = sa.create_engine(pg_database)
    failures: list[str] = []
    for _ in range(10):
        with engine.begin() as conn:  # a new registry each round
            conn.execute(sa.text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
        failures += run_together(lambda: features.get_store(settings).list_feature_services())
    engine.dispose()
    assert failures == []


@pytest.mark.services
def test_a_features_run_that_cannot_load_leaves_its_changes_for_the_next_run(tmp_path, demo_spec, redis_db):
    """A features run whose online load fails for good (the store unreachable through every
    retry) has already rewritten the day's statistics; the next run must still load them."""
    from airloop.errors import OnlineStoreError
    from airloop.testing import free_port

    home = tmp_path / "airloop"
    up = make_settings(home, AIRLOOP_FEAST_REDIS=f"127.0.0.1:6379,db={redis_db}")
    down = make_settings(home, AIRLOOP_FEAST_REDIS=f"127.0.0.1:{free_port()},db={redis_db}")
    days = [DAY0 + dt.timedelta(days=i) for i in range(8)]
    write_orders(up, days[:-1])
    assert features.apply(up) is True
    first = features.refresh_online(demo_spec, features.derive(demo_spec, up), midnight(days[-1]), up, applied=True)
    assert first is not None and first.rows

    write_orders(up, days[-1:])  # a new day is published; this run's load fails
    end = midnight(days[-1] + dt.timedelta(days=1))
    failed = features.derive(demo_spec, down)
    assert stats_file(down, days[-1]).exists()  # its statistics are written...
    with pytest.raises(OnlineStoreError):
        features.refresh_online(demo_spec, failed, end, down)  # ...but never reach the store

    retried = features.derive(demo_spec, up)  # the next run: the statistics are not new any more
    assert retried.changed_since is not None and retried.changed_since <= midnight(days[-1] + dt.timedelta(days=1))
    assert features.refresh_online(demo_spec, retried, end, up) is not None
    latest = pd.read_parquet(stats_file(up, days[-1]))
    served = features.get_online_features(demo_spec, [request_row(int(r)) for r in latest["restaurant_id"]],
                                          store=features.get_store(up))
    assert [row["orders_7d"] for row in served] == latest["orders_7d"].tolist()
    assert features.derive(demo_spec, up).changed_since is None  # and now it is recorded


# --- definitions belong to their model ------------------------------------------------------

OTHER_MODEL_VIEW = '''
from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, Int64

courier = Entity(name="courier", join_keys=["courier_id"], value_type=ValueType.INT64)
{view} = FeatureView(
    name="{view}",
    entities=[courier],
    ttl=timedelta(days=1),
    schema=[Field(name="courier_id", dtype=Int64), Field(name="speed", dtype=Float64)],
    source=FileSource(name="{view}_source", path="{view}", timestamp_field="event_timestamp"),
)
courier_eta_v1 = FeatureService(name="courier_eta_v1", features=[{view}])
'''


def two_models(tmp_path: Path, view: str) -> Settings:
    """The demo model plus a second one whose definitions declare ``view``."""
    import shutil

    import yaml

    models = tmp_path / "models"
    shutil.copytree(DEMO_SPEC.home / "late_delivery", models / "late_delivery")
    shutil.copy(DEMO_SPEC.source_file, models)
    raw = yaml.safe_load(DEMO_SPEC.source_file.read_text())
    raw["name"] = "courier_eta"
    raw["features"] = {"service": "courier_eta_v1"}
    (models / "courier_eta" / "feature_repo").mkdir(parents=True)
    (models / "courier_eta" / "feature_repo" / "definitions.py").write_text(OTHER_MODEL_VIEW.format(view=view))
    (models / "courier_eta.yaml").write_text(yaml.safe_dump(raw))
    return make_settings(tmp_path / "airloop", AIRLOOP_MODELS_DIR=str(models))


def test_each_model_brings_its_own_definitions(tmp_path):
    settings = two_models(tmp_path, "courier_stats")
    contents = features.load_definitions(settings)
    assert {s.name for s in contents.feature_services} == {"late_delivery_v1", "courier_eta_v1"}
    assert {e.name for e in contents.entities} - {"__dummy"} == {"restaurant", "courier"}
    # Relative FileSource paths are directories of the offline store.
    paths = {v.name: v.batch_source.path for v in contents.feature_views}
    assert paths == {
        "restaurant_stats": str(settings.offline_dir / "restaurant_stats"),
        "courier_stats": str(settings.offline_dir / "courier_stats"),
    }
    assert features.apply(settings) is True
    store = features.get_store(settings)
    assert {fs.name for fs in store.list_feature_services()} == {"late_delivery_v1", "courier_eta_v1"}


def test_two_models_declaring_one_name_differently_is_an_error(tmp_path):
    from airloop.spec import SpecError

    settings = two_models(tmp_path, "restaurant_stats")
    with pytest.raises(SpecError, match=r"'restaurant_stats(_source)?' is declared differently by models 'courier_eta' and 'late_delivery'"):
        features.load_definitions(settings)


def test_a_feature_job_shadowed_by_an_installed_module_is_refused(tmp_path):
    """``features.transform`` runs the model's own file, never a module of the same name elsewhere."""
    import shutil

    import yaml

    from airloop.spec import SpecError

    shutil.copytree(DEMO_SPEC.home / "late_delivery", tmp_path / "late_delivery")
    (tmp_path / "json.py").write_text("def dumps(spec, settings, *, force=False):\n    raise AssertionError\n")
    raw = yaml.safe_load(DEMO_SPEC.source_file.read_text())
    raw["features"]["transform"] = "json.dumps"
    (tmp_path / "late_delivery.yaml").write_text(yaml.safe_dump(raw))
    spec = load_spec(tmp_path / "late_delivery.yaml")
    with pytest.raises(SpecError, match="features.transform 'json.dumps': late_delivery: 'json' resolves to .*, outside"):
        features.load_transform(spec)


def test_a_feature_job_must_say_what_it_changed(tmp_path):
    import shutil

    import yaml

    shutil.copytree(DEMO_SPEC.home / "late_delivery", tmp_path / "late_delivery")
    (tmp_path / "late_delivery" / "silent_job.py").write_text("def run(spec, settings, *, force=False):\n    return 3\n")
    raw = yaml.safe_load(DEMO_SPEC.source_file.read_text())
    raw["features"]["transform"] = "late_delivery.silent_job.run"
    (tmp_path / "late_delivery.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(TypeError, match="late_delivery.silent_job.run returned int, not airloop.daily_windows.Derived"):
        features.derive(load_spec(tmp_path / "late_delivery.yaml"), make_settings(tmp_path / "airloop"))


# --- a model of another shape: two entities, a static and an hourly view ---------------------

TWO_KEY_SPEC = """
name: trip_eta
dataset:
  name: trips
  pattern: "trips_*.csv"
  timestamp: pickup_at
  columns: {trip_id: string, vehicle_id: int, zone_id: int, pickup_at: timestamp, distance_km: float,
            duration_minutes: float}
entities:
  - {name: vehicle, join_key: vehicle_id}
  - {name: zone, join_key: zone_id}
features:
  service: trip_eta_v1
  request: [distance_km, pickup_hour]
  derived: {pickup_hour: {part: hour, of: pickup_at}}
target: duration_minutes
task: regression
estimator: {class: sklearn.ensemble.HistGradientBoostingRegressor}
promotion: {metric: mae}
"""

TWO_KEY_DEFINITIONS = """
from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, Int64, String

vehicle = Entity(name="vehicle", join_keys=["vehicle_id"], value_type=ValueType.INT64)
zone = Entity(name="zone", join_keys=["zone_id"], value_type=ValueType.INT64)

# A static attribute table: every row stamped at the epoch, valid forever (no TTL).
vehicle_attributes = FeatureView(
    name="vehicle_attributes",
    entities=[vehicle],
    ttl=timedelta(0),
    schema=[Field(name="vehicle_id", dtype=Int64), Field(name="vehicle_type", dtype=String),
            Field(name="seats", dtype=Int64)],
    source=FileSource(name="vehicle_attributes_source", path="vehicle_attributes", timestamp_field="valid_from"),
)
# An hourly reference table: a zone's traffic, valid for two hours after its stamp.
zone_traffic = FeatureView(
    name="zone_traffic",
    entities=[zone],
    ttl=timedelta(hours=2),
    schema=[Field(name="zone_id", dtype=Int64), Field(name="traffic_index", dtype=Float64)],
    source=FileSource(name="zone_traffic_source", path="zone_traffic", timestamp_field="hour"),
)
trip_eta_v1 = FeatureService(name="trip_eta_v1", features=[vehicle_attributes, zone_traffic])
"""


@pytest.fixture
def two_key_model(tmp_path):
    """A second model keyed by vehicle and zone, with its sources written, applied alone."""
    models = tmp_path / "models"
    (models / "trip_eta" / "feature_repo").mkdir(parents=True)
    (models / "trip_eta" / "feature_repo" / "definitions.py").write_text(TWO_KEY_DEFINITIONS)
    (models / "trip_eta.yaml").write_text(TWO_KEY_SPEC)
    settings = make_settings(tmp_path / "airloop", AIRLOOP_MODELS_DIR=str(models))
    spec = load_spec(models / "trip_eta.yaml")
    epoch = pd.Timestamp(0, tz="UTC")
    attributes = pd.DataFrame({"vehicle_id": [1, 2], "vehicle_type": ["sedan", "van"], "seats": [4, 7],
                               "valid_from": [epoch, epoch]})
    hours = pd.date_range("2024-03-01", periods=48, freq="h", tz="UTC")
    traffic = pd.DataFrame({"zone_id": 10, "hour": hours, "traffic_index": [float(i) for i in range(48)]})
    traffic = traffic.drop(index=[30])  # a missing hour
    for name, frame in {"vehicle_attributes": attributes, "zone_traffic": traffic}.items():
        (settings.offline_dir / name).mkdir(parents=True)
        frame.to_parquet(settings.offline_dir / name / f"{name}_2024-03-01.parquet", index=False)
    assert features.apply(settings) is True
    return spec, settings


def test_two_entities_join_each_view_on_its_own_key(two_key_model):
    spec, settings = two_key_model
    at = pd.Timestamp("2024-03-01", tz="UTC")
    cases = [  # vehicle, zone, pickup time, expected (vehicle_type, seats, traffic_index)
        (1, 10, at + pd.Timedelta(hours=5, minutes=20), ("sedan", 4, 5.0)),
        (1, 10, at + pd.Timedelta(hours=5, minutes=20), ("sedan", 4, 5.0)),  # same keys and time: own row
        (2, 10, at + pd.Timedelta(hours=29, minutes=59), ("van", 7, 29.0)),
        (2, 10, at + pd.Timedelta(hours=30, minutes=30), ("van", 7, 29.0)),  # hour 30 missing: 29 within TTL
        (2, 10, at + pd.Timedelta(hours=31, minutes=30), ("van", 7, 31.0)),
        (2, 10, at + pd.Timedelta(hours=60), ("van", 7, None)),  # traffic older than its TTL
        (3, 10, at + pd.Timedelta(hours=2), (None, None, 2.0)),  # unknown vehicle keeps its traffic
        (1, 99, at + pd.Timedelta(hours=2), ("sedan", 4, None)),  # unknown zone keeps its vehicle
    ]
    events = pd.DataFrame({
        "trip_id": [f"t{i}" for i in range(len(cases))],
        "vehicle_id": [c[0] for c in cases], "zone_id": [c[1] for c in cases],
        "pickup_at": [c[2] for c in cases], "distance_km": 3.0, "duration_minutes": range(len(cases)),
    })
    entity_df = features.entity_df_from_events(spec, events)
    assert list(entity_df.columns) == ["vehicle_id", "zone_id", "pickup_at", "distance_km", "pickup_hour",
                                       "duration_minutes"]
    frame = features.build_training_set(spec, entity_df, settings=settings)
    assert list(frame["duration_minutes"]) == list(range(len(cases)))  # one row per event, in order
    got = [tuple(None if pd.isna(v) else v for v in row)
           for row in frame[["vehicle_type", "seats", "traffic_index"]].itertuples(index=False)]
    assert got == [c[3] for c in cases]

    # Neither key is a model input unless the spec's request lists it.
    from airloop import train

    # Nanosecond event times (which the DuckDB store refuses) are floored to the microsecond.
    nanos = entity_df.head(1).assign(pickup_at=at + pd.Timedelta(hours=5, nanoseconds=1))
    assert features.build_training_set(spec, nanos, settings=settings).loc[0, "traffic_index"] == 5.0

    assert train.feature_columns(spec, frame) == ["distance_km", "pickup_hour", "vehicle_type", "seats",
                                                 "traffic_index"]
    keyed = spec.model_copy(update={"features": spec.features.model_copy(
        update={"request": [*spec.features.request, "zone_id"]})})
    assert "zone_id" in train.feature_columns(keyed, frame) and "vehicle_id" not in train.feature_columns(keyed, frame)


def test_two_entities_online(two_key_model):
    spec, settings = two_key_model
    derived = features.Derived(changed_since=None)
    end = dt.datetime(2024, 3, 3, tzinfo=dt.timezone.utc)
    result = features.refresh_online(spec, derived, end, settings, applied=True)
    assert {c.feature_view for c in result.chunks} == {"vehicle_attributes", "zone_traffic"}
    rows = [{"vehicle_id": 2, "zone_id": 10, "distance_km": 2.0, "pickup_hour": 1},
            {"vehicle_id": 3, "zone_id": 10, "distance_km": 2.0, "pickup_hour": 1}]
    served = features.get_online_features(spec, rows, settings=settings)
    assert served[0] == {"vehicle_type": "van", "seats": 7, "traffic_index": 47.0}
    assert served[1] == {"vehicle_type": None, "seats": None, "traffic_index": 47.0}
