from datetime import timedelta

from feast import FeatureView, Field
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float64, Int64

from data_sources import order_request, restaurant_stats_source
from entities import restaurant

restaurant_stats = FeatureView(
    name="restaurant_stats",
    entities=[restaurant],
    # A restaurant without orders for a week has no current statistics.
    ttl=timedelta(days=7),
    schema=[
        Field(name="restaurant_id", dtype=Int64),
        Field(name="orders_1d", dtype=Int64, description="Orders on the last full day."),
        Field(name="orders_7d", dtype=Int64, description="Orders over the last 7 full days."),
        Field(name="avg_prep_minutes_7d", dtype=Float64),
        Field(name="late_rate_7d", dtype=Float64, description="Share of late orders, 7 days."),
        Field(name="avg_distance_km_7d", dtype=Float64),
        Field(name="avg_items_7d", dtype=Float64),
    ],
    online=True,
    source=restaurant_stats_source,
    tags={"team": "delivery"},
)


@on_demand_feature_view(
    sources=[restaurant_stats, order_request],
    schema=[
        Field(name="expected_prep_minutes", dtype=Float64),
        Field(name="distance_vs_usual", dtype=Float64),
        Field(name="is_peak_hour", dtype=Int64),
    ],
    mode="python",
)
def order_context(inputs: dict) -> dict:
    # Feast rebuilds this function from its source text with only pandas/numpy in scope:
    # keep it self-contained (no module constants, no typing names).
    peak_hours = {11, 12, 13, 18, 19, 20}

    def known(value):
        return value is not None and value == value  # NaN != NaN

    expected_prep, distance_ratio, peak = [], [], []
    for prep, usual_items, usual_distance, items, distance, hour in zip(
        inputs["avg_prep_minutes_7d"],
        inputs["avg_items_7d"],
        inputs["avg_distance_km_7d"],
        inputs["items"],
        inputs["distance_km"],
        inputs["order_hour"],
    ):
        # Kitchen time grows with the basket: scale the usual prep time by basket size.
        if known(prep) and known(usual_items) and usual_items > 0 and known(items):
            expected_prep.append(float(prep) * float(items) / float(usual_items))
        else:
            expected_prep.append(None)
        if known(usual_distance) and usual_distance > 0 and known(distance):
            distance_ratio.append(float(distance) / float(usual_distance))
        else:
            distance_ratio.append(None)
        peak.append(int(hour in peak_hours) if known(hour) else None)
    return {
        "expected_prep_minutes": expected_prep,
        "distance_vs_usual": distance_ratio,
        "is_peak_hour": peak,
    }
