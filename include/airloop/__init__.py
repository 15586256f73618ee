"""Airloop: the closed-loop ML library behind the Airloop DAGs.

Stage modules hold plain functions that run without Airflow; heavy libraries are imported
inside those functions, so DAG files can import the modules at parse time. The exceptions are
``bento_service`` and ``feast_online``, which BentoML and Feast load and which import them at
the top. Import each module by name (``from airloop import ingest``); a package re-exports its
public names and lists them in its ``__all__``.

Stages, in the order a model lives them:

- ingest: ``ingest`` (the landing gate, DVC versioning, quarantine, publishing) on
  ``validation`` (a package: the typed CSV read, the Great Expectations suite, the records);
- features: ``features`` (a package: declared aggregations, the model's job, Feast apply,
  materialize, training sets, online lookups) on ``daily_windows`` (the day-window engine),
  ``table_changes`` (what changed since the last refresh) and ``feast_online`` (bulk writes);
- train: ``train`` (training set, fit, evaluate, log and register) and ``model_inputs``
  (string inputs encoded inside the model);
- promotion: ``promotion`` (the champion/challenger gate and rollback);
- package: ``package`` (the Bento of the champion);
- serve: ``serve`` (a package: request schema, online lookup and predict, the champion
  watcher) behind ``bento_service`` (the HTTP service);
- monitoring: ``monitoring`` (a package: Evidently drift and quality checks, reports, the
  retrain policy's records).

Shared by the stages:

- ``registry``: the MLflow registry (aliases, history, loading models without pickle);
- ``prediction_log`` (a package): the prediction store, its writer and readers;
- ``decisions``: pure decisions (metric direction, promotion, drift verdict, retrain policy);
- ``spec`` (a package): model specs, their tables and features, and their loading;
  ``settings``: all configuration (environment variables); ``errors``: the exceptions;
  ``fileio``: atomic writes and UTC helpers; ``advisory_lock``: locks in the database, so
  that services starting together create their tables once;
- ``orchestration``: what DAG files share (Params, assets, callbacks); ``notifiers``: the
  failure alerts; ``preload``: heavy libraries imported once before tasks fork;
- ``model_overview``: a model at a glance (registry, service, records) for the UI plugin;
  ``timeline``: where the loop's wall time goes; ``cli``: the ``airloop`` command, over
  ``client``, a small HTTP client of Airflow's REST API and the Models JSON API;
- ``demo`` (a package): the closed loop on one machine; ``testing`` (a package): the test
  and demo harness.

This package's ``__all__`` names ``__version__`` only: listing the modules would make
``from airloop import *`` import every one of them, BentoML and Feast included.
"""

import os

# The machines Airloop runs on often have no route to the tools' telemetry endpoints;
# switch it off so nothing waits on a connection that cannot succeed.
for _name, _value in (
    ("BENTOML_DO_NOT_TRACK", "true"),
    ("DVC_NO_ANALYTICS", "1"),
    ("GX_ANALYTICS_ENABLED", "false"),
    ("DO_NOT_TRACK", "1"),
    ("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false"),
    # MLflow's own model loaders unpickle unless told not to; Airloop loads models without
    # pickle (airloop.registry.load_sklearn_model).
    ("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false"),
):
    os.environ.setdefault(_name, _value)

__version__ = "0.1.0"

__all__ = ["__version__"]
