"""Feature DAGs: one per model spec, scheduled on its validated-data Asset.

Checks the spec against its Feast declarations (in the task: parsing imports no Feast), runs
the model's declared aggregations and its own job (``features.aggregations``, ``.transform``),
applies every model's Feast definitions when they changed (and only then), materializes the
model's own views offline to online in bounded chunks, and emits the features-fresh Asset.
"""

from __future__ import annotations

from airflow.sdk import Asset, dag, get_current_context, task

from airloop.orchestration import asset_name, asset_uri, check_feast_definitions, dag_kwargs, dag_specs
from airloop.spec import ModelSpec


def build_features_dag(spec: ModelSpec):
    validated = Asset(asset_name(spec, "validated"), uri=asset_uri(spec, "validated"))
    fresh = Asset(asset_name(spec, "features_fresh"), uri=asset_uri(spec, "features_fresh"))

    @dag(
        **dag_kwargs(
            spec,
            "features",
            description=f"Compute, apply and materialize the {spec.features.service} features",
            schedule=validated,
            doc_md=__doc__,
        ),
    )
    def features():
        @task
        def derive_sources() -> dict:
            from airloop.features import derive

            check_feast_definitions(spec)  # the spec and its Feast declarations agree
            result = derive(spec)
            since = result.changed_since.isoformat() if result.changed_since else None
            detail = {k: v for k, v in result.detail.items() if k != "tables"}
            print(f"rows written {result.rows}, changed since {since}: {detail}")
            return {"changed_since": since, "rows": result.rows, "detail": result.detail}

        @task
        def apply_definitions() -> bool:
            from airloop.features import apply

            return apply()

        @task(outlets=[fresh])
        def materialize(derived: dict, applied: bool) -> dict:
            from datetime import datetime, timezone

            from airloop.daily_windows import Derived
            from airloop.features import refresh_online

            since = derived["changed_since"]
            changed = Derived(changed_since=since and datetime.fromisoformat(since), detail=derived["detail"])
            result = refresh_online(spec, changed, datetime.now(timezone.utc), applied=applied)
            if result is None:
                summary = {"rows": 0, "chunks": 0, "note": "no source rows changed"}
            else:
                summary = {
                    "end": result.end.isoformat(),
                    "rows": result.rows,
                    "chunks": len(result.chunks),
                    "seconds": round(result.seconds, 2),
                }
            print(summary)
            get_current_context()["outlet_events"][fresh].extra = summary
            return summary

        derived = derive_sources()
        applied = apply_definitions()
        derived >> applied
        materialize(derived, applied)

    return features()


for _spec in dag_specs():
    globals()[_spec.dag_id("features")] = build_features_dag(_spec)
