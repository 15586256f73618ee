"""The report files of a drift check: ``reports_dir/<model>/<report_id>.html`` and ``.json``.

The HTML page is Evidently's (about 4 MB, kept on disk only); the JSON document holds the
check's numbers and Evidently's metric results. ``reports_dir/<model>`` (:func:`model_dir`) also
holds the reference cache and the policy state. Evidently is imported inside the functions.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from airloop.fileio import as_utc, write_atomic
from airloop.monitoring.results import DriftCheck, json_safe
from airloop.settings import Settings, get_settings

if TYPE_CHECKING:
    from airloop.spec import ModelSpec

__all__ = ["model_dir", "new_report_id", "write_json", "write_reports"]

log = logging.getLogger(__name__)


def model_dir(spec: ModelSpec, settings: Settings | None = None) -> Path:
    """``reports_dir/<model>``: reports, the reference cache and the policy state."""
    return (settings or get_settings()).reports_dir / spec.name


def new_report_id(spec: ModelSpec, window_end: dt.datetime) -> str:
    """``<model>-<window end, UTC>-<8 random hex digits>``: unique, and sorts by window end."""
    return f"{spec.name}-{as_utc(window_end):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def write_reports(spec: ModelSpec, check: DriftCheck, snapshots: dict, settings: Settings | None = None) -> None:
    """``<report_id>.json`` always; ``<report_id>.html`` when Evidently ran."""
    directory = model_dir(spec, settings)
    directory.mkdir(parents=True, exist_ok=True)
    json_path = directory / f"{check.report_id}.json"
    if snapshots:
        html_path = directory / f"{check.report_id}.html"
        write_atomic(html_path, _html(check, snapshots))
        check.html_path = str(html_path)
    check.json_path = str(json_path)
    write_json(json_path, check, snapshots)


def write_json(path: Path, check: DriftCheck, snapshots: dict) -> None:
    """(Re)write the JSON report: the check and Evidently's results per snapshot."""
    document = {
        "report_id": check.report_id,
        "model": check.model,
        "check": check.as_dict(),
        "evidently": {name: json_safe(snapshot.dict()) for name, snapshot in snapshots.items()},
    }
    write_atomic(path, json.dumps(document, indent=1, default=str))


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _html(check: DriftCheck, snapshots: dict) -> str:
    """One page: a summary, then Evidently's data drift and prediction drift widgets.

    Evidently 0.7 renders one snapshot per page; the two snapshots' widgets are put on one page
    with its own renderer. If that internal layout changes, the data drift page alone is kept.
    """
    try:
        from evidently.core.metric_types import metric_tests_widget, render_widgets
        from evidently.core.report import metric_tests_stats
        from evidently.legacy.renderers.html_widgets import (
            CounterData,
            counter,
            group_widget,
        )

        summary = [
            CounterData("status", check.status),
            CounterData("rows", f"{check.rows_checked} of {check.rows}" + (" (sampled)" if check.sampled else "")),
            CounterData("drifted share", f"{_fmt(check.drifted_share, 2)} (>= {check.drift_share_threshold} is drift)"),
            CounterData("prediction drift", f"{_fmt(check.prediction_drift)} ({check.prediction_method})"),
            CounterData("champion", f"v{check.champion_version}"),
        ]
        if check.quality and check.quality.get("value") is not None:
            q = check.quality
            summary.append(
                CounterData(q["metric"], f"{q['value']:.3f} vs {_fmt(q['champion_value'])} on {q['labelled_rows']} labels")
            )
        widgets = [counter(counters=summary, title=f"{check.report_id}: {check.message}")]
        tests = []
        for name, title in (("data_drift", "Data drift: model inputs vs. the training set"),
                            ("prediction_drift", "Prediction drift: served predictions vs. the champion on its holdout")):
            if name in snapshots:
                widgets.append(group_widget(title=title, widgets=list(snapshots[name]._widgets)))
                tests.extend(snapshots[name].tests_results)
        if tests:
            widgets += [metric_tests_stats(tests), metric_tests_widget(tests)]
        return render_widgets(widgets)
    except Exception as exc:  # noqa: BLE001 - fall back to Evidently's own page
        log.warning("combined drift report page failed (%s: %s); writing the data drift page only", type(exc).__name__, exc)
        snapshot = snapshots.get("data_drift") or next(iter(snapshots.values()))
        return snapshot.get_html_str(as_iframe=False)
