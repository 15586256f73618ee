"""Model specs: one declarative YAML file per model under ``AIRLOOP_MODELS_DIR``.

A spec names the dataset and its schema, the entities (lookup keys), the validation rules, the
feature service, the target, the estimator, the promotion gate and the drift policy. The DAG
factory builds each model's lifecycle DAGs from its spec; the stage functions read it.

Ingest and validation take one table at a time, a :class:`TableSpec`: the model's events
(``spec.events``) or one of its reference tables (``spec.reference_tables``,
``spec.table(name)``), each with its schema, rules and time window.

Its rooms: :mod:`.base` (the error and the strict base every part shares), :mod:`.tables`
(dataset, entities, reference tables, validation rules), :mod:`.features` (the feature service,
request and derived fields, declared aggregations), :mod:`.model` (the whole spec: training,
promotion, drift, schedules) and :mod:`.loading` (reading spec files, importing a model's own
modules and example data).
"""

from airloop.spec.base import ColumnType, SpecError
from airloop.spec.features import (
    TIME_PARTS,
    AggregateFeature,
    AggregateFunction,
    AggregationSpec,
    DerivedField,
    FeaturesSpec,
    TimePart,
    TimePartInfo,
)
from airloop.spec.loading import (
    EXAMPLE_DATA_MODULE,
    example_data,
    get_spec,
    has_example_data,
    import_model_module,
    load_spec,
    load_specs,
    load_valid_specs,
)
from airloop.spec.model import (
    ColumnDrift,
    DriftSpec,
    EstimatorSpec,
    ModelSpec,
    PromotionSpec,
    SchedulesSpec,
    SplitSpec,
)
from airloop.spec.tables import (
    DatasetSpec,
    EntitySpec,
    ReferenceSpec,
    TableSpec,
    ValidationSpec,
)

__all__ = [
    "EXAMPLE_DATA_MODULE",
    "TIME_PARTS",
    "AggregateFeature",
    "AggregateFunction",
    "AggregationSpec",
    "ColumnDrift",
    "ColumnType",
    "DatasetSpec",
    "DerivedField",
    "DriftSpec",
    "EntitySpec",
    "EstimatorSpec",
    "FeaturesSpec",
    "ModelSpec",
    "PromotionSpec",
    "ReferenceSpec",
    "SchedulesSpec",
    "SpecError",
    "SplitSpec",
    "TableSpec",
    "TimePart",
    "TimePartInfo",
    "ValidationSpec",
    "example_data",
    "get_spec",
    "has_example_data",
    "import_model_module",
    "load_spec",
    "load_specs",
    "load_valid_specs",
]
