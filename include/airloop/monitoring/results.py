"""The record of one drift check: :class:`DriftCheck`, its column names and its error.

A :class:`DriftCheck` travels as a dict (XCom, the JSON report, the policy history), so
:meth:`DriftCheck.as_dict` is JSON-safe and :meth:`DriftCheck.from_dict` reads it back.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airloop.decisions import DRIFT, INSUFFICIENT_DATA
from airloop.fileio import as_utc

__all__ = ["LABEL", "PREDICTION", "DriftCheck", "MonitorError", "json_safe"]

PREDICTION = "prediction"
LABEL = "label"


class MonitorError(RuntimeError):
    """A drift check cannot run (e.g. predictions are logged but there is no champion)."""


@dataclass
class DriftCheck:
    """The outcome of one drift check. ``as_dict()`` is JSON-safe (XCom, the JSON report)."""

    model: str
    report_id: str
    status: str  # insufficient_data | ok | drift
    window_start: dt.datetime
    window_end: dt.datetime
    rows: int  # logged predictions in the window
    message: str
    champion_version: str | None = None
    champion_run_id: str | None = None
    signals: list[str] = field(default_factory=list)  # why the status is "drift"
    # data drift over the model's inputs
    drift_share_threshold: float | None = None
    drifted_share: float | None = None
    drifted_columns: list[str] = field(default_factory=list)
    feature_scores: dict[str, float] = field(default_factory=dict)
    feature_methods: dict[str, str] = field(default_factory=dict)
    feature_thresholds: dict[str, float] = field(default_factory=dict)
    empty_columns: list[str] = field(default_factory=list)  # no value at all in the window
    # prediction drift
    prediction_drift: float | None = None
    prediction_drifted: bool | None = None
    prediction_method: str | None = None
    prediction_threshold: float | None = None
    rescored_rows: int = 0  # rows served by another version, re-predicted with the champion
    # model quality on labelled rows
    quality: dict[str, Any] | None = None
    # sampling
    rows_checked: int = 0
    sampled: bool = False
    sample_seed: int | None = None
    sampling_error: dict[str, float | None] = field(default_factory=dict)
    borderline: list[str] = field(default_factory=list)
    decision_stable: bool | None = None
    reference_rows: int | None = None
    holdout_rows: int | None = None
    # where it went
    html_path: str | None = None
    json_path: str | None = None
    mlflow_run_id: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def drift(self) -> bool:
        return self.status == DRIFT

    @property
    def quality_degraded(self) -> bool:
        return bool(self.quality and self.quality.get("degraded"))

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["window_start"] = self.window_start.isoformat()
        out["window_end"] = self.window_end.isoformat()
        return json_safe(out)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DriftCheck:
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        for key in ("window_start", "window_end"):
            values[key] = as_utc(values[key])
        return cls(**values)

    def metrics(self) -> dict[str, float]:
        """The numbers logged to MLflow for this check (finite values only)."""
        out: dict[str, float] = {
            "rows": self.rows,
            "rows_checked": self.rows_checked,
            "sampled": float(self.sampled),
            "drift_detected": float(self.status == DRIFT),
            "insufficient_data": float(self.status == INSUFFICIENT_DATA),
        }
        if self.drifted_share is not None:
            out["drifted_share"] = self.drifted_share
            out["drifted_columns"] = len(self.drifted_columns)
        out.update({f"drift.{name}": score for name, score in self.feature_scores.items()})
        if self.prediction_drift is not None:
            out["prediction_drift"] = self.prediction_drift
            out["prediction_drifted"] = float(bool(self.prediction_drifted))
        if self.quality:
            out["quality.labelled_rows"] = self.quality.get("labelled_rows", 0)
            out.update({f"quality.{k}": v for k, v in (self.quality.get("metrics") or {}).items()})
            if self.quality.get("drop") is not None:
                out["quality.drop"] = self.quality["drop"]
        return {k: float(v) for k, v in out.items() if v is not None and math.isfinite(float(v))}


def json_safe(value: Any) -> Any:
    """``value`` with dates and paths as strings, numpy scalars as Python numbers and NaN as None."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
