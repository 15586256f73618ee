"""Airflow's own components as native processes, driven over the REST API v2."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

from airloop.settings import REPO_ROOT
from airloop.testing.airflow_rest import AirflowREST
from airloop.testing.processes import deferred_signals, free_port, process_descendants, terminate_groups

__all__ = ["AirflowStack"]


class AirflowStack(AirflowREST):
    """Airflow's own components as native processes sharing one config and one metadata DB,
    and an admin's session with their REST API (:class:`AirflowREST`).

    ``executor="LocalExecutor"`` on SQLite is the embedded default; pass ``env`` with a
    Postgres ``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN`` and ``executor="CeleryExecutor"`` (plus
    broker/result-backend settings) to rehearse the compose stack.
    """

    def __init__(
        self,
        home: Path,
        *,
        executor: str = "LocalExecutor",
        env: dict[str, str] | None = None,
        port: int | None = None,
        components: tuple[str, ...] = ("api-server", "scheduler", "dag-processor", "triggerer"),
    ):
        self.home = Path(home)
        self.port = port or free_port()
        super().__init__(f"http://127.0.0.1:{self.port}", "admin", secrets.token_urlsafe(12))
        self.components = list(components) + (["celery worker"] if executor == "CeleryExecutor" else [])
        self.procs: dict[str, subprocess.Popen] = {}
        self.env = {
            **os.environ,
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__EXECUTOR": executor,
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home / 'airflow.db'}",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.home / "passwords.json"),
            # Every component must share these or task tokens fail signature checks.
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
            **(env or {}),
        }

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, timeout: float = 300) -> "AirflowStack":
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "passwords.json").write_text(json.dumps({"admin": self.password}))
        airflow = str(Path(sys.executable).parent / "airflow")
        subprocess.run([airflow, "db", "migrate"], env=self.env, check=True, capture_output=True)
        try:
            for name in self.components:
                self._spawn(name)
            self.wait_healthy(timeout)
        except BaseException:
            # `with` never calls __exit__ when __enter__ raises: stop what was started here.
            self.stop()
            raise
        return self

    def _spawn(self, name: str) -> None:
        # Each component in a session of its own: a Ctrl-C meant for the caller does not reach
        # it, so stop() is what ends it. Spawned and recorded with signals held, so that
        # nothing is started that stop() would not know about.
        airflow = str(Path(sys.executable).parent / "airflow")
        with deferred_signals(), open(self.home / f"{name.replace(' ', '-')}.log", "ab") as log:
            self.procs[name] = subprocess.Popen(
                [airflow, *name.split()], env=self.env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def exited(self) -> dict[str, int]:
        """The components that have exited, with their exit codes."""
        return {name: proc.returncode for name, proc in self.procs.items() if proc.poll() is not None}

    def restart_exited(self) -> dict[str, int]:
        """Start every exited component again, as a supervisor does (compose's
        ``restart: always``, Kubernetes restarting a pod's container). Returns the exit codes of
        the components it restarted (their logs go on in the same files)."""
        exited = self.exited()
        for name in exited:
            self._spawn(name)
        return exited

    def stop(self, timeout: float = 30) -> None:
        """Stop every component: SIGTERM, wait, then SIGKILL whatever is left, grandchildren too.

        Descendants are recorded before any signal is sent. Airflow's task processes (and what
        they start) live in process groups of their own, which a component's ``killpg`` does not
        reach, and the LocalExecutor's shutdown waits for running tasks to finish: they get their
        SIGTERM directly. The api-server goes last, because tasks that are stopping still report
        their state to its execution API. Within ``timeout`` seconds in all, then SIGKILL.
        """
        running = {name: proc for name, proc in self.procs.items() if proc.poll() is None}
        family = {name: process_descendants([proc]) for name, proc in running.items()}  # before any signal
        deadline = time.monotonic() + timeout
        first = [name for name in running if name != "api-server"]
        last = [name for name in running if name == "api-server"]
        for names, until in ((first, deadline - timeout / 3 if last else deadline), (last, deadline)):
            terminate_groups([running[n] for n in names], [d for n in names for d in family[n]], until)
        self.procs.clear()

    def __enter__(self) -> "AirflowStack":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def logs(self, name: str) -> str:
        path = self.home / f"{name.replace(' ', '-')}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_healthy(self, timeout: float) -> None:
        import requests

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"airflow {name} exited ({proc.returncode}):\n{self.logs(name)[-3000:]}")
            try:
                health = requests.get(f"{self.url}/api/v2/monitor/health", timeout=2).json()
                if health.get("scheduler", {}).get("status") == "healthy":
                    return
            except (requests.RequestException, ValueError):
                pass
            time.sleep(1)
        raise TimeoutError(f"Airflow not healthy after {timeout}s:\n{self.logs('api-server')[-3000:]}")
