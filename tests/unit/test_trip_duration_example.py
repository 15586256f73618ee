"""The second example model, trip_duration: its generator, its declared statistics and its
Feast definitions, on real files and a real Feast store (no mocks)."""

from __future__ import annotations

import datetime as dt
import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from airloop import features, validation
from airloop import daily_windows
from airloop.daily_windows import Derived, WindowsResult, end_of_day
from airloop.fileio import to_csv_bytes
from airloop.settings import Settings, ensure_dirs, get_settings
from airloop.spec import example_data, load_spec

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL_DIR = REPO_ROOT / "include" / "models" / "trip_duration"
SPEC = load_spec(REPO_ROOT / "include" / "models" / "trip_duration.yaml")
datagen = example_data(SPEC)
# In the past (validation refuses rows stamped after the run) and after every registration.
DAY0 = dt.date(2025, 3, 3)


def make_settings(home: Path, **env: str) -> Settings:
    """Settings for an AIRLOOP_HOME plus overrides, without leaving the env changed."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRLOOP_HOME", str(home))
        for name, value in env.items():
            mp.setenv(name, value)
        return ensure_dirs(get_settings())


def days(n: int, start: dt.date = DAY0) -> list[dt.date]:
    return [start + dt.timedelta(days=i) for i in range(n)]


def digest(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


# --- the generator -----------------------------------------------------------------------------


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a = datagen.write_day(tmp_path / "a", DAY0, seed=11) + [datagen.write_vehicles(tmp_path / "a", DAY0, seed=11)]
    b = datagen.write_day(tmp_path / "b", DAY0, seed=11) + [datagen.write_vehicles(tmp_path / "b", DAY0, seed=11)]
    c = datagen.write_day(tmp_path / "c", DAY0, seed=12) + [datagen.write_vehicles(tmp_path / "c", DAY0, seed=12)]
    assert [p.relative_to(tmp_path / "a") for p in a] == [
        Path("trips/trips_2025-03-03.csv"),
        Path("zone_weather/zone_weather_2025-03-03.csv"),
        Path("vehicles/vehicles_2025-03-03.csv"),
    ]
    assert [digest(p) for p in a] == [digest(p) for p in b]
    assert all(digest(p) != digest(q) for p, q in zip(a, c))
    # Only the finished files are there (atomic writes leave no temporary file behind).
    assert sorted(p.name for p in (tmp_path / "a").rglob("*") if p.is_file()) == sorted(p.name for p in a)


def test_generated_tables_are_well_formed():
    trips = datagen.generate_trips(DAY0)
    assert list(trips.columns) == list(SPEC.dataset.columns) == list(datagen.TRIP_COLUMNS)
    assert 500 < len(trips) < 700 and trips["trip_id"].is_unique
    assert (trips["pickup_at"].dt.date == DAY0).all() and trips["pickup_at"].is_monotonic_increasing
    hours = trips["pickup_at"].dt.hour.value_counts()
    assert hours.reindex([8, 18]).min() > 2 * hours.reindex([3, 11]).max()  # rush hours are busy

    weather = datagen.generate_weather(DAY0)
    assert len(weather) == 24 * datagen.N_ZONES
    assert not weather.duplicated(["zone_id", "hour_start"]).any()
    assert (weather["hour_start"].dt.date == DAY0).all()
    assert set(trips["zone_id"]) <= set(weather["zone_id"])

    vehicles = datagen.vehicles_table()
    assert len(vehicles) == datagen.N_VEHICLES and vehicles["vehicle_id"].is_unique
    assert set(trips["vehicle_id"]) <= set(vehicles["vehicle_id"])
    assert set(vehicles["vehicle_type"]) == set(datagen.VEHICLE_TYPES)
    assert (vehicles["registered_at"] < pd.Timestamp(DAY0, tz="UTC")).all()
    assert (vehicles["registered_at"].dt.year >= vehicles["model_year"]).all()

    # Other streams are other trips of the same world, with their own ids.
    live = datagen.generate_trips(DAY0, stream=3)
    assert not set(live["trip_id"]) & set(trips["trip_id"])
    assert set(live["vehicle_id"]) <= set(vehicles["vehicle_id"])


def test_live_requests_are_the_service_request_plus_the_label():
    requests = datagen.live_requests(DAY0, 50, seed=11)
    assert len(requests) == 50 and requests == datagen.live_requests(DAY0, 50, seed=11)
    expected_keys = {*SPEC.join_keys, *SPEC.features.request, SPEC.target}
    assert all(set(r) == expected_keys for r in requests)
    assert {r["service_class"] for r in requests} <= set(datagen.SERVICE_CLASSES)
    assert all(0 <= r["pickup_hour"] <= 23 and r["duration_minutes"] > 0 for r in requests)
    # A different draw from the batch's own trips.
    batch = datagen.generate_trips(DAY0)
    assert [r["distance_km"] for r in requests[:10]] != batch["distance_km"].head(10).tolist()
    with pytest.raises(ValueError, match="stream 0"):
        datagen.live_requests(DAY0, 5, stream=0)


def test_drift_moves_inputs_and_the_relation_from_its_day():
    drift = datagen.Drift(start=DAY0, strength=0.6)
    before = DAY0 - dt.timedelta(days=1)
    assert datagen.generate_trips(before, drift=drift).equals(datagen.generate_trips(before))
    assert datagen.generate_weather(before, drift=drift).equals(datagen.generate_weather(before))

    period = days(10)
    clean_weather = pd.concat(datagen.generate_weather(d) for d in period)
    drift_weather = pd.concat(datagen.generate_weather(d, drift=drift) for d in period)
    assert drift_weather["rain_mm"].mean() > 2 * clean_weather["rain_mm"].mean()
    assert (drift_weather["rain_mm"] > 0).mean() > (clean_weather["rain_mm"] > 0).mean()

    # Roadworks: the same trips take longer in the affected zones (the relation changes).
    works = set(datagen.world(11).zone_ids[datagen.world(11).roadworks])
    assert 0 < len(works) < datagen.N_ZONES

    def minutes_per_km(frame: pd.DataFrame) -> float:
        dry_works = frame[frame["zone_id"].isin(works)]
        return float((dry_works["duration_minutes"] / dry_works["distance_km"]).median())

    clean = pd.concat(datagen.generate_trips(d) for d in period)
    drifted = pd.concat(datagen.generate_trips(d, drift=drift) for d in period)
    assert minutes_per_km(drifted) > 1.5 * minutes_per_km(clean)
    assert drifted["duration_minutes"].mean() > 1.15 * clean["duration_minutes"].mean()


def test_values_stay_inside_the_spec_ranges_even_under_full_drift():
    drift = datagen.Drift(start=DAY0, strength=1.0)
    tables = {
        "trips": pd.concat(datagen.generate_trips(d, drift=drift, trips_per_day=2000) for d in days(30)),
        "zone_weather": pd.concat(datagen.generate_weather(d, drift=drift) for d in days(30)),
        "vehicles": datagen.vehicles_table(),
    }
    for name, frame in tables.items():
        rules = SPEC.table(name).validation
        for column, (low, high) in rules.ranges.items():
            assert frame[column].between(low, high).all(), (name, column, frame[column].agg(["min", "max"]))
        for column, allowed in rules.categories.items():
            assert set(frame[column]) <= set(allowed), (name, column)
        assert frame[rules.required].notna().all().all(), name


def test_every_generated_file_passes_the_library_validation(settings):
    """Each CSV as it lands, through the library's reader and its Great Expectations gate."""
    drift = datagen.Drift(start=DAY0, strength=1.0)
    batches = {
        "trips": [datagen.generate_trips(DAY0), datagen.generate_trips(DAY0, drift=drift)],
        "zone_weather": [datagen.generate_weather(DAY0), datagen.generate_weather(DAY0, drift=drift)],
        "vehicles": [datagen.vehicles_table()],
    }
    for name, frames in batches.items():
        table = SPEC.table(name)
        for frame in frames:
            data = to_csv_bytes(frame)
            typed, failures = validation.read_typed(table, data)
            assert failures == [] and len(typed) == len(frame)
            result, published = validation.run_validation(table, f"{name}_{DAY0}.csv", data, DAY0, settings)
            assert result.success, result.summary()
            assert published is not None and list(published.columns) == list(table.columns)


def test_the_generator_runs_as_a_script(tmp_path):
    script = MODEL_DIR / "datagen.py"
    out = subprocess.run(
        [sys.executable, str(script), "--start", "2025-03-03", "--days", "2", "--out", str(tmp_path),
         "--drift-from", "2025-03-04"],
        capture_output=True, text=True, check=True, cwd=tmp_path,
    )
    written = sorted(Path(line) for line in out.stdout.split())
    assert [p.relative_to(tmp_path).as_posix() for p in written] == [
        "trips/trips_2025-03-03.csv", "trips/trips_2025-03-04.csv",
        "vehicles/vehicles_2025-03-03.csv",
        "zone_weather/zone_weather_2025-03-03.csv", "zone_weather/zone_weather_2025-03-04.csv",
    ]
    # The script writes what the functions write.
    again = datagen.write_day(tmp_path / "again", DAY0)
    assert digest(again[0]) == digest(tmp_path / "trips" / "trips_2025-03-03.csv")


def test_the_features_predict_the_duration():
    """A quick fit on the true analogues of the features (no Feast): well above the spec's floor."""
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.metrics import r2_score

    period = days(12)
    trips = pd.concat(datagen.generate_trips(d) for d in period)
    weather = pd.concat(datagen.generate_weather(d) for d in period)
    frame = trips.assign(hour_start=trips["pickup_at"].dt.floor("h"))
    frame = frame.merge(weather, on=["zone_id", "hour_start"], how="left", validate="many_to_one")
    frame = frame.merge(datagen.vehicles_table(), on="vehicle_id", how="left", validate="many_to_one")
    # The zone's speed as the 7-day statistic gives it (here: over all days before the holdout).
    holdout = frame["pickup_at"] >= pd.Timestamp(period[-3], tz="UTC")
    past = frame[~holdout]
    zone_speed = past.groupby("zone_id")["distance_km"].sum() / (past.groupby("zone_id")["duration_minutes"].sum() / 60)
    x = pd.DataFrame({
        "distance_km": frame["distance_km"],
        "passengers": frame["passengers"],
        "service_class": frame["service_class"].astype("category"),
        "pickup_hour": frame["pickup_at"].dt.hour,
        "vehicle_type": frame["vehicle_type"].astype("category"),
        "model_year": frame["model_year"],
        "temperature_c": frame["temperature_c"],
        "rain_mm": frame["rain_mm"],
        "zone_avg_speed_kmh_7d": frame["zone_id"].map(zone_speed),
    })
    model = HistGradientBoostingRegressor(max_iter=200, learning_rate=0.08, random_state=42,
                                          categorical_features="from_dtype")
    model.fit(x[~holdout], frame.loc[~holdout, "duration_minutes"])
    score = r2_score(frame.loc[holdout, "duration_minutes"], model.predict(x[holdout]))
    assert score > 0.8


# --- the declared statistics (features.aggregations) -------------------------------------------


def write_trips(settings: Settings, rows: list[tuple]) -> None:
    """Hand-made trips (trip day, vehicle, zone, km, minutes) as ingest publishes them."""
    frame = pd.DataFrame(rows, columns=["day", "vehicle_id", "zone_id", "distance_km", "duration_minutes"])
    out = settings.offline_dir / "trips"
    out.mkdir(parents=True, exist_ok=True)
    for day, group in frame.groupby("day"):
        typed = pd.DataFrame({
            "trip_id": [f"h-{day}-{i}" for i in range(len(group))],
            "vehicle_id": group["vehicle_id"].astype("int64").to_numpy(),
            "zone_id": group["zone_id"].astype("int64").to_numpy(),
            "pickup_at": pd.Timestamp(day, tz="UTC") + pd.to_timedelta(range(10, 10 + len(group)), unit="h"),
            "service_class": "economy",
            "distance_km": group["distance_km"].astype("float64").to_numpy(),
            "passengers": 1,
            "duration_minutes": group["duration_minutes"].astype("float64").to_numpy(),
        })
        typed.to_parquet(out / f"trips_{day:%Y-%m-%d}.parquet", index=False)


def read_stats(settings: Settings, name: str, day: dt.date) -> pd.DataFrame:
    path = settings.offline_dir / name / f"{name}_{day:%Y-%m-%d}.parquet"
    return pd.read_parquet(path).set_index(f"{name.split('_')[0]}_id").sort_index()


def compute_stats(settings: Settings) -> WindowsResult:
    """The spec's aggregations, as one result (what ``features.derive`` merges)."""
    return daily_windows.combine_results(features.aggregate(SPEC, settings))


def test_the_declared_statistics_are_windowed_per_vehicle_and_zone(tmp_path):
    settings = make_settings(tmp_path / "airloop")
    d1, d2, d9 = DAY0, DAY0 + dt.timedelta(days=1), DAY0 + dt.timedelta(days=8)
    write_trips(settings, [
        (d1, 1, 10, 10.0, 30.0),
        (d1, 1, 10, 5.0, 30.0),
        (d1, 2, 20, 6.0, 12.0),
        (d2, 1, 20, 20.0, 60.0),
        (d9, 2, 10, 3.0, 9.0),  # d9's window (d3..d9) no longer sees d1 or d2
    ])
    result = compute_stats(settings)
    assert isinstance(result, WindowsResult)
    assert result.written == [d1, d2, d9] and result.removed == [] and result.unchanged == 0
    assert result.changed_since == end_of_day(d1)
    assert result.rows == 5 + 5  # vehicle rows (2 + 2 + 1), zone rows (2 + 2 + 1)
    assert result.detail["vehicle_stats"]["rows"] == 5 and result.detail["zone_stats"]["days_written"] == 3

    vehicles = {d: read_stats(settings, "vehicle_stats", d) for d in (d1, d2, d9)}
    # Speed is km over hours of the whole window: d1, vehicle 1: 15 km in 1 h.
    assert vehicles[d1]["vehicle_trips_7d"].to_dict() == {1: 2, 2: 1}
    assert vehicles[d1]["vehicle_avg_speed_kmh_7d"].to_dict() == pytest.approx({1: 15.0, 2: 30.0})
    assert vehicles[d2]["vehicle_trips_7d"].to_dict() == {1: 3, 2: 1}
    assert vehicles[d2]["vehicle_avg_speed_kmh_7d"].to_dict() == pytest.approx({1: 35.0 / 2.0, 2: 30.0})
    assert vehicles[d9]["vehicle_trips_7d"].to_dict() == {2: 1}
    assert vehicles[d9]["vehicle_avg_speed_kmh_7d"].to_dict() == pytest.approx({2: 20.0})

    zones = {d: read_stats(settings, "zone_stats", d) for d in (d1, d2, d9)}
    assert zones[d1]["zone_trips_1d"].to_dict() == {10: 2, 20: 1}
    assert zones[d1]["zone_trips_7d"].to_dict() == {10: 2, 20: 1}
    assert zones[d1]["zone_avg_speed_kmh_7d"].to_dict() == pytest.approx({10: 15.0, 20: 30.0})
    assert zones[d1]["zone_avg_duration_7d"].to_dict() == pytest.approx({10: 30.0, 20: 12.0})
    # d2: zone 10 had no trip that day but keeps its week; zone 20: 26 km in 1.2 h.
    assert zones[d2]["zone_trips_1d"].to_dict() == {10: 0, 20: 1}
    assert zones[d2]["zone_trips_7d"].to_dict() == {10: 2, 20: 2}
    assert zones[d2]["zone_avg_speed_kmh_7d"].to_dict() == pytest.approx({10: 15.0, 20: 26.0 / 1.2})
    assert zones[d2]["zone_avg_duration_7d"].to_dict() == pytest.approx({10: 30.0, 20: 36.0})
    assert zones[d9]["zone_trips_1d"].to_dict() == {10: 1}
    assert zones[d9]["zone_avg_speed_kmh_7d"].to_dict() == pytest.approx({10: 20.0})
    assert zones[d9]["zone_avg_duration_7d"].to_dict() == pytest.approx({10: 9.0})
    # Stamped at the end of the day they summarize, with the column the views read.
    for d in (d1, d2, d9):
        for frame in (vehicles[d], zones[d]):
            assert (frame["event_timestamp"] == pd.Timestamp(d + dt.timedelta(days=1), tz="UTC")).all()

    again = compute_stats(settings)
    assert (again.changed_since, again.rows, again.written, again.unchanged) == (None, 0, [], 3)

    write_trips(settings, [(d2, 1, 20, 10.0, 60.0)])  # a corrected d2: only d2's window sees it
    corrected = compute_stats(settings)
    assert corrected.written == [d2] and corrected.changed_since == end_of_day(d2)
    assert read_stats(settings, "zone_stats", d2)["zone_avg_speed_kmh_7d"][20] == pytest.approx(16.0 / 1.2)

    (settings.offline_dir / "trips" / f"trips_{d9:%Y-%m-%d}.parquet").unlink()
    gone = compute_stats(settings)
    assert gone.removed == [d9] and gone.changed_since == end_of_day(d9) and gone.written == []
    assert not (settings.offline_dir / "zone_stats" / f"zone_stats_{d9:%Y-%m-%d}.parquet").exists()


def test_combined_result_takes_the_earliest_change():
    t1, t2 = end_of_day(DAY0), end_of_day(DAY0 + dt.timedelta(days=3))
    a = WindowsResult(changed_since=t2, rows=4, detail={"days_written": 1}, written=[DAY0 + dt.timedelta(days=3)],
                      unchanged=3)
    b = WindowsResult(changed_since=t1, rows=6, detail={"days_written": 4}, written=days(4), unchanged=0)
    both = daily_windows.combine_results({"vehicle_stats": a, "zone_stats": b})
    assert (both.changed_since, both.rows, both.written, both.unchanged) == (t1, 10, days(4), 0)
    assert both.detail == {"vehicle_stats": {"days_written": 1, "rows": 4}, "zone_stats": {"days_written": 4, "rows": 6}}
    quiet = WindowsResult(changed_since=None, unchanged=4)
    assert daily_windows.combine_results({"vehicle_stats": quiet, "zone_stats": quiet}).changed_since is None


def test_the_library_runs_the_declared_aggregations(tmp_path):
    settings = make_settings(tmp_path / "airloop")
    write_trips(settings, [(DAY0, 1, 10, 10.0, 30.0)])
    derived = features.derive(SPEC, settings)
    # The library may widen changed_since (e.g. to published tables that changed): never narrow it.
    assert isinstance(derived, Derived) and derived.changed_since <= end_of_day(DAY0)
    assert derived.detail["vehicle_stats"]["days_written"] == derived.detail["zone_stats"]["days_written"] == 1
    assert (settings.offline_dir / "vehicle_stats").is_dir() and (settings.offline_dir / "zone_stats").is_dir()


# --- Feast definitions and the point-in-time training set -----------------------------------------


def test_definitions_parse_beside_the_other_model(tmp_path):
    settings = make_settings(tmp_path / "airloop")
    contents = features.load_definitions(settings)  # every model of the models directory
    services = {fs.name: fs for fs in contents.feature_services}
    assert {"late_delivery_v1", SPEC.features.service} <= set(services)

    service = services[SPEC.features.service]
    views = [p.name for p in service.feature_view_projections]
    assert views == ["vehicle_attributes", "zone_weather", "vehicle_stats", "zone_stats", "trip_context"]
    names = [f.name for p in service.feature_view_projections for f in p.features]
    assert len(names) == len(set(names))  # unique across the service's views
    assert not set(names) & {*SPEC.join_keys, *SPEC.features.request, SPEC.target}

    entities = {e.name: e for e in contents.entities}
    assert {e.name: e.join_key for e in SPEC.entities} == {n: entities[n].join_key for n in ("vehicle", "zone")}
    (request,) = [s for s in contents.data_sources if s.name == "trip_request"]
    assert sorted(f.name for f in request.schema) == sorted(SPEC.features.request)

    fvs = {v.name: v for v in contents.feature_views}
    assert not fvs["vehicle_attributes"].ttl  # no expiry
    assert fvs["zone_weather"].ttl == dt.timedelta(hours=2)
    paths = {name: fvs[name].batch_source.path for name in ("vehicle_attributes", "zone_weather", "zone_stats")}
    assert paths == {
        "vehicle_attributes": str(settings.offline_dir / "vehicles"),
        "zone_weather": str(settings.offline_dir / "zone_weather"),
        "zone_stats": str(settings.offline_dir / "zone_stats"),
    }
    assert "features" not in sys.modules and "entities" not in sys.modules


HISTORY_DAYS = 9


def publish(settings: Settings, name: str, day: dt.date, frame: pd.DataFrame) -> None:
    """What ingest publishes for a table that passed: the library's typed read of the CSV."""
    typed, failures = validation.read_typed(SPEC.table(name), to_csv_bytes(frame))
    assert failures == []
    out = settings.offline_dir / name
    out.mkdir(parents=True, exist_ok=True)
    typed.to_parquet(out / f"{name}_{day:%Y-%m-%d}.parquet", index=False)


@pytest.fixture(scope="module")
def history(tmp_path_factory) -> Settings:
    """Nine days of generated trips and weather, two fleet snapshots, statistics, applied."""
    settings = make_settings(tmp_path_factory.mktemp("trips") / "airloop")
    for snapshot in (DAY0, DAY0 + dt.timedelta(days=5)):  # full snapshots: the same rows twice
        publish(settings, "vehicles", snapshot, datagen.vehicles_table())
    for day in days(HISTORY_DAYS):
        publish(settings, "trips", day, datagen.generate_trips(day))
        publish(settings, "zone_weather", day, datagen.generate_weather(day))
    assert len(features.derive(SPEC, settings).written) == HISTORY_DAYS
    assert features.apply(settings) is True
    return settings


def read_table(settings: Settings, name: str) -> pd.DataFrame:
    return pd.concat(pd.read_parquet(p) for p in sorted((settings.offline_dir / name).glob("*.parquet")))


def test_training_set_is_point_in_time_correct(history):
    trips = read_table(history, "trips")
    day = trips["pickup_at"].dt.date
    # The first day (nothing has ended yet) and the last two (full history behind them).
    events = trips[day.isin([DAY0, *days(HISTORY_DAYS)[-2:]])].reset_index(drop=True)
    entity_df = features.entity_df_from_events(SPEC, events)
    frame = features.build_training_set(SPEC, entity_df, settings=history)
    assert len(frame) == len(events)
    assert (frame["duration_minutes"].to_numpy() == events["duration_minutes"].to_numpy()).all()
    assert (frame["pickup_hour"] == events["pickup_at"].dt.hour).all()

    # The static view never expires: every trip has its vehicle's attributes, registered years ago.
    fleet = datagen.vehicles_table().set_index("vehicle_id")
    assert frame["vehicle_type"].notna().all()
    assert (frame["vehicle_type"].to_numpy() == fleet["vehicle_type"].reindex(frame["vehicle_id"]).to_numpy()).all()
    assert (frame["model_year"].to_numpy() == fleet["model_year"].reindex(frame["vehicle_id"]).to_numpy()).all()

    # The weather of the pickup's own hour in its zone.
    weather = read_table(history, "zone_weather").set_index(["zone_id", "hour_start"])
    hour = pd.MultiIndex.from_arrays([events["zone_id"], events["pickup_at"].dt.floor("h")])
    assert (frame["rain_mm"].to_numpy() == weather["rain_mm"].reindex(hour).to_numpy()).all()
    assert (frame["temperature_c"].to_numpy() == weather["temperature_c"].reindex(hour).to_numpy()).all()

    # Statistics only from the days before the trip's own: none at all on the first day.
    first = (events["pickup_at"].dt.date == DAY0).to_numpy()
    stats = ["vehicle_trips_7d", "vehicle_avg_speed_kmh_7d", "zone_trips_1d", "zone_trips_7d",
             "zone_avg_speed_kmh_7d", "zone_avg_duration_7d", "expected_minutes"]
    assert frame.loc[first, stats].isna().all().all()
    later = frame[~first]
    trip_day = trips["pickup_at"].dt.date
    for pickup_day, group in later.groupby(later["pickup_at"].dt.date):
        window = trips[(trip_day < pickup_day) & (trip_day >= pickup_day - dt.timedelta(days=7))]
        yesterday = trips[trip_day == pickup_day - dt.timedelta(days=1)]
        expected = {
            "zone_trips_1d": yesterday.groupby("zone_id").size().reindex(group["zone_id"]),
            "zone_trips_7d": window.groupby("zone_id").size().reindex(group["zone_id"]),
            "vehicle_trips_7d": window.groupby("vehicle_id").size().reindex(group["vehicle_id"]),
            "zone_avg_duration_7d": window.groupby("zone_id")["duration_minutes"].mean().reindex(group["zone_id"]),
        }
        for name, values in expected.items():
            np.testing.assert_allclose(group[name].to_numpy(dtype=float), values.to_numpy(dtype=float), err_msg=name)
        speed = window.groupby("zone_id")["distance_km"].sum() / (window.groupby("zone_id")["duration_minutes"].sum() / 60)
        np.testing.assert_allclose(group["zone_avg_speed_kmh_7d"], speed.reindex(group["zone_id"]).to_numpy())

    # On-demand features from the joined statistics and the request fields.
    np.testing.assert_allclose(later["expected_minutes"],
                               later["distance_km"] / later["zone_avg_speed_kmh_7d"] * 60)
    assert (frame["is_rush_hour"] == frame["pickup_hour"].isin([7, 8, 9, 17, 18, 19]).astype(int)).all()


def test_online_features_after_refresh(history):
    end = end_of_day(DAY0 + dt.timedelta(days=HISTORY_DAYS - 1))
    result = features.refresh_online(SPEC, Derived(changed_since=None), end, history, applied=True)
    assert {c.feature_view for c in result.chunks} == {"vehicle_attributes", "zone_weather", "vehicle_stats",
                                                       "zone_stats"}
    fleet = datagen.vehicles_table().set_index("vehicle_id")
    requests = datagen.live_requests(DAY0 + dt.timedelta(days=HISTORY_DAYS), 5)
    rows = [{k: v for k, v in r.items() if k != SPEC.target} for r in requests]
    served = features.get_online_features(SPEC, rows + [{**rows[0], "vehicle_id": 1}], settings=history)
    last_stats = read_stats(history, "zone_stats", DAY0 + dt.timedelta(days=HISTORY_DAYS - 1))
    for request, got in zip(rows, served):
        assert got["vehicle_type"] == fleet.loc[request["vehicle_id"], "vehicle_type"]
        assert got["zone_trips_7d"] == last_stats.loc[request["zone_id"], "zone_trips_7d"]
        assert got["expected_minutes"] == pytest.approx(
            request["distance_km"] / last_stats.loc[request["zone_id"], "zone_avg_speed_kmh_7d"] * 60
        )
    unknown = served[-1]  # an unknown vehicle: no attributes, but its zone's features
    assert unknown["vehicle_type"] is None and unknown["vehicle_trips_7d"] is None
    assert unknown["zone_trips_7d"] == served[0]["zone_trips_7d"]
