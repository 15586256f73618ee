"""Training sets: entity rows from dataset events, joined point-in-time through the model's FeatureService."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airloop.features.online import service_feature_names
from airloop.features.store import get_store
from airloop.settings import Settings

if TYPE_CHECKING:
    import pandas as pd
    from feast import FeatureStore

    from airloop.spec import ModelSpec

_ROW_ID = "__airloop_row"


def entity_df_from_events(spec: "ModelSpec", events: "pd.DataFrame") -> "pd.DataFrame":
    """Entity rows for :func:`build_training_set` from dataset rows: keys, time, request fields, label.

    Request fields the spec derives (``features.derived``) are computed from the event row,
    in UTC; the others are the dataset's columns.
    """
    import pandas as pd

    from airloop.spec import TIME_PARTS

    ts = spec.dataset.timestamp
    frame = pd.DataFrame({key: events[key].to_numpy() for key in spec.join_keys}, index=events.index)
    frame[ts] = pd.to_datetime(events[ts], utc=True)
    for name in spec.features.request:
        derived = spec.features.derived.get(name)
        if derived is None:
            frame[name] = events[name]
        else:
            stamps = pd.to_datetime(events[derived.of], utc=True)
            frame[name] = getattr(stamps.dt, TIME_PARTS[derived.part].accessor).astype("int64")
    frame[spec.target] = events[spec.target]
    return frame.reset_index(drop=True)


def build_training_set(
    spec: "ModelSpec",
    entity_df: "pd.DataFrame",
    *,
    store: "FeatureStore | None" = None,
    settings: Settings | None = None,
) -> "pd.DataFrame":
    """Point-in-time correct features for each entity row, through the model's FeatureService.

    ``entity_df`` needs the join keys, the spec's timestamp column, its request fields and
    (for training) the label. A feature value is joined only if stamped at or before the
    row's time and within its view's TTL; each view is matched on its own, so a row missing
    one view's values keeps the others'. Returns one row per input row, in input order (rows
    sharing key and time stay separate rows): the input columns, then the service's features
    (null where no value qualifies).
    """
    import pandas as pd

    ts = spec.dataset.timestamp
    required = [*spec.join_keys, ts, *spec.features.request]
    missing = [c for c in required if c not in entity_df.columns]
    if missing:
        raise ValueError(f"entity_df is missing columns: {', '.join(missing)}")
    frame = entity_df.reset_index(drop=True).copy()
    # DuckDB's store fails on a sub-microsecond time; flooring never lets a later value in.
    frame[ts] = pd.to_datetime(frame[ts], utc=True).dt.floor("us")
    frame[_ROW_ID] = range(len(frame))  # the offline store returns rows in its own order

    store = store or get_store(settings)
    service = store.get_feature_service(spec.features.service)
    joined = store.get_historical_features(entity_df=frame, features=service).to_df()
    if len(joined) != len(frame):
        raise RuntimeError(f"the offline store returned {len(joined)} rows for {len(frame)} entity rows")
    columns = [c for c in entity_df.columns if c != _ROW_ID] + service_feature_names(service)
    return joined.sort_values(_ROW_ID)[columns].reset_index(drop=True)
