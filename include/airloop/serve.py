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
- :class:`~airloop.prediction_log.PredictionLog` records every prediction the
  :class:`Predictor` makes.

Unknown entities: a row whose entity has no online features (a new key, or values older
than the view's TTL) is still predicted: the missing values go to the model as NaN
(HistGradientBoosting routes them natively) and the answer says ``features_missing: true``
with the names in ``missing_features``. Callers should treat such a prediction as a
cold-start estimate. It is logged like any other prediction.

Heavy libraries (mlflow, feast, pandas, sqlalchemy) are imported inside functions.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import re
import threading
import time
import uuid
from typing import TYPE_CHECKING, Annotated, Any, Iterable, Literal, get_args, get_origin

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model
from pydantic.json_schema import SkipJsonSchema

from airloop import registry
from airloop.errors import (
    FeatureLookupError,
    ModelNotServable,
    NotReady,
    ServiceUnreachable,
    WrongModelServed,
)
from airloop.prediction_log import LoggedPrediction, PredictionLog
from airloop.registry import LoadedModel
from airloop.settings import ServeConfig, Settings, get_settings, serve_config

if TYPE_CHECKING:
    import pandas as pd
    from feast import FeatureService, FeatureStore

    from airloop.spec import ModelSpec

log = logging.getLogger(__name__)


_INT64 = (-(2**63), 2**63 - 1)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


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


# --- request and response schemas ---------------------------------------------------------
# These models are the service's contract: BentoML validates requests with them and
# airloop.bento_service builds the OpenAPI document (GET /docs.json) from their JSON schemas,
# descriptions and examples.


def _bounds(spec: "ModelSpec", name: str) -> tuple[str | None, tuple[float, float] | None]:
    """(type, range) of a request field: the spec's column type and validation range."""
    from airloop.spec import TIME_PARTS

    derived = spec.features.derived.get(name)
    if derived is not None:  # a part of a timestamp: an integer in that part's range
        part = TIME_PARTS[derived.part]
        return "int", (part.low, part.high)
    return spec.dataset.columns.get(name), spec.validation.ranges.get(name)


def _field_description(spec: "ModelSpec", name: str) -> str:
    kind, bounds = _bounds(spec, name)
    entity = next((e for e in spec.entities if e.join_key == name), None)
    if entity is not None:
        what = entity.description.rstrip(".") if entity.description else entity.name
        return (
            f"{what}: the {entity.name} key. Its online features are read through the Feast feature "
            f"service {spec.features.service!r}; a key with none (unknown or stale) is still predicted, "
            "with `features_missing: true`."
        )
    what = {"int": "an integer", "string": "a string"}.get(kind or "float", "a number")
    limits = f" from {bounds[0]:g} to {bounds[1]:g}" if bounds else ""
    source = " (the spec's validation range)" if name in spec.validation.ranges else ""
    return f"Sent by the caller at request time: {what}{limits}{source}."


def _categories(spec: "ModelSpec", name: str) -> list[str]:
    """The values a string request field may take (the spec's validation categories), or []."""
    if spec.dataset.columns.get(name) != "string":
        return []
    return list(spec.validation.categories.get(name) or [])


def _field_type(spec: "ModelSpec", name: str) -> tuple[Any, Any]:
    """(annotation, Field) for a request field from the spec's column types, ranges and categories.

    A string field with declared categories is an enum of them: the OpenAPI document lists
    them, and any other value is a validation error (4xx) naming the allowed values, rather
    than a category the model never saw.
    """
    kind, bounds = _bounds(spec, name)
    description = _field_description(spec, name)
    if kind == "int":
        lo, hi = bounds if bounds else _INT64
        return int, Field(..., ge=int(math.ceil(lo)), le=int(math.floor(hi)), description=description)
    if kind == "string":
        categories = _categories(spec, name)
        if categories:
            allowed = ", ".join(categories)
            # Literal, not Enum: the strict request models take the JSON string itself.
            return Literal[tuple(categories)], Field(
                ..., description=f"{description} One of: {allowed} (the spec's validation categories)."
            )
        return str, Field(..., min_length=1, max_length=256, description=description)
    if kind in ("float", None):
        if bounds:
            return float, Field(..., ge=bounds[0], le=bounds[1], allow_inf_nan=False, description=description)
        return float, Field(..., allow_inf_nan=False, description=description)
    raise ModelNotServable(f"request field {name!r} has type {kind!r}, which cannot be sent in a request")


def _example_value(spec: "ModelSpec", name: str, at: float) -> Any:
    """A valid value for a request field: ``at`` (0..1) of the way through its range."""
    kind, bounds = _bounds(spec, name)
    if kind == "string":
        categories = _categories(spec, name)
        if categories:  # the category ``at`` of the way through the declared list
            return categories[min(len(categories) - 1, int(at * len(categories)))]
        return "example"
    if kind == "int":
        if not bounds:
            return 1001 + round(at * 10)
        lo, hi = math.ceil(bounds[0]), math.floor(bounds[1])
        return int(min(hi, max(lo, round(lo + at * (hi - lo)))))
    if not bounds:
        return round(1.0 + at, 2)
    return round(bounds[0] + at * (bounds[1] - bounds[0]), 2)


def request_examples(spec: "ModelSpec") -> list[dict[str, Any]]:
    """Valid prediction requests built from the spec: each field at 1/10 and 1/4 of its range."""
    return [{name: _example_value(spec, name, at) for name in request_fields(spec)} for at in (0.1, 0.25)]


def request_fields(spec: "ModelSpec") -> list[str]:
    """What a prediction request sends: the join keys, then the request fields."""
    return list(dict.fromkeys([*spec.join_keys, *spec.features.request]))


_STRICT = ConfigDict(extra="forbid", strict=True)


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def request_model(spec: "ModelSpec") -> type[BaseModel]:
    """The body of one prediction request: the entity keys and the spec's request fields.

    Strict: numbers must be JSON numbers (``"3"`` is refused), integers must be integers,
    ranges come from the spec's validation ranges, unknown fields are refused.
    """
    fields = {name: _field_type(spec, name) for name in request_fields(spec)}
    # Examples go into the served OpenAPI document (bento_service), not into the model's JSON
    # schema: BentoML's build-time schema objects take no "examples" key.
    config = _STRICT
    doc = (
        f"One {spec.name} prediction request: the {' and '.join(e.name for e in spec.entities)} key(s) and "
        "the fields sent at request "
        "time. Strict: numbers must be JSON numbers (not strings), integer fields integers; unknown fields are refused."
    )
    return create_model(f"{_camel(spec.name)}Request", __config__=config, __doc__=doc, **fields)


def batch_request_model(spec: "ModelSpec", max_rows: int) -> type[BaseModel]:
    """``{"rows": [<request>, ...]}`` with 1..``max_rows`` rows."""
    row = request_model(spec)
    config = _STRICT
    return create_model(
        f"{_camel(spec.name)}BatchRequest",
        __config__=config,
        __doc__=f"1 to {max_rows} {spec.name} prediction requests, answered in row order by one model version.",
        rows=(list[row], Field(..., min_length=1, max_length=max_rows, description="The prediction requests.")),
    )


class Prediction(BaseModel):
    """One prediction: for classification the probability of the positive class (late)."""

    prediction: float = Field(
        description="Classification: the probability that the target is 1. Regression: the predicted value."
    )
    model: str = Field(description="The registered model that answered.")
    model_version: str = Field(description="Its registry version: the @champion when the request arrived.")
    request_id: str = Field(description="This prediction's id in the prediction log; send it back with /feedback.")
    features_missing: bool = Field(
        False, description="True if some online features were missing (unknown or stale entity): a cold-start estimate."
    )
    missing_features: list[str] = Field(default_factory=list, description="The features that were missing.")


class BatchPrediction(BaseModel):
    predictions: list[Prediction] = Field(description="One prediction per request row, in row order.")


def _label_is_a_number(value: Any) -> Any:
    """A JSON number only: ``true`` and ``"1"`` are not labels (``Literal`` would take them)."""
    if isinstance(value, (bool, str)):
        raise ValueError("the label must be the JSON number 0 or 1")
    return value


_REQUEST_ID_FIELD = Field(
    min_length=1, max_length=64, pattern=_REQUEST_ID.pattern, description="The `request_id` of an earlier prediction."
)


def feedback_examples(spec: "ModelSpec") -> list[dict[str, Any]]:
    """A valid /feedback body for the spec's task (for the OpenAPI document)."""
    if spec.task == "classification":
        label: float = 1
    else:
        bounds = spec.validation.ranges.get(spec.target)
        label = round((bounds[0] + bounds[1]) / 2, 2) if bounds else 1.0
    return [{"request_id": "9d973270bb794b7fb76e38bb201e4600", "label": label}]


def feedback_model(spec: "ModelSpec") -> type[BaseModel]:
    """The /feedback body for the spec's task: a label of 0 or 1 for classification (1.0 is
    taken, as JSON Schema takes it as an integer; ``true`` and ``"1"`` are not), any finite
    number for regression."""
    if spec.task == "classification":
        label: Any = Annotated[
            Literal[0, 1],
            BeforeValidator(_label_is_a_number),
            Field(description=f"The true value of {spec.target!r} for that prediction: 0 or 1."),
        ]
    else:
        label = Annotated[
            float,
            Field(strict=True, allow_inf_nan=False, description=f"The true value of {spec.target!r} for that prediction."),
        ]
    config = ConfigDict(extra="forbid")
    return create_model(
        f"{_camel(spec.name)}Feedback",
        __config__=config,
        __doc__=f"The true label of an earlier {spec.name} prediction, by its request id.",
        request_id=(str, _REQUEST_ID_FIELD),
        label=(label, ...),
    )


class FeedbackAck(BaseModel):
    request_id: str = Field(description="The prediction labeled.")
    label: float = Field(description="The label stored.")
    labeled_at: str = Field(description="When it was stored (ISO 8601, UTC).")


class PredictionLogStatus(BaseModel):
    store: str = Field(description="The prediction store's URL, password masked.")
    pending: int = Field(description="Predictions queued, not yet written.")
    written: int = Field(description="Predictions written since the service started.")
    failures: int = Field(description="Failed writes since the service started.")
    last_error: str | None = Field(description="The last write error, if any.")


class ServiceStatus(BaseModel):
    """What ``POST /status`` answers: the model served and the health of its moving parts."""

    model: str = Field(description="The registered model served.")
    model_version: str | None = Field(description="The version served (the @champion), none before one is loaded.")
    run_id: str | None = Field(description="The MLflow run that trained it.")
    loaded_at: str | None = Field(description="When that version was loaded (ISO 8601).")
    last_check: str | None = Field(description="The last registry check (ISO 8601).")
    last_error: str | None = Field(description="The last registry or loading error, if any.")
    swaps: int = Field(description="Model versions loaded since the service started.")
    poll_seconds: float = Field(description="How often the registry is checked for a new @champion.")
    prediction_log: PredictionLogStatus


def _no_default(schema: dict[str, Any]) -> None:
    """An optional field that is left out rather than sent as null: no ``default: null`` in its schema."""
    schema.pop("default", None)


class ValidationIssue(BaseModel):
    """One problem with a request body, as pydantic reports it."""

    model_config = ConfigDict(extra="forbid")
    type: str = Field(description="The kind of problem, e.g. `missing`, `less_than_equal`, `json_invalid`.")
    loc: list[str | int] = Field(description="Where: field names and row indexes; empty for the whole body.")
    msg: str = Field(description="What is wrong, for people.")
    url: str | SkipJsonSchema[None] = Field(
        None, description="pydantic's documentation of this kind of problem.", json_schema_extra=_no_default
    )


class Error(BaseModel):
    """The body of every error answer (4xx and 5xx): ``{"error": "<message>"}``. A body that fails
    validation (400 from BentoML) also carries ``detail``: the list of problems."""

    model_config = ConfigDict(extra="forbid")
    error: str = Field(description="What went wrong, for people.")
    detail: list[ValidationIssue] | SkipJsonSchema[None] = Field(
        None,
        description="400 on an invalid body only: each problem found (all of them, not just the first).",
        json_schema_extra=_no_default,
    )


# --- the champion model -------------------------------------------------------------------


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
                self._client = registry.client(self.settings)
            version = registry.champion_version(self.spec, mlflow_client=self._client)
            self.last_check = dt.datetime.now(dt.timezone.utc)
            current = self._current
            if version is None:
                if current is None:
                    self.last_error = f"model {self.spec.registered_model_name!r} has no @{registry.CHAMPION} alias"
                return False
            if (current is not None and current.version == version) or version == self._refused:
                return False
            started = time.perf_counter()
            try:  # an untrusted artifact or a model needing unknown inputs is refused for good
                loaded = registry.load_version(self.spec, version, self.settings)
                if self.validate is not None:
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


class Scored(LoggedPrediction):
    """One scored row, as answered and as logged."""

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


def model_frame(
    inputs: Iterable[str], rows: list[dict[str, Any]], categorical: Iterable[str] = ()
) -> "pd.DataFrame":
    """A frame with exactly ``inputs`` as columns, filled by name.

    Columns in ``categorical`` (the model's string inputs, see
    :func:`airloop.model_inputs.categorical_inputs`) keep their values as objects, None for a
    missing one: the model encodes them itself. Every other column is float64 (None -> NaN).
    """
    import numpy as np
    import pandas as pd

    columns = list(inputs)
    strings = set(categorical)
    numeric = [c for c in columns if c not in strings]
    values = np.array(
        [[np.nan if (v := row.get(c)) is None else v for c in numeric] for row in rows], dtype="float64"
    ).reshape(len(rows), len(numeric))
    frame = pd.DataFrame(values, columns=numeric)
    if not strings:
        return frame
    for c in strings & set(columns):
        frame[c] = pd.Series([row.get(c) for row in rows], dtype="object")
    return frame[columns]


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
    from airloop.model_inputs import categorical_inputs

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
    # String inputs (request fields, Feast String features) stay strings: the model encodes them.
    frame = model_frame(model.inputs, inputs, categorical_inputs(model.model))
    predictions = model.predict(frame, spec.task)
    now = dt.datetime.now(dt.timezone.utc)
    keys = spec.join_keys
    return [
        Scored(
            request_id=uuid.uuid4().hex,
            model=model.name,
            model_version=model.version,
            entity=row[keys[0]] if len(keys) == 1 else {k: row[k] for k in keys},
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
    if get_origin(annotation) is Literal:  # declared categories: one the model knows
        return get_args(annotation)[0]
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
        log: PredictionLog | None = None,
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
        row = {name: _sample_value(self.spec, name) for name in request_fields(self.spec)}
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


# --- the running service, from outside ------------------------------------------------------


def service_status(url: str | None = None, *, model: str | None = None, timeout: float = 5.0) -> dict:
    """``POST /status`` of the running service at ``url``.

    Without ``url``: ``model``'s own service (:meth:`Settings.serve_url_for`), else
    ``AIRLOOP_SERVE_URL``.
    """
    import requests

    if not url:
        s = get_settings()
        url = s.serve_url_for(model) if model else s.serve_url
    url = url.rstrip("/")
    try:
        resp = requests.post(f"{url}/status", json={}, timeout=timeout)
    except requests.RequestException as exc:
        raise ServiceUnreachable(f"no prediction service at {url}: {exc.__class__.__name__}") from exc
    resp.raise_for_status()
    return resp.json()


def wait_until_serving(spec: "ModelSpec", version: str, *, url: str | None = None, timeout: float = 180) -> dict:
    """Wait until the service at ``url`` answers with ``version`` of the spec's model.

    ``url`` defaults to the model's own service (``AIRLOOP_SERVE_URL__<MODEL>``, else
    ``AIRLOOP_SERVE_URL``). A service serving another model fails at once
    (:class:`WrongModelServed`): waiting would not change which model it serves.
    """
    from airloop.settings import serve_url_env

    url = url or get_settings().serve_url_for(spec.name)
    deadline = time.monotonic() + timeout
    status = service_status(url)
    while True:
        served = status.get("model")
        if served != spec.registered_model_name:
            raise WrongModelServed(
                f"the service at {url} serves model {served!r}, not {spec.registered_model_name!r}: "
                f"point {serve_url_env(spec.name)} (or AIRLOOP_SERVE_URL) at {spec.name}'s service"
            )
        if str(status.get("model_version")) == str(version):
            break
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"service still serves {spec.name} v{status.get('model_version')} after {timeout}s, "
                f"expected v{version} (last registry error: {status.get('last_error')})"
            )
        time.sleep(2)
        status = service_status(url)
    return status
