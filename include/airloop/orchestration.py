"""What the DAG files share, so that they only wire tasks.

Default args, tags and the Assets that link the stages; each DAG's Params; the reading of
Params and run facts inside tasks (days, windows, the recorded reason); and the failure
callbacks. Light on purpose: DAG files import this at parse time, so nothing here imports a
heavy library (mlflow, feast, bentoml, evidently, great_expectations, dvc, sklearn, pandas) at
module level; callbacks import what they need when they run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import Param
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

if TYPE_CHECKING:
    from airloop.notifiers import AlertLogNotifier
    from airloop.spec import ModelSpec

STAGES = ("ingest", "features", "train", "promote", "rollback", "package", "monitor")

log = logging.getLogger(__name__)


def dag_specs() -> list["ModelSpec"]:
    """The specs the DAG files build DAGs for: every one that loads.

    A broken spec file is logged as an error by every DAG file that parses it (the Models view
    shows it too) and gets no DAGs, but it does not take the other models' DAGs down with it.
    """
    from airloop.spec import load_valid_specs

    specs, errors = load_valid_specs()
    for error in errors:
        log.error("no DAGs for this spec: %s", error)
    return specs


def ingest_parallelism() -> int:
    """How many batches one ingest run validates at once (``AIRLOOP_INGEST_PARALLELISM``)."""
    from airloop.settings import get_settings

    return get_settings().ingest_parallelism


def default_args(spec: "ModelSpec") -> dict:
    """Task defaults of every Airloop DAG: the spec's owner, retries with exponential backoff."""
    return {
        "owner": spec.owner,
        "retries": 2,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=10),
    }


def dag_tags(spec: "ModelSpec", stage: str) -> list[str]:
    """``airloop``, ``model:<name>``, ``stage:<stage>`` and the spec's own tags, sorted."""
    return sorted({"airloop", f"model:{spec.name}", f"stage:{stage}", *spec.tags})


def asset_uri(spec: "ModelSpec", what: str) -> str:
    """URI of the Asset a stage emits, e.g. ``airloop://my_model/validated``."""
    return f"airloop://{spec.name}/{what}"


def asset_name(spec: "ModelSpec", what: str) -> str:
    """Name of the Asset a stage emits, e.g. ``my_model__validated``."""
    return f"{spec.name}__{what}"


def dag_kwargs(
    spec: "ModelSpec", stage: str, *, description: str, schedule: Any, doc_md: str, **extra: Any
) -> dict:
    """The ``@dag`` arguments every Airloop lifecycle DAG shares, plus the stage's own."""
    return {
        "dag_id": spec.dag_id(stage),
        "description": description,
        "schedule": schedule,
        "start_date": datetime(2026, 1, 1),
        "catchup": False,
        "max_active_runs": 1,
        "default_args": default_args(spec),
        "tags": dag_tags(spec, stage),
        "doc_md": doc_md,
        **extra,
    }


# --- Params: what a manual trigger may ask for (the trigger form in the UI) --------------------


def ingest_params() -> dict[str, Param]:
    """Params of ``<model>__ingest``: optionally one batch day instead of every pending batch."""
    return {
        "batch_date": Param(
            None,
            type=["null", "string"],
            format="date",
            title="Batch date",
            description="Ingest only the batch of this day. Empty: every pending batch.",
        ),
    }


def train_params() -> dict[str, Param]:
    """Params of ``<model>__train``: the reason (lineage), the drift report behind it and an
    optional data window. The monitoring DAG fills ``reason`` and ``drift_report_id``."""
    return {
        "reason": Param("manual", type="string", title="Reason", description="Why train now (kept as lineage)."),
        "drift_report_id": Param(None, type=["null", "string"], title="Drift report id"),
        "start": Param(None, type=["null", "string"], format="date", title="Data from (day)"),
        "end": Param(None, type=["null", "string"], format="date", title="Data until (day)"),
    }


def rollback_params() -> dict[str, Param]:
    """Params of ``<model>__rollback``: the version to restore (empty: the previous champion)."""
    return {
        "to_version": Param(
            None, type=["null", "string"], title="Version", description="Empty: the previous champion."
        ),
        "reason": Param("manual rollback", type="string", title="Reason"),
    }


def promote_params() -> dict[str, Param]:
    """Params of ``<model>__promote``: the version to make ``@champion``, why, and whether the
    gate's verdict may be overridden (recorded with the triggering user)."""
    return {
        "version": Param(type="string", minLength=1, title="Version", description="The registered version to promote."),
        "reason": Param("manual promotion", type="string", minLength=1, title="Reason",
                        description="Kept in the promotion history with your user name."),
        "override_gate": Param(
            False, type="boolean", title="Override the gate",
            description="Promote even if the version misses a floor or does not beat @champion.",
        ),
    }


def monitor_params(spec: "ModelSpec") -> dict[str, Param]:
    """Params of ``<model>__monitor``: where the checked window ends and how long it is."""
    return {
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
    }


# --- Reading Params and run facts in tasks ------------------------------------------------------


def parse_day(value: str | None) -> date | None:
    """A ``format="date"`` Param value as a date; empty (None or "") means no bound."""
    return date.fromisoformat(value) if value else None


def window_length(minutes: float | None) -> timedelta | None:
    """The ``window_minutes`` Param as a timedelta; empty means the spec's default window."""
    return timedelta(minutes=minutes) if minutes else None


def run_reason(run_type: str, reason: str) -> str:
    """The reason recorded with a training run.

    A scheduled run carries the Param default ``"manual"``, which would be a lie in the
    lineage: it becomes ``"schedule"``. Any other reason (a person's, or the monitoring DAG's
    ``"drift: ..."``) is kept as given.
    """
    if run_type == "scheduled" and reason == "manual":
        return "schedule"
    return reason


def run_user(context: Mapping[str, Any]) -> str | None:
    """Who triggered the running DAG run (Airflow's ``triggering_user_name``; None for the scheduler)."""
    return getattr(context["dag_run"], "triggering_user_name", None)


# --- Task outcomes: how a stage's result maps onto Airflow task states ---------------------------


def promote_requested(spec: "ModelSpec", context: Mapping[str, Any]) -> dict:
    """The promote DAG's task: :func:`airloop.promotion.promote` with the run's Params and user.

    A refusal (the gate, an unknown version, already ``@champion``) fails the task at once, without
    retries: asking again changes nothing. Registry faults raise as they are, and retry.
    """
    from airloop.errors import PromotionError
    from airloop.promotion import promote

    params = context["params"]
    try:
        return promote(spec, params["version"], actor=context["dag_run"].run_id, user=run_user(context),
                       reason=params["reason"], override_gate=params["override_gate"])
    except PromotionError as exc:
        raise AirflowFailException(str(exc)) from exc


def rollback_requested(spec: "ModelSpec", context: Mapping[str, Any]) -> str:
    """The rollback DAG's task: :func:`airloop.promotion.rollback` with the run's Params and user.

    Nothing to roll back to, or an unknown version, fails the task at once, without retries.
    """
    from airloop.errors import PromotionError
    from airloop.promotion import rollback

    params = context["params"]
    try:
        return rollback(spec, params.get("to_version"), actor=context["dag_run"].run_id, user=run_user(context),
                        reason=params["reason"])
    except PromotionError as exc:
        raise AirflowFailException(str(exc)) from exc



def publish_batch(spec: "ModelSpec", batch_path: str) -> dict:
    """Validate, version and publish one landed batch (the ingest DAG's mapped task).

    Returns the published batch's record (``IngestResult.as_dict()``). A rejected batch fails
    the task at once, without retries: bad data does not get better by retrying (transient
    errors still raise as they are, and retry). A batch that is already versioned skips, except
    on a retry: the earlier attempt may have versioned it and then failed to report success (the
    metadata database down), and the batch must still be announced.
    """
    from pathlib import Path

    from airloop.ingest import BatchRejected, ingest_batch

    try:
        result = ingest_batch(spec, Path(batch_path))
    except BatchRejected as exc:
        raise AirflowFailException(str(exc)) from exc
    if result.already_ingested and _first_attempt():
        raise AirflowSkipException(f"{result.batch} is already versioned as {result.md5}")
    print(f"Validation record in the Airflow UI: {result.validation_page}")
    return result.as_dict()


def check_feast_definitions(spec: "ModelSpec") -> None:
    """Fail the task, without retries, when the spec and its Feast declarations disagree.

    The first thing a model's ``__features`` and ``__train`` runs do: the check needs Feast
    (DAG parsing must not import it), and a task process has it loaded anyway. The message
    names every disagreement (:mod:`airloop.features.consistency`); retrying cannot fix it.
    """
    from airloop.features.consistency import check_definitions
    from airloop.spec import SpecError

    try:
        check_definitions(spec)
    except SpecError as exc:
        raise AirflowFailException(str(exc)) from exc


def _first_attempt() -> bool:
    """Whether the running task is on its first try (True outside a task)."""
    from airflow.sdk import get_current_context

    try:
        return get_current_context()["ti"].try_number <= 1
    except RuntimeError:  # not inside a running task
        return True


# --- From the monitoring DAG to a retrain ------------------------------------------------------

RETRAIN_POLICY_TASK = "apply_retrain_policy"


def retrain_conf(policy_task_id: str = RETRAIN_POLICY_TASK) -> dict[str, str]:
    """The conf a drift-triggered training run gets (Jinja, rendered at trigger time): the
    policy's reason prefixed with ``drift:`` and the id of the drift report behind it."""
    pull = f"ti.xcom_pull(task_ids='{policy_task_id}')"
    return {
        "reason": "drift: {{ " + pull + "['reason'] }}",
        "drift_report_id": "{{ " + pull + "['report_id'] }}",
    }


def failure_alert(spec: "ModelSpec", what: str) -> "AlertLogNotifier":
    """An ``on_failure_callback`` that records the failure as an alert titled ``<model>: <what>``."""
    from airloop.notifiers import AlertLogNotifier

    return AlertLogNotifier(title=f"{spec.name}: {what}")


def release_trigger_callback(
    spec: "ModelSpec", policy_task_id: str = RETRAIN_POLICY_TASK
) -> Callable[[Mapping[str, Any]], None]:
    """An ``on_failure_callback`` for the task that triggers training.

    The retrain policy records a trigger before the training run is started; if starting it
    fails, the recorded trigger is forgotten so the next drift check may trigger again.
    """

    def release_trigger(context: Mapping[str, Any]) -> None:
        """The retrain did not start: forget the recorded trigger so the next check may retry."""
        from airloop.monitoring import forget_trigger

        decision = context["ti"].xcom_pull(task_ids=policy_task_id)
        if decision and forget_trigger(spec, decision["report_id"]):
            print(f"training was not triggered; trigger of {decision['report_id']} forgotten")

    return release_trigger


def retrain_failure_callbacks(spec: "ModelSpec") -> list:
    """What runs when the training run could not be triggered: an alert, then the release."""
    return [failure_alert(spec, "retrain not triggered"), release_trigger_callback(spec)]
