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
from airflow.sdk import Param, dag, get_current_context, task

from airloop.notifiers import AlertLogNotifier
from airloop.orchestration import dag_kwargs
from airloop.spec import ModelSpec, load_specs


def build_monitor_dag(spec: ModelSpec):
    train_dag_id = spec.dag_id("train")

    def release_trigger(context) -> None:
        """The retrain did not start: forget the recorded trigger so the next check may retry."""
        from airloop.monitor import forget_trigger

        decision = context["ti"].xcom_pull(task_ids="apply_retrain_policy")
        if decision and forget_trigger(spec, decision["report_id"]):
            print(f"training was not triggered; trigger of {decision['report_id']} forgotten")

    @dag(
        **dag_kwargs(
            spec,
            "monitor",
            description=f"Drift checks and the retrain policy for {spec.name}",
            schedule=spec.drift.schedule,
            doc_md=__doc__,
        ),
        params={
            "window_end": Param(
                None,
                type=["null", "string"],
                format="date-time",
                title="Window end",
                description="The window ends here. Empty: now.",
            ),
            "window_minutes": Param(
                None,
                type=["null", "number"],
                exclusiveMinimum=0,
                title="Window length (minutes)",
                description=f"Empty: the spec's {spec.drift.window_hours} h.",
            ),
        },
    )
    def monitor():
        @task
        def check_drift() -> dict:
            from datetime import timedelta

            from airloop.monitor import check_drift

            params = get_current_context()["params"]
            minutes = params.get("window_minutes")
            check = check_drift(
                spec, now=params.get("window_end"), window=timedelta(minutes=minutes) if minutes else None
            )
            print(f"{check.status}: {check.message}")
            print(f"Drift report: {check.html_path or '(none: nothing to compare)'}")
            return check.as_dict()

        @task
        def apply_retrain_policy(check: dict) -> dict:
            from airloop.monitor import DriftCheck, decide_and_record

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
            conf={
                "reason": "drift: {{ ti.xcom_pull(task_ids='apply_retrain_policy')['reason'] }}",
                "drift_report_id": "{{ ti.xcom_pull(task_ids='apply_retrain_policy')['report_id'] }}",
            },
            retries=0,  # the policy already recorded this trigger; never start a second run
            on_failure_callback=[AlertLogNotifier(title=f"{spec.name}: retrain not triggered"), release_trigger],
        )
        drift_is_real(decision) >> retrain

    return monitor()


for _spec in load_specs():
    globals()[_spec.dag_id("monitor")] = build_monitor_dag(_spec)
