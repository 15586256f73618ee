"""Reading the prediction log back: predictions with their feedback, counts, sampled windows.

:func:`read_predictions` gives a frame of logged predictions with the labels feedback attached
(the demo, benchmarks, tests), :func:`count_predictions` one COUNT of a window and :func:`read_window_rows`
a window's rows, sampled in the store when it is large (the drift monitor). pandas, numpy and
sqlalchemy are imported inside the functions.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING, Any

from airloop.errors import PredictionStoreError
from airloop.fileio import to_utc_naive
from airloop.prediction_log.store import PREDICTIONS_TABLE, make_engine, predictions_table, safe_url, store_error
from airloop.settings import Settings, get_settings

if TYPE_CHECKING:
    import pandas as pd

    from airloop.spec import ModelSpec

__all__ = ["count_predictions", "read_predictions", "read_window_rows"]


def read_predictions(
    since: dt.datetime | str | None = None,
    until: dt.datetime | str | None = None,
    model: "str | ModelSpec | None" = None,
    *,
    settings: Settings | None = None,
    url: str | None = None,
    expand_features: bool = True,
) -> "pd.DataFrame":
    """Logged predictions with ``since <= timestamp < until`` (UTC), oldest first.

    Columns: ``request_id``, ``timestamp`` (tz-aware UTC), ``model``, ``model_version``, the
    entity under its join keys (one column per key of the spec's ``entities``, typed as in the
    spec) or ``entity`` if the spec is unknown, ``prediction``, ``features_missing``, ``label`` (NaN until
    feedback), ``labeled_at``, then one column per model input used (``expand_features``;
    otherwise a ``features`` column of dicts). ``model`` is a spec or a spec name.
    """
    import pandas as pd
    import sqlalchemy as sa

    s = settings or get_settings()
    spec = model if model is not None and not isinstance(model, str) else None
    name = spec.registered_model_name if spec is not None else model
    if spec is None and name:
        from airloop.spec import SpecError, get_spec

        try:
            spec = get_spec(name, s.models_dir)
        except SpecError:
            spec = None
    url = url or s.prediction_store
    try:
        engine = make_engine(url)
    except Exception as exc:
        raise PredictionStoreError(f"prediction store {safe_url(url)}: {exc}") from exc
    table = predictions_table()
    query = sa.select(table)
    if name:
        query = query.where(table.c.model == name)
    if since is not None:
        query = query.where(table.c.predicted_at >= to_utc_naive(since))
    if until is not None:
        query = query.where(table.c.predicted_at < to_utc_naive(until))
    query = query.order_by(table.c.predicted_at, table.c.request_id)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table(PREDICTIONS_TABLE):
                rows = []
            else:
                rows = [dict(r) for r in conn.execute(query).mappings()]
    except Exception as exc:
        raise store_error(url, exc) from exc
    finally:
        engine.dispose()

    columns = [c.name for c in table.columns]
    frame = pd.DataFrame(rows, columns=columns).rename(columns={"predicted_at": "timestamp"})
    frame["timestamp"] = pd.to_datetime(frame["timestamp"]).dt.tz_localize("UTC")
    frame["labeled_at"] = pd.to_datetime(frame["labeled_at"]).dt.tz_localize("UTC")
    frame["prediction"] = frame["prediction"].astype("float64")
    frame["label"] = frame["label"].astype("float64")
    frame["features_missing"] = frame["features_missing"].astype(bool)
    keys = ["entity"]
    if spec is not None:
        keys = spec.join_keys
        if len(keys) == 1:
            frame = frame.rename(columns={"entity": keys[0]})
        else:
            parsed_keys = [json.loads(e) for e in frame["entity"]]
            for key in keys:
                frame[key] = [k.get(key) for k in parsed_keys]
            frame = frame.drop(columns=["entity"])
        for key in keys:
            kind = spec.dataset.columns.get(key)
            if kind == "int":
                frame[key] = frame[key].astype("int64")
            elif kind == "float":
                frame[key] = frame[key].astype("float64")
    parsed = [json.loads(f) for f in frame["features"]]
    frame = frame.drop(columns=["features"])
    if expand_features:
        feats = pd.DataFrame.from_records(parsed, index=frame.index) if parsed else pd.DataFrame(index=frame.index)
        feats = feats[[c for c in feats.columns if c not in frame.columns]]
        for column in feats.columns:
            # The JSON keeps each value's type: a column that logged a string is a categorical
            # input and stays as logged (str, None for missing), even if its categories look
            # like numbers ("1" must not come back as 1.0).
            if any(isinstance(v, str) for v in feats[column]):
                continue
            try:
                feats[column] = feats[column].astype("float64")
            except (TypeError, ValueError):
                pass  # another non-numeric input stays as logged
        frame = pd.concat([frame, feats], axis=1)
    else:
        frame["features"] = parsed
    ordered = ["request_id", "timestamp", "model", "model_version", *keys, "prediction",
               "features_missing", "label", "labeled_at"]
    rest = [c for c in frame.columns if c not in ordered]
    return frame[ordered + rest].reset_index(drop=True)


def count_predictions(model: str, start: dt.datetime, end: dt.datetime, *, url: str) -> int:
    """Logged predictions of registered model ``model`` with ``start <= time < end`` (one COUNT)."""
    import sqlalchemy as sa

    engine = make_engine(url)
    table = predictions_table()
    query = (
        sa.select(sa.func.count())
        .select_from(table)
        .where(table.c.model == model)
        .where(table.c.predicted_at >= to_utc_naive(start))
        .where(table.c.predicted_at < to_utc_naive(end))
    )
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table(PREDICTIONS_TABLE):
                return 0
            return int(conn.execute(query).scalar_one())
    except Exception as exc:
        raise store_error(url, exc) from exc
    finally:
        engine.dispose()


def read_window_rows(
    model: str,
    start: dt.datetime,
    end: dt.datetime,
    *,
    url: str,
    total: int,
    sample_size: int | None,
    seed: int,
    labelled_version: str,
) -> "tuple[list[Any], int, pd.DataFrame | None]":
    """The rows of a time window, sampled in the store when there are more than ``sample_size``.

    A window of at most ``sample_size`` rows (None: no limit) is read whole. A larger one is
    sampled: its request ids are read, a seeded uniform sample is drawn, and only those rows are
    fetched; the (label, prediction) pairs of every labelled row served by ``labelled_version``
    are read separately (two numbers per row). Rows have ``request_id``, ``model_version``,
    ``features`` (JSON), ``prediction`` and ``label``.

    Returns (rows, rows in the window, labelled pairs or None when the window was read whole).
    """
    import numpy as np
    import pandas as pd
    import sqlalchemy as sa

    table = predictions_table()
    window = (
        (table.c.model == model)
        & (table.c.predicted_at >= to_utc_naive(start))
        & (table.c.predicted_at < to_utc_naive(end))
    )
    columns = [table.c.request_id, table.c.model_version, table.c.features, table.c.prediction, table.c.label]
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            if sample_size is None or total <= sample_size:
                return conn.execute(sa.select(*columns).where(window)).all(), total, None
            ids = conn.execute(sa.select(table.c.request_id).where(window)).scalars().all()
            rng = np.random.default_rng(seed % 2**32)
            picked = [ids[i] for i in np.sort(rng.choice(len(ids), size=sample_size, replace=False))]
            total = len(ids)
            del ids
            rows = []
            for lo in range(0, len(picked), 2000):
                batch = picked[lo : lo + 2000]
                rows.extend(conn.execute(sa.select(*columns).where(table.c.request_id.in_(batch))).all())
            labelled = pd.DataFrame(
                conn.execute(
                    sa.select(table.c.label, table.c.prediction)
                    .where(window)
                    .where(table.c.label.is_not(None))
                    .where(table.c.model_version == str(labelled_version))
                ).all(),
                columns=["label", "prediction"],
                dtype="float64",
            )
            return rows, total, labelled
    except Exception as exc:
        raise store_error(url, exc) from exc
    finally:
        engine.dispose()
