"""The service's HTTP contract: request and response models built from a model's spec.

BentoML validates requests with these models and :mod:`airloop.bento_service` builds the
OpenAPI document (GET /docs.json) from their JSON schemas, descriptions and examples. Request
fields take their types, ranges and categories from the spec (:func:`request_model`,
:func:`batch_request_model`, :func:`feedback_model`); :func:`request_examples`,
:func:`feedback_examples` and :func:`sample_value` give valid values for the document and
for warm-up calls. The answers: :class:`Prediction`, :class:`BatchPrediction`,
:class:`FeedbackAck`, :class:`ServiceStatus` and :class:`Error`.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args, get_origin

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model
from pydantic.json_schema import SkipJsonSchema

from airloop.errors import ModelNotServable

if TYPE_CHECKING:
    from airloop.spec import ModelSpec


_INT64 = (-(2**63), 2**63 - 1)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


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
    """One prediction: for classification the probability of the positive class (1)."""

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
    """What ``POST /predict_batch`` answers."""

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
    """What ``POST /feedback`` answers: the label stored for a prediction."""

    request_id: str = Field(description="The prediction labeled.")
    label: float = Field(description="The label stored.")
    labeled_at: str = Field(description="When it was stored (ISO 8601, UTC).")


class PredictionLogStatus(BaseModel):
    """The prediction log's writer, as ``POST /status`` reports it."""

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


def sample_value(spec: "ModelSpec", name: str) -> Any:
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
