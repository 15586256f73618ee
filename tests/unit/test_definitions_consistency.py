"""A spec against its Feast declarations (airloop.features.consistency): each kind of
disagreement, planted in a copy of a shipped model, is reported naming the model, the spec
field or Feast object, and the column; the shipped models agree."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from airloop.features.consistency import check_definitions, definition_problems
from airloop.spec import SpecError, load_spec, load_specs

REPO_ROOT = Path(__file__).resolve().parents[2]
MODELS = REPO_ROOT / "include" / "models"


def _plant(tmp_path: Path, model: str, file: str, old: str, new: str) -> Path:
    """A copy of the models directory with ``old`` replaced by ``new`` in ``file`` (relative to it)."""
    models = tmp_path / "models"
    shutil.copytree(MODELS, models, ignore=shutil.ignore_patterns("__pycache__"))
    path = models / file
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} must occur once in {file}"
    path.write_text(text.replace(old, new))
    return models / f"{model}.yaml"


TRIP_FEATURES = "trip_duration/feature_repo/features.py"
TRIP_SOURCES = "trip_duration/feature_repo/data_sources.py"
LATE_FEATURES = "late_delivery/feature_repo/features.py"

CASES = {
    "aggregation output missing from its view": (
        "trip_duration", TRIP_FEATURES,
        '        Field(name="zone_trips_7d", dtype=Int64, description="Pickups over the last 7 full days."),\n', "",
        "trip_duration: features.aggregations.zone_stats outputs zone_trips_7d (Int64) but Feast view "
        "zone_stats has no field zone_trips_7d",
    ),
    "aggregation output of the wrong type": (
        "trip_duration", TRIP_FEATURES,
        'Field(name="zone_trips_7d", dtype=Int64', 'Field(name="zone_trips_7d", dtype=Float64',
        "trip_duration: features.aggregations.zone_stats outputs zone_trips_7d (Int64) but Feast view "
        "zone_stats declares zone_trips_7d as Float64 (expected Int64 or Int32)",
    ),
    "a view field the aggregation does not write": (
        "trip_duration", TRIP_FEATURES,
        '        Field(name="zone_trips_1d", dtype=Int64, description="Pickups on the last full day."),\n',
        '        Field(name="zone_trips_1d", dtype=Int64, description="Pickups on the last full day."),\n'
        '        Field(name="zone_trips_30d", dtype=Int64),\n',
        "trip_duration: Feast view zone_stats has field zone_trips_30d, which features.aggregations.zone_stats "
        "does not output",
    ),
    "no view reads the aggregation's directory": (
        "trip_duration", TRIP_SOURCES, 'path="zone_stats"', 'path="zone_statistics"',
        "trip_duration: features.aggregations.zone_stats writes directory zone_stats but no Feast view's "
        "FileSource reads it",
    ),
    "a view reads a directory the model never writes": (
        "trip_duration", TRIP_SOURCES, 'path="zone_stats"', 'path="zone_statistics"',
        "trip_duration: Feast view zone_stats reads directory zone_statistics, which is neither a table nor "
        "an aggregation of the spec",
    ),
    "an aggregation view stamped by another column": (
        "trip_duration", TRIP_SOURCES,
        'path="zone_stats",\n    timestamp_field="event_timestamp"', 'path="zone_stats",\n    timestamp_field="day_end"',
        "trip_duration: Feast view zone_stats reads features.aggregations.zone_stats by timestamp_field "
        "'day_end', but its files are stamped in 'event_timestamp'",
    ),
    "an aggregation view's TTL shorter than a day": (
        "late_delivery", LATE_FEATURES, "ttl=timedelta(days=7)", "ttl=timedelta(hours=6)",
        "late_delivery: Feast view restaurant_stats has ttl 6:00:00, shorter than the day between "
        "features.aggregations.restaurant_stats's rows",
    ),
    "an aggregation view keyed by another column": (
        "trip_duration", "trip_duration/feature_repo/entities.py", 'join_keys=["zone_id"]', 'join_keys=["area_id"]',
        "trip_duration: Feast view zone_stats joins on area_id but features.aggregations.zone_stats is keyed by zone_id",
    ),
    "a view joining on a key the spec does not send": (
        "trip_duration", "trip_duration/feature_repo/entities.py", 'join_keys=["zone_id"]', 'join_keys=["area_id"]',
        "trip_duration: Feast view zone_stats (in service trip_duration_v1) joins on area_id, which is neither "
        "an entity join_key nor a features.request field of the spec",
    ),
    "the service the spec names is not declared": (
        "trip_duration", "trip_duration.yaml", "service: trip_duration_v1", "service: trip_duration_v2",
        "trip_duration: features.service names 'trip_duration_v2', which its Feast declarations do not define "
        "(they define: trip_duration_v1)",
    ),
    "a request field the spec does not list": (
        "trip_duration", "trip_duration.yaml",
        "request: [distance_km, passengers, service_class, pickup_hour]",
        "request: [distance_km, service_class, pickup_hour]",
        "trip_duration: on-demand view trip_context reads request field passengers (RequestSource trip_request), "
        "which features.request does not list",
    ),
    "a request field of the wrong type": (
        "trip_duration", TRIP_SOURCES, 'Field(name="passengers", dtype=Int64)', 'Field(name="passengers", dtype=String)',
        "trip_duration: features.request field passengers is int but RequestSource trip_request declares "
        "passengers as String (expected Int64 or Int32)",
    ),
    "a derived request field of the wrong type": (
        "late_delivery", "late_delivery/feature_repo/data_sources.py",
        'Field(name="order_hour", dtype=Int64)', 'Field(name="order_hour", dtype=Float64)',
        "late_delivery: features.request field order_hour is int but RequestSource order_request declares "
        "order_hour as Float64",
    ),
    "a reference view stamped by another column": (
        "trip_duration", TRIP_SOURCES, 'timestamp_field="registered_at"', 'timestamp_field="updated_at"',
        "trip_duration: Feast view vehicle_attributes reads references.vehicles by timestamp_field "
        "'updated_at', but the table's timestamp is 'registered_at'",
    ),
    "no view reads a reference table": (
        "trip_duration", TRIP_SOURCES, 'path="vehicles"', 'path="fleet"',
        "trip_duration: references.vehicles is published to directory vehicles but no Feast view's "
        "FileSource reads it",
    ),
    "a reference view field the table does not have": (
        "trip_duration", TRIP_FEATURES, 'Field(name="model_year", dtype=Int64)', 'Field(name="seats", dtype=Int64)',
        "trip_duration: Feast view vehicle_attributes has field seats, which references.vehicles has no column named",
    ),
    "a reference view field of the wrong type": (
        "trip_duration", TRIP_FEATURES, 'Field(name="model_year", dtype=Int64)', 'Field(name="model_year", dtype=String)',
        "trip_duration: references.vehicles column model_year is int but Feast view vehicle_attributes declares "
        "model_year as String (expected Int64 or Int32)",
    ),
    "drift names a column that is not a model input": (
        "trip_duration", "trip_duration.yaml", "exclude: [temperature_c]", "exclude: [temperature]",
        "trip_duration: drift.exclude names temperature, which is not a model input",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_planted_disagreement_is_named(tmp_path, case):
    model, file, old, new, expected = CASES[case]
    spec = load_spec(_plant(tmp_path, model, file, old, new))
    problems = definition_problems(spec)
    assert any(p.startswith(expected) for p in problems), problems
    with pytest.raises(SpecError, match="disagree: ") as raised:
        check_definitions(spec)
    assert expected in str(raised.value)


def test_the_shipped_models_agree_with_their_declarations():
    specs = load_specs(MODELS)
    assert {s.name for s in specs} >= {"late_delivery", "trip_duration"}
    for spec in specs:
        assert definition_problems(spec) == [], spec.name
        check_definitions(spec)


def test_warmup_shorter_than_the_longest_window_fails_at_load(tmp_path):
    path = _plant(tmp_path, "trip_duration", "trip_duration.yaml", "warmup_days: 7", "warmup_days: 3")
    with pytest.raises(SpecError, match=(
        r"split.warmup_days: 3 is shorter than the longest declared window, 7d "
        r"\(features.aggregations.vehicle_stats.features.vehicle_trips_7d\)"
    )):
        load_spec(path)


def test_a_failed_check_fails_the_task_without_retries(tmp_path):
    from airflow.sdk.exceptions import AirflowFailException

    from airloop.orchestration import check_feast_definitions

    old, new = "service: late_delivery_v1", "service: late_delivery_v9"
    spec = load_spec(_plant(tmp_path, "late_delivery", "late_delivery.yaml", old, new))
    with pytest.raises(AirflowFailException, match="late_delivery: features.service names 'late_delivery_v9'"):
        check_feast_definitions(spec)
    check_feast_definitions(load_spec(MODELS / "late_delivery.yaml"))
