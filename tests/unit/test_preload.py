"""Which Airflow processes preload the tasks' libraries (airloop.preload)."""

from __future__ import annotations

import pytest

from airloop.preload import forks_tasks, preload, preload_for


@pytest.mark.parametrize(
    ("argv", "executor", "forks"),
    [
        (["airflow", "scheduler"], "LocalExecutor", True),
        (["/venv/bin/airflow", "scheduler", "--skip-serve-logs"], "LocalExecutor", True),
        (["airflow", "scheduler"], "CeleryExecutor", False),  # the Celery worker runs the tasks
        (["airflow", "celery", "worker"], "CeleryExecutor", True),
        (["airflow", "celery", "flower"], "CeleryExecutor", False),
        (["airflow", "dag-processor"], "LocalExecutor", False),  # parsing stays light
        (["airflow", "api-server"], "LocalExecutor", False),
        (["airflow", "tasks", "test", "x", "y"], "LocalExecutor", False),
        (["airflow"], "LocalExecutor", False),
    ],
)
def test_only_processes_that_fork_tasks_preload(argv, executor, forks):
    assert forks_tasks(argv, executor) is forks


def test_preload_can_be_switched_off(monkeypatch):
    from airloop.settings import get_settings

    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "LocalExecutor")
    assert preload_for(["airflow", "dag-processor"]) is None
    monkeypatch.setenv("AIRLOOP_PRELOAD", "false")
    assert get_settings().preload is False
    assert preload_for(["airflow", "scheduler"]) is None
    monkeypatch.setenv("AIRLOOP_PRELOAD", "maybe")
    with pytest.raises(ValueError, match="AIRLOOP_PRELOAD must be true or false"):
        get_settings()


def test_a_library_that_fails_to_import_is_skipped_not_fatal(caplog):
    seconds = preload(("json", "airloop_no_such_library"))
    assert list(seconds) == ["json"]
    assert "airloop_no_such_library did not import" in caplog.text


def test_preloaded_libraries_leave_the_process_streams_alone():
    """A task forked after the preload gets its own stdout/stderr from Airflow: no preloaded
    library may have replaced the streams or pointed a log handler at them, or its messages
    would go to the parent's streams instead of the task log (DVC does both: not preloaded)."""
    import subprocess
    import sys

    probe = (
        "import logging, sys\n"
        "streams = (sys.stdout, sys.stderr)\n"
        "from airloop.preload import preload\n"
        "loaded = preload()\n"
        "assert (sys.stdout, sys.stderr) == streams, 'a library replaced sys.stdout/sys.stderr'\n"
        "loggers = [logging.getLogger()] + [l for l in logging.Logger.manager.loggerDict.values() if isinstance(l, logging.Logger)]\n"
        # A handler whose stream is a property (logging's _StderrHandler) looks sys.stderr up
        # when it writes: it follows the task's own stream.
        "bound = [(l.name, type(h).__name__) for l in loggers for h in l.handlers\n"
        "         if not isinstance(getattr(type(h), 'stream', None), property)\n"
        "         and (getattr(h, 'stream', None) in streams or getattr(getattr(h, 'stream', None), 'wrapped', None) in streams)]\n"
        "assert not bound, bound\n"
        "print(len(loaded))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    from airloop.preload import TASK_LIBRARIES

    assert done.stdout.strip().splitlines()[-1] == str(len(TASK_LIBRARIES))
