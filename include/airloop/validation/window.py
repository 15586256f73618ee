"""The batch day of a landing file (from its name) and the time window its rows must fall in."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airloop.spec import TableSpec

__all__ = ["NO_WINDOW_START", "BatchNameError", "batch_day", "batch_window"]

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


class BatchNameError(ValueError):
    """A landing file's name does not carry the batch day (``<dataset>_YYYY-MM-DD.csv``)."""


def batch_day(table: "TableSpec", path: str | Path) -> dt.date:
    """The day a batch covers, from its file name ``<dataset>_YYYY-MM-DD.csv``."""
    name = Path(path).name
    prefix = f"{table.name}_"
    stem, suffix = Path(name).stem, Path(name).suffix
    date_part = stem[len(prefix):]
    if stem.startswith(prefix) and suffix == ".csv" and _DATE.fullmatch(date_part):
        try:
            return dt.date.fromisoformat(date_part)
        except ValueError:
            pass
    raise BatchNameError(
        f"{name!r}: batch files must be named {table.name}_YYYY-MM-DD.csv with a real date; "
        "the date sets the window every event_timestamp must fall in"
    )


# The start of the window of a table without one (``validation.window: null``).
NO_WINDOW_START = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def batch_window(
    day: dt.date, now: dt.datetime | None = None, window: str | None = "1d", timezone: str = "UTC"
) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) of a batch day, cut at ``now`` so no row can come from the future.

    The day runs from midnight to midnight in the IANA zone ``timezone`` (23 or 25 hours on
    a DST day); both bounds are given in UTC. ``window=None`` (a table without a batch-day
    window): any time before ``now``.
    """
    from airloop.daily_windows import day_start, end_of_day

    now = now or dt.datetime.now(dt.timezone.utc)
    if window is None:
        return NO_WINDOW_START, now
    return day_start(day, timezone), min(end_of_day(day, timezone), now)
