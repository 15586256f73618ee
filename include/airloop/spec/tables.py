"""A spec's tables: the event dataset, its entities, reference tables and validation rules.

Ingest and validation take one table at a time, a :class:`TableSpec`: the model's events or one
of its reference tables, each with its schema, rules and time window.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from airloop.spec.base import ColumnType, StrictSpec

__all__ = ["DatasetSpec", "EntitySpec", "ReferenceSpec", "TableSpec", "ValidationSpec"]


class DatasetSpec(StrictSpec):
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


class EntitySpec(StrictSpec):
    """A key the model's features are looked up by, and its column."""

    name: str
    join_key: str
    description: str = ""


class ValidationSpec(StrictSpec):
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
