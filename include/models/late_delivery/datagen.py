"""Demo data of the late_delivery model: will a food-delivery order arrive late?

A delivery platform promises each customer a delivery time computed from distance alone.
Whether an order actually arrives late depends on the restaurant (how fast its kitchen is,
how busy it has been lately), the basket, the hour and the distance. Each day the platform
lands one batch of completed orders: one row per order, keyed by ``order_id``, with the
``restaurant_id`` entity, the ``event_timestamp`` when the order was placed, and the outcome.

The generator is seeded and deterministic (same seed and day, same bytes). Switches inject
data-quality defects (for the validation gate) and distribution drift of a chosen strength
from a chosen day (for the monitoring loop). ``write_day`` and ``live_requests`` are what
``airloop.demo`` calls for every model: land a day, serve live requests.

The library knows nothing of this data: this module lives with the model. Run it as a
script (``python include/models/late_delivery/datagen.py --start 2026-01-01 --days 10``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from airloop.fileio import atomic_path, to_csv_bytes

DEFAULT_SEED = 7
# The demo's defect: a few orders with a negative distance, stopped by the ingest gate.
DEMO_DEFECT = "out_of_range"
ZONES = ("center", "north", "south", "east", "west")
COLUMNS = (
    "order_id",
    "restaurant_id",
    "event_timestamp",
    "zone",
    "distance_km",
    "items",
    "order_value",
    "prep_minutes",
    "delivery_minutes",
    "promised_minutes",
    "was_late",
)
DEFECTS = (
    "missing_column",
    "wrong_dtype",
    "null_key",
    "duplicate_key",
    "out_of_range",
    "unknown_category",
    "empty_file",
    "unparseable",
    "future_timestamp",
)
# Orders by hour of day: lunch and dinner peaks.
_HOUR_WEIGHTS = np.array(
    [1, 0.5, 0.3, 0.2, 0.2, 0.3, 0.8, 1.5, 2, 2, 2.5, 5, 8, 7, 4, 2.5, 2.5, 4, 7, 9, 8, 5, 3, 2],
    dtype=float,
)
_PEAK_HOURS = {11, 12, 13, 18, 19, 20}


@dataclass(frozen=True)
class Drift:
    """Distribution drift applied from ``start`` (inclusive) with ``strength`` in [0, 1].

    Kitchens get slower and the platform starts serving farther addresses, so the features
    move (data drift). At the same time it starts promising faster deliveries to nearby
    addresses, so the same order is now late more often and distance matters in a new way:
    the relation between features and lateness moves too (concept drift), which a model
    trained before the change cannot follow and a retrained one can.
    """

    start: dt.date
    strength: float = 0.6

    def level(self, day: dt.date) -> float:
        return self.strength if day >= self.start else 0.0


@dataclass(frozen=True)
class Restaurants:
    ids: np.ndarray
    zone: np.ndarray
    base_prep: np.ndarray
    popularity: np.ndarray


def restaurants(seed: int = DEFAULT_SEED, n: int = 120) -> Restaurants:
    rng = np.random.default_rng([seed, 0])
    popularity = rng.gamma(2.0, 1.0, n)
    return Restaurants(
        ids=np.arange(1001, 1001 + n),
        zone=rng.choice(ZONES, n),
        base_prep=rng.uniform(7.0, 24.0, n),
        popularity=popularity / popularity.sum(),
    )


def generate_orders(
    day: dt.date,
    *,
    seed: int = DEFAULT_SEED,
    n_restaurants: int = 120,
    orders_per_day: int = 1500,
    drift: Drift | None = None,
    stream: int = 0,
) -> pd.DataFrame:
    """One day of completed orders as a typed DataFrame (before any defect).

    ``seed`` fixes the world (the restaurants and their kitchens); ``stream`` draws another,
    independent set of orders from the same world (e.g. live traffic next to the batches).
    """
    rest = restaurants(seed, n_restaurants)
    rng = np.random.default_rng([seed, day.toordinal()] + ([stream] if stream else []))
    level = drift.level(day) if drift else 0.0

    n = int(rng.poisson(orders_per_day))
    idx = rng.choice(len(rest.ids), n, p=rest.popularity)
    hours = rng.choice(24, n, p=_HOUR_WEIGHTS / _HOUR_WEIGHTS.sum())
    # Distinct seconds of the day per order keep (restaurant_id, event_timestamp) unique.
    seconds = hours * 3600 + rng.choice(3600, n)
    seconds = _unique_per_group(idx, seconds)
    midnight = pd.Timestamp(day, tz="UTC")
    ts = midnight + pd.to_timedelta(seconds, unit="s")

    peak = np.isin(hours, list(_PEAK_HOURS))
    distance = np.clip(rng.lognormal(np.log(3.0), 0.55, n) * (1 + 0.8 * level), 0.2, 40.0)
    items = np.clip(rng.poisson(2.5, n) + 1, 1, 40)
    value = np.round(items * rng.uniform(7, 16, n) + rng.normal(4, 2, n).clip(0), 2)
    prep = (
        rest.base_prep[idx] * (1 + 0.7 * level)
        + 0.8 * items
        + 6.0 * peak
        + rng.gamma(2.0, 1.5, n)
    )
    travel = distance * rng.uniform(2.6, 3.4, n) + 4.0 * peak + rng.normal(0, 2.0, n)
    delivery = np.clip(prep + travel + rng.exponential(3.0, n), 5.0, None)
    promised = np.round(34.0 - 25.0 * level + (3.2 + 3.0 * level) * distance)

    frame = pd.DataFrame(
        {
            "order_id": [f"o-{day:%Y%m%d}-{stream or ''}{i:06d}" for i in range(n)],
            "restaurant_id": rest.ids[idx].astype("int64"),
            "event_timestamp": ts,
            "zone": rest.zone[idx],
            "distance_km": np.round(distance, 3),
            "items": items.astype("int64"),
            "order_value": value,
            "prep_minutes": np.round(prep, 2),
            "delivery_minutes": np.round(delivery, 2),
            "promised_minutes": promised,
            "was_late": (delivery > promised).astype("int64"),
        },
        columns=list(COLUMNS),
    )
    return frame.sort_values("event_timestamp", kind="stable").reset_index(drop=True)


def _unique_per_group(groups: np.ndarray, seconds: np.ndarray) -> np.ndarray:
    """Shift colliding seconds within a group forward until every pair is distinct."""
    out = seconds.copy()
    seen: set[tuple[int, int]] = set()
    for i, (g, s) in enumerate(zip(groups.tolist(), seconds.tolist())):
        while (g, s) in seen:
            s = (s + 1) % 86400
        seen.add((g, s))
        out[i] = s
    return out


def apply_defect(frame: pd.DataFrame, defect: str, *, seed: int = DEFAULT_SEED) -> bytes:
    """Serialize ``frame`` as the landing CSV with one class of data-quality defect."""
    if defect not in DEFECTS:
        raise ValueError(f"unknown defect {defect!r}; choose from {', '.join(DEFECTS)}")
    rng = np.random.default_rng([seed, 99])
    bad = frame.copy()
    rows = rng.choice(len(bad), size=min(5, len(bad)), replace=False)
    if defect == "empty_file":
        return b""
    if defect == "unparseable":
        text = to_csv_bytes(bad).decode()
        lines = text.splitlines()
        # An unterminated quote swallows the rest of the file.
        lines[len(lines) // 2] = '"' + lines[len(lines) // 2]
        return ("\n".join(lines) + "\n\x00\x01\x02").encode()
    if defect == "missing_column":
        bad = bad.drop(columns=["distance_km"])
    elif defect == "wrong_dtype":
        bad["items"] = bad["items"].astype(object)
        bad.loc[rows, "items"] = "several"
    elif defect == "null_key":
        bad["restaurant_id"] = bad["restaurant_id"].astype("Int64")
        bad.loc[rows, "restaurant_id"] = pd.NA
    elif defect == "duplicate_key":
        bad = pd.concat([bad, bad.iloc[rows]], ignore_index=True)
    elif defect == "out_of_range":
        bad.loc[rows, "distance_km"] = -4.0
    elif defect == "unknown_category":
        bad.loc[rows, "zone"] = "atlantis"
    elif defect == "future_timestamp":
        bad.loc[rows, "event_timestamp"] = bad["event_timestamp"].max() + pd.Timedelta(days=3)
    return to_csv_bytes(bad)


def batch_filename(day: dt.date, dataset: str = "orders") -> str:
    return f"{dataset}_{day:%Y-%m-%d}.csv"


def write_batch(
    landing_dir: Path,
    day: dt.date,
    *,
    seed: int = DEFAULT_SEED,
    defect: str | None = None,
    drift: Drift | None = None,
    orders_per_day: int = 1500,
    dataset: str = "orders",
) -> Path:
    """Write one day's batch into the landing area and return its path."""
    frame = generate_orders(day, seed=seed, drift=drift, orders_per_day=orders_per_day)
    data = apply_defect(frame, defect, seed=seed) if defect else to_csv_bytes(frame)
    landing_dir.mkdir(parents=True, exist_ok=True)
    path = landing_dir / batch_filename(day, dataset)
    with atomic_path(path) as tmp:  # the ingest DAG never sees half a file
        tmp.write_bytes(data)
    return path


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
                        defect=DEMO_DEFECT if defect else None, orders_per_day=size)]


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


def main(argv: list[str] | None = None) -> int:
    import argparse

    from airloop.settings import get_settings

    parser = argparse.ArgumentParser(description="Write demo order batches to the landing area.")
    parser.add_argument("--start", type=dt.date.fromisoformat, required=True)
    parser.add_argument("--days", type=int, default=1)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--defect", choices=DEFECTS)
    parser.add_argument("--drift-from", type=dt.date.fromisoformat)
    parser.add_argument("--drift-strength", type=float, default=0.6)
    parser.add_argument("--orders-per-day", type=int, default=1500)
    parser.add_argument("--out", type=Path, help="landing directory (default: settings)")
    args = parser.parse_args(argv)
    drift = Drift(args.drift_from, args.drift_strength) if args.drift_from else None
    out = args.out or get_settings().landing_dir / "orders"
    for i in range(args.days):
        day = args.start + dt.timedelta(days=i)
        path = write_batch(
            out, day, seed=args.seed, defect=args.defect, drift=drift,
            orders_per_day=args.orders_per_day,
        )
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
