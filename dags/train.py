"""Training DAGs: one per model spec.

Builds the point-in-time training set from Feast over the DVC-versioned data, trains the
spec's estimator, logs everything to MLflow and registers a version; the champion/challenger
gate then promotes it only if it beats ``@champion``. A promotion emits the champion Asset
that packaging schedules on. Trigger from the UI (reason, optional data window), on the
weekly schedule, or from the monitoring DAG (reason and drift report id in the conf).
"""

from __future__ import annotations

from airflow.sdk import Asset, dag, get_current_context, task

from airloop.orchestration import (
    asset_name, asset_uri, check_feast_definitions, dag_kwargs, dag_specs, parse_day, run_reason, train_params,
)
from airloop.spec import ModelSpec


def build_train_dag(spec: ModelSpec):
    champion = Asset(asset_name(spec, "champion"), uri=asset_uri(spec, "champion"))

    @dag(
        **dag_kwargs(
            spec,
            "train",
            description=f"Train, register and gate {spec.name}",
            schedule=spec.schedules.train,
            doc_md=__doc__,
        ),
        params=train_params(),
    )
    def train():
        @task
        def train_and_register() -> dict:
            from airloop.train import train_model

            check_feast_definitions(spec)  # the spec and its Feast declarations agree
            context = get_current_context()
            params = context["params"]
            return train_model(
                spec,
                reason=run_reason(context["dag_run"].run_type, params["reason"]),
                drift_report_id=params.get("drift_report_id") or "",
                start=parse_day(params.get("start")),
                end=parse_day(params.get("end")),
            )

        @task
        def champion_challenger_gate(trained: dict) -> dict:
            from dataclasses import asdict

            from airloop.promotion import gate_version

            decision = gate_version(spec, trained["version"])
            print(
                f"v{trained['version']}: {'PROMOTED' if decision.promoted else 'not promoted'}: {decision.reason}"
            )
            return {**asdict(decision), "version": trained["version"], "run_id": trained["run_id"]}

        @task.short_circuit(ignore_downstream_trigger_rules=False)
        def promoted(decision: dict) -> bool:
            return decision["promoted"]

        @task(outlets=[champion])
        def announce_champion(decision: dict) -> None:
            get_current_context()["outlet_events"][champion].extra = {
                "version": decision["version"],
                "run_id": decision["run_id"],
                "reason": decision["reason"],
            }

        decision = champion_challenger_gate(train_and_register())
        promoted(decision) >> announce_champion(decision)

    return train()


for _spec in dag_specs():
    globals()[_spec.dag_id("train")] = build_train_dag(_spec)
