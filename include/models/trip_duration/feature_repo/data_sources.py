from feast import Field, FileSource, RequestSource
from feast.types import Float64, Int64, String

# A relative path is a directory under Airloop's offline store, where ingest publishes each
# validated reference file and the spec's declared aggregations write their statistics, as parquet.

# The fleet (reference table ``vehicles``): full snapshots, each row stamped when the vehicle
# was registered; the attributes hold from then on.
vehicles_source = FileSource(
    name="vehicles_source",
    path="vehicles",
    timestamp_field="registered_at",
    description="Fleet snapshots: one row per vehicle and snapshot.",
)

# Hourly weather per zone (reference table ``zone_weather``), stamped at the hour's start.
zone_weather_source = FileSource(
    name="zone_weather_source",
    path="zone_weather",
    timestamp_field="hour_start",
    description="Temperature and rain per zone and hour.",
)

# Daily statistics declared in the spec (features.aggregations, names vehicle_stats and
# zone_stats): one parquet file per trip day, each row stamped at the END of the day it summarizes.
vehicle_stats_source = FileSource(
    name="vehicle_stats_source",
    path="vehicle_stats",
    timestamp_field="event_timestamp",
    description="Per-vehicle trip statistics over 7 days.",
)

zone_stats_source = FileSource(
    name="zone_stats_source",
    path="zone_stats",
    timestamp_field="event_timestamp",
    description="Per-zone trip statistics over 1 and 7 days.",
)

# Fields the caller knows when a trip is booked; they are never stored.
trip_request = RequestSource(
    name="trip_request",
    schema=[
        Field(name="distance_km", dtype=Float64),
        Field(name="passengers", dtype=Int64),
        Field(name="service_class", dtype=String),
        Field(name="pickup_hour", dtype=Int64),
    ],
)
