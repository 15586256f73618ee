"""Run Airloop DAGs for real from tests, scripts and the demo.

- ``run_dag``: one DAG run in this process with ``dag.test()`` on a migrated metadata DB
  (:mod:`.dag_runs`, with ``run_demo``, the demo as a subprocess).
- ``AirflowStack``: a real api-server, scheduler, dag-processor and triggerer (and optionally a
  Celery worker) as subprocesses, driven over the REST API v2 with a JWT, for cross-DAG flows
  (Asset schedules, TriggerDagRunOperator) that ``dag.test()`` cannot run (:mod:`.airflow_stack`).
- ``AirflowREST``: a user's session with the REST API v2 of any Airflow (``AirflowStack`` is
  one, the compose rehearsals use it on theirs): every run, page by page, trigger, wait, task
  instances, Asset events (:mod:`.airflow_rest`).
- ``BentoServer``: the prediction service started with ``bentoml serve`` as a subprocess;
  ``RedisServer``, ``PostgresServer``: private servers on free ports in a directory of their
  own, for fault tests that stop and restart them, never the machine's shared ones
  (:mod:`.servers`).
- :mod:`.processes`: free ports, signals held while a child is spawned, stopping process groups.
"""

from airloop.testing.airflow_rest import AirflowREST
from airloop.testing.airflow_stack import AirflowStack
from airloop.testing.dag_runs import DagRunResult, load_dag, migrate_db, run_dag, run_demo
from airloop.testing.processes import deferred_signals, free_port
from airloop.testing.servers import BentoServer, PostgresServer, RedisServer

__all__ = [
    "AirflowREST",
    "AirflowStack",
    "BentoServer",
    "DagRunResult",
    "PostgresServer",
    "RedisServer",
    "deferred_signals",
    "free_port",
    "load_dag",
    "migrate_db",
    "run_dag",
    "run_demo",
]
