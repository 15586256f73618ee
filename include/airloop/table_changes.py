"""Which of a model's published tables changed since its online store was last refreshed.

Ingest publishes each validated batch of a model's event dataset and reference tables as a
parquet file under ``settings.offline_dir/<table>/``. Rows of a batch are stamped in the past
(an hourly table's day, a static table's registration times), so Feast's incremental
materialization, which continues after its last end, would skip them. This module remembers the
files (name, size, mtime) an online refresh covered and says from which event time the new or
rewritten ones start. pyarrow is imported inside the functions.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from airloop.fileio import as_utc, atomic_path

if TYPE_CHECKING:
    from airloop.settings import Settings
    from airloop.spec import ModelSpec

__all__ = ["TableChanges", "changed_tables", "record_refreshed"]

# Per table: file name -> [size, mtime_ns].
Snapshot = dict[str, dict[str, list[int]]]


@dataclass(frozen=True)
class TableChanges:
    """``since``: the earliest event time in a new or rewritten file (None: nothing changed).

    ``snapshot``: the files seen, to record with :func:`record_refreshed` once the online
    store holds them.
    """

    since: dt.datetime | None
    snapshot: Snapshot = field(default_factory=dict)
    files: list[str] = field(default_factory=list)


def _state_file(spec: "ModelSpec", settings: "Settings") -> Path:
    return settings.offline_dir / ".refreshed" / f"{spec.name}.json"


def _files(directory: Path) -> dict[str, list[int]]:
    out = {}
    for path in sorted(directory.glob("*.parquet")):
        info = path.stat()
        out[path.name] = [info.st_size, info.st_mtime_ns]
    return out


def changed_tables(spec: "ModelSpec", settings: "Settings") -> TableChanges:
    """The model's published tables (events and references) against the last recorded refresh."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    state = _state_file(spec, settings)
    try:
        recorded: Snapshot = json.loads(state.read_text())
    except FileNotFoundError:
        recorded = {}
    except ValueError as exc:
        raise ValueError(f"{state}: unreadable refresh record ({exc}); delete it to refresh every table") from None
    snapshot: Snapshot = {}
    earliest: list[dt.datetime] = []
    changed: list[str] = []
    for table in spec.tables:
        name = table.name
        directory = settings.offline_dir / name
        snapshot[name] = _files(directory)
        known = recorded.get(name, {})
        for file_name, identity in snapshot[name].items():
            if known.get(file_name) == identity:
                continue
            changed.append(f"{name}/{file_name}")
            column = pq.read_table(directory / file_name, columns=[table.timestamp]).column(0)
            if (low := pc.min(column).as_py()) is not None:
                earliest.append(as_utc(low))
    return TableChanges(since=min(earliest) if earliest else None, snapshot=snapshot, files=changed)


def record_refreshed(spec: "ModelSpec", snapshot: Snapshot, settings: "Settings") -> None:
    """Remember ``snapshot`` (from :func:`changed_tables`) as covered by the online store."""
    state = _state_file(spec, settings)
    state.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(state) as tmp:
        tmp.write_text(json.dumps(snapshot, indent=1, sort_keys=True))
