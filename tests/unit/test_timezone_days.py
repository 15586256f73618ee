"""Batch days cut in a declared timezone (``dataset.timezone``): the ingest gate, the daily
aggregation windows and the training split cut days at local midnight, DST days included;
everything stored stays UTC."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pandas as pd
import pytest

from airloop import features
from airloop.daily_windows import day_start, end_of_day
from airloop.ingest import BatchRejected, ingest_batch
from airloop.spec import SpecError, example_data, load_spec
from airloop.train import time_split
from airloop.validation import batch_window

REPO_ROOT = Path(__file__).resolve().parents[2]
MODELS = REPO_ROOT / "include" / "models"
UTC = dt.timezone.utc
NEW_YORK = "America/New_York"
# Spring forward in New York: the local day 2024-03-10 has 23 hours (05:00Z to 04:00Z next day).
DST_DAY = dt.date(2024, 3, 10)

datagen = example_data("late_delivery")


def _spec_in(tmp_path: Path, timezone: str):
    """The demo spec, its batch days cut in ``timezone``."""
    models = tmp_path / "models"
    shutil.copytree(MODELS, models, ignore=shutil.ignore_patterns("__pycache__"))
    path = models / "late_delivery.yaml"
    text = path.read_text()
    old = "  timestamp: event_timestamp\n"
    assert text.count(old) == 1
    path.write_text(text.replace(old, old + f"  timezone: {timezone}\n"))
    return load_spec(path)


def _local_orders(day: dt.date, timezone: str, n: int = 400) -> pd.DataFrame:
    """A day of generated orders moved into ``day`` in ``timezone``: each UTC time of day is
    shifted to the same offset from local midnight; rows past the local day's end (a 23-hour
    day) are dropped."""
    orders = datagen.generate_orders(day, orders_per_day=n)
    start, end = day_start(day, timezone), end_of_day(day, timezone)
    shifted = orders["event_timestamp"] + (pd.Timestamp(start) - pd.Timestamp(day, tz="UTC"))
    orders = orders.assign(event_timestamp=shifted)
    return orders[orders["event_timestamp"] < pd.Timestamp(end)].reset_index(drop=True)


def _land(settings, spec, day: dt.date, orders: pd.DataFrame) -> Path:
    landing = settings.landing_dir / spec.dataset.name
    landing.mkdir(parents=True, exist_ok=True)
    path = landing / f"{spec.dataset.name}_{day:%Y-%m-%d}.csv"
    path.write_bytes(datagen.to_csv_bytes(orders))
    return path


def test_a_local_day_is_cut_at_local_midnight_dst_included():
    start, end = batch_window(DST_DAY, now=dt.datetime(2030, 1, 1, tzinfo=UTC), timezone=NEW_YORK)
    assert (start, end) == (dt.datetime(2024, 3, 10, 5, tzinfo=UTC), dt.datetime(2024, 3, 11, 4, tzinfo=UTC))
    # Fall back in Berlin: 25 hours, from 22:00Z (CEST) to 23:00Z (CET).
    start, end = batch_window(dt.date(2024, 10, 27), now=dt.datetime(2030, 1, 1, tzinfo=UTC), timezone="Europe/Berlin")
    assert (start, end) == (dt.datetime(2024, 10, 26, 22, tzinfo=UTC), dt.datetime(2024, 10, 27, 23, tzinfo=UTC))
    # The default is UTC, as before.
    assert batch_window(DST_DAY, now=dt.datetime(2030, 1, 1, tzinfo=UTC)) == (
        dt.datetime(2024, 3, 10, tzinfo=UTC), dt.datetime(2024, 3, 11, tzinfo=UTC)
    )


def test_an_unknown_timezone_fails_at_load_naming_the_field(tmp_path):
    with pytest.raises(SpecError, match=r"dataset.timezone: .*'Mars/Olympus' is not an IANA time zone name"):
        _spec_in(tmp_path, "Mars/Olympus")


def test_the_gate_accepts_the_local_day_and_rejects_rows_outside_it(tmp_path, settings):
    spec = _spec_in(tmp_path, NEW_YORK)
    orders = _local_orders(DST_DAY, NEW_YORK)
    assert orders["event_timestamp"].min() < pd.Timestamp("2024-03-10T06:00Z")  # the local day's first hour
    assert orders["event_timestamp"].max() >= pd.Timestamp("2024-03-11T03:00Z")  # and its last
    result = ingest_batch(spec, _land(settings, spec, DST_DAY, orders), settings)
    assert result.rows == len(orders) and not result.already_ingested
    # Stored as UTC.
    published = pd.read_parquet(result.offline_path)
    assert str(published["event_timestamp"].dt.tz) == "UTC"
    assert published["event_timestamp"].min() == orders["event_timestamp"].min()

    # One row at the next local midnight: outside the day, rejected naming the column.
    day = DST_DAY + dt.timedelta(days=1)
    late = _local_orders(day, NEW_YORK)
    late.loc[0, "event_timestamp"] = pd.Timestamp(end_of_day(day, NEW_YORK))
    with pytest.raises(BatchRejected) as rejected:
        ingest_batch(spec, _land(settings, spec, day, late), settings)
    assert "event_timestamp: expect_column_values_to_be_between" in str(rejected.value)
    failure = next(f for f in rejected.value.validation.failures if f.column == "event_timestamp")
    assert any(e.startswith("2024-03-12") for e in failure.examples), failure.examples

    # A batch of the UTC day holds the previous local day's evening (00:00-04:00Z): rejected.
    day = DST_DAY + dt.timedelta(days=2)
    with pytest.raises(BatchRejected, match="event_timestamp: expect_column_values_to_be_between"):
        ingest_batch(spec, _land(settings, spec, day, datagen.generate_orders(day, orders_per_day=400)), settings)


def test_daily_windows_cut_at_local_midnight(tmp_path, settings):
    spec = _spec_in(tmp_path, NEW_YORK)
    out = settings.offline_dir / spec.dataset.name
    out.mkdir(parents=True, exist_ok=True)
    days = [DST_DAY - dt.timedelta(days=1), DST_DAY]
    landed = {day: _local_orders(day, NEW_YORK, n=200) for day in days}
    for day, orders in landed.items():
        orders.to_parquet(out / f"orders_{day:%Y-%m-%d}.parquet", index=False)

    results = features.aggregate(spec, settings)
    assert results["restaurant_stats"].changed_since == dt.datetime(2024, 3, 10, 5, tzinfo=UTC)
    for day, orders in landed.items():
        stats = pd.read_parquet(settings.offline_dir / "restaurant_stats" / f"restaurant_stats_{day:%Y-%m-%d}.parquet")
        # Stamped at the next local midnight: 05:00Z before the change, 04:00Z after it.
        assert (stats["event_timestamp"] == pd.Timestamp(end_of_day(day, NEW_YORK))).all()
        counts = orders.groupby("restaurant_id").size()
        assert stats.set_index("restaurant_id")["orders_1d"].reindex(counts.index).tolist() == counts.tolist()
    assert end_of_day(DST_DAY, NEW_YORK) == dt.datetime(2024, 3, 11, 4, tzinfo=UTC)

    # A row outside its file's local day is refused, naming the column and the zone.
    bad = landed[DST_DAY].copy()
    bad.loc[0, "event_timestamp"] = pd.Timestamp("2024-03-10T04:59Z")  # 23:59 on the 9th in New York
    bad.to_parquet(out / f"orders_{DST_DAY:%Y-%m-%d}.parquet", index=False)
    with pytest.raises(ValueError, match=r"1 rows of event_timestamp are not stamped on 2024-03-10 \(America/New_York\)"):
        features.aggregate(spec, settings)


def test_the_training_split_cuts_local_days():
    # Berlin's 25-hour day 2024-10-27 runs from 22:00Z on the 26th to 23:00Z on the 27th.
    stamps = pd.to_datetime([
        "2024-10-25T12:00Z", "2024-10-26T12:00Z", "2024-10-26T21:59Z",
        "2024-10-26T22:00Z", "2024-10-27T22:59Z",
    ])
    frame = pd.DataFrame({"ts": stamps, "n": range(len(stamps))})
    train, holdout = time_split(frame, "ts", holdout_days=1, timezone="Europe/Berlin")
    assert holdout["n"].tolist() == [3, 4] and train["n"].tolist() == [0, 1, 2]
    train, holdout = time_split(frame, "ts", holdout_days=1)  # UTC: the 27th alone
    assert holdout["n"].tolist() == [4]
    # A warm-up day is a local day too.
    train, holdout = time_split(frame, "ts", holdout_days=1, warmup_days=1, timezone="Europe/Berlin")
    assert train["n"].tolist() == [1, 2]


def test_an_aggregation_view_must_outlive_the_longest_local_day(tmp_path):
    """Statistics are stamped once per local day: a 1-day TTL loses the last hour of a 25-hour day."""
    from airloop.features.consistency import definition_problems, longest_day

    assert longest_day(NEW_YORK) == dt.timedelta(hours=25) and longest_day("UTC") == dt.timedelta(days=1)
    spec = _spec_in(tmp_path, NEW_YORK)
    views = spec.definitions_dir / "features.py"
    views.write_text(views.read_text().replace("ttl=timedelta(days=7)", "ttl=timedelta(days=1)"))
    assert definition_problems(spec) == [
        "late_delivery: Feast view restaurant_stats has ttl 1 day, 0:00:00, shorter than the day between "
        "features.aggregations.restaurant_stats's rows (1 day, 1:00:00 at the longest in America/New_York): "
        "events late in a day would get none of its statistics (use at least 1 day, 1:00:00, or 0 for no expiry)"
    ]
    utc = _spec_in(tmp_path / "utc", "UTC")
    views = utc.definitions_dir / "features.py"
    views.write_text(views.read_text().replace("ttl=timedelta(days=7)", "ttl=timedelta(days=1)"))
    assert definition_problems(utc) == []
