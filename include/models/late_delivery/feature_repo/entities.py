from feast import Entity, ValueType

restaurant = Entity(
    name="restaurant",
    join_keys=["restaurant_id"],
    value_type=ValueType.INT64,
    description="A restaurant on the platform.",
)
