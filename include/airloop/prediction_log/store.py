"""The prediction store itself: its one table, an engine on its URL, and its errors.

The store is any SQLAlchemy URL (``settings.prediction_store``): SQLite under ``AIRLOOP_HOME``
by default, Postgres in compose. sqlalchemy is imported inside the functions.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airloop.errors import PredictionStoreError

if TYPE_CHECKING:
    import sqlalchemy as sa

__all__ = ["PREDICTIONS_TABLE", "make_engine", "predictions_table", "safe_url", "store_error"]

PREDICTIONS_TABLE = "airloop_predictions"


def predictions_table(metadata: "sa.MetaData | None" = None) -> "sa.Table":
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


def make_engine(url: str, *, connect_timeout: float = 5.0) -> "sa.engine.Engine":
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


def store_error(url: str, exc: Exception) -> PredictionStoreError:
    """The error to raise when the store at ``url`` failed with ``exc`` (password masked)."""
    return PredictionStoreError(f"prediction store {safe_url(url)}: {type(exc).__name__}: {exc}")
