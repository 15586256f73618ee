"""What a validation run reports: :class:`Failure`, :class:`ValidationResult`, and
:func:`excerpt`, the only way a batch's values may be quoted in a message or record."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import asdict, dataclass, field
from urllib.parse import quote

__all__ = [
    "MAX_EXAMPLES", "MAX_EXCERPT", "UNDECODED", "Failure", "ValidationResult", "excerpt", "record_page",
]

# Bad values a failure quotes at the most.
MAX_EXAMPLES = 5
# Longest piece of a batch value that messages and records may quote.
MAX_EXCERPT = 40
# Bytes that are not UTF-8 survive decoding as lone surrogates (errors="surrogateescape").
UNDECODED = re.compile("[\udc80-\udcff]")


@dataclass(frozen=True)
class Failure:
    """One failed expectation. ``column`` is None when the file or table as a whole failed."""

    column: str | None
    expectation: str
    examples: list[str] = field(default_factory=list)
    detail: str = ""

    def describe(self) -> str:
        """One line: the column, the expectation, the detail and a few quoted examples."""
        text = f"{self.column or '(table)'}: {self.expectation}"
        if self.detail:
            text += f" - {self.detail}"
        if self.examples:
            text += f"; e.g. {', '.join(self.examples)}"
        return text


def record_page(dataset: str, result_id: str) -> str:
    """Where the Airflow UI shows one validation record: a path of the reports plugin
    (``plugins/airloop_plugin.py``), relative to the Airflow base URL. Every run has one, also a
    batch refused before Great Expectations ran, which no Data Docs page mentions."""
    return f"/airloop/validation/{quote(dataset, safe='')}/{quote(result_id, safe='')}"


@dataclass(frozen=True)
class ValidationResult:
    """One validation run of a batch: its verdict, failures, Data Docs page (None when Great
    Expectations did not run), JSON record and the UI page that shows the record."""

    batch: str
    day: dt.date
    success: bool
    result_id: str
    failures: list[Failure]
    rows: int | None
    data_docs: str | None
    result_json: str
    page: str

    def summary(self) -> str:
        """A readable verdict: one line if it passed, else one line per failure (for alerts)."""
        if self.success:
            return f"{self.batch} passed validation ({self.rows} rows, result {self.result_id})"
        lines = [
            f"{self.batch} failed validation (result {self.result_id}): "
            f"{len(self.failures)} failing expectation(s)"
        ]
        lines += [f"  - {failure.describe()}" for failure in self.failures]
        lines.append(f"  Details in the Airflow UI: {self.page}")
        return "\n".join(lines)

    def as_dict(self) -> dict:
        """The result as JSON-ready data (the day as ISO text)."""
        out = asdict(self)
        out["day"] = self.day.isoformat()
        return out


def excerpt(value: str | bytes) -> str:
    """How a value from a batch may appear in a message or record: escaped and short.

    ``repr`` of at most ``MAX_EXCERPT`` characters, with the length cut off; bytes that were
    not UTF-8 are shown as bytes (``b'\\xff'``).
    """
    if isinstance(value, str) and UNDECODED.search(value):
        value = value.encode("utf-8", "surrogateescape")
    if len(value) <= MAX_EXCERPT:
        return repr(value)
    return f"{value[:MAX_EXCERPT]!r}...(+{len(value) - MAX_EXCERPT})"
