"""The Models view (``/airloop/models/``) on a real MLflow registry, through a real api-server.

One module-wide setup: an AIRLOOP_HOME with two trained versions of the demo model (v1 promoted
by the gate; v2, trained on shuffled labels, rejected at the floor), a rollback whose actor and
reason are hostile HTML, and two drift checks logged to MLflow and decided by the retrain policy.
Airflow's api-server (where plugins live; nothing else is needed) starts while the models train.
Each model's prediction service is configured at a port of its own where nothing listens
(``AIRLOOP_SERVE_URL`` for late_delivery, ``AIRLOOP_SERVE_URL__<MODEL>`` for the other specs in
the models directory, which the view lists too, untrained).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from airloop.settings import Settings
from airloop.spec import load_specs
from airloop.testing import AirflowStack, free_port

pytestmark = pytest.mark.slow

HOSTILE_ACTOR = '"><script>alert("by")</script>'
HOSTILE_REASON = '<img src=x onerror=alert(1)> rolled back by hand'
MLFLOW_UI = "http://127.0.0.1:5999"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--no-first-run",
]


class ApiServer(AirflowStack):
    """Only Airflow's api-server: the view needs no scheduler. Up once it issues a login token."""

    def __init__(self, home: Path, env: dict[str, str]) -> None:
        super().__init__(home, env=env, components=("api-server",))

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.procs["api-server"].poll() is None:
            try:
                self.token()
                return
            except requests.RequestException as exc:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no login token after {timeout}s: {exc}") from exc
                time.sleep(0.5)
        raise RuntimeError(f"api-server exited:\n{self.logs('api-server')[-3000:]}")


@dataclass
class Built:
    settings: Settings
    spec: object
    champion: str
    challenger: str
    champion_metrics: dict
    challenger_metrics: dict
    checks: list  # DriftCheck, oldest first
    report_id: str  # the check with an HTML report


def _record_checks(spec, settings, champion: str) -> list:
    """Two drift checks as the monitor DAG records them: logged to MLflow, then decided."""
    from airloop import monitoring

    end = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    checks = []
    for hours_ago, status, share, pred, quality in (
        (24, "ok", 0.1, 0.02, {"labelled_rows": 300, "metric": "roc_auc", "value": 0.88, "drop": 0.01,
                               "metrics": {"roc_auc": 0.88}, "degraded": False}),
        (0, "drift", 0.75, 0.31, {"labelled_rows": 250, "metric": "roc_auc", "value": 0.71, "drop": 0.18,
                                  "metrics": {"roc_auc": 0.71}, "degraded": True}),
    ):
        window_end = end - dt.timedelta(hours=hours_ago)
        check = monitoring.DriftCheck(
            model=spec.name, report_id=monitoring.new_report_id(spec, window_end), status=status,
            window_start=window_end - dt.timedelta(hours=24), window_end=window_end, rows=1200, message=status,
            champion_version=champion, drift_share_threshold=spec.drift.drift_share, drifted_share=share,
            prediction_drift=pred, prediction_drifted=status == "drift", quality=quality,
            signals=["data drift"] if status == "drift" else [],
        )
        check.mlflow_run_id = monitoring.log_check(spec, check, settings)
        monitoring.decide_and_record(spec, check, training_active=False, now=window_end, settings=settings)
        checks.append(check)
    return checks


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Settings:
    """The settings of a fresh AIRLOOP_HOME whose prediction service URLs answer nothing."""
    from airloop.settings import ensure_dirs, environ, get_settings, serve_url_env

    path = tmp_path_factory.mktemp("models-view") / "airloop"
    # late_delivery at AIRLOOP_SERVE_URL; every other model at a URL of its own.
    others = {
        serve_url_env(s.name): f"http://127.0.0.1:{free_port()}" for s in load_specs() if s.name != "late_delivery"
    }
    with environ({"AIRLOOP_HOME": str(path), "AIRLOOP_SERVE_URL": f"http://127.0.0.1:{free_port()}",
                  **others, "MLFLOW_TRACKING_URI": None}):
        return ensure_dirs(get_settings())


@pytest.fixture(scope="module")
def stack(home):
    """Airflow's api-server on ``home``, starting in the background."""
    server = ApiServer(home.home / "airflow", env={**home.as_env(), "AIRLOOP_MLFLOW_UI_URL": MLFLOW_UI})
    failure: list[BaseException] = []

    def start() -> None:
        try:
            server.start()
        except BaseException as exc:  # noqa: BLE001 - raised in the test thread by `site`
            failure.append(exc)

    starting = threading.Thread(target=start, daemon=True)
    starting.start()
    server.starting, server.failure = starting, failure
    try:
        yield server
    finally:
        starting.join()
        server.stop()


@pytest.fixture(scope="module")
def built(home, stack, demo_spec, train_example_versions) -> Built:
    """The registry and records the view shows (trained while the stack starts)."""
    from airloop import promotion, registry

    spec, settings = demo_spec, home
    ((v1, m1), (v2, m2)), holdout = train_example_versions(spec, settings)
    assert promotion.gate(spec, v1, holdout, m1, actor="manual__2026-01-01T00:00:00+00:00", settings=settings).promoted
    assert not promotion.gate(spec, v2, holdout, m2, actor="test", settings=settings).promoted
    promotion.rollback(spec, v1, actor=HOSTILE_ACTOR, reason=HOSTILE_REASON, settings=settings)
    assert registry.champion_version(spec, settings) == v1
    checks = _record_checks(spec, settings, v1)
    report = settings.reports_dir / spec.name / f"{checks[-1].report_id}.html"
    report.write_text("<!doctype html><title>drift report</title><p>Dataset Drift</p>")
    return Built(settings, spec, v1, v2, m1, m2, checks, checks[-1].report_id)


@pytest.fixture(scope="module")
def site(stack, built) -> AirflowStack:
    stack.starting.join(timeout=300)
    if stack.failure:
        raise stack.failure[0]
    assert not stack.starting.is_alive(), "the Airflow stack did not start"
    return stack


# -- the library function ----------------------------------------------------------------------


def test_overview_shows_champion_challenger_metrics_and_floors(built):
    from airloop.model_overview import Links, overview

    links = Links(mlflow=MLFLOW_UI)
    facts = overview(built.spec, built.settings, links=links)
    assert facts["promotion"] == {"metric": "roc_auc", "greater_is_better": True, "min_improvement": 0.002,
                                  "floors": {"roc_auc": 0.7}}
    reg = facts["registry"]
    assert reg["error"] is None and reg["registered"] is True and reg["latest"] is None

    champion, challenger = reg["champion"], reg["challenger"]
    assert champion["version"] == built.champion and "champion" in champion["aliases"]
    assert champion["metrics"] == pytest.approx(built.champion_metrics)
    assert champion["score"] == {"metric": "roc_auc", "value": pytest.approx(built.champion_metrics["roc_auc"]),
                                 "greater_is_better": True}
    assert champion["floors"] == [{"metric": "roc_auc", "floor": 0.7, "greater_is_better": True,
                                   "value": pytest.approx(built.champion_metrics["roc_auc"]), "passes": True}]
    assert champion["gate"] == "promoted" and champion["passes_floors"]

    assert challenger["version"] == built.challenger and challenger["gate"] == "rejected"
    assert built.challenger_metrics["roc_auc"] < 0.7
    assert challenger["floors"][0]["passes"] is False and not challenger["passes_floors"]
    assert "misses the floor 0.7" in challenger["gate_reason"]

    # Links are URLs into the MLflow UI, never paths of the local store.
    run = champion["links"]["mlflow_run"]
    assert run.startswith(f"{MLFLOW_UI}/#/experiments/") and run.endswith(f"/runs/{champion['run_id']}")
    assert champion["links"]["mlflow_version"] == f"{MLFLOW_UI}/#/models/late_delivery/versions/{built.champion}"
    assert str(built.settings.home) not in json.dumps(facts)


def test_overview_shows_history_and_drift_checks(built):
    from airloop.model_overview import overview

    facts = overview(built.spec, built.settings)
    events = facts["history"]["events"]
    assert facts["history"]["error"] is None
    assert [(e["action"], e["version"]) for e in events] == [
        ("rollback", built.champion), ("reject", built.challenger), ("promote", built.champion)]
    assert events[0]["reason"] == HOSTILE_REASON and events[0]["links"]["airflow_run"] is None
    # Made inside a train DAG run: linked to that run's page in the Airflow UI.
    run_page = "/dags/late_delivery__train/runs/manual__2026-01-01T00%3A00%3A00%2B00%3A00"
    assert events[2]["links"]["airflow_run"] == run_page

    drift = facts["drift"]
    assert drift["error"] is None and drift["total"] == 2
    newest, oldest = drift["checks"]
    assert newest["report_id"] == built.report_id and oldest["report_id"] == built.checks[0].report_id
    assert newest["status"] == "drift" and newest["drifted_share"] == 0.75 and newest["prediction_drift"] == 0.31
    assert newest["quality"] == {"metric": "roc_auc", "value": 0.71, "drop": 0.18, "labelled_rows": 250}
    # One drift window of the two in a row the spec asks for: recorded, no retrain yet.
    assert newest["quality_degraded"] is True and newest["decision"]["trigger"] is False
    assert newest["decision"]["reason"]
    assert newest["links"]["report"] == f"/airloop/files/reports/late_delivery/{built.report_id}.html"
    assert oldest["links"]["report"] is None  # no HTML report on disk: no link
    assert facts["links"]["train"] == "/dags/late_delivery__train"
    # Without an MLflow UI configured there are no MLflow links (a sqlite store has no UI).
    assert facts["registry"]["champion"]["links"]["mlflow_run"] is None


def test_an_unreachable_service_is_a_warning_not_a_blank(built):
    from airloop.model_overview import overview

    serving = overview(built.spec, built.settings)["serving"]
    assert serving["url"] == built.settings.serve_url_for("late_delivery")  # the model's own service
    assert serving["state"] == "unreachable" and serving["model_version"] is None
    assert serving["warning"].startswith("service unreachable") and serving["error"]
    assert serving["champion_version"] == built.champion


@pytest.mark.parametrize(
    ("status", "state", "warned"),
    [
        ({"model": "late_delivery", "model_version": "1"}, "serving_champion", None),
        ({"model": "late_delivery", "model_version": "2", "last_error": "UntrustedModel: refused"},
         "other_version", "serves v2, but @champion is v1"),
        ({"model": "eta_minutes", "model_version": "1"}, "other_model", "serves model 'eta_minutes'"),
        ({"model": "late_delivery", "model_version": None, "last_error": "no @champion alias"},
         "no_model_loaded", "has no model loaded (last error: no @champion alias)"),
    ],
)
def test_served_version_is_compared_with_the_champion(demo_spec, status, state, warned):
    from airloop.model_overview import serving_facts

    service = {"url": "http://bento:3000", "status": status, "unreachable": False, "error": None}
    facts = serving_facts(demo_spec, "1", service)
    assert facts["state"] == state
    assert (facts["warning"] is None) if warned is None else (warned in facts["warning"])


def test_a_broken_registry_is_an_error_not_no_model(built, tmp_path):
    from airloop.model_overview import overview

    broken = tmp_path / "mlflow.db"
    broken.write_bytes(b"this is not a database" * 100)
    settings = dataclasses.replace(built.settings, mlflow_tracking_uri=f"sqlite:///{broken}")
    facts = overview(built.spec, settings)
    assert facts["registry"]["error"] and facts["registry"]["champion"] is None
    assert facts["registry"]["registered"] is None  # unknown, not "not registered"
    assert facts["history"]["error"]
    assert facts["serving"]["state"] == "unreachable"


def test_a_model_never_trained_is_said_so(built):
    from airloop.model_overview import overview

    spec, settings = built.spec.model_copy(update={"name": "never_trained"}), built.settings
    facts = overview(spec, settings)
    assert facts["registry"] == {"error": None, "registered": False, "champion": None, "challenger": None,
                                 "latest": None}
    assert facts["history"] == {"events": [], "total": 0, "error": None}
    assert facts["drift"]["checks"] == [] and facts["drift"]["error"] is None
    assert not (settings.reports_dir / spec.name).exists()  # reading created nothing


# -- through Airflow's api-server --------------------------------------------------------------


def test_the_api_needs_a_login(site):
    for path in ("/airloop/models/", "/airloop/models/api/models", "/airloop/models/api/models/late_delivery"):
        assert requests.get(f"{site.url}{path}", timeout=30).status_code in (401, 403), path
        forged = {"Authorization": "Bearer eyJhbGciOiJIUzUxMiJ9.eyJzdWIiOiJhZG1pbiJ9.c2lnbmF0dXJl"}
        assert requests.get(f"{site.url}{path}", headers=forged, timeout=30).status_code in (401, 403), path
    for path in ("/airloop/models/docs", "/airloop/models/openapi.json", "/airloop/openapi.json"):
        resp = requests.get(f"{site.url}{path}", headers={"Authorization": f"Bearer {site.token()}"}, timeout=30)
        assert resp.status_code == 404 and "openapi" not in resp.text.lower(), path


def test_the_api_returns_the_same_facts(site, built):
    headers = {"Authorization": f"Bearer {site.token()}"}
    everything = requests.get(f"{site.url}/airloop/models/api/models", headers=headers, timeout=60)
    assert everything.status_code == 200, everything.text[:500]
    assert "sandbox" in everything.headers["content-security-policy"]
    body = everything.json()
    # Every spec in the models directory (two examples side by side), each asked at its own
    # prediction service's URL; only late_delivery was trained here.
    names = [spec.name for spec in load_specs(built.settings.models_dir)]
    assert len(names) >= 2 and [m["model"] for m in body["models"]] == names
    urls = {name: built.settings.serve_url_for(name) for name in names}
    assert len(set(urls.values())) == len(names), urls
    assert sorted((s["models"], s["url"], s["unreachable"]) for s in body["services"]) == sorted(
        ([name], url, True) for name, url in urls.items())
    for other in body["models"]:
        assert other["serving"]["url"] == urls[other["model"]] and other["serving"]["state"] == "unreachable"
        if other["model"] != "late_delivery":  # untrained: said so, nothing of late_delivery's shown
            assert other["registry"]["registered"] is False and other["history"]["events"] == []
    model = next(m for m in body["models"] if m["model"] == "late_delivery")
    assert model["registry"]["champion"]["version"] == built.champion
    assert model["registry"]["champion"]["metrics"] == pytest.approx(built.champion_metrics)
    assert model["registry"]["challenger"]["version"] == built.challenger
    assert model["serving"]["state"] == "unreachable"
    assert model["history"]["events"][0]["reason"] == HOSTILE_REASON
    assert len(model["drift"]["checks"]) == 2
    # The api-server's MLflow UI setting reaches the links.
    assert model["registry"]["champion"]["links"]["mlflow_run"].startswith(f"{MLFLOW_UI}/#/experiments/")

    one = requests.get(f"{site.url}/airloop/models/api/models/late_delivery", headers=headers, timeout=60)
    assert one.status_code == 200
    assert one.json()["registry"] == model["registry"]
    missing = requests.get(f"{site.url}/airloop/models/api/models/no_such_model", headers=headers, timeout=30)
    assert missing.status_code == 404

    # The drift report link opens in the reports app.
    report = requests.get(f"{site.url}{model['drift']['checks'][0]['links']['report']}", headers=headers, timeout=30)
    assert report.status_code == 200 and "Dataset Drift" in report.text


def test_the_page_is_sandboxed_and_escapes_registry_text(site):
    page = requests.get(f"{site.url}/airloop/models/", headers={"Authorization": f"Bearer {site.token()}"}, timeout=60)
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert csp.startswith("sandbox;") and "allow-scripts" not in csp and "script-src" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "<img src=x" not in page.text and "<script>" not in page.text
    assert "&lt;img src=x onerror=alert(1)&gt; rolled back by hand" in page.text
    assert "&quot;&gt;&lt;script&gt;alert(&quot;by&quot;)&lt;/script&gt;" in page.text


@pytest.fixture(scope="module")
def ui(site):
    """A headless Chromium (Debian's) holding the Airflow UI's login cookie for admin."""
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium")
    assert executable, "Debian's chromium is missing: `make system-deps` installs it"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        # What the UI's login form leaves behind (test_reports_security logs in through the form).
        context.add_cookies([{"name": "_token", "value": site.token(), "url": site.url}])
        yield context
        browser.close()


def test_the_models_view_in_the_airflow_ui(site, built, ui, tmp_path):
    """Open Models from the Airflow UI's nav; the view names the champion and warns about the service."""
    shots = Path(os.environ.get("AIRLOOP_TEST_ARTIFACTS") or tmp_path)
    page = ui.new_page()
    page.goto(f"{site.url}/")
    # The nav's Browse menu lists Models, a link that opens the view in a tab of its own.
    page.get_by_role("button", name="Browse").click(timeout=60_000)
    entry = page.get_by_role("menuitem", name="Models")
    entry.wait_for(state="visible", timeout=30_000)
    assert entry.get_attribute("href") == "/airloop/models/"
    page.screenshot(path=str(shots / "models-nav.png"))
    with ui.expect_page(timeout=60_000) as opened:
        entry.click()
    view = opened.value
    view.wait_for_load_state("load")
    assert view.url == f"{site.url}/airloop/models/"
    section = view.locator("#model-late_delivery")
    champion_row = section.locator("table.versions tr", has_text="@champion")
    assert champion_row.locator(".version").inner_text() == f"v{built.champion}"
    warning = section.locator(".served-warning")
    assert warning.is_visible() and warning.inner_text().startswith("service unreachable")
    assert section.locator("table.drift tbody tr").count() == 2
    assert view.get_by_text(HOSTILE_REASON).is_visible()  # shown as text, not run
    view.screenshot(path=str(shots / "models-view.png"), full_page=True)
