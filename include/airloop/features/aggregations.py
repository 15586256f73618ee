"""Declared windowed statistics: a spec's ``features.aggregations`` on the day-window engine.

Each aggregation (``airloop.spec.AggregationSpec``) becomes one
:func:`airloop.daily_windows.recompute` over the validated dataset, writing
``<offline store>/<name>/<name>_YYYY-MM-DD.parquet``: per event day D, one row per key with
events in D's longest window, each feature computed over ITS OWN window (D-w+1..D), stamped at
the end of D. Only days whose windows changed are rewritten.

A day is summarized once per key into partials that add up across days (row counts, sums and
counts of non-null values, minima, maxima); a window's statistic is computed from the sum (or
min, max) of its days' partials. Output types: ``count`` int64, every other function float64,
keys the dataset's type. No column of any model is named here; heavy libraries are imported
inside the functions.
"""

from __future__ import annotations

import datetime as dt
from functools import partial
from typing import TYPE_CHECKING

from airloop.daily_windows import WindowsResult, recompute

if TYPE_CHECKING:
    import pandas as pd

    from airloop.settings import Settings
    from airloop.spec import AggregationSpec, ModelSpec

__all__ = ["aggregate", "combine_window", "summarize_day"]

# The dtype of a key column in the output, by its declared type.
_KEY_DTYPES = {"int": "int64", "string": "object"}
# How a day's partial combines across the days of a window, by its suffix.
_ACROSS_DAYS = {"rows": "sum", "sum": "sum", "n": "sum", "of": "sum", "per": "sum", "min": "min", "max": "max"}


def aggregate(spec: "ModelSpec", settings: "Settings | None" = None, *, force: bool = False) -> dict[str, WindowsResult]:
    """Recompute every aggregation the spec declares, for the days whose windows changed.

    Returns each aggregation's result by its name (empty when the spec declares none);
    :func:`airloop.daily_windows.combine_results` makes them one.
    """
    from airloop.settings import get_settings

    s = settings or get_settings()
    key_dtypes = {c: _KEY_DTYPES[t] for c, t in spec.dataset.columns.items() if t in _KEY_DTYPES}
    return {
        agg.name: recompute(
            s.offline_dir / spec.dataset.name,
            s.offline_dir / agg.name,
            name=agg.name,
            window_days=agg.window_days,
            timestamp=spec.dataset.timestamp,
            columns=agg.columns,
            summarize=partial(summarize_day, agg),
            combine=partial(combine_window, agg, {k: key_dtypes[k] for k in agg.keys}),
            force=force,
            timezone=spec.dataset.timezone,
        )
        for agg in spec.features.aggregations
    }


def summarize_day(agg: "AggregationSpec", events: "pd.DataFrame") -> "pd.DataFrame":
    """One day's partials per key (rows with a null key are left out).

    Columns are ``<feature>:<partial>``: ``rows`` (count), ``sum`` and ``n`` (sum and number of
    non-null values: sum, mean), ``min``, ``max``, and ``of`` and ``per`` for a ratio (the sums
    of ``of`` and of ``per / scale`` over the rows where both are present).
    """
    import pandas as pd

    work = pd.DataFrame({k: events[k] for k in agg.keys})
    named: dict[str, tuple[str, str]] = {}
    for name, feature in agg.features.items():
        if feature.function == "count":
            work[f"{name}:rows"] = 0
            named[f"{name}:rows"] = (f"{name}:rows", "size")
        elif feature.function == "ratio":
            of, per = _numbers(events[feature.of]), _numbers(events[feature.per])
            both = of.notna() & per.notna()
            # A row lacking either side adds 0.0 to both sums: it says nothing about the ratio.
            work[f"{name}:of"] = of.where(both, 0.0)
            work[f"{name}:per"] = (per / (feature.scale or 1.0)).where(both, 0.0)
            named[f"{name}:of"] = (f"{name}:of", "sum")
            named[f"{name}:per"] = (f"{name}:per", "sum")
        else:
            work[f"{name}:x"] = _numbers(events[feature.of])
            partials = {"sum": ["sum"], "mean": ["sum", "n"], "min": ["min"], "max": ["max"]}[feature.function]
            for partial_name in partials:
                how = "count" if partial_name == "n" else partial_name
                named[f"{name}:{partial_name}"] = (f"{name}:x", how)
    return work.groupby(agg.keys if len(agg.keys) > 1 else agg.keys[0]).agg(**named)


def combine_window(
    agg: "AggregationSpec",
    key_dtypes: dict[str, str],
    day: dt.date,
    summaries: dict[dt.date, "pd.DataFrame"],
) -> "pd.DataFrame":
    """The statistics of ``day``: one row per key with events in the longest window.

    Each feature reads the partials of its own window's days (a key without events in a
    shorter window gets count 0, sum 0.0, and null for the other functions). ``key_dtypes``
    gives each key column's output dtype.
    """
    import pandas as pd

    levels = list(range(len(agg.keys)))
    by_window: dict[int, list[str]] = {}
    for name, feature in agg.features.items():
        by_window.setdefault(feature.window_days, []).append(name)

    index, values = None, {}
    for days in sorted(by_window, reverse=True):  # the longest window first: it sets the rows
        first = day - dt.timedelta(days=days - 1)
        frames = [frame for d, frame in summaries.items() if d >= first]
        window = pd.concat(frames) if frames else next(iter(summaries.values())).iloc[:0]
        grouped = window.groupby(level=levels)
        if index is None:
            index = grouped.size().index
        columns = [c for c in window.columns if c.split(":")[0] in by_window[days]]
        across = {how: [c for c in columns if _ACROSS_DAYS[c.split(":")[1]] == how] for how in ("sum", "min", "max")}
        partials = pd.concat(
            [getattr(grouped[cols], how)() for how, cols in across.items() if cols], axis=1
        ).reindex(index)
        for name in by_window[days]:
            values[name] = _statistic(agg.features[name].function, name, partials)

    frame = pd.DataFrame({name: values[name].to_numpy() for name in agg.features}, index=index)
    frame = frame.rename_axis(agg.keys).reset_index()
    return frame.astype({k: key_dtypes[k] for k in agg.keys})


def _statistic(function: str, name: str, partials: "pd.DataFrame") -> "pd.Series":
    """One feature from its window's partials (missing keys: no events in that window)."""
    if function == "count":
        return partials[f"{name}:rows"].fillna(0).astype("int64")
    if function == "sum":
        return partials[f"{name}:sum"].fillna(0.0).astype("float64")
    if function == "mean":
        n = partials[f"{name}:n"]
        return (partials[f"{name}:sum"] / n.where(n > 0)).astype("float64")
    if function == "ratio":
        per = partials[f"{name}:per"]
        return (partials[f"{name}:of"] / per.where(per != 0)).astype("float64")
    return partials[f"{name}:{function}"].astype("float64")  # min, max


def _numbers(column: "pd.Series") -> "pd.Series":
    """A numeric column as float64, nulls as NaN (nullable ints included)."""
    return column.astype("float64")
