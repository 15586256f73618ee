"""The Airloop prediction service (BentoML 1.4).

Run it with::

    bentoml serve airloop.bento_service:PredictionService --host 127.0.0.1 --port 3300

It serves the model named by ``AIRLOOP_SERVE_MODEL`` (default: the only spec under
``AIRLOOP_MODELS_DIR``), always the version behind the MLflow alias ``@champion``: the
registry is polled every ``AIRLOOP_SERVE_POLL_SECONDS`` (default 10) and a new champion is
loaded first and then swapped in, with no restart and no failed request. All knobs:
:class:`airloop.settings.ServeConfig`.

Endpoints (all JSON; errors are ``{"error": ...}``, BentoML's validation errors add ``detail``):

``POST /predict``  ``{<join keys>, <request fields>}`` (the spec's; see ``GET /docs.json``)
    -> 200 ``{"prediction": 0.31, "model": "<name>", "model_version": "3",
    "request_id": "...", "features_missing": false, "missing_features": []}``;
    ``prediction`` is the probability of the positive class (classification) or the predicted
    target (regression). The entity's online features
    come from the spec's Feast FeatureService. An entity with no online features (unknown or
    stale) still gets 200: the prediction is computed with those features missing (NaN),
    ``features_missing`` is true and ``missing_features`` names them.
``POST /predict_batch``  ``{"rows": [<predict body>, ...]}`` (1..``AIRLOOP_SERVE_MAX_BATCH_ROWS``
    rows, default 1000) -> 200 ``{"predictions": [<predict answer>, ...]}`` in row order, all
    from the same model version, one request id per row.
``POST /feedback``  ``{"request_id": "...", "label": 1}`` with ``Authorization: Bearer <token>``
    (``AIRLOOP_SERVE_FEEDBACK_TOKEN``) -> 200 ``{"request_id", "label", "labeled_at"}``; 401
    without the token, 403 when the service has none (feedback off); 404 if no prediction has
    that id; 400 if the label is not the number 0 or 1 (classification) or not a finite number
    (regression).
``POST /status`` -> the model version served, its run id, the last registry check and error,
    the prediction-log backlog.
``GET /docs.json`` -> the service's OpenAPI 3.1 document (also shown by BentoML's index page ``/``):
    title and description from the spec, ``info.version`` the model version served now, the
    request schemas and examples built from the spec, every error status with the body it has,
    and the bearer token of ``/feedback``. See :func:`openapi_document`.
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

import functools
import gc
import json
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
FeedbackRequest = serve.feedback_model(_SPEC)


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
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
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
STATUS_ROUTE = "/status"
DOCS_ROUTE = "/docs.json"  # BentoML's route for the OpenAPI document, answered by OpenAPIDocument
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


# --- the OpenAPI document (GET /docs.json) ---------------------------------------------------
# BentoML's own document is generic (title "airloop", version "None", its readme as the
# description) and wrong about errors (a 400's ``detail`` is a list, not a string; 401/403/413/
# 415/503/504 are missing). This one is built from the spec, the request/response models in
# airloop.serve and what the service really answers, and is served on BentoML's route.

_WORKER_SERVICE = None  # this worker's PredictionService instance, once it is up
_JSON = "application/json"
_TEXT = "text/plain"


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _served_version() -> str | None:
    service = _WORKER_SERVICE
    model = service.predictor.watcher.current if service is not None else None
    return model.version if model is not None else None


def _errors(spec, config) -> dict[str, dict]:
    """Every error status the service answers with: when, and an example of the body it sends."""
    limit, timeout = config.max_body_bytes, config.timeout_seconds

    def response(description: str, example: dict, **extra) -> dict:
        return {"description": description, "content": {_JSON: {"schema": _ref("Error"), "example": example}}, **extra}

    return {
        "400": response(
            "Invalid request: malformed JSON, wrong types (strict: `\"3\"` is not a number, `2.5` not an "
            "integer), missing or unknown fields, values out of range. `detail` lists every problem.",
            {
                "error": f"1 validation error for {PredictRequest.__name__}IODescriptor",
                "detail": [{"type": "missing", "loc": [spec.join_keys[0]], "msg": "Field required",
                            "url": "https://errors.pydantic.dev/2.14/v/missing"}],
            },
        ),
        "401": response(
            "No valid feedback token: send `Authorization: Bearer <AIRLOOP_SERVE_FEEDBACK_TOKEN>`.",
            {"error": "send the feedback token as 'Authorization: Bearer <token>'"},
            headers={"WWW-Authenticate": {"description": "`Bearer`", "schema": {"type": "string"}}},
        ),
        "403": response(
            "Feedback is switched off: the service has no AIRLOOP_SERVE_FEEDBACK_TOKEN.",
            {"error": "feedback is disabled: set AIRLOOP_SERVE_FEEDBACK_TOKEN on the service"},
        ),
        "404": response(
            "No logged prediction has this request id.",
            {"error": "no prediction with request_id '9d973270bb794b7fb76e38bb201e4600'"},
        ),
        "413": response(
            f"The body is larger than {limit} bytes (AIRLOOP_SERVE_MAX_BODY_BYTES).",
            {"error": f"request body too large: 2000000 bytes, the limit is {limit} bytes (AIRLOOP_SERVE_MAX_BODY_BYTES)"},
        ),
        "415": response(
            "The body is not JSON: send `Content-Type: application/json` (or none).",
            {"error": "unsupported Content-Type 'text/csv': send application/json"},
        ),
        "500": response(
            "An unexpected error (a bug): the server log has the traceback.",
            {"error": "An unexpected error has occurred, please check the server log."},
        ),
        "503": response(
            "Not serving right now: no @champion model loaded yet, or the feature store or the prediction "
            "store is unreachable. Retry later.",
            {"error": f"no servable @champion model for {spec.name!r} yet"},
        ),
        "504": response(
            f"No answer within {timeout:g} s (AIRLOOP_SERVE_TIMEOUT_SECONDS).",
            {"error": f"Not able to process the request in {timeout} seconds"},
        ),
    }


def _operation(summary: str, description: str, tag: str, body: dict | None, answer: str, errors: list[str],
               **extra) -> dict:
    operation = {
        "tags": [tag],
        "summary": summary,
        "description": description,
        "responses": {
            "200": {"description": "OK", "content": {_JSON: {"schema": _ref(answer)}}},
            **{code: {"$ref": f"#/components/responses/{code}"} for code in errors},
        },
        **extra,
    }
    if body is not None:
        operation["requestBody"] = body
    return operation


def _body(model: type, examples: list[dict]) -> dict:
    """A required JSON request body of this model, with example values built from the spec."""
    return {
        "required": True,
        "content": {
            _JSON: {
                "schema": _ref(model.__name__),
                "examples": {f"example_{i + 1}": {"value": value} for i, value in enumerate(examples)},
            }
        },
    }


@functools.lru_cache(maxsize=1)
def _document_without_version() -> dict:
    """Everything but ``info.version``: built once per worker, from the spec and the models."""
    from pydantic.json_schema import models_json_schema

    spec, config = _SPEC, _CONFIG
    models = [
        (PredictRequest, "validation"), (BatchRequest, "validation"), (FeedbackRequest, "validation"),
        (serve.Prediction, "serialization"), (serve.BatchPrediction, "serialization"),
        (serve.FeedbackAck, "serialization"), (serve.ServiceStatus, "serialization"), (serve.Error, "serialization"),
    ]
    _, defs = models_json_schema(models, ref_template="#/components/schemas/{model}")
    schemas = defs["$defs"]
    prediction = schemas["Prediction"]["properties"]["prediction"]
    if spec.task == "classification":
        prediction.update(minimum=0, maximum=1, description=f"The probability that {spec.target!r} is 1.")
    else:
        prediction["description"] = f"The predicted {spec.target!r}."
    schemas["Prediction"]["examples"] = [{
        "prediction": 0.31 if spec.task == "classification" else 12.5, "model": spec.name, "model_version": "3",
        "request_id": "9d973270bb794b7fb76e38bb201e4600", "features_missing": False, "missing_features": [],
    }]

    keys = " and ".join(f"the {e.name} key `{e.join_key}`" for e in spec.entities)
    fields = [f"`{name}`" for name in spec.features.request if name not in spec.join_keys]
    entities = " and ".join(e.name for e in spec.entities)
    answer = (
        f"the probability that `{spec.target}` is 1" if spec.task == "classification"
        else f"the predicted `{spec.target}`"
    )
    description = "\n\n".join([
        spec.description or f"The {spec.name} model.",
        f"Online predictions of the `{spec.name}` model ({spec.task}, target `{spec.target}`), always from the "
        "version behind the MLflow registry alias `@champion` (the document's version names the one served "
        "now). A new champion is loaded and swapped in without a restart or a failed request.",
        f"A request sends {keys} and the fields known at request time "
        f"({', '.join(fields)}); the other features are read by key from the Feast feature service "
        f"`{spec.features.service}`. An unknown or stale {entities} is still predicted: the answer says "
        f"`features_missing: true` and names them. `prediction` is {answer}. Every prediction is logged with its "
        "`request_id`; `POST /feedback` attaches the true label to it later.",
        "Errors are JSON, `{\"error\": \"<message>\"}`; a request that fails validation (400) also has `detail`, "
        f"the list of problems. Bodies are JSON only (else 415) and at most {config.max_body_bytes} bytes (413); "
        f"an answer takes at most {config.timeout_seconds:g} s (504); 503 means no champion is loaded yet or a "
        "store is unreachable. `/feedback` needs `Authorization: Bearer <AIRLOOP_SERVE_FEEDBACK_TOKEN>`.",
    ])

    def probe(text: str, **responses: dict) -> dict:
        plain = {"description": "OK", "content": {_TEXT: {"schema": {"type": "string"}}}}
        return {"get": {"tags": ["infrastructure"], "description": text, "responses": {"200": plain, **responses}}}

    every = ["400", "413", "415", "500", "503", "504"]
    return {
        "openapi": "3.1.0",
        "info": {"title": f"Airloop prediction service: {spec.name}", "description": description},
        "tags": [
            {"name": "predictions", "description": f"Predictions of `{spec.name}` by the @champion model."},
            {"name": "feedback", "description": "True labels for logged predictions (bearer token)."},
            {"name": "operations", "description": "What the service serves, and its health."},
            {"name": "infrastructure", "description": "BentoML's probes and metrics."},
        ],
        "paths": {
            PREDICT_ROUTE: {"post": _operation(
                "Predict one request",
                f"One prediction of `{spec.name}` for one {entities}: {answer}.",
                "predictions", _body(PredictRequest, serve.request_examples(spec)), "Prediction", every, operationId="predict",
            )},
            PREDICT_BATCH_ROUTE: {"post": _operation(
                "Predict many requests",
                f"1 to {config.max_batch_rows} rows (AIRLOOP_SERVE_MAX_BATCH_ROWS) in one call, answered in row "
                "order, all by the same model version, each with its own `request_id`.",
                "predictions", _body(BatchRequest, [{"rows": serve.request_examples(spec)}]), "BatchPrediction", every, operationId="predict_batch",
            )},
            FEEDBACK_ROUTE: {"post": _operation(
                "Attach the true label to a prediction",
                "The label of an earlier prediction, by its `request_id`: "
                + ("0 or 1." if spec.task == "classification" else "a finite number.")
                + " Needs the feedback token (401 without it, 403 when the service has none).",
                "feedback", _body(FeedbackRequest, serve.feedback_examples(spec)), "FeedbackAck",
                ["400", "401", "403", "404", "413", "415", "500", "503", "504"],
                operationId="feedback", security=[{"feedbackToken": []}],
            )},
            STATUS_ROUTE: {"post": _operation(
                "The model served and the service's health",
                "The version served, its run, the last registry check and error, and the prediction log's "
                "backlog. The body is ignored (send `{}` or nothing) but must be a JSON object if sent.",
                "operations",
                {"required": False, "content": {_JSON: {"schema": {"type": "object"}, "example": {}}}},
                "ServiceStatus", ["400", "413", "415", "500", "504"], operationId="status",
            )},
            "/healthz": probe("Liveness (deprecated name of /livez): 200 while the process runs."),
            "/livez": probe("Liveness: 200 while the process runs."),
            "/readyz": probe(
                "Readiness: 200 once a @champion model is loaded, 503 before.",
                **{"503": {"description": "Not ready: no @champion model loaded yet.",
                           "content": {_TEXT: {"schema": {"type": "string"}}}}},
            ),
            "/metrics": probe("Prometheus metrics (text exposition format)."),
        },
        "components": {
            "schemas": schemas,
            "responses": _errors(spec, config),
            "securitySchemes": {
                "feedbackToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The service's AIRLOOP_SERVE_FEEDBACK_TOKEN; without it set, /feedback answers 403.",
                }
            },
        },
    }


def openapi_document(model_version: str | None) -> dict:
    """The service's OpenAPI document, its version naming the model version served."""
    document = _document_without_version()
    version = f"{_SPEC.name} v{model_version}" if model_version else f"{_SPEC.name} (no model loaded yet)"
    return {**document, "info": {**document["info"], "version": version}}


class OpenAPIDocument:
    """ASGI middleware: ``GET /docs.json`` answers :func:`openapi_document` (BentoML's index page
    shows it too); everything else passes through."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("path") != DOCS_ROUTE or scope["method"] not in ("GET", "HEAD"):
            return await self.app(scope, receive, send)
        payload = json.dumps(openapi_document(_served_version())).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload if scope["method"] == "GET" else b""})


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
            # Each model's service replays only its own spill files, wherever services share a home.
            spill_dir=settings.home / "predictions" / "spill" / self.spec.name,
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
        global _WORKER_SERVICE
        _WORKER_SERVICE = self  # GET /docs.json names the version this worker serves
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

    @bentoml.api(route=FEEDBACK_ROUTE, input_spec=FeedbackRequest, output_spec=serve.FeedbackAck)
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

    @bentoml.api(route=STATUS_ROUTE)
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
PredictionService.add_asgi_middleware(OpenAPIDocument)
