"""The loop's wall time split into task work and orchestration wait (no Airflow needed)."""

import datetime as dt

import pytest

from airloop.timeline import busy_seconds, loop_timeline

T0 = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.timezone.utc)


def at(seconds: float) -> str:
    return (T0 + dt.timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def ti(task_id: str, start: float, end: float | None) -> dict:
    return {"task_id": task_id, "start_date": at(start), "end_date": at(end) if end is not None else None}


def test_overlapping_and_clipped_intervals_count_once():
    t = lambda s: T0 + dt.timedelta(seconds=s)  # noqa: E731
    intervals = [(t(0), t(10)), (t(5), t(15)), (t(20), t(30)), (t(-5), t(2)), (t(40), t(50))]
    assert busy_seconds(intervals, t(1), t(45)) == pytest.approx(14 + 10 + 5)
    assert busy_seconds([], t(0), t(10)) == 0


def test_loop_timeline_splits_work_and_wait_per_stage():
    monitor = [ti("check_drift", 0, 10), ti("apply_retrain_policy", 14, 16), ti("drift_is_real", 18, 19),
               ti("trigger_training", 21, 22)]
    train = [ti("train_and_register", 30, 90), ti("champion_challenger_gate", 95, 105), ti("promoted", 107, 108),
             ti("announce_champion", 110, 111)]
    package = [ti("build_bento", 120, 150), ti("confirm_served", 152, 160)]
    timing = loop_timeline(monitor, train, package)
    assert timing["wall_seconds"] == 150  # 10 -> 160
    assert timing["work_by_stage"] == {"monitor": 4, "train": 72, "package": 38}
    assert timing["work_seconds"] == 114 and timing["wait_seconds"] == 36
    assert timing["wait_share"] == pytest.approx(36 / 150, abs=1e-4)
    assert [t["task_id"] for t in timing["tasks"]][:2] == ["apply_retrain_policy", "drift_is_real"]


def test_an_unfinished_chain_is_a_clear_error():
    monitor = [ti("check_drift", 0, 10)]
    with pytest.raises(ValueError, match="confirm_served"):
        loop_timeline(monitor, [], [ti("build_bento", 20, None), ti("confirm_served", 30, None)])
    with pytest.raises(ValueError, match="before drift was detected"):
        loop_timeline(monitor, [], [ti("confirm_served", 1, 5)])
