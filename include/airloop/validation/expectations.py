"""Layer 2 of validation: the Great Expectations suite built from the spec, its run, Data Docs.

A batch that passed :mod:`~airloop.validation.csv_batch` is a typed frame; the suite built
from the spec (:func:`build_suite`) is run on it through a Checkpoint that also rebuilds the
Data Docs (:func:`run_checkpoint`). Each failed expectation becomes a ``Failure`` quoting a
few bad values through ``excerpt``, and GX's own result is cut the same way before it is
recorded (:func:`redact`). great_expectations and pandas are imported inside the functions.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from airloop.validation.result import MAX_EXAMPLES, MAX_EXCERPT, Failure, excerpt
from airloop.validation.window import batch_window

if TYPE_CHECKING:
    import great_expectations as gx
    import pandas as pd

    from airloop.settings import Settings
    from airloop.spec import TableSpec

__all__ = ["build_suite", "redact", "run_checkpoint"]

# What ExpectColumnValuesToBeOfType calls each spec type on a pandas frame (see csv_batch).
_GX_TYPES = {"string": "str", "int": "int64", "float": "float64", "timestamp": "Timestamp"}


def build_suite(table: "TableSpec") -> "gx.ExpectationSuite":
    """The GX ExpectationSuite of one table (the events or a reference table), from its spec only.

    The batch window is a suite parameter (``window_start``/``window_end``) supplied per run.
    """
    import great_expectations as gx
    import great_expectations.expectations as gxe

    columns, rules = table.columns, table.validation
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
            column=table.timestamp,
            min_value={"$PARAMETER": "window_start"},
            max_value={"$PARAMETER": "window_end"},
            strict_max=True,
            notes=f"Every event must fall inside the batch day ({table.timezone}) and not after the run."
            if rules.window else "No row may be stamped after the run.",
        )
    )
    return gx.ExpectationSuite(name=_gx_name(table), expectations=expectations)


def _gx_name(table: "TableSpec") -> str:
    return f"{table.model}__{table.name}"


def _checkpoint(context, table: "TableSpec"):
    """Create or refresh the datasource, suite, validation definition and checkpoint."""
    import great_expectations as gx

    name = _gx_name(table)
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
    suite = context.suites.add_or_update(build_suite(table))
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


def run_checkpoint(
    table: "TableSpec", frame: "pd.DataFrame", day: dt.date, result_id: str, settings: "Settings"
) -> tuple[list[Failure], str | None, dict]:
    """Run the table's suite on a typed frame for the batch ``day``, rebuilding the Data Docs.

    Returns (failures, the Data Docs page of this run or None, GX's result as a dict).
    """
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="file", project_root_dir=settings.validation_dir)
    if context.variables.progress_bars is None:
        # tqdm bars per metric would flood the task logs.
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        context.variables.save()
    start, end = batch_window(day, window=table.window, timezone=table.timezone)
    parameters = {"window_start": start.isoformat(), "window_end": end.isoformat()}
    checkpoint_result = _checkpoint(context, table).run(
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


def redact(gx_result: dict | None) -> dict | None:
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

