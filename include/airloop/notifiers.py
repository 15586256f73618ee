"""Airflow notifiers for Airloop DAGs.

The default alert sink is an append-only JSON-lines file under ``$AIRLOOP_HOME/alerts`` that
tests and the demo can read. Swap in any provider notifier (Slack, SMTP, ...) in the DAG files
the same way: they share the ``BaseNotifier`` interface.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime, timezone
from pathlib import Path

from airflow.sdk import BaseNotifier

from airloop.settings import get_settings

log = logging.getLogger(__name__)


def alerts_file() -> Path:
    """The JSON-lines file alerts are appended to, under ``AIRLOOP_HOME``."""
    return get_settings().home / "alerts" / "alerts.jsonl"


def read_alerts(dag_id: str | None = None) -> list[dict]:
    """Every recorded alert (of ``dag_id``'s tasks only, if given), oldest first.

    Tasks of several DAGs append to the file while it is read: a last line without its newline
    is an alert still being written, and is left for the next read.
    """
    path = alerts_file()
    if not path.exists():
        return []
    complete = path.read_text().rpartition("\n")[0]
    alerts = [json.loads(line) for line in complete.splitlines() if line.strip()]
    return [a for a in alerts if dag_id is None or a.get("dag_id") == dag_id]


def append_line(path: Path, line: str) -> None:
    """Append one line with a single ``write`` on an ``O_APPEND`` descriptor.

    Task processes of several DAGs (several models) alert at once: a buffered text-mode append
    may split a long line into several writes, which interleave with another process's line.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (line + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = os.write(fd, data)
    finally:
        os.close(fd)
    if written != len(data):  # a local file takes it whole; a full disk does not
        raise OSError(f"alert line cut short in {path}: {written} of {len(data)} bytes")


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
        append_line(alerts_file(), json.dumps(alert))
        log.error("ALERT %s: %s", self.title, alert["message"])
