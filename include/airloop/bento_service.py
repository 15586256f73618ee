"""The Airloop prediction service (BentoML 1.4).

Run it with::

    bentoml serve airloop.bento_service:PredictionService --host 127.0.0.1 --port 3300

It serves the model named by ``AIRLOOP_SERVE_MODEL`` (default: the only spec under
``AIRLOOP_MODELS_DIR``), always the version behind the MLflow alias ``@champion``: the
registry is polled every ``AIRLOOP_SERVE_POLL_SECONDS`` (default 10) and a new champion is
loaded first and then swapped in, with no restart and no failed request. All knobs:
:class:`airloop.settings.ServeConfig`.

Endpoints (all JSON; errors are ``{"error": ...}``, BentoML's validation errors add ``detail``):

``POST /predict``  ``{"restaurant_id": 1001, "distance_km": 3.2, "items": 2, "order_hour": 19}``
    -> 200 ``{"prediction": 0.31, "model": "late_delivery", "model_version": "3",
    "request_id": "...", "features_missing": false, "missing_features": []}``;
    ``prediction`` is the probability that the order is late. The entity's online features
    come from the spec's Feast FeatureService. An entity with no online features (unknown or
    stale) still gets 200: the prediction is computed with those features missing (NaN),
    ``features_missing`` is true and ``missing_features`` names them.
``POST /predict_batch``  ``{"rows": [<predict body>, ...]}`` (1..``AIRLOOP_SERVE_MAX_BATCH_ROWS``
    rows, default 1000) -> 200 ``{"predictions": [<predict answer>, ...]}`` in row order, all
    from the same model version, one request id per row.
``POST /feedback``  ``{"request_id": "...", "label": 1}`` with ``Authorization: Bearer <token>``
    (``AIRLOOP_SERVE_FEEDBACK_TOKEN``) -> 200 ``{"request_id", "label", "labeled_at"}``; 401
    without the token, 403 when the service has none (feedback off); 404 if no prediction has
    that id; 400 if the label is not 0/1 (classification).
``POST /status`` -> the model version served, its run id, the last registry check and error,
    the prediction-log backlog.
BentoML's own ``GET /healthz``, ``/livez``, ``/readyz`` (503 until a champion is loaded) and
``/metrics`` stay as they are. BentoML's OpenTelemetry request spans are skipped on
``/predict`` and ``/predict_batch`` unless ``AIRLOOP_SERVE_TRACE_PREDICT=true``: BentoML collects
no trace until its tracing is configured, and the span alone cost ~0.5 ms per request.

Bad requests get a 4xx, never a 500: malformed JSON, wrong types (strict: ``"3"`` is not a
number, ``2.0`` is not an integer), missing or unknown fields and out-of-range values
(the spec's validation ranges) -> 400 with the offending fields in ``detail``; a body larger
than ``AIRLOOP_SERVE_MAX_BODY_BYTES`` (default 1 MiB) -> 413. No champion yet, or the feature
store or prediction store unreachable -> 503 with the reason. No answer within
``AIRLOOP_SERVE_TIMEOUT_SECONDS`` (default 10) -> 504.

Every prediction is logged to ``settings.prediction_store`` (see
:class:`airloop.prediction_log.PredictionLog` for what a crash can lose; a clean shutdown, SIGTERM
or SIGINT, loses nothing). The service refuses to start if the prediction store is
unreachable: the worker logs ``prediction store <url> is not usable: <reason>`` and exits
before accepting a request. With ``BENTOML_CONTAINERIZED=true`` (set it wherever the server
runs under a supervisor: compose, Kubernetes) the whole server then exits with status 1;
without it BentoML's process manager restarts the worker every ~10 s until the store is back,
and ``/readyz`` stays unanswered meanwhile.
"""

from __future__ import annotations

import gc
import logging
import sys
import warnings

import anyio
import anyio.to_thread
import bentoml
import feast  # noqa: F401  (imported before the warning filter below; see there)
from starlette.responses import JSONResponse

from airloop import serve
from airloop.errors import ServeError
from airloop.prediction_log import PredictionLog, safe_url
from airloop.settings import get_settings, require_strong_secrets, serve_config

log = logging.getLogger("airloop.bento_service")

# BentoML 1.4.39 reads ``model_fields`` on request instances, which pydantic >= 2.11 warns
# about on every request (two stderr lines each). Importing feast puts a catch-all "once"
# DeprecationWarning filter at the front of the list, so this filter must come after it.
warnings.filterwarnings("ignore", message=".*model_fields.*", category=DeprecationWarning)

_CONFIG = serve_config()
_SPEC = serve.serving_spec(_CONFIG)
PredictRequest = serve.request_model(_SPEC)
BatchRequest = serve.batch_request_model(_SPEC, _CONFIG.max_batch_rows)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class RequestGuard:
    """ASGI middleware in front of the APIs: JSON only (415), bodies up to ``max_bytes`` (413).

    The body is read (up to the limit) before the app sees it, so a chunked upload without
    Content-Length is capped too. An oversized declared body is drained, not buffered, so the
    client can read the 413 instead of seeing a reset connection. A POST without a
    Content-Type is taken as JSON.
    """

    def __init__(self, app, max_bytes: int, feedback_token: str | None = None):
        self.app = app
        self.max_bytes = max_bytes
        self.feedback_token = feedback_token.encode() if feedback_token else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        if scope.get("path") in WRITE_ROUTES and not self._authorized(headers):
            await self._drain(receive, limit=64 * self.max_bytes)
            if self.feedback_token is None:
                return await self._reply(send, 403, "feedback is disabled: set AIRLOOP_SERVE_FEEDBACK_TOKEN on the service")
            return await self._reply(
                send, 401, "send the feedback token as 'Authorization: Bearer <token>'", {b"www-authenticate": b"Bearer"}
            )
        media_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if media_type and media_type != b"application/json" and not media_type.endswith(b"+json"):
            await self._drain(receive, limit=64 * self.max_bytes)
            return await self._reply(
                send, 415, f"unsupported Content-Type {media_type.decode(errors='replace')!r}: send application/json"
            )
        declared = headers.get(b"content-length")
        try:
            too_big = declared is not None and int(declared) > self.max_bytes
        except ValueError:
            return await self._reply(send, 400, "invalid Content-Length header")
        if too_big:
            await self._drain(receive, limit=64 * self.max_bytes)
            return await self._reply(send, 413, self._message(int(declared)))
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # client went away
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await self._drain(receive, limit=64 * self.max_bytes)
                return await self._reply(send, 413, self._message(None))
            if not message.get("more_body", False):
                break
        delivered = False

        async def replay():
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _message(self, size: int | None) -> str:
        got = f"{size} bytes" if size is not None else "more"
        return f"request body too large: {got}, the limit is {self.max_bytes} bytes (AIRLOOP_SERVE_MAX_BODY_BYTES)"

    @staticmethod
    async def _drain(receive, limit: int) -> None:
        seen = 0
        while seen <= limit:
            message = await receive()
            if message["type"] != "http.request":
                return
            seen += len(message.get("body", b""))
            if not message.get("more_body", False):
                return

    def _authorized(self, headers: dict[bytes, bytes]) -> bool:
        """Whether the request carries the feedback token (compared in constant time)."""
        import hmac

        scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
        return (
            self.feedback_token is not None
            and scheme.lower() == b"bearer"
            and hmac.compare_digest(token.strip(), self.feedback_token)
        )

    @staticmethod
    async def _reply(send, status: int, message: str, extra: dict[bytes, bytes] | None = None) -> None:
        import json

        payload = json.dumps({"error": message}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers + list((extra or {}).items())})
        await send({"type": "http.response.body", "body": payload})


def _setup_logging() -> None:
    logger = logging.getLogger("airloop")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


PREDICT_ROUTE = "/predict"
PREDICT_BATCH_ROUTE = "/predict_batch"
FEEDBACK_ROUTE = "/feedback"
# Routes that change stored data: they need the feedback token (AIRLOOP_SERVE_FEEDBACK_TOKEN).
WRITE_ROUTES = frozenset({FEEDBACK_ROUTE})
# Regexes matched against the request path by BentoML's OpenTelemetry middleware.
_UNTRACED_URLS = [f"{route}$" for route in (PREDICT_ROUTE, PREDICT_BATCH_ROUTE)]


def _end_with_the_server() -> None:
    """Have the kernel send this worker SIGTERM when its server process dies, even by SIGKILL.

    BentoML starts each worker in a process group of its own, so a kill of the server (or of
    its group) misses it, and an orphaned worker keeps answering with nobody supervising it.
    SIGTERM lets it shut down as usual: the prediction log is flushed.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    pr_set_pdeathsig = 1  # <linux/prctl.h>
    if ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0) != 0:
        log.warning("could not ask to stop with the server (prctl errno %d)", ctypes.get_errno())


@bentoml.service(
    name="airloop",
    labels={"airloop.model": _SPEC.name},
    # BentoML keeps every request's timeout timer (and the objects it refers to) alive for the
    # whole timeout, finished or not: a long timeout means more retained garbage per second.
    traffic={"timeout": _CONFIG.timeout_seconds},
    threads=_CONFIG.threads,
    workers=_CONFIG.workers,
    logging={"access": {"enabled": _CONFIG.access_log}},
    tracing={} if _CONFIG.trace_predict else {"excluded_urls": _UNTRACED_URLS},
)
class PredictionService:
    """Online predictions with the ``@champion`` model; see the module docstring."""

    def __init__(self) -> None:
        _end_with_the_server()
        _setup_logging()
        require_strong_secrets()  # e.g. a change-me feedback token: the worker does not start
        settings = get_settings()
        config = serve_config()
        self.spec = _SPEC
        # Fails here, and so the server does not start, if the prediction store is unreachable.
        self.log = PredictionLog(
            settings=settings,
            flush_seconds=config.flush_seconds,
            batch_size=config.log_batch_size,
            max_pending=config.max_pending,
            max_spill_bytes=config.max_spill_bytes,
        )
        try:
            self.predictor = serve.Predictor(
                self.spec, settings, log=self.log, poll_seconds=config.poll_seconds
            ).start()
        except BaseException:
            self.log.close()
            raise
        self._predict_threads: anyio.CapacityLimiter | None = None
        # Everything loaded so far (Feast, MLflow, the model: ~0.5M objects) lives as long as
        # the process. Frozen, full collections skip it: they took 250-450 ms here, now ~25 ms.
        gc.collect()
        gc.freeze()
        log.info(
            "serving %s; prediction log: %s; %s", self.spec.name, safe_url(self.log.url),
            self.predictor.watcher.status(),
        )

    def __is_ready__(self) -> bool:
        return self.predictor.ready

    @bentoml.api(route=PREDICT_ROUTE, input_spec=PredictRequest, output_spec=serve.Prediction)
    async def predict(self, **row) -> serve.Prediction:
        """One prediction; unknown entities get ``features_missing: true`` (see module docs)."""
        try:
            if not _CONFIG.predict_in_thread:  # see ServeConfig.predict_in_thread
                return self.predictor.predict([row])[0].answer()
            if self._predict_threads is None:  # created on the event loop, as anyio requires
                self._predict_threads = anyio.CapacityLimiter(_CONFIG.threads)
            scored = await anyio.to_thread.run_sync(self.predictor.predict, [row], limiter=self._predict_threads)
            return scored[0].answer()
        except ServeError as exc:
            return _error(exc.status, str(exc))

    @bentoml.api(route=PREDICT_BATCH_ROUTE, input_spec=BatchRequest, output_spec=serve.BatchPrediction)
    def predict_batch(self, rows: list) -> serve.BatchPrediction:
        """Many predictions in one call, in row order, all with the same model version."""
        try:
            scored = self.predictor.predict([r.model_dump() for r in rows])
        except ServeError as exc:
            return _error(exc.status, str(exc))
        return serve.BatchPrediction(predictions=[s.answer() for s in scored])

    @bentoml.api(route=FEEDBACK_ROUTE, input_spec=serve.Feedback, output_spec=serve.FeedbackAck)
    async def feedback(self, request_id: str, label: float) -> serve.FeedbackAck:
        """Attach the true label to a logged prediction (404 if the request id is unknown)."""
        if self.spec.task == "classification" and label not in (0, 1):
            return _error(400, f"label must be 0 or 1 for the classification model {self.spec.name!r}")
        try:
            # Waits for the log to write pending rows: run it off the event loop.
            labeled_at = await anyio.to_thread.run_sync(
                self.log.attach_label, request_id, label, _CONFIG.timeout_seconds / 2
            )
        except ServeError as exc:
            return _error(exc.status, str(exc))
        return serve.FeedbackAck(request_id=request_id, label=label, labeled_at=labeled_at.isoformat())

    @bentoml.api(route="/status")
    def status(self) -> dict:
        """The model served and the health of the registry poll and the prediction log."""
        return {
            **self.predictor.watcher.status(),
            "prediction_log": {
                "store": safe_url(self.log.url),
                "pending": self.log.pending,
                "written": self.log.written,
                "failures": self.log.failures,
                "last_error": self.log.last_error,
            },
        }

    @bentoml.on_shutdown
    def shutdown(self) -> None:
        """Stop polling, then write every queued prediction before the process exits."""
        self.predictor.stop()
        self.log.close()
        log.info("prediction log closed: %d rows written", self.log.written)


PredictionService.add_asgi_middleware(
    RequestGuard, max_bytes=_CONFIG.max_body_bytes, feedback_token=_CONFIG.feedback_token
)
