"""One demo process runs both example models' loops side by side in ONE Airflow stack.

``test_closed_loop`` (late_delivery), ``test_second_model_loop`` (trip_duration) and
``test_models_side_by_side`` all read this session's single run: each model's own summary
(``summary["models"][name]``), the shared AIRLOOP_HOME, and the run's combined facts.
"""

from __future__ import annotations

import pytest

CLEAN_DAYS, DRIFT_DAYS = 14, 5
MODELS = ("late_delivery", "trip_duration")
# Requests per traffic wave: the demo's default for late_delivery, 500 for trip_duration.
TRAFFIC = {"late_delivery": 800, "trip_duration": 500}


@pytest.fixture(scope="session")
def both_loops(tmp_path_factory):
    """``(home, proc, summary)`` of ``python -m airloop.demo --model late_delivery --model trip_duration``."""
    import time

    from airloop.testing import run_demo

    home = tmp_path_factory.mktemp("loops") / "airloop"
    args = [a for m in MODELS for a in ("--model", m)]
    args += ["--clean-days", str(CLEAN_DAYS), "--drift-days", str(DRIFT_DAYS), "--traffic", str(TRAFFIC["late_delivery"]),
             "--traffic-of", f"trip_duration={TRAFFIC['trip_duration']}"]
    started = time.monotonic()
    proc, summary = run_demo(home, args, timeout=3600)
    print(proc.stdout[-6000:])
    print(f"both loops in one Airflow: {time.monotonic() - started:.0f} s wall")
    for name in MODELS:
        print(f"{name} stage seconds: {summary['models'].get(name, {}).get('stage_seconds')}")
    return home, proc, summary
