"""The prediction service's own OpenAPI document (``GET /docs.json``), checked against the real server.

A real ``bentoml serve`` on a real Feast store and MLflow registry (the set-up of
tests/unit/test_serve.py). Schemathesis reads the service's schema from the server and fuzzes
every operation it documents, with valid and invalid requests, and checks each answer: no 5xx,
the status code is documented, the Content-Type is documented, the body matches the documented
schema. A second test checks that the document describes the served model: title, version,
examples and the feedback label come from the spec and the champion.

Traffic goes to 127.0.0.1 only. Hypothesis keeps no example database and its cache goes to a
temporary directory (nothing is written to the working tree); a failing operation reports the
request that caused it as a curl command.
"""

from __future__ import annotations

import collections
import importlib.util
import json
import os
import sys
import tempfile
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from airloop import serve
from airloop.testing import BentoServer

pytestmark = pytest.mark.slow
# Hypothesis' pytest plugin caches constants it finds in the source under ./.hypothesis as soon as
# a Hypothesis test is collected, example database or not: keep that out of the working tree.
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", str(Path(tempfile.gettempdir()) / "airloop-hypothesis"))

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# Per operation: ~30 generated cases, plus schemathesis' explicit examples and coverage cases.
# No shrinking: a failure is reported with the request that found it, and the run stays short.
FUZZ = settings(
    max_examples=30,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


def _test_serve():
    """tests/unit/test_serve.py as a module: its ``prepare_demo`` builds the served set-up."""
    name = "_airloop_test_serve_for_schema"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("test_serve.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(autouse=True)
def _no_leaked_tracking_uri(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(autouse=True)
def _node_id_for_schemathesis(request):
    """schemathesis 4.32's ``from_fixture`` tests read and rename ``item._nodeid``, which pytest 9.2
    no longer has (AttributeError before any request is sent). Give it one to read; pytest's own
    reports keep using ``nodeid``."""
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


@pytest.fixture(scope="module")
def demo(tmp_path_factory, demo_spec):
    home = tmp_path_factory.mktemp("schema") / "airloop"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRLOOP_HOME", str(home))  # the feature repo reads it when it is applied
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        yield _test_serve().prepare_demo(home, demo_spec)


@pytest.fixture(scope="module")
def server(demo):
    # The models directory holds several specs: a service must be told which one it serves.
    srv = BentoServer(demo.settings, demo.settings.home / "server.log", AIRLOOP_SERVE_MODEL=demo.spec.name)
    try:
        yield srv.start().wait_ready()
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def api_schema(server):
    return schemathesis.openapi.from_url(f"{server.url}/docs.json", timeout=30)


@pytest.fixture(scope="module")
def tally(request):
    """What the fuzzing saw, printed at the end of the module: requests by status, failures by check."""
    seen = {"status": collections.defaultdict(collections.Counter), "failures": collections.Counter(), "requests": 0}
    yield seen
    statuses = "; ".join(
        f"{operation} " + " ".join(f"{code}x{n}" for code, n in sorted(codes.items()))
        for operation, codes in sorted(seen["status"].items())
    )
    failures = ", ".join(f"{title} x{n}" for title, n in sorted(seen["failures"].items())) or "none"
    line = f"schemathesis: {seen['requests']} requests: {statuses}. Failing responses: {failures}."
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    if reporter is None or capture is None:  # pragma: no cover
        print(line)
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line("")
        reporter.write_line(line)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@FUZZ
def test_every_answer_matches_the_served_schema(case, server, tally):
    """Each operation of GET /docs.json, fuzzed with valid and invalid requests (one subtest each)."""
    headers = {"Authorization": f"Bearer {server.feedback_token}"} if case.path == "/feedback" else None
    response = case.call(base_url=server.url, headers=headers, timeout=30)
    tally["requests"] += 1
    probe = case.method.upper() != case.operation.method.upper()  # schemathesis tries other methods too
    tally["status"]["other methods (probes)" if probe else case.operation.label][response.status_code] += 1
    try:
        case.validate_response(response, checks=CHECKS, headers=headers)
    except FailureGroup as group:
        for failure in group.exceptions:
            tally["failures"][f"{failure.title} ({case.operation.label} -> {response.status_code})"] += 1
        raise


def _resolve(doc: dict, node: dict) -> dict:
    while "$ref" in node:
        node = doc["components"]["schemas"][node["$ref"].rsplit("/", 1)[-1]]
    return node


def test_schema_describes_the_served_model(server, demo, api_schema):
    spec = demo.spec
    doc = requests.get(f"{server.url}/docs.json", timeout=30).json()
    info = doc["info"]
    assert info["title"] == f"Airloop prediction service: {spec.name}"
    assert info["version"] == f"{spec.name} v{demo.champion}"  # the champion being served
    assert spec.description in info["description"] and "BentoML" not in info["description"]

    # Every API BentoML serves is documented.
    routes = {r["route"] for r in requests.get(f"{server.url}/schema.json", timeout=30).json()["routes"]}
    assert routes <= set(doc["paths"])

    # The example bodies come from the spec, are valid requests, and are answered with 200.
    fields = serve.request_fields(spec)
    Request = serve.request_model(spec)
    predict = doc["paths"]["/predict"]["post"]
    examples = [e["value"] for e in predict["requestBody"]["content"]["application/json"]["examples"].values()]
    assert examples and all(set(example) == set(fields) for example in examples)
    for example in examples:
        Request.model_validate_json(json.dumps(example))
        answer = requests.post(f"{server.url}/predict", json=example, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json()["model"] == spec.name and answer.json()["model_version"] == demo.champion
    ranges = _resolve(doc, predict["requestBody"]["content"]["application/json"]["schema"])["properties"]
    assert ranges["distance_km"]["minimum"] == spec.validation.ranges["distance_km"][0]
    assert ranges["distance_km"]["maximum"] == spec.validation.ranges["distance_km"][1]
    batch = doc["paths"]["/predict_batch"]["post"]["requestBody"]["content"]["application/json"]
    for example in batch["examples"].values():
        answer = requests.post(f"{server.url}/predict_batch", json=example["value"], timeout=30)
        assert answer.status_code == 200 and len(answer.json()["predictions"]) == len(example["value"]["rows"])

    # /feedback: a classification label is 0 or 1, and the bearer token is documented.
    feedback = doc["paths"]["/feedback"]["post"]
    body = _resolve(doc, feedback["requestBody"]["content"]["application/json"]["schema"])
    assert spec.task == "classification" and body["properties"]["label"]["enum"] == [0, 1]
    assert body["properties"]["label"]["type"] == "integer"
    assert feedback["security"] == [{"feedbackToken": []}]
    assert doc["components"]["securitySchemes"]["feedbackToken"]["type"] == "http"
    assert doc["components"]["securitySchemes"]["feedbackToken"]["scheme"] == "bearer"
    assert {"400", "401", "403", "404", "413", "415", "503", "504"} <= set(feedback["responses"])
    for route in ("/predict", "/predict_batch"):
        assert {"400", "413", "415", "503", "504"} <= set(doc["paths"][route]["post"]["responses"])

    # Error bodies: one documented shape, with BentoML's list of validation problems as it sends it,
    # also for the errors the fuzzing does not reach (it always sends the token and small bodies).
    error = doc["components"]["schemas"]["Error"]
    assert error["required"] == ["error"] and error["properties"]["detail"]["type"] == "array"
    bad = requests.post(f"{server.url}/predict", json={**examples[0], "order_hour": 99}, timeout=30)
    assert set(bad.json()) == {"error", "detail"} and bad.json()["detail"][0]["loc"] == ["order_hour"]
    too_big = json.dumps({"rows": [examples[0]] * 20_000}).encode()
    token = {"Authorization": f"Bearer {server.feedback_token}"}
    answers = {
        ("/predict", 400): bad,
        ("/feedback", 401): requests.post(f"{server.url}/feedback", json={"request_id": "abc", "label": 1}, timeout=30),
        ("/feedback", 404): requests.post(
            f"{server.url}/feedback", json={"request_id": "abc", "label": 1}, headers=token, timeout=30
        ),
        ("/predict_batch", 413): requests.post(
            f"{server.url}/predict_batch", data=too_big, headers={"Content-Type": "application/json"}, timeout=30
        ),
        ("/predict", 415): requests.post(
            f"{server.url}/predict", data=b"1,2", headers={"Content-Type": "text/csv"}, timeout=30
        ),
    }
    for (route, status), answer in answers.items():
        assert answer.status_code == status and str(status) in doc["paths"][route]["post"]["responses"], answer.text
        assert answer.headers["content-type"] == "application/json"
        api_schema[route]["POST"].validate_response(answer)  # the body has the documented shape
        assert ("detail" in answer.json()) == (status == 400)
    assert answers[("/feedback", 401)].headers["WWW-Authenticate"] == "Bearer"
