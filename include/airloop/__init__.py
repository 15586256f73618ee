"""Airloop: the closed-loop ML library behind the Airloop DAGs.

Stage modules (``ingest``, ``features``, ``train``, ``serve``, ``monitoring``) hold plain
functions that run without Airflow. Heavy libraries are imported inside those functions.
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
