"""The late_delivery model's feature job: per-restaurant order statistics over 1 and 7 days.

Named by the spec's ``features.transform``; writes the source of the ``restaurant_stats``
feature view (``feature_repo/data_sources.py``) from the validated orders.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from airloop.daily_windows import WindowsResult, recompute

if TYPE_CHECKING:
    import pandas as pd

    from airloop.settings import Settings
    from airloop.spec import ModelSpec

WINDOW_DAYS = 7
OUTPUT = "restaurant_stats"  # the FileSource path, under the offline store
COLUMNS = ["restaurant_id", "prep_minutes", "was_late", "distance_km", "items"]


def compute(spec: "ModelSpec", settings: "Settings", *, force: bool = False) -> WindowsResult:
    """Recompute the statistics of every orders day whose 7-day window changed."""
    return recompute(
        settings.offline_dir / spec.dataset.name,
        settings.offline_dir / OUTPUT,
        name=OUTPUT,
        window_days=WINDOW_DAYS,
        timestamp=spec.dataset.timestamp,
        columns=COLUMNS,
        summarize=daily_sums,
        combine=window_stats,
        force=force,
    )


def daily_sums(orders: "pd.DataFrame") -> "pd.DataFrame":
    """One day's orders summed per restaurant (sums and counts combine across days)."""
    return orders.groupby("restaurant_id").agg(
        orders=("restaurant_id", "size"),
        prep_sum=("prep_minutes", "sum"),
        prep_count=("prep_minutes", "count"),
        late_sum=("was_late", "sum"),
        distance_sum=("distance_km", "sum"),
        items_sum=("items", "sum"),
    )


def window_stats(day: dt.date, daily: dict[dt.date, "pd.DataFrame"]) -> "pd.DataFrame":
    """The statistics of ``day``'s 7-day window, one row per restaurant with orders in it."""
    import pandas as pd

    week = pd.concat(daily.values()).groupby(level=0).sum()
    today = daily.get(day)
    orders_1d = today["orders"] if today is not None else pd.Series(dtype="int64")
    # prep_minutes is optional: average over the orders that report it.
    prep_count = week["prep_count"].where(week["prep_count"] > 0)
    return pd.DataFrame(
        {
            "restaurant_id": week.index.astype("int64"),
            "orders_1d": orders_1d.reindex(week.index, fill_value=0).astype("int64").to_numpy(),
            "orders_7d": week["orders"].astype("int64").to_numpy(),
            "avg_prep_minutes_7d": (week["prep_sum"] / prep_count).astype("float64").to_numpy(),
            "late_rate_7d": (week["late_sum"] / week["orders"]).astype("float64").to_numpy(),
            "avg_distance_km_7d": (week["distance_sum"] / week["orders"]).astype("float64").to_numpy(),
            "avg_items_7d": (week["items_sum"] / week["orders"]).astype("float64").to_numpy(),
        }
    )
