"""Heavy libraries imported once by the Airflow process that forks the task processes.

Airflow's LocalExecutor forks its workers from the scheduler, the Celery worker forks its pool
from its main process, and each task process is forked from those. A library imported before
the fork is already loaded in every task, so a task no longer pays seconds of imports
(pandas, Great Expectations, scikit-learn, MLflow, Feast) before its first line of work.
``airflow_local_settings`` (Airflow's own start-up hook, in ``include/``) calls
:func:`preload_for` in every Airflow process; only the forking ones import anything.

``AIRLOOP_PRELOAD=false`` (read in :mod:`airloop.settings`) switches it off. DAG files still
import nothing heavy: parsing happens in the dag-processor, which preloads nothing.
"""

from __future__ import annotations

import importlib
import logging
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airloop.settings import Settings

__all__ = ["TASK_LIBRARIES", "forks_tasks", "preload", "preload_for"]

log = logging.getLogger(__name__)

# What Airloop's tasks import, heaviest first. Left out: libraries that bind the process's
# stdout/stderr when imported (DVC runs colorama.init() and points its log handlers at them;
# Evidently's UI runner logs to stderr): a task forked from here would write their messages to
# the parent's streams (the scheduler's log, or a Celery proxy that fails in the child) instead
# of its own task log. tests/unit/test_preload.py checks that none of these does.
TASK_LIBRARIES = (
    "great_expectations",
    "mlflow",
    "feast",
    "sklearn.ensemble",
    "skops.io",
    "pyarrow.parquet",
    "pandas",
)


def forks_tasks(argv: Sequence[str], executor: str) -> bool:
    """Whether the Airflow process started as ``argv`` forks task processes from itself: the
    scheduler when it runs the LocalExecutor, and the Celery worker."""
    words = [a for a in argv[1:] if not a.startswith("-")]
    if words[:1] == ["scheduler"]:
        return "LocalExecutor" in executor
    return words[:2] == ["celery", "worker"]


def preload(modules: Sequence[str] = TASK_LIBRARIES) -> dict[str, float]:
    """Import ``modules``; return the seconds each took. A library that fails to import is
    logged and skipped: the task that needs it will raise the error itself."""
    seconds: dict[str, float] = {}
    for name in modules:
        started = time.perf_counter()
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - never stop Airflow from starting over a preload
            log.warning("airloop preload: %s did not import (%s: %s)", name, type(exc).__name__, exc)
            continue
        seconds[name] = time.perf_counter() - started
    return seconds


def preload_for(argv: Sequence[str], settings: "Settings | None" = None) -> dict[str, float] | None:
    """Preload :data:`TASK_LIBRARIES` if this process forks tasks and the ``preload`` setting
    (``AIRLOOP_PRELOAD``) is on; return the seconds per library, or None when nothing was loaded."""
    from airloop.settings import get_settings

    if not (settings or get_settings()).preload or not forks_tasks(argv, _executor()):
        return None
    started = time.perf_counter()
    seconds = preload()
    # Printed, not logged: Airflow configures logging only after its local settings are imported.
    print(f"airloop preload: {len(seconds)} libraries in {time.perf_counter() - started:.1f} s, "
          "before any task is forked", file=sys.stderr, flush=True)
    return seconds


def _executor() -> str:
    """The executor this Airflow process was configured with (Airflow's own configuration)."""
    from airflow.configuration import conf

    return conf.get("core", "executor", fallback="")
