"""A user's session with Airflow's REST API v2: a JWT from ``/auth/token``, then ``/api/v2``.

What the stack tests, the demo harness and the compose rehearsals all do over HTTP (list every
run, trigger, wait, read task instances and Asset events), in one place.
"""

from __future__ import annotations

import datetime as dt
import time

__all__ = ["AirflowREST"]


class AirflowREST:
    """Airflow's REST API v2 as ``username`` (Airflow's simple auth manager issues the token)."""

    # Rows per list request; lists are read page by page to the end.
    PAGE = 100

    def __init__(self, url: str, username: str, password: str):
        self.url = url.rstrip("/")
        self.username = username
        self.password = password
        self._token: str | None = None

    def token(self) -> str:
        """The JWT, fetched once per session."""
        import requests

        if self._token is None:
            resp = requests.post(
                f"{self.url}/auth/token", json={"username": self.username, "password": self.password}, timeout=30
            )
            resp.raise_for_status()
            self._token = resp.json()["access_token"]
        return self._token

    def api(self, method: str, path: str, **kwargs):
        """One request to ``/api/v2{path}``; an HTTP error raises ``requests.HTTPError``."""
        import requests

        resp = requests.request(
            method, f"{self.url}/api/v2{path}", headers={"Authorization": f"Bearer {self.token()}"},
            timeout=30, **kwargs,
        )
        resp.raise_for_status()
        return resp.json() if resp.content else None

    __call__ = api

    def _every_page(self, key: str, page_at) -> list[dict]:
        """Every row of a list endpoint; ``page_at(offset)`` answers the page starting there."""
        rows: list[dict] = []
        while True:
            page = page_at(len(rows))
            rows += page[key]
            if not page[key] or len(rows) >= page["total_entries"]:
                return rows

    # -- DAGs ------------------------------------------------------------------------------
    def wait_for_dag(self, dag_id: str, timeout: float = 120) -> dict:
        """The DAG once the dag-processor has parsed it."""
        import requests

        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.api("GET", f"/dags/{dag_id}")
            except requests.HTTPError as exc:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"DAG {dag_id} not parsed after {timeout}s") from exc
                time.sleep(1)

    def unpause(self, dag_id: str) -> None:
        self.wait_for_dag(dag_id)
        self.api("PATCH", f"/dags/{dag_id}", json={"is_paused": False})

    def pause(self, dag_id: str) -> None:
        """Pause a DAG: runs triggered from now on stay queued until it is unpaused."""
        self.api("PATCH", f"/dags/{dag_id}", json={"is_paused": True})

    def run_due(self, dag_id: str) -> bool:
        """Whether the DAG's schedule has a run due now (the scheduler creates it once unpaused)."""
        after = self.wait_for_dag(dag_id).get("next_dagrun_run_after")
        return after is not None and dt.datetime.fromisoformat(after) <= dt.datetime.now(dt.timezone.utc)

    # -- runs ------------------------------------------------------------------------------
    def trigger(self, dag_id: str, conf: dict | None = None) -> str:
        """A manual run now; its run id."""
        run = self.api("POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf or {}})
        return run["dag_run_id"]

    def runs_of(self, dag_ids: list[str]) -> list[dict]:
        """Every run of several DAGs, oldest first (each with its ``dag_id``)."""
        return self._every_page("dag_runs", lambda offset: self.api("POST", "/dags/~/dagRuns/list", json={
            "dag_ids": list(dag_ids), "order_by": "run_after", "page_offset": offset, "page_limit": self.PAGE}))

    def runs(self, dag_id: str) -> list[dict]:
        """Every run of ``dag_id``, oldest first (one page holds 50 by default: all are read)."""
        return self.runs_of([dag_id])

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 300, *, sleep=time.sleep) -> dict:
        """Poll until the run ends; ``sleep`` waits between polls (a caller's may raise to give up)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}")
            if run["state"] in ("success", "failed"):
                return run
            sleep(1)
        raise TimeoutError(f"{dag_id}/{run_id} not finished after {timeout}s")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        return self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]

    # -- Assets ----------------------------------------------------------------------------
    def events(self, source_dag_id: str) -> list[dict]:
        """Every Asset event ``source_dag_id`` produced, oldest first."""
        return self._every_page("asset_events", lambda offset: self.api("GET", "/assets/events", params={
            "source_dag_id": source_dag_id, "order_by": "timestamp", "limit": self.PAGE, "offset": offset}))

    def queued_asset_events(self, dag_id: str) -> list[dict]:
        """Asset events waiting to start a run of ``dag_id`` (Airflow's asset-triggered queue)."""
        return self.api("GET", f"/dags/{dag_id}/assets/queuedEvents")["queued_events"]
