"""The prediction log: every prediction the service makes, in a SQL store, and its readers.

:class:`PredictionLog` appends each prediction (request id, time, entity, the features used as
JSON, prediction, model version) to the SQL store named by ``settings.prediction_store``
(SQLite under ``AIRLOOP_HOME`` by default, Postgres in compose) in batches from a background
thread; ``attach_label`` records the true label later. :func:`read_predictions`,
:func:`count_predictions` and :func:`read_window_rows` read it back (the drift monitor, the
demo, benchmarks); nothing else touches the table.

The public names are re-exported here; import them from ``airloop.prediction_log``. Its rooms:

- ``store``: the table, an engine on the store's URL, masked URLs and store errors;
- ``writer``: :class:`PredictionLog` (batched background writes, spill files, labels);
- ``reader``: :func:`read_predictions`, :func:`count_predictions`, :func:`read_window_rows`.

Heavy libraries (pandas, numpy, sqlalchemy, psycopg) are imported inside functions.
"""

from airloop.prediction_log.reader import count_predictions, read_predictions, read_window_rows
from airloop.prediction_log.store import PREDICTIONS_TABLE, make_engine, predictions_table, safe_url
from airloop.prediction_log.writer import LoggedPrediction, PredictionLog

__all__ = [
    "PREDICTIONS_TABLE",
    "LoggedPrediction",
    "PredictionLog",
    "count_predictions",
    "make_engine",
    "predictions_table",
    "read_predictions",
    "read_window_rows",
    "safe_url",
]
