"""Serving stage: the champion model, online features, predictions and the prediction log.

Everything here runs in-process without BentoML; ``airloop.bento_service`` wraps it in an
HTTP service. The pieces:

- :class:`ChampionWatcher` keeps the ``@champion`` version of a model in memory and polls the
  MLflow registry every ``AIRLOOP_SERVE_POLL_SECONDS`` (default 10). When the alias moves it
  loads and checks the new version first, then swaps one reference: a request that already
  took the old model finishes with it, the next one gets the new model, and nothing restarts.
- :func:`lookup_and_predict` reads a row's online features through the spec's Feast
  FeatureService, builds the model input BY NAME (``model.feature_names_in_`` or the MLflow
  signature; Feast does not keep feature order) and predicts. :class:`Predictor` combines it
  with the watcher and the log.
- :class:`PredictionLog` appends every prediction (request id, time, entity, the features used
  as JSON, prediction, model version) to the SQL store named by ``settings.prediction_store``
  (SQLite under ``AIRLOOP_HOME`` by default, Postgres in compose); ``attach_label`` records
  the true label later; :func:`read_predictions` reads it back for the drift monitor.

Unknown entities: a row whose entity has no online features (a new restaurant, or statistics
older than the view's TTL) is still predicted: the missing values go to the model as NaN
(HistGradientBoosting routes them natively) and the answer says ``features_missing: true``
with the names in ``missing_features``. Callers should treat such a prediction as a
cold-start estimate. It is logged like any other prediction.

Heavy libraries (mlflow, feast, pandas, sqlalchemy) are imported inside functions.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import re
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Iterable

from pydantic import BaseModel, ConfigDict, Field, create_model

from airloop.settings import Settings, get_settings

if TYPE_CHECKING:
    import pandas as pd
    from feast import FeatureService, FeatureStore

    from airloop.spec import ModelSpec

log = logging.getLogger(__name__)

CHAMPION = "champion"
PREDICTIONS_TABLE = "airloop_predictions"

# Request fields that are not dataset columns: their type and allowed range.
_DERIVED_REQUEST_FIELDS: dict[str, tuple[str, tuple[float, float] | None]] = {
    "order_hour": ("int", (0, 23)),
}
_INT64 = (-(2**63), 2**63 - 1)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


# --- configuration ----------------------------------------------------------------------


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
}


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


def serving_spec(config: ServeConfig | None = None, settings: Settings | None = None) -> "ModelSpec":
    """The spec of the model to serve: ``AIRLOOP_SERVE_MODEL``, or the only spec there is."""
    from airloop.spec import SpecError, get_spec, load_specs

    config = config or serve_config()
    models_dir = (settings or get_settings()).models_dir
    if config.model:
        return get_spec(config.model, models_dir)
    specs = load_specs(models_dir)
    if len(specs) != 1:
        names = ", ".join(s.name for s in specs) or "none"
        raise SpecError(f"set AIRLOOP_SERVE_MODEL to the model to serve (specs in {models_dir}: {names})")
    return specs[0]


# --- errors -------------------------------------------------------------------------------


class ServeError(RuntimeError):
    """A request could not be served; ``status`` is the HTTP status to answer with."""

    status = 500


class NotReady(ServeError):
    """No servable champion model is loaded (yet)."""

    status = 503


class FeatureLookupError(ServeError):
    """The online feature store could not be read."""

    status = 503


class ModelNotServable(ServeError):
    """A model needs inputs the feature service and request fields do not provide."""

    status = 500


class PredictionStoreError(ServeError):
    """The prediction store is unreachable or failed."""

    status = 503


class UnknownRequestId(ServeError):
    status = 404


class InvalidLabel(ServeError):
    status = 400


# --- request and response schemas ---------------------------------------------------------


def _field_type(spec: "ModelSpec", name: str) -> tuple[Any, Any]:
    """(annotation, Field) for a request field from the spec's column types and ranges."""
    kind = spec.dataset.columns.get(name)
    bounds = spec.validation.ranges.get(name)
    if kind is None and name in _DERIVED_REQUEST_FIELDS:
        kind, bounds = _DERIVED_REQUEST_FIELDS[name]
    if kind == "int":
        lo, hi = bounds if bounds else _INT64
        return int, Field(..., ge=int(math.ceil(lo)), le=int(math.floor(hi)))
    if kind == "string":
        return str, Field(..., min_length=1, max_length=256)
    if kind in ("float", None):
        if bounds:
            return float, Field(..., ge=bounds[0], le=bounds[1], allow_inf_nan=False)
        return float, Field(..., allow_inf_nan=False)
    raise ModelNotServable(f"request field {name!r} has type {kind!r}, which cannot be sent in a request")


_STRICT = ConfigDict(extra="forbid", strict=True)


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def request_model(spec: "ModelSpec") -> type[BaseModel]:
    """The body of one prediction request: the entity key and the spec's request fields.

    Strict: numbers must be JSON numbers (``"3"`` is refused), integers must be integers,
    ranges come from the spec's validation ranges, unknown fields are refused.
    """
    names = [spec.entity.join_key, *spec.features.request]
    fields = {name: _field_type(spec, name) for name in names}
    return create_model(f"{_camel(spec.name)}Request", __config__=_STRICT, **fields)


def batch_request_model(spec: "ModelSpec", max_rows: int) -> type[BaseModel]:
    """``{"rows": [<request>, ...]}`` with 1..``max_rows`` rows."""
    row = request_model(spec)
    return create_model(
        f"{_camel(spec.name)}BatchRequest",
        __config__=_STRICT,
        rows=(list[row], Field(..., min_length=1, max_length=max_rows)),
    )


class Prediction(BaseModel):
    """One prediction: for classification the probability of the positive class (late)."""

    prediction: float
    model: str
    model_version: str
    request_id: str
    features_missing: bool = False
    missing_features: list[str] = Field(default_factory=list)


class BatchPrediction(BaseModel):
    predictions: list[Prediction]


class Feedback(BaseModel):
    """The true label of an earlier prediction, by its request id."""

    model_config = ConfigDict(extra="forbid")
    request_id: Annotated[str, Field(min_length=1, max_length=64, pattern=_REQUEST_ID.pattern)]
    label: Annotated[float, Field(allow_inf_nan=False)]


class FeedbackAck(BaseModel):
    request_id: str
    label: float
    labeled_at: str


# --- the champion model -------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedModel:
    """A model version in memory with the input columns it expects, by name."""

    name: str
    version: str
    run_id: str
    model: Any
    inputs: tuple[str, ...]
    loaded_at: dt.datetime

    def predict(self, frame: "pd.DataFrame", task: str):
        if task == "classification":
            return self.model.predict_proba(frame)[:, 1]
        return self.model.predict(frame)


def _mlflow_client(settings: Settings):
    from airloop.train import mlflow_client

    return mlflow_client(settings)


def model_inputs(model: Any, model_uri: str | None = None) -> tuple[str, ...]:
    """The model's input column names: ``feature_names_in_``, else the MLflow signature."""
    names = getattr(model, "feature_names_in_", None)
    if names is not None:
        return tuple(str(n) for n in names)
    if model_uri:
        from mlflow.models import get_model_info

        signature = get_model_info(model_uri).signature
        if signature is not None and signature.inputs is not None:
            return tuple(signature.inputs.input_names())
    raise ModelNotServable(f"{model_uri or model!r}: cannot tell its input column names")


def load_model_version(spec: "ModelSpec", version: str, settings: Settings | None = None) -> LoadedModel:
    """Load one registered version (by number, never by alias: the alias may move meanwhile)."""
    import mlflow.sklearn

    s = settings or get_settings()
    client = _mlflow_client(s)
    name = spec.registered_model_name
    mv = client.get_model_version(name, str(version))
    uri = f"models:/{name}/{mv.version}"
    model = mlflow.sklearn.load_model(uri)
    return LoadedModel(
        name=name,
        version=str(mv.version),
        run_id=mv.run_id or "",
        model=model,
        inputs=model_inputs(model, uri),
        loaded_at=dt.datetime.now(dt.timezone.utc),
    )


def champion_version(spec: "ModelSpec", settings: Settings | None = None, client=None) -> str | None:
    """The version ``@champion`` points at, or None if there is none (raises if unreachable)."""
    from mlflow.exceptions import MlflowException

    client = client or _mlflow_client(settings or get_settings())
    try:
        return str(client.get_model_version_by_alias(spec.registered_model_name, CHAMPION).version)
    except MlflowException as exc:
        if getattr(exc, "error_code", "") in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


class ChampionWatcher:
    """Holds the ``@champion`` model and swaps it atomically when the alias moves.

    ``refresh()`` checks the registry once; ``start()`` runs it every ``poll_seconds`` in a
    daemon thread. A new version is loaded and passed to ``validate`` before the single
    reference assignment that publishes it; if loading or validation fails the current model
    keeps serving and ``last_error`` says why (a version refused by ``validate`` is not
    retried until the alias moves again). Readers take ``current`` once per request.
    """

    def __init__(
        self,
        spec: "ModelSpec",
        settings: Settings | None = None,
        *,
        poll_seconds: float = 10.0,
        validate=None,
    ):
        self.spec = spec
        self.settings = settings or get_settings()
        self.poll_seconds = poll_seconds
        self.validate = validate
        self._current: LoadedModel | None = None
        self._refused: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client = None
        self.last_error: str | None = None
        self.last_check: dt.datetime | None = None
        self.swaps = 0

    @property
    def current(self) -> LoadedModel | None:
        return self._current

    def get(self) -> LoadedModel:
        model = self._current
        if model is None:
            reason = f": {self.last_error}" if self.last_error else ""
            raise NotReady(f"no servable @champion model for {self.spec.name!r} yet{reason}")
        return model

    def refresh(self) -> bool:
        """Check the registry once; load, validate and swap if ``@champion`` moved."""
        with self._lock:
            if self._client is None:
                self._client = _mlflow_client(self.settings)
            version = champion_version(self.spec, client=self._client)
            self.last_check = dt.datetime.now(dt.timezone.utc)
            current = self._current
            if version is None:
                if current is None:
                    self.last_error = f"model {self.spec.registered_model_name!r} has no @{CHAMPION} alias"
                return False
            if (current is not None and current.version == version) or version == self._refused:
                return False
            started = time.perf_counter()
            loaded = load_model_version(self.spec, version, self.settings)
            if self.validate is not None:
                try:
                    self.validate(loaded)
                except ModelNotServable as exc:
                    self._refused = version
                    self.last_error = f"v{version} refused: {exc}"
                    log.error("not serving %s v%s: %s", self.spec.name, version, exc)
                    return False
            self._current = loaded  # the swap: one reference assignment
            self._refused = None
            self.last_error = None
            self.swaps += 1
            log.info(
                "serving %s v%s (was %s; loaded in %.2fs)", self.spec.name, version,
                f"v{current.version}" if current else "none", time.perf_counter() - started,
            )
            return True

    def try_refresh(self) -> bool:
        try:
            return self.refresh()
        except Exception as exc:  # registry down, artifact missing, store error: keep serving
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("champion check for %s failed: %s", self.spec.name, self.last_error)
            return False

    def start(self) -> "ChampionWatcher":
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="airloop-champion-watcher", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            self.try_refresh()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def status(self) -> dict:
        model = self._current
        return {
            "model": self.spec.registered_model_name,
            "model_version": model.version if model else None,
            "run_id": model.run_id if model else None,
            "loaded_at": model.loaded_at.isoformat() if model else None,
            "last_check": self.last_check.isoformat() if self.last_check else None,
            "last_error": self.last_error,
            "swaps": self.swaps,
            "poll_seconds": self.poll_seconds,
        }


# --- features + predict -------------------------------------------------------------------


@dataclass
class Scored:
    """One scored row, as answered and as logged."""

    request_id: str
    model: str
    model_version: str
    entity: Any
    features: dict[str, Any]
    prediction: float
    missing_features: list[str]
    predicted_at: dt.datetime

    @property
    def features_missing(self) -> bool:
        return bool(self.missing_features)

    def answer(self) -> Prediction:
        return Prediction(
            prediction=self.prediction,
            model=self.model,
            model_version=self.model_version,
            request_id=self.request_id,
            features_missing=self.features_missing,
            missing_features=self.missing_features,
        )


def _clean(value: Any) -> Any:
    """A JSON-safe scalar: numpy scalars to Python, NaN to None."""
    if value is None:
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def served_names(spec: "ModelSpec", store: "FeatureStore") -> set[str]:
    """Every name a model of this spec can get: the service's features and the request fields."""
    from airloop import features

    return set(features.feature_names(spec, store=store)) | set(spec.features.request)


def check_servable(spec: "ModelSpec", model: LoadedModel, available: Iterable[str]) -> None:
    missing = [c for c in model.inputs if c not in set(available)]
    if missing:
        raise ModelNotServable(
            f"{model.name} v{model.version} needs inputs that feature service "
            f"{spec.features.service!r} and the request fields do not provide: {', '.join(missing)}"
        )


def model_frame(inputs: Iterable[str], rows: list[dict[str, Any]]) -> "pd.DataFrame":
    """A float frame with exactly ``inputs`` as columns, filled by name (None -> NaN)."""
    import numpy as np
    import pandas as pd

    columns = list(inputs)
    values = np.array(
        [[np.nan if (v := row.get(c)) is None else v for c in columns] for row in rows], dtype="float64"
    ).reshape(len(rows), len(columns))
    return pd.DataFrame(values, columns=columns)


def lookup_and_predict(
    spec: "ModelSpec",
    rows: list[dict[str, Any]],
    model: LoadedModel,
    store: "FeatureStore",
    service: "FeatureService | None" = None,
) -> list[Scored]:
    """Online features for each row through the spec's FeatureService, then one predict call.

    ``rows`` hold the join key and the request fields. The model input is built by name from
    the request fields and the looked-up features. ``service``: the FeatureService object
    to read through (default: fetched from the registry, which costs ~0.4 ms).
    """
    from airloop import features

    if not rows:
        return []
    try:
        looked_up = features.get_online_features(spec, rows, store=store, service=service)
    except Exception as exc:
        raise FeatureLookupError(
            f"online feature lookup through {spec.features.service!r} failed: {type(exc).__name__}: {exc}"
        ) from exc
    inputs = []
    for row, feats in zip(rows, looked_up):
        values = {name: row[name] for name in spec.features.request}
        values.update(feats)
        inputs.append({c: _clean(values.get(c)) for c in model.inputs})
    predictions = model.predict(model_frame(model.inputs, inputs), spec.task)
    now = dt.datetime.now(dt.timezone.utc)
    key = spec.entity.join_key
    return [
        Scored(
            request_id=uuid.uuid4().hex,
            model=model.name,
            model_version=model.version,
            entity=row[key],
            features=used,
            prediction=float(p),
            missing_features=[c for c, v in used.items() if v is None],
            predicted_at=now,
        )
        for row, used, p in zip(rows, inputs, predictions)
    ]


def _sample_value(spec: "ModelSpec", name: str) -> Any:
    """A valid request value (the range's lower bound) for warm-up calls."""
    annotation, info = _field_type(spec, name)
    if annotation is str:
        return "airloop-warm-up"
    lower = next((m.ge for m in info.metadata if hasattr(m, "ge")), None)
    if annotation is int:
        return int(lower) if lower is not None and lower > 0 else 0
    return float(lower) if lower is not None else 0.0


class Predictor:
    """Champion + feature store + prediction log: what the HTTP service calls per request."""

    def __init__(
        self,
        spec: "ModelSpec",
        settings: Settings | None = None,
        *,
        store: "FeatureStore | None" = None,
        watcher: ChampionWatcher | None = None,
        log: "PredictionLog | None" = None,
        poll_seconds: float = 10.0,
    ):
        from airloop import features

        self.spec = spec
        self.settings = settings or get_settings()
        self.store = store if store is not None else features.get_store(self.settings)
        self.watcher = watcher or ChampionWatcher(
            spec, self.settings, poll_seconds=poll_seconds, validate=self.validate
        )
        self.log = log
        # (FeatureService, monotonic time read): re-read from the registry every poll_seconds,
        # so a `feast apply` reaches the server as fast as a new champion does.
        self._service: "tuple[FeatureService, float] | None" = None
        self._service_seconds = poll_seconds

    def validate(self, model: LoadedModel) -> None:
        check_servable(self.spec, model, served_names(self.spec, self.store))

    def start(self) -> "Predictor":
        """Load the champion now (if there is one), warm up, and keep polling for a new one."""
        self.watcher.try_refresh()
        self.warm_up()
        self.watcher.start()
        return self

    def warm_up(self) -> None:
        """One unlogged lookup + predict: Feast's first online read costs ~1 s of set-up."""
        model = self.watcher.current
        if model is None:
            return
        row = {name: _sample_value(self.spec, name) for name in (self.spec.entity.join_key, *self.spec.features.request)}
        try:
            lookup_and_predict(self.spec, [row], model, self.store, self.feature_service())
        except Exception as exc:
            log.warning("warm-up prediction failed: %s: %s", type(exc).__name__, exc)

    def stop(self) -> None:
        self.watcher.stop()

    @property
    def ready(self) -> bool:
        return self.watcher.current is not None

    def feature_service(self) -> "FeatureService":
        """The spec's FeatureService, read from the registry at most every ``poll_seconds``.

        If the registry cannot be read, the service read last keeps serving.
        """
        from airloop import features

        cached = self._service
        now = time.monotonic()
        if cached is not None and now - cached[1] < self._service_seconds:
            return cached[0]
        try:
            service = features.feature_service(self.spec, self.store)
        except Exception as exc:
            if cached is None:
                raise FeatureLookupError(
                    f"feature service {self.spec.features.service!r}: {type(exc).__name__}: {exc}"
                ) from exc
            log.warning("could not re-read feature service %r: %s", self.spec.features.service, exc)
            service = cached[0]
        self._service = (service, now)
        return service

    def predict(self, rows: list[dict[str, Any]]) -> list[Scored]:
        model = self.watcher.get()  # one model for the whole request, even if a swap happens now
        scored = lookup_and_predict(self.spec, rows, model, self.store, self.feature_service())
        if self.log is not None:
            self.log.append(scored)
        return scored


# --- the prediction log -------------------------------------------------------------------


def _table(metadata=None):
    import sqlalchemy as sa

    metadata = metadata if metadata is not None else sa.MetaData()
    return sa.Table(
        PREDICTIONS_TABLE,
        metadata,
        sa.Column("request_id", sa.String(64), primary_key=True),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("predicted_at", sa.DateTime(), nullable=False),  # naive UTC
        sa.Column("entity", sa.String(256), nullable=False),
        sa.Column("features", sa.Text(), nullable=False),  # JSON object: model input by name
        sa.Column("features_missing", sa.Boolean(), nullable=False),
        sa.Column("prediction", sa.Float(), nullable=False),
        sa.Column("label", sa.Float(), nullable=True),
        sa.Column("labeled_at", sa.DateTime(), nullable=True),  # naive UTC
        sa.Index(f"ix_{PREDICTIONS_TABLE}_model_time", "model", "predicted_at"),
    )


def safe_url(url: str) -> str:
    """The URL with its password masked, for messages."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


def make_engine(url: str, *, connect_timeout: float = 5.0):
    """A SQLAlchemy engine for the prediction store (SQLite: WAL, parent dir created)."""
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    backend = parsed.get_backend_name()
    connect_args: dict[str, Any] = {}
    if backend == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        connect_args["timeout"] = 30
    elif backend == "postgresql":
        connect_args["connect_timeout"] = max(1, int(connect_timeout))
    engine = sa.create_engine(url, pool_pre_ping=True, connect_args=connect_args)
    if backend == "sqlite":

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # noqa: ANN001 - DB-API connection
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

    return engine


def _utc_naive(value: dt.datetime | str | None) -> dt.datetime | None:
    """Naive UTC for the store; a naive input is taken as UTC already."""
    if value is None:
        return None
    if not isinstance(value, dt.datetime):
        import pandas as pd

        value = pd.Timestamp(value).to_pydatetime()
    if value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return value


def _row(scored: Scored) -> dict[str, Any]:
    return {
        "request_id": scored.request_id,
        "model": scored.model,
        "model_version": scored.model_version,
        "predicted_at": _utc_naive(scored.predicted_at),
        "entity": str(scored.entity),
        "features": json.dumps(scored.features, separators=(",", ":")),
        "features_missing": scored.features_missing,
        "prediction": scored.prediction,
        "label": None,
        "labeled_at": None,
    }


class PredictionLog:
    """Append-only prediction store on any SQLAlchemy URL, written in batches in the background.

    ``append`` only queues rows (microseconds on the request path). A writer thread inserts
    them every ``flush_seconds`` or as soon as ``batch_size`` rows wait, in one transaction
    per batch (duplicate request ids are ignored, so a retried batch never doubles rows).
    If the store fails, rows stay queued and the writer retries with backoff; beyond
    ``max_pending`` queued rows, the oldest are spilled to JSON-lines files under
    ``spill_dir``, which are loaded into the store at the next start or once it recovers.

    Durability: ``close()`` (called on clean shutdown) writes everything queued, or spills it
    to ``spill_dir`` if the store is down, so a clean shutdown loses nothing. A crash (SIGKILL,
    OOM kill, power loss) loses the rows still queued in memory: the predictions of the last
    ``flush_seconds`` (0.5 s by default), plus, while the store is unreachable, the backlog not
    yet spilled (at most ``max_pending`` rows). Spilled files and committed rows survive.

    The constructor connects and creates the table; an unreachable store raises
    :class:`PredictionStoreError` at once, so a server never starts logging into the void.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        settings: Settings | None = None,
        flush_seconds: float = 0.5,
        batch_size: int = 500,
        max_pending: int = 100_000,
        spill_dir: Path | None = None,
        connect_timeout: float = 5.0,
    ):
        s = settings or get_settings()
        self.url = url or s.prediction_store
        self.flush_seconds = flush_seconds
        self.batch_size = batch_size
        self.max_pending = max_pending
        self.spill_dir = Path(spill_dir) if spill_dir else s.home / "predictions" / "spill"
        self.last_error: str | None = None
        self.failures = 0
        self.written = 0
        self._pending: deque[dict[str, Any]] = deque()
        self._cond = threading.Condition()
        self._appended = 0  # rows ever queued
        self._done = 0  # rows ever committed or spilled (queue order)
        self._flush_wanted = False
        self._closing = False
        self._closed = False
        try:
            self.engine = make_engine(self.url, connect_timeout=connect_timeout)
            self._create_table()
        except Exception as exc:
            raise PredictionStoreError(
                f"prediction store {safe_url(self.url)} is not usable: {type(exc).__name__}: "
                f"{str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}"
            ) from exc
        self._replay_spill()
        self._thread = threading.Thread(target=self._run, name="airloop-prediction-log", daemon=True)
        self._thread.start()

    # -- setup -----------------------------------------------------------------------------
    def _create_table(self) -> None:
        import sqlalchemy as sa

        metadata = sa.MetaData()
        self.table = _table(metadata)
        try:
            metadata.create_all(self.engine, checkfirst=True)
        except sa.exc.IntegrityError:  # another worker created it at the same moment
            metadata.create_all(self.engine, checkfirst=True)

    def _insert(self):
        dialect = self.engine.dialect.name
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        elif dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:
            return self.table.insert()
        return insert(self.table).on_conflict_do_nothing(index_elements=["request_id"])

    def _write(self, rows: list[dict[str, Any]]) -> None:
        with self.engine.begin() as conn:
            conn.execute(self._insert(), rows)

    # -- request path ------------------------------------------------------------------------
    def append(self, scored: Iterable[Scored]) -> None:
        rows = [_row(s) for s in scored]
        if not rows:
            return
        with self._cond:
            if self._closed:
                raise PredictionStoreError("the prediction log is closed")
            self._pending.extend(rows)
            self._appended += len(rows)
            if len(self._pending) >= self.batch_size:
                self._cond.notify_all()

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._pending)

    def flush(self, timeout: float = 30.0) -> None:
        """Block until every row queued before this call is committed (or spilled)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            target = self._appended
            self._flush_wanted = True
            self._cond.notify_all()
            while self._done < target:
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    raise PredictionStoreError(
                        f"prediction store {safe_url(self.url)}: {target - self._done} rows not written "
                        f"after {timeout:.0f}s ({self.last_error or 'writer stopped'})"
                    )
                self._cond.wait(min(left, 1.0))

    def close(self, timeout: float = 30.0) -> None:
        """Write everything queued (or spill it if the store is down) and stop the writer."""
        with self._cond:
            if self._closed:
                return
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)
        with self._cond:
            self._closed = True
            if self._pending:  # the writer did not finish in time: keep the rows on disk
                self._spill(list(self._pending))
                self._pending.clear()
        self.engine.dispose()

    # -- writer thread -------------------------------------------------------------------------
    def _run(self) -> None:
        backoff = 0.0
        while True:
            with self._cond:
                if backoff:  # the store failed: wait before retrying, whatever is asked meanwhile
                    self._cond.wait_for(lambda: self._closing, timeout=backoff)
                elif not self._closing:
                    self._cond.wait_for(
                        lambda: self._closing or self._flush_wanted or len(self._pending) >= self.batch_size,
                        timeout=self.flush_seconds,
                    )
                if not self._pending:
                    self._flush_wanted = False
                    self._cond.notify_all()
                    if self._closing:
                        return
                    continue
                batch = [self._pending.popleft() for _ in range(min(self.batch_size, len(self._pending)))]
                closing = self._closing
            try:
                self._write(batch)
            except Exception as exc:
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
                log.error("prediction log write of %d rows failed: %s", len(batch), self.last_error)
                with self._cond:
                    self._pending.extendleft(reversed(batch))
                    if closing:  # last chance: keep every queued row on local disk
                        self._spill(list(self._pending))
                        self._pending.clear()
                        self._cond.notify_all()
                        return
                    overflow = len(self._pending) - self.max_pending
                    if overflow > 0:
                        self._spill([self._pending.popleft() for _ in range(overflow)])
                        self._cond.notify_all()
                backoff = min(30.0, max(0.5, backoff * 2))
                continue
            recovered = backoff > 0
            backoff = 0.0
            with self._cond:
                self.written += len(batch)
                self._done += len(batch)
                self._cond.notify_all()
            if recovered:
                self.last_error = None
                self._replay_spill()

    # -- spill files -----------------------------------------------------------------------------
    def _spill(self, rows: list[dict[str, Any]]) -> None:
        """Append rows to a spill file (caller holds the lock); they count as done."""
        if not rows:
            return
        self.spill_dir.mkdir(parents=True, exist_ok=True)
        path = self.spill_dir / f"predictions-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
        with open(path, "w") as fh:
            for row in rows:
                fh.write(json.dumps(row, default=_json_default) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self._done += len(rows)
        log.error("prediction store unreachable: spilled %d rows to %s", len(rows), path)

    def _replay_spill(self) -> None:
        if not self.spill_dir.is_dir():
            return
        for path in sorted(self.spill_dir.glob("predictions-*.jsonl")):
            claimed = path.with_suffix(".replaying")
            try:
                path.rename(claimed)  # one worker per file
            except OSError:
                continue
            try:
                rows = [json.loads(line) for line in claimed.read_text().splitlines() if line.strip()]
                for row in rows:
                    for key in ("predicted_at", "labeled_at"):
                        if row.get(key):
                            row[key] = dt.datetime.fromisoformat(row[key])
                for i in range(0, len(rows), self.batch_size):
                    self._write(rows[i : i + self.batch_size])
            except Exception as exc:
                claimed.rename(path)
                log.warning("could not replay %s yet: %s", path, exc)
                return
            claimed.unlink()
            log.info("replayed %d spilled predictions from %s", len(rows), path.name)

    # -- labels ----------------------------------------------------------------------------------
    def attach_label(self, request_id: str, label: float, timeout: float = 30.0) -> dt.datetime:
        """Record the true label of a logged prediction; raises UnknownRequestId if none.

        Waits up to ``timeout`` seconds for queued predictions to be written first.
        """
        import sqlalchemy as sa

        self.flush(timeout)
        now = dt.datetime.now(dt.timezone.utc)
        try:
            with self.engine.begin() as conn:
                result = conn.execute(
                    sa.update(self.table)
                    .where(self.table.c.request_id == request_id)
                    .values(label=float(label), labeled_at=_utc_naive(now))
                )
        except Exception as exc:
            raise PredictionStoreError(f"prediction store {safe_url(self.url)}: {type(exc).__name__}: {exc}") from exc
        if result.rowcount == 0:
            raise UnknownRequestId(f"no prediction with request_id {request_id!r}")
        return now


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def read_predictions(
    since: dt.datetime | str | None = None,
    until: dt.datetime | str | None = None,
    model: "str | ModelSpec | None" = None,
    *,
    settings: Settings | None = None,
    url: str | None = None,
    expand_features: bool = True,
) -> "pd.DataFrame":
    """Logged predictions with ``since <= timestamp < until`` (UTC), oldest first.

    Columns: ``request_id``, ``timestamp`` (tz-aware UTC), ``model``, ``model_version``, the
    entity under its join key (e.g. ``restaurant_id``, typed as in the spec) or ``entity``
    if the spec is unknown, ``prediction``, ``features_missing``, ``label`` (NaN until
    feedback), ``labeled_at``, then one column per model input used (``expand_features``;
    otherwise a ``features`` column of dicts). ``model`` is a spec or a spec name.
    """
    import pandas as pd
    import sqlalchemy as sa

    s = settings or get_settings()
    spec = model if model is not None and not isinstance(model, str) else None
    name = spec.registered_model_name if spec is not None else model
    if spec is None and name:
        from airloop.spec import SpecError, get_spec

        try:
            spec = get_spec(name, s.models_dir)
        except SpecError:
            spec = None
    url = url or s.prediction_store
    try:
        engine = make_engine(url)
    except Exception as exc:
        raise PredictionStoreError(f"prediction store {safe_url(url)}: {exc}") from exc
    table = _table()
    query = sa.select(table)
    if name:
        query = query.where(table.c.model == name)
    if since is not None:
        query = query.where(table.c.predicted_at >= _utc_naive(since))
    if until is not None:
        query = query.where(table.c.predicted_at < _utc_naive(until))
    query = query.order_by(table.c.predicted_at, table.c.request_id)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table(PREDICTIONS_TABLE):
                rows = []
            else:
                rows = [dict(r) for r in conn.execute(query).mappings()]
    except Exception as exc:
        raise PredictionStoreError(f"prediction store {safe_url(url)}: {type(exc).__name__}: {exc}") from exc
    finally:
        engine.dispose()

    columns = [c.name for c in table.columns]
    frame = pd.DataFrame(rows, columns=columns).rename(columns={"predicted_at": "timestamp"})
    frame["timestamp"] = pd.to_datetime(frame["timestamp"]).dt.tz_localize("UTC")
    frame["labeled_at"] = pd.to_datetime(frame["labeled_at"]).dt.tz_localize("UTC")
    frame["prediction"] = frame["prediction"].astype("float64")
    frame["label"] = frame["label"].astype("float64")
    frame["features_missing"] = frame["features_missing"].astype(bool)
    entity = "entity"
    if spec is not None:
        entity = spec.entity.join_key
        kind = spec.dataset.columns.get(entity)
        frame = frame.rename(columns={"entity": entity})
        if kind == "int":
            frame[entity] = frame[entity].astype("int64")
        elif kind == "float":
            frame[entity] = frame[entity].astype("float64")
    parsed = [json.loads(f) for f in frame["features"]]
    frame = frame.drop(columns=["features"])
    if expand_features:
        feats = pd.DataFrame.from_records(parsed, index=frame.index) if parsed else pd.DataFrame(index=frame.index)
        feats = feats[[c for c in feats.columns if c not in frame.columns]]
        for column in feats.columns:
            try:
                feats[column] = feats[column].astype("float64")
            except (TypeError, ValueError):
                pass  # a non-numeric input stays as logged
        frame = pd.concat([frame, feats], axis=1)
    else:
        frame["features"] = parsed
    ordered = ["request_id", "timestamp", "model", "model_version", entity, "prediction",
               "features_missing", "label", "labeled_at"]
    rest = [c for c in frame.columns if c not in ordered]
    return frame[ordered + rest].reset_index(drop=True)


# --- the running service, from outside ------------------------------------------------------


class ServiceUnreachable(ServeError):
    """No prediction service answers at the configured URL."""

    status = 503


def service_status(url: str | None = None, *, timeout: float = 5.0) -> dict:
    """``POST /status`` of the running service at ``url`` (default ``AIRLOOP_SERVE_URL``)."""
    import requests

    url = (url or get_settings().serve_url).rstrip("/")
    try:
        resp = requests.post(f"{url}/status", json={}, timeout=timeout)
    except requests.RequestException as exc:
        raise ServiceUnreachable(f"no prediction service at {url}: {exc.__class__.__name__}") from exc
    resp.raise_for_status()
    return resp.json()


def wait_until_serving(spec: "ModelSpec", version: str, *, url: str | None = None, timeout: float = 180) -> dict:
    """Wait until the service at ``url`` answers with ``version`` of the spec's model."""

    deadline = time.monotonic() + timeout
    status = service_status(url)
    while str(status.get("model_version")) != str(version):
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"service still serves {spec.name} v{status.get('model_version')} after {timeout}s, "
                f"expected v{version} (last registry error: {status.get('last_error')})"
            )
        time.sleep(2)
        status = service_status(url)
    return status
