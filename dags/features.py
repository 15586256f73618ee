"""Feature DAGs: one per model spec, scheduled on its validated-data Asset.

Derives the windowed restaurant statistics from the offline source, applies the Feast repo
when its definitions changed (and only then), materializes offline to online incrementally
in bounded chunks, and emits the features-fresh Asset.
"""

from __future__ import annotations

from airflow.sdk import Asset, dag, get_current_context, task

from airloop.orchestration import asset_name, asset_uri, dag_kwargs
from airloop.spec import ModelSpec, load_specs


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
        def compute_statistics() -> dict:
            from airloop.features import compute_restaurant_stats

            result = compute_restaurant_stats()
            print(f"days written {len(result.written)}, unchanged {result.unchanged}, rows {result.rows}")
            return {"days_written": [d.isoformat() for d in result.written], "rows": result.rows}

        @task
        def apply_definitions() -> bool:
            from airloop.features import apply

            return apply()

        @task(outlets=[fresh])
        def materialize(stats: dict, applied: bool) -> dict:
            from datetime import datetime, timezone

            from airloop.features import materialize_changed, stats_days

            # New or changed definitions: the online store needs every day again.
            days = stats_days() if applied else stats["days_written"]
            result = materialize_changed(days, datetime.now(timezone.utc))
            if result is None:
                summary = {"rows": 0, "chunks": 0, "note": "no statistics changed"}
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

        stats = compute_statistics()
        applied = apply_definitions()
        stats >> applied
        materialize(stats, applied)

    return features()


for _spec in load_specs():
    globals()[_spec.dag_id("features")] = build_features_dag(_spec)
