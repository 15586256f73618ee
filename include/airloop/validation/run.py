"""One validation run of a batch: both layers in turn, a result id and the run's JSON record.

A file that fails :mod:`~airloop.validation.csv_batch` is rejected without a GX run (GX needs a
typed frame), so no Data Docs page mentions it; one that passes is run through
:mod:`~airloop.validation.expectations`. Every run gets a result id, a JSON record under
``validation_dir/results/<dataset>/`` and a page in the Airflow UI that shows the record
(:func:`~airloop.validation.result.record_page`).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from airloop.validation.csv_batch import read_typed
from airloop.validation.expectations import redact, run_checkpoint
from airloop.validation.result import Failure, ValidationResult, record_page
from airloop.validation.window import batch_day

if TYPE_CHECKING:
    import pandas as pd

    from airloop.settings import Settings
    from airloop.spec import TableSpec

__all__ = ["record_refusal", "run_validation", "validate_batch"]


def validate_batch(
    table: "TableSpec", path: str | Path, settings: "Settings | None" = None
) -> ValidationResult:
    """Validate a file and record the result (nothing is moved or published).

    For a file named by hand: it follows links, but refuses anything but a regular file.
    The landing area's own rules (no links, a size limit) are ``ingest``'s. Not safe to run
    concurrently against the same ``validation_dir``: ``ingest_batch`` serializes runs.
    """
    path = Path(path)
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise ValueError(f"{path.name!r} is not a regular file")
    result, _ = run_validation(table, path.name, path, batch_day(table, path), settings)
    return result


def run_validation(
    table: "TableSpec",
    batch: str,
    data: bytes | Path,
    day: dt.date,
    settings: "Settings | None" = None,
) -> tuple[ValidationResult, "pd.DataFrame | None"]:
    """Validate a batch (its bytes or a path to a regular file) and return the result with
    the typed frame (None unless it passed)."""
    from airloop.settings import get_settings

    settings = settings or get_settings()
    result_id = _new_result_id(batch)
    frame, failures = read_typed(table, data)
    data_docs, gx_result = None, None
    if frame is not None:
        failures, data_docs, gx_result = run_checkpoint(table, frame, day, result_id, settings)
    result = _record(table, batch, day, result_id, failures, None if frame is None else len(frame),
                     data_docs, gx_result, settings)
    return result, (frame if result.success else None)


def record_refusal(
    table: "TableSpec", batch: str, day: dt.date, failure: Failure, settings: "Settings | None" = None
) -> ValidationResult:
    """Record a failed validation for a batch refused unread (see ``ingest``), without GX."""
    from airloop.settings import get_settings

    settings = settings or get_settings()
    return _record(table, batch, day, _new_result_id(batch), [failure], None, None, None, settings)


def _new_result_id(batch: str) -> str:
    return f"{Path(batch).stem}-{uuid.uuid4().hex[:12]}"


def _record(
    table: "TableSpec",
    batch: str,
    day: dt.date,
    result_id: str,
    failures: list[Failure],
    rows: int | None,
    data_docs: str | None,
    gx_result: dict | None,
    settings: "Settings",
) -> ValidationResult:
    """The result of one run, written as its JSON record."""
    result_json = settings.validation_dir / "results" / table.name / f"{result_id}.json"
    result = ValidationResult(
        batch=batch,
        day=day,
        success=not failures,
        result_id=result_id,
        failures=failures,
        rows=rows,
        data_docs=data_docs,
        result_json=str(result_json),
        page=record_page(table.name, result_id),
    )
    result_json.parent.mkdir(parents=True, exist_ok=True)
    record = {**result.as_dict(), "model": table.model, "great_expectations": redact(gx_result)}
    result_json.write_text(json.dumps(record, indent=2, default=str))
    return result
