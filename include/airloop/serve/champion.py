"""The champion model: :class:`ChampionWatcher` keeps a model's ``@champion`` version in memory.

It polls the MLflow registry every ``AIRLOOP_SERVE_POLL_SECONDS`` (default 10). When the alias
moves it loads and checks the new version first, then swaps one reference: a request that
already took the old model finishes with it, the next one gets the new model, and nothing
restarts.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from typing import TYPE_CHECKING

from airloop import registry
from airloop.errors import ModelNotServable, NotReady
from airloop.registry import LoadedModel
from airloop.settings import Settings, get_settings

if TYPE_CHECKING:
    from airloop.spec import ModelSpec

log = logging.getLogger(__name__)


class ChampionWatcher:
    """Holds the ``@champion`` model and swaps it atomically when the alias moves.

    ``refresh()`` checks the registry once; ``start()`` runs it every ``poll_seconds`` in a
    daemon thread. A new version is loaded and passed to ``validate`` before the single
    reference assignment that publishes it; if loading or validation fails the current model
    keeps serving and ``last_error`` says why (a version refused by ``validate`` is not
    retried until the alias moves again). Readers take ``current`` once per request.
    """

    def __init__(
        self,
        spec: "ModelSpec",
        settings: Settings | None = None,
        *,
        poll_seconds: float = 10.0,
        validate=None,
    ):
        self.spec = spec
        self.settings = settings or get_settings()
        self.poll_seconds = poll_seconds
        self.validate = validate
        self._current: LoadedModel | None = None
        self._refused: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client = None
        self.last_error: str | None = None
        self.last_check: dt.datetime | None = None
        self.swaps = 0

    @property
    def current(self) -> LoadedModel | None:
        return self._current

    def get(self) -> LoadedModel:
        model = self._current
        if model is None:
            reason = f": {self.last_error}" if self.last_error else ""
            raise NotReady(f"no servable @champion model for {self.spec.name!r} yet{reason}")
        return model

    def refresh(self) -> bool:
        """Check the registry once; load, validate and swap if ``@champion`` moved."""
        with self._lock:
            if self._client is None:
                self._client = registry.client(self.settings)
            version = registry.champion_version(self.spec, mlflow_client=self._client)
            self.last_check = dt.datetime.now(dt.timezone.utc)
            current = self._current
            if version is None:
                if current is None:
                    self.last_error = f"model {self.spec.registered_model_name!r} has no @{registry.CHAMPION} alias"
                return False
            if (current is not None and current.version == version) or version == self._refused:
                return False
            started = time.perf_counter()
            try:  # an untrusted artifact or a model needing unknown inputs is refused for good
                loaded = registry.load_version(self.spec, version, self.settings)
                if self.validate is not None:
                    self.validate(loaded)
            except ModelNotServable as exc:
                self._refused = version
                self.last_error = f"v{version} refused: {exc}"
                log.error("not serving %s v%s: %s", self.spec.name, version, exc)
                return False
            self._current = loaded  # the swap: one reference assignment
            self._refused = None
            self.last_error = None
            self.swaps += 1
            log.info(
                "serving %s v%s (was %s; loaded in %.2fs)", self.spec.name, version,
                f"v{current.version}" if current else "none", time.perf_counter() - started,
            )
            return True

    def try_refresh(self) -> bool:
        try:
            return self.refresh()
        except Exception as exc:  # registry down, artifact missing, store error: keep serving
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("champion check for %s failed: %s", self.spec.name, self.last_error)
            return False

    def start(self) -> "ChampionWatcher":
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="airloop-champion-watcher", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            self.try_refresh()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def status(self) -> dict:
        model = self._current
        return {
            "model": self.spec.registered_model_name,
            "model_version": model.version if model else None,
            "run_id": model.run_id if model else None,
            "loaded_at": model.loaded_at.isoformat() if model else None,
            "last_check": self.last_check.isoformat() if self.last_check else None,
            "last_error": self.last_error,
            "swaps": self.swaps,
            "poll_seconds": self.poll_seconds,
        }
