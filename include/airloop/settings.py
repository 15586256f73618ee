"""The one configuration source: environment variables with embedded defaults.

Every path defaults to a place under ``AIRLOOP_HOME`` (``.airloop/`` in the repo), so a fresh
clone runs on SQLite and local files. The compose stack sets the same variables to Postgres,
Redis and the MLflow server. Nothing here imports a heavy library.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, fields
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def _env(name: str, default: str) -> str:
    value = os.environ.get(name, "")
    return value if value.strip() else default


def _path(name: str, default: Path) -> Path:
    return Path(_env(name, str(default))).expanduser().resolve()


@dataclass(frozen=True)
class Settings:
    home: Path
    models_dir: Path
    feature_repo: Path
    landing_dir: Path
    quarantine_dir: Path
    offline_dir: Path
    dvc_workspace: Path
    dvc_remote: str
    validation_dir: Path
    mlflow_tracking_uri: str
    mlflow_artifacts_dir: Path
    feast_registry: str
    feast_online_store: str
    feast_redis_url: str
    bentoml_home: Path
    reports_dir: Path
    prediction_store: str
    serve_url: str

    def as_env(self) -> dict[str, str]:
        """The settings as the environment variables that produce them (for subprocesses)."""
        return {_ENV_NAMES[f.name]: str(getattr(self, f.name)) for f in fields(self)}


_ENV_NAMES = {
    "home": "AIRLOOP_HOME",
    "models_dir": "AIRLOOP_MODELS_DIR",
    "feature_repo": "AIRLOOP_FEATURE_REPO",
    "landing_dir": "AIRLOOP_LANDING_DIR",
    "quarantine_dir": "AIRLOOP_QUARANTINE_DIR",
    "offline_dir": "AIRLOOP_OFFLINE_DIR",
    "dvc_workspace": "AIRLOOP_DVC_WORKSPACE",
    "dvc_remote": "AIRLOOP_DVC_REMOTE",
    "validation_dir": "AIRLOOP_VALIDATION_DIR",
    "mlflow_tracking_uri": "MLFLOW_TRACKING_URI",
    "mlflow_artifacts_dir": "AIRLOOP_MLFLOW_ARTIFACTS_DIR",
    "feast_registry": "AIRLOOP_FEAST_REGISTRY",
    "feast_online_store": "AIRLOOP_FEAST_ONLINE_STORE",
    "feast_redis_url": "AIRLOOP_FEAST_REDIS",
    "bentoml_home": "BENTOML_HOME",
    "reports_dir": "AIRLOOP_REPORTS_DIR",
    "prediction_store": "AIRLOOP_PREDICTION_STORE",
    "serve_url": "AIRLOOP_SERVE_URL",
}


def get_settings() -> Settings:
    """Read the settings from the environment now (cheap; not cached so tests can change env)."""
    home = _path("AIRLOOP_HOME", REPO_ROOT / ".airloop")
    return Settings(
        home=home,
        models_dir=_path("AIRLOOP_MODELS_DIR", REPO_ROOT / "include" / "models"),
        feature_repo=_path("AIRLOOP_FEATURE_REPO", REPO_ROOT / "feature_repo"),
        landing_dir=_path("AIRLOOP_LANDING_DIR", home / "landing"),
        quarantine_dir=_path("AIRLOOP_QUARANTINE_DIR", home / "quarantine"),
        offline_dir=_path("AIRLOOP_OFFLINE_DIR", home / "offline"),
        dvc_workspace=_path("AIRLOOP_DVC_WORKSPACE", home / "dvc" / "workspace"),
        dvc_remote=_env("AIRLOOP_DVC_REMOTE", str(home / "dvc" / "remote")),
        validation_dir=_path("AIRLOOP_VALIDATION_DIR", home / "validation"),
        mlflow_tracking_uri=_env("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"),
        mlflow_artifacts_dir=_path("AIRLOOP_MLFLOW_ARTIFACTS_DIR", home / "mlflow" / "artifacts"),
        feast_registry=_env("AIRLOOP_FEAST_REGISTRY", str(home / "feast" / "registry.db")),
        feast_online_store=_env("AIRLOOP_FEAST_ONLINE_STORE", str(home / "feast" / "online.db")),
        feast_redis_url=_env("AIRLOOP_FEAST_REDIS", ""),
        bentoml_home=_path("BENTOML_HOME", home / "bentoml"),
        reports_dir=_path("AIRLOOP_REPORTS_DIR", home / "reports"),
        prediction_store=_env(
            "AIRLOOP_PREDICTION_STORE", f"sqlite:///{home / 'predictions' / 'predictions.db'}"
        ),
        serve_url=_env("AIRLOOP_SERVE_URL", "http://127.0.0.1:3300"),
    )


def ensure_dirs(settings: Settings | None = None) -> Settings:
    """Create the local directories the embedded runtime writes to."""
    s = settings or get_settings()
    for path in (
        s.home,
        s.landing_dir,
        s.quarantine_dir,
        s.offline_dir,
        s.dvc_workspace,
        s.validation_dir,
        s.mlflow_artifacts_dir,
        s.bentoml_home,
        s.reports_dir,
        s.home / "feast",
        s.home / "predictions",
    ):
        path.mkdir(parents=True, exist_ok=True)
    if "://" not in s.dvc_remote:
        Path(s.dvc_remote).mkdir(parents=True, exist_ok=True)
    return s


@contextlib.contextmanager
def environ(values: dict[str, str | None]):
    """Set (or, with None, unset) environment variables for the block, then restore them."""
    saved = {name: os.environ.get(name) for name in values}
    try:
        _set_environ(values)
        yield
    finally:
        _set_environ(saved)


def _set_environ(values: dict[str, str | None]) -> None:
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
