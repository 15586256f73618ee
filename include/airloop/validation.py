"""Validate one landing batch against its model spec.

Two layers. First the file itself is read as text and checked here: non-empty, parseable
CSV, exactly the declared columns (a byte order mark or whitespace around a header name is
reported as such), every value parseable as its declared type. Integers must fit int64 and
floats must be finite: ``inf``, ``nan`` and overflowing values are always refused (the spec
has no option to allow them). Great Expectations cannot say anything useful about a file
that fails those (it needs a typed frame), so such a batch is rejected without a GX run. A
file that passes is cast to its declared types and validated by a Great Expectations suite
built from the spec, run through a Checkpoint that also rebuilds the Data Docs.

The file is read in chunks of rows, each converted to typed columns at once, so reading
holds the typed frame plus one chunk rather than every cell as a Python string: the peak
stays within about 3x the file size plus a constant (``python -m bench.bench_ingest``).

Messages and records quote a batch only through :func:`excerpt` (a few escaped values of at
most ``MAX_EXCERPT`` characters), and a header that shares no name with the spec is not
quoted at all: such a file may be anything, e.g. a secrets file delivered by mistake.

Every run gets a result id and a JSON record under ``validation_dir/results/<dataset>/``.
Pandas and GX are imported inside functions: DAG files import this module at parse time.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import stat
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    from airloop.settings import Settings
    from airloop.spec import ModelSpec

MAX_EXAMPLES = 5
# Longest piece of a batch value that messages and records may quote.
MAX_EXCERPT = 40
# Rows converted at a time: bounds the Python strings alive while reading (~15 MB at 11 columns).
CHUNK_ROWS = 20_000
# What ExpectColumnValuesToBeOfType calls each spec type on a pandas frame (see _TypedColumn).
_GX_TYPES = {"string": "str", "int": "int64", "float": "float64", "timestamp": "Timestamp"}
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_BOM = "\ufeff"
# Bytes that are not UTF-8 survive decoding as lone surrogates (errors="surrogateescape").
_UNDECODED = re.compile("[\udc80-\udcff]")
_NOT_TEXT = re.compile("[\x00\udc80-\udcff]")
# "3.0" counts as 3: writers emit nullable integer columns that way. Digits are ASCII only.
_INT = r"^(?P<sign>[+-]?)0*(?P<digits>[0-9]+?)(?:\.0*)?$"
_FLOAT = r"^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$"
_NOT_FINITE = r"(?i)^[+-]?(?:inf|infinity|nan)$"
_INT64_DIGITS = 19
# What each kind of bad value fails, and how the failure describes it.
_BAD = {
    "text": ("expect_column_values_to_be_utf8_text", "are not UTF-8 text or contain NUL bytes"),
    "type": ("expect_column_values_to_be_of_type", "are not {kind}"),
    "range": ("expect_column_values_to_be_of_type",
              "are integers outside the int64 range (always refused: they would wrap around)"),
    "not_finite": ("expect_column_values_to_be_of_type",
                   "are infinite, NaN or beyond float64 (always refused; an empty cell is a missing value)"),
}


class BatchNameError(ValueError):
    """A landing file's name does not carry the batch day (``<dataset>_YYYY-MM-DD.csv``)."""


@dataclass(frozen=True)
class Failure:
    """One failed expectation. ``column`` is None when the file or table as a whole failed."""

    column: str | None
    expectation: str
    examples: list[str] = field(default_factory=list)
    detail: str = ""

    def describe(self) -> str:
        text = f"{self.column or '(table)'}: {self.expectation}"
        if self.detail:
            text += f" - {self.detail}"
        if self.examples:
            text += f"; e.g. {', '.join(self.examples)}"
        return text


@dataclass(frozen=True)
class ValidationResult:
    batch: str
    day: dt.date
    success: bool
    result_id: str
    failures: list[Failure]
    rows: int | None
    data_docs: str | None
    result_json: str

    def summary(self) -> str:
        if self.success:
            return f"{self.batch} passed validation ({self.rows} rows, result {self.result_id})"
        lines = [
            f"{self.batch} failed validation (result {self.result_id}): "
            f"{len(self.failures)} failing expectation(s)"
        ]
        lines += [f"  - {failure.describe()}" for failure in self.failures]
        if self.data_docs:
            lines.append(f"  Data Docs: {self.data_docs}")
        return "\n".join(lines)

    def as_dict(self) -> dict:
        out = asdict(self)
        out["day"] = self.day.isoformat()
        return out


def excerpt(value: str | bytes) -> str:
    """How a value from a batch may appear in a message or record: escaped and short.

    ``repr`` of at most ``MAX_EXCERPT`` characters, with the length cut off; bytes that were
    not UTF-8 are shown as bytes (``b'\\xff'``).
    """
    if isinstance(value, str) and _UNDECODED.search(value):
        value = value.encode("utf-8", "surrogateescape")
    if len(value) <= MAX_EXCERPT:
        return repr(value)
    return f"{value[:MAX_EXCERPT]!r}...(+{len(value) - MAX_EXCERPT})"


def batch_day(spec: "ModelSpec", path: str | Path) -> dt.date:
    """The day a batch covers, from its file name ``<dataset>_YYYY-MM-DD.csv``."""
    name = Path(path).name
    prefix = f"{spec.dataset.name}_"
    stem, suffix = Path(name).stem, Path(name).suffix
    date_part = stem[len(prefix):]
    if stem.startswith(prefix) and suffix == ".csv" and _DATE.fullmatch(date_part):
        try:
            return dt.date.fromisoformat(date_part)
        except ValueError:
            pass
    raise BatchNameError(
        f"{name!r}: batch files must be named {spec.dataset.name}_YYYY-MM-DD.csv with a real date; "
        "the date sets the window every event_timestamp must fall in"
    )


# The start of the window of a table without one (``validation.window: null``).
NO_WINDOW_START = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def batch_window(
    day: dt.date, now: dt.datetime | None = None, window: str | None = "1d"
) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) of a batch day in UTC, cut at ``now`` so no row can come from the future.

    ``window=None`` (a table without a batch-day window): any time before ``now``.
    """
    now = now or dt.datetime.now(dt.timezone.utc)
    if window is None:
        return NO_WINDOW_START, now
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.timezone.utc)
    return start, min(start + dt.timedelta(days=1), now)


def validate_batch(
    spec: "ModelSpec", path: str | Path, settings: "Settings | None" = None
) -> ValidationResult:
    """Validate a file and record the result (nothing is moved or published).

    For a file named by hand: it follows links, but refuses anything but a regular file.
    The landing area's own rules (no links, a size limit) are ``ingest``'s. Not safe to run
    concurrently against the same ``validation_dir``: ``ingest_batch`` serializes runs.
    """
    path = Path(path)
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise ValueError(f"{path.name!r} is not a regular file")
    result, _ = run_validation(spec, path.name, path, batch_day(spec, path), settings)
    return result


def run_validation(
    spec: "ModelSpec",
    batch: str,
    data: bytes | Path,
    day: dt.date,
    settings: "Settings | None" = None,
) -> tuple[ValidationResult, "pd.DataFrame | None"]:
    """Validate a batch (its bytes or a path to a regular file) and return the result with
    the typed frame (None unless it passed)."""
    from airloop.settings import get_settings

    settings = settings or get_settings()
    result_id = _new_result_id(batch)
    frame, failures = read_typed(spec, data)
    data_docs, gx_result = None, None
    if frame is not None:
        failures, data_docs, gx_result = _run_checkpoint(spec, frame, day, result_id, settings)
    else:
        data_docs = _docs_index(settings)
    result = _record(spec, batch, day, result_id, failures, None if frame is None else len(frame),
                     data_docs, gx_result, settings)
    return result, (frame if result.success else None)


def record_refusal(
    spec: "ModelSpec", batch: str, day: dt.date, failure: Failure, settings: "Settings | None" = None
) -> ValidationResult:
    """Record a failed validation for a batch refused unread (see ``ingest``), without GX."""
    from airloop.settings import get_settings

    settings = settings or get_settings()
    return _record(spec, batch, day, _new_result_id(batch), [failure], None, _docs_index(settings),
                   None, settings)


def _new_result_id(batch: str) -> str:
    return f"{Path(batch).stem}-{uuid.uuid4().hex[:12]}"


def _docs_index(settings: "Settings") -> str | None:
    index = settings.validation_dir / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html"
    return str(index) if index.exists() else None


def _record(
    spec: "ModelSpec",
    batch: str,
    day: dt.date,
    result_id: str,
    failures: list[Failure],
    rows: int | None,
    data_docs: str | None,
    gx_result: dict | None,
    settings: "Settings",
) -> ValidationResult:
    """The result of one run, written as its JSON record."""
    result_json = settings.validation_dir / "results" / spec.dataset.name / f"{result_id}.json"
    result = ValidationResult(
        batch=batch,
        day=day,
        success=not failures,
        result_id=result_id,
        failures=failures,
        rows=rows,
        data_docs=data_docs,
        result_json=str(result_json),
    )
    result_json.parent.mkdir(parents=True, exist_ok=True)
    record = {**result.as_dict(), "model": spec.name, "great_expectations": _redacted(gx_result)}
    result_json.write_text(json.dumps(record, indent=2, default=str))
    return result


# --- layer 1: the file, read as text ------------------------------------------------------


def read_typed(spec: "ModelSpec", data: bytes | Path) -> tuple["pd.DataFrame | None", list[Failure]]:
    """Parse a CSV batch, check structure and types, and cast to the declared types.

    ``data`` is the file's bytes or the path of a regular file (read in chunks; checking
    what the path is and how large is the caller's job). Returns (typed frame, []) or
    (None, failures). Empty cells are nulls. The frame's index is the line number of each
    row in the file, so failures can point at lines.
    """
    import gc
    import io

    stream: BinaryIO = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else open(data, "rb")
    # Each chunk's row lists survive long enough to reach the oldest GC generation, whose
    # collections then walk every tracked object: pausing the GC halves the read time.
    # The reader makes no reference cycles; anything else's are collected after.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        with stream:
            return _read_stream(spec, stream)
    finally:
        if was_enabled:
            gc.enable()


def _read_stream(spec: "ModelSpec", stream: BinaryIO) -> tuple["pd.DataFrame | None", list[Failure]]:
    """``read_typed`` on an open binary stream.

    The csv module rather than pandas or pyarrow: pandas pads short rows with nulls and
    turns extra leading fields into an index, pyarrow reads ``"a"b`` as ``ab``: each would
    hide a truncated, shifted or mangled file.
    """
    import csv
    import io

    head = stream.read(1 << 16)
    if len(head) < 1 << 16 and not head.strip():
        return None, [Failure(None, "expect_file_to_be_non_empty", detail=f"the file has {len(head)} bytes")]
    stream.seek(0)
    # Undecodable bytes become surrogates so the failure can name their column and line.
    text = io.TextIOWrapper(stream, encoding="utf-8", errors="surrogateescape", newline="")
    reader = csv.reader(text, strict=True)
    try:
        header = next((row for row in reader if row), None)
    except csv.Error as exc:
        return None, [_unparseable(f"record starting at line 1: {exc}")]
    if header is None:
        return None, [Failure(None, "expect_file_to_be_non_empty", detail="the file has no header row")]
    positions, failures = _check_header(spec, header)
    if failures:
        return None, failures
    return _read_body(spec, reader, positions, len(header), reader.line_num)


def _unparseable(detail: str, examples: list[str] | None = None) -> Failure:
    return Failure(None, "expect_file_to_be_parseable_csv", examples or [], detail)


def _check_header(spec: "ModelSpec", header: list[str]) -> tuple[dict[str, int], list[Failure]]:
    """Where each declared column is in the file, or what is wrong with the header.

    A header that shares no name with the spec is not quoted: the file may be anything, and
    its first line must not travel into alerts.
    """
    declared = spec.dataset.columns
    if any(_NOT_TEXT.search(cell) for cell in header):
        return {}, [_unparseable("the header row is not UTF-8 text or contains NUL bytes")]
    bom = header[0].startswith(_BOM)
    raw = [header[0].removeprefix(_BOM), *header[1:]] if bom else header
    names = [cell.strip() for cell in raw]
    if not set(names) & set(declared):
        return {}, [Failure(
            None, "expect_table_columns_to_match_set",
            detail=f"the first line has none of the {len(declared)} declared columns "
                   f"({', '.join(declared)}); its {len(header)} field(s) are not shown: "
                   f"the file may not be a batch of {spec.dataset.name}",
        )]
    failures = []
    if bom:
        failures.append(Failure(
            names[0] if names[0] in declared else None, "expect_table_columns_to_match_set",
            detail=f"the file starts with a UTF-8 BOM (byte order mark) before the header "
                   f"{excerpt(names[0])}; save it as UTF-8 without a BOM",
        ))
    for cell, name in zip(raw, names):
        if cell != name and name in declared:
            ends = [side for side, space in (("leading", cell[0].isspace()), ("trailing", cell[-1].isspace()))
                    if space]
            failures.append(Failure(name, "expect_table_columns_to_match_set",
                                    detail=f"header {excerpt(cell)} has {' and '.join(ends)} whitespace"))
    duplicated = sorted(name for name, count in Counter(names).items() if count > 1)
    if duplicated:
        failures.append(Failure(None, "expect_table_columns_to_match_set",
                                [excerpt(n) for n in duplicated[:MAX_EXAMPLES]], "duplicate column names"))
    failures += [
        Failure(column, "expect_column_to_exist", detail="declared in the spec, missing from the file")
        for column in declared
        if column not in names
    ]
    undeclared = [excerpt(cell) for cell, name in zip(raw, names) if name not in declared]
    if undeclared:
        failures.append(Failure(None, "expect_table_columns_to_match_set", undeclared[:MAX_EXAMPLES],
                                detail=f"{len(undeclared)} column(s) not declared in the spec"))
    return {name: i for i, name in enumerate(names) if name in declared}, failures


def _read_body(
    spec: "ModelSpec", reader, positions: dict[str, int], width: int, header_line: int
) -> tuple["pd.DataFrame | None", list[Failure]]:
    """Read the records after the header, CHUNK_ROWS at a time, into typed columns."""
    import csv

    import numpy as np
    import pandas as pd

    columns = {name: _TypedColumn(kind) for name, kind in spec.dataset.columns.items()}
    rows: list[list[str]] = []
    lines: list[int] = []
    line_chunks: list[range | np.ndarray] = []  # a range where lines are consecutive (the usual)
    ragged: list[int] = []
    ragged_count = 0
    last_line = header_line

    def flush() -> None:
        if rows and not ragged_count:  # once a row is ragged the file is rejected: stop converting
            at = np.array(lines, dtype=np.int64)
            cells = list(zip(*rows))
            for name, column in columns.items():
                column.add(cells[positions[name]], at)
            consecutive = lines[-1] - lines[0] == len(lines) - 1
            line_chunks.append(range(lines[0], lines[-1] + 1) if consecutive else at)
        rows.clear()
        lines.clear()

    try:
        for row in reader:
            if len(row) == width:
                rows.append(row)
                lines.append(reader.line_num)
                if len(rows) >= CHUNK_ROWS:
                    last_line = lines[-1]
                    flush()
            elif row:
                ragged_count += 1
                last_line = reader.line_num
                if len(ragged) < MAX_EXAMPLES:
                    ragged.append(reader.line_num)
    except csv.Error as exc:
        # The broken record starts right after the last good one (an open quote runs to EOF).
        start = max(lines[-1] if lines else 0, last_line) + 1
        return None, [_unparseable(f"record starting at line {start}: {exc}")]
    flush()
    if ragged_count:
        return None, [_unparseable(f"{ragged_count} row(s) do not have the header's {width} fields",
                                   [f"line {line}" for line in ragged])]

    total = sum(len(chunk) for chunk in line_chunks)
    failures = [f for name, column in columns.items() for f in column.failures(name, total)]
    if failures:
        return None, failures
    index = _line_index(line_chunks)
    line_chunks.clear()
    typed = {name: column.finish() for name, column in columns.items()}
    # copy=False: the columns are already built; consolidating them would double the peak.
    return pd.DataFrame(typed, columns=list(columns), index=index, copy=False), []


def _line_index(chunks: list) -> "pd.Index":
    """The frame's index (line numbers), without storing them when they are consecutive."""
    import numpy as np
    import pandas as pd

    if all(isinstance(c, range) for c in chunks) and all(
        a.stop == b.start for a, b in zip(chunks, chunks[1:])
    ):
        return pd.RangeIndex(chunks[0].start, chunks[-1].stop) if chunks else pd.RangeIndex(0)
    return pd.Index(np.concatenate([np.asarray(c, dtype=np.int64) for c in chunks]))


@dataclass
class _Bad:
    """The values of one column that fail one check: how many, where first, a few excerpts."""

    count: int = 0
    first_line: int | None = None
    examples: dict[str, None] = field(default_factory=dict)

    def note(self, mask: "np.ndarray", cells: tuple[str, ...], lines: "np.ndarray") -> None:
        import numpy as np

        where = np.flatnonzero(mask)
        if not len(where):
            return
        self.count += len(where)
        if self.first_line is None:
            self.first_line = int(lines[where[0]])
        for i in where:
            if len(self.examples) >= MAX_EXAMPLES:
                break
            self.examples[excerpt(cells[i])] = None


class _TypedColumn:
    """One declared column read chunk by chunk: its typed values so far and its bad values."""

    def __init__(self, kind: str):
        self.kind = kind
        self.parts: list = []  # typed chunks: numpy arrays, or Arrow arrays for strings
        self.nulls: list = []  # null masks of the int chunks
        self.bad: dict[str, _Bad] = {}

    def _note(self, reason: str, mask: "np.ndarray", cells: tuple[str, ...], lines: "np.ndarray") -> None:
        self.bad.setdefault(reason, _Bad()).note(mask, cells, lines)

    def add(self, cells: tuple[str, ...], lines: "np.ndarray") -> None:
        """Convert one chunk of the column's cells (as read) to its kind."""
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        text = self._text(cells, lines)
        if self.kind == "string":
            self.parts.append(text)
        elif self.kind == "timestamp":
            import pandas as pd

            raw = text.to_pandas()
            # Naive timestamps are taken as UTC; the offline store is all UTC.
            values = pd.to_datetime(raw, utc=True, format="ISO8601", errors="coerce")
            self._note("type", (raw.notna() & values.isna()).to_numpy(), cells, lines)
            self.parts.append(values.astype("datetime64[ns, UTC]").to_numpy("datetime64[ns]"))
        elif self.kind == "float":
            present = text.is_valid().to_numpy(zero_copy_only=False)
            syntax = pc.match_substring_regex(text, _FLOAT).fill_null(False)
            spelled = pc.match_substring_regex(text, _NOT_FINITE).fill_null(False).to_numpy(zero_copy_only=False)
            self._note("type", present & ~syntax.to_numpy(zero_copy_only=False) & ~spelled, cells, lines)
            values = pc.cast(pc.if_else(syntax, text, pa.scalar(None, pa.string())), pa.float64())
            values = values.to_numpy(zero_copy_only=False)  # nulls become NaN
            self._note("not_finite", spelled | np.isinf(values), cells, lines)
            self.parts.append(values)
        else:  # int
            values, present, not_int, outside = _parse_int64(text)
            self._note("type", not_int, cells, lines)
            self._note("range", outside, cells, lines)
            self.parts.append(values)
            self.nulls.append(~present)

    def _text(self, cells: tuple[str, ...], lines: "np.ndarray") -> "pa.Array":
        """The cells as an Arrow string array; empty cells and undecodable ones are null."""
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        try:
            text = pa.array(cells, type=pa.string())
        except UnicodeEncodeError:  # a surrogate: bytes that were not UTF-8
            bad = np.fromiter((bool(_UNDECODED.search(c)) for c in cells), dtype=bool, count=len(cells))
            self._note("text", bad, cells, lines)
            text = pa.array(["" if b else c for c, b in zip(cells, bad)], type=pa.string())
        nul = pc.match_substring(text, "\x00")
        if pc.any(nul).as_py():
            self._note("text", nul.to_numpy(zero_copy_only=False), cells, lines)
            text = pc.if_else(nul, "", text)
        return pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text)

    def failures(self, column: str, rows: int) -> list[Failure]:
        out = []
        for reason in _BAD:
            bad = self.bad.get(reason)
            if bad and bad.count:
                expectation, what = _BAD[reason]
                out.append(Failure(
                    column, expectation, list(bad.examples),
                    f"{bad.count} of {rows} values {what.format(kind=self.kind)}, "
                    f"first at line {bad.first_line}",
                ))
        return out

    def finish(self) -> "np.ndarray | pd.api.extensions.ExtensionArray":
        """All chunks as one column (Int64 only when the int column has nulls)."""
        import numpy as np
        import pandas as pd
        import pyarrow as pa

        if self.kind == "string":
            # to_pandas shares equal strings (e.g. a zone repeated on every row).
            values = pa.chunked_array(self.parts, type=pa.string()).to_pandas().to_numpy()
        elif self.kind == "timestamp":
            joined = np.concatenate(self.parts) if self.parts else np.empty(0, "datetime64[ns]")
            values = pd.DatetimeIndex(joined).tz_localize("UTC").array
        elif self.kind == "float":
            values = np.concatenate(self.parts) if self.parts else np.empty(0, np.float64)
        else:
            values = np.concatenate(self.parts) if self.parts else np.empty(0, np.int64)
            nulls = np.concatenate(self.nulls) if self.nulls else np.empty(0, bool)
            if nulls.any():
                # Nullable only when needed: plain int64 is what downstream readers expect.
                values = pd.arrays.IntegerArray(values, nulls)
        self.parts.clear()
        return values


def _parse_int64(text: "pa.Array") -> tuple["np.ndarray", "np.ndarray", "np.ndarray", "np.ndarray"]:
    """(int64 values, present, not an integer, outside int64) for an Arrow string array.

    Exact at the int64 bounds: the digits are compared as unsigned integers, never through
    float64 (which would round 2**63 down to a valid value) or a wrapping cast.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    present = text.is_valid().to_numpy(zero_copy_only=False)
    parts = pc.extract_regex(text, _INT)  # null where the syntax does not match
    syntax = parts.is_valid().to_numpy(zero_copy_only=False)
    digits = parts.field("digits")
    too_long = syntax & (pc.utf8_length(digits).to_numpy(zero_copy_only=False) > _INT64_DIGITS)
    short = syntax & ~too_long
    magnitude = pc.cast(pc.if_else(pa.array(short), digits, "0"), pa.uint64()).to_numpy(zero_copy_only=False)
    negative = pc.equal(parts.field("sign"), "-").to_numpy(zero_copy_only=False) & short
    # 2**63 is allowed only with a minus sign.
    limit = np.where(negative, np.uint64(2**63), np.uint64(2**63 - 1))
    outside = too_long | (short & (magnitude > limit))
    # Two's complement by hand: 0 - m wraps to -m as uint64, which is exact for m <= 2**63.
    values = np.where(negative, (np.uint64(0) - magnitude).view(np.int64), magnitude.view(np.int64))
    values[~short | outside] = 0
    return values, present, present & ~syntax, outside


# --- layer 2: Great Expectations on the typed frame ---------------------------------------


def build_suite(spec: "ModelSpec"):
    """The GX ExpectationSuite for a model's dataset, derived only from the spec.

    The batch window is a suite parameter (``window_start``/``window_end``) supplied per run.
    """
    import great_expectations as gx
    import great_expectations.expectations as gxe

    columns, rules = spec.dataset.columns, spec.validation
    expectations = [
        gxe.ExpectTableColumnsToMatchSet(column_set=list(columns), exact_match=True),
        gxe.ExpectTableRowCountToBeBetween(min_value=rules.row_count[0], max_value=rules.row_count[1]),
    ]
    expectations += [
        gxe.ExpectColumnValuesToBeOfType(column=c, type_=_GX_TYPES[kind]) for c, kind in columns.items()
    ]
    expectations += [gxe.ExpectColumnValuesToNotBeNull(column=c) for c in rules.required]
    for group in rules.unique:
        if len(group) == 1:
            expectations.append(gxe.ExpectColumnValuesToBeUnique(column=group[0]))
        else:
            expectations.append(gxe.ExpectCompoundColumnsToBeUnique(column_list=list(group)))
    expectations += [
        gxe.ExpectColumnValuesToBeBetween(column=c, min_value=low, max_value=high)
        for c, (low, high) in rules.ranges.items()
    ]
    expectations += [
        gxe.ExpectColumnValuesToBeInSet(column=c, value_set=list(allowed))
        for c, allowed in rules.categories.items()
    ]
    expectations.append(
        gxe.ExpectColumnValuesToBeBetween(
            column=spec.dataset.timestamp,
            min_value={"$PARAMETER": "window_start"},
            max_value={"$PARAMETER": "window_end"},
            strict_max=True,
            notes="Every event must fall inside the batch day (UTC) and not after the run."
            if rules.window else "No row may be stamped after the run.",
        )
    )
    return gx.ExpectationSuite(name=_gx_name(spec), expectations=expectations)


def _gx_name(spec: "ModelSpec") -> str:
    return f"{spec.name}__{spec.dataset.name}"


def _checkpoint(context, spec: "ModelSpec"):
    """Create or refresh the datasource, suite, validation definition and checkpoint."""
    import great_expectations as gx

    name = _gx_name(spec)
    try:
        source = context.data_sources.get("airloop")
    except KeyError:
        source = context.data_sources.add_pandas("airloop")
    try:
        asset = source.get_asset(name)
    except LookupError:
        asset = source.add_dataframe_asset(name)
    try:
        batch_definition = asset.get_batch_definition("whole_batch")
    except KeyError:
        batch_definition = asset.add_batch_definition_whole_dataframe("whole_batch")
    # Re-saved every run so a spec change takes effect on the next batch.
    suite = context.suites.add_or_update(build_suite(spec))
    definition = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=name, data=batch_definition, suite=suite)
    )
    return context.checkpoints.add_or_update(
        gx.Checkpoint(
            name=name,
            validation_definitions=[definition],
            actions=[gx.checkpoint.UpdateDataDocsAction(name="update_data_docs")],
            result_format={"result_format": "SUMMARY", "partial_unexpected_count": 20},
        )
    )


def _run_checkpoint(
    spec: "ModelSpec", frame: "pd.DataFrame", day: dt.date, result_id: str, settings: "Settings"
) -> tuple[list[Failure], str | None, dict]:
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="file", project_root_dir=settings.validation_dir)
    if context.variables.progress_bars is None:
        # tqdm bars per metric would flood the task logs.
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        context.variables.save()
    start, end = batch_window(day, window=spec.validation.window)
    parameters = {"window_start": start.isoformat(), "window_end": end.isoformat()}
    checkpoint_result = _checkpoint(context, spec).run(
        batch_parameters={"dataframe": frame},
        expectation_parameters=parameters,
        run_id=RunIdentifier(run_name=result_id),
    )
    (identifier, validation), = checkpoint_result.run_results.items()
    failures = [_failure(r, parameters) for r in validation.results if not r.success]
    sites = context.get_docs_sites_urls(resource_identifier=identifier)
    url = sites[0]["site_url"] if sites else None
    data_docs = url.removeprefix("file://") if url else None
    return failures, data_docs, validation.to_json_dict()


def _failure(result, parameters: dict[str, str]) -> Failure:
    """A GX ExpectationValidationResult as a Failure with a few readable bad values."""
    config = result.expectation_config
    kwargs = {  # with the run's suite parameters filled in, for the message
        key: parameters.get(value["$PARAMETER"], value)
        if isinstance(value, dict) and "$PARAMETER" in value else value
        for key, value in config.kwargs.items()
    }
    column_list = config.kwargs.get("column_list") or []
    column: str | None = config.kwargs.get("column") or ", ".join(column_list) or None
    details = result.result or {}
    if result.exception_info and result.exception_info.get("raised_exception"):
        error = result.exception_info.get("exception_message")
        return Failure(column, config.type, detail=f"could not run: {error}")
    if "unexpected_count" not in details:
        observed = f"observed {details.get('observed_value')!r}{_expected(kwargs)}"
        return Failure(column, config.type, detail=observed)
    values = details.get("partial_unexpected_list") or []
    if all(_is_null(v) for v in values):
        # Null has no value to show; point at the lines instead (the frame is indexed by line).
        examples = [f"line {i}" for i in (details.get("partial_unexpected_index_list") or [])]
    else:
        examples = [_show(v) for v in values]
    detail = f"{details['unexpected_count']} of {details.get('element_count')} rows{_expected(kwargs)}"
    return Failure(column, config.type, list(dict.fromkeys(examples))[:MAX_EXAMPLES], detail)


def _expected(kwargs: dict) -> str:
    if "value_set" in kwargs:
        return f" not in {sorted(kwargs['value_set'])}"
    if "min_value" in kwargs or "max_value" in kwargs:
        close = ")" if kwargs.get("strict_max") else "]"
        return f" outside [{kwargs.get('min_value')}, {kwargs.get('max_value')}{close}"
    return ""


def _is_null(value) -> bool:
    import pandas as pd

    return not isinstance(value, dict) and pd.isna(value)


def _show(value) -> str:
    if isinstance(value, dict):
        return "(" + ", ".join(f"{k}={_show(v)}" for k, v in value.items()) + ")"
    if hasattr(value, "isoformat"):
        return value.isoformat()
    value = value.item() if hasattr(value, "item") else value
    return excerpt(value) if isinstance(value, (str, bytes)) else repr(value)


# Where GX's result quotes the batch's values.
_GX_VALUE_KEYS = ("partial_unexpected_list", "partial_unexpected_counts", "unexpected_list")


def _redacted(gx_result: dict | None) -> dict | None:
    """GX's result dict with every long quoted batch value cut to an :func:`excerpt`."""
    for item in (gx_result or {}).get("results", []):
        details = item.get("result") or {}
        for key in _GX_VALUE_KEYS:
            if key in details:
                details[key] = _shortened(details[key])
    return gx_result


def _shortened(value):
    if isinstance(value, dict):
        return {k: _shortened(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shortened(v) for v in value]
    if isinstance(value, str) and len(value) > MAX_EXCERPT:
        return excerpt(value)
    return value
