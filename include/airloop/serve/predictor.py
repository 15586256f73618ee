"""Features + predict: what the service does per request, in-process.

:func:`lookup_and_predict` reads a row's online features through the spec's Feast
FeatureService, builds the model input BY NAME (:func:`model_frame`; ``model.feature_names_in_``
or the MLflow signature, as Feast does not keep feature order) and predicts. :class:`Predictor`
combines it with the :class:`~airloop.serve.champion.ChampionWatcher` and the prediction log;
:func:`check_servable` refuses a model needing inputs nobody serves (:func:`served_names`), and
:func:`serving_spec` picks the spec a service serves.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
import uuid
from typing import TYPE_CHECKING, Any, Iterable

from airloop.errors import FeatureLookupError, ModelNotServable
from airloop.prediction_log import LoggedPrediction, PredictionLog
from airloop.registry import LoadedModel
from airloop.serve.champion import ChampionWatcher
from airloop.serve.schema import Prediction, request_fields, sample_value
from airloop.settings import ServeConfig, Settings, get_settings, serve_config

if TYPE_CHECKING:
    import pandas as pd
    from feast import FeatureService, FeatureStore

    from airloop.spec import ModelSpec

log = logging.getLogger(__name__)


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
    """Raise :class:`ModelNotServable` if the model needs an input that ``available`` (the feature
    service's features and the request fields) does not provide."""
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


class Predictor:
    """Champion + feature store + prediction log: what the HTTP service calls per request.

    ``service_seconds`` (``poll_seconds`` at first) is how long the FeatureService read last is
    reused before the registry is read again.
    """

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
        # (FeatureService, monotonic time read): re-read from the registry every
        # service_seconds, so a `feast apply` reaches the server as fast as a new champion does.
        self._service: "tuple[FeatureService, float] | None" = None
        self.service_seconds = poll_seconds

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
        row = {name: sample_value(self.spec, name) for name in request_fields(self.spec)}
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
        if cached is not None and now - cached[1] < self.service_seconds:
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
