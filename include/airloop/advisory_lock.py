"""Postgres advisory locks: processes that may start at the same moment take turns.

Creating tables on first use is test-then-create, both in SQLAlchemy (``checkfirst``) and in
Feast's SQL registry: two services starting on a new database at once (``docker compose up``
starts every prediction service together) both see no table, both create, and one fails with
``DuplicateTable`` or a unique violation in Postgres' catalogue. Holding the same advisory lock
around the creation makes the second wait and then find the tables made.
"""

from __future__ import annotations

import contextlib
import hashlib
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:
    import sqlalchemy as sa

__all__ = ["advisory_lock", "lock_key"]


def lock_key(name: str) -> int:
    """The signed 64-bit key Postgres' advisory lock functions take, derived from ``name``."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


@contextlib.contextmanager
def advisory_lock(engine: "sa.engine.Engine", name: str) -> Iterator[None]:
    """Hold the session advisory lock ``name`` in ``engine``'s database for the block.

    Only one connection in the whole database holds it at a time; others wait. On any other
    database than Postgres this does nothing (SQLite serialises its writers itself). The lock
    goes with the session if the process dies.
    """
    if engine.dialect.name != "postgresql":
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
