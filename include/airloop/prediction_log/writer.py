"""Writing the prediction log: :class:`PredictionLog`, the store the service appends to.

Each prediction (request id, time, entity, the features used as JSON, prediction, model
version) is queued on the request path and written in batches by a background thread;
:meth:`PredictionLog.attach_label` records the true label later (feedback). While the store is
down, rows wait in memory and then in spill files, replayed once it recovers.
sqlalchemy is imported inside the functions.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from airloop.advisory_lock import advisory_lock
from airloop.errors import PredictionStoreError, UnknownRequestId
from airloop.fileio import to_utc_naive
from airloop.prediction_log.store import make_engine, predictions_table, safe_url, store_error
from airloop.settings import Settings, get_settings

__all__ = ["LoggedPrediction", "PredictionLog"]

log = logging.getLogger(__name__)


@dataclass
class LoggedPrediction:
    """One prediction as the log stores it (the service's answers extend it)."""

    request_id: str
    model: str
    model_version: str
    entity: Any
    features: dict[str, Any]  # the model input by name; None for a missing value
    prediction: float
    missing_features: list[str]
    predicted_at: dt.datetime

    @property
    def features_missing(self) -> bool:
        """True when some model input had no value (a cold-start estimate)."""
        return bool(self.missing_features)


def _row(scored: LoggedPrediction) -> dict[str, Any]:
    return {
        "request_id": scored.request_id,
        "model": scored.model,
        "model_version": scored.model_version,
        "predicted_at": to_utc_naive(scored.predicted_at),
        # One key: its value; several: a JSON object of them (see read_predictions).
        "entity": json.dumps(scored.entity, sort_keys=True) if isinstance(scored.entity, dict) else str(scored.entity),
        "features": json.dumps(scored.features, separators=(",", ":")),
        "features_missing": scored.features_missing,
        "prediction": scored.prediction,
        "label": None,
        "labeled_at": None,
    }


class PredictionLog:
    """Append-only prediction store on any SQLAlchemy URL, written in batches in the background.

    ``append`` only queues rows (microseconds on the request path). A writer thread inserts
    them every ``flush_seconds`` or as soon as ``batch_size`` rows wait, in one transaction
    per batch (duplicate request ids are ignored, so a retried batch never doubles rows).
    If the store fails, rows stay queued and the writer retries with backoff; beyond
    ``max_pending`` queued rows, the oldest are spilled to JSON-lines files under
    ``spill_dir``, which are loaded into the store at the next start or once it recovers.
    The spill files hold at most ``max_spill_bytes``: once they are full and ``max_pending``
    rows wait, ``append`` raises :class:`PredictionStoreError` (the service answers 503) rather
    than serve predictions it cannot log.

    Durability: ``close()`` (called on clean shutdown) writes everything queued, or spills it
    to ``spill_dir`` if the store is down, so a clean shutdown loses nothing. A crash (SIGKILL,
    OOM kill, power loss) loses the rows still queued in memory: the predictions of the last
    ``flush_seconds`` (0.5 s by default), plus, while the store is unreachable, the backlog not
    yet spilled (at most ``max_pending`` rows). Spilled files and committed rows survive.

    The constructor connects and creates the table; an unreachable store raises
    :class:`PredictionStoreError` at once, so a server never starts logging into the void.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        settings: Settings | None = None,
        flush_seconds: float = 0.5,
        batch_size: int = 500,
        max_pending: int = 100_000,
        max_spill_bytes: int = 1 << 30,
        spill_dir: Path | None = None,
        connect_timeout: float = 5.0,
    ) -> None:
        s = settings or get_settings()
        self.url = url or s.prediction_store
        self.flush_seconds = flush_seconds
        self.batch_size = batch_size
        self.max_pending = max_pending
        self.max_spill_bytes = max_spill_bytes
        self.spill_full = False
        self.spill_dir = Path(spill_dir) if spill_dir else s.home / "predictions" / "spill"
        self.last_error: str | None = None
        self.failures = 0
        self.written = 0
        self._pending: deque[dict[str, Any]] = deque()
        self._cond = threading.Condition()
        self._appended = 0  # rows ever queued
        self._done = 0  # rows ever committed or spilled (queue order)
        self._flush_wanted = False
        self._closing = False
        self._closed = False
        try:
            self.engine = make_engine(self.url, connect_timeout=connect_timeout)
            self._create_table()
        except Exception as exc:
            raise PredictionStoreError(
                f"prediction store {safe_url(self.url)} is not usable: {type(exc).__name__}: "
                f"{str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}"
            ) from exc
        self._replay_spill()
        self._thread = threading.Thread(target=self._run, name="airloop-prediction-log", daemon=True)
        self._thread.start()

    # -- setup -----------------------------------------------------------------------------
    def _create_table(self) -> None:
        import sqlalchemy as sa

        metadata = sa.MetaData()
        self.table = predictions_table(metadata)
        # Every prediction service (and each of its workers) creates the table on a new store.
        with advisory_lock(self.engine, "airloop.predictions.create"):
            metadata.create_all(self.engine, checkfirst=True)

    def _insert(self):
        dialect = self.engine.dialect.name
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        elif dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:
            return self.table.insert()
        return insert(self.table).on_conflict_do_nothing(index_elements=["request_id"])

    def _write(self, rows: list[dict[str, Any]]) -> None:
        with self.engine.begin() as conn:
            conn.execute(self._insert(), rows)

    # -- request path ------------------------------------------------------------------------
    def append(self, scored: Iterable[LoggedPrediction]) -> None:
        """Queue scored rows for the writer thread (microseconds; never blocks on the store)."""
        rows = [_row(s) for s in scored]
        if not rows:
            return
        with self._cond:
            if self._closed:
                raise PredictionStoreError("the prediction log is closed")
            if self.spill_full and len(self._pending) >= self.max_pending:
                raise PredictionStoreError(
                    f"prediction store {safe_url(self.url)} is failing ({self.last_error}) and the spill files "
                    f"under {self.spill_dir} are full ({self.max_spill_bytes} bytes, "
                    "AIRLOOP_PREDICTION_LOG_MAX_SPILL_BYTES): refusing predictions that could not be logged"
                )
            self._pending.extend(rows)
            self._appended += len(rows)
            if len(self._pending) >= self.batch_size:
                self._cond.notify_all()

    @property
    def pending(self) -> int:
        """Rows queued and not yet committed or spilled."""
        with self._cond:
            return len(self._pending)

    def flush(self, timeout: float = 30.0) -> None:
        """Block until every row queued before this call is committed (or spilled)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            target = self._appended
            self._flush_wanted = True
            self._cond.notify_all()
            while self._done < target:
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    raise PredictionStoreError(
                        f"prediction store {safe_url(self.url)}: {target - self._done} rows not written "
                        f"after {timeout:.0f}s ({self.last_error or 'writer stopped'})"
                    )
                self._cond.wait(min(left, 1.0))

    def close(self, timeout: float = 30.0) -> None:
        """Write everything queued (or spill it if the store is down) and stop the writer."""
        with self._cond:
            if self._closed:
                return
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)
        with self._cond:
            self._closed = True
            if self._pending:  # the writer did not finish in time: keep the rows on disk
                self._spill_or_drop(list(self._pending))
                self._pending.clear()
        self.engine.dispose()

    # -- writer thread -------------------------------------------------------------------------
    def _run(self) -> None:
        backoff = 0.0
        while True:
            with self._cond:
                if backoff:  # the store failed: wait before retrying, whatever is asked meanwhile
                    self._cond.wait_for(lambda: self._closing, timeout=backoff)
                elif not self._closing:
                    self._cond.wait_for(
                        lambda: self._closing or self._flush_wanted or len(self._pending) >= self.batch_size,
                        timeout=self.flush_seconds,
                    )
                if not self._pending:
                    self._flush_wanted = False
                    self._cond.notify_all()
                    if self._closing:
                        return
                    continue
                batch = [self._pending.popleft() for _ in range(min(self.batch_size, len(self._pending)))]
                closing = self._closing
            try:
                self._write(batch)
            except Exception as exc:
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
                log.error("prediction log write of %d rows failed: %s", len(batch), self.last_error)
                with self._cond:
                    self._pending.extendleft(reversed(batch))
                    if closing:  # last chance: keep every queued row on local disk
                        self._spill_or_drop(list(self._pending))
                        self._pending.clear()
                        self._cond.notify_all()
                        return
                    overflow = len(self._pending) - self.max_pending
                    if overflow > 0:
                        oldest = [self._pending.popleft() for _ in range(overflow)]
                        if not self._spill(oldest):  # spill full: they wait in memory
                            self._pending.extendleft(reversed(oldest))
                        self._cond.notify_all()
                backoff = min(30.0, max(0.5, backoff * 2))
                continue
            recovered = backoff > 0
            backoff = 0.0
            with self._cond:
                self.written += len(batch)
                self._done += len(batch)
                self.spill_full = False
                self._cond.notify_all()
            if recovered:
                self.last_error = None
                self._replay_spill()

    # -- spill files -----------------------------------------------------------------------------
    def _spill(self, rows: list[dict[str, Any]]) -> bool:
        """Write rows to a new spill file (caller holds the lock); they count as done.

        Returns False, writing nothing, if the spill files would exceed ``max_spill_bytes``.
        """
        if not rows:
            return True
        data = "".join(json.dumps(row, default=_json_default) + "\n" for row in rows).encode()
        self.spill_dir.mkdir(parents=True, exist_ok=True)
        used = sum(p.stat().st_size for p in self.spill_dir.iterdir() if p.is_file())
        if used + len(data) > self.max_spill_bytes:
            if not self.spill_full:
                log.error(
                    "prediction spill full: %d bytes used under %s, %d more would pass the limit of %d bytes",
                    used, self.spill_dir, len(data), self.max_spill_bytes,
                )
            self.spill_full = True
            return False
        path = self.spill_dir / f"predictions-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
        with open(path, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        self._done += len(rows)
        log.error("prediction store unreachable: spilled %d rows to %s", len(rows), path)
        return True

    def _spill_or_drop(self, rows: list[dict[str, Any]]) -> None:
        """At shutdown with the store down: spill, or say how many predictions are lost."""
        if not self._spill(rows):
            self._done += len(rows)
            log.error("LOST %d predictions: the store is down and the spill files are full", len(rows))

    def _replay_spill(self) -> None:
        if not self.spill_dir.is_dir():
            return
        for path in sorted(self.spill_dir.glob("predictions-*.jsonl")):
            claimed = path.with_suffix(".replaying")
            try:
                path.rename(claimed)  # one worker per file
            except OSError:
                continue
            try:
                rows = [json.loads(line) for line in claimed.read_text().splitlines() if line.strip()]
                for row in rows:
                    for key in ("predicted_at", "labeled_at"):
                        if row.get(key):
                            row[key] = dt.datetime.fromisoformat(row[key])
                for i in range(0, len(rows), self.batch_size):
                    self._write(rows[i : i + self.batch_size])
            except Exception as exc:
                claimed.rename(path)
                log.warning("could not replay %s yet: %s", path, exc)
                return
            claimed.unlink()
            log.info("replayed %d spilled predictions from %s", len(rows), path.name)

    # -- labels ----------------------------------------------------------------------------------
    def attach_label(self, request_id: str, label: float, timeout: float = 30.0) -> dt.datetime:
        """Record the true label of a logged prediction; raises UnknownRequestId if none.

        Waits up to ``timeout`` seconds for queued predictions to be written first.
        """
        import sqlalchemy as sa

        self.flush(timeout)
        now = dt.datetime.now(dt.timezone.utc)
        try:
            with self.engine.begin() as conn:
                result = conn.execute(
                    sa.update(self.table)
                    .where(self.table.c.request_id == request_id)
                    .values(label=float(label), labeled_at=to_utc_naive(now))
                )
        except Exception as exc:
            raise store_error(self.url, exc) from exc
        if result.rowcount == 0:
            raise UnknownRequestId(f"no prediction with request_id {request_id!r}")
        return now


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
