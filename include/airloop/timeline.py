"""Where the closed loop's wall time goes: task work versus orchestration wait.

The loop runs from drift detected (the monitor's ``check_drift`` task ends) to the new model
serving (the package DAG's ``confirm_served`` task ends). Work is the time at least one task of
the chain is running; wait is the rest: scheduler loops, runs created from triggers and Asset
events, tasks queued for an executor slot. Inputs are task instances as Airflow's REST API v2
returns them (``task_id``, ``start_date``, ``end_date``), so this runs without Airflow.
"""

from __future__ import annotations

import datetime as dt
from typing import Iterable

DETECTED_TASK = "check_drift"
SERVED_TASK = "confirm_served"


def parse_time(value: str | dt.datetime) -> dt.datetime:
    """A datetime as given, or parsed from ISO 8601 (a trailing ``Z`` read as UTC)."""
    if isinstance(value, dt.datetime):
        return value
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def busy_seconds(intervals: Iterable[tuple[dt.datetime, dt.datetime]], start: dt.datetime, end: dt.datetime) -> float:
    """Length of the union of ``intervals`` clipped to [start, end], in seconds."""
    clipped = sorted((max(a, start), min(b, end)) for a, b in intervals if b > start and a < end)
    total, cursor = 0.0, start
    for a, b in clipped:
        a = max(a, cursor)
        if b > a:
            total += (b - a).total_seconds()
            cursor = b
    return total


def _intervals(task_instances: list[dict]) -> list[tuple[dt.datetime, dt.datetime]]:
    return [(parse_time(t["start_date"]), parse_time(t["end_date"])) for t in task_instances if t.get("start_date") and t.get("end_date")]


def _end_of(task_instances: list[dict], task_id: str) -> dt.datetime:
    for t in task_instances:
        if t["task_id"] == task_id and t.get("end_date"):
            return parse_time(t["end_date"])
    raise ValueError(f"no finished {task_id!r} task among {[t['task_id'] for t in task_instances]}")


def loop_timeline(monitor: list[dict], train: list[dict], package: list[dict]) -> dict:
    """Split the loop's wall time into task work and orchestration wait, per stage too."""
    start = _end_of(monitor, DETECTED_TASK)
    end = _end_of(package, SERVED_TASK)
    if end <= start:
        raise ValueError(f"the model was served ({end}) before drift was detected ({start})")
    stages = {"monitor": monitor, "train": train, "package": package}
    work = busy_seconds([i for tis in stages.values() for i in _intervals(tis)], start, end)
    wall = (end - start).total_seconds()
    return {
        "drift_detected_at": start.isoformat(),
        "served_at": end.isoformat(),
        "wall_seconds": round(wall, 2),
        "work_seconds": round(work, 2),
        "wait_seconds": round(wall - work, 2),
        "wait_share": round((wall - work) / wall, 4),
        "work_by_stage": {name: round(busy_seconds(_intervals(tis), start, end), 2) for name, tis in stages.items()},
        "tasks": [
            {"stage": name, "task_id": t["task_id"], "start": t["start_date"], "end": t["end_date"]}
            for name, tis in stages.items() for t in sorted(tis, key=lambda t: t.get("start_date") or "")
            if t.get("start_date") and t.get("end_date") and parse_time(t["end_date"]) > start
        ],
    }
