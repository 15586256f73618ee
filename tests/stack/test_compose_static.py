"""Static checks of docker-compose.yaml and the Dockerfile (no Docker engine runs here)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from airloop.settings import REPO_ROOT

COMPOSE = REPO_ROOT / "docker-compose.yaml"


def _compose_config(tmp_path: Path, env_file: Path | None) -> subprocess.CompletedProcess:
    exe = shutil.which("docker-compose")
    assert exe, "docker-compose (Debian package) is installed by `make test`"
    args = [exe, "--project-directory", str(tmp_path), "-f", str(COMPOSE)]
    if env_file:
        args += ["--env-file", str(env_file)]
    return subprocess.run([*args, "config"], capture_output=True, text=True, cwd=tmp_path)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_refuses_to_start_without_secrets(tmp_path):
    result = _compose_config(tmp_path, env_file=None)
    assert result.returncode != 0
    assert "in .env (see .env.example)" in result.stderr


def test_compose_validates_with_env_example(tmp_path):
    result = _compose_config(tmp_path, env_file=REPO_ROOT / ".env.example")
    assert result.returncode == 0, result.stderr
    rendered = yaml.safe_load(result.stdout)
    assert "airflow-apiserver" in rendered["services"]


def test_every_long_running_service_has_a_healthcheck(compose):
    for name, service in compose["services"].items():
        if name.endswith("-init"):
            continue
        assert "healthcheck" in service, f"{name} has no healthcheck"


def test_depends_on_use_conditions(compose):
    for name, service in compose["services"].items():
        for dep, how in (service.get("depends_on") or {}).items():
            assert dep in compose["services"], f"{name} depends on unknown service {dep}"
            assert "condition" in how, f"{name} -> {dep} has no condition"


def test_published_ports_bind_loopback(compose):
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


def test_named_volumes_are_declared(compose):
    declared = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        for vol in service.get("volumes", []):
            source = str(vol).split(":", 1)[0]
            if not source.startswith((".", "/")):
                assert source in declared, f"{name} uses undeclared volume {source}"


def test_env_example_has_no_real_secrets():
    for line in (REPO_ROOT / ".env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            assert line.split("=", 1)[1] == "change-me", line


def test_dockerfile_uses_the_locked_airflow_and_lints_clean():
    locked = re.search(r"^apache-airflow==(\S+)$", (REPO_ROOT / "requirements.lock").read_text(), re.M)
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert f"FROM apache/airflow:{locked.group(1)}-python3.11" in dockerfile
    assert "-c /opt/airloop/requirements.lock" in dockerfile
    hadolint = shutil.which("hadolint") or str(Path(__import__("sys").executable).parent / "hadolint")
    result = subprocess.run([hadolint, str(REPO_ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
