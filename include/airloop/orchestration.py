"""What the DAG files share: default args, tags and the Assets that link the stages.

Light on purpose: DAG files import this at parse time.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airloop.spec import ModelSpec

STAGES = ("ingest", "features", "train", "package", "monitor")


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
