"""A model's spec as a whole: its tables and features, training, promotion, drift and schedules."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from airloop.spec.base import LOWER_SNAKE_NAME, SpecError, StrictSpec
from airloop.spec.features import FeaturesSpec
from airloop.spec.tables import (
    DatasetSpec,
    EntitySpec,
    ReferenceSpec,
    TableSpec,
    ValidationSpec,
)

__all__ = [
    "ColumnDrift",
    "DriftSpec",
    "EstimatorSpec",
    "ModelSpec",
    "PromotionSpec",
    "SchedulesSpec",
    "SplitSpec",
]


class EstimatorSpec(StrictSpec):
    """The estimator: a dotted class path, its parameters and seed."""

    class_: str = Field(alias="class")
    params: dict[str, object] = Field(default_factory=dict)
    seed: int = 42

    @field_validator("class_")
    @classmethod
    def _dotted(cls, value: str) -> str:
        if "." not in value:
            raise ValueError("estimator.class must be a dotted import path, e.g. sklearn.linear_model.LogisticRegression")
        return value


class SplitSpec(StrictSpec):
    """How training splits time: holdout days, warm-up days and recency weighting."""

    holdout_days: int = Field(3, ge=1)
    # The first days of data only fill the features' windows (a 7-day statistic is not yet a
    # 7-day statistic); they are not trained on.
    warmup_days: int = Field(0, ge=0)
    # Weight each training row by 0.5 ** (age in days / half-life), age counted back from the
    # newest training day; None weighs every day the same.
    recency_half_life_days: float | None = Field(None, gt=0)


class PromotionSpec(StrictSpec):
    """The champion/challenger gate: the metric, its direction, the margin to beat and floors."""

    metric: str
    # None: the metric's known direction (decisions.known_direction), else greater is better.
    greater_is_better: bool | None = None
    min_improvement: float = Field(0.0, ge=0)
    floors: dict[str, float] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _direction_agrees(self) -> "PromotionSpec":
        from airloop.decisions import known_direction

        known = known_direction(self.metric)
        if known is not None and self.greater_is_better is not None and self.greater_is_better != known:
            better = "greater" if known else "lower"
            raise ValueError(
                f"promotion.greater_is_better={self.greater_is_better} contradicts {self.metric!r}, "
                f"where {better} is better (leave greater_is_better out)"
            )
        return self


class ColumnDrift(StrictSpec):
    """One input's own drift test (an Evidently method name) and threshold."""

    stattest: str | None = None
    threshold: float | None = Field(None, gt=0)


class DriftSpec(StrictSpec):
    """The drift check and retrain policy: window, tests, thresholds, sampling and the signals needed."""

    schedule: str | None = "@daily"
    window_hours: int = Field(24, ge=1)
    drift_share: float = Field(0.5, gt=0, le=1)
    consecutive_windows: int = Field(2, ge=1)
    min_rows: int = Field(500, ge=1)
    cooldown_hours: int = Field(24, ge=0)
    # Evidently drift method for every feature and the prediction (e.g. "wasserstein", "psi",
    # "jensenshannon"); None: Evidently's per-column default. Threshold None: the method's default.
    stattest: str | None = None
    stattest_threshold: float | None = Field(None, gt=0)
    # A drop of the promotion metric on labelled predictions below the champion's holdout value
    # by more than this (absolute) is a drift signal, once at least min_labels rows have labels.
    quality_drop: float = Field(0.05, ge=0)
    min_labels: int = Field(200, ge=1)
    # Larger windows are checked on a seeded random sample of this many rows (the reference
    # training set on max(50_000, sample_size) rows).
    sample_size: int = Field(50_000, ge=1_000)
    # Inputs measured and reported but left out of the drifted share: seasonal inputs (the hour
    # of a short window is never the training period's mix) or reference data whose change is
    # the world's, not the model's.
    exclude: list[str] = Field(default_factory=list)
    # Per-input test and threshold instead of stattest / stattest_threshold (``prediction``: the
    # prediction drift test's).
    columns: dict[str, ColumnDrift] = Field(default_factory=dict)
    # Data drift counts as a signal only alongside these (none: on its own).
    require: list[Literal["prediction_drift", "quality_drop"]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _exclusions_are_not_tuned(self) -> "DriftSpec":
        both = sorted(set(self.exclude) & set(self.columns))
        if both:
            raise ValueError(f"drift: {', '.join(both)} both excluded and given a test in drift.columns")
        return self


class SchedulesSpec(StrictSpec):
    """The ingest and training DAGs' schedules (None: on demand only)."""

    ingest: str | None = "@daily"
    train: str | None = "@weekly"


class ModelSpec(StrictSpec):
    """One model, as its YAML file declares it: data, features, training, promotion and drift."""

    name: str
    description: str = ""
    owner: str = "airloop"
    tags: list[str] = Field(default_factory=list)
    dataset: DatasetSpec
    # Reference tables beside the events, each with its own schema and rules.
    references: list[ReferenceSpec] = Field(default_factory=list)
    # The keys the model's features are looked up by; each is a dataset column. Keys are not
    # model inputs unless features.request lists them too.
    entities: list[EntitySpec] = Field(min_length=1)
    validation: ValidationSpec = ValidationSpec()
    features: FeaturesSpec
    target: str
    task: Literal["classification", "regression"]
    estimator: EstimatorSpec
    split: SplitSpec = SplitSpec()
    promotion: PromotionSpec
    drift: DriftSpec = DriftSpec()
    schedules: SchedulesSpec = SchedulesSpec()
    source_file: Path | None = Field(default=None, exclude=True)

    @field_validator("name")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not LOWER_SNAKE_NAME.match(value):
            raise ValueError("name must be lower_snake_case (it becomes DAG ids and registry names)")
        return value

    @model_validator(mode="after")
    def _columns_exist(self) -> "ModelSpec":
        cols = self.dataset.columns
        for attr in ("name", "join_key"):
            values = [getattr(e, attr) for e in self.entities]
            if len(set(values)) != len(values):
                raise ValueError(f"entities: each entity needs its own {attr}, got {values}")
        named = [self.target, *self.join_keys, *self.validation.unknown_columns(cols)]
        named += [d.of for d in self.features.derived.values()]
        unknown = sorted({c for c in named if c not in cols})
        if unknown:
            raise ValueError(f"columns not declared in dataset.columns: {', '.join(unknown)}")
        for name, derived in self.features.derived.items():
            if cols[derived.of] != "timestamp":
                raise ValueError(f"features.derived.{name}: {derived.of!r} is not a timestamp column")
            if name in cols:
                raise ValueError(f"features.derived.{name}: already a dataset column")
            if name not in self.features.request:
                raise ValueError(f"features.derived.{name}: not listed in features.request")
        tables = [self.dataset.name, *(r.name for r in self.references)]
        if len(set(tables)) != len(tables):
            raise ValueError(f"dataset and references need distinct names, got {tables}")
        undeclared = [f for f in self.features.request if f not in cols and f not in self.features.derived]
        if undeclared:
            raise ValueError(
                f"features.request: {', '.join(undeclared)} neither a dataset column nor in features.derived"
            )
        self._check_aggregations()
        return self

    def _check_aggregations(self) -> None:
        """Every declared aggregation reads existing columns of the right type and writes names
        no other table, aggregation, feature or dataset column has."""
        cols = self.dataset.columns
        taken = {n: "a dataset or reference table" for n in self.dataset_names}
        outputs = {c: f"a column of {r.name}" for r in self.references for c in r.columns}
        outputs.update({c: "a dataset column" for c in cols})
        outputs.update({n: "a derived request field" for n in self.features.derived})
        outputs["event_timestamp"] = "the column the engine stamps"
        for i, agg in enumerate(self.features.aggregations):
            where = f"features.aggregations.{i}"
            if agg.name in taken:
                raise ValueError(f"{where}.name: {agg.name!r} is already the name of {taken[agg.name]}")
            taken[agg.name] = "another aggregation"
            for key in agg.keys:
                if key not in cols:
                    raise ValueError(f"{where}.key: {key!r} is not a dataset column")
                if cols[key] not in ("int", "string"):
                    raise ValueError(f"{where}.key: {key!r} is a {cols[key]} column; a key is an int or string column")
            for name, feature in agg.features.items():
                here = f"{where}.features.{name}"
                for operand in ("of", "per"):
                    column = getattr(feature, operand)
                    if column is None:
                        continue
                    if column not in cols:
                        raise ValueError(f"{here}.{operand}: {column!r} is not a dataset column")
                    if cols[column] not in ("int", "float"):
                        raise ValueError(
                            f"{here}.{operand}: {column!r} is a {cols[column]} column; {feature.function} needs a number"
                        )
                if name in outputs:
                    raise ValueError(f"{here}: the output name {name!r} is already {outputs[name]}")
                outputs[name] = f"a feature of {agg.name}"
        self._check_warmup()

    def _check_warmup(self) -> None:
        """The warm-up days cover the longest declared window: a training row's statistics must
        summarize whole windows, not the first days of data."""
        windows = [
            (feature.window_days, f"features.aggregations.{agg.name}.features.{name}")
            for agg in self.features.aggregations
            for name, feature in agg.features.items()
        ]
        if not windows:
            return
        days, where = max(windows, key=lambda w: w[0])
        if self.split.warmup_days < days:
            raise ValueError(
                f"split.warmup_days: {self.split.warmup_days} is shorter than the longest declared window, "
                f"{days}d ({where}): the first training days would see partial windows (set it to {days} or more)"
            )

    @property
    def join_keys(self) -> list[str]:
        """The entities' join keys, in the spec's order."""
        return [e.join_key for e in self.entities]

    @property
    def dataset_names(self) -> list[str]:
        """The event dataset's name, then each reference table's: what ingest lands."""
        return [self.dataset.name, *(r.name for r in self.references)]

    @property
    def events(self) -> TableSpec:
        """The event table: ``dataset`` with the model's ``validation`` rules."""
        return TableSpec(model=self.name, validation=self.validation, **dict(self.dataset))

    @property
    def reference_tables(self) -> list[TableSpec]:
        """Each reference table, with its own rules, in the spec's order."""
        return [TableSpec(model=self.name, **dict(ref)) for ref in self.references]

    @property
    def tables(self) -> list[TableSpec]:
        """The event table, then each reference table: what ingest lands, validates and publishes."""
        return [self.events, *self.reference_tables]

    def table(self, name: str) -> TableSpec:
        """The table ``name`` (the events or a reference table); :class:`SpecError` if none."""
        for table in self.tables:
            if table.name == name:
                return table
        raise SpecError(f"{self.name}: no dataset or reference table named {name!r} (known: {self.dataset_names})")

    @property
    def definitions_dir(self) -> Path:
        """The directory of the model's Feast declarations."""
        return self.home / (self.features.definitions or f"{self.name}/feature_repo")

    @property
    def home(self) -> Path:
        """The directory the spec file is in: its relative paths and dotted paths start here."""
        if self.source_file is not None:
            return self.source_file.parent
        from airloop.settings import get_settings

        return get_settings().models_dir

    @property
    def registered_model_name(self) -> str:
        """The model's name in the MLflow registry."""
        return self.name

    def dag_id(self, stage: str) -> str:
        """The id of the model's DAG for ``stage``, e.g. ``my_model__train``."""
        return f"{self.name}__{stage}"
