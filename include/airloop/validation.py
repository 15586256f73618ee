"""Validate one landing batch against its model spec.

Two layers. First the file itself is read with every column as text and checked here:
non-empty, parseable CSV, exactly the declared columns, every value parseable as its
declared type. Great Expectations cannot say anything useful about a file that fails
those (it needs a typed frame), so such a batch is rejected without a GX run. A file that
passes is cast to its declared types and validated by a Great Expectations suite built
from the spec, run through a Checkpoint that also rebuilds the Data Docs.

Every run gets a result id and a JSON record under ``validation_dir/results/<dataset>/``.
Pandas and GX are imported inside functions: DAG files import this module at parse time.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    from airloop.settings import Settings
    from airloop.spec import ModelSpec

MAX_EXAMPLES = 5
# What ExpectColumnValuesToBeOfType calls each spec type on a pandas frame (see _cast_column).
_GX_TYPES = {"string": "str", "int": "int64", "float": "float64", "timestamp": "Timestamp"}
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


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
        f"{name}: batch files must be named {spec.dataset.name}_YYYY-MM-DD.csv with a real date; "
        "the date sets the window every event_timestamp must fall in"
    )


def batch_window(day: dt.date, now: dt.datetime | None = None) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) of a batch day in UTC, cut at ``now`` so no row can come from the future."""
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.timezone.utc)
    now = now or dt.datetime.now(dt.timezone.utc)
    return start, min(start + dt.timedelta(days=1), now)


def validate_batch(
    spec: "ModelSpec", path: str | Path, settings: "Settings | None" = None
) -> ValidationResult:
    """Validate a landing file and record the result (nothing is moved or published).

    Not safe to run concurrently against the same ``validation_dir``: ``ingest_batch``
    serializes runs.
    """
    path = Path(path)
    result, _ = run_validation(spec, path.name, path.read_bytes(), batch_day(spec, path), settings)
    return result


def run_validation(
    spec: "ModelSpec",
    batch: str,
    data: bytes,
    day: dt.date,
    settings: "Settings | None" = None,
) -> tuple[ValidationResult, "pd.DataFrame | None"]:
    """Validate ``data`` and return the result with the typed frame (None unless it passed)."""
    from airloop.settings import get_settings

    settings = settings or get_settings()
    result_id = f"{Path(batch).stem}-{uuid.uuid4().hex[:12]}"
    frame, failures = read_typed(spec, data)
    data_docs, gx_result = None, None
    if frame is not None:
        failures, data_docs, gx_result = _run_checkpoint(spec, frame, day, result_id, settings)
    else:
        index = settings.validation_dir / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html"
        data_docs = str(index) if index.exists() else None
    result_json = settings.validation_dir / "results" / spec.dataset.name / f"{result_id}.json"
    result = ValidationResult(
        batch=batch,
        day=day,
        success=not failures,
        result_id=result_id,
        failures=failures,
        rows=None if frame is None else len(frame),
        data_docs=data_docs,
        result_json=str(result_json),
    )
    result_json.parent.mkdir(parents=True, exist_ok=True)
    record = {**result.as_dict(), "model": spec.name, "great_expectations": gx_result}
    result_json.write_text(json.dumps(record, indent=2, default=str))
    return result, (frame if result.success else None)


# --- layer 1: the file, read as text ------------------------------------------------------


def read_typed(spec: "ModelSpec", data: bytes) -> tuple["pd.DataFrame | None", list[Failure]]:
    """Parse CSV bytes, check structure and types, and cast to the declared types.

    Returns (typed frame, []) or (None, failures). Empty cells are nulls. The frame's index is
    the line number of each row in the file, so failures can point at lines.
    """
    import pandas as pd

    raw, failures = _parse_csv(data)
    if raw is None:
        return None, failures

    declared = spec.dataset.columns
    failures = [
        Failure(column, "expect_column_to_exist", detail="declared in the spec, missing from the file")
        for column in declared
        if column not in raw.columns
    ]
    undeclared = [c for c in raw.columns if c not in declared]
    if undeclared:
        failures.append(
            Failure(None, "expect_table_columns_to_match_set", undeclared[:MAX_EXAMPLES],
                    detail=f"{len(undeclared)} column(s) not declared in the spec")
        )
    if failures:
        return None, failures

    typed = {}
    for column, kind in declared.items():
        values, bad = _cast_column(raw[column], kind)
        if bad.any():
            examples = list(dict.fromkeys(raw.loc[bad, column]))[:MAX_EXAMPLES]
            failures.append(
                Failure(column, "expect_column_values_to_be_of_type", [repr(v) for v in examples],
                        detail=f"{int(bad.sum())} of {len(raw)} values are not {kind}, "
                               f"first at line {raw.index[bad.to_numpy()][0]}")
            )
        typed[column] = values
    if failures:
        return None, failures
    return pd.DataFrame(typed, columns=list(declared)), []


def _parse_csv(data: bytes) -> tuple["pd.DataFrame | None", list[Failure]]:
    """The CSV as a frame of strings (None for empty cells), or the reason it is not one.

    The csv module rather than pandas: pandas pads short rows with nulls and silently turns
    extra leading fields into an index, which would hide a truncated or shifted file.
    """
    import csv
    import io

    import pandas as pd

    def unparseable(detail: str, examples: list[str] | None = None):
        return None, [Failure(None, "expect_file_to_be_parseable_csv", examples or [], detail)]

    if not data.strip():
        empty = Failure(None, "expect_file_to_be_non_empty", detail=f"the file has {len(data)} bytes")
        return None, [empty]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return unparseable(f"not UTF-8 text: {exc}")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows, lines = [], []
    try:
        for row in reader:
            if row:
                rows.append(row)
                lines.append(reader.line_num)
    except csv.Error as exc:
        # The broken record starts right after the last good one (an open quote runs to EOF).
        start = (lines[-1] if lines else 0) + 1
        return unparseable(f"record starting at line {start}: {exc}")
    if "\x00" in text:
        return unparseable("the file contains NUL bytes")

    header, body, lines = rows[0], rows[1:], lines[1:]
    duplicated = sorted({c for c in header if header.count(c) > 1})
    if duplicated:
        return None, [
            Failure(None, "expect_table_columns_to_match_set", duplicated, "duplicate column names")
        ]
    ragged = [line for line, row in zip(lines, body) if len(row) != len(header)]
    if ragged:
        return unparseable(
            f"{len(ragged)} row(s) do not have the header's {len(header)} fields",
            [f"line {line}" for line in ragged[:MAX_EXAMPLES]],
        )
    frame = pd.DataFrame(body, columns=header, index=pd.Index(lines), dtype=object)
    return frame.where(frame != "", None), []


def _cast_column(text: "pd.Series", kind: str) -> tuple["pd.Series", "pd.Series"]:
    """(cast values, mask of non-null cells that do not parse as ``kind``)."""
    import pandas as pd

    if kind == "string":
        return text, pd.Series(False, index=text.index)
    if kind == "timestamp":
        # Naive timestamps are taken as UTC; the offline store is all UTC.
        values = pd.to_datetime(text, utc=True, format="ISO8601", errors="coerce")
        return values, text.notna() & values.isna()
    numbers = pd.to_numeric(text, errors="coerce")
    bad = text.notna() & numbers.isna()
    if kind == "float":
        return numbers.astype("float64"), bad
    bad |= numbers.notna() & (numbers % 1 != 0)
    if bad.any():
        return numbers, bad
    # Nullable only when needed: plain int64 is what downstream readers expect.
    return numbers.astype("Int64" if numbers.isna().any() else "int64"), bad


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
            notes="Every event must fall inside the batch day (UTC) and not after the run.",
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
    start, end = batch_window(day)
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
    return repr(value.item() if hasattr(value, "item") else value)
