"""The one configuration source: environment variables with embedded defaults.

Every path defaults to a place under ``AIRLOOP_HOME`` (``.airloop/`` in the repo), so a fresh
clone runs on SQLite and local files. The compose stack sets the same variables to Postgres,
Redis and the MLflow server. Nothing here imports a heavy library.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from collections.abc import Iterator
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]


def _env(name: str, default: str) -> str:
    value = os.environ.get(name, "")
    return value if value.strip() else default


def _path(name: str, default: Path) -> Path:
    return Path(_env(name, str(default))).expanduser().resolve()


def _flag(name: str, default: bool) -> bool:
    raw = _env(name, str(default)).strip().lower()
    if raw not in ("true", "false", "1", "0", "yes", "no"):
        raise ValueError(f"{name} must be true or false, got {raw!r}")
    return raw in ("true", "1", "yes")


def _positive_int(name: str, default: int) -> int:
    raw = _env(name, str(default)).strip()
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError(f"{name} must be a positive whole number, got {raw!r}")
    return value


# The largest landing file ingest reads: 256 MiB is ~3M rows of the demo schema (its row_count
# rule stops at 1M); reading peaks near 3x the file size (bench/bench_ingest.py).
DEFAULT_MAX_BATCH_BYTES = 256 * 1024 * 1024
# More concurrent ingest tasks than this only thrash 2 cores and hold ~0.3 GB each.
DEFAULT_INGEST_PARALLELISM = 4


@dataclass(frozen=True)
class Settings:
    """Every path, URL and limit Airloop reads from the environment (see :func:`get_settings`)."""

    home: Path
    models_dir: Path
    feature_repo: Path
    landing_dir: Path
    max_batch_bytes: int
    quarantine_dir: Path
    offline_dir: Path
    dvc_workspace: Path
    dvc_remote: str
    validation_dir: Path
    mlflow_tracking_uri: str
    # Where a browser reaches the MLflow UI ("" : the tracking URI if it is http(s)); in compose
    # the tracking URI names a service host a browser cannot resolve.
    mlflow_ui_url: str
    mlflow_artifacts_dir: Path
    feast_registry: str
    feast_online_store: str
    feast_redis_url: str
    bentoml_home: Path
    reports_dir: Path
    prediction_store: str
    # The prediction service of a model without a URL of its own (AIRLOOP_SERVE_URL).
    serve_url: str
    # Per-model prediction service URLs: (MODEL_KEY, url) pairs from AIRLOOP_SERVE_URL__<MODEL_KEY>,
    # sorted. A tuple, not a dict, so that Settings stays immutable; read it with serve_url_for().
    serve_urls: tuple[tuple[str, str], ...] = ()
    # Batches one ingest run validates at once (AIRLOOP_INGEST_PARALLELISM). They take turns on
    # the data workspace, but each task's imports (Great Expectations: seconds) overlap.
    ingest_parallelism: int = DEFAULT_INGEST_PARALLELISM
    # The scheduler (LocalExecutor) and the Celery worker import the tasks' libraries before
    # forking task processes (AIRLOOP_PRELOAD; see airloop.preload).
    preload: bool = True

    def serve_url_for(self, model: str) -> str:
        """Where ``model``'s prediction service answers.

        ``AIRLOOP_SERVE_URL__<MODEL>`` (the model name upper-cased, e.g.
        ``AIRLOOP_SERVE_URL__MY_MODEL``) if set, else ``AIRLOOP_SERVE_URL``. A service serves
        one model (``AIRLOOP_SERVE_MODEL``), so with several specs each needs a URL of its own;
        the shared one suits a single model, or the one model whose service it names.
        """
        return dict(self.serve_urls).get(_model_key(model), self.serve_url)

    def as_env(self) -> dict[str, str]:
        """The settings as the environment variables that produce them (for subprocesses)."""
        env = {_ENV_NAMES[f.name]: str(getattr(self, f.name)) for f in fields(self) if f.name in _ENV_NAMES}
        env.update({SERVE_URL_PREFIX + key: url for key, url in self.serve_urls})
        return env


# A model's own prediction service URL: this prefix, then the model name upper-cased.
SERVE_URL_PREFIX = "AIRLOOP_SERVE_URL__"


def _model_key(model: str) -> str:
    """A model name as it appears in a variable name (``my_model`` -> ``MY_MODEL``)."""
    # Spec names are lower_snake_case; anything else is mapped to what a shell variable allows.
    return re.sub(r"[^A-Z0-9_]", "_", model.upper())


def serve_url_env(model: str) -> str:
    """The variable that names ``model``'s own prediction service, e.g. ``AIRLOOP_SERVE_URL__MY_MODEL``."""
    return SERVE_URL_PREFIX + _model_key(model)


def _serve_urls() -> tuple[tuple[str, str], ...]:
    """Every non-blank ``AIRLOOP_SERVE_URL__<MODEL>`` in the environment, as sorted (key, url) pairs."""
    found = {
        _model_key(name.removeprefix(SERVE_URL_PREFIX)): value.strip()
        for name, value in os.environ.items()
        if name.startswith(SERVE_URL_PREFIX) and len(name) > len(SERVE_URL_PREFIX) and value.strip()
    }
    return tuple(sorted(found.items()))


_ENV_NAMES = {
    "home": "AIRLOOP_HOME",
    "models_dir": "AIRLOOP_MODELS_DIR",
    "feature_repo": "AIRLOOP_FEATURE_REPO",
    "landing_dir": "AIRLOOP_LANDING_DIR",
    "max_batch_bytes": "AIRLOOP_MAX_BATCH_BYTES",
    "quarantine_dir": "AIRLOOP_QUARANTINE_DIR",
    "offline_dir": "AIRLOOP_OFFLINE_DIR",
    "dvc_workspace": "AIRLOOP_DVC_WORKSPACE",
    "dvc_remote": "AIRLOOP_DVC_REMOTE",
    "validation_dir": "AIRLOOP_VALIDATION_DIR",
    "mlflow_tracking_uri": "MLFLOW_TRACKING_URI",
    "mlflow_ui_url": "AIRLOOP_MLFLOW_UI_URL",
    "mlflow_artifacts_dir": "AIRLOOP_MLFLOW_ARTIFACTS_DIR",
    "feast_registry": "AIRLOOP_FEAST_REGISTRY",
    "feast_online_store": "AIRLOOP_FEAST_ONLINE_STORE",
    "feast_redis_url": "AIRLOOP_FEAST_REDIS",
    "bentoml_home": "BENTOML_HOME",
    "reports_dir": "AIRLOOP_REPORTS_DIR",
    "prediction_store": "AIRLOOP_PREDICTION_STORE",
    "serve_url": "AIRLOOP_SERVE_URL",
    "ingest_parallelism": "AIRLOOP_INGEST_PARALLELISM",
    "preload": "AIRLOOP_PRELOAD",
}


def get_settings() -> Settings:
    """Read the settings from the environment now (cheap; not cached so tests can change env)."""
    home = _path("AIRLOOP_HOME", REPO_ROOT / ".airloop")
    return Settings(
        home=home,
        models_dir=_path("AIRLOOP_MODELS_DIR", REPO_ROOT / "include" / "models"),
        feature_repo=_path("AIRLOOP_FEATURE_REPO", REPO_ROOT / "feature_repo"),
        landing_dir=_path("AIRLOOP_LANDING_DIR", home / "landing"),
        max_batch_bytes=_positive_int("AIRLOOP_MAX_BATCH_BYTES", DEFAULT_MAX_BATCH_BYTES),
        quarantine_dir=_path("AIRLOOP_QUARANTINE_DIR", home / "quarantine"),
        offline_dir=_path("AIRLOOP_OFFLINE_DIR", home / "offline"),
        dvc_workspace=_path("AIRLOOP_DVC_WORKSPACE", home / "dvc" / "workspace"),
        dvc_remote=_env("AIRLOOP_DVC_REMOTE", str(home / "dvc" / "remote")),
        validation_dir=_path("AIRLOOP_VALIDATION_DIR", home / "validation"),
        mlflow_tracking_uri=_env("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"),
        mlflow_ui_url=_env("AIRLOOP_MLFLOW_UI_URL", ""),
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
        serve_urls=_serve_urls(),
        ingest_parallelism=_positive_int("AIRLOOP_INGEST_PARALLELISM", DEFAULT_INGEST_PARALLELISM),
        preload=_flag("AIRLOOP_PRELOAD", True),
    )


# -- the prediction service ------------------------------------------------------------------


class ServeConfigError(ValueError):
    """A serving environment variable has an invalid value."""


@dataclass(frozen=True)
class ServeConfig:
    """Serving knobs, read from the environment (see :func:`serve_config`)."""

    model: str | None = None  # AIRLOOP_SERVE_MODEL: spec name (default: the only spec)
    poll_seconds: float = 10.0  # AIRLOOP_SERVE_POLL_SECONDS: registry poll for @champion
    # On 2 cores 1 thread served more requests/s than 4 (bench_serve); more may pay off where
    # the online store is remote (Redis) and lookups wait on the network.
    threads: int = 1  # AIRLOOP_SERVE_THREADS: concurrent sync requests per worker process
    # /predict's lookup + predict is ~1-2 ms of CPU, which the GIL serializes anyway: computed on
    # the event loop it skips a thread hop (bench_serve: lower p99, more req/s). With an online
    # store far away on the network, set true so concurrent lookups overlap in THREADS threads.
    predict_in_thread: bool = False  # AIRLOOP_SERVE_PREDICT_IN_THREAD
    workers: int = 1  # AIRLOOP_SERVE_WORKERS: server processes
    access_log: bool = True  # AIRLOOP_SERVE_ACCESS_LOG: one log line per request (the prediction log has them all)
    trace_predict: bool = False  # AIRLOOP_SERVE_TRACE_PREDICT: OTel spans on /predict(_batch); see bento_service
    max_batch_rows: int = 1000  # AIRLOOP_SERVE_MAX_BATCH_ROWS: rows per /predict_batch
    max_body_bytes: int = 1_048_576  # AIRLOOP_SERVE_MAX_BODY_BYTES: request body cap (413)
    timeout_seconds: float = 10.0  # AIRLOOP_SERVE_TIMEOUT_SECONDS: then 504
    flush_seconds: float = 0.5  # AIRLOOP_PREDICTION_LOG_FLUSH_SECONDS: log write interval
    log_batch_size: int = 500  # AIRLOOP_PREDICTION_LOG_BATCH_SIZE: rows per log write
    max_pending: int = 100_000  # AIRLOOP_PREDICTION_LOG_MAX_PENDING: then spill to disk
    max_spill_bytes: int = 1 << 30  # AIRLOOP_PREDICTION_LOG_MAX_SPILL_BYTES: then refuse (503)
    # AIRLOOP_SERVE_FEEDBACK_TOKEN: bearer token POST /feedback requires; unset: feedback is refused.
    feedback_token: str | None = None

    def as_env(self) -> dict[str, str]:
        """The knobs as environment variables, for display: unset ones left out, secrets masked."""
        values = {name: getattr(self, name) for name in _CONFIG_ENV}
        return {
            env: "***" if name in _SECRET_KNOBS else str(value).lower() if isinstance(value, bool) else str(value)
            for name, env in _CONFIG_ENV.items()
            if (value := values[name]) is not None
        }


_CONFIG_ENV = {
    "model": "AIRLOOP_SERVE_MODEL",
    "poll_seconds": "AIRLOOP_SERVE_POLL_SECONDS",
    "threads": "AIRLOOP_SERVE_THREADS",
    "predict_in_thread": "AIRLOOP_SERVE_PREDICT_IN_THREAD",
    "workers": "AIRLOOP_SERVE_WORKERS",
    "access_log": "AIRLOOP_SERVE_ACCESS_LOG",
    "trace_predict": "AIRLOOP_SERVE_TRACE_PREDICT",
    "max_batch_rows": "AIRLOOP_SERVE_MAX_BATCH_ROWS",
    "max_body_bytes": "AIRLOOP_SERVE_MAX_BODY_BYTES",
    "timeout_seconds": "AIRLOOP_SERVE_TIMEOUT_SECONDS",
    "flush_seconds": "AIRLOOP_PREDICTION_LOG_FLUSH_SECONDS",
    "log_batch_size": "AIRLOOP_PREDICTION_LOG_BATCH_SIZE",
    "max_pending": "AIRLOOP_PREDICTION_LOG_MAX_PENDING",
    "max_spill_bytes": "AIRLOOP_PREDICTION_LOG_MAX_SPILL_BYTES",
    "feedback_token": "AIRLOOP_SERVE_FEEDBACK_TOKEN",
}
_SECRET_KNOBS = {"feedback_token"}


def serve_config() -> ServeConfig:
    """The serving configuration from the environment, with a clear error for a bad value."""
    defaults = ServeConfig()
    values: dict[str, Any] = {}
    for name, env in _CONFIG_ENV.items():
        raw = os.environ.get(env, "").strip()
        if not raw:
            continue
        default = getattr(defaults, name)
        if default is None:
            values[name] = raw
            continue
        if isinstance(default, bool):
            if raw.lower() not in ("true", "false", "1", "0"):
                raise ServeConfigError(f"{env}={raw!r} is not true or false")
            values[name] = raw.lower() in ("true", "1")
            continue
        try:
            value = type(default)(raw)
        except ValueError:
            raise ServeConfigError(f"{env}={raw!r} is not a {type(default).__name__}") from None
        if not value > 0:
            raise ServeConfigError(f"{env}={raw!r} must be positive")
        values[name] = value
    return ServeConfig(**values)


# -- the Airflow API, as the `airloop` command reaches it -------------------------------------


class ApiConfigError(ValueError):
    """The `airloop` command cannot log in with what the environment gives it."""


@dataclass(frozen=True)
class ApiConfig:
    """Where the ``airloop`` command finds Airflow's REST API, and how it logs in.

    ``AIRLOOP_AIRFLOW_URL`` (default ``http://127.0.0.1:8080``, ``make up``'s api-server);
    ``AIRLOOP_AIRFLOW_USER`` (default ``admin``) with ``AIRLOOP_AIRFLOW_PASSWORD``, exchanged for a
    JWT at ``/auth/token``, or ``AIRLOOP_AIRFLOW_TOKEN``, a JWT used as it is. The password has no
    default; ``AIRLOOP_AIRFLOW_TIMEOUT`` (seconds, default 60: an api-server's first Models call
    imports MLflow, seconds on a busy machine) bounds each answer, and connecting takes at most 10 s.
    """

    url: str = "http://127.0.0.1:8080"
    user: str = "admin"
    password: str = field(default="", repr=False)
    token: str = field(default="", repr=False)
    timeout: float = 60.0

    def as_env(self) -> dict[str, str]:
        """For display: the password and token masked, unset ones left out."""
        env = {"AIRLOOP_AIRFLOW_URL": self.url, "AIRLOOP_AIRFLOW_USER": self.user,
               "AIRLOOP_AIRFLOW_TIMEOUT": str(self.timeout)}
        env.update({name: "***" for name, value in (("AIRLOOP_AIRFLOW_PASSWORD", self.password),
                                                    ("AIRLOOP_AIRFLOW_TOKEN", self.token)) if value})
        return env


def api_config() -> ApiConfig:
    """The ``airloop`` command's Airflow API settings from the environment (see :class:`ApiConfig`)."""
    raw = _env("AIRLOOP_AIRFLOW_TIMEOUT", str(ApiConfig.timeout)).strip()
    try:
        timeout = float(raw)
    except ValueError:
        timeout = 0.0
    if not timeout > 0:
        raise ApiConfigError(f"AIRLOOP_AIRFLOW_TIMEOUT must be a positive number of seconds, got {raw!r}")
    return ApiConfig(
        url=_env("AIRLOOP_AIRFLOW_URL", ApiConfig.url).strip().rstrip("/"),
        user=_env("AIRLOOP_AIRFLOW_USER", ApiConfig.user).strip(),
        password=os.environ.get("AIRLOOP_AIRFLOW_PASSWORD", ""),
        token=os.environ.get("AIRLOOP_AIRFLOW_TOKEN", "").strip(),
        timeout=timeout,
    )


# -- secrets ---------------------------------------------------------------------------------

# Secrets the stack reads (compose and Helm set them; the embedded start leaves Airflow to
# generate its own). Passwords inside database URLs are checked too.
SECRET_VARIABLES = (
    "AIRFLOW__CORE__FERNET_KEY",
    "AIRFLOW__API_AUTH__JWT_SECRET",
    "AIRFLOW__API__SECRET_KEY",
    "AIRLOOP_ADMIN_PASSWORD",
    "AIRLOOP_SERVE_FEEDBACK_TOKEN",
    # MLflow's basic auth (compose): the clients' password, the server's admin and CSRF key.
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_AUTH_ADMIN_PASSWORD",
    "MLFLOW_FLASK_SERVER_SECRET_KEY",
)
SECRET_URL_VARIABLES = (
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    "AIRFLOW__CELERY__RESULT_BACKEND",
    "AIRFLOW__CELERY__BROKER_URL",
    "AIRLOOP_PREDICTION_STORE",
    "AIRLOOP_FEAST_REGISTRY",
    "MLFLOW_TRACKING_URI",
    "AIRLOOP_MLFLOW_AUTH_DB",
)
PLACEHOLDER_SECRETS = frozenset({"change-me", "changeme", "change_me", "secret", "password", "admin", "airflow"})
MIN_SECRET_LENGTH = 16


class WeakSecretError(ValueError):
    """A secret is empty, a placeholder or too short to be anything but a default."""


def _url_password(url: str) -> str | None:
    match = re.match(r"^[a-z0-9+.-]+://[^:/@]*:([^@]*)@", url, re.IGNORECASE)
    return match.group(1) if match else None


def weak_secrets(env: "dict[str, str] | None" = None) -> list[str]:
    """The names of the secrets in ``env`` (default: this process's) that must not be used.

    A secret that is set must be at least ``MIN_SECRET_LENGTH`` characters and no placeholder;
    so must a password inside a database URL (``NAME (password)``). Unset secrets are not
    reported: the embedded start leaves Airflow to generate its own.
    """
    env = dict(os.environ) if env is None else env
    weak = []
    for name in SECRET_VARIABLES:
        if name in env and (env[name].strip().lower() in PLACEHOLDER_SECRETS or len(env[name].strip()) < MIN_SECRET_LENGTH):
            weak.append(name)
    for name in SECRET_URL_VARIABLES:
        password = _url_password(env.get(name, ""))
        if password is not None and (password.lower() in PLACEHOLDER_SECRETS or len(password) < MIN_SECRET_LENGTH):
            weak.append(f"{name} (password)")
    return weak


def require_strong_secrets(env: "dict[str, str] | None" = None) -> None:
    """Raise :class:`WeakSecretError` naming every weak secret (see :func:`weak_secrets`)."""
    weak = weak_secrets(env)
    if weak:
        raise WeakSecretError(
            f"refusing to start with empty, placeholder or short (< {MIN_SECRET_LENGTH} characters) secrets: "
            f"{', '.join(weak)}. Make new ones with: python docker/new_env.py"
        )


def ensure_dirs(settings: Settings | None = None) -> Settings:
    """Create the local directories the embedded runtime writes to.

    ``AIRLOOP_HOME`` is made owner-only (0700): it holds the MLflow database, the online store,
    the prediction log and validation records, which other users of the machine must not read.
    """
    s = settings or get_settings()
    s.home.mkdir(parents=True, exist_ok=True)
    if s.home.stat().st_uid == os.getuid():
        s.home.chmod(0o700)
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
def environ(values: dict[str, str | None]) -> Iterator[None]:
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
