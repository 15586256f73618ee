"""Reading a window of the prediction log as the frame a drift check compares.

:func:`read_window` bounds time and memory: a large window is sampled in the prediction store
(seeded, uniform; only the sampled rows are fetched and parsed). :func:`current_frame` turns
logged rows into model inputs + the champion's prediction + the label, re-predicting rows
another version served. Heavy libraries (numpy, pandas) are imported inside the functions.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING

from airloop import prediction_log, registry
from airloop.model_inputs import categorical_inputs
from airloop.monitoring.reference import Reference, model_inputs
from airloop.monitoring.results import LABEL, PREDICTION
from airloop.settings import Settings, get_settings

if TYPE_CHECKING:
    import pandas as pd

    from airloop.spec import ModelSpec

__all__ = ["count_predictions", "current_frame", "read_window"]


def current_frame(
    frame: pd.DataFrame,
    reference: Reference,
    spec: ModelSpec,
    settings: Settings | None = None,
    *,
    models: dict | None = None,
) -> tuple[pd.DataFrame, int]:
    """The model inputs, the champion's prediction and the label of every logged row.

    Rows served by another version than the reference's are re-predicted with the champion, so
    the prediction column is always the champion's; their labels are dropped (the quality
    numbers score the champion on what it served). ``models`` caches the loaded champion
    between calls. Returns (frame, rescored rows).
    """
    current = model_inputs(frame, reference.features)
    current[PREDICTION] = frame[PREDICTION].astype("float64")
    current[LABEL] = frame[LABEL].astype("float64") if LABEL in frame else float("nan")
    other = frame["model_version"].astype(str) != str(reference.version) if "model_version" in frame else None
    rescored = int(other.sum()) if other is not None else 0
    if rescored:
        models = {} if models is None else models
        if reference.version not in models:
            models[reference.version] = registry.load_version(spec, reference.version, settings or get_settings())
        model = models[reference.version]
        inputs = model_inputs(frame.loc[other], model.inputs, categorical_inputs(model.model))
        current.loc[other, PREDICTION] = model.predict(inputs, spec.task)
        current.loc[other, LABEL] = float("nan")
    return current.reset_index(drop=True), rescored


def count_predictions(spec: ModelSpec, start: dt.datetime, end: dt.datetime, settings: Settings) -> int:
    """Logged predictions of the model with ``start <= time < end`` (one indexed COUNT)."""
    return prediction_log.count_predictions(spec.registered_model_name, start, end, url=settings.prediction_store)


def read_window(
    spec: ModelSpec,
    start: dt.datetime,
    end: dt.datetime,
    reference: Reference,
    settings: Settings,
    *,
    seed: int = 0,
    sample_size: int | None = -1,
    total: int | None = None,
) -> tuple[pd.DataFrame, int, int | None, int]:
    """The window as model inputs + champion prediction + label, with time and memory bounded.

    A window of at most ``sample_size`` rows (-1: ``spec.drift.sample_size``; None: no limit)
    is read whole. A larger one is sampled in the store: the request ids of the window are
    read, a seeded uniform sample of ``sample_size`` of them is drawn, and only those rows are
    fetched and parsed; the label and prediction of every labelled row the champion served are
    read separately (two numbers per row) for the quality numbers. Labels of rows served by
    another version are left out of the quality numbers in both cases (they score the champion).

    Returns (frame, rows in the window, labelled rows or None, rows re-predicted).
    """
    import numpy as np
    import pandas as pd

    size = spec.drift.sample_size if sample_size == -1 else sample_size
    total = count_predictions(spec, start, end, settings) if total is None else total
    rows, total, labelled = prediction_log.read_window_rows(
        spec.registered_model_name, start, end, url=settings.prediction_store, total=total,
        sample_size=size, seed=seed, labelled_version=str(reference.version),
    )
    frame = pd.DataFrame.from_records(
        [json.loads(r.features) for r in rows], index=pd.RangeIndex(len(rows)), columns=list(reference.features)
    )
    frame["model_version"] = [r.model_version for r in rows]
    frame[PREDICTION] = np.array([r.prediction for r in rows], dtype="float64")
    frame[LABEL] = np.array([np.nan if r.label is None else r.label for r in rows], dtype="float64")
    del rows
    current, rescored = current_frame(frame, reference, spec, settings)
    return current, (total if labelled is not None else len(current)), labelled, rescored
