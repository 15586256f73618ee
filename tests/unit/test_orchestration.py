"""The helpers DAG files wire with (airloop.orchestration): no Airflow DB, no DAG parsing."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from types import SimpleNamespace

import jinja2
import pytest
from airflow.sdk.api.datamodels._generated import DagRunType
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException, ParamValidationError

from airloop import orchestration as orch


def _form(params: dict) -> dict:
    """Param name -> (default, JSON schema, description): what the UI's trigger form shows."""
    return {name: (p.value, p.schema, p.description) for name, p in params.items()}


# --- Params --------------------------------------------------------------------------------------

NULL_STR = ["null", "string"]


def test_ingest_params():
    assert _form(orch.ingest_params()) == {
        "batch_date": (
            None,
            {"type": NULL_STR, "format": "date", "title": "Batch date"},
            "Ingest only the batch of this day. Empty: every pending batch.",
        ),
    }


def test_train_params():
    params = orch.train_params()
    assert list(params) == ["reason", "drift_report_id", "start", "end"]  # the form's order
    assert _form(params) == {
        "reason": ("manual", {"type": "string", "title": "Reason"}, "Why train now (kept as lineage)."),
        "drift_report_id": (None, {"type": NULL_STR, "title": "Drift report id"}, None),
        "start": (None, {"type": NULL_STR, "format": "date", "title": "Data from (day)"}, None),
        "end": (None, {"type": NULL_STR, "format": "date", "title": "Data until (day)"}, None),
    }


def test_rollback_params():
    params = orch.rollback_params()
    assert list(params) == ["to_version", "reason"]
    assert _form(params) == {
        "to_version": (None, {"type": NULL_STR, "title": "Version"}, "Empty: the previous champion."),
        "reason": ("manual rollback", {"type": "string", "title": "Reason"}, None),
    }


def test_monitor_params_name_the_specs_window(demo_spec):
    spec = demo_spec.model_copy(update={"drift": demo_spec.drift.model_copy(update={"window_hours": 6})})
    params = orch.monitor_params(spec)
    assert list(params) == ["window_end", "window_minutes"]
    assert _form(params) == {
        "window_end": (
            None,
            {"type": NULL_STR, "format": "date-time", "title": "Window end"},
            "The window ends here. Empty: now.",
        ),
        "window_minutes": (
            None,
            {"type": ["null", "number"], "exclusiveMinimum": 0, "title": "Window length (minutes)"},
            "Empty: the spec's 6 h.",
        ),
    }


@pytest.mark.parametrize("name", ["start", "end"])
def test_train_day_params_take_only_dates(name):
    param = orch.train_params()[name]
    assert param.resolve("2026-02-01") == "2026-02-01"
    assert param.resolve(None) is None
    for bad in ("2026-02-30", "yesterday", "2026-02-01T00:00:00"):
        with pytest.raises(ParamValidationError):
            param.resolve(bad)


def test_ingest_batch_date_takes_only_dates():
    param = orch.ingest_params()["batch_date"]
    assert param.resolve("2026-10-02") == "2026-10-02"
    with pytest.raises(ParamValidationError):
        param.resolve("02/10/2026")


def test_monitor_window_minutes_must_be_positive(demo_spec):
    param = orch.monitor_params(demo_spec)["window_minutes"]
    assert param.resolve(90) == 90
    assert param.resolve(None) is None
    for bad in (0, -5, "90"):
        with pytest.raises(ParamValidationError):
            param.resolve(bad)


def test_params_are_fresh_objects_per_call():
    """Each DAG gets its own Param objects: resolving one DAG's Params cannot leak into another."""
    assert orch.train_params()["reason"] is not orch.train_params()["reason"]


# --- Reading Params and run facts ---------------------------------------------------------------


def test_parse_day():
    assert orch.parse_day("2026-10-02") == dt.date(2026, 10, 2)
    assert orch.parse_day(None) is None
    assert orch.parse_day("") is None
    with pytest.raises(ValueError):
        orch.parse_day("2026-13-01")


def test_window_length():
    assert orch.window_length(90) == dt.timedelta(minutes=90)
    assert orch.window_length(1.5) == dt.timedelta(seconds=90)
    assert orch.window_length(None) is None  # the spec's default window


@pytest.mark.parametrize(
    ("run_type", "reason", "recorded"),
    [
        ("scheduled", "manual", "schedule"),  # the Param default on a scheduled run
        (DagRunType.SCHEDULED, "manual", "schedule"),  # what the task context carries
        ("scheduled", "drift: feature x", "drift: feature x"),
        ("manual", "manual", "manual"),
        (DagRunType.MANUAL, "new labels", "new labels"),
        ("asset_triggered", "manual", "manual"),
    ],
)
def test_run_reason(run_type, reason, recorded):
    assert orch.run_reason(run_type, reason) == recorded


# --- Task outcomes ------------------------------------------------------------------------------


def _result(**overrides):
    record = {"batch": "orders_2026-10-02.csv", "md5": "0" * 32}
    fields = {"validation_page": "/airloop/validation/orders/r1", "already_ingested": False, **overrides}
    return SimpleNamespace(batch=record["batch"], md5=record["md5"], as_dict=lambda: record, **fields)


def test_publish_batch_returns_the_record(monkeypatch, demo_spec, capsys):
    seen = []
    monkeypatch.setattr("airloop.ingest.ingest_batch", lambda spec, path: seen.append((spec, path)) or _result())
    assert orch.publish_batch(demo_spec, "/landing/orders_2026-10-02.csv") == {
        "batch": "orders_2026-10-02.csv", "md5": "0" * 32,
    }
    assert seen == [(demo_spec, Path("/landing/orders_2026-10-02.csv"))]
    assert "Validation record in the Airflow UI: /airloop/validation/orders/r1" in capsys.readouterr().out


def test_publish_batch_fails_a_rejected_batch_without_retry(monkeypatch, demo_spec):
    from airloop.ingest import BatchRejected

    summary = "zone: expect_column_values_to_be_in_set"
    rejected = BatchRejected(SimpleNamespace(summary=lambda: summary), Path("quarantine/x.csv"))

    def reject(spec, path):
        raise rejected

    monkeypatch.setattr("airloop.ingest.ingest_batch", reject)
    with pytest.raises(AirflowFailException, match=summary) as info:
        orch.publish_batch(demo_spec, "/landing/x.csv")
    assert info.value.__cause__ is rejected


def test_publish_batch_lets_other_errors_retry(monkeypatch, demo_spec):
    def broken(spec, path):
        raise OSError("disk full")

    monkeypatch.setattr("airloop.ingest.ingest_batch", broken)
    with pytest.raises(OSError, match="disk full"):  # not AirflowFailException: retries apply
        orch.publish_batch(demo_spec, "/landing/x.csv")


def test_publish_batch_skips_a_batch_already_versioned(monkeypatch, demo_spec):
    monkeypatch.setattr("airloop.ingest.ingest_batch", lambda spec, path: _result(already_ingested=True))
    with pytest.raises(AirflowSkipException, match=f"orders_2026-10-02.csv is already versioned as {'0' * 32}"):
        orch.publish_batch(demo_spec, "/landing/orders_2026-10-02.csv")


# --- From the monitoring DAG to a retrain -------------------------------------------------------


class _TI:
    """A task instance whose XCom holds the retrain policy's decision."""

    def __init__(self, decision: dict | None, dag_id: str = "late_delivery__monitor"):
        self.decision, self.dag_id, self.task_id, self.run_id, self.map_index = (
            decision, dag_id, "trigger_training", "manual__1", -1,
        )

    def xcom_pull(self, task_ids):
        return self.decision if task_ids == orch.RETRAIN_POLICY_TASK else None


def test_retrain_conf_renders_reason_and_report_id():
    ti = _TI({"trigger": True, "reason": "3 windows drifted", "report_id": "rep-42"})
    rendered = {k: jinja2.Template(v).render(ti=ti) for k, v in orch.retrain_conf().items()}
    assert rendered == {"reason": "drift: 3 windows drifted", "drift_report_id": "rep-42"}


def test_retrain_conf_names_the_given_task():
    conf = orch.retrain_conf("other_policy")
    assert all("task_ids='other_policy'" in v for v in conf.values())


def test_failure_alert_records_an_alert(settings, demo_spec):
    from airloop.notifiers import AlertLogNotifier, read_alerts

    notifier = orch.failure_alert(demo_spec, "batch rejected")
    assert isinstance(notifier, AlertLogNotifier)
    notifier.notify({"ti": _TI(None), "exception": ValueError("zone: bad")})
    [alert] = read_alerts()
    assert alert["title"] == "late_delivery: batch rejected"
    assert alert["message"] == "zone: bad"


@pytest.mark.parametrize("forgotten", [True, False])
def test_release_trigger_forgets_the_recorded_trigger(monkeypatch, demo_spec, capsys, forgotten):
    calls = []
    monkeypatch.setattr("airloop.monitoring.forget_trigger", lambda spec, rid: calls.append((spec, rid)) or forgotten)
    callback = orch.release_trigger_callback(demo_spec)
    callback({"ti": _TI({"trigger": True, "reason": "drift", "report_id": "rep-42"})})
    assert calls == [(demo_spec, "rep-42")]
    assert ("trigger of rep-42 forgotten" in capsys.readouterr().out) is forgotten


def test_release_trigger_without_a_decision_does_nothing(monkeypatch, demo_spec):
    calls = []
    monkeypatch.setattr("airloop.monitoring.forget_trigger", lambda spec, rid: calls.append(rid) or True)
    orch.release_trigger_callback(demo_spec)({"ti": _TI(None)})
    assert calls == []


def test_retrain_failure_callbacks_alert_then_release(monkeypatch, settings, demo_spec):
    from airloop.notifiers import AlertLogNotifier, read_alerts

    calls = []
    monkeypatch.setattr("airloop.monitoring.forget_trigger", lambda spec, rid: calls.append(rid) or True)
    alert, release = orch.retrain_failure_callbacks(demo_spec)
    assert isinstance(alert, AlertLogNotifier) and alert.title == "late_delivery: retrain not triggered"
    context = {"ti": _TI({"trigger": True, "reason": "drift", "report_id": "rep-7"}), "exception": None}
    alert.notify(context)
    release(context)
    assert [a["title"] for a in read_alerts()] == ["late_delivery: retrain not triggered"]
    assert calls == ["rep-7"]


def test_alerts_of_several_dags_are_read_apart_and_a_line_being_written_waits(settings):
    from airloop.notifiers import AlertLogNotifier, alerts_file, read_alerts

    for dag_id in ("late_delivery__ingest", "trip_duration__ingest", "late_delivery__ingest"):
        AlertLogNotifier("batch rejected").notify({"ti": _TI(None, dag_id=dag_id), "exception": ValueError("x" * 20000)})
    assert [a["dag_id"] for a in read_alerts(dag_id="trip_duration__ingest")] == ["trip_duration__ingest"]
    assert len(read_alerts(dag_id="late_delivery__ingest")) == 2 and len(read_alerts()) == 3
    # Another task's alert half written (no newline yet) is left for the next read.
    with alerts_file().open("a") as fh:
        fh.write('{"dag_id": "trip_duration__ingest", "mess')
    assert len(read_alerts()) == 3


def test_feature_registry_writes_take_turns_on_a_file_registry(settings, tmp_path):
    import multiprocessing
    import time

    lock = Path(settings.feast_registry + ".lock")
    from airloop.features import registry_writes

    with registry_writes():
        assert lock.exists()
        # Another process cannot take the same lock while this one holds it.
        ctx = multiprocessing.get_context("fork")
        done = ctx.Event()
        child = ctx.Process(target=_take_lock, args=(lock, done))
        child.start()
        time.sleep(0.5)
        assert not done.is_set()
    child.join(10)
    assert done.is_set() and child.exitcode == 0


def _take_lock(lock, done) -> None:
    from airloop.fileio import exclusive

    with exclusive(lock):
        done.set()
