"""The running service, from outside: :func:`service_status` and :func:`wait_until_serving`."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from airloop.errors import ServiceUnreachable, WrongModelServed
from airloop.settings import get_settings

if TYPE_CHECKING:
    from airloop.spec import ModelSpec


def service_status(url: str | None = None, *, model: str | None = None, timeout: float = 5.0) -> dict:
    """``POST /status`` of the running service at ``url``.

    Without ``url``: ``model``'s own service (:meth:`Settings.serve_url_for`), else
    ``AIRLOOP_SERVE_URL``.
    """
    import requests

    if not url:
        s = get_settings()
        url = s.serve_url_for(model) if model else s.serve_url
    url = url.rstrip("/")
    try:
        resp = requests.post(f"{url}/status", json={}, timeout=timeout)
    except requests.RequestException as exc:
        raise ServiceUnreachable(f"no prediction service at {url}: {exc.__class__.__name__}") from exc
    resp.raise_for_status()
    return resp.json()


def wait_until_serving(spec: "ModelSpec", version: str, *, url: str | None = None, timeout: float = 180) -> dict:
    """Wait until the service at ``url`` answers with ``version`` of the spec's model.

    ``url`` defaults to the model's own service (``AIRLOOP_SERVE_URL__<MODEL>``, else
    ``AIRLOOP_SERVE_URL``). A service serving another model fails at once
    (:class:`WrongModelServed`): waiting would not change which model it serves.
    """
    from airloop.settings import serve_url_env

    url = url or get_settings().serve_url_for(spec.name)
    deadline = time.monotonic() + timeout
    status = service_status(url)
    while True:
        served = status.get("model")
        if served != spec.registered_model_name:
            raise WrongModelServed(
                f"the service at {url} serves model {served!r}, not {spec.registered_model_name!r}: "
                f"point {serve_url_env(spec.name)} (or AIRLOOP_SERVE_URL) at {spec.name}'s service"
            )
        if str(status.get("model_version")) == str(version):
            break
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"service still serves {spec.name} v{status.get('model_version')} after {timeout}s, "
                f"expected v{version} (last registry error: {status.get('last_error')})"
            )
        time.sleep(2)
        status = service_status(url)
    return status
