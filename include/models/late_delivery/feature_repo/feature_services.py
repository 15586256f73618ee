from feast import FeatureService

from features import order_context, restaurant_stats

# One service per model version; training (get_historical_features) and serving
# (get_online_features) both resolve features through it. The name is the model
# spec's features.service (../../late_delivery.yaml).
late_delivery_v1 = FeatureService(
    name="late_delivery_v1",
    features=[restaurant_stats, order_context],
    description="Features of the late_delivery model.",
)
