"""Test harness: every test session gets its own AIRLOOP_HOME and AIRFLOW_HOME."""

from __future__ import annotations

import os
import resource
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# Isolate before anything imports Airflow (it reads AIRFLOW_HOME at import time).
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="airloop-tests-"))
os.environ["AIRLOOP_HOME"] = str(_SESSION_DIR / "airloop")
os.environ["AIRFLOW_HOME"] = str(_SESSION_DIR / "airflow")
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO_ROOT / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(REPO_ROOT / "plugins")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_SESSION_DIR / 'airflow' / 'airflow.db'}"
for _name in ("MLFLOW_TRACKING_URI", "BENTOML_HOME") + tuple(
    k for k in os.environ if k.startswith("AIRLOOP_") and k not in ("AIRLOOP_HOME", "AIRLOOP_TEST_ARTIFACTS")
):
    os.environ.pop(_name, None)


def pytest_sessionfinish(session, exitstatus):
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # a pytest-xdist worker: hand the controller what it measured
        workeroutput["unit_usage"] = _UNIT_USAGE
    if exitstatus == 0 and not os.environ.get("AIRLOOP_KEEP_TEST_STATE"):
        shutil.rmtree(_SESSION_DIR, ignore_errors=True)


@pytest.fixture(autouse=True)
def _no_leaked_tracking_uri(monkeypatch):
    """mlflow.set_tracking_uri() writes MLFLOW_TRACKING_URI into os.environ, and the settings
    follow that variable: without this, one test's registry would leak into the next."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture
def airloop_home(tmp_path, monkeypatch) -> Path:
    """A fresh, empty AIRLOOP_HOME for one test (all embedded state lives below it)."""
    home = tmp_path / "airloop"
    monkeypatch.setenv("AIRLOOP_HOME", str(home))
    from airloop.settings import ensure_dirs

    ensure_dirs()
    return home


@pytest.fixture
def settings(airloop_home):
    from airloop.settings import get_settings

    return get_settings()


@pytest.fixture(scope="session")
def demo_spec():
    from airloop.spec import load_spec

    return load_spec(REPO_ROOT / "include" / "models" / "late_delivery.yaml")


def _train_example_versions(spec, settings, shuffled: tuple[bool, ...] = (False, True)):
    """Register real versions of the demo model (late_delivery) from its example data, no Airflow.

    One version per entry of ``shuffled``, in order: ``True`` trains on shuffled labels, a model
    that learned nothing and misses the roc_auc floor. Six days of orders, the last holdout days
    held out, on one thread. Returns ``([(version, holdout metrics), ...], holdout)``; nothing is
    promoted.
    """
    import datetime as dt

    import pandas as pd
    from threadpoolctl import threadpool_limits

    from airloop import train
    from airloop.spec import example_data

    datagen = example_data("late_delivery")
    days = [dt.date(2024, 3, 1) + dt.timedelta(days=i) for i in range(6)]
    orders = pd.concat([datagen.generate_orders(d, orders_per_day=400) for d in days], ignore_index=True)
    frame = orders[["restaurant_id", "event_timestamp", "distance_km", "items", "prep_minutes", spec.target]]
    fit_on, holdout = train.time_split(frame, "event_timestamp", spec.split.holdout_days)
    columns = train.feature_columns(spec, frame)
    versions = []
    with threadpool_limits(1):  # OpenMP threads fighting a starting api-server cost 5x
        for shuffle in shuffled:
            data = fit_on
            if shuffle:
                labels = fit_on[spec.target].sample(frac=1, random_state=1).to_numpy()
                data = fit_on.assign(**{spec.target: labels})
            model = train.fit(spec, data, columns)
            metrics = train.evaluate(spec, model, holdout[columns], holdout[spec.target])
            _, version = train.log_training_run(
                spec, model, data, holdout, columns, metrics, train.Lineage(trigger_reason="test"), settings
            )
            versions.append((version, metrics))
    return versions, holdout


@pytest.fixture(scope="session")
def train_example_versions():
    """:func:`_train_example_versions`, for module fixtures that build a registry of their own."""
    return _train_example_versions


PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
# Redis databases the tests may claim (tests/stack/native.py claims 4-13; bench uses 14).
REDIS_DB_POOL = (15, 3, 2, 1)


@pytest.fixture
def pg_database():
    """A throw-away Postgres database; yields its SQLAlchemy URL."""
    psycopg = pytest.importorskip("psycopg")
    name = f"airloop_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def run_together():
    """``run(fn, n)``: call ``fn`` in ``n`` threads released at the same moment (as services
    started together); returns what the calls raised, one line each, empty if none did."""
    import threading

    def run(fn, n: int = 3, timeout: float = 120) -> list[str]:
        start = threading.Barrier(n)
        failures: list[str] = []

        def one() -> None:
            start.wait()
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 - the test reports whatever it is
                failures.append(f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}")

        threads = [threading.Thread(target=one) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout)
        return failures

    return run


@pytest.fixture
def redis_db():
    """The number of an empty Redis database on 127.0.0.1:6379 that this test holds alone.

    Tests run in parallel (pytest-xdist): a database is claimed with a lock file, flushed
    before and after the test."""
    import fcntl

    redis = pytest.importorskip("redis")
    for number in REDIS_DB_POOL:
        handle = open(Path(tempfile.gettempdir()) / f"airloop-tests-redis-db{number}.lock", "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        client = redis.Redis(host="127.0.0.1", port=6379, db=number)
        try:
            client.flushdb()
            yield number
        finally:
            client.flushdb()
            handle.close()
        return
    raise RuntimeError(f"every Redis database of {REDIS_DB_POOL} is held by another test")


# The modules whose tests read the one run of both example loops (tests/e2e/conftest.py).
BOTH_LOOPS_GROUP = "both-loops"
BOTH_LOOPS_MODULES = frozenset(
    f"tests/e2e/{name}.py" for name in ("test_closed_loop", "test_second_model_loop", "test_models_side_by_side")
)


def _group(nodeid: str) -> str:
    """The work unit a test belongs to under ``pytest -n``: its module, or the both-loops run."""
    module = nodeid.split("::", 1)[0]
    return BOTH_LOOPS_GROUP if module in BOTH_LOOPS_MODULES else module


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist: unknown when it is off
def pytest_xdist_make_scheduler(config, log):
    """Under ``pytest -n --dist loadscope`` (make test), hand out whole modules, with the three
    both-loops modules as one unit: module- and session-scoped fixtures are built once."""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ByModule(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _group(nodeid)

    return ByModule(config, log)


def pytest_collection_modifyitems(config, items):
    """Start the longest work first: units are handed to workers in collection order (with
    ``--no-loadscope-reorder``), so the both-loops run (~10 min) goes first, then modules with
    slow tests, and the short ones fill the gaps at the end instead of waiting behind a long one."""
    for item in items:
        if "both_loops" in getattr(item, "fixturenames", ()) and _group(item.nodeid) != BOTH_LOOPS_GROUP:
            raise pytest.UsageError(f"{item.nodeid} reads the both-loops run: add its module to BOTH_LOOPS_MODULES")
    slow_groups = {_group(item.nodeid) for item in items if item.get_closest_marker("slow")}

    def rank(item) -> int:
        group = _group(item.nodeid)
        return 0 if group == BOTH_LOOPS_GROUP else 1 if group in slow_groups else 2

    items.sort(key=rank)  # stable: collection order within each rank


# --- where the suite's time goes: CPU and wall per work unit -----------------------------------
# The suite is CPU-bound on 2 cores, so the slowest-tests list (wall time, inflated by whatever
# the other worker runs) does not say what to make cheaper; CPU seconds per unit do. Counted:
# this process and every process it started and waited for (Airflow stacks, demos, services),
# not daemons that detach (the private Postgres and Redis servers).
_UNIT_USAGE: dict[str, list[float]] = {}  # work unit -> [CPU seconds, wall seconds]


def _cpu_seconds() -> float:
    own, waited = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + waited.ru_utime + waited.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    cpu, wall = _cpu_seconds(), time.monotonic()
    yield
    usage = _UNIT_USAGE.setdefault(_group(item.nodeid), [0.0, 0.0])
    usage[0] += _cpu_seconds() - cpu
    usage[1] += time.monotonic() - wall


@pytest.hookimpl(optionalhook=True)  # pytest-xdist: a worker finished
def pytest_testnodedown(node, error):
    for unit, (cpu, wall) in getattr(node, "workeroutput", {}).get("unit_usage", {}).items():
        usage = _UNIT_USAGE.setdefault(unit, [0.0, 0.0])
        usage[0] += cpu
        usage[1] += wall


def pytest_terminal_summary(terminalreporter):
    """The work units (modules; the both-loops run as one) that cost the most CPU."""
    if not _UNIT_USAGE:
        return
    total_cpu = sum(cpu for cpu, _ in _UNIT_USAGE.values())
    terminalreporter.section("CPU per work unit (all processes each started and waited for)")
    terminalreporter.write_line(f"{'CPU s':>8} {'wall s':>8} {'share':>6}  unit")
    for unit, (cpu, wall) in sorted(_UNIT_USAGE.items(), key=lambda kv: -kv[1][0])[:20]:
        terminalreporter.write_line(f"{cpu:8.0f} {wall:8.0f} {cpu / total_cpu:6.1%}  {unit}")
    terminalreporter.write_line(f"{total_cpu:8.0f} CPU s in all, {len(_UNIT_USAGE)} units")
