"""Static checks of docker-compose.yaml, the Dockerfile, .env.example and the Helm values.

No Docker engine runs here: the compose file is checked as ``docker-compose config`` resolves it
(Debian's docker-compose 1.29 interpolates ``.env`` and rejects unknown keys without an
engine), the Dockerfile with hadolint. ``test_native_rehearsal.py`` runs the same services.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from airloop.settings import REPO_ROOT

sys.path.insert(0, str(Path(__file__).parent))
from native import (  # noqa: E402
    NativeStack,
    dockerfile_copies,
    dockerfile_env,
    dockerfile_instructions,
    healthcheck_argv,
)

COMPOSE = REPO_ROOT / "docker-compose.yaml"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
DOCKERFILE = REPO_ROOT / "Dockerfile"
VALUES = REPO_ROOT / "chart" / "values.yaml"

# Where each service listens inside the compose network.
INFRA_LISTEN = {"postgres": 5432, "redis": 6379}
# Airloop's settings every Airloop service gets (the brief of the stack).
AIRLOOP_ENV = {
    "MLFLOW_TRACKING_URI": "http://mlflow:5000",
    "AIRLOOP_FEAST_REDIS": "redis:6379,db=1",
    "AIRLOOP_SERVE_URL": "http://bento:3000",
    "AIRLOOP_SERVE_URL__TRIP_DURATION": "http://bento-trip-duration:3001",
}
# The prediction services, one per model: service -> (model it serves, port it listens on).
BENTO_SERVICES = {"bento": ("late_delivery", 3000), "bento-trip-duration": ("trip_duration", 3001)}
AIRLOOP_POSTGRES_ENV = {"AIRLOOP_FEAST_REGISTRY": "feast", "AIRLOOP_PREDICTION_STORE": "airloop"}
AIRFLOW_SERVICES = ("airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                    "airflow-triggerer", "airflow-worker")
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s,;'\"]+")
_HOSTPORT = re.compile(r"(?<![\w/@.:-])([a-z][a-z0-9-]*):(\d+)\b")


def _compose_config(project: Path, env_file: Path | None, home: Path | None = None) -> subprocess.CompletedProcess:
    """``docker-compose config``: with ``project`` as the project directory (its .env unused)."""
    exe = shutil.which("docker-compose")
    assert exe, "docker-compose (Debian package) is installed by `make test`"
    args = [exe, "--project-directory", str(project), "-f", str(COMPOSE)]
    if env_file:
        args += ["--env-file", str(env_file)]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home or project)}
    return subprocess.run([*args, "config"], capture_output=True, text=True, cwd=home or project, env=env, check=False)


@pytest.fixture(scope="module")
def compose() -> dict:
    """The file as written (anchors resolved by YAML, nothing interpolated)."""
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict:
    """The file as compose resolves it with .env.example (merges applied, variables filled in)."""
    result = _compose_config(REPO_ROOT, ENV_EXAMPLE, home=tmp_path_factory.mktemp("home"))
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def _env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    return {k: "" if v is None else str(v) for k, v in env.items()}


def _command(service: dict) -> list[str]:
    cmd = service.get("command") or []
    return cmd.split() if isinstance(cmd, str) else [str(c) for c in cmd]


def _strings(service: dict) -> list[str]:
    """Every value a service's process sees: environment values and command arguments."""
    return [*_env(service).values(), *_command(service)]


def _hosts(text: str) -> list[tuple[str, int | None, str]]:
    """(hostname, port, how) of every URL or host:port in a value."""
    found = []
    for url in _URL.findall(text):
        parts = urlsplit(url)
        if parts.hostname:
            found.append((parts.hostname, parts.port, url))
    for host, port in _HOSTPORT.findall(_URL.sub(" ", text)):
        found.append((host, int(port), f"{host}:{port}"))
    return found


def _listen_port(name: str, service: dict) -> int | None:
    if name in INFRA_LISTEN:
        return INFRA_LISTEN[name]
    cmd = _command(service)
    if "--port" in cmd:
        return int(cmd[cmd.index("--port") + 1])
    if cmd == ["api-server"]:
        return int(_env(service).get("AIRFLOW__API__PORT", 8080))
    return None


def _mount_target(mount) -> tuple[str, str]:
    if isinstance(mount, dict):
        return mount.get("source", ""), mount["target"]
    source, target = str(mount).split(":")[:2]
    return source, target


def _named_volume_targets(service: dict, declared: set[str]) -> list[str]:
    return [t for s, t in map(_mount_target, service.get("volumes") or []) if s in declared]


def _on(path: str, targets: list[str]) -> bool:
    return any(path == t or path.startswith(t.rstrip("/") + "/") for t in targets)


# -- the file as compose reads it ---------------------------------------------------------


def test_compose_refuses_to_start_without_secrets(tmp_path):
    result = _compose_config(tmp_path, env_file=None)
    assert result.returncode != 0
    assert "in .env (see .env.example)" in result.stderr


def test_compose_validates_with_env_example(tmp_path):
    result = _compose_config(tmp_path, env_file=REPO_ROOT / ".env.example")
    assert result.returncode == 0, result.stderr
    rendered = yaml.safe_load(result.stdout)
    assert {"postgres", "redis", "mlflow", *BENTO_SERVICES, *AIRFLOW_SERVICES} <= set(rendered["services"])


def test_compose_validates_with_a_generated_env(tmp_path):
    sys.path.insert(0, str(REPO_ROOT / "docker"))
    try:
        import new_env
    finally:
        sys.path.pop(0)
    from cryptography.fernet import Fernet

    text = new_env.render(ENV_EXAMPLE.read_text())
    values = dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))
    assert values and "change-me" not in values.values()
    Fernet(values["AIRFLOW_FERNET_KEY"].encode())  # a real key
    assert all(re.fullmatch(r"[A-Za-z0-9_=-]{32,}", v) for v in values.values()), "URL-safe secrets"
    env = tmp_path / ".env"
    env.write_text(text)
    result = _compose_config(tmp_path, env)
    assert result.returncode == 0, result.stderr
    assert values["POSTGRES_PASSWORD"] in result.stdout


def test_every_secret_compose_requires_is_in_env_example_as_change_me(compose):
    required = set(re.findall(r"\$\{(\w+):\?", COMPOSE.read_text()))
    optional = set(re.findall(r"\$\{(\w+):-", COMPOSE.read_text()))
    lines = [line for line in ENV_EXAMPLE.read_text().splitlines() if line.strip()]
    active = dict(line.split("=", 1) for line in lines if not line.startswith("#"))
    documented = {m for line in lines for m in re.findall(r"^#\s*(\w+)=", line)}
    assert required == set(active), "every required variable, and only those, is set in .env.example"
    assert all(v == "change-me" for v in active.values()), active
    assert optional <= documented, f"optional settings not documented in .env.example: {optional - documented}"


# -- wiring: every service finds the others -----------------------------------------------


def test_env_and_commands_only_reference_existing_services(rendered):
    services = rendered["services"]
    for name, service in services.items():
        for value in _strings(service):
            for host, port, how in _hosts(value):
                if host in ("localhost", "127.0.0.1", "0.0.0.0"):
                    continue
                assert host in services, f"{name}: {how} names no compose service"
                expected = _listen_port(host, services[host])
                if port is not None and expected is not None:
                    assert port == expected, f"{name}: {how} but {host} listens on {expected}"


def test_healthchecks_probe_the_port_their_service_listens_on(rendered):
    for name, service in rendered["services"].items():
        test = (service.get("healthcheck") or {}).get("test")
        port = _listen_port(name, service)
        for host, used, how in _hosts(" ".join(healthcheck_argv(test) or [])):
            if host == "localhost" and name != "airflow-scheduler":
                assert used == port, f"{name} healthcheck probes {how}, the service listens on {port}"


def test_every_airloop_service_gets_the_airloop_environment(rendered):
    password = "change-me"
    for name, service in rendered["services"].items():
        if "build" not in service:
            continue
        env = _env(service)
        for key, value in AIRLOOP_ENV.items():
            assert env.get(key) == value, f"{name}: {key}={env.get(key)!r}"
        for key, db in AIRLOOP_POSTGRES_ENV.items():
            assert env.get(key) == f"postgresql://airloop:{password}@postgres:5432/{db}", f"{name}: {key}"


def test_postgres_creates_every_database_the_services_use(rendered):
    services = rendered["services"]
    pg = _env(services["postgres"])
    user, password = pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"]
    created = set(pg["AIRLOOP_DATABASES"].split()) | {pg.get("POSTGRES_DB") or user}
    assert {"airflow", "mlflow", "feast", "airloop"} <= created
    mounts = {t: s for s, t in map(_mount_target, services["postgres"]["volumes"])}
    script = Path(mounts["/docker-entrypoint-initdb.d/10-airloop-databases.sh"])
    assert script == REPO_ROOT / "docker" / "postgres-init.sh" and script.stat().st_mode & 0o111, "executable"
    used = set()
    for name, service in services.items():
        for value in _strings(service):
            for url in _URL.findall(value):
                parts = urlsplit(url)
                if parts.hostname == "postgres":
                    assert (parts.username, parts.password) == (user, password), f"{name}: {url}"
                    used.add(parts.path.strip("/"))
    assert used and used <= created, f"databases used but not created: {used - created}"


def test_redis_db_numbers_do_not_collide(rendered):
    env = _env(rendered["services"]["airflow-worker"])
    broker = urlsplit(env["AIRFLOW__CELERY__BROKER_URL"])
    assert broker.hostname == "redis" and broker.path == "/0"
    feast_db = re.search(r",db=(\d+)", env["AIRLOOP_FEAST_REDIS"]).group(1)
    assert feast_db != "0"


def test_airflow_runs_celery_and_shares_its_secrets(rendered):
    services = rendered["services"]
    shared = ("AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY",
              "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CELERY__BROKER_URL", "AIRFLOW__CELERY__RESULT_BACKEND",
              "AIRFLOW__CORE__EXECUTION_API_SERVER_URL")
    first = _env(services[AIRFLOW_SERVICES[0]])
    for name in AIRFLOW_SERVICES:
        env = _env(services[name])
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert {k: env[k] for k in shared} == {k: first[k] for k in shared}, name
    assert first["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://")
    assert first["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    assert [_command(services[n]) for n in AIRFLOW_SERVICES[1:]] == [
        ["api-server"], ["scheduler"], ["dag-processor"], ["triggerer"], ["celery", "worker"]]


def test_the_worker_can_be_scaled(compose):
    worker = compose["services"]["airflow-worker"]
    for key in ("container_name", "hostname", "ports"):
        assert key not in worker, f"airflow-worker sets {key}: `--scale airflow-worker=3` would clash"


def test_airflow_init_migrates_sets_the_password_and_unpauses(rendered):
    init = rendered["services"]["airflow-init"]
    assert _command(init) == ["bash", "/opt/airloop/airflow-init.sh"]
    assert ("docker/airflow-init.sh", "/opt/airloop/airflow-init.sh") in dockerfile_copies()
    script = (REPO_ROOT / "docker" / "airflow-init.sh").read_text()
    for step in ("airflow db migrate", "airflow dags reserialize", "airflow dags unpause", "AIRLOOP_ADMIN_PASSWORD"):
        assert step in script
    assert script.index("airflow dags reserialize") < script.index("airflow dags unpause"), "parse, then unpause"
    assert _env(init)["AIRLOOP_UNPAUSE_DAGS"] == "__"
    assert _env(init)["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] == "true"
    for name in AIRFLOW_SERVICES[1:]:
        assert rendered["services"][name]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"


def test_mlflow_server_is_on_postgres_with_artifacts_on_a_volume(rendered):
    mlflow = rendered["services"]["mlflow"]
    cmd = _command(mlflow)
    # docker/mlflow-server.sh runs `mlflow server` with these arguments (see the auth tests below).
    assert cmd[:2] == ["bash", "/opt/airloop/mlflow-server.sh"]
    assert ("docker/mlflow-server.sh", "/opt/airloop/mlflow-server.sh") in dockerfile_copies()
    arg = lambda flag: cmd[cmd.index(flag) + 1]  # noqa: E731
    assert urlsplit(arg("--backend-store-uri")).path == "/mlflow"
    assert _on(arg("--artifacts-destination"), _named_volume_targets(mlflow, set(rendered["volumes"])))
    allowed = arg("--allowed-hosts").split(",")
    assert {"mlflow", "mlflow:5000"} <= set(allowed), "clients inside compose send Host: mlflow:5000"
    assert arg("--host") == "0.0.0.0" and arg("--port") == "5000"
    # A worker still starting must not be killed by uvicorn's 5 s default (compose_run.py saw it).
    assert "--timeout-worker-healthcheck 60" in arg("--uvicorn-opts")


# -- MLflow's basic auth -------------------------------------------------------------------


def _mlflow_clients(rendered) -> dict[str, dict[str, str]]:
    return {n: _env(s) for n, s in rendered["services"].items() if "MLFLOW_TRACKING_URI" in _env(s)}


def test_mlflow_runs_the_basic_auth_app_with_its_user_store_on_postgres(rendered):
    mlflow = rendered["services"]["mlflow"]
    cmd, env = _command(mlflow), _env(mlflow)
    assert cmd[cmd.index("--app-name") + 1] == "basic-auth"
    assert env["MLFLOW_AUTH_ADMIN_USERNAME"] and env["MLFLOW_AUTH_ADMIN_PASSWORD"] and env["MLFLOW_FLASK_SERVER_SECRET_KEY"]
    store = urlsplit(env["AIRLOOP_MLFLOW_AUTH_DB"])
    assert (store.scheme, store.hostname, store.path) == ("postgresql+psycopg2", "postgres", "/mlflow"), "not SQLite in a layer"
    assert mlflow["healthcheck"]["test"][-1].endswith("/health"), "the one route the auth app leaves open"


def test_every_mlflow_client_service_gets_the_admin_credentials(rendered):
    server = _env(rendered["services"]["mlflow"])
    clients = _mlflow_clients(rendered)
    assert {*AIRFLOW_SERVICES, *BENTO_SERVICES} <= set(clients), "tasks, the Models view and serving use MLflow"
    for name, env in clients.items():
        assert env.get("MLFLOW_TRACKING_USERNAME") == server["MLFLOW_AUTH_ADMIN_USERNAME"], name
        assert env.get("MLFLOW_TRACKING_PASSWORD") == server["MLFLOW_AUTH_ADMIN_PASSWORD"], name


def test_compose_refuses_to_start_without_the_mlflow_secrets(tmp_path):
    for name in ("MLFLOW_ADMIN_PASSWORD", "MLFLOW_SECRET_KEY"):
        env = tmp_path / f"no-{name}.env"
        env.write_text("".join(line + "\n" for line in ENV_EXAMPLE.read_text().splitlines()
                               if not line.startswith(f"{name}=")))
        result = _compose_config(tmp_path, env)
        assert result.returncode != 0 and f"set {name} in .env" in result.stderr, result.stderr


MLFLOW_ARGS = ["--app-name", "basic-auth", "--port", "5000"]


def _mlflow_server_sh(env: dict[str, str], tmp_path: Path) -> tuple[subprocess.CompletedProcess, Path]:
    """docker/mlflow-server.sh with a stand-in `mlflow` that records its arguments and config."""
    bin_dir, record = tmp_path / "bin", tmp_path / "mlflow-called"
    bin_dir.mkdir(exist_ok=True)
    stub = bin_dir / "mlflow"
    stub.write_text(f'#!/bin/sh\n{{ echo "$@"; stat -c %a "$MLFLOW_AUTH_CONFIG_PATH"; cat "$MLFLOW_AUTH_CONFIG_PATH"; }} >{record}\n')
    stub.chmod(0o755)
    env = {**env, "PATH": f"{bin_dir}:{Path(sys.executable).parent}:/usr/bin:/bin",
           "PYTHONPATH": str(REPO_ROOT / "include"), "TMPDIR": str(tmp_path)}
    result = subprocess.run(["bash", str(REPO_ROOT / "docker" / "mlflow-server.sh"), *MLFLOW_ARGS],
                            env=env, capture_output=True, text=True, check=False, timeout=120)
    return result, record


def _rendered_mlflow_env(tmp_path: Path, env_text: str) -> dict[str, str]:
    env_file = tmp_path / ".env"
    env_file.write_text(env_text)
    result = _compose_config(tmp_path, env_file, home=tmp_path)
    assert result.returncode == 0, result.stderr
    return _env(yaml.safe_load(result.stdout)["services"]["mlflow"])


@pytest.mark.parametrize("password", ["change-me", "password1234", "short-secret", ""])
def test_mlflow_refuses_a_default_or_placeholder_admin_password(tmp_path, password):
    """The server's start script refuses .env.example's placeholders and MLflow's old default
    (`password1234`, basic_auth.ini before 3.x): `mlflow server` never runs with them."""
    sys.path.insert(0, str(REPO_ROOT / "docker"))
    try:
        import new_env
    finally:
        sys.path.pop(0)
    text = new_env.render(ENV_EXAMPLE.read_text())
    text = "".join(f"MLFLOW_ADMIN_PASSWORD={password}\n" if line.startswith("MLFLOW_ADMIN_PASSWORD=") else line + "\n"
                   for line in text.splitlines())
    if password:
        env = _rendered_mlflow_env(tmp_path, text)
    else:  # compose itself refuses an empty value (`:?`); the script does too
        env = {**_rendered_mlflow_env(tmp_path, new_env.render(ENV_EXAMPLE.read_text())), "MLFLOW_AUTH_ADMIN_PASSWORD": ""}
    result, record = _mlflow_server_sh(env, tmp_path)
    assert result.returncode != 0
    assert "MLFLOW_AUTH_ADMIN_PASSWORD" in result.stderr or "MLFLOW_ADMIN_PASSWORD" in result.stderr, result.stderr
    assert not record.exists(), "mlflow server started"


def test_mlflow_refuses_the_env_example_placeholders(tmp_path):
    env = _rendered_mlflow_env(tmp_path, ENV_EXAMPLE.read_text())
    result, record = _mlflow_server_sh(env, tmp_path)
    assert result.returncode == 1 and not record.exists()
    for name in ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY", "MLFLOW_TRACKING_PASSWORD",
                 "AIRLOOP_MLFLOW_AUTH_DB (password)"):
        assert name in result.stderr, result.stderr


def test_mlflow_start_writes_an_owner_only_auth_config_without_the_password(tmp_path):
    sys.path.insert(0, str(REPO_ROOT / "docker"))
    try:
        import new_env
    finally:
        sys.path.pop(0)
    env = _rendered_mlflow_env(tmp_path, new_env.render(ENV_EXAMPLE.read_text()))
    result, record = _mlflow_server_sh(env, tmp_path)
    assert result.returncode == 0, result.stderr
    args, mode, *config = record.read_text().splitlines()
    assert args == " ".join(["server", *MLFLOW_ARGS]) and mode == "600"
    assert f"database_uri = {env['AIRLOOP_MLFLOW_AUTH_DB']}" in config
    assert "default_permission = READ" in config
    text = "\n".join(config)
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"] not in text and "admin_password" not in text
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"] not in result.stdout + result.stderr


@pytest.mark.parametrize("name", list(BENTO_SERVICES))
def test_bento_serves_the_prediction_service(rendered, name):
    model, port = BENTO_SERVICES[name]
    bento = rendered["services"][name]
    assert _command(bento) == ["bentoml", "serve", "airloop.bento_service:PredictionService",
                               "--host", "0.0.0.0", "--port", str(port)]
    env = _env(bento)
    assert env["AIRLOOP_SERVE_MODEL"] == model, "with several specs a service must be told its model"
    assert env["BENTOML_CONTAINERIZED"] == "true" and env["OMP_NUM_THREADS"] == "1"
    assert env["AIRLOOP_PREDICTION_STORE"].startswith("postgresql://")
    assert env["AIRLOOP_SERVE_FEEDBACK_TOKEN"], "POST /feedback would be refused"
    assert bento["entrypoint"] == ["/usr/bin/dumb-init", "--"], "not the Airflow entrypoint"


def test_every_model_has_its_own_prediction_service(rendered):
    """Where Airflow looks for each model's service (serve_url_for) is a service serving that model."""
    from airloop.settings import environ, get_settings

    services = rendered["services"]
    models = sorted(p.stem for p in (REPO_ROOT / "include" / "models").glob("*.yaml"))
    assert len(models) >= 2, "two example models run side by side"
    served: dict[str, str] = {}
    for name in AIRFLOW_SERVICES:
        env = _env(services[name])
        urls = {k: v for k, v in env.items() if k.startswith("AIRLOOP_SERVE_URL")}
        # Only the serving variables of this service: nothing of the test's own environment.
        unset = {k: None for k in os.environ if k.startswith("AIRLOOP_SERVE_URL")}
        with environ({**unset, **urls}):
            settings = get_settings()
        for model in models:
            host = urlsplit(settings.serve_url_for(model))
            assert host.hostname in services, f"{name}: {model}'s service {host.hostname} is no compose service"
            target = services[host.hostname]
            assert _env(target).get("AIRLOOP_SERVE_MODEL") == model, f"{name}: {model} -> {host.hostname}"
            assert host.port == _listen_port(host.hostname, target), f"{name}: {model} -> {host.netloc}"
            assert served.setdefault(model, host.hostname) == host.hostname, f"{model}: Airflow services disagree"
    assert len(set(served.values())) == len(models), f"one service serves several models: {served}"


# -- volumes, images, healthchecks, ports -------------------------------------------------


def test_named_volumes_are_declared_and_used(compose):
    declared = set(compose.get("volumes") or {})
    used = set()
    for name, service in compose["services"].items():
        for vol in service.get("volumes", []):
            source = _mount_target(vol)[0]
            if not source.startswith((".", "/")):
                assert source in declared, f"{name} uses undeclared volume {source}"
                used.add(source)
            else:
                assert (COMPOSE.parent / source).exists(), f"{name} bind-mounts missing {source}"
    assert used == declared, f"declared but unused: {declared - used}"


def test_state_lives_on_named_volumes(rendered):
    """What must survive a container: the data, the DVC remote, reports, Bentos, the spill files."""
    declared = set(rendered["volumes"])
    image_env = dockerfile_env()
    needs = {
        "airflow-worker": ["AIRLOOP_HOME", "AIRLOOP_DVC_REMOTE", "AIRLOOP_REPORTS_DIR", "BENTOML_HOME"],
        **{name: ["BENTOML_HOME"] for name in BENTO_SERVICES},
    }
    for name, keys in needs.items():
        service = rendered["services"][name]
        env = {**image_env, **_env(service)}
        targets = _named_volume_targets(service, declared)
        for key in keys:
            assert _on(env[key], targets), f"{name}: {key}={env[key]} is not on a named volume"
    spills = {}
    for name in BENTO_SERVICES:
        bento = rendered["services"][name]
        home = {**image_env, **_env(bento)}["AIRLOOP_HOME"]
        mounts = {t: s for s, t in map(_mount_target, bento["volumes"]) if s in declared}
        assert _on(f"{home}/predictions", list(mounts)), f"{name}: prediction log spills"
        spills[name] = next(s for t, s in mounts.items() if _on(f"{home}/predictions", [t]))
    # A service replays the spill files it finds at start: one volume per service, or they mix.
    assert len(set(spills.values())) == len(spills), spills
    # Scaled workers share one copy of the data: every Airflow service mounts the same volumes.
    mounts = {n: sorted(map(str, rendered["services"][n]["volumes"])) for n in AIRFLOW_SERVICES}
    assert len({tuple(m) for m in mounts.values()}) == 1


def test_one_image_for_every_airloop_service(rendered):
    built = {n: s for n, s in rendered["services"].items() if "build" in s}
    assert set(built) == {*AIRFLOW_SERVICES, "mlflow", *BENTO_SERVICES}
    assert len({(s["image"], str(s["build"])) for s in built.values()}) == 1
    image = next(iter(built.values()))["image"]
    for name, service in rendered["services"].items():
        if name not in built:
            assert service["image"] != image and ":" in service["image"], f"{name}: pin an image tag"
            assert not service["image"].endswith(":latest"), name


def test_every_long_running_service_has_a_healthcheck(compose):
    for name, service in compose["services"].items():
        if name.endswith("-init"):
            continue
        assert "healthcheck" in service, f"{name} has no healthcheck"
        assert healthcheck_argv(service["healthcheck"]["test"]), name


def test_depends_on_use_conditions(rendered):
    services = rendered["services"]
    for name, service in services.items():
        deps = service.get("depends_on") or {}
        for dep, how in deps.items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            assert "condition" in how, f"{name} -> {dep} has no condition"
    # What a service needs at start-up is healthy first.
    needs = {name: {"postgres", "redis"} for name in AIRFLOW_SERVICES}
    needs.update({"mlflow": {"postgres"}, **{name: {"postgres", "redis", "mlflow"} for name in BENTO_SERVICES}})
    for name, deps in needs.items():
        for dep in deps:
            how = (services[name].get("depends_on") or {}).get(dep, {})
            assert how.get("condition") == "service_healthy", f"{name} must wait for {dep} to be healthy"


def test_published_ports_bind_loopback(rendered):
    published, host_ports = set(), []
    for name, service in rendered["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
            published.add(name)
            host_ports.append(str(port).split(":")[1])
    assert published == {"airflow-apiserver", "mlflow", *BENTO_SERVICES}
    assert len(host_ports) == len(set(host_ports)), f"two services publish one host port: {host_ports}"


def test_env_example_has_no_real_secrets():
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line and not line.startswith("#"):
            assert line.split("=", 1)[1] == "change-me", line


# -- the Dockerfile -----------------------------------------------------------------------


def _locked_airflow() -> str:
    return re.search(r"^apache-airflow==(\S+)$", (REPO_ROOT / "requirements.lock").read_text(), re.M).group(1)


def _hadolint(path: Path) -> subprocess.CompletedProcess:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    return subprocess.run([hadolint, str(path)], capture_output=True, text=True, check=False)


def test_dockerfile_uses_the_locked_airflow_and_lints_clean():
    dockerfile = DOCKERFILE.read_text()
    # The official image by default; a local equivalent only when AIRFLOW_BASE_IMAGE says so.
    assert f"ARG AIRFLOW_BASE_IMAGE=apache/airflow:{_locked_airflow()}-python3.11" in dockerfile
    froms = [rest for word, rest in dockerfile_instructions() if word == "FROM"]
    assert froms == ["${AIRFLOW_BASE_IMAGE}"], froms
    assert "-c /opt/airloop/requirements.lock" in dockerfile
    result = _hadolint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


OFFICIAL_IMAGES = {"postgres": "postgres:16", "redis": "redis:7.2-bookworm"}


def test_base_images_default_to_the_official_ones(rendered):
    """With nothing set, compose builds on apache/airflow and runs postgres and redis."""
    for name, image in OFFICIAL_IMAGES.items():
        assert rendered["services"][name]["image"] == image
    official_airflow = f"apache/airflow:{_locked_airflow()}-python3.11"
    for name, service in rendered["services"].items():
        if "build" in service:
            assert service["build"]["args"] == {"AIRFLOW_BASE_IMAGE": official_airflow}, name


def test_base_images_can_be_swapped_by_variable(tmp_path):
    env = tmp_path / ".env"
    local = {"AIRFLOW_BASE_IMAGE": "localhost/airloop/airflow:x", "POSTGRES_IMAGE": "localhost/airloop/postgres:15",
             "REDIS_IMAGE": "localhost/airloop/redis:7.0"}
    env.write_text(ENV_EXAMPLE.read_text() + "".join(f"{k}={v}\n" for k, v in local.items()))
    result = _compose_config(REPO_ROOT, env, home=tmp_path)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert services["postgres"]["image"] == local["POSTGRES_IMAGE"]
    assert services["redis"]["image"] == local["REDIS_IMAGE"]
    assert services["airflow-worker"]["build"]["args"]["AIRFLOW_BASE_IMAGE"] == local["AIRFLOW_BASE_IMAGE"]
    # Each variable is documented (commented out, with the official default) in .env.example.
    example = ENV_EXAMPLE.read_text()
    for key, default in {"AIRFLOW_BASE_IMAGE": f"apache/airflow:{_locked_airflow()}-python3.11",
                         "POSTGRES_IMAGE": OFFICIAL_IMAGES["postgres"], "REDIS_IMAGE": OFFICIAL_IMAGES["redis"]}.items():
        assert f"# {key}={default}\n" in example, key


LOCAL_BASE = REPO_ROOT / "docker" / "local-base"


@pytest.mark.parametrize("image", ["airflow", "postgres", "redis"])
def test_local_base_images_lint_clean_and_copy_what_exists(image):
    containerfile = LOCAL_BASE / image / "Containerfile"
    result = _hadolint(containerfile)
    assert result.returncode == 0, result.stdout + result.stderr
    # build.sh builds with the repo as context: every COPY source is a path in the repo.
    for src, _ in dockerfile_copies(containerfile):
        assert (REPO_ROOT / src).exists(), f"{containerfile}: COPY source {src} does not exist"


def test_local_airflow_base_keeps_the_official_contract_the_compose_file_uses():
    """What docker-compose.yaml and the Dockerfile rely on from apache/airflow."""
    text = (LOCAL_BASE / "airflow" / "Containerfile").read_text()
    instructions = dockerfile_instructions(LOCAL_BASE / "airflow" / "Containerfile")
    assert ("ENTRYPOINT", '["/usr/bin/dumb-init", "--", "/entrypoint"]') in instructions
    assert ("USER", "50000") in instructions and ("WORKDIR", "/opt/airflow") in instructions
    assert "--uid 50000 --gid 0" in text and "/home/airflow/.local" in text
    env = dockerfile_env(LOCAL_BASE / "airflow" / "Containerfile")
    assert env["AIRFLOW_HOME"] == "/opt/airflow"
    assert env["PATH"].startswith("/home/airflow/.local/bin:")
    # The version installed is the lock's: build.sh passes it and tags the image with it.
    build = (LOCAL_BASE / "build.sh").read_text()
    assert "sed -n 's/^apache-airflow==//p'" in build and 'AIRFLOW_VERSION=$airflow_version' in build
    # The commands the compose file gives the image reach airflow; bash and python run as given.
    entry = (LOCAL_BASE / "airflow" / "entrypoint.sh").read_text()
    assert 'exec airflow "$@"' in entry and "bash) shift; exec /bin/bash" in entry


def test_dockerfile_installs_nothing_unpinned():
    for word, rest in dockerfile_instructions():
        if word == "RUN" and "pip install" in rest:
            assert "-c /opt/airloop/requirements.lock" in rest and "-r /opt/airloop/requirements.txt" in rest, rest
            assert not re.search(r"pip install[^&]*\s(?!-)[A-Za-z][\w.-]*(\s|$)", rest.replace("--no-cache-dir", "")), rest


def test_dockerfile_puts_the_project_in_place():
    copies = {dest: src for src, dest in dockerfile_copies()}
    for path in ("include", "dags", "plugins", "feature_repo"):
        assert copies.get(f"/opt/airflow/{path}") == path, f"{path}/ is not copied to /opt/airflow/{path}"
    for src in copies.values():
        assert (REPO_ROOT / src).exists(), f"COPY source {src} does not exist"
    env = dockerfile_env()
    assert env["PYTHONPATH"] == "/opt/airflow/include"
    assert env["AIRLOOP_MODELS_DIR"] == "/opt/airflow/include/models"
    assert env["AIRLOOP_FEATURE_REPO"] == "/opt/airflow/feature_repo"
    for key in ("BENTOML_DO_NOT_TRACK", "DVC_NO_ANALYTICS", "GX_ANALYTICS_ENABLED", "DO_NOT_TRACK"):
        assert key in env, f"telemetry switch {key} missing"


def test_build_context_leaves_out_state_and_secrets_but_not_the_project():
    import fnmatch

    patterns = [line.strip() for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]

    def ignored(path: str) -> bool:
        return any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(path.split("/")[0], p) for p in patterns)

    for path in (".env", ".venv", ".airloop", ".git", "dags/__pycache__/x.pyc"):
        assert ignored(path), f"{path} would be sent to the Docker build"
    for src in {src for src, _ in dockerfile_copies()} | {"requirements.txt", "requirements.lock"}:
        for part in src.split():
            assert not ignored(part.rstrip("/")), f"COPY source {part} is excluded by .dockerignore"


def test_image_has_the_uv_bentoml_builds_with():
    """BentoML pip-installs uv while building a Bento when it is missing: the image must carry it
    (compose_run.py's package run failed without network access from the worker)."""
    runtime = (REPO_ROOT / "requirements.txt").read_text()
    pinned = re.search(r"^uv==(\S+)$", runtime, re.MULTILINE)
    assert pinned, "uv is not a runtime requirement"
    assert f"\nuv=={pinned.group(1)}\n" in (REPO_ROOT / "requirements.lock").read_text()
    assert f"UV_VERSION := {pinned.group(1)}" in (REPO_ROOT / "Makefile").read_text()


def test_image_installs_the_runtime_requirements_only():
    runtime = (REPO_ROOT / "requirements.txt").read_text()
    for tool in ("pytest", "ruff", "hadolint"):
        assert not re.search(rf"^{tool}", runtime, re.M), f"{tool} belongs in requirements-dev.txt"
    dev = (REPO_ROOT / "requirements-dev.txt").read_text()
    assert "-r requirements.txt" in dev


# -- the native rehearsal's translation (no process started) -------------------------------


def test_native_translation_leaves_no_container_names_or_paths(tmp_path):
    stack = NativeStack(tmp_path, db_prefix="rh_static", redis_dbs={0: 11, 1: 12}).load()
    names = set(stack.services)
    for svc in stack.services.values():
        values = [v for k, v in svc.env.items() if k not in __import__("os").environ or __import__("os").environ[k] != v]
        for value in [*values, *svc.argv]:
            for host, port, how in _hosts(value):
                assert host not in names, f"{svc.name}: {how} left untranslated"
            assert not re.search(r"(?<![\w/.-])/opt/", value), f"{svc.name}: container path left in {value}"
    worker = stack.services["airflow-worker"].env
    assert worker["AIRFLOW__CELERY__BROKER_URL"] == "redis://127.0.0.1:6379/11"
    assert worker["AIRLOOP_FEAST_REDIS"] == "127.0.0.1:6379,db=12"
    assert worker["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == "postgresql+psycopg2://postgres@127.0.0.1:5432/rh_static_airflow"
    assert (Path(worker["AIRFLOW_HOME"]) / "dags").resolve() == REPO_ROOT / "dags"


# -- Kubernetes: the Helm values ------------------------------------------------------------


def test_helm_values_run_the_same_image_executor_and_environment(rendered):
    values = yaml.safe_load(VALUES.read_text())
    assert values["executor"] == "CeleryExecutor"
    locked = re.search(r"^apache-airflow==(\S+)$", (REPO_ROOT / "requirements.lock").read_text(), re.M).group(1)
    assert values["airflowVersion"] == locked
    assert values["images"]["airflow"]["repository"] == rendered["services"]["airflow-worker"]["image"].split(":")[0]
    env = {e["name"] for e in values["env"]} | {s["envName"] for s in values["secret"]}
    assert set(AIRLOOP_ENV) | set(AIRLOOP_POSTGRES_ENV) | {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"} <= env
    mounts = {m["mountPath"] for m in values["volumeMounts"]}
    image_env = dockerfile_env()
    for key in ("AIRLOOP_HOME", "AIRLOOP_DVC_REMOTE", "AIRLOOP_REPORTS_DIR", "BENTOML_HOME"):
        assert image_env[key] in mounts, f"{key} is not on a shared volume in Kubernetes"
    auth = values["config"]["core"]
    compose_env = _env(rendered["services"]["airflow-apiserver"])
    assert auth["auth_manager"] == compose_env["AIRFLOW__CORE__AUTH_MANAGER"]
    assert auth["simple_auth_manager_passwords_file"] == compose_env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]
