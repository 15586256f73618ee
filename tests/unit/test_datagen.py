import datetime as dt
import hashlib
import io
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from airloop.fileio import to_csv_bytes
from airloop.spec import example_data, get_spec, has_example_data, load_specs

datagen = example_data("late_delivery")

DAY = dt.date(2026, 10, 5)


def test_same_seed_same_bytes_and_other_seed_other_bytes(tmp_path):
    a = datagen.write_batch(tmp_path / "a", DAY, seed=11)
    b = datagen.write_batch(tmp_path / "b", DAY, seed=11)
    c = datagen.write_batch(tmp_path / "c", DAY, seed=12)
    digest = lambda p: hashlib.md5(p.read_bytes()).hexdigest()  # noqa: E731
    assert digest(a) == digest(b) != digest(c)
    assert a.name == "orders_2026-10-05.csv"


def test_clean_batch_is_well_formed():
    frame = datagen.generate_orders(DAY)
    assert list(frame.columns) == list(datagen.COLUMNS)
    assert frame["order_id"].is_unique
    assert not frame.duplicated(["restaurant_id", "event_timestamp"]).any()
    assert frame["event_timestamp"].dt.date.eq(DAY).all()
    assert frame["zone"].isin(datagen.ZONES).all()
    assert 0.15 < frame["was_late"].mean() < 0.5
    assert 1200 < len(frame) < 1800


def test_drift_starts_on_its_day_and_moves_the_distributions():
    drift = datagen.Drift(start=DAY, strength=0.6)
    before = datagen.generate_orders(DAY - dt.timedelta(days=1), drift=drift)
    same_day_clean = datagen.generate_orders(DAY)
    drifted = datagen.generate_orders(DAY, drift=drift)
    assert before.equals(datagen.generate_orders(DAY - dt.timedelta(days=1)))
    assert drifted["distance_km"].mean() > 1.3 * same_day_clean["distance_km"].mean()
    assert drifted["was_late"].mean() > same_day_clean["was_late"].mean() + 0.1


@pytest.mark.parametrize("defect", datagen.DEFECTS)
def test_each_defect_changes_the_batch(defect):
    frame = datagen.generate_orders(DAY)
    clean = to_csv_bytes(frame)
    bad = datagen.apply_defect(frame, defect)
    assert bad != clean
    if defect == "empty_file":
        assert bad == b""
        return
    if defect == "unparseable":
        with pytest.raises(Exception):
            pd.read_csv(io.BytesIO(bad), dtype=str, encoding="utf-8", engine="c")
        return
    parsed = pd.read_csv(io.BytesIO(bad), dtype=str)
    if defect == "missing_column":
        assert "distance_km" not in parsed.columns
    elif defect == "wrong_dtype":
        assert (parsed["items"] == "several").sum() == 5
    elif defect == "null_key":
        assert parsed["restaurant_id"].isna().sum() == 5
    elif defect == "duplicate_key":
        assert parsed["order_id"].duplicated().sum() == 5
    elif defect == "out_of_range":
        assert (parsed["distance_km"].astype(float) < 0).sum() == 5
    elif defect == "unknown_category":
        assert (parsed["zone"] == "atlantis").sum() == 5
    elif defect == "future_timestamp":
        ts = pd.to_datetime(parsed["event_timestamp"], utc=True)
        assert (ts.dt.date > DAY).sum() == 5


def test_unknown_defect_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown defect 'typo'"):
        datagen.apply_defect(datagen.generate_orders(DAY), "typo")


def test_cli_writes_days(tmp_path, capsys):
    assert datagen.main(["--start", "2026-10-01", "--days", "3", "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "orders_2026-10-01.csv", "orders_2026-10-02.csv", "orders_2026-10-03.csv",
    ]


def test_the_generator_runs_as_a_script(tmp_path):
    out = subprocess.run(
        [sys.executable, datagen.__file__, "--start", "2026-10-01", "--days", "2", "--out", str(tmp_path)],
        capture_output=True, text=True, check=True, cwd=tmp_path,
    )
    assert [Path(line).name for line in out.stdout.split()] == ["orders_2026-10-01.csv", "orders_2026-10-02.csv"]


def test_the_generator_lives_with_its_model_and_the_library_has_none():
    import airloop

    spec = get_spec("late_delivery")
    assert Path(datagen.__file__).resolve() == (spec.home / "late_delivery" / "datagen.py").resolve()
    assert example_data(spec) is datagen  # one module, whoever asks
    assert not (Path(airloop.__file__).parent / "datagen.py").exists()
    assert {s.name for s in load_specs() if has_example_data(s)} == {"late_delivery", "trip_duration"}
