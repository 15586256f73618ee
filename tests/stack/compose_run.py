"""``docker-compose up`` of docker-compose.yaml for real, on podman, where no Docker engine runs.

    make compose-test                          # = .venv/bin/python tests/stack/compose_run.py
    .venv/bin/python tests/stack/compose_run.py --cold      # empty caches first (a fresh machine)
    .venv/bin/python tests/stack/compose_run.py --keep      # leave the stack up; --down later
    .venv/bin/python tests/stack/compose_run.py --workers 2 # --scale airflow-worker=2
    .venv/bin/python tests/stack/compose_run.py --loop      # on to train, package, /predict

What it does, each step timed (printed, and written to compose-timings.json in the state dir):

 1. engine: ``podman system service`` on a socket of its own, with the settings of
    docker/podman/containers.conf and a store under AIRLOOP_PODMAN_STATE (/var/tmp/airloop-podman);
    Debian's ``docker-compose`` (1.29) drives it through DOCKER_HOST;
 2. base images: docker/local-base/build.sh (Debian bookworm rootfs, an Airflow base with the
    official image's contract, Postgres, Redis; cached by the hash of their inputs);
 3. the project image: the Dockerfile, built by podman on the local Airflow base (layer cache);
 4. .env: docker/new_env.py's fresh secrets, plus the local base images and free host ports;
 5. ``docker-compose up -d`` of the project's own compose file, while a loop runs each container's
    healthcheck (podman leaves their scheduling to systemd timers, absent here): every 5 s during
    the start period, then at the healthcheck's interval, as Docker 25+ does. Compose's
    ``service_healthy`` conditions wait on it;
 6. checks: every long-running service healthy, airflow-init exited 0, the api-server's health
    and version endpoints, anonymous and wrong-password requests refused, a JWT from
    /auth/token, the DAGs parsed (and the Asset-scheduled ones unpaused by airflow-init),
    MLflow's basic auth (anonymous and wrong-password REST and UI requests get 401, the login
    creates and deletes a registered model), the prediction services' /livez;
 7. a DAG run over REST: demo order batches landed by the worker, ``<model>__ingest`` unpaused
    and triggered with the JWT; every task must succeed on the Celery worker (its hostname), every
    batch be validated (Asset events), and the features DAG the Asset schedules succeed;
 8. ``docker-compose down -v``, then nothing of the project left: containers, volumes, network;
    the engine stops. Container logs are kept in the state dir (compose-logs/).

Nothing here runs in ``make test``: a cold run builds images for minutes. Heavy commands run
under ``nice`` (another test suite may share the machine). Exit status 0 only if every check passed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from airloop.testing import AirflowREST

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yaml"
STATE = Path(os.environ.get("AIRLOOP_PODMAN_STATE", "/var/tmp/airloop-podman"))
RUNROOT = Path(os.environ.get("AIRLOOP_PODMAN_RUNROOT", "/run/airloop-podman"))
BASE_CACHE = Path(os.environ.get("AIRLOOP_LOCAL_BASE_CACHE", "/var/tmp/airloop-local-base"))
CONTAINERS_CONF = REPO / "docker" / "podman" / "containers.conf"
PROJECT = os.environ.get("AIRLOOP_COMPOSE_PROJECT", "airloop-compose-test")
IMAGE = "localhost/airloop:compose-test"
NICE = ["nice", "-n", os.environ.get("AIRLOOP_NICE", "15")]
MODEL = "late_delivery"
DAYS = 3  # batches landed for the ingest check
LOOP_DAYS = 11  # --loop: 7 warm-up days (the spec), at least 1 training day, the 3-day holdout
# The one-shot service; every other service must turn healthy.
ONE_SHOT = {"airflow-init"}
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def log(msg: str) -> None:
    print(f"[compose-test {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Timer:
    def __init__(self):
        self.t0 = time.monotonic()
        self.steps: dict[str, float] = {}
        self._last = self.t0

    def mark(self, step: str) -> None:
        now = time.monotonic()
        self.steps[step] = round(now - self._last, 1)
        self._last = now
        log(f"{step}: {self.steps[step]} s")

    def report(self) -> dict:
        return {"steps_s": self.steps, "total_s": round(time.monotonic() - self.t0, 1)}


def engine_env() -> dict[str, str]:
    env = dict(os.environ)
    env["CONTAINERS_CONF"] = str(CONTAINERS_CONF)
    env["AIRLOOP_PODMAN_STATE"] = str(STATE)
    env["AIRLOOP_PODMAN_RUNROOT"] = str(RUNROOT)
    return env


PODMAN = ["podman", "--root", str(STATE / "storage"), "--runroot", str(RUNROOT)]


def podman(*args: str, check: bool = True, timeout: float | None = 600, nice: bool = False) -> subprocess.CompletedProcess:
    cmd = [*(NICE if nice else []), *PODMAN, *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=engine_env(), check=check, timeout=timeout)


class Engine:
    """``podman system service`` on a private socket, stopped by its own pid."""

    def __init__(self):
        self.socket = STATE / "podman.sock"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        """Start the service, or reuse the one a ``--keep`` run left on the socket."""
        STATE.mkdir(parents=True, exist_ok=True)
        if self.ping():
            return
        self.socket.unlink(missing_ok=True)
        with open(STATE / "podman-service.log", "ab") as logf:
            self.proc = subprocess.Popen(
                [*NICE, *PODMAN, "system", "service", "--time=0", f"unix://{self.socket}"],
                stdout=logf, stderr=logf, env=engine_env(), start_new_session=True,
            )
        (STATE / "podman-service.pid").write_text(str(self.proc.pid))
        deadline = time.monotonic() + 30
        while not self.ping():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"podman system service did not start (see {STATE / 'podman-service.log'})")
            time.sleep(0.3)

    def ping(self) -> bool:
        if not self.socket.exists():
            return False
        with socket.socket(socket.AF_UNIX) as s:
            try:
                s.settimeout(2)
                s.connect(str(self.socket))
                s.sendall(b"GET /_ping HTTP/1.0\r\nHost: d\r\n\r\n")
                return b"OK" in s.recv(1024)
            except OSError:
                return False

    def stop(self) -> None:
        """Stop the service this run (or the ``--keep`` run before it) started, by its pid."""
        pidfile = STATE / "podman-service.pid"
        if self.proc is None and pidfile.exists():
            pid = int(pidfile.read_text())
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                cmdline = ""
            if "system service" in cmdline and str(self.socket) in cmdline:
                os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + 30
                while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                    time.sleep(0.3)
        elif self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        pidfile.unlink(missing_ok=True)


class Compose:
    def __init__(self, engine: Engine, env_file: Path):
        self.engine, self.env_file = engine, env_file

    def __call__(self, *args: str, check: bool = True, timeout: float = 1800, capture: bool = True) -> subprocess.CompletedProcess:
        env = engine_env()
        env.update(DOCKER_HOST=f"unix://{self.engine.socket}", COMPOSE_HTTP_TIMEOUT="600")
        cmd = ["docker-compose", "--project-name", PROJECT, "--project-directory", str(REPO),
               "--file", str(COMPOSE_FILE), "--env-file", str(self.env_file), *args]
        result = subprocess.run(cmd, env=env, text=True, timeout=timeout,
                                capture_output=capture, check=False)
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[5:])} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result


def project_containers(all_: bool = False) -> list[dict]:
    args = ["ps", "--format", "json", "--filter", f"label=com.docker.compose.project={PROJECT}"]
    out = podman(*(args + (["--all"] if all_ else []))).stdout
    return json.loads(out or "[]")


def inspect(name: str) -> dict:
    result = podman("inspect", "--type", "container", name, check=False)
    return json.loads(result.stdout)[0] if result.returncode == 0 else {}


def service_of(info: dict) -> str:
    return (info.get("Config", {}).get("Labels") or {}).get("com.docker.compose.service", "?")


def health_status(info: dict) -> str | None:
    state = info.get("State", {})
    health = state.get("Health") or state.get("Healthcheck") or {}
    return health.get("Status") or None


def _ns(value, default: float) -> float:
    return (value or 0) / 1e9 or default


class Healthchecks(threading.Thread):
    """Runs every project container's healthcheck the way Docker schedules it."""

    START_INTERVAL = 5.0

    def __init__(self):
        super().__init__(daemon=True, name="healthchecks")
        self.stop_event = threading.Event()
        self.runs = 0
        self._busy: set[str] = set()
        self._due: dict[str, float] = {}
        # One thread per container at most: a probe of an Airflow container takes 5-40 s here.
        self._pool = ThreadPoolExecutor(12)

    def _probe(self, cid: str) -> None:
        try:
            podman("healthcheck", "run", cid, check=False, timeout=120, nice=True)
            self.runs += 1
        except subprocess.TimeoutExpired:
            pass
        finally:
            self._busy.discard(cid)

    def run(self) -> None:
        configs: dict[str, tuple[float, float, float]] = {}
        while not self.stop_event.wait(1.0):
            try:
                running = [c for c in project_containers() if c.get("State") == "running"]
            except (subprocess.SubprocessError, json.JSONDecodeError):
                continue
            now = time.monotonic()
            for c in running:
                cid = c["Id"]
                if cid not in configs:
                    info = inspect(cid)
                    hc = info.get("Config", {}).get("Healthcheck") or {}
                    if not hc.get("Test") or hc["Test"][0] == "NONE":
                        configs[cid] = (0, 0, 0)
                        continue
                    configs[cid] = (now, _ns(hc.get("Interval"), 30), _ns(hc.get("StartPeriod"), 0))
                started, interval, start_period = configs[cid]
                if not interval or cid in self._busy:
                    continue
                if self.stop_event.is_set():
                    return
                if now >= self._due.get(cid, started + min(self.START_INTERVAL, interval)):
                    in_start = now - started < start_period
                    self._due[cid] = now + (min(self.START_INTERVAL, interval) if in_start else interval)
                    self._busy.add(cid)
                    self._pool.submit(self._probe, cid)

    def stop(self) -> None:
        self.stop_event.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=60)
        self._pool.shutdown(wait=False, cancel_futures=True)


def free_port(preferred: int, taken: set[int]) -> int:
    """The first port from ``preferred`` up that nothing listens on, below the ephemeral range
    (an ephemeral port free now may be some client's by the time the container starts)."""
    for port in range(preferred, preferred + 200):
        if port in taken:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        taken.add(port)
        return port
    raise RuntimeError(f"no free port in {preferred}..{preferred + 199}")


def write_env(path: Path, images: dict[str, str], workers: int) -> dict[str, str]:
    path.unlink(missing_ok=True)
    subprocess.run([sys.executable, str(REPO / "docker" / "new_env.py"), "--output", str(path)], check=True,
                   capture_output=True)
    taken: set[int] = set()
    extra = {
        **images,
        "AIRLOOP_IMAGE": IMAGE,
        # Not the defaults (8080, 5000, 3000, 3001): the machine's own tests may use them.
        "AIRFLOW_PORT": str(free_port(18080, taken)),
        "MLFLOW_PORT": str(free_port(15000, taken)),
        "BENTO_PORT": str(free_port(13000, taken)),
        "BENTO_TRIP_DURATION_PORT": str(free_port(13000, taken)),
        # Only the Asset-scheduled DAGs: unpausing a time-scheduled one starts its due run at once.
        "AIRLOOP_UNPAUSE_DAGS": f"^{MODEL}__(features|package)$",
    }
    if workers > 1:
        # One task at a time per worker, so that the ingest's mapped tasks spread over all of them.
        extra["AIRLOOP_WORKER_CONCURRENCY"] = "1"
    with path.open("a") as f:
        f.write("\n# compose_run.py: local base images, free host ports\n")
        f.writelines(f"{k}={v}\n" for k, v in extra.items())
    values = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            k, v = line.split("=", 1)
            values[k] = v
    return values


def build_bases() -> dict[str, str]:
    result = subprocess.run(["bash", str(REPO / "docker" / "local-base" / "build.sh")], env=engine_env(),
                            stdout=subprocess.PIPE, text=True, check=True)
    return dict(line.split("=", 1) for line in result.stdout.split() if "=" in line)


def build_project_image(base: str) -> None:
    """The project's Dockerfile, as `docker compose build` would run it, on the local Airflow base.

    podman builds it (not docker-compose through the API) because the RUN steps need the host's
    CA bundle to reach PyPI through this machine's proxy: a build-time mount, not part of the image.
    """
    BASE_CACHE.mkdir(parents=True, exist_ok=True)
    pip_conf = BASE_CACHE / "pip.conf"
    pip_conf.write_text(f"[global]\ncert = {CA_BUNDLE}\n")
    logfile = STATE / "build-project.log"
    with logfile.open("w") as out:
        result = subprocess.run(
            [*NICE, *PODMAN, "build", "--network", "host",
             f"--volume={CA_BUNDLE}:{CA_BUNDLE}:ro", f"--volume={pip_conf}:/etc/pip.conf:ro",
             "--build-arg", f"AIRFLOW_BASE_IMAGE={base}", "--tag", IMAGE, "--file", str(REPO / "Dockerfile"), str(REPO)],
            stdout=out, stderr=subprocess.STDOUT, env=engine_env(), check=False,
        )
    if result.returncode != 0:
        sys.stdout.write("".join(logfile.read_text().splitlines(True)[-40:]))
        raise RuntimeError(f"building {IMAGE} failed (log: {logfile})")


def wait_until(what: str, predicate, timeout: float, every: float = 3.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except Exception as exc:  # noqa: BLE001 - a probe that fails is "not yet"
            last = exc
        time.sleep(every)
    raise TimeoutError(f"{what}: not after {timeout:.0f} s (last: {last!r})")


def statuses() -> dict[str, list[tuple[str, str | None, int | None]]]:
    """service -> [(state, health, exit code)] of its containers (scaled services have several)."""
    out: dict[str, list] = {}
    for c in project_containers(all_=True):
        info = inspect(c["Id"])
        if info:
            state = info["State"]
            out.setdefault(service_of(info), []).append(
                (state.get("Status"), health_status(info), state.get("ExitCode")))
    return out


def save_logs(dest: Path) -> None:
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True, exist_ok=True)
    for c in project_containers(all_=True):
        name = c["Names"][0] if isinstance(c.get("Names"), list) else c.get("Names")
        result = podman("logs", c["Id"], check=False)
        (dest / f"{name}.log").write_text(result.stdout + result.stderr)


class Checks:
    def __init__(self):
        self.passed: list[str] = []
        self.failed: list[str] = []

    def __call__(self, name: str, ok: bool, detail: str = "") -> bool:
        (self.passed if ok else self.failed).append(name + (f" ({detail})" if detail and not ok else ""))
        log(f"{'PASS' if ok else 'FAIL'} {name}" + (f": {detail}" if detail and not ok else ""))
        return ok


def check_stack(env: dict[str, str], check: Checks, timer: Timer, workers: int) -> AirflowREST:
    long_running = set(compose_services()) - ONE_SHOT
    expected = {s: workers if s == "airflow-worker" else 1 for s in long_running}

    def all_healthy():
        st = statuses()
        bad = {s: v for s, v in st.items() if s in ONE_SHOT and any(c[0] == "exited" and c[2] != 0 for c in v)}
        if bad:
            raise RuntimeError(f"one-shot service failed: {bad}")
        unhealthy = {s: v for s, v in st.items() if any(c[1] == "unhealthy" for c in v)}
        if unhealthy:
            raise RuntimeError(f"unhealthy: {unhealthy}")
        ready = all(len(st.get(s, [])) == n and all(c[1] == "healthy" for c in st[s]) for s, n in expected.items())
        return ready and st

    try:
        st = wait_until("every service healthy", all_healthy, timeout=900, every=5)
        timer.mark("every long-running service healthy")
    except (TimeoutError, RuntimeError) as exc:
        st = statuses()
        check("every long-running service healthy", False, f"{exc}; {st}")
    for s, n in sorted(expected.items()):
        got = st.get(s, [])
        label = f"{s} healthy" + (f" ({n} containers)" if n > 1 else "")
        check(label, len(got) == n and all(c[1] == "healthy" for c in got), str(got))
    init = st.get("airflow-init", [])
    check("airflow-init exited 0", len(init) == 1 and init[0][0] == "exited" and init[0][2] == 0, str(init))

    api_url = f"http://127.0.0.1:{env['AIRFLOW_PORT']}"
    r = requests.get(f"{api_url}/api/v2/monitor/health", timeout=10)
    check("api-server /api/v2/monitor/health answers without a token", r.status_code == 200, r.text[:200])
    r = requests.get(f"{api_url}/api/v2/dags", timeout=10)
    check("anonymous GET /api/v2/dags refused", r.status_code in (401, 403), str(r.status_code))
    r = requests.post(f"{api_url}/auth/token", json={"username": "admin", "password": "change-me"}, timeout=10)
    check("a wrong password gets no token", r.status_code in (400, 401, 403), str(r.status_code))
    api = AirflowREST(api_url, "admin", env["AIRLOOP_ADMIN_PASSWORD"])
    version = api("GET", "/version")
    check("GET /api/v2/version with a JWT", version.get("version") == airflow_locked(), str(version))
    dags = wait_until("DAGs parsed", lambda: api("GET", "/dags", params={"limit": 100})["total_entries"] >= 12,
                      timeout=300)
    check("the models' DAGs are parsed", bool(dags))
    for stage in ("features", "package"):
        dag = api("GET", f"/dags/{MODEL}__{stage}")
        check(f"airflow-init unpaused {MODEL}__{stage}", not dag["is_paused"], str(dag["is_paused"]))

    check_mlflow_auth(env, check)
    for var in ("BENTO_PORT", "BENTO_TRIP_DURATION_PORT"):
        r = requests.get(f"http://127.0.0.1:{env[var]}/livez", timeout=10)
        check(f"prediction service on {var} answers /livez", r.status_code == 200, str(r.status_code))
    timer.mark("stack checks")
    return api


def mlflow_login(env: dict[str, str]) -> tuple[str, str]:
    """The MLflow admin compose creates (MLFLOW_ADMIN_USER, default admin) and its password."""
    return env.get("MLFLOW_ADMIN_USER") or "admin", env["MLFLOW_ADMIN_PASSWORD"]


def check_mlflow_auth(env: dict[str, str], check: Checks) -> None:
    """MLflow's basic-auth app: nothing without a login (UI, REST API), everything with it."""
    mlflow = f"http://127.0.0.1:{env['MLFLOW_PORT']}"
    login = mlflow_login(env)
    # A worker's first request that passes the login sets up MLflow's app (job scheduler...):
    # on 2 busy cores that took over 10 s, and minutes under heavy load. 401s come at once.
    first = 300
    create = f"{mlflow}/api/2.0/mlflow/registered-models/create"
    probe = {"name": "compose-test-auth-probe"}
    r = requests.get(f"{mlflow}/health", timeout=10)
    check("MLflow /health answers without a login", r.status_code == 200, f"{r.status_code} {r.text[:200]}")
    r = requests.post(create, json=probe, timeout=10)
    check("anonymous POST registered-models/create refused (401)", r.status_code == 401, f"{r.status_code} {r.text[:200]}")
    for who, password in (("a wrong password", "not-the-password-1234"), ("MLflow's old default password", "password1234")):
        r = requests.post(create, json=probe, auth=(login[0], password), timeout=10)
        check(f"registered-models/create with {who} refused (401)", r.status_code == 401, f"{r.status_code} {r.text[:200]}")
    r = requests.get(f"{mlflow}/", timeout=10)
    check("anonymous MLflow UI refused with a Basic challenge (browsers prompt for the login)",
          r.status_code == 401 and r.headers.get("WWW-Authenticate", "").lower().startswith("basic"),
          f"{r.status_code} {r.headers.get('WWW-Authenticate')!r}")
    r = requests.get(f"{mlflow}/", auth=login, timeout=first)
    check("MLflow UI answers with the login", r.status_code == 200 and "<html" in r.text.lower(), str(r.status_code))
    r = requests.get(f"{mlflow}/api/2.0/mlflow/experiments/search", params={"max_results": 1}, auth=login,
                     timeout=first)
    check("MLflow tracking API answers with the login", r.status_code == 200, r.text[:200])
    r = requests.post(create, json=probe, auth=login, timeout=first)
    created = r.status_code == 200
    check("registered-models/create with the login works", created, f"{r.status_code} {r.text[:200]}")
    if created:
        r = requests.delete(f"{mlflow}/api/2.0/mlflow/registered-models/delete", json=probe, auth=login, timeout=first)
        check("the probe model is deleted again", r.status_code == 200, f"{r.status_code} {r.text[:200]}")


def compose_services() -> list[str]:
    import yaml

    return list(yaml.safe_load(COMPOSE_FILE.read_text())["services"])


def airflow_locked() -> str:
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if line.startswith("apache-airflow=="):
            return line.split("==", 1)[1]
    raise RuntimeError("no apache-airflow pin in requirements.lock")


def run_ingest(compose: Compose, api: AirflowREST, check: Checks, timer: Timer, workers: int,
               days: int = DAYS) -> list[dict]:
    """Land demo batches (on the worker's data volume), then trigger ingest over REST.

    Returns the validated-data Asset events.
    """
    today = dt.datetime.now(dt.UTC).date()
    start = today - dt.timedelta(days=days)
    # `docker-compose exec` would do the same, but an exec session through podman's Docker API
    # leaves its conmon process behind for 5 minutes (exit delay 300 s); podman's own exec does not.
    worker = compose("ps", "-q", "airflow-worker").stdout.split()[0]
    podman("exec", worker, "python", f"/opt/airflow/include/models/{MODEL}/datagen.py", "--start", start.isoformat(),
           "--days", str(days))
    dag_id = f"{MODEL}__ingest"
    api("PATCH", f"/dags/{dag_id}", json={"is_paused": False})
    run_id = api.trigger(dag_id)
    log(f"triggered {dag_id} run {run_id}")

    def finished():
        runs = api.runs(dag_id)
        return runs if runs and all(r["state"] in ("success", "failed") for r in runs) else None

    runs = wait_until(f"{dag_id} runs finished", finished, timeout=900, every=5)
    timer.mark(f"{dag_id} over REST")
    # Unpausing also starts the daily run that is due: whichever run comes first takes the batches.
    landed = {f"orders_{(start + dt.timedelta(days=i)).isoformat()}.csv" for i in range(days)}
    validated = api.events(dag_id)
    check(f"{dag_id} validated every landed batch (Asset events)",
          {e["extra"]["batch"] for e in validated} == landed, str([e["extra"].get("batch") for e in validated]))
    check(f"{dag_id} run triggered over REST", run_id in {r["dag_run_id"] for r in runs})
    worker_hosts = {inspect(c["Id"])["Config"].get("Hostname") for c in project_containers()
                    if c.get("Labels", {}).get("com.docker.compose.service") == "airflow-worker"}
    for r in runs:
        tis = api.task_instances(dag_id, r["dag_run_id"])
        bad = [f"{t['task_id']}={t['state']}" for t in tis if t["state"] not in ("success", "skipped")]
        check(f"{dag_id} run {r['dag_run_id']} succeeded", r["state"] == "success" and not bad, f"{r['state']} {bad}")
        ran = [t for t in tis if t["state"] == "success"]
        hosts = {t["hostname"] for t in ran}
        check(f"{dag_id} run {r['dag_run_id']}: tasks ran on the Celery worker",
              bool(ran) and hosts <= worker_hosts, f"task hosts {hosts}, workers {worker_hosts}")

    if workers > 1:
        used = {t["hostname"] for r in runs for t in api.task_instances(dag_id, r["dag_run_id"]) if t["hostname"]}
        check(f"{dag_id}: tasks landed on every one of the {workers} workers", used == worker_hosts,
              f"task hosts {used}, workers {worker_hosts}")

    # The validated-data Asset schedules the features DAG (unpaused by airflow-init).
    features = f"{MODEL}__features"
    after = max(e["timestamp"] for e in validated) if validated else ""

    def features_done():
        runs = [r for r in api.runs(features) if (r.get("queued_at") or "") >= after[:19]]
        return runs if runs and all(r["state"] in ("success", "failed") for r in runs) else None

    runs = wait_until(f"{features} run after the Asset event", features_done, timeout=900, every=5)
    timer.mark(f"{features} scheduled by the Asset")
    check(f"{features} ran on the Asset event and succeeded", all(r["state"] == "success" for r in runs),
          str([(r["dag_run_id"], r["state"]) for r in runs]))
    return validated


def save_failed_task_logs(api: AirflowREST, dag_id: str, runs: list[dict]) -> None:
    """The logs of a DAG's failed tasks, through the REST API (they live on a volume down -v drops)."""
    dest = STATE / "task-logs"
    dest.mkdir(parents=True, exist_ok=True)
    for r in runs:
        for t in api.task_instances(dag_id, r["dag_run_id"]):
            if t["state"] in ("failed", "upstream_failed", "up_for_retry"):
                for attempt in range(1, (t.get("try_number") or 1) + 1):
                    try:
                        body = api("GET", f"/dags/{dag_id}/dagRuns/{r['dag_run_id']}/taskInstances/"
                                          f"{t['task_id']}/logs/{attempt}", params={"full_content": "true"})
                    except requests.HTTPError as exc:
                        body = {"content": [f"log not available: {exc}"]}
                    content = body.get("content") if isinstance(body, dict) else body
                    lines = [json.dumps(c) if not isinstance(c, str) else c for c in (content or [])]
                    path = dest / f"{dag_id}.{t['task_id']}.{attempt}.log"
                    path.write_text("\n".join(lines))
                    log(f"task log: {path}")


def run_loop(compose: Compose, api: AirflowREST, env: dict[str, str], check: Checks, timer: Timer,
             validated: list[dict]) -> None:
    """After ingest and features: train over REST, the champion Asset schedules packaging, and
    the Bento container answers /predict with the promoted version."""
    train, package = f"{MODEL}__train", f"{MODEL}__package"
    api("PATCH", f"/dags/{train}", json={"is_paused": False})
    run_id = api.trigger(train, conf={"reason": "compose-test"})
    log(f"triggered {train} run {run_id}")

    def finished(dag_id):
        runs = api.runs(dag_id)
        return runs if runs and all(r["state"] in ("success", "failed") for r in runs) else None

    runs = wait_until(f"{train} runs finished", lambda: finished(train), timeout=1200, every=5)
    timer.mark(f"{train} over REST")
    if not check(f"{train} runs succeeded", all(r["state"] == "success" for r in runs),
                 str([(r["dag_run_id"], r["state"]) for r in runs])):
        save_failed_task_logs(api, train, runs)
    champions = api.events(train)
    if not check(f"{train} promoted a champion (Asset event)", len(champions) == 1, str(champions)):
        return
    champion = str(champions[0]["extra"]["version"])

    def package_done():
        runs = [r for r in api.runs(package) if (r.get("queued_at") or "") >= champions[0]["timestamp"][:19]]
        return runs if runs and all(r["state"] in ("success", "failed") for r in runs) else None

    runs = wait_until(f"{package} run after the champion", package_done, timeout=1200, every=5)
    timer.mark(f"{package} scheduled by the Asset")
    if not check(f"{package} succeeded (Bento built, served version confirmed)",
                 all(r["state"] == "success" for r in runs), str([(r["dag_run_id"], r["state"]) for r in runs])):
        save_failed_task_logs(api, package, runs)

    mlflow = f"http://127.0.0.1:{env['MLFLOW_PORT']}"
    alias = requests.get(f"{mlflow}/api/2.0/mlflow/registered-models/alias", auth=mlflow_login(env),
                         params={"name": MODEL, "alias": "champion"}, timeout=10).json()
    check("MLflow's @champion is the promoted version", alias.get("model_version", {}).get("version") == champion,
          str(alias)[:300])
    # A restaurant the features know: the first row of the last validated batch.
    last = max(validated, key=lambda e: e["extra"]["day"])["extra"]["offline_path"]
    worker = compose("ps", "-q", "airflow-worker").stdout.split()[0]
    restaurant = int(podman("exec", worker, "python", "-c",
                            f"import pandas as pd; print(pd.read_parquet({last!r})['restaurant_id'].iloc[0])").stdout)
    answer = requests.post(f"http://127.0.0.1:{env['BENTO_PORT']}/predict", timeout=60, json={
        "restaurant_id": restaurant, "distance_km": 3.2, "items": 2, "order_hour": 19})
    body = answer.json() if answer.ok else {}
    check("the Bento container answers /predict with the promoted version",
          answer.status_code == 200 and str(body.get("model_version")) == champion and not body.get("features_missing"),
          f"{answer.status_code} {answer.text[:300]}")
    timer.mark("prediction answered")


def leftovers() -> list[str]:
    left = [f"container {c['Names']}" for c in project_containers(all_=True)]
    vols = json.loads(podman("volume", "ls", "--format", "json",
                             "--filter", f"label=com.docker.compose.project={PROJECT}").stdout or "[]")
    left += [f"volume {v['Name']}" for v in vols]
    nets = json.loads(podman("network", "ls", "--format", "json").stdout or "[]")
    left += [f"network {n['name']}" for n in nets if n.get("name", "").startswith(PROJECT)]
    return left


def processes_using_store() -> list[str]:
    """Processes whose command line names this run's podman store (conmon, the service...)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(STATE / "storage") in cmdline:
            found.append(f"{proc.name}: {cmdline[:80]}")
    return found


def cold_reset() -> None:
    """Forget every cached image and the Debian root filesystem: the state of a fresh machine."""
    log("--cold: removing the podman store and the local base cache")
    podman("system", "reset", "--force", check=False)
    shutil.rmtree(STATE, ignore_errors=True)
    shutil.rmtree(BASE_CACHE, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", action="store_true", help="empty the image store and base cache first")
    parser.add_argument("--keep", action="store_true", help="leave the stack running")
    parser.add_argument("--down", action="store_true", help="only take a kept stack down")
    parser.add_argument("--no-dag", action="store_true", help="skip the REST-triggered DAG run")
    parser.add_argument("--loop", action="store_true",
                        help=f"{LOOP_DAYS} batches, then train, package and a /predict on the promoted version")
    parser.add_argument("--workers", type=int, default=1,
                        help="--scale airflow-worker=N (N > 1: one task at a time each; the ingest must use all)")
    args = parser.parse_args(argv)
    for tool in ("podman", "docker-compose", "debootstrap"):
        if not shutil.which(tool):
            log(f"{tool} is missing: apt-get install podman docker-compose debootstrap runc")
            return 2

    if args.cold:
        cold_reset()  # not timed: a fresh machine has nothing to remove
    timer, check = Timer(), Checks()
    STATE.mkdir(parents=True, exist_ok=True)
    engine = Engine()
    env_file = STATE / "compose.env"
    compose = Compose(engine, env_file)
    health = Healthchecks()
    ok = False
    try:
        engine.start()
        timer.mark("engine started")
        if args.down:
            args.no_dag = True
            return 0  # the finally clause takes the stack down
        images = build_bases()
        timer.mark("base images (docker/local-base/build.sh)")
        build_project_image(images["AIRFLOW_BASE_IMAGE"])
        timer.mark(f"project image {IMAGE}")
        env = write_env(env_file, images, args.workers)
        health.start()
        scale = ["--scale", f"airflow-worker={args.workers}"] if args.workers > 1 else []
        up = compose("up", "-d", "--no-build", *scale, check=False, timeout=1800)
        timer.mark("docker-compose up -d returned")
        check("docker-compose up -d", up.returncode == 0, (up.stdout + up.stderr)[-2000:])
        api = check_stack(env, check, timer, args.workers)
        if not args.no_dag:
            validated = run_ingest(compose, api, check, timer, args.workers, LOOP_DAYS if args.loop else DAYS)
            if args.loop:
                run_loop(compose, api, env, check, timer, validated)
        ok = not check.failed
    except Exception as exc:  # noqa: BLE001 - reported, then the stack is taken down
        check("run", False, f"{type(exc).__name__}: {exc}")
    finally:
        try:
            if engine.ping():
                save_logs(STATE / "compose-logs")
                if not args.keep:
                    health.stop()
                    compose("down", "-v", "--remove-orphans", check=False, timeout=600)
                    timer.mark("docker-compose down -v")
                    left = leftovers()
                    check("nothing left after down -v", not left, ", ".join(left))
                    ok = ok and not left
        finally:
            health.stop()
            if not args.keep:
                engine.stop()
                stray = processes_using_store()
                check("no engine process left (service, conmon)", not stray, "; ".join(stray))
                ok = ok and not stray
        report = {**timer.report(), "passed": check.passed, "failed": check.failed,
                  "healthcheck_runs": health.runs, "cold": args.cold}
        (STATE / "compose-timings.json").write_text(json.dumps(report, indent=2))
        print("\ncompose-test timings (s):")
        for step, secs in report["steps_s"].items():
            print(f"  {secs:>7}  {step}")
        print(f"  {report['total_s']:>7}  total{' (cold caches)' if args.cold else ''}")
        print(f"{len(check.passed)} passed, {len(check.failed)} failed")
        for failure in check.failed:
            print(f"  FAILED: {failure}")
        print(f"logs: {STATE / 'compose-logs'}, {STATE / 'podman-service.log'}, {BASE_CACHE}/*.log")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
