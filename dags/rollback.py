"""Rollback DAGs: one per model spec, manual only.

Re-points ``@champion`` to an earlier version and emits the champion Asset, so packaging runs
and the served model follows.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import Asset, dag, get_current_context, task

from airloop.orchestration import (
    asset_name, asset_uri, dag_specs, dag_tags, default_args, rollback_params, rollback_requested,
)
from airloop.spec import ModelSpec


def build_rollback_dag(spec: ModelSpec):
    champion = Asset(asset_name(spec, "champion"), uri=asset_uri(spec, "champion"))

    @dag(
        dag_id=spec.dag_id("rollback"),
        description=f"Re-point {spec.name}@champion to an earlier version",
        schedule=None,
        start_date=datetime(2026, 1, 1),
        catchup=False,
        default_args=default_args(spec),
        tags=dag_tags(spec, "rollback"),
        doc_md="Manual only. Re-points `@champion` to the given version, or to the champion "
        "before the current one, records it in the promotion history and emits the champion "
        "Asset so the served model follows.",
        params=rollback_params(),
    )
    def rollback():
        @task(outlets=[champion])
        def repoint_champion() -> str:
            context = get_current_context()
            version = rollback_requested(spec, context)
            context["outlet_events"][champion].extra = {"version": version, "reason": context["params"]["reason"]}
            return version

        repoint_champion()

    return rollback()


for _spec in dag_specs():
    globals()[_spec.dag_id("rollback")] = build_rollback_dag(_spec)
