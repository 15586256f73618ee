"""Reference tables through the same gate as event batches: GX rules, DVC, quarantine,
publishing, and the online refresh that notices them (real GX, DVC and pyarrow; no mocks)."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from airloop.fileio import to_csv_bytes
from airloop.ingest import BatchRejected, committed_batches, find_pending_batches, ingest_batch, read_version
from airloop.spec import SpecError, example_data, load_spec
from airloop.table_changes import changed_tables, record_refreshed

datagen = example_data("late_delivery")

REPO_ROOT = Path(__file__).resolve().parents[2]
DAY = dt.date(2024, 3, 1)

KITCHENS = {
    "name": "kitchens",
    "pattern": "kitchens_*.csv",
    "timestamp": "opened_at",
    "columns": {"restaurant_id": "int", "cuisine": "string", "seats": "int", "opened_at": "timestamp"},
    "validation": {
        "required": ["restaurant_id", "cuisine", "opened_at"],
        "unique": [["restaurant_id"]],
        "ranges": {"seats": [0, 500]},
        "categories": {"cuisine": ["pizza", "sushi", "curry"]},
        "window": None,
    },
}
HOURLY_LOAD = {
    "name": "zone_load",
    "pattern": "zone_load_*.csv",
    "timestamp": "hour_start",
    "columns": {"zone": "string", "hour_start": "timestamp", "couriers": "int"},
    "validation": {"required": ["zone", "hour_start"], "unique": [["zone", "hour_start"]]},
}


def _spec_with(tmp_path: Path, references: list[dict]):
    """The demo spec with ``references`` added, in a models dir of its own."""
    models = tmp_path / "models"
    shutil.copytree(REPO_ROOT / "include" / "models" / "late_delivery", models / "late_delivery")
    raw = yaml.safe_load((REPO_ROOT / "include" / "models" / "late_delivery.yaml").read_text())
    raw["references"] = references
    (models / "late_delivery.yaml").write_text(yaml.safe_dump(raw))
    return load_spec(models / "late_delivery.yaml")


def _write_csv(landing: Path, name: str, day: dt.date, rows: list[dict]) -> Path:
    path = landing / name / f"{name}_{day:%Y-%m-%d}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(to_csv_bytes(pd.DataFrame(rows)))
    return path


def _kitchens(n: int = 5, seats: int = 40) -> list[dict]:
    return [
        {"restaurant_id": i, "cuisine": ["pizza", "sushi", "curry"][i % 3], "seats": seats,
         "opened_at": pd.Timestamp("2019-06-01", tz="UTC") + pd.Timedelta(days=30 * i)}
        for i in range(1, n + 1)
    ]


def _hourly(day: dt.date) -> list[dict]:
    start = pd.Timestamp(day, tz="UTC")
    return [{"zone": z, "hour_start": start + pd.Timedelta(hours=h), "couriers": 10 + h}
            for z in ("north", "south") for h in range(24)]


def test_reference_rules_naming_unknown_columns_fail_at_load(tmp_path):
    bad = json.loads(json.dumps(KITCHENS))
    bad["validation"]["ranges"]["stars"] = [0, 5]
    with pytest.raises(SpecError, match=r"references\.0.*stars"):
        _spec_with(tmp_path / "a", [bad])
    clash = {**HOURLY_LOAD, "name": "orders", "pattern": "orders_*.csv"}
    with pytest.raises(SpecError, match="distinct names"):
        _spec_with(tmp_path / "b", [clash])
    spec = _spec_with(tmp_path / "c", [KITCHENS])
    with pytest.raises(SpecError, match="no dataset or reference table named 'menus'"):
        spec.table("menus")
    assert spec.dataset_names == [t.name for t in spec.tables] == ["orders", "kitchens"]
    kitchens = spec.table("kitchens")
    assert (kitchens.model, kitchens.timestamp, kitchens.window) == ("late_delivery", "opened_at", None)
    assert spec.table("orders") == spec.events
    assert (spec.events.columns, spec.events.validation) == (spec.dataset.columns, spec.validation)


def test_reference_batches_are_gated_versioned_and_published(tmp_path, settings):
    spec = _spec_with(tmp_path, [KITCHENS, HOURLY_LOAD])
    orders = datagen.write_batch(settings.landing_dir / "orders", DAY, orders_per_day=200)
    kitchens = _write_csv(settings.landing_dir, "kitchens", DAY, _kitchens())
    load = _write_csv(settings.landing_dir, "zone_load", DAY, _hourly(DAY))

    # A day's reference tables come before its events.
    assert find_pending_batches(spec, settings) == [load, kitchens, orders]
    results = {p.parent.name: ingest_batch(spec, p, settings) for p in (load, kitchens, orders)}

    # The static table has no batch-day window: rows registered years ago pass.
    assert results["kitchens"].dataset == "kitchens" and results["kitchens"].rows == 5
    published = pd.read_parquet(results["kitchens"].offline_path)
    assert Path(results["kitchens"].offline_path).parent == settings.offline_dir / "kitchens"
    assert str(published["opened_at"].dtype) == "datetime64[ns, UTC]"
    assert read_version(spec.table("kitchens"), kitchens.name, results["kitchens"].dvc_rev, settings) == kitchens.read_bytes()
    record = json.loads((settings.validation_dir / "results" / "kitchens"
                         / f"{results['kitchens'].validation_result_id}.json").read_text())
    assert record["success"] and record["model"] == "late_delivery"
    rev, versions = committed_batches(spec.table("zone_load"), settings)
    assert [(v.batch, v.dataset) for v in versions] == [(load.name, "zone_load")]
    assert find_pending_batches(spec, settings) == []


def test_a_reference_batch_that_fails_its_rules_is_quarantined(tmp_path, settings):
    spec = _spec_with(tmp_path, [KITCHENS, HOURLY_LOAD])
    rows = _kitchens(seats=40)
    rows[2]["seats"] = 9000
    rows[3]["cuisine"] = "tapas"
    bad = _write_csv(settings.landing_dir, "kitchens", DAY, rows)
    # An hourly row from the next day breaks the batch-day window.
    late = _hourly(DAY)
    late[-1]["hour_start"] = pd.Timestamp(DAY + dt.timedelta(days=1), tz="UTC")
    bad_hourly = _write_csv(settings.landing_dir, "zone_load", DAY, late)

    with pytest.raises(BatchRejected) as rejected:
        ingest_batch(spec, bad, settings)
    summary = str(rejected.value)
    assert "seats" in summary and "9000" in summary and "cuisine" in summary and "'tapas'" in summary
    assert rejected.value.quarantined.parent == settings.quarantine_dir / "kitchens"
    with pytest.raises(BatchRejected, match="hour_start"):
        ingest_batch(spec, bad_hourly, settings)
    assert not (settings.offline_dir / "kitchens").exists() or not any((settings.offline_dir / "kitchens").iterdir())
    assert committed_batches(spec.table("kitchens"), settings)[1] == []


def test_changed_tables_reports_new_and_rewritten_files_from_their_earliest_row(tmp_path, settings):
    spec = _spec_with(tmp_path, [KITCHENS, HOURLY_LOAD])
    for day in (DAY, DAY + dt.timedelta(days=1)):
        ingest_batch(spec, _write_csv(settings.landing_dir, "zone_load", day, _hourly(day)), settings)
    ingest_batch(spec, _write_csv(settings.landing_dir, "kitchens", DAY, _kitchens()), settings)

    first = changed_tables(spec, settings)
    # Never refreshed: everything, from the oldest kitchen's opening.
    assert first.since == dt.datetime(2019, 7, 1, tzinfo=dt.timezone.utc)
    assert len(first.files) == 3
    record_refreshed(spec, first.snapshot, settings)
    assert changed_tables(spec, settings).since is None

    # A corrected second day of the hourly table: from that day's first hour only.
    day2 = DAY + dt.timedelta(days=1)
    fixed = _hourly(day2)
    fixed[5]["couriers"] = 99
    ingest_batch(spec, _write_csv(settings.landing_dir, "zone_load", day2, fixed), settings)
    again = changed_tables(spec, settings)
    assert again.since == dt.datetime.combine(day2, dt.time(), tzinfo=dt.timezone.utc)
    assert again.files == [f"zone_load/zone_load_{day2:%Y-%m-%d}.parquet"]


def test_an_unreadable_refresh_record_is_an_error(tmp_path, settings):
    spec = _spec_with(tmp_path, [HOURLY_LOAD])
    state = settings.offline_dir / ".refreshed" / "late_delivery.json"
    state.parent.mkdir(parents=True)
    state.write_text("{not json")
    with pytest.raises(ValueError, match="unreadable refresh record"):
        changed_tables(spec, settings)
