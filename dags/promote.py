"""Promote DAGs: one per model spec, manual only.

Makes a named version ``@champion`` if the champion/challenger gate lets it (floors, better than
the champion on the version's own holdout), or anyway when ``override_gate`` is set; either way
the promotion history records the triggering user and the reason. A promotion emits the champion
Asset, so packaging runs and the served model follows; a refusal fails the run with the reason.
"""

from __future__ import annotations

from airflow.sdk import Asset, dag, get_current_context, task

from airloop.orchestration import asset_name, asset_uri, dag_kwargs, dag_specs, promote_params, promote_requested
from airloop.spec import ModelSpec


def build_promote_dag(spec: ModelSpec):
    champion = Asset(asset_name(spec, "champion"), uri=asset_uri(spec, "champion"))

    @dag(
        **dag_kwargs(
            spec, "promote", description=f"Promote a named version of {spec.name} to @champion",
            schedule=None, doc_md=__doc__,
        ),
        params=promote_params(),
    )
    def promote():
        @task(outlets=[champion])
        def promote_version() -> dict:
            context = get_current_context()
            result = promote_requested(spec, context)
            context["outlet_events"][champion].extra = {
                "version": result["version"],
                "reason": context["params"]["reason"],
                "gate": result["gate"],
            }
            return result

        promote_version()

    return promote()


for _spec in dag_specs():
    globals()[_spec.dag_id("promote")] = build_promote_dag(_spec)
