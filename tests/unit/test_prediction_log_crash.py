"""What a crash of the serving process costs the prediction log (README: "a crash can lose about
the last half second of predictions").

A child process logs a prediction every few milliseconds through the real ``PredictionLog`` and
reports each one after ``append`` returns; the test kills it with SIGKILL (no shutdown code runs)
and reads the store. Only predictions appended in the last flush interval (plus the write that
was under way) may be missing; everything older must be there.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

# The writer flushes every FLUSH_SECONDS; a batch that was being written when the process died
# is lost too, and on a loaded machine the writer thread can wake late: hence the slack.
FLUSH_SECONDS = 0.5
SLACK_SECONDS = 1.0

CHILD = r"""
import datetime as dt, sys, time
from airloop.prediction_log import LoggedPrediction, PredictionLog

log = PredictionLog(sys.argv[1], flush_seconds=float(sys.argv[2]), spill_dir=sys.argv[3])
print("ready", flush=True)
i = 0
while True:
    log.append([LoggedPrediction(
        request_id=f"r{i:06d}", model="crash_test", model_version="1", entity=i % 17,
        features={"x": float(i)}, prediction=0.5, missing_features=[],
        predicted_at=dt.datetime.now(dt.timezone.utc),
    )])
    print(i, time.monotonic(), flush=True)
    i += 1
    time.sleep(0.004)
"""


def stored_ids(url: str) -> set[str]:
    import sqlalchemy as sa

    from airloop.prediction_log import make_engine, predictions_table

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return set(conn.execute(sa.select(predictions_table().c.request_id)).scalars())
    finally:
        engine.dispose()


def crash_while_logging(url: str, spill_dir, run_seconds: float = 3.0) -> tuple[dict[str, float], float]:
    """Run the child for ``run_seconds``, SIGKILL it; (appended id -> monotonic time, kill time)."""
    child = subprocess.Popen([sys.executable, "-c", CHILD, url, str(FLUSH_SECONDS), str(spill_dir)],
                             stdout=subprocess.PIPE, text=True)
    appended: dict[str, float] = {}
    try:
        assert child.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + run_seconds
        while time.monotonic() < deadline:
            i, at = child.stdout.readline().split()
            appended[f"r{int(i):06d}"] = float(at)
        child.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        for line in child.stdout:  # appended before the signal landed
            i, at = line.split()
            appended[f"r{int(i):06d}"] = float(at)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL
    return appended, killed


def check_loss(url: str, spill_dir) -> None:
    appended, killed = crash_while_logging(url, spill_dir)
    stored = stored_ids(url)
    lost = {rid: at for rid, at in appended.items() if rid not in stored}
    assert len(appended) > 200 and stored <= set(appended)
    oldest_lost = min(lost.values(), default=killed)
    print(f"{len(appended)} appended, {len(lost)} lost, the oldest {killed - oldest_lost:.2f} s before the kill")
    assert killed - oldest_lost <= FLUSH_SECONDS + SLACK_SECONDS, sorted(lost)[:5]
    assert not (spill_dir.exists() and os.listdir(spill_dir))  # the store was up: nothing was spilled


def test_a_crash_loses_only_the_last_flush_interval_sqlite(tmp_path):
    check_loss(f"sqlite:///{tmp_path / 'predictions.db'}", tmp_path / "spill")


@pytest.mark.services
def test_a_crash_loses_only_the_last_flush_interval_postgres(tmp_path):
    psycopg = pytest.importorskip("psycopg")
    dsn = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
    database = f"airloop_crash_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    try:
        check_loss(f"postgresql://postgres@127.0.0.1:5432/{database}", tmp_path / "spill")
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
