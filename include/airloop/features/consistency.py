"""A spec against its own Feast declarations: do they say the same thing?

The spec declares what Airloop writes (the event dataset and reference tables it publishes,
the windowed statistics of ``features.aggregations``) and what callers send
(``features.request``); the Feast declarations say what the views read and what the
FeatureService serves. Nothing made the two agree, so a renamed aggregation output or a
reference view stamped by the wrong column only showed up as empty features or a failed join
deep inside a run. :func:`definition_problems` compares them and names each disagreement by
model, view or table, and column; :func:`check_definitions` raises them as a ``SpecError``.

The declarations are Feast objects, so this needs Feast: it is not run at DAG parse time (the
dag-processor must not import Feast). It runs where Feast is loaded anyway: first thing in a
model's ``__features`` and ``__train`` runs (so a broken pair fails that model's runs, never
another model's), and in ``tests/dags/test_dag_integrity.py`` over every shipped spec. What a
spec can check on its own (e.g. warm-up days against the longest window) fails at load.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airloop.settings import Settings, get_settings

if TYPE_CHECKING:
    from feast.repo_contents import RepoContents

    from airloop.spec import ModelSpec

__all__ = ["FEAST_TYPES", "check_definitions", "definition_problems", "longest_day"]

# The Feast types a view may declare for a column of each spec type (what Airloop writes).
FEAST_TYPES: dict[str, tuple[str, ...]] = {
    "int": ("Int64", "Int32"),
    "float": ("Float64", "Float32"),
    "string": ("String",),
    "timestamp": ("UnixTimestamp",),
}

# The column the aggregation engine stamps each row with (the end of the day it summarizes).
_STAMP = "event_timestamp"


def longest_day(timezone: str) -> timedelta:
    """The longest day in ``timezone`` over this year and the next (25 hours where DST falls
    back by an hour): aggregation rows come once per local day, so at most this far apart."""
    import datetime as dt

    from airloop.daily_windows import day_start, end_of_day

    if timezone == "UTC":
        return timedelta(days=1)
    first = dt.date(dt.date.today().year, 1, 1)
    days = (first + timedelta(days=i) for i in range(731))
    return max(end_of_day(d, timezone) - day_start(d, timezone) for d in days)


def check_definitions(
    spec: "ModelSpec", contents: "RepoContents | None" = None, settings: Settings | None = None
) -> None:
    """Raise a ``SpecError`` naming every disagreement between ``spec`` and its declarations."""
    from airloop.spec import SpecError

    problems = definition_problems(spec, contents, settings)
    if problems:
        raise SpecError(
            f"{spec.name}: the spec and its Feast declarations ({spec.definitions_dir}) disagree: "
            + "; ".join(problems)
        )


def definition_problems(
    spec: "ModelSpec", contents: "RepoContents | None" = None, settings: Settings | None = None
) -> list[str]:
    """Every disagreement between ``spec`` and its Feast declarations, each a sentence that
    starts with the model's name and names the spec field, the Feast object and the column.

    ``contents``: the model's own declarations (default: parsed from ``spec.definitions_dir``).
    """
    if contents is None:
        from airloop.features.store import parse_definitions

        contents = parse_definitions(spec.definitions_dir)
    offline_dir = (settings or get_settings()).offline_dir
    check = _Check(spec, contents, offline_dir)
    check.service()
    check.aggregations()
    check.tables()
    check.unknown_directories()
    return [f"{spec.name}: {p}" for p in check.problems]


def _type_name(dtype: Any) -> str:
    """A Feast type's name as in ``feast.types`` (``Int64``, ``String``, ``Array(Int64)``)."""
    return str(dtype)


class _Check:
    def __init__(self, spec: "ModelSpec", contents: "RepoContents", offline_dir: Path) -> None:
        self.spec = spec
        self.offline_dir = offline_dir
        self.views = {fv.name: fv for fv in contents.feature_views}
        self.on_demand = {v.name: v for v in contents.on_demand_feature_views}
        self.services = {s.name: s for s in contents.feature_services}
        from feast.feature_view import DUMMY_ENTITY_NAME

        # Feast adds a dummy entity for views without one: it is no key anyone sends.
        self.join_keys = {e.name: e.join_key for e in contents.entities if e.name != DUMMY_ENTITY_NAME}
        self.problems: list[str] = []
        self._cadence: timedelta | None = None
        # Local FileSource directory (relative to the offline store) -> the views reading it.
        self.readers: dict[str, list] = {}
        for fv in self.views.values():
            directory = self._directory(fv.batch_source)
            if directory is not None:
                self.readers.setdefault(directory, []).append(fv)

    def _directory(self, source: Any) -> str | None:
        """The offline-store directory a local FileSource reads (None: not one)."""
        from feast import FileSource

        if not isinstance(source, FileSource):
            return None
        path = source.path
        if "://" in path:
            return None
        p = Path(path)
        if p.is_absolute():
            if not p.is_relative_to(self.offline_dir):
                return None
            p = p.relative_to(self.offline_dir)
        return p.as_posix().strip("/")

    def cadence(self) -> timedelta:
        """How far apart an aggregation's rows are stamped at the most: its longest local day."""
        if self._cadence is None:
            self._cadence = longest_day(self.spec.dataset.timezone)
        return self._cadence

    def _keys(self, fv) -> list[str]:
        """The join keys of a view: its entities' (Feast only lists a key among a view's
        ``entity_columns`` when its schema names it too)."""
        keys = [c.name for c in fv.entity_columns]
        keys += [self.join_keys[e] for e in fv.entities if e in self.join_keys and self.join_keys[e] not in keys]
        return keys

    # -- the FeatureService and the model's inputs ------------------------------------------

    def service(self) -> None:
        spec = self.spec
        name = spec.features.service
        service = self.services.get(name)
        if service is None:
            known = ", ".join(sorted(self.services)) or "none"
            self.problems.append(f"features.service names {name!r}, which its Feast declarations do not define (they define: {known})")
            return
        provided = {*spec.join_keys, *spec.features.request}
        inputs = set(spec.features.request)
        for projection in service.feature_view_projections:
            inputs.update(f.name for f in projection.features)
            fv = self.views.get(projection.name)
            if fv is not None:
                for key in self._keys(fv):
                    if key not in provided:
                        self.problems.append(
                            f"Feast view {fv.name} (in service {name}) joins on {key}, which is neither "
                            "an entity join_key nor a features.request field of the spec"
                        )
                continue
            odfv = self.on_demand.get(projection.name)
            if odfv is None:
                continue  # Feast itself refuses a service naming no view
            for source in odfv.source_request_sources.values():
                for field in source.schema:
                    self._request_field(odfv.name, source.name, field)
        named = [*spec.drift.exclude, *(c for c in spec.drift.columns if c != "prediction")]
        for column in named:
            if column not in inputs:
                where = "drift.exclude" if column in spec.drift.exclude else f"drift.columns.{column}"
                self.problems.append(
                    f"{where} names {column}, which is not a model input (a features.request field "
                    f"or a feature of service {name})"
                )

    def _request_field(self, view: str, source: str, field: Any) -> None:
        spec = self.spec
        if field.name not in spec.features.request:
            self.problems.append(
                f"on-demand view {view} reads request field {field.name} (RequestSource {source}), "
                "which features.request does not list: neither callers nor training would send it"
            )
            return
        column_type = "int" if field.name in spec.features.derived else spec.dataset.columns[field.name]
        self._typed(f"features.request field {field.name} is {column_type}", f"RequestSource {source}", field, column_type)

    def _typed(self, what: str, where: str, field: Any, kind: str) -> None:
        """A problem when ``field``'s Feast type cannot hold a column of spec type ``kind``."""
        allowed = FEAST_TYPES[kind]
        actual = _type_name(field.dtype)
        if actual not in allowed:
            self.problems.append(
                f"{what} but {where} declares {field.name} as {actual} (expected {' or '.join(allowed)})"
            )

    # -- declared aggregations ---------------------------------------------------------------

    def aggregations(self) -> None:
        for agg in self.spec.features.aggregations:
            where = f"features.aggregations.{agg.name}"
            readers = self.readers.get(agg.name, [])
            if not readers:
                self.problems.append(
                    f"{where} writes directory {agg.name} but no Feast view's FileSource reads it (path={agg.name!r})"
                )
                continue
            for fv in readers:
                self._aggregation_view(agg, fv)
            for output, feature in agg.features.items():
                kind = "int" if feature.function == "count" else "float"
                spelled = f"{output} ({FEAST_TYPES[kind][0]})"
                holding = [(fv, f) for fv in readers for f in fv.features if _column(fv, f.name) == output]
                if not holding:
                    names = ", ".join(fv.name for fv in readers)
                    view = f"Feast view {names} has" if len(readers) == 1 else f"none of the Feast views {names} has"
                    self.problems.append(f"{where} outputs {spelled} but {view} no field {output}")
                for fv, field in holding:
                    self._typed(f"{where} outputs {spelled}", f"Feast view {fv.name}", field, kind)

    def _aggregation_view(self, agg, fv) -> None:
        where = f"features.aggregations.{agg.name}"
        source = fv.batch_source
        if source.timestamp_field != _STAMP:
            self.problems.append(
                f"Feast view {fv.name} reads {where} by timestamp_field {source.timestamp_field!r}, "
                f"but its files are stamped in {_STAMP!r}"
            )
        keys = sorted(_column(fv, key) for key in self._keys(fv))
        if keys != sorted(agg.keys):
            self.problems.append(
                f"Feast view {fv.name} joins on {', '.join(keys) or 'no key'} but {where} is keyed by {', '.join(agg.keys)}"
            )
        written = {*agg.keys, *agg.features}
        for field in fv.features:
            column = _column(fv, field.name)
            if column not in written:
                self.problems.append(
                    f"Feast view {fv.name} has field {column}, which {where} does not output "
                    f"(it outputs {', '.join(agg.features)})"
                )
        cadence = self.cadence()
        if fv.ttl and fv.ttl < cadence:
            self.problems.append(
                f"Feast view {fv.name} has ttl {fv.ttl}, shorter than the day between {where}'s rows "
                f"({cadence} at the longest in {self.spec.dataset.timezone}): events late in a day would get "
                f"none of its statistics (use at least {cadence}, or 0 for no expiry)"
            )

    # -- published tables: the event dataset and the reference tables -----------------------

    def tables(self) -> None:
        spec = self.spec
        tables = [(f"dataset {spec.dataset.name}", spec.dataset, None)]
        tables += [(f"references.{r.name}", r, r) for r in spec.references]
        for where, table, reference in tables:
            readers = self.readers.get(table.name, [])
            if reference is not None and not readers and spec.features.transform is None:
                self.problems.append(
                    f"{where} is published to directory {table.name} but no Feast view's FileSource reads it "
                    f"(path={table.name!r}); a table no view or feature job reads needs no declaration"
                )
            for fv in readers:
                stamp = fv.batch_source.timestamp_field
                if stamp != table.timestamp:
                    self.problems.append(
                        f"Feast view {fv.name} reads {where} by timestamp_field {stamp!r}, "
                        f"but the table's timestamp is {table.timestamp!r}"
                    )
                for field in [*fv.entity_columns, *fv.features]:
                    column = _column(fv, field.name)
                    if column not in table.columns:
                        self.problems.append(f"Feast view {fv.name} has field {column}, which {where} has no column named")
                        continue
                    kind = table.columns[column]
                    self._typed(f"{where} column {column} is {kind}", f"Feast view {fv.name}", field, kind)

    def unknown_directories(self) -> None:
        """Views reading a local directory no table, aggregation (or feature job) of this model writes."""
        spec = self.spec
        if spec.features.transform is not None:
            return  # the job may write any directory
        written = {*spec.dataset_names, *(a.name for a in spec.features.aggregations)}
        for directory, readers in sorted(self.readers.items()):
            if directory not in written:
                for fv in readers:
                    self.problems.append(
                        f"Feast view {fv.name} reads directory {directory}, which is neither a table nor an "
                        f"aggregation of the spec (tables: {', '.join(spec.dataset_names)}; aggregations: "
                        f"{', '.join(a.name for a in spec.features.aggregations) or 'none'})"
                    )


def _column(fv, name: str) -> str:
    """The source column behind a view's field (``field_mapping`` renames source columns)."""
    for source_column, field_name in (fv.batch_source.field_mapping or {}).items():
        if field_name == name:
            return source_column
    return name
