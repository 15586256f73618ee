"""The prediction service, Redis and Postgres as private subprocesses on free ports."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from airloop.settings import REPO_ROOT
from airloop.testing.processes import free_port

if TYPE_CHECKING:
    from airloop.settings import Settings

__all__ = ["BentoServer", "PostgresServer", "RedisServer"]


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
        try:
            return self.start()
        except BaseException:  # `with` calls no __exit__ when __enter__ raises
            self.stop()
            raise

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
        try:
            return self.start()
        except BaseException:  # `with` calls no __exit__ when __enter__ raises
            self.cleanup()
            raise

    def __exit__(self, *exc) -> None:
        self.cleanup()
