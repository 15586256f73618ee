"""Advisory locks in a database: processes that may start at the same moment take turns.

Creating tables on first use is test-then-create, both in SQLAlchemy (``checkfirst``) and in
Feast's SQL registry: two services starting on a new database at once (``docker compose up``
starts every prediction service together; the demo starts one per model) both see no table,
both create, and one fails: ``DuplicateTable`` or a unique violation in Postgres' catalogue,
``table ... already exists`` in SQLite. Holding the same lock around the creation makes the
second wait and then find the tables made.
"""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:
    import sqlalchemy as sa

__all__ = ["advisory_lock", "lock_key"]


def lock_key(name: str) -> int:
    """The signed 64-bit key Postgres' advisory lock functions take, derived from ``name``."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


@contextlib.contextmanager
def advisory_lock(engine: "sa.engine.Engine", name: str) -> Iterator[None]:
    """Hold the lock ``name`` of ``engine``'s database for the block; others wait for it.

    Postgres: a session advisory lock (it goes with the session if the process dies). SQLite:
    an exclusive ``fcntl`` lock on a file beside the database, ``<database>.<name>.lock``
    (in-memory databases are not shared: no lock). Other databases: no lock.
    """
    dialect = engine.dialect.name
    if dialect == "sqlite":
        database = engine.url.database
        if not database or database == ":memory:":
            yield
            return
        from airloop.fileio import exclusive

        with exclusive(Path(f"{database}.{name}.lock")):
            yield
        return
    if dialect != "postgresql":
        yield
        return
    import sqlalchemy as sa

    key = lock_key(name)
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": key})
        conn.commit()
        try:
            yield
        finally:
            conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
            conn.commit()
