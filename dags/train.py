"""Training DAGs: one per model spec.

Builds the point-in-time training set from Feast over the DVC-versioned data, trains the
spec's estimator, logs everything to MLflow and registers a version; the champion/challenger
gate then promotes it only if it beats ``@champion``. A promotion emits the champion Asset
that packaging schedules on. Trigger from the UI (reason, optional data window), on the
weekly schedule, or from the monitoring DAG (reason and drift report id in the conf).
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import Asset, Param, dag, get_current_context, task

from airloop.orchestration import asset_name, asset_uri, dag_kwargs, dag_tags, default_args
from airloop.spec import ModelSpec, load_specs


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
        params={
            "reason": Param(
                "manual", type="string", title="Reason", description="Why train now (kept as lineage)."
            ),
            "drift_report_id": Param(None, type=["null", "string"], title="Drift report id"),
            "start": Param(None, type=["null", "string"], format="date", title="Data from (day)"),
            "end": Param(None, type=["null", "string"], format="date", title="Data until (day)"),
        },
    )
    def train():
        @task
        def train_and_register() -> dict:
            from datetime import date

            from airloop.train import train_model

            context = get_current_context()
            params = context["params"]
            reason = params["reason"]
            if context["dag_run"].run_type == "scheduled" and reason == "manual":
                reason = "schedule"
            day = lambda v: date.fromisoformat(v) if v else None  # noqa: E731
            return train_model(
                spec,
                reason=reason,
                drift_report_id=params.get("drift_report_id") or "",
                start=day(params.get("start")),
                end=day(params.get("end")),
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
        params={
            "to_version": Param(
                None, type=["null", "string"], title="Version", description="Empty: the previous champion."
            ),
            "reason": Param("manual rollback", type="string", title="Reason"),
        },
    )
    def rollback():
        @task(outlets=[champion])
        def repoint_champion() -> str:
            from airloop.promotion import rollback
            from airloop.registry import current_actor

            params = get_current_context()["params"]
            version = rollback(spec, params.get("to_version"), actor=current_actor(), reason=params["reason"])
            get_current_context()["outlet_events"][champion].extra = {
                "version": version,
                "reason": params["reason"],
            }
            return version

        repoint_champion()

    return rollback()


for _spec in load_specs():
    globals()[_spec.dag_id("train")] = build_train_dag(_spec)
    globals()[_spec.dag_id("rollback")] = build_rollback_dag(_spec)
