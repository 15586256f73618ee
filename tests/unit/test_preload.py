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
