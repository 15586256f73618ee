"""Demo data of the trip_duration model: ride-hailing trips, hourly zone weather and the fleet.

A ride-hailing fleet of vehicles serves a city cut into zones. Each day lands one batch of
completed trips (``trips``) and one file of hourly weather per zone (``zone_weather``); the
fleet table (``vehicles``) lands as a full snapshot now and then. A trip's duration follows
from its distance and a speed that depends on the zone, the hour (rush hours are slow), that
hour's rain in the zone, the vehicle type (vans are slow) and the service class, so the
model's features (vehicle and zone statistics, weather, request fields) genuinely predict it.

Seeded and deterministic: the same seed and day give the same bytes. ``Drift`` makes rain
heavier and puts roadworks in some zones from a chosen day: the inputs move (more rain) and
so does the relation between them and the duration (a zone's usual speed no longer holds).

The library knows nothing of this data: this module lives with the model. Run it as a
script (``python include/models/trip_duration/datagen.py --start 2026-01-01 --days 20``).
"""

from __future__ import annotations

import datetime as dt
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from airloop.fileio import write_csv

TRIP_COLUMNS = (
    "trip_id",
    "vehicle_id",
    "zone_id",
    "pickup_at",
    "service_class",
    "distance_km",
    "passengers",
    "duration_minutes",
)
WEATHER_COLUMNS = ("zone_id", "hour_start", "temperature_c", "rain_mm")
VEHICLE_COLUMNS = ("vehicle_id", "vehicle_type", "model_year", "registered_at")

VEHICLE_TYPES = ("sedan", "hatchback", "van", "electric")
SERVICE_CLASSES = ("economy", "comfort", "xl")
N_VEHICLES = 40
N_ZONES = 12
RUSH_HOURS = frozenset({7, 8, 9, 17, 18, 19})

# Trips by hour of day: a morning and an evening rush, little at night.
_HOUR_WEIGHTS = np.array(
    [1.5, 1, 0.6, 0.4, 0.4, 0.8, 2, 6, 8, 6, 3.5, 3, 3.5, 3.5, 3, 3.5, 5, 8, 9, 6, 4, 3.5, 3, 2],
    dtype=float,
)
# How each part of a trip moves its average speed (multiplicative).
_TYPE_SPEED = {"sedan": 1.0, "hatchback": 1.02, "van": 0.8, "electric": 1.05}
_CLASS_SPEED = {"economy": 1.0, "comfort": 1.08, "xl": 0.9}
_CLASS_WEIGHTS = (0.6, 0.3, 0.1)
_TYPE_MIX = (16, 10, 6, 8)  # vehicles of each type per 40
_RUSH_SPEED, _NIGHT_SPEED = 0.62, 1.3
DEFAULT_SEED = 11
# Rain slows traffic: speed / (1 + _RAIN_SLOWDOWN * mm in that hour).
_RAIN_SLOWDOWN = 0.1
# Registration times of the fleet: all before any demo day, so every trip finds its vehicle.
_FLEET_SINCE = pd.Timestamp("2016-01-01", tz="UTC")
_FLEET_UNTIL = pd.Timestamp("2023-12-31", tz="UTC")
# Tags that keep the random streams of the world, the weather and the trips apart.
_WORLD, _WEATHER, _TRIPS = 101, 202, 303


@dataclass(frozen=True)
class Drift:
    """Drift applied from ``start`` (inclusive) with ``strength`` in [0, 1].

    Rain comes more often and heavier (the weather features move), and roadworks slow a third
    of the zones (a zone's 7-day speed lags behind its new speed for a week, and rain slows
    everyone more): a model trained before ``start`` underestimates durations after it.
    """

    start: dt.date
    strength: float = 0.6

    def level(self, day: dt.date) -> float:
        """The drift strength in force on ``day`` (0 before ``start``)."""
        return self.strength if day >= self.start else 0.0


@dataclass(frozen=True)
class World:
    """The fleet and the city a seed stands for; fixed for all days."""

    vehicle_ids: np.ndarray
    vehicle_type: np.ndarray
    model_year: np.ndarray
    registered_at: pd.DatetimeIndex
    vehicle_weight: np.ndarray  # share of the trips each vehicle drives
    zone_ids: np.ndarray
    zone_speed: np.ndarray  # free-flow km/h
    zone_weight: np.ndarray  # share of the pickups in each zone
    zone_temperature: np.ndarray  # offset from the city's temperature, degrees C
    zone_wetness: np.ndarray  # how much of the city's rain falls on the zone
    roadworks: np.ndarray  # bool per zone: slowed down under drift


def world(seed: int = 11) -> World:
    """The vehicles and zones of ``seed`` (the same for every day and stream)."""
    rng = np.random.default_rng([seed, _WORLD])
    # A fixed mix (shuffled), so every type has enough vehicles whatever the seed.
    mix = np.repeat(VEHICLE_TYPES, _TYPE_MIX)
    vtype = rng.permutation(np.resize(mix, N_VEHICLES))
    model_year = rng.integers(2012, 2024, N_VEHICLES)
    # Registered in its model year or later, and before the fleet's cut-off.
    low = np.maximum(
        pd.to_datetime([f"{y}-01-01" for y in model_year], utc=True).asi8,
        _FLEET_SINCE.value,
    )
    seconds = (rng.uniform(0, 1, N_VEHICLES) * (_FLEET_UNTIL.value - low)).astype("int64") // 10**9
    registered = pd.to_datetime(low // 10**9 + seconds, unit="s", utc=True)
    vehicle_weight = rng.gamma(3.0, 1.0, N_VEHICLES)
    zone_weight = rng.gamma(2.0, 1.0, N_ZONES)
    roadworks = np.zeros(N_ZONES, dtype=bool)
    roadworks[rng.choice(N_ZONES, N_ZONES // 3, replace=False)] = True
    return World(
        vehicle_ids=np.arange(501, 501 + N_VEHICLES, dtype="int64"),
        vehicle_type=vtype,
        model_year=model_year.astype("int64"),
        registered_at=registered,
        vehicle_weight=vehicle_weight / vehicle_weight.sum(),
        zone_ids=np.arange(1, N_ZONES + 1, dtype="int64"),
        # Dense centre zones crawl, outer zones flow.
        zone_speed=rng.uniform(16.0, 48.0, N_ZONES),
        zone_weight=zone_weight / zone_weight.sum(),
        zone_temperature=rng.normal(0.0, 1.2, N_ZONES),
        zone_wetness=rng.uniform(0.6, 1.4, N_ZONES),
        roadworks=roadworks,
    )


def vehicles_table(seed: int = 11) -> pd.DataFrame:
    """The fleet as the ``vehicles`` reference table (one row per vehicle)."""
    w = world(seed)
    return pd.DataFrame(
        {
            "vehicle_id": w.vehicle_ids,
            "vehicle_type": w.vehicle_type,
            "model_year": w.model_year,
            "registered_at": w.registered_at,
        },
        columns=list(VEHICLE_COLUMNS),
    )


def generate_weather(day: dt.date, *, seed: int = 11, drift: Drift | None = None) -> pd.DataFrame:
    """One day of hourly weather per zone: 24 rows per zone, stamped at the hour's start."""
    w = world(seed)
    rng = np.random.default_rng([seed, day.toordinal(), _WEATHER])
    level = drift.level(day) if drift else 0.0
    hours = np.arange(24)

    # City-wide showers as a two-state chain over the hours: rain comes in episodes.
    start_p, stay_p = 0.05 + 0.15 * level, 0.75 + 0.15 * level
    wet = np.zeros(24, dtype=bool)
    wet[0] = rng.random() < start_p / (1 - stay_p + start_p)  # the chain's stationary share
    for h in range(1, 24):
        wet[h] = rng.random() < (stay_p if wet[h - 1] else start_p)
    # Each zone gets a shower with its own share and intensity; a few dry-hour drizzles.
    raining = np.where(wet[None, :], rng.random((N_ZONES, 24)) < 0.85, rng.random((N_ZONES, 24)) < 0.01)
    intensity = rng.gamma(1.6, 1.6 * (1 + 1.5 * level), (N_ZONES, 24)) * w.zone_wetness[:, None]
    rain = np.round(np.clip(np.where(raining, intensity, 0.0), 0.0, 200.0), 1)

    # Seasonal mean, a daily cycle peaking mid-afternoon, rain cools.
    season = 11.0 - 9.0 * np.cos(2 * np.pi * (day.timetuple().tm_yday - 15) / 365.25)
    today = season + rng.normal(0.0, 2.0)
    cycle = 5.0 * np.cos(2 * np.pi * (hours - 15) / 24)
    temperature = (
        today + cycle[None, :] + w.zone_temperature[:, None]
        - 0.4 * np.minimum(rain, 5.0) + rng.normal(0.0, 0.4, (N_ZONES, 24))
    )
    midnight = pd.Timestamp(day, tz="UTC")
    return pd.DataFrame(
        {
            "zone_id": np.repeat(w.zone_ids, 24),
            "hour_start": np.tile(midnight + pd.to_timedelta(hours, unit="h"), N_ZONES),
            "temperature_c": np.round(np.clip(temperature, -40.0, 50.0), 1).ravel(),
            "rain_mm": rain.ravel(),
        },
        columns=list(WEATHER_COLUMNS),
    )


def generate_trips(
    day: dt.date,
    *,
    seed: int = 11,
    trips_per_day: int = 600,
    drift: Drift | None = None,
    stream: int = 0,
) -> pd.DataFrame:
    """One day of completed trips as a typed DataFrame, ordered by pickup time.

    ``seed`` fixes the world (fleet, zones) and the day's weather; ``stream`` draws another,
    independent set of trips in the same world and weather (e.g. live traffic).
    """
    rng = np.random.default_rng([seed, day.toordinal(), _TRIPS, stream])
    frame = _draw_trips(day, int(rng.poisson(trips_per_day)), rng, seed=seed, drift=drift)
    prefix = f"t-{day:%Y%m%d}-" + (f"s{stream}-" if stream else "")
    frame.insert(0, "trip_id", [f"{prefix}{i:06d}" for i in range(len(frame))])
    return frame[list(TRIP_COLUMNS)]


def _draw_trips(day: dt.date, n: int, rng: np.random.Generator, *, seed: int, drift: Drift | None) -> pd.DataFrame:
    """``n`` trips of ``day`` drawn with ``rng`` in the world and weather of ``seed``."""
    w = world(seed)
    level = drift.level(day) if drift else 0.0
    weather = generate_weather(day, seed=seed, drift=drift)
    rain_by_zone_hour = weather["rain_mm"].to_numpy().reshape(N_ZONES, 24)

    seconds = np.sort(rng.choice(86400, n, p=_second_weights()))
    hours = seconds // 3600
    vehicle = rng.choice(N_VEHICLES, n, p=w.vehicle_weight)
    zone = rng.choice(N_ZONES, n, p=w.zone_weight)
    service = rng.choice(SERVICE_CLASSES, n, p=_CLASS_WEIGHTS)
    distance = np.round(np.clip(rng.lognormal(np.log(5.0), 0.6, n), 0.3, 45.0), 2)
    seats = np.where(service == "xl", 6, 4)
    passengers = np.minimum(1 + rng.poisson(0.5, n) + (service == "xl") * rng.poisson(1.5, n), seats)

    rain = rain_by_zone_hour[zone, hours]
    hour_factor = np.where(np.isin(hours, list(RUSH_HOURS)), _RUSH_SPEED, np.where(hours < 6, _NIGHT_SPEED, 1.0))
    type_factor = np.vectorize(_TYPE_SPEED.get)(w.vehicle_type[vehicle])
    class_factor = np.vectorize(_CLASS_SPEED.get)(service)
    works = np.where(w.roadworks[zone], 1.0 - 0.55 * level, 1.0)
    speed = (
        w.zone_speed[zone] * works * hour_factor * type_factor * class_factor
        / (1.0 + _RAIN_SLOWDOWN * (1 + level) * rain)
        * rng.lognormal(0.0, 0.15, n)
    )
    speed = np.maximum(speed, 5.0)  # even a jam moves
    # Pickup and drop-off add a few minutes whatever the distance.
    duration = distance / speed * 60.0 + 1.5 + rng.gamma(2.0, 0.6, n)
    pickup = pd.Timestamp(day, tz="UTC") + pd.to_timedelta(seconds, unit="s")
    return pd.DataFrame(
        {
            "vehicle_id": w.vehicle_ids[vehicle],
            "zone_id": w.zone_ids[zone],
            "pickup_at": pickup,
            "service_class": service,
            "distance_km": distance,
            "passengers": passengers.astype("int64"),
            "duration_minutes": np.round(np.clip(duration, 0.5, 300.0), 2),
        }
    )


def _second_weights() -> np.ndarray:
    """The probability of each second of the day as a pickup time (the hour profile)."""
    per_hour = _HOUR_WEIGHTS / _HOUR_WEIGHTS.sum()
    return np.repeat(per_hour / 3600, 3600)


def live_requests(
    day: dt.date, n: int, *, seed: int = 11, drift: Drift | None = None, stream: int = 1
) -> list[dict]:
    """``n`` prediction requests of ``day`` from the batches' world, with their true durations.

    Each dict holds the service's request fields (``vehicle_id``, ``zone_id``, ``distance_km``,
    ``passengers``, ``service_class``, ``pickup_hour``) plus ``duration_minutes``, the label
    to send back as feedback. ``stream`` (not 0, the batches' own) picks the draw.
    """
    if stream == 0:
        raise ValueError("stream 0 is the batches' own draw: live traffic needs another stream")
    rng = np.random.default_rng([seed, day.toordinal(), _TRIPS, stream])
    trips = _draw_trips(day, n, rng, seed=seed, drift=drift)
    return [
        {
            "vehicle_id": int(row.vehicle_id),
            "zone_id": int(row.zone_id),
            "distance_km": float(row.distance_km),
            "passengers": int(row.passengers),
            "service_class": str(row.service_class),
            "pickup_hour": int(row.pickup_at.hour),
            "duration_minutes": float(row.duration_minutes),
        }
        for row in trips.itertuples(index=False)
    ]


def write_day(
    landing_dir: Path,
    day: dt.date,
    *,
    seed: int = DEFAULT_SEED,
    drift: Drift | None = None,
    defect: bool = False,
    size: int = 600,
) -> list[Path]:
    """Write ``day``'s trips (``size`` on average) and zone weather under
    ``landing_dir/<table>/``; return the paths.

    ``defect``: a few trips get a negative distance, which the ingest gate must stop.
    """
    trips = generate_trips(day, seed=seed, trips_per_day=size, drift=drift)
    if defect:
        trips.loc[trips.index[:5], "distance_km"] = -2.5
    return [
        write_csv(landing_dir / "trips" / f"trips_{day:%Y-%m-%d}.csv", trips),
        write_csv(landing_dir / "zone_weather" / f"zone_weather_{day:%Y-%m-%d}.csv",
               generate_weather(day, seed=seed, drift=drift)),
    ]


def write_references(landing_dir: Path, day: dt.date, *, seed: int = DEFAULT_SEED) -> list[Path]:
    """Write the tables that land once rather than daily: the fleet snapshot of ``day``."""
    return [write_vehicles(landing_dir, day, seed=seed)]


def write_vehicles(landing_dir: Path, day: dt.date, *, seed: int = DEFAULT_SEED) -> Path:
    """Write the fleet snapshot of ``day`` to ``landing_dir/vehicles/``."""
    return write_csv(landing_dir / "vehicles" / f"vehicles_{day:%Y-%m-%d}.csv", vehicles_table(seed))


def main(argv: list[str] | None = None) -> int:
    """Write a fleet snapshot (on the first day) and ``--days`` days of trips and weather."""
    import argparse

    parser = argparse.ArgumentParser(description="Write trip_duration demo batches to the landing area.")
    parser.add_argument("--start", type=dt.date.fromisoformat, required=True)
    parser.add_argument("--days", type=int, default=1)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--drift-from", type=dt.date.fromisoformat)
    parser.add_argument("--drift-strength", type=float, default=0.6)
    parser.add_argument("--trips-per-day", type=int, default=600)
    parser.add_argument("--no-vehicles", action="store_true", help="do not write the fleet snapshot")
    parser.add_argument("--out", type=Path, help="landing directory (default: settings)")
    args = parser.parse_args(argv)
    if args.out is None:
        from airloop.settings import get_settings

        args.out = get_settings().landing_dir
    drift = Drift(args.drift_from, args.drift_strength) if args.drift_from else None
    if not args.no_vehicles:
        print(write_vehicles(args.out, args.start, seed=args.seed))
    for i in range(args.days):
        day = args.start + dt.timedelta(days=i)
        for path in write_day(args.out, day, seed=args.seed, drift=drift, size=args.trips_per_day):
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
