"""bench.bench_aggregations: its daily_windows reference is right, and a quick run says what Feast does."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def _run(code: str) -> dict:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO_ROOT, check=True,
                          capture_output=True, text=True, timeout=300)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_daily_windows_reference_matches_a_brute_force_window():
    """Each (restaurant, day) of recompute's output is the plain statistics of its 7 days' orders."""
    figures = _run("""
        import datetime as dt, json, tempfile
        from pathlib import Path
        import numpy as np, pandas as pd
        from bench.bench_aggregations import (FIRST_DAY, STATS, compare, make_day, read_daily_windows,
                                              run_daily_windows, write_day)
        work = Path(tempfile.mkdtemp())
        (work / "orders").mkdir()
        days = [FIRST_DAY + dt.timedelta(days=i) for i in range(9)]
        frames = []
        for day in days:
            frame = make_day(day, 200, 20, 1)
            write_day(work / "orders", day, frame)
            frames.append(frame)
        events = pd.concat(frames)
        written = [dt.date.fromisoformat(d) for d in run_daily_windows(work / "orders", work / "out")["days"]]
        got = read_daily_windows(work / "out", written)
        rows = []
        for day in days:
            end = pd.Timestamp(day + dt.timedelta(days=1), tz="UTC")
            week = events[(events.event_timestamp >= end - pd.Timedelta(days=7)) & (events.event_timestamp < end)]
            today = week[week.event_timestamp >= end - pd.Timedelta(days=1)]
            for key, part in week.groupby("restaurant_id"):
                rows.append({"day": day.isoformat(), "restaurant_id": key,
                             "orders_1d": int((today.restaurant_id == key).sum()), "orders_7d": len(part),
                             "avg_prep_minutes_7d": part.prep_minutes.mean(), "late_rate_7d": part.was_late.mean()})
        expected = pd.DataFrame(rows)
        stamps = got.event_timestamp == pd.to_datetime(got.day).dt.tz_localize("UTC") + pd.Timedelta(days=1)
        print(json.dumps({**compare(got, expected), "days": len(written), "stamped_end_of_day": bool(stamps.all()),
                          "null_means": int(expected.avg_prep_minutes_7d.isna().sum()),
                          "zero_days": int((expected.orders_1d == 0).sum()),
                          "midnight": int((events.event_timestamp.dt.floor("D") == events.event_timestamp).sum())}))
    """)
    assert figures["agree"] and figures["points"] > 100 and figures["days"] == 9, figures
    assert figures["stamped_end_of_day"], figures
    # The data has what the comparison is about: all-null means, days without orders, midnights.
    assert figures["null_means"] > 0 and figures["zero_days"] > 0 and figures["midnight"] > 0, figures


def test_a_quick_run_shows_where_feast_agrees_and_where_it_does_not():
    done = subprocess.run([sys.executable, "-m", "bench.bench_aggregations", "--quick", "--json"],
                          cwd=REPO_ROOT, check=True, capture_output=True, text=True, timeout=900)
    report = json.loads(done.stdout[done.stdout.index("{"):])
    results = {(r["case"], r["scope"]): r for r in report["results"]}
    for r in results.values():
        assert "error" not in r, r
    # daily_windows: a new day writes that day; a fixed day rewrites the windows that see it.
    assert results[("daily_windows", "full")]["days_computed"] == 10
    assert results[("daily_windows", "+1 day")]["days_computed"] == 1
    assert results[("daily_windows", "fix 1 day")]["days_computed"] == 6  # days 5..10 of 0..10
    for scope in ("full", "+1 day", "fix 1 day"):
        # The engine's historical path, one call per day and window: the same values everywhere.
        engine = results[("feast_engine", scope)]
        assert engine["agree"] and engine["points"] > 0, engine
        # Materialized online: the same 7-day values; orders_1d differs only where a key had no
        # order that day (never written, or the older day's count left in the online store).
        online = results[("feast_materialize", scope)]
        assert set(online["by_column"]) <= {"orders_1d"} and online["missing"] == 0, online
        assert online["orders_1d_other"] == 0, online
        assert online["orders_1d_null"] + online["orders_1d_stale"] == online["different"], online
    checks = report["checks"]
    assert "is not found in table" in checks["feast_store_api"]["error"], checks
    assert "Time window aggregation is not supported" in checks["feast_time_window"]["error"], checks
    assert not checks["feast_pull_latest"]["agree"] and checks["feast_pull_latest"]["different"] > 0, checks
    inclusive = checks["feast_inclusive_end"]
    assert inclusive["different"] == inclusive["midnight_points"] > 0, inclusive
