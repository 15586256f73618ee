"""Ingest DAGs: one per model spec.

Picks up new batches of the model's event dataset and reference tables from the landing area,
gates each one with its table's Great Expectations suite, versions passing batches with DVC and publishes them to the offline source. A rejected
batch is quarantined, its task fails with a summary of every failing expectation, an alert
fires, and the run fails; it gets no Asset event, so nothing downstream ever reads it.

The published batches of a run get one ``validated`` Asset event each, all emitted by one task
when every batch is done: the features DAG then runs once per ingest run, not once per batch.
"""

from __future__ import annotations

from airflow.sdk import Asset, AssetAlias, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from airloop.orchestration import (
    asset_name, asset_uri, dag_kwargs, dag_specs, failure_alert, ingest_parallelism, ingest_params, parse_day,
    publish_batch,
)
from airloop.spec import ModelSpec


def build_ingest_dag(spec: ModelSpec):
    validated = Asset(asset_name(spec, "validated"), uri=asset_uri(spec, "validated"))
    # Through an alias, one task can emit several events (one per batch) for the same Asset.
    validated_batches = AssetAlias(asset_name(spec, "validated_batches"))

    @dag(
        **dag_kwargs(
            spec, "ingest", schedule=spec.schedules.ingest, doc_md=__doc__,
            description=f"Validate, version and publish {', '.join(spec.dataset_names)} batches for {spec.name}",
        ),
        params=ingest_params(),
    )
    def ingest():
        @task
        def find_batches() -> list[str]:
            from airloop.ingest import find_pending_batches

            day = parse_day(get_current_context()["params"].get("batch_date"))
            paths = find_pending_batches(spec, day=day)
            print(f"{len(paths)} pending batch(es): {[p.name for p in paths]}")
            return [str(p) for p in paths]

        @task(
            on_failure_callback=failure_alert(spec, "batch rejected"),
            map_index_template="{{ batch_path.rsplit('/', 1)[-1] }}",
            max_active_tis_per_dagrun=ingest_parallelism(),
        )
        def validate_and_publish(batch_path: str) -> dict:
            # A rejected batch fails without retries; a batch already versioned skips.
            return publish_batch(spec, batch_path)

        # all_done: the good batches of a run are announced even when another batch was rejected.
        @task(outlets=[validated_batches], trigger_rule="all_done")
        def announce_validated(results: list[dict]) -> list[str]:
            results = list(results)  # the batches that were rejected or skipped push nothing
            if not results:
                raise AirflowSkipException("no batch was published in this run")
            events = get_current_context()["outlet_events"][validated_batches]
            for result in results:
                events.add(validated, extra=result)
            return [result["batch"] for result in results]

        # The last tasks succeed when only some batches were rejected; this one fails the run.
        @task(trigger_rule="one_failed")
        def fail_on_rejected_batch() -> None:
            raise AirflowFailException("a batch was rejected or could not be ingested: see the failed tasks")

        published = validate_and_publish.expand(batch_path=find_batches())
        announce_validated(published)
        published >> fail_on_rejected_batch()

    return ingest()


for _spec in dag_specs():
    globals()[_spec.dag_id("ingest")] = build_ingest_dag(_spec)
