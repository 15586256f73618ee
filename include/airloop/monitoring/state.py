"""The retrain policy's records: the durable history in ``reports_dir/<model>/policy.json``.

The policy itself is pure and lives in :func:`airloop.decisions.decide`; this module keeps its
inputs and outputs. Every read and write of the state goes through a ``flock`` on
``policy.lock``, and :func:`decide_and_record` decides and records the check (and any trigger)
in one critical section, so concurrent checks of a model cannot both trigger.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airloop.decisions import Decision, History, decide
from airloop.fileio import write_atomic
from airloop.monitoring.reports import model_dir
from airloop.monitoring.results import DriftCheck
from airloop.monitoring.timeseries import tag_decision
from airloop.settings import Settings

if TYPE_CHECKING:
    from airloop.spec import ModelSpec

__all__ = [
    "LOCK_FILE",
    "MAX_HISTORY",
    "STATE_FILE",
    "decide_and_record",
    "forget_trigger",
    "load_history",
    "record_check",
    "record_trigger",
]

log = logging.getLogger(__name__)

STATE_FILE = "policy.json"
LOCK_FILE = "policy.lock"
MAX_HISTORY = 2000  # checks kept in the policy file (triggers are all kept)


def load_history(spec: ModelSpec, settings: Settings | None = None) -> History:
    """The model's recorded checks and triggers (read under a shared lock)."""
    with _locked(spec, settings, write=False) as state:
        return _history(spec, state, settings)


def record_check(
    spec: ModelSpec, check: DriftCheck, *, decision: Decision | None = None, settings: Settings | None = None
) -> History:
    """Add (or replace, by report id) a check in the policy history."""
    with _locked(spec, settings, write=True) as state:
        _put_check(state, check, decision)
        return _history(spec, state, settings)


def record_trigger(
    spec: ModelSpec, decision: Decision, check: DriftCheck, *, settings: Settings | None = None
) -> History:
    """Record that ``decision`` triggered a retrain (starts the cooldown, uses up the streak)."""
    with _locked(spec, settings, write=True) as state:
        _put_check(state, check, decision)
        _put_trigger(state, decision, check)
        return _history(spec, state, settings)


def forget_trigger(spec: ModelSpec, report_id: str, *, settings: Settings | None = None) -> bool:
    """Undo a recorded trigger whose retrain could not be started (so the next check may retry)."""
    with _locked(spec, settings, write=True) as state:
        before = len(state["triggers"])
        state["triggers"] = [t for t in state["triggers"] if t["report_id"] != report_id]
        return len(state["triggers"]) < before


def decide_and_record(
    spec: ModelSpec,
    check: DriftCheck,
    *,
    training_active: bool,
    now: dt.datetime | str | None = None,
    settings: Settings | None = None,
) -> Decision:
    """:func:`~airloop.decisions.decide`, then record the check (and the trigger, if any) in one locked step.

    This is what a DAG should call: two checks running at the same time cannot both trigger.
    The decision is also set as tags on the check's MLflow run (best effort).
    """
    with _locked(spec, settings, write=True) as state:
        decision = decide(spec, check, _history(spec, state, settings), now=now, training_active=training_active)
        _put_check(state, check, decision)
        if decision.trigger:
            _put_trigger(state, decision, check)
    tag_decision(check, decision, settings)
    log.info("%s %s: %s", spec.name, check.report_id, decision.reason)
    return decision


def _state_path(spec: ModelSpec, settings: Settings | None) -> Path:
    return model_dir(spec, settings) / STATE_FILE


@contextlib.contextmanager
def _locked(spec: ModelSpec, settings: Settings | None, *, write: bool) -> Iterator[dict]:
    """The policy state under an exclusive (write) or shared (read) ``flock``.

    The lock is on a separate file so the state can be replaced atomically; it serializes
    checks of one model across threads and processes on one host (or on a shared file
    system that supports ``flock``).
    """
    import fcntl

    path = _state_path(spec, settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(LOCK_FILE), "a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX if write else fcntl.LOCK_SH)
        try:
            state = json.loads(path.read_text()) if path.exists() else {}
            state.setdefault("model", spec.name)
            state.setdefault("checks", [])
            state.setdefault("triggers", [])
            yield state
            if write:
                state["checks"] = state["checks"][-MAX_HISTORY:]
                write_atomic(path, json.dumps(state, indent=1, default=str))
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def _history(spec, state: dict, settings) -> History:
    return History(spec.name, list(state["checks"]), list(state["triggers"]), _state_path(spec, settings))


def _summary(check: DriftCheck) -> dict[str, Any]:
    return {
        "report_id": check.report_id,
        "status": check.status,
        "window_start": check.window_start.isoformat(),
        "window_end": check.window_end.isoformat(),
        "rows": check.rows,
        "champion_version": check.champion_version,
        "drifted_share": check.drifted_share,
        "prediction_drift": check.prediction_drift,
        "prediction_drifted": check.prediction_drifted,
        "quality_degraded": check.quality_degraded,
        "signals": list(check.signals),
        "mlflow_run_id": check.mlflow_run_id,
    }


def _put_check(state: dict, check: DriftCheck, decision: Decision | None) -> None:
    entry = _summary(check)
    if decision is not None:
        entry["decision"] = {"trigger": decision.trigger, "reason": decision.reason, "at": decision.decided_at.isoformat()}
    state["checks"] = [c for c in state["checks"] if c["report_id"] != check.report_id] + [entry]


def _put_trigger(state: dict, decision: Decision, check: DriftCheck) -> None:
    entry = {
        "at": decision.decided_at.isoformat(),
        "report_id": decision.report_id,
        "window_start": check.window_start.isoformat(),
        "window_end": check.window_end.isoformat(),
        "champion_version": decision.champion_version,
        "reason": decision.reason,
    }
    state["triggers"] = [t for t in state["triggers"] if t["report_id"] != decision.report_id] + [entry]
