"""Packaging DAGs: one per model spec, scheduled on its champion Asset.

Imports the new ``@champion`` from MLflow into the BentoML store, builds a Bento labelled
with model name, version and run id, records the Bento tag on the MLflow model version, and
then checks that the model's own prediction service (``AIRLOOP_SERVE_URL__<MODEL>``, else
``AIRLOOP_SERVE_URL``) has swapped to the new champion. The service follows ``@champion``
itself, without a restart.
"""

from __future__ import annotations


from airflow.sdk import Asset, dag, task

from airloop.orchestration import asset_name, asset_uri, dag_kwargs, dag_specs
from airloop.spec import ModelSpec


def build_package_dag(spec: ModelSpec):
    champion = Asset(asset_name(spec, "champion"), uri=asset_uri(spec, "champion"))

    @dag(
        **dag_kwargs(
            spec,
            "package",
            description=f"Package and serve {spec.name}@champion with BentoML",
            schedule=champion,
            doc_md=__doc__,
        ),
    )
    def package():
        @task
        def build_bento() -> dict:
            from airloop.package import package_champion

            result = package_champion(spec)
            print(f"Bento {result['bento_tag']} for {spec.name} v{result['model_version']}")
            return result

        @task
        def confirm_served(bento: dict) -> dict:
            from airflow.sdk.exceptions import AirflowSkipException

            from airloop.serve import ServiceUnreachable, wait_until_serving
            from airloop.settings import get_settings

            url = get_settings().serve_url_for(spec.name)  # this model's service, not another's
            try:
                return wait_until_serving(spec, bento["model_version"], url=url, timeout=180)
            except ServiceUnreachable as exc:
                raise AirflowSkipException(str(exc)) from exc

        confirm_served(build_bento())

    return package()


for _spec in dag_specs():
    globals()[_spec.dag_id("package")] = build_package_dag(_spec)
