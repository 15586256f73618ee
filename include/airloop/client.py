"""Airloop from outside the browser: Airflow's REST API v2 and the Airloop plugin's JSON API over HTTP.

:class:`AirloopClient` is what the ``airloop`` command (:mod:`airloop.cli`) stands on. It reads
only what the api-server publishes, as any script would: the models' facts from the plugin
(``/airloop/models/api/...``), DAG runs from ``/api/v2``; and it acts only by triggering the
model's ``__promote`` and ``__rollback`` DAGs with their Params, so Airflow checks that the user
may trigger them and records who did. It logs in with ``/auth/token`` (user and password from
:func:`airloop.settings.api_config`) or uses a given JWT.

Every failure is a :class:`ClientError` with a one-line message and an exit code for the
command: the api-server unreachable, the login refused, the user not allowed, an unknown model
or version, any other refusal. Imports nothing but ``requests`` and the settings.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

from airloop.errors import ClientError, Forbidden, LoginRefused, NotFound, RunFailed, Unreachable
from airloop.settings import ApiConfig, ApiConfigError, api_config

__all__ = [
    "AirloopClient",
    "ClientError",
    "Forbidden",
    "LoginRefused",
    "NotFound",
    "RunFailed",
    "Unreachable",
]

MODELS_API = "/airloop/models/api/models"
# The DAGs whose last runs `airloop status` shows, in the order a model lives through them.
STATUS_STAGES = ("ingest", "features", "train", "promote", "rollback", "package", "monitor")


def _reason(exc: Exception) -> str:
    """A connection failure in a few words (requests' own message is a paragraph)."""
    import requests

    text = str(exc)
    if isinstance(exc, requests.Timeout):
        return "timed out"
    for known in ("Connection refused", "Name or service not known", "No route to host",
                  "Temporary failure in name resolution", "Connection reset by peer"):
        if known in text:
            return known.lower()
    return type(exc).__name__


def _detail(resp) -> str:
    """The error an API response carries (FastAPI's ``detail``), on one line."""
    try:
        detail = resp.json().get("detail", resp.text)
    except ValueError:
        detail = resp.text
    if isinstance(detail, list):  # request validation: one entry per field
        detail = "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail)
    return " ".join(str(detail).split())[:300] or resp.reason


class AirloopClient:
    """Airflow's REST API and the Airloop plugin at ``config.url``, as one logged-in user."""

    def __init__(self, config: ApiConfig | None = None, *, session=None):
        import requests

        try:
            self.config = config or api_config()
        except ApiConfigError as exc:
            raise ClientError(str(exc)) from None
        self.session = session or requests.Session()
        self._token = self.config.token or None

    # -- HTTP ----------------------------------------------------------------------------------
    def _send(self, method: str, path: str, **kwargs):
        import requests

        try:
            return self.session.request(method, f"{self.config.url}{path}",
                                        timeout=(min(10.0, self.config.timeout), self.config.timeout), **kwargs)
        except requests.RequestException as exc:
            raise Unreachable(f"cannot reach Airflow at {self.config.url}: {_reason(exc)}") from None

    def token(self) -> str:
        """The JWT: ``AIRLOOP_AIRFLOW_TOKEN``, else one from ``/auth/token`` for user and password."""
        if self._token:
            return self._token
        if not self.config.password:
            raise LoginRefused(
                "no credentials: set AIRLOOP_AIRFLOW_PASSWORD (for AIRLOOP_AIRFLOW_USER) or AIRLOOP_AIRFLOW_TOKEN"
            )
        resp = self._send("POST", "/auth/token", json={"username": self.config.user, "password": self.config.password})
        if resp.status_code in (400, 401, 403):
            raise LoginRefused(
                f"Airflow at {self.config.url} refused the login of {self.config.user!r} "
                f"(HTTP {resp.status_code}): check AIRLOOP_AIRFLOW_USER and AIRLOOP_AIRFLOW_PASSWORD"
            )
        if not resp.ok or "access_token" not in (resp.json() if resp.content else {}):
            raise ClientError(f"no token from {self.config.url}/auth/token (HTTP {resp.status_code}): {_detail(resp)}")
        self._token = resp.json()["access_token"]
        return self._token

    def request(self, method: str, path: str, *, not_found: str | None = None, **kwargs) -> Any:
        """One authenticated call; the JSON answer, or a :class:`ClientError` saying what went wrong.

        ``not_found``: the message for a 404 (default: the API's own).
        """
        headers = {"Authorization": f"Bearer {self.token()}", "Accept": "application/json"}
        resp = self._send(method, path, headers=headers, **kwargs)
        detail = _detail(resp) if not resp.ok else ""
        # Airflow answers a token it cannot verify with 401, or 403 "Invalid JWT token".
        if resp.status_code == 401 or (resp.status_code == 403 and "token" in detail.lower()):
            raise LoginRefused(
                f"Airflow at {self.config.url} did not accept the token (HTTP {resp.status_code}): {detail}"
            )
        if resp.status_code == 403:
            raise Forbidden(f"{self.config.user!r} may not {method} {path}: {detail}")
        if resp.status_code == 404:
            raise NotFound(not_found or f"not found: {path}: {detail}")
        if not resp.ok:
            raise ClientError(f"{method} {path}: HTTP {resp.status_code}: {detail}")
        return resp.json() if resp.content else None

    # -- the plugin's facts --------------------------------------------------------------------
    def models(self) -> dict:
        """Every model the user may read (``GET /airloop/models/api/models``)."""
        return self.request("GET", MODELS_API)

    def model(self, name: str) -> dict:
        """One model's overview; :class:`NotFound` for an unknown model."""
        return self.request("GET", f"{MODELS_API}/{quote(name, safe='')}", not_found=f"unknown model {name!r}")

    def lineage(self, name: str, version: str) -> dict:
        """Where a model version came from and what followed it."""
        path = f"{MODELS_API}/{quote(name, safe='')}/versions/{quote(str(version), safe='')}/lineage"
        try:
            return self.request("GET", path)
        except NotFound:
            self.model(name)  # raises "unknown model" if that is what is missing
            raise NotFound(f"{name} has no version {version!r}") from None

    # -- Airflow -------------------------------------------------------------------------------
    def dag(self, model: str, stage: str) -> dict:
        dag_id = f"{model}__{stage}"
        return self.request("GET", f"/api/v2/dags/{quote(dag_id, safe='')}",
                            not_found=f"unknown model {model!r} (Airflow has no DAG {dag_id})")

    def last_runs(self, model: str, stages=STATUS_STAGES) -> list[dict]:
        """The newest run of each of the model's DAGs (None where a DAG has none)."""
        dag_ids = [f"{model}__{stage}" for stage in stages]
        out = []
        for dag_id in dag_ids:
            try:
                runs = self.request("GET", f"/api/v2/dags/{quote(dag_id, safe='')}/dagRuns",
                                    params={"order_by": "-run_after", "limit": 1})["dag_runs"]
            except NotFound:
                continue
            out.append({"dag_id": dag_id, "run": runs[0] if runs else None})
        return out

    def trigger(self, model: str, stage: str, conf: dict) -> dict:
        """Trigger ``<model>__<stage>`` with ``conf`` as its Params; the new run as Airflow returns it.

        A paused DAG is refused here: its run would wait, queued, until someone unpauses it.
        """
        dag = self.dag(model, stage)
        if dag.get("is_paused"):
            raise ClientError(f"{dag['dag_id']} is paused: its run would wait; unpause it in Airflow first")
        return self.request("POST", f"/api/v2/dags/{quote(dag['dag_id'], safe='')}/dagRuns",
                            json={"logical_date": None, "conf": conf})

    def run(self, dag_id: str, run_id: str) -> dict:
        return self.request("GET", f"/api/v2/dags/{quote(dag_id, safe='')}/dagRuns/{quote(run_id, safe='')}")

    def wait(self, run: dict, timeout: float, poll: float = 2.0) -> dict:
        """Poll a run until it ends; :class:`RunFailed` if it failed or ran out of time."""
        deadline = time.monotonic() + timeout
        while run["state"] not in ("success", "failed"):
            if time.monotonic() > deadline:
                raise RunFailed(f"{run['dag_id']} run {run['dag_run_id']} still {run['state']} after {timeout:.0f} s")
            time.sleep(poll)
            run = self.run(run["dag_id"], run["dag_run_id"])
        return run

    def promote(self, model: str, version: str, *, reason: str, override_gate: bool = False) -> dict:
        return self.trigger(model, "promote",
                            {"version": str(version), "reason": reason, "override_gate": bool(override_gate)})

    def rollback(self, model: str, *, to_version: str | None = None, reason: str) -> dict:
        return self.trigger(model, "rollback", {"to_version": to_version, "reason": reason})

    def event_of_run(self, model: str, run_id: str) -> dict | None:
        """The promotion-history entry a run wrote (its gate verdict, the version), if any."""
        events = self.model(model)["history"]["events"]
        return next((e for e in events if e.get("by") == run_id), None)
