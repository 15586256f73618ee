"""Declared windowed statistics (``features.aggregations``): the values against plain pandas,
the incremental rewrite, and the spec errors, on real files (no mocks)."""

from __future__ import annotations

import copy
import datetime as dt
import functools
import hashlib
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from airloop import features
from airloop.daily_windows import end_of_day
from airloop.settings import Settings, ensure_dirs, get_settings
from airloop.spec import ModelSpec, SpecError, example_data, load_spec

datagen = example_data("late_delivery")

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO = REPO_ROOT / "include" / "models" / "late_delivery.yaml"
DAY0 = dt.date(2024, 5, 1)
# Ten order days with a gap (day 5 has no file): windows must count it as a day without events.
DAYS = [DAY0 + dt.timedelta(days=i) for i in range(11) if i != 5]
MISSING = DAY0 + dt.timedelta(days=5)

# Every function, several windows, an int key, a string key and a two-column key.
AGGREGATIONS = [
    {
        "name": "shop_stats",
        "key": "restaurant_id",
        "features": {
            "orders_1d": {"function": "count", "window": "1d"},
            "orders_2d": {"function": "count", "window": "2d"},
            "orders_3d": {"function": "count", "window": "3d"},
            "items_sum_3d": {"function": "sum", "of": "items", "window": "3d"},
            "prep_sum_2d": {"function": "sum", "of": "prep_minutes", "window": "2d"},
            "prep_mean_7d": {"function": "mean", "of": "prep_minutes", "window": "7d"},
            "prep_mean_1d": {"function": "mean", "of": "prep_minutes", "window": "1d"},
            "items_mean_4d": {"function": "mean", "of": "items", "window": "4d"},
            "prep_min_3d": {"function": "min", "of": "prep_minutes", "window": "3d"},
            "items_max_7d": {"function": "max", "of": "items", "window": "7d"},
            "km_per_prep_hour_2d": {"function": "ratio", "of": "distance_km", "per": "prep_minutes",
                                    "scale": 60, "window": "2d"},
            "late_per_item_7d": {"function": "ratio", "of": "was_late", "per": "items", "window": "7d"},
        },
    },
    {
        "name": "zone_day_stats",
        "key": "zone",
        "features": {
            "zone_orders_2d": {"function": "count", "window": "2d"},
            "zone_prep_mean_2d": {"function": "mean", "of": "prep_minutes", "window": "2d"},
            "zone_value_max_1d": {"function": "max", "of": "order_value", "window": "1d"},
        },
    },
    {
        "name": "shop_zone_stats",
        "key": ["restaurant_id", "zone"],
        "features": {
            "pair_orders_3d": {"function": "count", "window": "3d"},
            "pair_items_min_3d": {"function": "min", "of": "items", "window": "3d"},
        },
    },
]


def _write_spec(directory: Path, edit) -> Path:
    """The demo spec (its model directory alongside) after ``edit(raw)``, written to ``directory``."""
    shutil.copytree(DEMO.parent / "late_delivery", directory / "late_delivery", dirs_exist_ok=True)
    raw = yaml.safe_load(DEMO.read_text())
    edit(raw)
    path = directory / "late_delivery.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _declare(raw: dict) -> None:
    raw["features"]["aggregations"] = copy.deepcopy(AGGREGATIONS)
    # items becomes optional here, so the data may hold nullable ints.
    raw["validation"]["required"].remove("items")


@pytest.fixture
def spec(tmp_path) -> ModelSpec:
    return load_spec(_write_spec(tmp_path / "models", _declare))


@pytest.fixture
def home(tmp_path) -> Settings:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRLOOP_HOME", str(tmp_path / "airloop"))
        return ensure_dirs(get_settings())


def orders_of(day: dt.date) -> pd.DataFrame:
    """A day of generated orders with nulls in the optional columns (as ingest would type them)."""
    return _orders_of(day).copy()


@functools.cache
def _orders_of(day: dt.date) -> pd.DataFrame:
    orders = datagen.generate_orders(day, seed=3, n_restaurants=25, orders_per_day=80)
    rng = np.random.default_rng(day.toordinal())
    orders.loc[rng.random(len(orders)) < 0.2, "prep_minutes"] = np.nan
    orders["items"] = orders["items"].astype("Int64")  # what ingest gives an int column with nulls
    orders.loc[rng.random(len(orders)) < 0.1, "items"] = pd.NA
    # One restaurant reports no prep time at all that day: its 1d mean is null, not 0.
    orders.loc[orders["restaurant_id"] == orders["restaurant_id"].iloc[0], "prep_minutes"] = np.nan
    return orders


def land(settings: Settings, days: list[dt.date]) -> None:
    out = settings.offline_dir / "orders"
    out.mkdir(parents=True, exist_ok=True)
    for day in days:
        orders_of(day).to_parquet(out / f"orders_{day:%Y-%m-%d}.parquet", index=False)


def expected(aggregation: dict, day: dt.date, landed: list[dt.date]) -> pd.DataFrame:
    """Plain pandas, event by event: for each feature, the events of its window, grouped by key."""
    events = pd.concat(orders_of(d) for d in landed)
    event_day = events["event_timestamp"].dt.date
    keys = aggregation["key"] if isinstance(aggregation["key"], list) else [aggregation["key"]]
    windows = {name: int(f["window"][:-1]) for name, f in aggregation["features"].items()}

    def window(days: int) -> pd.DataFrame:
        inside = (event_day > day - dt.timedelta(days=days)) & (event_day <= day)
        return events[inside & events[keys].notna().all(axis=1)]

    rows = window(max(windows.values())).groupby(keys).size().index
    columns = {}
    for name, f in aggregation["features"].items():
        frame = window(windows[name])
        if f["function"] == "count":
            columns[name] = frame.groupby(keys).size().reindex(rows, fill_value=0).astype("int64")
        elif f["function"] == "ratio":
            both = frame[frame[f["of"]].notna() & frame[f["per"]].notna()]
            grouped = both.groupby(keys)
            of = grouped[f["of"]].sum().astype("float64").reindex(rows)
            per = grouped[f["per"]].sum().astype("float64").reindex(rows)
            columns[name] = (of / per.where(per != 0) * f.get("scale", 1.0)).astype("float64")
        else:
            values = frame[f["of"]].astype("float64")
            result = values.groupby([frame[k] for k in keys]).agg(f["function"]).reindex(rows)
            columns[name] = (result.fillna(0.0) if f["function"] == "sum" else result).astype("float64")
    return pd.DataFrame(columns, index=rows).reset_index()


def read(settings: Settings, name: str, day: dt.date) -> pd.DataFrame:
    """A written day, without its stamp (checked here: the end of the day, on every row)."""
    frame = pd.read_parquet(settings.offline_dir / name / f"{name}_{day:%Y-%m-%d}.parquet")
    assert (frame.pop("event_timestamp") == pd.Timestamp(end_of_day(day))).all()
    return frame


def digests(settings: Settings, name: str) -> dict[str, str]:
    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in (settings.offline_dir / name).glob("*.parquet")}


def test_declared_statistics_equal_plain_pandas(spec, home):
    land(home, DAYS)
    results = features.aggregate(spec, home)
    assert list(results) == [a["name"] for a in AGGREGATIONS]
    assert orders_of(DAYS[0])["prep_minutes"].isna().any() and orders_of(DAYS[0])["items"].isna().any()
    for aggregation in AGGREGATIONS:
        name = aggregation["name"]
        assert results[name].written == DAYS
        assert sorted(p.name for p in (home.offline_dir / name).iterdir()) == [f"{name}_{d}.parquet" for d in DAYS]
        for day in DAYS:
            keys = aggregation["key"] if isinstance(aggregation["key"], list) else [aggregation["key"]]
            got = read(home, name, day).sort_values(keys, ignore_index=True)
            want = expected(aggregation, day, DAYS).sort_values(keys, ignore_index=True)
            # Same rows, columns (keys, features in declared order), dtypes and values.
            pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-12, atol=0, check_dtype=True)
    # The cases the data must contain for the comparison to mean something.
    shop = pd.concat(read(home, "shop_stats", d) for d in DAYS)
    assert shop["prep_mean_1d"].isna().any()
    # Keys with events in the longest window only: counts 0, sums 0.0, the rest null.
    quiet = shop[shop["orders_2d"] == 0]
    assert len(quiet) and (quiet["prep_sum_2d"] == 0.0).all() and quiet["km_per_prep_hour_2d"].isna().all()
    assert shop["orders_3d"].dtype == "int64" and shop["items_sum_3d"].dtype == "float64"
    assert read(home, "zone_day_stats", DAYS[0])["zone"].dtype == object
    assert read(home, "shop_zone_stats", DAYS[0])["restaurant_id"].dtype == "int64"


def test_a_new_day_rewrites_only_the_days_whose_windows_see_it(spec, home):
    land(home, DAYS[:-1])  # all but the last day, and day 5 is missing
    first = features.aggregate(spec, home)
    assert all(r.written == DAYS[:-1] for r in first.values())
    before = {a["name"]: digests(home, a["name"]) for a in AGGREGATIONS}

    again = features.aggregate(spec, home)
    assert all(r.written == [] and r.changed_since is None for r in again.values())

    land(home, [DAYS[-1]])  # the next day: only its own file is new
    later = features.aggregate(spec, home)
    for aggregation in AGGREGATIONS:
        name = aggregation["name"]
        assert later[name].written == [DAYS[-1]] and later[name].changed_since == end_of_day(DAYS[-1])
        now = digests(home, name)
        assert {k: v for k, v in now.items() if k in before[name]} == before[name]
        before[name] = now

    land(home, [MISSING])  # a late batch: the days of its window, from its own, are rewritten
    late = features.aggregate(spec, home)
    for aggregation in AGGREGATIONS:
        name = aggregation["name"]
        window = max(int(f["window"][:-1]) for f in aggregation["features"].values())
        seeing = [d for d in sorted([*DAYS, MISSING]) if MISSING <= d < MISSING + dt.timedelta(days=window)]
        assert late[name].written == seeing and late[name].changed_since == end_of_day(MISSING)
        now = digests(home, name)
        untouched = {f"{name}_{d}.parquet" for d in DAYS if d not in seeing}
        assert {k: now[k] for k in untouched} == {k: before[name][k] for k in untouched}
        # The rewritten days see the late day.
        keys = aggregation["key"] if isinstance(aggregation["key"], list) else [aggregation["key"]]
        for day in seeing:
            pd.testing.assert_frame_equal(
                read(home, name, day).sort_values(keys, ignore_index=True),
                expected(aggregation, day, sorted([*DAYS, MISSING])).sort_values(keys, ignore_index=True),
                check_exact=False, rtol=1e-12, atol=0,
            )


def test_derive_runs_the_aggregations_and_the_transform(tmp_path, home):
    """A spec may declare statistics and keep a job for the rest: derive merges both."""
    job = tmp_path / "models" / "late_delivery" / "extra_job.py"

    def edit(raw: dict) -> None:
        _declare(raw)
        raw["features"]["transform"] = "late_delivery.extra_job.run"

    path = _write_spec(tmp_path / "models", edit)
    job.write_text(
        "from airloop.daily_windows import Derived\n"
        "def run(spec, settings, *, force=False):\n"
        "    return Derived(changed_since=None, rows=3, detail={'note': 'mine'})\n"
    )
    spec = load_spec(path)
    land(home, DAYS[:2])
    derived = features.derive(spec, home)
    assert derived.rows == 3 + sum(len(read(home, a["name"], d)) for a in AGGREGATIONS for d in DAYS[:2])
    assert derived.detail["late_delivery.extra_job.run"] == {"note": "mine", "rows": 3}
    assert derived.detail["shop_stats"]["days_written"] == 2
    assert derived.changed_since <= end_of_day(DAYS[0])


def _problem(tmp_path: Path, edit) -> str:
    def both(raw: dict) -> None:
        _declare(raw)
        edit(raw["features"]["aggregations"])

    with pytest.raises(SpecError) as caught:
        load_spec(_write_spec(tmp_path, both))
    return str(caught.value)


def _feature(aggs: list, **fields) -> None:
    aggs[0]["features"]["orders_1d"] = fields


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda a: a[0].update(key="shop_id"), "features.aggregations.0.key: 'shop_id' is not a dataset column"),
        (lambda a: a[2].update(key=["restaurant_id", "city"]),
         "features.aggregations.2.key: 'city' is not a dataset column"),
        (lambda a: a[0].update(key="distance_km"),
         "features.aggregations.0.key: 'distance_km' is a float column; a key is an int or string column"),
        (lambda a: _feature(a, function="mean", of="prep", window="1d"),
         "features.aggregations.0.features.orders_1d.of: 'prep' is not a dataset column"),
        (lambda a: _feature(a, function="ratio", of="distance_km", per="minutes", window="1d"),
         "features.aggregations.0.features.orders_1d.per: 'minutes' is not a dataset column"),
        (lambda a: _feature(a, function="max", of="zone", window="1d"),
         "features.aggregations.0.features.orders_1d.of: 'zone' is a string column; max needs a number"),
        (lambda a: _feature(a, function="median", of="items", window="1d"),
         r"features.aggregations.0.features.orders_1d.function: Input should be 'count', 'sum', 'mean'"),
        (lambda a: _feature(a, function="count", window="7h"),
         "features.aggregations.0.features.orders_1d.window: .*window '7h' must be whole days"),
        (lambda a: _feature(a, function="count", window="0d"),
         "features.aggregations.0.features.orders_1d.window: .*window '0d' must be whole days"),
        (lambda a: _feature(a, function="count", window=7), "features.aggregations.0.features.orders_1d.window"),
        (lambda a: _feature(a, function="count", of="items", window="1d"),
         "features.aggregations.0.features.orders_1d.*of: count takes no 'of'"),
        (lambda a: _feature(a, function="ratio", of="distance_km", window="1d"),
         "features.aggregations.0.features.orders_1d.*per: ratio needs 'per'"),
        (lambda a: _feature(a, function="mean", of="items", scale=60, window="1d"),
         "features.aggregations.0.features.orders_1d.*scale: mean takes no 'scale'"),
        (lambda a: a[1]["features"].update(orders_3d={"function": "count", "window": "1d"}),
         "features.aggregations.1.features.orders_3d: the output name 'orders_3d' is already a feature of shop_stats"),
        (lambda a: a[0]["features"].update(distance_km={"function": "count", "window": "1d"}),
         "features.aggregations.0.features.distance_km: the output name 'distance_km' is already a dataset column"),
        (lambda a: a[0]["features"].update(order_hour={"function": "count", "window": "1d"}),
         "features.aggregations.0.features.order_hour: the output name 'order_hour' is already a derived request field"),
        (lambda a: a[0]["features"].update(event_timestamp={"function": "count", "window": "1d"}),
         "features.aggregations.0.features.event_timestamp: the output name 'event_timestamp' is already"),
        (lambda a: a[1].update(name="orders"),
         "features.aggregations.1.name: 'orders' is already the name of a dataset or reference table"),
        (lambda a: a[1].update(name="shop_stats"),
         "features.aggregations.1.name: 'shop_stats' is already the name of another aggregation"),
        (lambda a: a[0].update(name="Shop Stats"), "features.aggregations.0.name: .*must be lower_snake_case"),
        (lambda a: a[0]["features"].update({"late rate": {"function": "count", "window": "1d"}}),
         "features.aggregations.0.features: .*output names must be identifiers"),
    ],
)
def test_bad_aggregations_fail_at_load_naming_the_field(tmp_path, edit, expected):
    problem = _problem(tmp_path, edit)
    assert problem.startswith(str(tmp_path / "late_delivery.yaml")), problem
    assert re.search(expected, problem), problem


def test_the_examples_declare_their_statistics():
    """Both examples load with their aggregations; the library names none of their columns."""
    late = load_spec(DEMO)
    trips = load_spec(DEMO.parent / "trip_duration.yaml")
    assert [a.name for a in late.features.aggregations] == ["restaurant_stats"]
    assert [a.name for a in trips.features.aggregations] == ["vehicle_stats", "zone_stats"]
    assert late.features.transform is None and trips.features.transform is None
    source = (REPO_ROOT / "include" / "airloop" / "features" / "aggregations.py").read_text()
    for spec in (late, trips):
        for agg in spec.features.aggregations:
            for word in [agg.name, *agg.columns, *agg.features]:
                assert not re.search(rf"\b{word}\b(?!\()", source), word
