"""Ingest stage against real Great Expectations and real DVC (no mocks)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from airloop.ingest import (
    BatchNameError,
    BatchRejected,
    find_pending_batches,
    ingest_batch,
    read_version,
)
from airloop.spec import example_data
from airloop.validation import batch_window

datagen = example_data("late_delivery")

DAY = dt.date(2024, 3, 1)

# Each datagen defect class -> (column, expectation, a bad value) the rejection must name.
EXPECTED_REJECTION = {
    "missing_column": ("distance_km", "expect_column_to_exist", None),
    "wrong_dtype": ("items", "expect_column_values_to_be_of_type", "'several'"),
    "null_key": ("restaurant_id", "expect_column_values_to_not_be_null", "line "),
    "duplicate_key": ("order_id", "expect_column_values_to_be_unique", "'o-20240"),
    "out_of_range": ("distance_km", "expect_column_values_to_be_between", "-4.0"),
    "unknown_category": ("zone", "expect_column_values_to_be_in_set", "'atlantis'"),
    "empty_file": ("(table)", "expect_file_to_be_non_empty", None),
    "unparseable": ("(table)", "expect_file_to_be_parseable_csv", None),
    "future_timestamp": ("event_timestamp", "expect_column_values_to_be_between", "2024-03-"),
}


def _landing(settings, spec) -> Path:
    return settings.landing_dir / spec.dataset.name


def _git(settings, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(settings.dvc_workspace), *args], check=True, capture_output=True, text=True
    ).stdout


def _files(root: Path) -> dict[str, tuple[str, int]]:
    """Every file below root -> (md5 of its bytes, mtime)."""
    return {
        str(p.relative_to(root)): (hashlib.md5(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _published_state(settings) -> dict:
    """What a rejected or repeated ingest must leave byte-for-byte alone."""
    return {
        "offline": _files(settings.offline_dir),
        "git_log": _git(settings, "log", "--format=%H %s"),
        "git_status": _git(settings, "status", "--porcelain", "--untracked-files=all"),
        "remote": _files(Path(settings.dvc_remote)),
    }


def test_importing_ingest_loads_no_heavy_library():
    code = (
        "import sys, airloop.ingest, airloop.validation; "
        "print([m for m in ('great_expectations', 'dvc', 'pandas', 'pyarrow', 'numpy') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "[]"


def test_clean_batch_is_validated_versioned_and_published(settings, demo_spec):
    path = datagen.write_batch(_landing(settings, demo_spec), DAY)
    data = path.read_bytes()
    assert find_pending_batches(demo_spec, settings) == [path]

    result = ingest_batch(demo_spec, path, settings)

    assert not result.already_ingested
    assert (result.batch, result.day) == (path.name, DAY)
    assert result.md5 == hashlib.md5(data).hexdigest()
    assert read_version(demo_spec.events, path.name, result.dvc_rev, settings) == data
    # The commit names the batch and the validation run that let it through.
    message = _git(settings, "log", "-1", "--format=%B", result.dvc_rev)
    assert path.name in message and result.validation_result_id in message
    assert Path(settings.dvc_remote, "files", "md5", result.md5[:2], result.md5[2:]).exists()

    offline = pd.read_parquet(result.offline_path)
    assert len(offline) == result.rows == len(datagen.generate_orders(DAY))
    assert str(offline["event_timestamp"].dtype) == "datetime64[ns, UTC]"
    assert offline["event_timestamp"].min() >= pd.Timestamp(DAY, tz="UTC")
    assert str(offline["restaurant_id"].dtype) == "int64"
    assert Path(result.data_docs).is_file() and result.data_docs.endswith(".html")
    record = json.loads(
        (settings.validation_dir / "results" / "orders" / f"{result.validation_result_id}.json").read_text()
    )
    assert record["success"] is True and record["great_expectations"]["success"] is True

    assert json.loads(json.dumps(result.as_dict()))["day"] == "2024-03-01"
    assert find_pending_batches(demo_spec, settings) == []


def test_every_recorded_version_reads_back(settings, demo_spec):
    landing = _landing(settings, demo_spec)
    first = ingest_batch(demo_spec, datagen.write_batch(landing, DAY), settings)
    first_bytes = (landing / first.batch).read_bytes()
    next_day = ingest_batch(demo_spec, datagen.write_batch(landing, DAY + dt.timedelta(days=1)), settings)
    # A corrected re-delivery of the first day becomes a new version of the same batch.
    redelivered = ingest_batch(demo_spec, datagen.write_batch(landing, DAY, seed=8), settings)
    redelivered_bytes = (landing / first.batch).read_bytes()

    assert len({first.dvc_rev, next_day.dvc_rev, redelivered.dvc_rev}) == 3
    assert redelivered.md5 != first.md5 and not redelivered.already_ingested
    assert read_version(demo_spec.events, first.batch, first.dvc_rev, settings) == first_bytes
    assert read_version(demo_spec.events, first.batch, next_day.dvc_rev, settings) == first_bytes
    assert read_version(demo_spec.events, first.batch, redelivered.dvc_rev, settings) == redelivered_bytes
    # Every version is on the DVC remote too: it reads back without the local cache.
    shutil.rmtree(settings.dvc_workspace / ".dvc" / "cache")
    assert read_version(demo_spec.events, first.batch, first.dvc_rev, settings) == first_bytes
    assert len(pd.read_parquet(redelivered.offline_path)) == redelivered.rows


def test_reingesting_the_same_bytes_changes_nothing(settings, demo_spec):
    path = datagen.write_batch(_landing(settings, demo_spec), DAY)
    first = ingest_batch(demo_spec, path, settings)
    before = _published_state(settings)

    again = ingest_batch(demo_spec, path, settings)

    assert again.already_ingested
    assert again.as_dict() == {**first.as_dict(), "already_ingested": True}
    assert _published_state(settings) == before


def test_reingesting_restores_missing_offline_rows_without_a_new_version(settings, demo_spec):
    path = datagen.write_batch(_landing(settings, demo_spec), DAY)
    first = ingest_batch(demo_spec, path, settings)
    published = pd.read_parquet(first.offline_path)
    git_log = _git(settings, "log", "--format=%H")
    Path(first.offline_path).unlink()  # as if the run died between versioning and publishing

    again = ingest_batch(demo_spec, path, settings)

    assert again.already_ingested and again.dvc_rev == first.dvc_rev
    pd.testing.assert_frame_equal(pd.read_parquet(again.offline_path), published)
    assert _git(settings, "log", "--format=%H") == git_log


def test_batch_name_without_a_date_is_refused(settings, demo_spec):
    landing = _landing(settings, demo_spec)
    good = datagen.write_batch(landing, DAY)
    for name in ("orders_latest.csv", "orders_2024-02-30.csv"):
        bad = landing / name
        bad.write_bytes(good.read_bytes())
        with pytest.raises(BatchNameError, match=r"orders_YYYY-MM-DD\.csv") as refused:
            ingest_batch(demo_spec, bad, settings)
        assert name in str(refused.value)
        assert bad.exists()  # refused, not quarantined: the name, not the data, is wrong
    assert find_pending_batches(demo_spec, settings) == [good]


def test_find_pending_batches_for_one_day(settings, demo_spec):
    landing = _landing(settings, demo_spec)
    paths = [datagen.write_batch(landing, DAY + dt.timedelta(days=i), orders_per_day=200) for i in range(3)]
    assert find_pending_batches(demo_spec, settings) == paths
    assert find_pending_batches(demo_spec, settings, day=DAY + dt.timedelta(days=1)) == [paths[1]]
    assert find_pending_batches(demo_spec, settings, day=DAY - dt.timedelta(days=1)) == []


def test_batch_window_never_reaches_past_now():
    now = dt.datetime(2024, 3, 1, 9, 30, tzinfo=dt.timezone.utc)
    assert batch_window(DAY, now) == (dt.datetime(2024, 3, 1, tzinfo=dt.timezone.utc), now)
    start, end = batch_window(DAY - dt.timedelta(days=1), now)
    assert end - start == dt.timedelta(days=1)


@pytest.fixture(scope="module")
def shared_home(tmp_path_factory, demo_spec):
    """One AIRLOOP_HOME for the defect cases, with a clean batch already published."""
    from airloop.settings import ensure_dirs, get_settings

    with pytest.MonkeyPatch.context() as env:
        env.setenv("AIRLOOP_HOME", str(tmp_path_factory.mktemp("shared") / "airloop"))
        settings = ensure_dirs(get_settings())
        ingest_batch(demo_spec, datagen.write_batch(_landing(settings, demo_spec), DAY), settings)
        yield settings


def test_every_defect_class_has_an_expected_rejection():
    assert set(EXPECTED_REJECTION) == set(datagen.DEFECTS)


@pytest.mark.parametrize("defect", datagen.DEFECTS)
def test_defective_batch_is_blocked_and_quarantined(shared_home, demo_spec, defect):
    settings = shared_home
    day = DAY + dt.timedelta(days=1 + datagen.DEFECTS.index(defect))
    path = datagen.write_batch(_landing(settings, demo_spec), day, defect=defect)
    data = path.read_bytes()
    before = _published_state(settings)

    with pytest.raises(BatchRejected) as rejected:
        ingest_batch(demo_spec, path, settings)

    column, expectation, example = EXPECTED_REJECTION[defect]
    message = str(rejected.value)
    assert f"{column}: {expectation}" in message
    failure = next(f for f in rejected.value.validation.failures if f.expectation == expectation)
    assert (failure.column or "(table)") == column
    if example:
        assert any(e.startswith(example) for e in failure.examples), failure.examples

    quarantined = settings.quarantine_dir / demo_spec.dataset.name / path.name
    assert rejected.value.quarantined == quarantined
    assert not path.exists() and quarantined.read_bytes() == data
    record = json.loads(quarantined.with_suffix(".validation.json").read_text())
    assert record["success"] is False and record["batch"] == path.name
    assert _published_state(settings) == before
    assert not (settings.offline_dir / demo_spec.dataset.name / f"{path.stem}.parquet").exists()
