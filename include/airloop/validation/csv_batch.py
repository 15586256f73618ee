"""Layer 1 of validation: an untrusted landing CSV, read as text, parsed and cast to its types.

The file must be non-empty, parseable CSV with exactly the declared columns (a byte order mark
or whitespace around a header name is reported as such), and every value must parse as its
declared type. Integers must fit int64 and floats must be finite: ``inf``, ``nan`` and
overflowing values are always refused (the spec has no option to allow them). Bytes that are
not UTF-8 or NUL bytes are named by column and line. A header that shares no name with the
spec is not quoted at all: such a file may be anything, e.g. a secrets file landed by
mistake; everything else is quoted only through :func:`~airloop.validation.result.excerpt`.

The file is read in chunks of rows, each converted to typed columns at once, so reading holds
the typed frame plus one chunk rather than every cell as a Python string: the peak stays
within about 3x the file size plus a constant (``python -m bench.bench_ingest``).
numpy, pandas and pyarrow are imported inside the functions.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO

from airloop.validation.result import MAX_EXAMPLES, UNDECODED, Failure, excerpt

if TYPE_CHECKING:
    from pathlib import Path

    import numpy as np
    import pandas as pd
    import pyarrow as pa

    from airloop.spec import TableSpec

__all__ = ["CHUNK_ROWS", "read_typed"]

# Rows converted at a time: bounds the Python strings alive while reading (~15 MB at 11 columns).
CHUNK_ROWS = 20_000
_BOM = "\ufeff"
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


def read_typed(table: "TableSpec", data: bytes | Path) -> tuple["pd.DataFrame | None", list[Failure]]:
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
            return _read_stream(table, stream)
    finally:
        if was_enabled:
            gc.enable()


def _read_stream(table: "TableSpec", stream: BinaryIO) -> tuple["pd.DataFrame | None", list[Failure]]:
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
    positions, failures = _check_header(table, header)
    if failures:
        return None, failures
    return _read_body(table, reader, positions, len(header), reader.line_num)


def _unparseable(detail: str, examples: list[str] | None = None) -> Failure:
    return Failure(None, "expect_file_to_be_parseable_csv", examples or [], detail)


def _check_header(table: "TableSpec", header: list[str]) -> tuple[dict[str, int], list[Failure]]:
    """Where each declared column is in the file, or what is wrong with the header.

    A header that shares no name with the spec is not quoted: the file may be anything, and
    its first line must not travel into alerts.
    """
    declared = table.columns
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
                   f"the file may not be a batch of {table.name}",
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
    table: "TableSpec", reader, positions: dict[str, int], width: int, header_line: int
) -> tuple["pd.DataFrame | None", list[Failure]]:
    """Read the records after the header, CHUNK_ROWS at a time, into typed columns."""
    import csv

    import numpy as np
    import pandas as pd

    columns = {name: _TypedColumn(kind) for name, kind in table.columns.items()}
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
        """Count the chunk's cells where ``mask`` is set, keeping the first line and a few excerpts."""
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
            bad = np.fromiter((bool(UNDECODED.search(c)) for c in cells), dtype=bool, count=len(cells))
            self._note("text", bad, cells, lines)
            text = pa.array(["" if b else c for c, b in zip(cells, bad)], type=pa.string())
        nul = pc.match_substring(text, "\x00")
        if pc.any(nul).as_py():
            self._note("text", nul.to_numpy(zero_copy_only=False), cells, lines)
            text = pc.if_else(nul, "", text)
        return pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text)

    def failures(self, column: str, rows: int) -> list[Failure]:
        """One failure per kind of bad value the column had, out of ``rows`` values."""
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
            # to_pandas shares equal strings (e.g. a category repeated on every row).
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
