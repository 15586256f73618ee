"""Atomic writes and UTC normalization (the shared helpers in airloop.fileio)."""

from __future__ import annotations

import datetime as dt

import pytest

from airloop.fileio import as_utc, atomic_path, to_utc_naive, write_atomic


def test_atomic_path_replaces_only_on_success(tmp_path):
    target = tmp_path / "sub" / "state.json"
    write_atomic(target, '{"v": 1}')
    assert target.read_text() == '{"v": 1}'
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half a file")
        raise RuntimeError("writer died")
    assert target.read_text() == '{"v": 1}', "a failed write leaves the old file"
    assert [p.name for p in target.parent.iterdir()] == ["state.json"], "no temporary file is left"
    with atomic_path(target) as tmp:
        assert tmp.name.startswith(".") and tmp.parent == target.parent  # skipped by globs and readers
        tmp.write_text("new")
    assert target.read_text() == "new"


def test_utc_normalization():
    aware = dt.datetime(2026, 3, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert as_utc(aware) == dt.datetime(2026, 3, 1, 10, tzinfo=dt.timezone.utc)
    assert as_utc("2026-03-01T10:00:00Z") == as_utc(dt.datetime(2026, 3, 1, 10))
    assert to_utc_naive(aware) == dt.datetime(2026, 3, 1, 10)
    assert as_utc(None) is None and to_utc_naive(None) is None


def test_landing_csv_has_every_timestamp_in_utc_with_a_z(tmp_path):
    import pandas as pd

    from airloop.fileio import to_csv_bytes, write_csv

    frame = pd.DataFrame({
        "zone": ["north", "south"],
        "event_timestamp": pd.to_datetime(["2026-03-01T10:00:00Z", "2026-03-01T23:59:59Z"]),
        "opened_at": pd.to_datetime(["2019-06-01 08:30", "2020-01-02 00:00"]),  # naive: taken as UTC
        "seats": [40, 12],
    })
    expected = (b"zone,event_timestamp,opened_at,seats\n"
                b"north,2026-03-01T10:00:00Z,2019-06-01T08:30:00Z,40\n"
                b"south,2026-03-01T23:59:59Z,2020-01-02T00:00:00Z,12\n")
    assert to_csv_bytes(frame) == expected
    assert frame["event_timestamp"].dtype.kind == "M", "the caller's frame is left as it was"
    path = write_csv(tmp_path / "landing" / "kitchens_2026-03-01.csv", frame)
    assert path.read_bytes() == expected
    assert [p.name for p in path.parent.iterdir()] == [path.name], "no temporary file is left"
