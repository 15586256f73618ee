"""Run docker-compose.yaml natively: the same services, commands and environment, no Docker.

No Docker engine runs on this machine, so the compose stack is rehearsed with processes. The
stack is read from ``docker-compose config`` (the file as compose itself resolves it, with an
env file made from ``.env.example`` by ``docker/new_env.py``) and from the Dockerfile (its
``ENV`` and ``COPY``), then translated:

- Infrastructure services (an ``image`` and no ``build``: postgres, redis) are the machine's
  own servers. Postgres gets fresh, uniquely named databases: the init scripts mounted into
  ``/docker-entrypoint-initdb.d`` run against it. Each Redis db number is mapped to a free one
  (11, 12, ...: empty, and claimed with a lock file, so concurrent rehearsals never share a
  broker), flushed before and after.
- Every other service runs its compose command from the venv, as the image's entrypoint would:
  an Airflow subcommand gets ``airflow`` prepended, ``bash``/``python`` run as given, and an
  entrypoint ``dumb-init --`` is dropped. Its environment is the image's (base image + the
  Dockerfile's ``ENV``) overlaid with its compose ``environment``.
- In every value and argument: service hostnames become 127.0.0.1; container ports (in URLs,
  after ``--port`` and in ``*_PORT`` variables) become free local ports; Postgres database
  names and Redis db numbers become the unique ones; Postgres roles become ``postgres``
  (trust auth here); bind addresses ``0.0.0.0`` become 127.0.0.1.
- Each service gets a root directory mirroring its container's filesystem: the image's COPY'd
  paths and the bind mounts are symlinks to the repository, named volumes are directories
  shared by every service that mounts them, and container paths (``/opt/airflow/...``) in
  values point into that root. Airflow's defaults derived from ``AIRFLOW_HOME`` (the DAG
  folder, logs) land on the same mounts as in the container.
- Healthchecks run natively too (``CMD`` / ``CMD-SHELL``, ``HOSTNAME`` set
  to this host's name), and ``depends_on`` conditions gate the start order.

``python tests/stack/native.py`` starts the stack and keeps it up until Ctrl-C (``make stack``);
``tests/stack/test_native_rehearsal.py`` drives the pipeline through it.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yaml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
VENV_BIN = Path(sys.executable).parent

# What the apache/airflow base image contributes that the Dockerfile does not say.
BASE_IMAGE_ENV = {"AIRFLOW_HOME": "/opt/airflow"}
BASE_IMAGE_WORKDIR = "/opt/airflow"
DUMB_INIT = ["/usr/bin/dumb-init", "--"]
# Infrastructure services: the servers already running on this machine.
INFRA_PORTS = {"postgres": 5432, "redis": 6379}
NATIVE_PG_ROLE = "postgres"
# Redis dbs a rehearsal may take, in order (14 and 15 belong to other tests and benchmarks).
# Each is claimed with a lock file for the rehearsal's lifetime: two rehearsals at once (two
# `make test` runs) must not share a Celery broker, or one's worker runs the other's tasks.
REDIS_DB_POOL = (11, 12, 13, 10, 9, 8, 7, 6, 5, 4)
REDIS_LOCK_DIR = Path(os.environ.get("TMPDIR", "/tmp"))
# Healthchecks and start-up get this much more time than compose gives them: the machine is
# shared (2 cores), and an Airflow CLI healthcheck alone takes seconds of CPU.
MIN_HEALTHCHECK_TIMEOUT = 90
# Variables of the calling process that must not leak into a service's environment.
_LEAKY = ("AIRFLOW", "_AIRFLOW", "AIRLOOP_", "MLFLOW_", "BENTOML_", "FEAST_", "PYTHONPATH", "DVC_", "GX_",
          "DO_NOT_TRACK", "OMP_NUM_THREADS", "PG", "POSTGRES_", "CELERY_")

_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s,;'\"]+")
_CONTAINER_ROOTS = ("/opt/", "/docker-entrypoint-initdb.d")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def compose_config(env_file: Path, overrides: dict[str, str] | None = None) -> dict:
    """The compose file as ``docker-compose config`` resolves it (anchors merged, .env applied)."""
    exe = shutil.which("docker-compose")
    if not exe:
        raise RuntimeError("docker-compose (Debian package) is needed to resolve docker-compose.yaml")
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"), **(overrides or {})}
    result = subprocess.run(
        [exe, "--project-directory", str(REPO_ROOT), "-f", str(COMPOSE_FILE), "--env-file", str(env_file), "config"],
        capture_output=True, text=True, env=env, cwd=REPO_ROOT, check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"docker-compose config failed:\n{result.stderr}")
    return _unescape(yaml.safe_load(result.stdout))


def _unescape(node):
    """``config`` prints values in compose syntax, ``$`` escaped as ``$$``: undo that."""
    if isinstance(node, dict):
        return {k: _unescape(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_unescape(v) for v in node]
    return node.replace("$$", "$") if isinstance(node, str) else node


def dockerfile_instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out, buf = [], ""
    for line in path.read_text().splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def dockerfile_env(path: Path = DOCKERFILE) -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in dockerfile_instructions(path):
        if word != "ENV":
            continue
        tokens = shlex.split(rest)
        if tokens and "=" not in tokens[0]:  # legacy form: ENV KEY value
            env[tokens[0]] = " ".join(tokens[1:])
            continue
        for token in tokens:
            key, _, value = token.partition("=")
            env[key] = value
    return env


def dockerfile_copies(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(source in the build context, destination in the image) for every COPY."""
    copies = []
    for word, rest in dockerfile_instructions(path):
        if word not in ("COPY", "ADD"):
            continue
        tokens = [t for t in shlex.split(rest) if not t.startswith("--")]
        *sources, dest = tokens
        for src in sources:
            target = dest
            if dest.endswith("/") and not src.endswith("/"):
                target = dest + Path(src).name
            copies.append((src.rstrip("/"), target.rstrip("/")))
    return copies


def healthcheck_argv(test) -> list[str] | None:
    if isinstance(test, str):
        return ["bash", "-c", test]
    if not test or test[0] == "NONE":
        return None
    if test[0] == "CMD":
        return list(test[1:])
    if test[0] == "CMD-SHELL":
        return ["bash", "-c", test[1]]
    raise ValueError(f"unknown healthcheck form {test!r}")


def _seconds(value, default: float) -> float:
    """A compose duration ("30s", "1m30s", "500ms") in seconds."""
    if not value:
        return default
    total = 0.0
    for number, unit in re.findall(r"([\d.]+)(ms|us|h|m|s)", str(value)):
        total += float(number) * {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6}[unit]
    return total or default


def _redis_client(db: int):
    import redis

    return redis.Redis(host="127.0.0.1", port=INFRA_PORTS["redis"], db=db)


def _descendants(pid: int) -> list:
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _as_list(value) -> list[str]:
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


@dataclass
class NativeService:
    name: str
    spec: dict
    root: Path
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    argv: list[str] = field(default_factory=list)
    cwd: Path | None = None
    proc: subprocess.Popen | None = None
    started: float | None = None
    healthy: float | None = None
    exited: float | None = None

    @property
    def infra(self) -> bool:
        return "build" not in self.spec

    @property
    def one_shot(self) -> bool:
        return str(self.spec.get("restart", "no")) == "no"

    def logs(self, tail: int = 4000) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text[-tail:]

    def excerpt(self, tail: int = 1500) -> str:
        """The log's first traceback and its last ``tail`` characters: a server that ends after
        a worker died logs its own traceback last, the worker's cause before it."""
        text = self.logs(tail=1 << 30)
        first = text.find("Traceback (most recent call last)")
        if first == -1 or first >= len(text) - tail:
            return text[-tail:]
        return f"{text[first:first + 3000]}\n[...]\n{text[-tail:]}"


class NativeStack:
    """The compose services as processes on this machine; see the module docstring."""

    def __init__(
        self,
        workdir: Path,
        *,
        overrides: dict[str, str] | None = None,
        redis_dbs: dict[int, int] | None = None,
        db_prefix: str | None = None,
    ):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.env_file = self.workdir / ".env"
        self.overrides = dict(overrides or {})
        self.redis_dbs = dict(redis_dbs or {})  # compose db -> native db; claimed lazily if empty
        self._claim_redis = not redis_dbs
        self._redis_locks: list = []
        self.db_prefix = db_prefix or f"rh_{secrets.token_hex(4)}"
        self.ports: dict[int, int] = {}
        self.databases: dict[str, str] = {}
        self.services: dict[str, NativeService] = {}
        self.timings: dict[str, float] = {}
        self._t0 = time.monotonic()
        self._lock = threading.RLock()
        self._pollers: dict[str, threading.Thread] = {}
        self._stopping = threading.Event()
        self._starter: threading.Thread | None = None
        self.start_error: BaseException | None = None

    # -- configuration ---------------------------------------------------------------------
    def load(self) -> "NativeStack":
        sys.path.insert(0, str(REPO_ROOT / "docker"))
        try:
            import new_env
        finally:
            sys.path.pop(0)
        if not self.env_file.exists():
            self.env_file.write_text(new_env.render(ENV_EXAMPLE.read_text()))
        self.dotenv = dict(
            line.split("=", 1) for line in self.env_file.read_text().splitlines()
            if "=" in line and not line.lstrip().startswith("#")
        )
        self.config = compose_config(self.env_file, self.overrides)
        self.image_env = {**BASE_IMAGE_ENV, **dockerfile_env()}
        self.copies = dockerfile_copies()
        names = self.config["services"]
        self.hostnames = set(names)
        self.pg_roles = {
            str(spec.get("environment", {}).get("POSTGRES_USER", "postgres")): NATIVE_PG_ROLE
            for name, spec in names.items() if name == "postgres"
        }
        for name, spec in names.items():
            svc = NativeService(name, spec, self.workdir / "roots" / name, self.workdir / "logs" / f"{name}.log")
            self.services[name] = svc
        for svc in self.services.values():
            self._build_root(svc)
            svc.env = self._service_env(svc)
            if not svc.infra:
                svc.argv = self._service_argv(svc)
                svc.cwd = self.path(svc.spec.get("working_dir") or BASE_IMAGE_WORKDIR, svc)
                svc.cwd.mkdir(parents=True, exist_ok=True)
        return self

    def port(self, container_port: int, host: str | None = None) -> int:
        if host in INFRA_PORTS:
            return INFRA_PORTS[host]
        with self._lock:
            if container_port not in self.ports:
                self.ports[container_port] = free_port()
            return self.ports[container_port]

    def database(self, name: str) -> str:
        if name.startswith(self.db_prefix):
            return name
        with self._lock:
            return self.databases.setdefault(name, f"{self.db_prefix}_{name}")

    def redis_db(self, number: int) -> int:
        with self._lock:
            if number not in self.redis_dbs:
                if not self._claim_redis:
                    raise KeyError(f"compose uses Redis db {number}; give it a native db number (redis_dbs)")
                self.redis_dbs[number] = self._claim_free_redis_db()
            return self.redis_dbs[number]

    def _claim_free_redis_db(self) -> int:
        import fcntl

        taken = set(self.redis_dbs.values())
        for db in REDIS_DB_POOL:
            if db in taken:
                continue
            handle = open(REDIS_LOCK_DIR / f"airloop-rehearsal-redis-db{db}.lock", "w")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            if _redis_client(db).dbsize():  # in use without the lock (e.g. a stack left running)
                handle.close()
                continue
            self._redis_locks.append(handle)
            return db
        raise RuntimeError(f"every Redis db of {REDIS_DB_POOL} is taken by other rehearsals")

    def path(self, container_path: str, svc: NativeService) -> Path:
        return svc.root / container_path.lstrip("/")

    # -- translation -----------------------------------------------------------------------
    def translate(self, value: str, svc: NativeService) -> str:
        value = _URL.sub(lambda m: self._url(m.group(0)), value)
        value = self._host_ports(value)
        if value == "0.0.0.0":
            return "127.0.0.1"
        return self._paths(value, svc)

    def _url(self, url: str) -> str:
        parts = urlsplit(url)
        host = parts.hostname
        if host not in self.hostnames and host not in ("localhost", "127.0.0.1"):
            return url
        port = parts.port
        new_host = "127.0.0.1"  # a service name, or the container itself (servers bind 127.0.0.1 here)
        if port is None and host in INFRA_PORTS:
            port = INFRA_PORTS[host]
        netloc = new_host + (f":{self.port(port, host)}" if port else "")
        path = parts.path
        if "postgres" in parts.scheme:
            user = self.pg_roles.get(parts.username or "", parts.username or NATIVE_PG_ROLE)
            netloc = f"{user}@{netloc}"
            if path.strip("/"):
                path = "/" + self.database(path.strip("/"))
        elif parts.scheme.startswith("redis"):
            if parts.password:
                netloc = f":{parts.password}@{netloc}"
            if path.strip("/").isdigit():
                path = f"/{self.redis_db(int(path.strip('/')))}"
        elif parts.username:
            netloc = f"{parts.username}{':' + parts.password if parts.password else ''}@{netloc}"
        return urlunsplit((parts.scheme, netloc, path, parts.query, parts.fragment))

    def _host_ports(self, value: str) -> str:
        names = "|".join(sorted((re.escape(n) for n in self.hostnames), key=len, reverse=True))
        if not names:
            return value

        def hostport(m: re.Match) -> str:
            host, port, opts = m.group("host"), m.group("port"), m.group("opts") or ""
            port = port if port == "*" else str(self.port(int(port), host))
            if host == "redis" and opts:
                opts = re.sub(r"(?<=,db=)(\d+)", lambda d: str(self.redis_db(int(d.group(1)))), opts)
            return f"127.0.0.1:{port}{opts}"

        value = re.sub(
            rf"(?<![\w/@.:-])(?P<host>{names}):(?P<port>\d+|\*)(?P<opts>(?:,\w+=[^,\s]*)*)(?![\w.-])", hostport, value
        )
        if "," in value:  # bare hostnames in comma-separated lists (e.g. --allowed-hosts)
            value = ",".join("127.0.0.1" if item in self.hostnames else item for item in value.split(","))
        return value

    def _paths(self, value: str, svc: NativeService) -> str:
        roots = "|".join(re.escape(r) for r in _CONTAINER_ROOTS)
        return re.sub(rf"(?<![\w/.:-])(?={roots})/[^\s:;,'\"]*", lambda m: str(self.path(m.group(0), svc)), value)

    # -- per-service filesystem, environment and command -----------------------------------
    def _build_root(self, svc: NativeService) -> None:
        svc.root.mkdir(parents=True, exist_ok=True)
        svc.log_path.parent.mkdir(parents=True, exist_ok=True)
        links: list[tuple[str, Path]] = []
        if not svc.infra:
            links += [(dest, REPO_ROOT / src) for src, dest in self.copies]
        for mount in svc.spec.get("volumes") or []:
            source, target = self._mount(mount)
            links.append((target, source))
        for target, source in sorted(links, key=lambda item: item[0].count("/")):
            path = self.path(target, svc)
            parent = path.parent
            if any(p.is_symlink() for p in (parent, *parent.parents) if svc.root in (p, *p.parents)):
                raise RuntimeError(f"{svc.name}: mount {target} lies inside another mount; not supported natively")
            parent.mkdir(parents=True, exist_ok=True)
            if path.is_symlink() or path.exists():
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
            path.symlink_to(source, target_is_directory=source.is_dir())

    def _mount(self, mount) -> tuple[Path, str]:
        if isinstance(mount, dict):
            source, target, kind = mount.get("source"), mount["target"], mount.get("type")
        else:
            source, target = str(mount).split(":")[:2]
            kind = "bind" if source.startswith(("/", ".")) else "volume"
        if kind == "bind":
            return Path(source), target
        volume = self.workdir / "volumes" / source
        volume.mkdir(parents=True, exist_ok=True)
        return volume, target

    def _service_env(self, svc: NativeService) -> dict[str, str]:
        raw = dict(self.image_env) if not svc.infra else {}
        env_spec = svc.spec.get("environment") or {}
        if isinstance(env_spec, list):
            env_spec = dict(item.split("=", 1) for item in env_spec)
        raw.update({k: "" if v is None else str(v) for k, v in env_spec.items()})
        env = {}
        for key, value in raw.items():
            if key.endswith("_PORT") and value.isdigit():
                env[key] = str(self.port(int(value)))
            else:
                env[key] = self.translate(value, svc)
        if svc.name == "postgres":
            env["POSTGRES_USER"] = self.pg_roles.get(env.get("POSTGRES_USER", ""), NATIVE_PG_ROLE)
            env["POSTGRES_DB"] = "postgres"
            env["AIRLOOP_DATABASES"] = " ".join(self.database(d) for d in env.get("AIRLOOP_DATABASES", "").split())
            env.update(PGHOST="127.0.0.1", PGPORT=str(INFRA_PORTS["postgres"]))
        base = {k: v for k, v in os.environ.items() if not k.startswith(_LEAKY)}
        base["PATH"] = f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}"
        base["HOSTNAME"] = socket.gethostname()  # what HOSTNAME is in a container: its hostname
        return {**base, **env}

    def _service_argv(self, svc: NativeService) -> list[str]:
        entrypoint, command = _as_list(svc.spec.get("entrypoint")), _as_list(svc.spec.get("command"))
        if entrypoint:
            argv = entrypoint + command
            if argv[: len(DUMB_INIT)] == DUMB_INIT:
                argv = argv[len(DUMB_INIT):]
        elif command and command[0] in ("bash", "python", "airflow"):
            argv = command
        else:  # the apache/airflow entrypoint runs anything else as an Airflow subcommand
            argv = ["airflow", *command]
        out = []
        for i, arg in enumerate(argv):
            if i and argv[i - 1] in ("--port", "-p") and arg.isdigit():
                out.append(str(self.port(int(arg))))
            else:
                out.append(self.translate(arg, svc))
        return [self._executable(out[0]), *out[1:]]

    @staticmethod
    def _executable(name: str) -> str:
        if "/" in name:
            return name
        candidate = VENV_BIN / name
        return str(candidate) if candidate.exists() else (shutil.which(name) or name)

    def healthcheck(self, name: str, timeout: float = 60) -> subprocess.CompletedProcess | None:
        svc = self.services[name]
        argv = healthcheck_argv((svc.spec.get("healthcheck") or {}).get("test"))
        if argv is None:
            return None
        argv = [self._executable(argv[0]), *(self.translate(a, svc) for a in argv[1:])]
        return subprocess.run(
            argv, env=svc.env, cwd=svc.cwd or svc.root, capture_output=True, text=True, timeout=timeout, check=False
        )

    # -- lifecycle -------------------------------------------------------------------------
    def url(self, service: str, container_port: int) -> str:
        return f"http://127.0.0.1:{self.port(container_port, service)}"

    def mark(self, what: str) -> None:
        self.timings[what] = round(time.monotonic() - self._t0, 1)

    def start(self, timeout: float = 420, background: bool = False) -> "NativeStack":
        """Start every service once its ``depends_on`` conditions hold (compose's order).

        ``background``: return at once and go on starting in a thread (``wait_started`` joins it,
        and raises what went wrong), as ``docker compose up -d`` does not wait for health.
        """
        if background:
            self._starter = threading.Thread(target=self._start_all, args=(timeout,), daemon=True)
            self._starter.start()
        else:
            self._start_all(timeout)
        return self

    def wait_started(self, timeout: float | None = None) -> None:
        if self._starter is not None:
            self._starter.join(timeout)
        if self.start_error is not None:
            raise RuntimeError(f"starting the stack failed: {self.start_error}") from self.start_error

    def _start_all(self, timeout: float) -> None:
        pending = list(self.services)
        deadline = time.monotonic() + timeout
        try:
            while pending and not self._stopping.is_set():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"services not started after {timeout}s: {pending}\n{self.status()}")
                self.check_processes()
                for name in list(pending):
                    if self._deps_ready(name):
                        with self._lock:
                            if self._stopping.is_set():
                                return
                            self._start(name)
                        pending.remove(name)
                time.sleep(0.3)
        except BaseException as exc:
            self.start_error = exc
            raise

    def _deps_ready(self, name: str) -> bool:
        for dep, how in (self.services[name].spec.get("depends_on") or {}).items():
            dep_svc = self.services[dep]
            condition = how.get("condition", "service_started") if isinstance(how, dict) else "service_started"
            if dep_svc.started is None:
                return False
            if condition == "service_completed_successfully" and dep_svc.exited is None:
                return False
            if condition == "service_healthy" and not self._is_healthy(dep):
                return False
        return True

    def _is_healthy(self, name: str) -> bool:
        """Whether ``name`` passed its healthcheck; polls it in the background from the first ask."""
        svc = self.services[name]
        with self._lock:
            if name not in self._pollers:
                self._pollers[name] = threading.Thread(target=self._poll_health, args=(name,), daemon=True)
                self._pollers[name].start()
        return svc.healthy is not None

    def _poll_health(self, name: str) -> None:
        svc = self.services[name]
        timeout = self._healthcheck_timeout(svc)
        while svc.healthy is None and not self._stopping.is_set():
            try:
                result = self.healthcheck(name, timeout=timeout)
            except subprocess.TimeoutExpired:
                result = subprocess.CompletedProcess([], 1)
            if result is None or result.returncode == 0:
                svc.healthy = time.monotonic()
                self.mark(f"{name} healthy")
                return
            self._stopping.wait(1)

    def _start(self, name: str) -> None:
        svc = self.services[name]
        svc.started = time.monotonic()
        self.mark(f"{name} started")
        if name == "postgres":
            self._prepare_postgres(svc)
        elif name == "redis":
            self.flush_redis()
        if svc.infra:
            return
        log = open(svc.log_path, "ab")
        svc.proc = subprocess.Popen(
            svc.argv, env=svc.env, cwd=svc.cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()

    def _prepare_postgres(self, svc: NativeService) -> None:
        """Run the init scripts compose mounts into /docker-entrypoint-initdb.d, as the image does."""
        scripts = sorted(self.path("/docker-entrypoint-initdb.d", svc).glob("*.sh"))
        for script in scripts:
            result = subprocess.run(["bash", str(script)], env=svc.env, capture_output=True, text=True, check=False)
            with open(svc.log_path, "a") as log:
                log.write(result.stdout + result.stderr)
            if result.returncode != 0:
                raise RuntimeError(f"{script.name} failed:\n{result.stdout}{result.stderr}")

    def check_processes(self) -> None:
        """Note each service that has exited since the last look; raise if it failed or should still run."""
        for svc in self.services.values():
            if svc.proc is None or svc.exited is not None:
                continue
            code = svc.proc.poll()
            if code is None:
                continue
            svc.exited = time.monotonic()
            self.mark(f"{svc.name} exited")
            if code != 0 or not svc.one_shot:
                raise RuntimeError(f"{svc.name} exited with {code}:\n{svc.excerpt(4000)}")

    @staticmethod
    def _healthcheck_timeout(svc: NativeService) -> float:
        return max(_seconds((svc.spec.get("healthcheck") or {}).get("timeout"), 30), MIN_HEALTHCHECK_TIMEOUT)

    def wait_healthy(self, names: list[str] | None = None, timeout: float = 300, parallel: bool = True) -> dict[str, float]:
        """Run the healthchecks of ``names`` (default: every long-running service) until they pass."""
        names = names or [n for n, s in self.services.items() if not s.one_shot]
        errors: dict[str, str] = {}

        def one(name: str) -> None:
            deadline = time.monotonic() + timeout
            svc = self.services[name]
            while time.monotonic() < deadline and not self._stopping.is_set():
                if self.start_error is not None:
                    errors[name] = f"stack did not start: {self.start_error}"
                    return
                if svc.proc is not None and svc.proc.poll() is not None:
                    errors[name] = f"exited with {svc.proc.returncode}"
                    return
                try:
                    result = self.healthcheck(name, timeout=self._healthcheck_timeout(svc))
                except subprocess.TimeoutExpired:
                    errors[name] = "healthcheck timed out"
                    continue
                if result is None or result.returncode == 0:
                    if svc.healthy is None:
                        svc.healthy = time.monotonic()
                        self.mark(f"{name} healthy")
                    errors.pop(name, None)
                    return
                errors[name] = (result.stdout + result.stderr)[-1500:]
                time.sleep(2)
            errors.setdefault(name, "timed out")

        if parallel:
            threads = [threading.Thread(target=one, args=(n,), daemon=True) for n in names]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        else:
            for n in names:
                one(n)
        if errors:
            raise RuntimeError("healthchecks failing:\n" + "\n".join(
                f"--- {n}: {e}\n{self.services[n].excerpt()}" for n, e in errors.items()))
        return {n: round(self.services[n].healthy - self._t0, 1) for n in names}

    def status(self) -> str:
        rows = []
        for svc in self.services.values():
            state = "infra" if svc.infra else ("exited" if svc.exited else ("running" if svc.proc else "pending"))
            rows.append(f"{svc.name:<24} {state:<8} healthy={svc.healthy is not None}")
        return "\n".join(rows)

    def stop(self) -> None:
        """Like ``docker compose stop``: SIGTERM (reverse start order), SIGKILL after the grace period.

        The SIGKILL goes to every process the service started, as when a container ends: Airflow
        runs each task in a process group of its own, out of reach of a group signal.
        """
        with self._lock:
            self._stopping.set()
        procs = [s for s in sorted(self.services.values(), key=lambda s: s.started or 0, reverse=True) if s.proc]
        family = {svc.name: _descendants(svc.proc.pid) for svc in procs}
        for svc in procs:
            if svc.proc.poll() is None:
                try:  # dumb-init signals the whole session unless DUMB_INIT_SETSID=0 (the worker)
                    if svc.env.get("DUMB_INIT_SETSID") == "0":
                        os.kill(svc.proc.pid, signal.SIGTERM)
                    else:
                        os.killpg(svc.proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        sent = time.monotonic()
        for svc in procs:
            grace = _seconds(svc.spec.get("stop_grace_period"), 10)  # compose's default is 10 s
            try:
                svc.proc.wait(max(0.1, sent + grace - time.monotonic()))
                self.mark(f"{svc.name} stopped ({svc.proc.returncode})")
            except subprocess.TimeoutExpired:
                self.mark(f"{svc.name} killed: still running {grace:.0f} s after SIGTERM")
            for proc in {*family[svc.name], *_descendants(svc.proc.pid)}:
                try:
                    proc.kill()
                except Exception:  # gone already
                    pass
            try:
                svc.proc.kill()
                svc.proc.wait(10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass

    def cleanup(self) -> None:
        """Drop the rehearsal's databases, flush and give back its Redis dbs (after ``stop``)."""
        import psycopg

        try:
            with psycopg.connect(f"postgresql://{NATIVE_PG_ROLE}@127.0.0.1:5432/postgres", autocommit=True) as conn:
                for db in sorted(set(self.databases.values())):
                    conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            self.flush_redis()
        finally:
            self.release()

    def flush_redis(self) -> None:
        for db in self.redis_dbs.values():
            _redis_client(db).flushdb()

    def release(self) -> None:
        """Give the claimed Redis dbs back (after ``cleanup``)."""
        for handle in self._redis_locks:
            handle.close()
        self._redis_locks.clear()


# -- Airflow's REST API v2 -------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(description="Start docker-compose.yaml natively (no Docker) until Ctrl-C.")
    parser.add_argument("--workdir", type=Path, help="state directory (default: a new temporary one)")
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="airloop-stack-"))

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    # Ctrl-C or a supervisor's SIGTERM stop the stack and drop its databases.
    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    stack = NativeStack(workdir).load()
    try:
        stack.start()
        stack.wait_healthy()
        print(f"Airflow  {stack.url('airflow-apiserver', 8080)}  (admin / {stack.dotenv['AIRLOOP_ADMIN_PASSWORD']})")
        print(f"MLflow   {stack.url('mlflow', 5000)}")
        print(f"Bento    {stack.url('bento', 3000)}")
        print(f"state and logs under {workdir}; Ctrl-C stops everything and drops the databases", flush=True)
        while True:
            time.sleep(5)
            stack.check_processes()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second signal must not skip the clean-up
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("stopping; dropping the databases", flush=True)
        try:
            stack.stop()
        finally:
            stack.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
