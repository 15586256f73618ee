"""A spec's features: the Feast service, request fields, derived fields and declared aggregations."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from pydantic import Field, field_validator, model_validator

from airloop.spec.base import LOWER_SNAKE_NAME, StrictSpec

__all__ = [
    "TIME_PARTS",
    "AggregateFeature",
    "AggregateFunction",
    "AggregationSpec",
    "DerivedField",
    "FeaturesSpec",
    "TimePart",
    "TimePartInfo",
]

TimePart = Literal["hour", "day_of_week", "day_of_month", "month", "minute"]


@dataclass(frozen=True)
class TimePartInfo:
    """How a part of a timestamp is read (pandas' ``.dt`` accessor) and the values it takes
    (the derived request field's range)."""

    accessor: str
    low: int
    high: int


TIME_PARTS: dict[str, TimePartInfo] = {
    "hour": TimePartInfo("hour", 0, 23),
    "day_of_week": TimePartInfo("dayofweek", 0, 6),  # Monday is 0
    "day_of_month": TimePartInfo("day", 1, 31),
    "month": TimePartInfo("month", 1, 12),
    "minute": TimePartInfo("minute", 0, 59),
}


class DerivedField(StrictSpec):
    """A request field computed from the event row for training: a part of a timestamp column."""

    part: TimePart
    of: str


AggregateFunction = Literal["count", "sum", "mean", "min", "max", "ratio"]
_WINDOW = re.compile(r"^([1-9][0-9]{0,2})d$")


class AggregateFeature(StrictSpec):
    """One windowed statistic per key: ``function`` of the events of the last ``window`` days.

    ``count``: rows. ``sum``, ``mean``, ``min``, ``max``: over the non-null values of ``of``.
    ``ratio``: sum(of) / sum(per) * ``scale`` over the rows where both are present (km per
    minute, scale 60: km/h).
    """

    function: AggregateFunction
    of: str | None = None
    per: str | None = None
    scale: float | None = None
    # Whole days, e.g. "7d": the event day and the 6 before it (the engine is daily).
    window: str

    @field_validator("window")
    @classmethod
    def _whole_days(cls, value: str) -> str:
        if not _WINDOW.match(value):
            raise ValueError(f"window {value!r} must be whole days, e.g. '1d' or '7d' (1 to 999)")
        return value

    @model_validator(mode="after")
    def _operands(self) -> "AggregateFeature":
        wanted = {"count": (), "ratio": ("of", "per", "scale")}.get(self.function, ("of",))
        for name in ("of", "per", "scale"):
            given = getattr(self, name) is not None
            if given and name not in wanted:
                raise ValueError(f"{name}: {self.function} takes no {name!r}")
            if not given and name in wanted and name != "scale":
                raise ValueError(f"{name}: {self.function} needs {name!r} (a numeric dataset column)")
        if self.scale is not None and not (self.scale != 0 and abs(self.scale) != float("inf")):
            raise ValueError(f"scale: must be a finite non-zero number, got {self.scale}")
        return self

    @property
    def window_days(self) -> int:
        """The window in days."""
        return int(self.window[:-1])


class AggregationSpec(StrictSpec):
    """Windowed statistics per key of the dataset, written as one Feast source.

    ``name`` is the output directory under the offline store (the FileSource ``path``) and the
    prefix of its files; ``key`` one dataset column, or a list of them.
    """

    name: str
    key: str | list[str]
    features: dict[str, AggregateFeature] = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not LOWER_SNAKE_NAME.match(value):
            raise ValueError(f"name {value!r} must be lower_snake_case (it becomes a directory and file prefix)")
        return value

    @field_validator("key")
    @classmethod
    def _distinct_keys(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and (not value or len(set(value)) != len(value)):
            raise ValueError(f"give one column or a list of distinct columns, got {value}")
        return value

    @field_validator("features")
    @classmethod
    def _column_names(cls, value: dict[str, AggregateFeature]) -> dict[str, AggregateFeature]:
        bad = [name for name in value if not name.isidentifier()]
        if bad:
            raise ValueError(f"output names must be identifiers (letters, digits, _), got {bad}")
        return value

    @property
    def keys(self) -> list[str]:
        """The key columns, as a list."""
        return [self.key] if isinstance(self.key, str) else list(self.key)

    @property
    def window_days(self) -> int:
        """The longest window of its features: the days each output file summarizes."""
        return max(f.window_days for f in self.features.values())

    @property
    def columns(self) -> list[str]:
        """The dataset columns it reads: the keys, then every ``of`` and ``per``."""
        operands = [c for f in self.features.values() for c in (f.of, f.per) if c is not None]
        return list(dict.fromkeys([*self.keys, *operands]))


class FeaturesSpec(StrictSpec):
    """The model's features: its Feast service, request fields, declarations, job and aggregations."""

    service: str
    # Fields the caller sends at request time: dataset columns, or fields derived below.
    request: list[str] = Field(default_factory=list)
    # How training computes request fields that are not dataset columns (callers send them).
    derived: dict[str, DerivedField] = Field(default_factory=dict)
    # The model's Feast declarations (entities, sources, views, service), relative to the spec
    # file; default: the directory ``<model name>/feature_repo`` next to it.
    definitions: str | None = None
    # The model's own job that writes its views' sources from the validated dataset: a dotted
    # path to a function ``(spec, settings, *, force) -> airloop.features.Derived``, imported
    # with the models directory on the path, for what aggregations cannot say. None: no job.
    transform: str | None = None
    # Windowed statistics per key, declared (see AggregationSpec); run before the transform.
    aggregations: list[AggregationSpec] = Field(default_factory=list)

    @field_validator("transform")
    @classmethod
    def _dotted(cls, value: str | None) -> str | None:
        if value is not None and "." not in value:
            raise ValueError("features.transform must be a dotted path module.function, e.g. my_model.jobs.daily_stats")
        return value
