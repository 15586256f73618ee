"""Airloop's main job on the embedded default: ``make demo`` (or ``python -m airloop.demo``).

The whole closed loop, for real, on one machine with no Docker: Airflow's own components
(api-server, scheduler, dag-processor, triggerer; SQLite, LocalExecutor) and the BentoML
prediction service run as local processes; the demo drives them from outside, as a user's
script would, through Airflow's REST API and the service's HTTP API.

1. land daily batches (one arrives with a defect) and let the daily ingest run gate them;
2. features follow on the validated-data Asset; the first training run registers a champion;
3. packaging follows on the champion Asset and the service starts answering with it;
4. clean traffic is served and labelled; a drift check finds nothing;
5. drifted days land, drifted traffic is served; two drift checks in a row find real drift,
   the policy triggers training, the new model wins the gate and the service swaps to it.

It runs any model whose directory holds the example's data module, ``<model>/datagen.py``
(``--model``; default: the first such model by name), reached with
:func:`airloop.spec.example_data`, with:

- ``DEFAULT_SEED`` and ``Drift(start: date, strength: float)``;
- ``write_day(landing_dir, day, *, seed, drift, defect: bool, size) -> list[Path]``: the day's
  files of every daily table under ``landing_dir/<table>/`` (``defect``: one the gate stops);
- optionally ``write_references(landing_dir, day, *, seed) -> list[Path]``: tables that land once;
- ``live_requests(day, n, *, seed, drift, stream) -> list[dict]``: request fields plus the
  label under the spec's target.

The human summary is printed; the same facts go to ``$AIRLOOP_HOME/demo-summary.json``.

``--model`` repeats: the named models' loops run side by side in ONE Airflow stack, each with its
own prediction service and in a thread of its own (:class:`Session`); the summary then holds each
model's under ``"models"`` (a single model's keys stay at the top level too).

SIGINT (Ctrl-C) or SIGTERM stops the demo at any point, in the foreground or as a background
job: the prediction service and every Airflow process it started are stopped, and it exits
with 130 (SIGINT) or 143 (SIGTERM).

The rooms: ``signals`` (stop signals turned into one orderly shutdown), ``loop`` (one model's
loop, :class:`Demo`), ``session`` (the Airflow stack, a service per model and the loops,
:class:`Session`), ``summary`` (the facts read back and the printed summary), ``cli`` (the
command line, :func:`main`) and ``__main__`` (``python -m airloop.demo``).
"""

from __future__ import annotations

# Where each public name lives. They are imported on first use: ``python -m airloop.demo``
# imports this package before its ``__main__`` can install the early stop handlers, so this
# module must not import the heavy rooms (the notifiers alone take seconds).
_HOMES = {
    "Cancelled": "signals",
    "Demo": "loop",
    "Session": "session",
    "StopSignals": "signals",
    "Stopped": "signals",
    "asset_event_facts": "summary",
    "collect_facts": "summary",
    "main": "cli",
    "print_summary": "summary",
    "serve_port": "session",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    """A public name, imported from its room on first use."""
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
