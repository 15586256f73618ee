from feast import Field, FileSource, RequestSource
from feast.types import Float64, Int64

# Daily per-restaurant statistics declared in the spec (features.aggregations, name
# restaurant_stats): one parquet file per day, each row stamped at the END of the day it
# summarizes. A relative path is a directory under Airloop's offline store.
restaurant_stats_source = FileSource(
    name="restaurant_stats_source",
    path="restaurant_stats",
    timestamp_field="event_timestamp",
    description="Per-restaurant daily order statistics (1d and 7d windows).",
)

# Fields the caller knows when an order is placed; they are never stored.
order_request = RequestSource(
    name="order_request",
    schema=[
        Field(name="distance_km", dtype=Float64),
        Field(name="items", dtype=Int64),
        Field(name="order_hour", dtype=Int64),
    ],
)
