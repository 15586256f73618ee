"""Airflow notifiers for Airloop DAGs.

The default alert sink is an append-only JSON-lines file under ``$AIRLOOP_HOME/alerts`` that
tests and the demo can read. Swap in any provider notifier (Slack, SMTP, ...) in the DAG files
the same way: they share the ``BaseNotifier`` interface.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone

from airflow.sdk import BaseNotifier

from airloop.settings import get_settings

log = logging.getLogger(__name__)


def alerts_file():
    return get_settings().home / "alerts" / "alerts.jsonl"


def read_alerts() -> list[dict]:
    path = alerts_file()
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class AlertLogNotifier(BaseNotifier):
    """Record a failed task as an alert with the exception text (e.g. a rejected batch)."""

    template_fields = ("title",)

    def __init__(self, title: str):
        super().__init__()
        self.title = title

    def notify(self, context) -> None:
        ti = context.get("ti") or context.get("task_instance")
        exc = context.get("exception")
        alert = {
            "at": datetime.now(timezone.utc).isoformat(),
            "title": self.title,
            "dag_id": getattr(ti, "dag_id", None),
            "task_id": getattr(ti, "task_id", None),
            "run_id": getattr(ti, "run_id", None),
            "map_index": getattr(ti, "map_index", None),
            "message": str(exc) if exc else None,
        }
        path = alerts_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as fh:
            fh.write(json.dumps(alert) + "\n")
        log.error("ALERT %s: %s", self.title, alert["message"])
