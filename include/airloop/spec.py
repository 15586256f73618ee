"""Model specs: one declarative YAML file per model under ``AIRLOOP_MODELS_DIR``.

A spec names the dataset and its schema, the entities (lookup keys), the validation rules, the feature
service, the target, the estimator, the promotion gate and the drift policy. The DAG
factory builds each model's lifecycle DAGs from its spec; the stage functions read it.

Ingest and validation take one table at a time, a :class:`TableSpec`: the model's events
(``spec.events``) or one of its reference tables (``spec.reference_tables``,
``spec.table(name)``), each with its schema, rules and time window.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

ColumnType = Literal["string", "int", "float", "timestamp"]
_NAME = re.compile(r"^[a-z][a-z0-9_]{1,62}$")


class SpecError(ValueError):
    """A model spec file is missing, unreadable or invalid."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetSpec(_Strict):
    """A landing table: its name, file pattern, timestamp column and typed columns."""

    name: str
    pattern: str
    timestamp: str
    columns: dict[str, ColumnType]
    # The IANA zone whose midnights cut the table's days: a batch ``<name>_YYYY-MM-DD.csv``
    # covers [local midnight, next local midnight) of that date (23 or 25 hours on a DST day).
    # Stored times stay UTC.
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"{value!r} is not an IANA time zone name (e.g. 'UTC', 'Europe/Berlin'): {exc}") from None
        return value

    @model_validator(mode="after")
    def _timestamp_is_a_column(self) -> "DatasetSpec":
        if self.columns.get(self.timestamp) != "timestamp":
            raise ValueError(f"timestamp column {self.timestamp!r} must be declared as 'timestamp'")
        return self


class EntitySpec(_Strict):
    """A key the model's features are looked up by, and its column."""

    name: str
    join_key: str
    description: str = ""


class ValidationSpec(_Strict):
    """The rules a table's batch must pass: required, unique, ranges, categories, row count, time window."""

    required: list[str] = Field(default_factory=list)
    unique: list[list[str]] = Field(default_factory=list)
    ranges: dict[str, tuple[float, float]] = Field(default_factory=dict)
    categories: dict[str, list[str]] = Field(default_factory=dict)
    row_count: tuple[int, int] = (1, 10_000_000)
    # "1d": every timestamp falls inside the batch's day (in the table's timezone). None: no window (a static table
    # whose timestamps say since when a row holds).
    window: Literal["1d"] | None = "1d"

    def unknown_columns(self, columns: dict[str, str]) -> list[str]:
        """The columns these rules name that ``columns`` does not declare."""
        named = [*self.required, *(c for group in self.unique for c in group), *self.ranges, *self.categories]
        return sorted({c for c in named if c not in columns})


class _RuledTable(DatasetSpec):
    """A table's schema with its own validation rules (which must name its columns)."""

    description: str = ""
    validation: ValidationSpec = ValidationSpec()

    @model_validator(mode="after")
    def _rules_name_columns(self) -> "_RuledTable":
        unknown = self.validation.unknown_columns(self.columns)
        if unknown:
            raise ValueError(f"validation names columns not in {self.name}'s columns: {', '.join(unknown)}")
        return self


class ReferenceSpec(_RuledTable):
    """A table the features read beside the events (attributes by key, or time-keyed values).

    It lands, is validated, versioned and published like an event batch, under its own name.
    """


class TableSpec(_RuledTable):
    """One table a model lands, as ingest and validation take it: schema, rules and time window.

    The model's event table (:attr:`ModelSpec.events`: ``dataset`` with the model's
    ``validation``) and each reference table (:attr:`ModelSpec.reference_tables`) have this one
    shape, so the same gate (typed read, GX suite, DVC versioning, quarantine, offline
    publishing) serves them all. ``model`` names the model the table belongs to: its validation
    records and Great Expectations suite carry it.
    """

    model: str

    @property
    def window(self) -> Literal["1d"] | None:
        """The window a batch's timestamps must fall in: "1d" the batch day (UTC), None none."""
        return self.validation.window


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


class DerivedField(_Strict):
    """A request field computed from the event row for training: a part of a timestamp column."""

    part: TimePart
    of: str


AggregateFunction = Literal["count", "sum", "mean", "min", "max", "ratio"]
_WINDOW = re.compile(r"^([1-9][0-9]{0,2})d$")


class AggregateFeature(_Strict):
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


class AggregationSpec(_Strict):
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
        if not _NAME.match(value):
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


class FeaturesSpec(_Strict):
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


class EstimatorSpec(_Strict):
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


class SplitSpec(_Strict):
    """How training splits time: holdout days, warm-up days and recency weighting."""

    holdout_days: int = Field(3, ge=1)
    # The first days of data only fill the features' windows (a 7-day statistic is not yet a
    # 7-day statistic); they are not trained on.
    warmup_days: int = Field(0, ge=0)
    # Weight each training row by 0.5 ** (age in days / half-life), age counted back from the
    # newest training day; None weighs every day the same.
    recency_half_life_days: float | None = Field(None, gt=0)


class PromotionSpec(_Strict):
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


class ColumnDrift(_Strict):
    """One input's own drift test (an Evidently method name) and threshold."""

    stattest: str | None = None
    threshold: float | None = Field(None, gt=0)


class DriftSpec(_Strict):
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


class SchedulesSpec(_Strict):
    """The ingest and training DAGs' schedules (None: on demand only)."""

    ingest: str | None = "@daily"
    train: str | None = "@weekly"


class ModelSpec(_Strict):
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
        if not _NAME.match(value):
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


def load_spec(path: str | Path) -> ModelSpec:
    """The spec in ``path``, validated (its name is the file's; its definitions and transform exist)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise SpecError(f"{path}: cannot read spec: {exc}") from exc
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: a spec is a YAML mapping, got {type(raw).__name__}")
    try:
        spec = ModelSpec.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
        )
        raise SpecError(f"{path}: invalid model spec: {problems}") from exc
    if spec.name != path.stem:
        raise SpecError(f"{path}: spec name {spec.name!r} must match the file name {path.stem!r}")
    spec = spec.model_copy(update={"source_file": path})
    if not spec.definitions_dir.is_dir():
        raise SpecError(f"{path}: features.definitions: no directory {spec.definitions_dir}")
    if spec.features.transform is not None:
        problem = _transform_problem(spec.home, spec.features.transform)
        if problem:
            raise SpecError(f"{path}: features.transform: {problem}")
    return spec


def _transform_problem(home: Path, dotted: str) -> str | None:
    """Why ``dotted`` does not name a top-level function of a module under ``home`` (None: it does).

    Checked on the source text, so loading a spec (at DAG parse time) imports nothing.
    """
    import ast

    module, _, function = dotted.rpartition(".")
    source = home.joinpath(*module.split(".")).with_suffix(".py")
    if not source.is_file():
        return f"{dotted!r}: no module file {source}"
    try:
        tree = ast.parse(source.read_text(), filename=str(source))
    except (OSError, SyntaxError, ValueError) as exc:
        return f"{dotted!r}: cannot read {source}: {exc}"
    if not any(isinstance(node, ast.FunctionDef) and node.name == function for node in tree.body):
        return f"{dotted!r}: {source} defines no top-level function {function!r}"
    return None


def import_model_module(spec: ModelSpec, module_name: str) -> ModuleType:
    """Import ``module_name`` (e.g. ``my_model.jobs``) from the spec's directory.

    The directory is first on ``sys.path`` only during the import, and the module must resolve
    to a file under it, not to an installed module of the same name.
    """
    import importlib
    import sys

    home = spec.home.resolve()
    sys.path.insert(0, str(home))
    try:
        module = importlib.import_module(module_name)
    finally:
        sys.path.remove(str(home))
    origin = Path(getattr(module, "__file__", "") or "").resolve()
    if not origin.is_relative_to(home):
        raise SpecError(f"{spec.name}: {module_name!r} resolves to {origin}, outside {home}")
    return module


EXAMPLE_DATA_MODULE = "datagen"


def has_example_data(spec: ModelSpec) -> bool:
    """Whether the model's directory holds example data (``<model>/datagen.py``)."""
    return (spec.home / spec.name / f"{EXAMPLE_DATA_MODULE}.py").is_file()


def example_data(model: "str | ModelSpec") -> ModuleType:
    """The model's example-data module, ``<model>/datagen.py`` beside its spec (a model name
    is looked up in the models directory).

    What the demo lands and serves, and what tests and benchmarks generate data with; the
    library itself never reads it. Imported as ``<model>.datagen`` by
    :func:`import_model_module`, once per process: every caller gets the same module.
    """
    spec = get_spec(model) if isinstance(model, str) else model
    return import_model_module(spec, f"{spec.name}.{EXAMPLE_DATA_MODULE}")


def load_specs(models_dir: str | Path | None = None) -> list[ModelSpec]:
    """All specs in the models directory, sorted by name."""
    if models_dir is None:
        from airloop.settings import get_settings

        models_dir = get_settings().models_dir
    return [load_spec(p) for p in sorted(Path(models_dir).glob("*.yaml"))]


def load_valid_specs(models_dir: str | Path | None = None) -> tuple[list[ModelSpec], list[SpecError]]:
    """Every spec in the models directory that loads, sorted by name, and the errors of those
    that do not (each names its file)."""
    if models_dir is None:
        from airloop.settings import get_settings

        models_dir = get_settings().models_dir
    specs, errors = [], []
    for path in sorted(Path(models_dir).glob("*.yaml")):
        try:
            specs.append(load_spec(path))
        except SpecError as exc:
            errors.append(exc)
    return specs, errors


def get_spec(name: str, models_dir: str | Path | None = None) -> ModelSpec:
    """The spec named ``name`` in the models directory; :class:`SpecError` if there is none."""
    for spec in load_specs(models_dir):
        if spec.name == name:
            return spec
    raise SpecError(f"no model spec named {name!r}")
