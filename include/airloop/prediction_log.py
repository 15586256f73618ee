"""The prediction log: every prediction the service makes, in a SQL store, and its readers.

:class:`PredictionLog` appends each prediction (request id, time, entity, the features used as
JSON, prediction, model version) to the SQL store named by ``settings.prediction_store``
(SQLite under ``AIRLOOP_HOME`` by default, Postgres in compose) in batches from a background
thread; ``attach_label`` records the true label later. :func:`read_predictions`,
:func:`count_predictions` and :func:`read_window_rows` read it back (the drift monitor, the
demo, benchmarks); nothing else touches the table.

Heavy libraries (pandas, sqlalchemy) are imported inside functions.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from airloop.errors import PredictionStoreError, UnknownRequestId
from airloop.fileio import to_utc_naive
from airloop.settings import Settings, get_settings

if TYPE_CHECKING:
    import pandas as pd

    from airloop.spec import ModelSpec

__all__ = [
    "PREDICTIONS_TABLE",
    "LoggedPrediction",
    "PredictionLog",
    "count_predictions",
    "make_engine",
    "predictions_table",
    "read_predictions",
    "read_window_rows",
    "safe_url",
]

log = logging.getLogger(__name__)

PREDICTIONS_TABLE = "airloop_predictions"


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
        return bool(self.missing_features)


def predictions_table(metadata=None):
    """The prediction log's SQLAlchemy table (on ``metadata``, or a fresh one)."""
    import sqlalchemy as sa

    metadata = metadata if metadata is not None else sa.MetaData()
    return sa.Table(
        PREDICTIONS_TABLE,
        metadata,
        sa.Column("request_id", sa.String(64), primary_key=True),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("predicted_at", sa.DateTime(), nullable=False),  # naive UTC
        sa.Column("entity", sa.String(256), nullable=False),
        sa.Column("features", sa.Text(), nullable=False),  # JSON object: model input by name
        sa.Column("features_missing", sa.Boolean(), nullable=False),
        sa.Column("prediction", sa.Float(), nullable=False),
        sa.Column("label", sa.Float(), nullable=True),
        sa.Column("labeled_at", sa.DateTime(), nullable=True),  # naive UTC
        sa.Index(f"ix_{PREDICTIONS_TABLE}_model_time", "model", "predicted_at"),
    )


def safe_url(url: str) -> str:
    """The URL with its password masked, for messages."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


def make_engine(url: str, *, connect_timeout: float = 5.0):
    """A SQLAlchemy engine for the prediction store (SQLite: WAL, parent dir created)."""
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    backend = parsed.get_backend_name()
    connect_args: dict[str, Any] = {}
    if backend == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        connect_args["timeout"] = 30
    elif backend == "postgresql":
        connect_args["connect_timeout"] = max(1, int(connect_timeout))
    engine = sa.create_engine(url, pool_pre_ping=True, connect_args=connect_args)
    if backend == "sqlite":

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # noqa: ANN001 - DB-API connection
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

    return engine


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
    ):
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
        try:
            metadata.create_all(self.engine, checkfirst=True)
        except sa.exc.IntegrityError:  # another worker created it at the same moment
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
            raise PredictionStoreError(f"prediction store {safe_url(self.url)}: {type(exc).__name__}: {exc}") from exc
        if result.rowcount == 0:
            raise UnknownRequestId(f"no prediction with request_id {request_id!r}")
        return now


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def read_predictions(
    since: dt.datetime | str | None = None,
    until: dt.datetime | str | None = None,
    model: "str | ModelSpec | None" = None,
    *,
    settings: Settings | None = None,
    url: str | None = None,
    expand_features: bool = True,
) -> "pd.DataFrame":
    """Logged predictions with ``since <= timestamp < until`` (UTC), oldest first.

    Columns: ``request_id``, ``timestamp`` (tz-aware UTC), ``model``, ``model_version``, the
    entity under its join keys (one column per key of the spec's ``entities``, typed as in the
    spec) or ``entity`` if the spec is unknown, ``prediction``, ``features_missing``, ``label`` (NaN until
    feedback), ``labeled_at``, then one column per model input used (``expand_features``;
    otherwise a ``features`` column of dicts). ``model`` is a spec or a spec name.
    """
    import pandas as pd
    import sqlalchemy as sa

    s = settings or get_settings()
    spec = model if model is not None and not isinstance(model, str) else None
    name = spec.registered_model_name if spec is not None else model
    if spec is None and name:
        from airloop.spec import SpecError, get_spec

        try:
            spec = get_spec(name, s.models_dir)
        except SpecError:
            spec = None
    url = url or s.prediction_store
    try:
        engine = make_engine(url)
    except Exception as exc:
        raise PredictionStoreError(f"prediction store {safe_url(url)}: {exc}") from exc
    table = predictions_table()
    query = sa.select(table)
    if name:
        query = query.where(table.c.model == name)
    if since is not None:
        query = query.where(table.c.predicted_at >= to_utc_naive(since))
    if until is not None:
        query = query.where(table.c.predicted_at < to_utc_naive(until))
    query = query.order_by(table.c.predicted_at, table.c.request_id)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table(PREDICTIONS_TABLE):
                rows = []
            else:
                rows = [dict(r) for r in conn.execute(query).mappings()]
    except Exception as exc:
        raise PredictionStoreError(f"prediction store {safe_url(url)}: {type(exc).__name__}: {exc}") from exc
    finally:
        engine.dispose()

    columns = [c.name for c in table.columns]
    frame = pd.DataFrame(rows, columns=columns).rename(columns={"predicted_at": "timestamp"})
    frame["timestamp"] = pd.to_datetime(frame["timestamp"]).dt.tz_localize("UTC")
    frame["labeled_at"] = pd.to_datetime(frame["labeled_at"]).dt.tz_localize("UTC")
    frame["prediction"] = frame["prediction"].astype("float64")
    frame["label"] = frame["label"].astype("float64")
    frame["features_missing"] = frame["features_missing"].astype(bool)
    keys = ["entity"]
    if spec is not None:
        keys = spec.join_keys
        if len(keys) == 1:
            frame = frame.rename(columns={"entity": keys[0]})
        else:
            parsed_keys = [json.loads(e) for e in frame["entity"]]
            for key in keys:
                frame[key] = [k.get(key) for k in parsed_keys]
            frame = frame.drop(columns=["entity"])
        for key in keys:
            kind = spec.dataset.columns.get(key)
            if kind == "int":
                frame[key] = frame[key].astype("int64")
            elif kind == "float":
                frame[key] = frame[key].astype("float64")
    parsed = [json.loads(f) for f in frame["features"]]
    frame = frame.drop(columns=["features"])
    if expand_features:
        feats = pd.DataFrame.from_records(parsed, index=frame.index) if parsed else pd.DataFrame(index=frame.index)
        feats = feats[[c for c in feats.columns if c not in frame.columns]]
        for column in feats.columns:
            # The JSON keeps each value's type: a column that logged a string is a categorical
            # input and stays as logged (str, None for missing), even if its categories look
            # like numbers ("1" must not come back as 1.0).
            if any(isinstance(v, str) for v in feats[column]):
                continue
            try:
                feats[column] = feats[column].astype("float64")
            except (TypeError, ValueError):
                pass  # another non-numeric input stays as logged
        frame = pd.concat([frame, feats], axis=1)
    else:
        frame["features"] = parsed
    ordered = ["request_id", "timestamp", "model", "model_version", *keys, "prediction",
               "features_missing", "label", "labeled_at"]
    rest = [c for c in frame.columns if c not in ordered]
    return frame[ordered + rest].reset_index(drop=True)


def _store_error(url: str, exc: Exception) -> PredictionStoreError:
    return PredictionStoreError(f"prediction store {safe_url(url)}: {type(exc).__name__}: {exc}")


def count_predictions(model: str, start: dt.datetime, end: dt.datetime, *, url: str) -> int:
    """Logged predictions of registered model ``model`` with ``start <= time < end`` (one COUNT)."""
    import sqlalchemy as sa

    engine = make_engine(url)
    table = predictions_table()
    query = (
        sa.select(sa.func.count())
        .select_from(table)
        .where(table.c.model == model)
        .where(table.c.predicted_at >= to_utc_naive(start))
        .where(table.c.predicted_at < to_utc_naive(end))
    )
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table(PREDICTIONS_TABLE):
                return 0
            return int(conn.execute(query).scalar_one())
    except Exception as exc:
        raise _store_error(url, exc) from exc
    finally:
        engine.dispose()


def read_window_rows(
    model: str,
    start: dt.datetime,
    end: dt.datetime,
    *,
    url: str,
    total: int,
    sample_size: int | None,
    seed: int,
    labelled_version: str,
) -> "tuple[list[Any], int, pd.DataFrame | None]":
    """The rows of a time window, sampled in the store when there are more than ``sample_size``.

    A window of at most ``sample_size`` rows (None: no limit) is read whole. A larger one is
    sampled: its request ids are read, a seeded uniform sample is drawn, and only those rows are
    fetched; the (label, prediction) pairs of every labelled row served by ``labelled_version``
    are read separately (two numbers per row). Rows have ``request_id``, ``model_version``,
    ``features`` (JSON), ``prediction`` and ``label``.

    Returns (rows, rows in the window, labelled pairs or None when the window was read whole).
    """
    import numpy as np
    import pandas as pd
    import sqlalchemy as sa

    table = predictions_table()
    window = (
        (table.c.model == model)
        & (table.c.predicted_at >= to_utc_naive(start))
        & (table.c.predicted_at < to_utc_naive(end))
    )
    columns = [table.c.request_id, table.c.model_version, table.c.features, table.c.prediction, table.c.label]
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            if sample_size is None or total <= sample_size:
                return conn.execute(sa.select(*columns).where(window)).all(), total, None
            ids = conn.execute(sa.select(table.c.request_id).where(window)).scalars().all()
            rng = np.random.default_rng(seed % 2**32)
            picked = [ids[i] for i in np.sort(rng.choice(len(ids), size=sample_size, replace=False))]
            total = len(ids)
            del ids
            rows = []
            for lo in range(0, len(picked), 2000):
                batch = picked[lo : lo + 2000]
                rows.extend(conn.execute(sa.select(*columns).where(table.c.request_id.in_(batch))).all())
            labelled = pd.DataFrame(
                conn.execute(
                    sa.select(table.c.label, table.c.prediction)
                    .where(window)
                    .where(table.c.label.is_not(None))
                    .where(table.c.model_version == str(labelled_version))
                ).all(),
                columns=["label", "prediction"],
                dtype="float64",
            )
            return rows, total, labelled
    except Exception as exc:
        raise _store_error(url, exc) from exc
    finally:
        engine.dispose()
