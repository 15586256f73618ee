"""Validate one landing batch against its table's spec (:class:`airloop.spec.TableSpec`).

A model's event table and each of its reference tables are gated alike: every function here
takes the one table (``spec.events``, ``spec.table(name)``), never the whole model spec.

Two layers. First the file itself is read as text: non-empty, parseable CSV, exactly the
declared columns, every value parseable as its declared type (integers within int64, floats
finite). Great Expectations cannot say anything useful about a file that fails those (it
needs a typed frame), so such a batch is rejected without a GX run. A file that passes is
cast to its declared types and validated by a Great Expectations suite built from the table's spec,
run through a Checkpoint that also rebuilds the Data Docs. Messages and records quote a batch
only through :func:`excerpt`. Every run gets a result id, a JSON record under
``validation_dir/results/<dataset>/`` and a page in the Airflow UI (:func:`record_page`).

The public names are re-exported here; import them from ``airloop.validation``. Its rooms:

- ``csv_batch``: layer 1, the untrusted CSV read, parsed and cast to types (:func:`read_typed`);
- ``expectations``: layer 2, the GX suite from the table's spec, its run and the Data Docs;
- ``window``: the batch day from the file name and its time window (:func:`batch_window`);
- ``result``: :class:`Failure`, :class:`ValidationResult`, :func:`excerpt` and :func:`record_page`;
- ``run``: one run of both layers and its JSON record (:func:`run_validation`).

Heavy libraries (pandas, pyarrow, great_expectations) are imported inside functions: DAG
files import this package at parse time.
"""

from airloop.validation.csv_batch import CHUNK_ROWS, read_typed
from airloop.validation.expectations import build_suite
from airloop.validation.result import MAX_EXAMPLES, MAX_EXCERPT, Failure, ValidationResult, excerpt, record_page
from airloop.validation.run import record_refusal, run_validation, validate_batch
from airloop.validation.window import NO_WINDOW_START, BatchNameError, batch_day, batch_window

__all__ = [
    "CHUNK_ROWS",
    "MAX_EXAMPLES",
    "MAX_EXCERPT",
    "NO_WINDOW_START",
    "BatchNameError",
    "Failure",
    "ValidationResult",
    "batch_day",
    "batch_window",
    "build_suite",
    "excerpt",
    "read_typed",
    "record_page",
    "record_refusal",
    "run_validation",
    "validate_batch",
]
