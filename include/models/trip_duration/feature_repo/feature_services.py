from feast import FeatureService

from features import trip_context, vehicle_attributes, vehicle_stats, zone_stats, zone_weather

# One service per model version; training (get_historical_features) and serving
# (get_online_features) both resolve features through it. The name is the model spec's
# features.service (../../trip_duration.yaml).
trip_duration_v1 = FeatureService(
    name="trip_duration_v1",
    features=[vehicle_attributes, zone_weather, vehicle_stats, zone_stats, trip_context],
    description="Features of the trip_duration model.",
)
