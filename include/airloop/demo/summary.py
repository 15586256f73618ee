"""What the demo tells: its progress lines, the ids read back from the stores, the summary."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from airloop.settings import get_settings

if TYPE_CHECKING:
    from airloop.spec import ModelSpec
    from airloop.testing import AirflowStack


def say(text: str) -> None:
    """Print one line of the demo's progress at once (the demo often runs with its output piped)."""
    print(text, flush=True)


def collect_facts(spec: "ModelSpec") -> dict:
    """Ids read back from the stores themselves: DVC, quarantine, MLflow registry."""
    from airloop import ingest, registry

    s = get_settings()
    rev, batches = ingest.committed_batches(spec.events, s)
    facts: dict = {
        "dvc_head": rev,
        "validated_batches": [{"batch": b.batch, "rows": b.rows, "md5": b.md5, "rev": b.rev,
                               "validation_result_id": b.validation_result_id} for b in batches],
        "quarantined": sorted(p.name for name in spec.dataset_names for p in (s.quarantine_dir / name).glob("*.csv")),
    }
    try:
        client = registry.client(s)
        versions = client.search_model_versions(f"name='{spec.registered_model_name}'")
        champion = registry.champion_version(spec, s)
        facts["model_versions"] = [
            {"version": str(v.version), "run_id": v.run_id, "gate": v.tags.get("airloop.gate"),
             "trigger_reason": v.tags.get("airloop.trigger_reason"),
             "drift_report_id": v.tags.get("airloop.drift_report_id"),
             "bento_tag": v.tags.get("airloop.bento_tag"),
             "alias": "champion" if str(v.version) == champion else None}
            for v in sorted(versions, key=lambda v: int(v.version))
        ]
        facts["promotion_history"] = registry.history(spec, s)
    except Exception as exc:  # noqa: BLE001 - the summary says what could not be read
        facts["mlflow_error"] = str(exc)
    return facts


def asset_event_facts(stack: "AirflowStack") -> dict:
    """Every asset event the Airflow ``stack`` recorded (each names its source DAG run and the
    runs it created), read back before the stack stops: what tells whether two models' loops mixed."""
    keep = ("name", "uri", "source_dag_id", "source_run_id", "timestamp")
    try:
        events = stack.api("GET", "/assets/events", params={"limit": 1000, "order_by": "timestamp"})
    except Exception as exc:  # noqa: BLE001 - the summary says what could not be read
        return {"asset_events_error": f"{exc.__class__.__name__}: {exc}"}
    return {"asset_events": [
        {**{k: e.get(k) for k in keep}, "created_dagruns": [r.get("dag_id") for r in e.get("created_dagruns", [])]}
        for e in events["asset_events"]
    ]}


def print_summary(summary: dict, path: Path) -> None:
    """Print one model's summary (its steps and the facts read back); ``path`` is where it was written."""
    steps, facts = summary["steps"], summary.get("facts", {})
    say("\n=== Airloop demo summary ===")
    batches = facts.get("validated_batches", [])
    say(f"ingest: {len(batches)} batches validated and versioned with DVC; "
        f"{len(facts.get('quarantined', []))} rejected and quarantined {facts.get('quarantined', [])}")
    for b in batches:
        say(f"  {b['batch']}  {b['rows']:>5} rows  md5 {b['md5']}  rev {b['rev'][:10]}  {b['validation_result_id']}")
    for v in facts.get("model_versions", []):
        say(f"model v{v['version']}: run {v['run_id']}  gate {v['gate']}  reason {v['trigger_reason']!r}"
            f"{'  drift report ' + v['drift_report_id'] if v.get('drift_report_id') else ''}"
            f"  bento {v['bento_tag']}{'  @champion' if v['alias'] else ''}")
    for c in steps.get("drift_checks", []):
        say(f"drift check {c['report_id']}: {c['status']}, drifted share {c['drifted_share']}, "
            f"retrain: {c['trigger']} ({c['reason']})")
    if "final_predict" in steps:
        say(f"/predict answers with model v{steps['final_predict']['model_version']}")
    if "error" in summary:
        say(f"FAILED: {summary['error']}")
    say(f"wall time: {summary['wall_seconds']} s; summary written to {path}")
