"""Serving stage: the champion model, online features, predictions and the prediction log.

Everything here runs in-process without BentoML; ``airloop.bento_service`` wraps it in an
HTTP service. The pieces:

- :class:`ChampionWatcher` keeps the ``@champion`` version of a model in memory and polls the
  MLflow registry every ``AIRLOOP_SERVE_POLL_SECONDS`` (default 10). When the alias moves it
  loads and checks the new version first, then swaps one reference: a request that already
  took the old model finishes with it, the next one gets the new model, and nothing restarts.
- :func:`lookup_and_predict` reads a row's online features through the spec's Feast
  FeatureService, builds the model input BY NAME (``model.feature_names_in_`` or the MLflow
  signature; Feast does not keep feature order) and predicts. :class:`Predictor` combines it
  with the watcher and the log.
- :class:`~airloop.prediction_log.PredictionLog` records every prediction the
  :class:`Predictor` makes.

Unknown entities: a row whose entity has no online features (a new key, or values older
than the view's TTL) is still predicted: the missing values go to the model as NaN
(HistGradientBoosting routes them natively) and the answer says ``features_missing: true``
with the names in ``missing_features``. Callers should treat such a prediction as a
cold-start estimate. It is logged like any other prediction.

The public names are re-exported here; import them from ``airloop.serve``. The modules
behind them, one concern each:

- ``schema``: the HTTP request and response models built from the spec
  (:func:`request_model`, :class:`Prediction`, :class:`ServiceStatus`, :class:`Error`, ...);
- ``champion``: :class:`ChampionWatcher`, the ``@champion`` model and its swaps;
- ``predictor``: :func:`lookup_and_predict`, :class:`Predictor` and what a model needs to be
  served (:func:`check_servable`, :func:`serving_spec`);
- ``client``: the running service from outside (:func:`service_status`,
  :func:`wait_until_serving`).

Heavy libraries (mlflow, feast, pandas, sqlalchemy) are imported inside functions.
"""

from airloop.errors import ServiceUnreachable
from airloop.serve.champion import ChampionWatcher
from airloop.serve.client import service_status, wait_until_serving
from airloop.serve.predictor import (
    Predictor,
    Scored,
    check_servable,
    lookup_and_predict,
    model_frame,
    served_names,
    serving_spec,
)
from airloop.serve.schema import (
    BatchPrediction,
    Error,
    FeedbackAck,
    Prediction,
    PredictionLogStatus,
    ServiceStatus,
    ValidationIssue,
    batch_request_model,
    feedback_examples,
    feedback_model,
    request_examples,
    request_fields,
    request_model,
)

__all__ = [
    "BatchPrediction",
    "ChampionWatcher",
    "Error",
    "FeedbackAck",
    "Prediction",
    "PredictionLogStatus",
    "Predictor",
    "Scored",
    "ServiceStatus",
    "ServiceUnreachable",
    "ValidationIssue",
    "batch_request_model",
    "check_servable",
    "feedback_examples",
    "feedback_model",
    "lookup_and_predict",
    "model_frame",
    "request_examples",
    "request_fields",
    "request_model",
    "served_names",
    "service_status",
    "serving_spec",
    "wait_until_serving",
]
