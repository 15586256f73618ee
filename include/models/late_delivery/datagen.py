"""The late_delivery example's data, in the shape ``airloop.demo`` drives any model with.

The generator itself is :mod:`airloop.datagen` (seeded orders with defect and drift switches);
these functions are what the demo calls for every model: land a day, serve live requests.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from airloop.datagen import Drift, generate_orders, write_batch

__all__ = ["DEFAULT_SEED", "Drift", "live_requests", "write_day"]

DEFAULT_SEED = 7
# The demo's defect: a few orders with a negative distance, stopped by the ingest gate.
DEFECT = "out_of_range"


def write_day(
    landing_dir: Path,
    day: dt.date,
    *,
    seed: int = DEFAULT_SEED,
    drift: Drift | None = None,
    defect: bool = False,
    size: int = 1500,
) -> list[Path]:
    """Write ``day``'s orders batch (``size`` orders on average) to ``landing_dir/orders/``."""
    return [write_batch(landing_dir / "orders", day, seed=seed, drift=drift,
                        defect=DEFECT if defect else None, orders_per_day=size)]


def live_requests(
    day: dt.date, n: int, *, seed: int = DEFAULT_SEED, drift: Drift | None = None, stream: int = 1
) -> list[dict]:
    """``n`` prediction requests of ``day`` from the batches' world, each with its label
    (``was_late``) to send back as feedback. ``stream`` (not 0, the batches' own) picks the draw."""
    if stream == 0:
        raise ValueError("stream 0 is the batches' own draw: live traffic needs another stream")
    orders = generate_orders(day, seed=seed, stream=stream, drift=drift, orders_per_day=n)
    return [
        {"restaurant_id": int(o.restaurant_id), "distance_km": float(o.distance_km), "items": int(o.items),
         "order_hour": int(o.event_timestamp.hour), "was_late": int(o.was_late)}
        for o in orders.itertuples()
    ]
