"""What the DAG files share: default args, tags and the Assets that link the stages.

Light on purpose: DAG files import this at parse time.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airloop.spec import ModelSpec

STAGES = ("ingest", "features", "train", "rollback", "package", "monitor")


def default_args(spec: "ModelSpec") -> dict:
    return {
        "owner": spec.owner,
        "retries": 2,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=10),
    }


def dag_tags(spec: "ModelSpec", stage: str) -> list[str]:
    return sorted({"airloop", f"model:{spec.name}", f"stage:{stage}", *spec.tags})


def asset_uri(spec: "ModelSpec", what: str) -> str:
    """URI of the Asset a stage emits, e.g. ``airloop://late_delivery/validated``."""
    return f"airloop://{spec.name}/{what}"


def asset_name(spec: "ModelSpec", what: str) -> str:
    return f"{spec.name}__{what}"


def dag_kwargs(spec: "ModelSpec", stage: str, *, description: str, schedule, doc_md: str, **extra) -> dict:
    """The ``@dag`` arguments every Airloop lifecycle DAG shares, plus the stage's own."""
    from datetime import datetime

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
