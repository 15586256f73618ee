from datetime import timedelta

from feast import FeatureView, Field
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float64, Int64, String

from data_sources import (
    trip_request,
    vehicle_stats_source,
    vehicles_source,
    zone_stats_source,
    zone_weather_source,
)
from entities import vehicle, zone

vehicle_attributes = FeatureView(
    name="vehicle_attributes",
    entities=[vehicle],
    # A TTL of zero means no expiry: a vehicle's attributes hold from its registration on
    # (Feast joins without an age limit when the TTL is falsy).
    ttl=timedelta(0),
    schema=[
        Field(name="vehicle_id", dtype=Int64),
        Field(name="vehicle_type", dtype=String, description="sedan, hatchback, van or electric."),
        Field(name="model_year", dtype=Int64),
    ],
    online=True,
    source=vehicles_source,
    tags={"team": "mobility"},
)

zone_weather = FeatureView(
    name="zone_weather",
    entities=[zone],
    # A pickup takes the weather of its own hour; if that hour is missing, the one before.
    ttl=timedelta(hours=2),
    schema=[
        Field(name="zone_id", dtype=Int64),
        Field(name="temperature_c", dtype=Float64),
        Field(name="rain_mm", dtype=Float64, description="Rain in the zone during the hour."),
    ],
    online=True,
    source=zone_weather_source,
    tags={"team": "mobility"},
)

vehicle_stats = FeatureView(
    name="vehicle_stats",
    entities=[vehicle],
    # A vehicle without trips for a week has no current statistics.
    ttl=timedelta(days=7),
    schema=[
        Field(name="vehicle_id", dtype=Int64),
        Field(name="vehicle_trips_7d", dtype=Int64, description="Trips over the last 7 full days."),
        Field(name="vehicle_avg_speed_kmh_7d", dtype=Float64, description="Km driven per hour of trips, 7 days."),
    ],
    online=True,
    source=vehicle_stats_source,
    tags={"team": "mobility"},
)

zone_stats = FeatureView(
    name="zone_stats",
    entities=[zone],
    ttl=timedelta(days=7),
    schema=[
        Field(name="zone_id", dtype=Int64),
        Field(name="zone_trips_1d", dtype=Int64, description="Pickups on the last full day."),
        Field(name="zone_trips_7d", dtype=Int64, description="Pickups over the last 7 full days."),
        Field(name="zone_avg_speed_kmh_7d", dtype=Float64, description="Km per hour of trips from the zone, 7 days."),
        Field(name="zone_avg_duration_7d", dtype=Float64, description="Mean trip minutes from the zone, 7 days."),
    ],
    online=True,
    source=zone_stats_source,
    tags={"team": "mobility"},
)


@on_demand_feature_view(
    sources=[zone_stats, trip_request],
    schema=[
        Field(name="expected_minutes", dtype=Float64),
        Field(name="is_rush_hour", dtype=Int64),
    ],
    mode="python",
)
def trip_context(inputs: dict) -> dict:
    # Feast rebuilds this function from its source text with only pandas/numpy in scope:
    # keep it self-contained (no module constants, no typing names).
    rush_hours = {7, 8, 9, 17, 18, 19}

    def known(value):
        return value is not None and value == value  # NaN != NaN

    expected, rush = [], []
    for speed, distance, hour in zip(
        inputs["zone_avg_speed_kmh_7d"], inputs["distance_km"], inputs["pickup_hour"]
    ):
        # The trip at the zone's usual speed: the zone's part of the answer, in minutes.
        if known(speed) and speed > 0 and known(distance):
            expected.append(float(distance) / float(speed) * 60.0)
        else:
            expected.append(None)
        rush.append(int(hour in rush_hours) if known(hour) else None)
    return {"expected_minutes": expected, "is_rush_hour": rush}
