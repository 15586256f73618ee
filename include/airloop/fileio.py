"""Small file and time helpers shared by the stages: atomic writes, landing CSV, UTC normalization.

Readers of Airloop's files (Feast's offline store, the ingest DAG's landing glob, the policy
state) must never see half a file, so every writer goes through :func:`atomic_path`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["as_utc", "atomic_path", "exclusive", "to_csv_bytes", "to_utc_naive", "write_atomic", "write_csv"]

UTC = dt.timezone.utc


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; it replaces ``path`` when the block ends.

    The temporary name starts with a dot (parquet dataset readers and glob patterns skip it)
    and is unique per writer. If the block raises, the temporary file is removed and ``path``
    is left as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


@contextlib.contextmanager
def exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_path`` (created if missing) for the block: one
    process at a time, across every process on this machine that takes the same lock."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` atomically and durably (fsync before the rename)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data.encode() if isinstance(data, str) else data)
        fh.flush()
        os.fsync(fh.fileno())


def to_csv_bytes(frame: "pd.DataFrame") -> bytes:
    """The landing CSV of ``frame``: timestamps as ISO 8601 UTC with a ``Z``, as ingest reads them.

    No index, ``\n`` line ends, UTF-8; the same frame always gives the same bytes.
    """
    import pandas as pd

    out = frame.copy()
    for column in out.columns:
        if pd.api.types.is_datetime64_any_dtype(out[column]):
            out[column] = out[column].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    return out.to_csv(index=False, lineterminator="\n").encode()


def write_csv(path: Path, frame: "pd.DataFrame") -> Path:
    """Write ``frame`` to ``path`` as the landing CSV (:func:`to_csv_bytes`), atomically.

    A reader (the ingest DAG's landing glob) never sees half a file. Returns ``path``.
    """
    with atomic_path(path) as tmp:
        tmp.write_bytes(to_csv_bytes(frame))
    return path


def as_utc(value: "dt.datetime | str | None") -> dt.datetime | None:
    """An aware UTC datetime from a datetime (naive means UTC), an ISO string or a pandas Timestamp."""
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    elif not isinstance(value, dt.datetime):  # pandas Timestamp and friends
        value = value.to_pydatetime()
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def to_utc_naive(value: "dt.datetime | str | None") -> dt.datetime | None:
    """Naive UTC (what the SQL stores keep); a naive input is taken as UTC already."""
    aware = as_utc(value)
    return None if aware is None else aware.replace(tzinfo=None)
