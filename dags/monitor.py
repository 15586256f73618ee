"""Monitoring DAGs: one per model spec, on the spec's drift schedule and on demand.

Checks the latest window of the prediction log against the champion's reference data with
Evidently (data drift per feature, prediction drift, and model quality once labels have come
back), keeps the HTML and JSON reports, logs the key numbers to MLflow, and applies the spec's
retrain policy: drift must hold for N consecutive windows, at most one retrain per cooldown,
none while a training run is queued or running. On real drift it triggers the training DAG
with the reason and the report id.
"""

from __future__ import annotations

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import dag, get_current_context, task

from airloop.orchestration import (
    RETRAIN_POLICY_TASK, dag_kwargs, dag_specs, monitor_params, retrain_conf, retrain_failure_callbacks,
    window_length,
)
from airloop.spec import ModelSpec


def build_monitor_dag(spec: ModelSpec):
    train_dag_id = spec.dag_id("train")

    @dag(
        **dag_kwargs(
            spec,
            "monitor",
            description=f"Drift checks and the retrain policy for {spec.name}",
            schedule=spec.drift.schedule,
            doc_md=__doc__,
        ),
        params=monitor_params(spec),
    )
    def monitor():
        @task
        def check_drift() -> dict:
            from airloop.monitoring import check_drift

            params = get_current_context()["params"]
            window = window_length(params.get("window_minutes"))
            check = check_drift(spec, now=params.get("window_end"), window=window)
            print(f"{check.status}: {check.message}")
            print(f"Drift report: {check.html_path or '(none: nothing to compare)'}")
            return check.as_dict()

        @task
        def apply_retrain_policy(check: dict) -> dict:
            from airloop.monitoring import DriftCheck, decide_and_record

            ti = get_current_context()["ti"]
            active = ti.get_dr_count(dag_id=train_dag_id, states=["queued", "running"]) > 0
            decision = decide_and_record(spec, DriftCheck.from_dict(check), training_active=active)
            print(f"{'RETRAIN' if decision.trigger else 'no retrain'}: {decision.reason}")
            return {"trigger": decision.trigger, "reason": decision.reason, "report_id": check["report_id"]}

        @task.short_circuit
        def drift_is_real(decision: dict) -> bool:
            return decision["trigger"]

        decision = apply_retrain_policy(check_drift())
        retrain = TriggerDagRunOperator(
            task_id="trigger_training",
            trigger_dag_id=train_dag_id,
            conf=retrain_conf(RETRAIN_POLICY_TASK),
            retries=0,  # the policy already recorded this trigger; never start a second run
            on_failure_callback=retrain_failure_callbacks(spec),
        )
        drift_is_real(decision) >> retrain

    return monitor()


for _spec in dag_specs():
    globals()[_spec.dag_id("monitor")] = build_monitor_dag(_spec)
