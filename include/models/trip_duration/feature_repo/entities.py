from feast import Entity, ValueType

vehicle = Entity(
    name="vehicle",
    join_keys=["vehicle_id"],
    value_type=ValueType.INT64,
    description="A vehicle of the fleet.",
)

zone = Entity(
    name="zone",
    join_keys=["zone_id"],
    value_type=ValueType.INT64,
    description="The pickup zone.",
)
