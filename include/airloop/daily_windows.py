"""Incremental day-window derivations: the engine behind a model's windowed statistics.

A caller (the spec's declared ``features.aggregations``, see ``airloop.features.aggregations``,
or a model's own job, ``features.transform``) says *what* to compute: which columns of a day's
events it needs, how to summarize one day per key (sums and counts), and how to combine the
summaries of a window of days into the published statistics. This module
says *when*: one output file per event day D, holding the statistics of the days
D-window+1..D, stamped at the end of D (so a point-in-time join never gives an event
statistics that include its own day). A day is recomputed only when the input files of its
window changed (name, size and mtime are kept in the output's parquet metadata), so a new
day costs one day and a late or corrected batch recomputes the days that see it.

Input files are the validated dataset's ``<anything>_YYYY-MM-DD.parquet`` (as ingest writes
them); days without a file count as days without events. The engine knows no column of any
model. Heavy libraries are imported inside the functions.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from airloop.fileio import atomic_path

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Derived", "WindowsResult", "combine_results", "dated_files", "day_start", "end_of_day", "recompute"]

log = logging.getLogger(__name__)

_INPUTS_KEY = b"airloop.inputs"


@dataclass(frozen=True)
class Derived:
    """What a model's aggregations or transform wrote, as the features stage needs to know it.

    ``changed_since``: the earliest event time of a row it (re)wrote or removed, from which the
    online store must be refreshed; None when nothing changed.
    """

    changed_since: dt.datetime | None
    rows: int = 0
    detail: dict = field(default_factory=dict)


@dataclass(frozen=True)
class WindowsResult(Derived):
    """What :func:`recompute` did: the output days it wrote and removed, how many it left unchanged."""

    written: list[dt.date] = field(default_factory=list)
    unchanged: int = 0
    removed: list[dt.date] = field(default_factory=list)
    seconds: float = 0.0


def combine_results(results: dict[str, WindowsResult]) -> WindowsResult:
    """One result for a job that computes several sources from the same input days.

    The online store must be refreshed from the earliest change of any source; days are
    listed once whichever source they were written for; ``detail`` keeps each source's own.
    """
    changes = [r.changed_since for r in results.values() if r.changed_since is not None]
    written = sorted({day for r in results.values() for day in r.written})
    removed = sorted({day for r in results.values() for day in r.removed})
    first = next(iter(results.values()))
    return WindowsResult(
        changed_since=min(changes) if changes else None,
        rows=sum(r.rows for r in results.values()),
        detail={name: {**r.detail, "rows": r.rows} for name, r in results.items()},
        written=written,
        # Input days no source had to rewrite (every source sees the same input days).
        unchanged=first.unchanged + len(first.written) - len(written),
        removed=removed,
        seconds=sum(r.seconds for r in results.values()),
    )


def day_start(day: dt.date, timezone: str = "UTC") -> dt.datetime:
    """The first instant of ``day`` in the IANA zone ``timezone``, in UTC.

    Local midnight; where a DST change skips midnight, the instant the day begins (zoneinfo
    reads a skipped time with the offset before the change). A day is [day_start(d),
    day_start(d + 1)): 23 or 25 hours long on a DST day.
    """
    from zoneinfo import ZoneInfo

    local = dt.datetime.combine(day, dt.time(), tzinfo=ZoneInfo(timezone))
    return local.astimezone(dt.timezone.utc)


def end_of_day(day: dt.date, timezone: str = "UTC") -> dt.datetime:
    """When the statistics of ``day`` become visible: the end of that day in ``timezone`` (as UTC)."""
    return day_start(day + dt.timedelta(days=1), timezone)


def dated_files(directory: Path) -> dict[dt.date, Path]:
    """The ``*_YYYY-MM-DD.parquet`` files of ``directory`` by day; other names are ignored."""
    files = {}
    for path in sorted(directory.glob("*.parquet")):
        try:
            files[dt.date.fromisoformat(path.stem.rsplit("_", 1)[-1])] = path
        except ValueError:
            log.warning("ignoring %s: not named <name>_YYYY-MM-DD.parquet", path)
    return files


def recompute(
    source: Path,
    out: Path,
    *,
    name: str,
    window_days: int,
    timestamp: str,
    columns: list[str],
    summarize: Callable[["pd.DataFrame"], "pd.DataFrame"],
    combine: Callable[[dt.date, dict[dt.date, "pd.DataFrame"]], "pd.DataFrame"],
    stamp_column: str = "event_timestamp",
    force: bool = False,
    timezone: str = "UTC",
) -> WindowsResult:
    """Write ``out/<name>_YYYY-MM-DD.parquet`` for every day of ``source`` whose window changed.

    ``summarize(events)`` gets one day's events (``columns`` only, every ``timestamp`` inside
    the day) and returns per-key partial aggregates (sums, counts) indexed by key;
    ``combine(day, summaries)`` gets the summaries of the window's days that had events
    (``day`` itself may be absent) and returns one row per key. The engine adds
    ``stamp_column`` (the end of ``day``). Outputs of days whose input is gone are removed.
    Days are cut at midnight in the IANA zone ``timezone`` (the dataset's): an input file of
    day D holds the events of that local day, and its statistics are stamped at the next
    local midnight (stored as UTC).
    """
    if window_days < 1:
        raise ValueError("window_days must be at least 1")
    started = time.perf_counter()
    inputs = dated_files(source)
    out.mkdir(parents=True, exist_ok=True)

    removed = [day for day, path in dated_files(out).items() if day not in inputs]
    for day in removed:
        (out / f"{name}_{day:%Y-%m-%d}.parquet").unlink(missing_ok=True)

    summaries: dict[dt.date, "pd.DataFrame"] = {}  # each input day is read at most once per call
    written, unchanged, rows = [], 0, 0
    for day in sorted(inputs):
        window = {d: inputs[d] for d in (day - dt.timedelta(days=i) for i in range(window_days)) if d in inputs}
        fingerprint = _fingerprint(window.values())
        target = out / f"{name}_{day:%Y-%m-%d}.parquet"
        if not force and _stored_fingerprint(target) == fingerprint:
            unchanged += 1
            continue
        for d, path in window.items():
            if d not in summaries:
                summaries[d] = summarize(_read_day(path, d, timestamp, columns, timezone))
        frame = combine(day, {d: summaries[d] for d in window})
        frame[stamp_column] = end_of_day(day, timezone)
        _write_parquet(frame, target, {_INPUTS_KEY: fingerprint.encode()})
        written.append(day)
        rows += len(frame)
    changed = [*written, *removed]
    return WindowsResult(
        changed_since=end_of_day(min(changed), timezone) if changed else None,
        rows=rows,
        detail={"days_written": len(written), "unchanged": unchanged, "removed": len(removed)},
        written=written,
        unchanged=unchanged,
        removed=removed,
        seconds=time.perf_counter() - started,
    )


def _read_day(path: Path, day: dt.date, timestamp: str, columns: list[str], timezone: str) -> "pd.DataFrame":
    import pandas as pd

    events = pd.read_parquet(path, columns=list(dict.fromkeys([timestamp, *columns])))
    start, end = pd.Timestamp(day_start(day, timezone)), pd.Timestamp(end_of_day(day, timezone))
    stamps = pd.to_datetime(events[timestamp], utc=True)
    outside = ~stamps.between(start, end, inclusive="left")
    if outside.any():
        # Stamping this day's statistics at its end would leak these rows into earlier events.
        raise ValueError(f"{path}: {int(outside.sum())} rows of {timestamp} are not stamped on {day} ({timezone})")
    return events


def _fingerprint(paths: Iterable[Path]) -> str:
    return json.dumps(sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in paths))


def _stored_fingerprint(path: Path) -> str | None:
    import pyarrow.parquet as pq

    if not path.exists():
        return None
    value = (pq.read_schema(path).metadata or {}).get(_INPUTS_KEY)
    return value.decode() if value else None


def _write_parquet(frame: "pd.DataFrame", path: Path, metadata: dict[bytes, bytes]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
    with atomic_path(path) as tmp:  # Feast never sees half a file
        pq.write_table(table, tmp)
