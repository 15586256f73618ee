"""The trip_duration model's feature job: per-vehicle and per-zone trip statistics.

Named by the spec's ``features.transform``; writes the sources of the ``vehicle_stats`` and
``zone_stats`` feature views (``feature_repo/data_sources.py``) from the validated trips, one
file per trip day, each row stamped at the end of the day (``airloop.daily_windows``).

Speeds are distance over time of the whole window (sum of km / sum of hours), not a mean of
per-trip speeds: a few short trips stuck at a light would otherwise dominate the average.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from airloop.daily_windows import WindowsResult, combine_results, recompute

if TYPE_CHECKING:
    import pandas as pd

    from airloop.settings import Settings
    from airloop.spec import ModelSpec

WINDOW_DAYS = 7
VEHICLE_OUTPUT = "vehicle_stats"  # FileSource paths, under the offline store
ZONE_OUTPUT = "zone_stats"
VEHICLE_COLUMNS = ["vehicle_id", "distance_km", "duration_minutes"]
ZONE_COLUMNS = ["zone_id", "distance_km", "duration_minutes"]


def compute(spec: "ModelSpec", settings: "Settings", *, force: bool = False) -> WindowsResult:
    """Recompute both sources for every trips day whose 7-day window changed."""
    trips = settings.offline_dir / spec.dataset.name
    common = {"window_days": WINDOW_DAYS, "timestamp": spec.dataset.timestamp, "force": force}
    vehicles = recompute(
        trips,
        settings.offline_dir / VEHICLE_OUTPUT,
        name=VEHICLE_OUTPUT,
        columns=VEHICLE_COLUMNS,
        summarize=vehicle_daily_sums,
        combine=vehicle_window_stats,
        **common,
    )
    zones = recompute(
        trips,
        settings.offline_dir / ZONE_OUTPUT,
        name=ZONE_OUTPUT,
        columns=ZONE_COLUMNS,
        summarize=zone_daily_sums,
        combine=zone_window_stats,
        **common,
    )
    return combine_results({VEHICLE_OUTPUT: vehicles, ZONE_OUTPUT: zones})


def _sums(trips: "pd.DataFrame", key: str, **extra: tuple[str, str]) -> "pd.DataFrame":
    """Trips, kilometres and hours per ``key`` (sums combine across days)."""
    # A trip without a duration or distance tells nothing about speed: leave it out of both sums.
    timed = trips["distance_km"].notna() & trips["duration_minutes"].notna()
    frame = trips.assign(
        speed_km=trips["distance_km"].where(timed, 0.0),
        speed_hours=(trips["duration_minutes"] / 60.0).where(timed, 0.0),
    )
    return frame.groupby(key).agg(
        trips=(key, "size"),
        distance_sum=("speed_km", "sum"),
        hours_sum=("speed_hours", "sum"),
        **extra,
    )


def vehicle_daily_sums(trips: "pd.DataFrame") -> "pd.DataFrame":
    """One day's trips summed per vehicle."""
    return _sums(trips, "vehicle_id")


def zone_daily_sums(trips: "pd.DataFrame") -> "pd.DataFrame":
    """One day's trips summed per pickup zone, with the minutes for the average duration."""
    return _sums(
        trips, "zone_id",
        duration_sum=("duration_minutes", "sum"),
        duration_count=("duration_minutes", "count"),
    )


def _speed(week: "pd.DataFrame") -> "pd.Series":
    return (week["distance_sum"] / week["hours_sum"].where(week["hours_sum"] > 0)).astype("float64")


def vehicle_window_stats(day: dt.date, daily: dict[dt.date, "pd.DataFrame"]) -> "pd.DataFrame":
    """The statistics of ``day``'s 7-day window, one row per vehicle with trips in it."""
    import pandas as pd

    week = pd.concat(daily.values()).groupby(level=0).sum()
    return pd.DataFrame(
        {
            "vehicle_id": week.index.astype("int64"),
            "vehicle_trips_7d": week["trips"].astype("int64").to_numpy(),
            "vehicle_avg_speed_kmh_7d": _speed(week).to_numpy(),
        }
    )


def zone_window_stats(day: dt.date, daily: dict[dt.date, "pd.DataFrame"]) -> "pd.DataFrame":
    """The statistics of ``day``'s 7-day window, one row per zone with trips in it."""
    import pandas as pd

    week = pd.concat(daily.values()).groupby(level=0).sum()
    today = daily.get(day)
    trips_1d = today["trips"] if today is not None else pd.Series(dtype="int64")
    timed = week["duration_count"].where(week["duration_count"] > 0)
    return pd.DataFrame(
        {
            "zone_id": week.index.astype("int64"),
            "zone_trips_1d": trips_1d.reindex(week.index, fill_value=0).astype("int64").to_numpy(),
            "zone_trips_7d": week["trips"].astype("int64").to_numpy(),
            "zone_avg_speed_kmh_7d": _speed(week).to_numpy(),
            "zone_avg_duration_7d": (week["duration_sum"] / timed).astype("float64").to_numpy(),
        }
    )
