"""Run Airloop DAGs for real from tests, scripts and the demo.

- ``run_dag``: one DAG run in this process with ``dag.test()`` on a migrated metadata DB.
- ``BentoServer``: the prediction service started with ``bentoml serve`` as a subprocess.
- ``AirflowStack``: a real api-server, scheduler, dag-processor and triggerer (and optionally a
  Celery worker) as subprocesses, driven over the REST API v2 with a JWT, for cross-DAG flows
  (Asset schedules, TriggerDagRunOperator) that ``dag.test()`` cannot run.
- ``RedisServer``, ``PostgresServer``: private servers on free ports in a directory of their
  own, for fault tests that stop and restart them (never the machine's shared ones).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from airloop.settings import REPO_ROOT

if TYPE_CHECKING:
    from airloop.settings import Settings

_MIGRATED: set[str] = set()


def migrate_db() -> None:
    """Create/upgrade the metadata DB named by the current Airflow config (once per process)."""
    from airflow.configuration import conf

    url = conf.get("database", "sql_alchemy_conn")
    if url in _MIGRATED:
        return
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    from airflow.utils.db import initdb

    initdb()
    _MIGRATED.add(url)


def load_dag(dag_id: str, dags_folder: Path | None = None):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(dags_folder or REPO_ROOT / "dags"), safe_mode=False)
    if bag.import_errors:
        raise RuntimeError(f"DAG import errors: {bag.import_errors}")
    if dag_id not in bag.dags:
        raise KeyError(f"no DAG {dag_id!r}; have {sorted(bag.dag_ids)}")
    return bag.dags[dag_id]


@dataclass
class DagRunResult:
    dag_id: str
    run_id: str
    state: str
    tasks: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.state == "success"


def run_dag(dag_id: str, conf: dict | None = None) -> DagRunResult:
    """Run one DAG run in-process with ``dag.test()`` and report every task's final state."""
    migrate_db()
    dag = load_dag(dag_id)
    dag_run = dag.test(run_conf=conf or {})
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = (
            session.query(TaskInstance.task_id, TaskInstance.map_index, TaskInstance.state)
            .filter(TaskInstance.dag_id == dag_id, TaskInstance.run_id == dag_run.run_id)
            .all()
        )
    tasks = {
        (task_id if map_index < 0 else f"{task_id}[{map_index}]"): str(state) for task_id, map_index, state in rows
    }
    return DagRunResult(dag_id=dag_id, run_id=dag_run.run_id, state=str(dag_run.state), tasks=tasks)


def run_demo(home: Path, args: list[str] = (), *, quiet: bool = False, timeout: float | None = None):
    """``python -m airloop.demo`` in its own AIRLOOP_HOME, with none of this process's Airloop,
    Airflow or MLflow settings. Returns the finished process and the demo's summary."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRLOOP_", "AIRFLOW_", "AIRFLOW__", "MLFLOW_"))}
    env["AIRLOOP_HOME"] = str(home)
    proc = subprocess.run(
        [sys.executable, "-m", "airloop.demo", *args], env=env, text=True, timeout=timeout,
        stdout=subprocess.DEVNULL if quiet else subprocess.PIPE, stderr=None if quiet else subprocess.PIPE,
    )
    return proc, json.loads((Path(home) / "demo-summary.json").read_text())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def deferred_signals(signums: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)):
    """Hold SIGINT/SIGTERM while a process is spawned and recorded; deliver them afterwards.

    A Python signal handler that raises (KeyboardInterrupt, the demo's stop) can fire between
    ``Popen`` starting a child and the caller keeping its handle; that child would then be
    started but unknown to the cleanup. Inside this block such signals are only noted, and
    raised again, to whatever handler was there, when it ends. No-op outside the main thread.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {}
    for sig in signums:
        if signal.getsignal(sig) is not None:  # None: a handler not installed from Python
            previous[sig] = signal.signal(sig, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sig in dict.fromkeys(caught):
            signal.raise_signal(sig)


class AirflowStack:
    """Airflow's own components as native processes sharing one config and one metadata DB.

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
        self.url = f"http://127.0.0.1:{self.port}"
        self.password = secrets.token_urlsafe(12)
        self.components = list(components) + (["celery worker"] if executor == "CeleryExecutor" else [])
        self.procs: dict[str, subprocess.Popen] = {}
        self._token: str | None = None
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
    def start(self, timeout: float = 120) -> "AirflowStack":
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "passwords.json").write_text(json.dumps({"admin": self.password}))
        airflow = str(Path(sys.executable).parent / "airflow")
        subprocess.run([airflow, "db", "migrate"], env=self.env, check=True, capture_output=True)
        for name in self.components:
            self._spawn(name)
        self.wait_healthy(timeout)
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
        family = {name: _descendants([proc]) for name, proc in running.items()}  # before any signal
        deadline = time.monotonic() + timeout
        first = [name for name in running if name != "api-server"]
        last = [name for name in running if name == "api-server"]
        for names, until in ((first, deadline - timeout / 3 if last else deadline), (last, deadline)):
            _terminate([running[n] for n in names], [d for n in names for d in family[n]], until)
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

    # -- REST API v2 -----------------------------------------------------------------------
    def token(self) -> str:
        import requests

        if self._token is None:
            resp = requests.post(
                f"{self.url}/auth/token", json={"username": "admin", "password": self.password}, timeout=10
            )
            resp.raise_for_status()
            self._token = resp.json()["access_token"]
        return self._token

    def api(self, method: str, path: str, **kwargs):
        import requests

        resp = requests.request(
            method, f"{self.url}/api/v2{path}", headers={"Authorization": f"Bearer {self.token()}"},
            timeout=30, **kwargs,
        )
        resp.raise_for_status()
        return resp.json() if resp.content else None

    def wait_for_dag(self, dag_id: str, timeout: float = 120) -> None:
        import requests

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.api("GET", f"/dags/{dag_id}")
                return
            except requests.HTTPError:
                time.sleep(1)
        raise TimeoutError(f"DAG {dag_id} not parsed after {timeout}s")

    def unpause(self, dag_id: str) -> None:
        self.wait_for_dag(dag_id)
        self.api("PATCH", f"/dags/{dag_id}", json={"is_paused": False})

    def trigger(self, dag_id: str, conf: dict | None = None) -> str:
        run = self.api("POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf or {}})
        return run["dag_run_id"]

    def runs(self, dag_id: str) -> list[dict]:
        return self.api("GET", f"/dags/{dag_id}/dagRuns", params={"order_by": "run_after"})["dag_runs"]

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 300, *, sleep=time.sleep) -> dict:
        """Poll until the run ends; ``sleep`` waits between polls (a caller's may raise to give up)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}")
            if run["state"] in ("success", "failed"):
                return run
            sleep(1)
        raise TimeoutError(f"{dag_id}/{run_id} not finished after {timeout}s")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        return self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]


def _descendants(procs) -> list:
    """psutil handles on every descendant of these processes (pid reuse safe), taken now."""
    import psutil

    found = []
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            found += psutil.Process(proc.pid).children(recursive=True)
    return found


def _killpg(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def _terminate(procs: list[subprocess.Popen], descendants: list, until: float) -> None:
    """SIGTERM these session leaders' groups and the groups their descendants lead; wait until
    ``until``; then SIGKILL the groups and every recorded descendant that is still there."""
    import psutil

    def signal_all(sig: int, members) -> None:
        for proc in procs:
            # SIGKILL goes to the group even when its leader (running when stop() began) has just
            # exited: members left in the group keep its id in use, so no other process has it.
            if proc.poll() is None or sig == signal.SIGKILL:
                _killpg(proc.pid, sig)
        for child in members:
            with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError, PermissionError):
                if sig == signal.SIGKILL:
                    child.kill()
                if child.is_running() and os.getpgid(child.pid) == child.pid:
                    os.killpg(child.pid, sig)  # a group of its own (a task), with what it started

    signal_all(signal.SIGTERM, descendants)
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(max(0.1, until - time.monotonic()))
    _, alive = psutil.wait_procs(descendants, timeout=max(0.1, until - time.monotonic()))
    left = [proc for proc in procs if proc.poll() is None]
    if left or alive:
        alive = list({*alive, *_descendants(left)})  # and whatever the stragglers started since
        signal_all(signal.SIGKILL, alive)
        for proc in left:
            proc.wait()
        psutil.wait_procs(alive, timeout=10)


class BentoServer:
    """``bentoml serve`` as a subprocess on a free port, with the settings of an AIRLOOP_HOME."""

    SERVICE = "airloop.bento_service:PredictionService"

    def __init__(self, settings: "Settings", log_path: Path, *, port: int | None = None, **env: str | None):
        """``env`` overrides the server's environment; a None value removes the variable."""
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("AIRLOOP_")},
            **settings.as_env(),
            "BENTOML_HOME": str(settings.bentoml_home),
            "BENTOML_DO_NOT_TRACK": "true",
            "OMP_NUM_THREADS": "1",
            # A worker that cannot start ends the server instead of being respawned forever.
            "BENTOML_CONTAINERIZED": "true",
            "AIRLOOP_SERVE_FEEDBACK_TOKEN": secrets.token_urlsafe(24),
            **env,
        }
        self.env = {k: v for k, v in self.env.items() if v is not None}
        self.feedback_token = self.env.get("AIRLOOP_SERVE_FEEDBACK_TOKEN")
        self.proc: subprocess.Popen | None = None

    def start(self) -> "BentoServer":
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bentoml", "serve", self.SERVICE, "--port", str(self.port), "--host", "127.0.0.1"],
            cwd=REPO_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        return self

    def wait_ready(self, timeout: float = 150, path: str = "/readyz", *, sleep=time.sleep) -> "BentoServer":
        """Wait for ``/readyz`` (a champion is loaded) or ``/livez`` (the process is up); ``sleep``
        waits between probes (a caller's may raise to give up)."""
        import requests

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bentoml serve exited ({self.proc.returncode}):\n{self.logs()[-4000:]}")
            try:
                if requests.get(f"{self.url}{path}", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            sleep(0.5)
        raise TimeoutError(f"server not ready after {timeout}s:\n{self.logs()[-4000:]}")

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, as a supervisor would send it; SIGKILL the server and its workers if it hangs.

        Workers run in process groups of their own, so they are found as children first.
        """
        import psutil

        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            try:
                workers = psutil.Process(self.proc.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                workers = []
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            # A worker still alive once its server is gone (a hung shutdown) is killed too.
            _, alive = psutil.wait_procs(workers, timeout=timeout)
            for worker in alive:
                with contextlib.suppress(psutil.NoSuchProcess):
                    worker.kill()
            psutil.wait_procs(alive, timeout=10)
        return self.proc.returncode

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class RedisServer:
    """A private ``redis-server`` on a free port, without persistence (``--save ""``, no AOF).

    ``stop()`` and ``start()`` again restart the same instance on the same port: it comes back
    empty, as a cache without persistence does.
    """

    def __init__(self, directory: Path, *, port: int | None = None):
        self.directory = Path(directory)
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def connection_string(self) -> str:
        """Feast's form (``AIRLOOP_FEAST_REDIS``)."""
        return f"127.0.0.1:{self.port}"

    def client(self, **kwargs):
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, **kwargs)

    def start(self, timeout: float = 20) -> "RedisServer":
        import redis

        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / "redis.log", "ab") as log:
            self.proc = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(self.directory), "--daemonize", "no"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        with self.client(socket_timeout=1, retry=None) as client:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited ({self.proc.returncode}): {self.logs()[-2000:]}")
                try:
                    client.ping()
                    return self
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
        """Stop it with ``sig`` (SIGKILL: a crash) and wait until the process is gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def logs(self) -> str:
        path = self.directory / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class PostgresServer:
    """A private PostgreSQL cluster (Debian's binaries) on a free port, in a fresh directory.

    Trust authentication for ``postgres`` on 127.0.0.1. initdb refuses to run as root: as root
    the cluster belongs to the ``postgres`` user (the directory is made in the system's temp
    directory and handed to that user, as a root-owned test directory is not reachable for it).
    ``stop()`` / ``start()`` restart the same cluster on the same port.
    """

    BIN = Path("/usr/lib/postgresql")

    def __init__(self, *, port: int | None = None, bin_dir: Path | None = None):
        import tempfile

        self.port = port or free_port()
        self.bin_dir = bin_dir or max(self.BIN.glob("*/bin"), key=lambda p: int(p.parent.name))
        self.directory = Path(tempfile.mkdtemp(prefix="airloop-pg-"))
        self.data = self.directory / "data"
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            import shutil

            shutil.chown(self.directory, "postgres", "postgres")
            self._as_user = ["runuser", "-u", "postgres", "--"]

    def url(self, database: str = "postgres", driver: str = "postgresql") -> str:
        return f"{driver}://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, timeout: float = 120) -> None:
        subprocess.run([*self._as_user, *args], check=True, capture_output=True, timeout=timeout)

    def start(self, timeout: float = 60) -> "PostgresServer":
        if not self.data.exists():
            self._run(str(self.bin_dir / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
                      "-E", "UTF8", "--no-sync")
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-l", str(self.directory / "postgres.log"),
                  "-o", options, "-w", "-t", str(int(timeout)), "start", timeout=timeout + 10)
        return self

    def stop(self, mode: str = "fast", timeout: float = 60) -> None:
        """``pg_ctl stop -m fast`` (every session is ended) or ``immediate`` (a crash)."""
        if (self.data / "postmaster.pid").exists():
            self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", str(int(timeout)),
                      "stop", timeout=timeout + 10)

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def logs(self) -> str:
        path = self.directory / "postgres.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def cleanup(self) -> None:
        import shutil

        self.stop(mode="immediate")
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> "PostgresServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()
