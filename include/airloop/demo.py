"""Airloop's main job on the embedded default: ``make demo`` (or ``python -m airloop.demo``).

The whole closed loop, for real, on one machine with no Docker: Airflow's own components
(api-server, scheduler, dag-processor, triggerer; SQLite, LocalExecutor) and the BentoML
prediction service run as local processes; the demo drives them from outside, as a user's
script would, through Airflow's REST API and the service's HTTP API.

1. land daily batches (one arrives with a defect) and let the daily ingest run gate them;
2. features follow on the validated-data Asset; the first training run registers a champion;
3. packaging follows on the champion Asset and the service starts answering with it;
4. clean traffic is served and labelled; a drift check finds nothing;
5. drifted days land, drifted traffic is served; two drift checks in a row find real drift,
   the policy triggers training, the new model wins the gate and the service swaps to it.

It runs any model whose directory holds the example's data module, ``<model>/datagen.py``
(``--model``; default: late_delivery) with:

- ``DEFAULT_SEED`` and ``Drift(start: date, strength: float)``;
- ``write_day(landing_dir, day, *, seed, drift, defect: bool, size) -> list[Path]``: the day's
  files of every daily table under ``landing_dir/<table>/`` (``defect``: one the gate stops);
- optionally ``write_references(landing_dir, day, *, seed) -> list[Path]``: tables that land once;
- ``live_requests(day, n, *, seed, drift, stream) -> list[dict]``: request fields plus the
  label under the spec's target.

The human summary is printed; the same facts go to ``$AIRLOOP_HOME/demo-summary.json``.

``--model`` repeats: the named models' loops run side by side in ONE Airflow stack, each with its
own prediction service and in a thread of its own (:class:`Session`); the summary then holds each
model's under ``"models"`` (a single model's keys stay at the top level too).

SIGINT (Ctrl-C) or SIGTERM stops the demo at any point, in the foreground or as a background
job: the prediction service and every Airflow process it started are stopped, and it exits
with 130 (SIGINT) or 143 (SIGTERM).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

if __name__ == "__main__":
    # Run as a program: SIGINT and SIGTERM end it even during the seconds the imports below take
    # (a background job inherits SIGINT ignored). Nothing has started yet; main() takes over.
    def _stop_early(signum: int, frame) -> None:
        print(f"airloop demo: stopped by {signal.Signals(signum).name} before anything started", flush=True)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGINT, _stop_early)
    signal.signal(signal.SIGTERM, _stop_early)

from airloop.notifiers import read_alerts  # noqa: E402 - after the early stop above
from airloop.settings import get_settings  # noqa: E402
from airloop.spec import example_data, get_spec  # noqa: E402
from airloop.testing import AirflowStack, BentoServer, deferred_signals, free_port  # noqa: E402

DEMO_MODEL = "late_delivery"


def say(text: str) -> None:
    print(text, flush=True)


class Stopped(BaseException):
    """SIGINT or SIGTERM arrived: unwinds the demo like KeyboardInterrupt does, for both signals.

    A BaseException, so the demo's ``except Exception`` reporting does not swallow it.
    """

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class StopSignals:
    """SIGINT and SIGTERM turned into one orderly shutdown.

    The first signal raises :class:`Stopped` in the main thread wherever the demo is (starting
    Airflow, waiting for DAG runs, or keeping the stack up). While the processes are being
    stopped, signals are only recorded: a second Ctrl-C must not leave them half-stopped.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: int | None = None
        self.armed = True
        self.previous: dict[int, object] = {}

    def install(self) -> "StopSignals":
        # Explicitly, for both: a background job of a non-interactive shell (``demo &``) inherits
        # SIGINT ignored, and Python then installs no KeyboardInterrupt handler; SIGTERM's default
        # ends the process without any cleanup. Airflow and the service run in sessions of their
        # own (a Ctrl-C meant for the demo does not reach them), so only the demo can stop them.
        for sig in self.SIGNALS:
            self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def uninstall(self) -> None:
        for sig, handler in self.previous.items():
            if handler is not None:
                signal.signal(sig, handler)
        self.previous.clear()

    def _handle(self, signum: int, frame) -> None:
        if self.received is None:
            self.received = signum
        if self.armed:
            self.armed = False
            raise Stopped(signum)

    def hold(self) -> None:
        """From now on a signal is recorded, not raised (the processes are being stopped)."""
        self.armed = False

    def rearm(self) -> None:
        """Nothing is left running: a signal may end the demo at once again."""
        if self.received is None:
            self.armed = True


def stopped(signum: int) -> int:
    """The one line the demo prints when a signal stopped it; the shell's exit status for it."""
    say(f"airloop demo: stopped by {signal.Signals(signum).name}; the prediction service and Airflow are stopped")
    return 128 + signum  # 130 for SIGINT, 143 for SIGTERM


class Cancelled(BaseException):
    """The demo is stopping (a signal, in the main thread): a loop thread unwinds with this.

    A BaseException, so a loop's ``except Exception`` does not report it as the loop's failure.
    """


class Demo:
    """One model's closed loop, driven through the Airflow stack and that model's own service.

    Everything a loop keeps (its DAG ids, the runs it has seen, its traffic waves, its server,
    its summary) lives on its object: several loops run side by side in one Airflow, each in a
    thread of its own (:class:`Session`). ``stop`` is set when the demo is stopping; a loop's
    waits end with :class:`Cancelled` then.
    """

    STAGES = ("land", "start", "ingest", "train", "serve", "drift", "monitor", "retrain")

    def __init__(self, args: argparse.Namespace, signals: StopSignals | None = None, *, model: str | None = None,
                 stop: threading.Event | None = None, prefix: str = ""):
        self.args = args
        self.signals = signals or StopSignals()
        self.spec = get_spec(model or args.model)
        self.data = example_data(self.spec)
        self.seed = args.seed if args.seed is not None else self.data.DEFAULT_SEED
        self.traffic = dict(getattr(args, "traffic_of", None) or {}).get(self.spec.name, args.traffic)
        self.stop = stop or threading.Event()
        self.prefix = prefix
        self.started = time.monotonic()
        self.summary: dict = {"model": self.spec.name, "steps": {}, "stage_seconds": {}}
        self.total_steps = 8
        self.step_no = 0
        self.stage: tuple[str, float] | None = None
        self.waves = 0
        self.dag_ids: list[str] = []
        self.seen: dict[str, str] = {}
        self.ok = False
        # How long one stage's runs may take. Loops side by side share the executor and take
        # turns on the data workspace (every model's batches are versioned one at a time), so
        # a stage waits on the others' work too: the session scales this by the loop count.
        self.idle_timeout: float = 1200
        today = self.today = dt.datetime.now(dt.timezone.utc).date()
        n = args.clean_days + args.drift_days
        days = [today - dt.timedelta(days=n - i) for i in range(n)]
        self.clean_days, self.drift_days = days[: args.clean_days], days[args.clean_days :]
        self.drift = self.data.Drift(self.drift_days[0], args.drift_strength)

    # -- helpers ---------------------------------------------------------------------------
    def say(self, text: str) -> None:
        say(self.prefix + text)

    def step(self, text: str) -> None:
        self.end_stage()
        self.step_no += 1
        now = time.monotonic()
        self.stage = (self.STAGES[self.step_no - 1], now)
        self.say(f"[{self.step_no}/{self.total_steps}] ({now - self.started:5.0f} s) {text}")

    def end_stage(self) -> None:
        """Record how long the current step took (``summary["stage_seconds"]``)."""
        if self.stage is not None:
            name, since = self.stage
            self.summary["stage_seconds"][name] = round(time.monotonic() - since, 1)
            self.stage = None

    def pause(self, seconds: float) -> None:
        """Sleep, unless the demo is stopping: then unwind this loop."""
        if self.stop.wait(seconds):
            raise Cancelled()

    def dag(self, stage: str) -> str:
        return self.spec.dag_id(stage)

    def wait_idle(self, timeout: float | None = None, settle: float = 8) -> None:
        """Wait until none of this model's DAG runs is queued or running for ``settle`` seconds.

        Runs started by Asset events appear a moment after their producer ends, hence settle.
        ``timeout`` defaults to :attr:`idle_timeout`.
        """
        timeout = self.idle_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        quiet_since = None
        while time.monotonic() < deadline:
            busy = False
            for dag_id in self.dag_ids:
                for run in self.stack.runs(dag_id):
                    key = f"{dag_id}/{run['dag_run_id']}"
                    if self.seen.get(key) != run["state"]:
                        self.seen[key] = run["state"]
                        self.say(f"      {dag_id:<26} {run['run_type']:<15} {run['state']}")
                    busy |= run["state"] in ("queued", "running")
            if busy:
                quiet_since = None
            elif quiet_since is None:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= settle:
                return
            self.pause(2)
        raise TimeoutError(f"DAG runs still busy after {timeout}s")

    def unpause_and_run(self, stage: str, conf: dict | None = None) -> None:
        """Unpause a DAG; if its schedule has a run due the scheduler starts it, else trigger one."""
        dag_id = self.dag(stage)
        before = {r["dag_run_id"] for r in self.stack.runs(dag_id)}
        self.stack.unpause(dag_id)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if any(r["dag_run_id"] not in before for r in self.stack.runs(dag_id)):
                return
            self.pause(1)
        self.stack.trigger(dag_id, conf=conf)

    def last_task_xcom(self, stage: str, task_id: str) -> dict | None:
        runs = self.stack.runs(self.dag(stage))
        for run in reversed(runs):
            if run["state"] != "success":
                continue
            try:
                entry = self.stack.api(
                    "GET",
                    f"/dags/{self.dag(stage)}/dagRuns/{run['dag_run_id']}/taskInstances/{task_id}/xcomEntries/return_value",
                    params={"deserialize": True, "stringify": False},
                )
            except Exception:  # noqa: BLE001 - a skipped task has no XCom
                continue
            return entry["value"]
        return None

    def land_day(self, day: dt.date, *, drifted: bool = False, defect: bool = False) -> list[Path]:
        """Write one day's files of every daily table into the landing area."""
        size = {} if self.args.rows_per_day is None else {"size": self.args.rows_per_day}
        return self.data.write_day(
            get_settings().landing_dir, day, seed=self.seed, drift=self.drift if drifted else None, defect=defect, **size
        )

    def send_traffic(self, day: dt.date, drifted: bool, label: str) -> dict:
        """Serve one wave of requests through /predict_batch, then send their true labels."""
        import requests

        # The batches' world (same seed), another draw of requests (stream).
        self.waves += 1
        rows = self.data.live_requests(
            day, self.traffic, seed=self.seed, stream=self.waves, drift=self.drift if drifted else None
        )
        labels = [row.pop(self.spec.target) for row in rows]
        started = dt.datetime.now(dt.timezone.utc)
        answers = []
        for i in range(0, len(rows), 100):
            resp = requests.post(f"{self.server.url}/predict_batch", json={"rows": rows[i : i + 100]}, timeout=60)
            resp.raise_for_status()
            answers += resp.json()["predictions"]
        for answer, truth in zip(answers, labels):
            requests.post(
                f"{self.server.url}/feedback", json={"request_id": answer["request_id"], "label": truth},
                headers={"Authorization": f"Bearer {self.server.feedback_token}"}, timeout=30,
            ).raise_for_status()
        versions = sorted({a["model_version"] for a in answers})
        mean = sum(a["prediction"] for a in answers) / len(answers)
        actual = sum(labels) / len(labels)
        self.say(f"      {label}: {len(answers)} predictions by v{', v'.join(map(str, versions))}, "
            f"mean prediction {mean:.2f}, mean {self.spec.target} {actual:.2f}; labels sent")
        return {"wave": label, "requests": len(answers), "model_versions": versions, "started": started.isoformat(),
                "mean_prediction": round(mean, 4), "mean_label": round(actual, 4)}

    def drift_check(self, since: str) -> dict:
        dag_id = self.dag("monitor")
        # The window covers exactly this wave's traffic, so consecutive waves are separate windows.
        end = dt.datetime.now(dt.timezone.utc)
        minutes = (end - dt.datetime.fromisoformat(since)).total_seconds() / 60 + 0.05
        run_id = self.stack.trigger(dag_id, conf={"window_end": end.isoformat(), "window_minutes": minutes})
        run = self.stack.wait_for_run(dag_id, run_id, timeout=600, sleep=self.pause)
        xcom = lambda task: self.stack.api(  # noqa: E731
            "GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task}/xcomEntries/return_value",
            params={"deserialize": True, "stringify": False},
        )["value"]
        check, decision = xcom("check_drift"), xcom("apply_retrain_policy")
        self.say(f"      drift check {check['report_id']}: {check['status']}, drifted share "
            f"{check.get('drifted_share')}, prediction drift {check.get('prediction_drift')}")
        self.say(f"      policy: {'RETRAIN' if decision['trigger'] else 'no retrain'} - {decision['reason']}")
        return {"run_id": run_id, "state": run["state"], "report_id": check["report_id"], "status": check["status"],
                "drifted_share": check.get("drifted_share"), "drifted_columns": check.get("drifted_columns"),
                "prediction_drift": check.get("prediction_drift"), "quality": check.get("quality"),
                "html_report": check.get("html_path"), "trigger": decision["trigger"], "reason": decision["reason"]}

    # -- the loop --------------------------------------------------------------------------
    def run(self) -> dict:
        """The whole loop in this thread: land, start the services, then :meth:`loop`."""
        self.land_clean_days()
        self.step("starting Airflow (api-server, scheduler, dag-processor, triggerer) and the prediction service")
        self.stack.start()
        with deferred_signals():  # a signal now would leave the server started but unrecorded
            self.server.start()
        return self.loop()

    def land_clean_days(self) -> None:
        s = get_settings()
        self.step(f"landing {len(self.clean_days)} days of {', '.join(self.spec.dataset_names)} "
                  f"({self.clean_days[0]} .. {self.clean_days[-1]}); {self.clean_days[2]} arrives with a defect")
        write_references = getattr(self.data, "write_references", None)
        if write_references is not None:
            write_references(s.landing_dir, self.clean_days[0], seed=self.seed)
        for i, day in enumerate(self.clean_days):
            self.land_day(day, defect=i == 2)

    def loop(self) -> dict:
        """Steps 3..8 (the stack and this model's service are started); this model's DAGs only."""
        steps = self.summary["steps"]
        self.say(f"      Airflow UI: {self.stack.url}  (login admin / {self.stack.password})")
        self.say(f"      Prediction service: {self.server.url}")
        deadline = time.monotonic() + 120
        while len(self.dag_ids) < 6 and time.monotonic() < deadline:
            dags = self.stack.api("GET", "/dags", params={"tags": f"model:{self.spec.name}", "limit": 100})["dags"]
            self.dag_ids = sorted(d["dag_id"] for d in dags)
            self.pause(1)

        self.step("ingest: the daily run gates every batch; the defective one is quarantined")
        for stage in ("features", "package"):
            self.stack.unpause(self.dag(stage))
        self.unpause_and_run("ingest")
        self.wait_idle()
        rejected = [a for a in read_alerts(dag_id=self.dag("ingest"))]
        for alert in rejected:
            self.say("      " + alert["message"].splitlines()[0])
            for line in alert["message"].splitlines()[1:3]:
                self.say("      " + line)
        self.land_day(self.clean_days[2])
        self.say(f"      the corrected {self.clean_days[2]} batch is re-delivered and ingested by date")
        self.stack.trigger(self.dag("ingest"), conf={"batch_date": self.clean_days[2].isoformat()})
        self.wait_idle()
        features_runs = len(self.stack.runs(self.dag("features")))
        self.say(f"      {features_runs} features run(s) followed: one per ingest run that published batches")
        steps["ingest"] = {"alerts": [a["message"].splitlines()[0] for a in rejected], "features_runs": features_runs}

        self.step("train: the first model registers, passes the floors and becomes @champion")
        self.unpause_and_run("train", conf={"reason": "bootstrap"})
        self.wait_idle()
        first = self.last_task_xcom("train", "champion_challenger_gate")
        if not first or not first.get("promoted"):
            raise RuntimeError(f"the first model was not promoted: {first}")
        self.say(f"      v{first['version']} promoted: {first['reason']}")
        steps["first_champion"] = first
        steps["first_bento"] = self.last_task_xcom("package", "build_bento")

        self.step("serve: clean traffic, labelled afterwards; a drift check finds nothing")
        self.server.wait_ready(timeout=180, sleep=self.pause)
        steps["traffic"] = [self.send_traffic(self.today, drifted=False, label="clean traffic")]
        self.stack.unpause(self.dag("monitor"))
        self.pause(3)
        self.wait_idle()  # the monitor's own daily run, if one was due
        steps["drift_checks"] = [self.drift_check(since=steps["traffic"][0]["started"])]

        self.step(f"drift: {len(self.drift_days)} drifted days land (strength {self.drift.strength}); "
                  "ingest and features follow")
        for day in self.drift_days:
            self.land_day(day, drifted=True)
        self.stack.trigger(self.dag("ingest"))
        self.wait_idle()

        self.step("monitor: drifted traffic in two windows; the policy needs both before it retrains")
        for wave in (1, 2):
            traffic = self.send_traffic(self.today, drifted=True, label=f"drifted traffic, window {wave}")
            steps["traffic"].append(traffic)
            steps["drift_checks"].append(self.drift_check(since=traffic["started"]))
        self.wait_idle()

        self.step("retrain: the drift-triggered model meets the gate; the service serves whichever is @champion")
        final = self.last_task_xcom("train", "champion_challenger_gate")
        steps["retrain"] = final
        self.say(f"      v{final['version']}: {'promoted' if final['promoted'] else 'not promoted'} - {final['reason']}")
        steps["final_bento"] = self.last_task_xcom("package", "build_bento")
        import requests

        # One request of today's traffic (a generator may draw a random number of rows around n).
        request = self.data.live_requests(self.today, 50, seed=self.seed, stream=99, drift=self.drift)[0]
        request.pop(self.spec.target)
        answer = requests.post(f"{self.server.url}/predict", json=request, timeout=30).json()
        steps["final_predict"] = answer
        self.say(f"      /predict now answers with v{answer['model_version']} (prediction {answer['prediction']:.3f})")
        triggered = [c for c in steps["drift_checks"] if c["trigger"]]
        if triggered and final.get("promoted"):
            steps["loop_timing"] = timing = self.loop_timing(triggered[-1])
            self.say(f"      drift detected -> new model serving: {timing['wall_seconds']:.0f} s, of which task work "
                     f"{timing['work_seconds']:.0f} s and orchestration wait {timing['wait_seconds']:.0f} s "
                     f"({timing['wait_share']:.0%})")
        self.end_stage()
        self.summary["dag_runs"] = self.dag_runs()
        return self.summary

    def dag_runs(self) -> list[dict]:
        """Every run of this model's DAGs, with its times (read back from Airflow)."""
        keep = ("dag_id", "dag_run_id", "run_type", "state", "queued_at", "start_date", "end_date")
        return [{k: run.get(k) for k in keep} for dag_id in self.dag_ids for run in self.stack.runs(dag_id)]

    def loop_timing(self, check: dict) -> dict:
        """Wall time from drift detected to the new model serving, split into work and wait."""
        from airloop.timeline import loop_timeline, parse_time

        monitor = self.stack.task_instances(self.dag("monitor"), check["run_id"])
        train_run = next(r for r in self.stack.runs(self.dag("train"))
                         if (r.get("conf") or {}).get("drift_report_id") == check["report_id"])
        train = self.stack.task_instances(self.dag("train"), train_run["dag_run_id"])
        package_run = next(r for r in self.stack.runs(self.dag("package"))
                           if r.get("queued_at") and parse_time(r["queued_at"]) >= parse_time(train_run["start_date"]))
        package = self.stack.task_instances(self.dag("package"), package_run["dag_run_id"])
        return loop_timeline(monitor, train, package)

    def fail(self, exc: BaseException) -> None:
        s = get_settings()
        self.end_stage()
        self.summary["error"] = f"{exc.__class__.__name__}: {exc}"
        self.say(f"demo failed: {self.summary['error']}")
        self.say(f"logs: {s.home / 'airflow'}/*.log, {self.server.log_path}")

    def loop_closed(self) -> bool:
        steps = self.summary["steps"]
        checks = steps.get("drift_checks", [])
        retrain = steps.get("retrain") or {}
        final = steps.get("final_predict") or {}
        # The loop closed when drift started a retrain whose gate decided, and the service
        # answers with whatever is @champion now: the challenger if it won, else the old one.
        champion = retrain.get("version") if retrain.get("promoted") else retrain.get("champion_version")
        return (
            bool(checks) and checks[0]["status"] == "ok" and not checks[0]["trigger"]
            and any(c["trigger"] for c in checks[1:])
            and "promoted" in retrain
            and str(final.get("model_version")) == str(champion)
        )


class Session:
    """One Airflow stack, one prediction service per model, and one :class:`Demo` loop per model.

    One model: its loop runs in the main thread, as it always has. Several: the main thread lands
    every model's first days and starts the stack and the services (so that a signal finds every
    process recorded), then each loop runs in a thread of its own while the main thread waits.
    A signal raises :class:`Stopped` in the main thread only: it sets the loops' ``stop`` event,
    joins them (briefly: a loop ends at its next wait), and stops the processes once. A loop that
    fails is reported in its summary and makes the demo exit 1; the other loops go on.
    """

    JOIN_ON_STOP = 5  # seconds each loop thread gets to unwind once the demo is stopping

    def __init__(self, args: argparse.Namespace, signals: StopSignals):
        self.args = args
        self.signals = signals
        self.started = time.monotonic()
        self.stop = threading.Event()
        models = list(dict.fromkeys(args.models))
        several = len(models) > 1
        self.demos = [Demo(args, signals, model=m, stop=self.stop, prefix=f"[{m}] " if several else "")
                      for m in models]
        s = get_settings()
        self.stack = AirflowStack(s.home / "airflow", env=s.as_env(), port=args.airflow_port)
        for demo in self.demos:
            demo.stack = self.stack
            demo.idle_timeout *= len(self.demos)
            # The model's own service, where its package DAG looks for it (serve_url_for). It serves
            # that model only: with several specs in the models directory it must be told which.
            log = s.home / ("bento-server.log" if not several else f"bento-server-{demo.spec.name}.log")
            demo.server = BentoServer(
                s, log, port=serve_port(s.serve_url_for(demo.spec.name)),
                AIRLOOP_SERVE_MODEL=demo.spec.name, AIRLOOP_SERVE_POLL_SECONDS="2",
            )

    def run_loops(self) -> None:
        if len(self.demos) == 1:
            demo = self.demos[0]
            try:
                demo.run()
                demo.ok = True
            except Exception as exc:  # noqa: BLE001 - report what happened, then fail
                demo.fail(exc)
            return
        for demo in self.demos:
            demo.land_clean_days()
        for demo in self.demos:
            demo.step("starting Airflow (api-server, scheduler, dag-processor, triggerer) and the prediction service")
        self.stack.start()
        for demo in self.demos:
            with deferred_signals():  # a signal now would leave the server started but unrecorded
                demo.server.start()
        threads = [threading.Thread(target=self._loop_thread, args=(demo,), name=f"loop-{demo.spec.name}", daemon=True)
                   for demo in self.demos]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                while thread.is_alive():
                    thread.join(0.5)  # short joins: the main thread stays responsive to signals
        except BaseException:
            self.stop.set()
            for thread in threads:
                thread.join(self.JOIN_ON_STOP)
            raise

    @staticmethod
    def _loop_thread(demo: Demo) -> None:
        try:
            demo.loop()
            demo.ok = True
        except Cancelled:
            demo.end_stage()
        except Exception as exc:  # noqa: BLE001 - reported in the model's summary; the demo exits 1
            demo.fail(exc)

    def main(self) -> int:
        s = get_settings()
        airflow_facts: dict = {}
        try:
            self.run_loops()
            ok = all(demo.ok for demo in self.demos)
            if ok and len(self.demos) > 1:
                airflow_facts = self.airflow_facts()
            if self.args.keep_running and ok:
                say(f"Airflow keeps running at {self.stack.url}, the service(s) at "
                    f"{', '.join(d.server.url for d in self.demos)}; Ctrl-C or SIGTERM stops.")
                while True:
                    time.sleep(3600)
            self.signals.hold()  # last statement: a signal from here on waits for the cleanup
        except Stopped:
            pass  # self.signals.received says which; the processes are stopped below
        finally:
            self.signals.hold()
            self.stop.set()
            self.stop_processes()
        out = s.home / "demo-summary.json"
        if self.signals.received is not None:
            summary = self.summary(stopped=signal.Signals(self.signals.received).name)
            out.write_text(json.dumps(summary, indent=2, default=str))
            return stopped(self.signals.received)
        self.signals.rearm()  # nothing runs any more: a signal just cuts the summary short
        for demo in self.demos:
            demo.summary["facts"] = collect_facts(demo.spec)
        summary = self.summary(**airflow_facts)
        out.write_text(json.dumps(summary, indent=2, default=str))
        for demo in self.demos:
            if len(self.demos) > 1:
                say(f"\n=== {demo.spec.name} ===")
            print_summary(demo.summary, out)
        closed = [demo.ok and demo.loop_closed() for demo in self.demos]
        if len(self.demos) > 1:
            states = ", ".join(f"{d.spec.name} {'closed' if c else 'FAILED'}" for d, c in zip(self.demos, closed))
            say(f"\nloops: {states}; wall time {summary['wall_seconds']} s")
        return 0 if all(closed) else 1

    def summary(self, **extra) -> dict:
        """``{"models": {name: summary}, "wall_seconds": ...}``; with one model, its summary's keys
        at the top level too (the shape a single-model demo has always written)."""
        wall = round(time.monotonic() - self.started, 1)
        models = {}
        for demo in self.demos:
            demo.summary["wall_seconds"] = round(time.monotonic() - demo.started, 1)
            if "stopped" in extra:
                demo.summary["stopped"] = extra["stopped"]
            models[demo.spec.name] = demo.summary
        combined: dict = {}
        if len(self.demos) == 1:
            combined.update(self.demos[0].summary)
        combined.update({"models": models, "wall_seconds": wall, **extra})
        errors = {name: m["error"] for name, m in models.items() if "error" in m}
        if errors and len(self.demos) > 1:
            combined["error"] = "; ".join(f"{name}: {error}" for name, error in errors.items())
        return combined

    def airflow_facts(self) -> dict:
        """Every asset event the stack recorded (each names its source DAG run and the runs it
        created), read back before the stack stops: what tells whether two models' loops mixed."""
        keep = ("name", "uri", "source_dag_id", "source_run_id", "timestamp")
        try:
            events = self.stack.api("GET", "/assets/events", params={"limit": 1000, "order_by": "timestamp"})
        except Exception as exc:  # noqa: BLE001 - the summary says what could not be read
            return {"asset_events_error": f"{exc.__class__.__name__}: {exc}"}
        return {"asset_events": [
            {**{k: e.get(k) for k in keep}, "created_dagruns": [r.get("dag_id") for r in e.get("created_dagruns", [])]}
            for e in events["asset_events"]
        ]}

    def stop_processes(self) -> None:
        """The prediction services first, then Airflow's components: SIGTERM, wait, SIGKILL the rest
        (grandchildren too). Bounded, so that a stop request ends the demo within about a minute."""
        import psutil

        workers = []  # recorded first: the servers' workers live in sessions of their own
        for demo in self.demos:
            server = demo.server.proc
            if server is not None and server.poll() is None:
                with contextlib.suppress(psutil.NoSuchProcess):
                    workers += psutil.Process(server.pid).children(recursive=True)
        try:
            for demo in self.demos:
                with contextlib.suppress(Exception):
                    demo.server.stop(timeout=20 / len(self.demos))
        finally:
            try:
                self.stack.stop(timeout=30)
            finally:
                for worker in workers:  # a worker that outlived its server's stop
                    with contextlib.suppress(psutil.NoSuchProcess):
                        worker.kill()


def serve_port(url: str) -> int:
    """The port of a local prediction service URL (the demo starts the server on it)."""
    from urllib.parse import urlsplit

    port = urlsplit(url).port
    if port is None:
        raise ValueError(f"the demo starts its prediction service locally and needs a port in {url!r}")
    return port


def collect_facts(spec) -> dict:
    """Ids read back from the stores themselves: DVC, quarantine, MLflow registry."""
    from airloop import ingest, registry

    s = get_settings()
    rev, batches = ingest.committed_batches(spec, s)
    facts: dict = {
        "dvc_head": rev,
        "validated_batches": [{"batch": b.batch, "rows": b.rows, "md5": b.md5, "rev": b.rev,
                               "validation_result_id": b.validation_result_id} for b in batches],
        "quarantined": sorted(p.name for name in spec.dataset_names for p in (s.quarantine_dir / name).glob("*.csv")),
    }
    try:
        client = registry.client(s)
        versions = client.search_model_versions(f"name='{spec.registered_model_name}'")
        champion = registry.champion_version(spec, s)
        facts["model_versions"] = [
            {"version": str(v.version), "run_id": v.run_id, "gate": v.tags.get("airloop.gate"),
             "trigger_reason": v.tags.get("airloop.trigger_reason"),
             "drift_report_id": v.tags.get("airloop.drift_report_id"),
             "bento_tag": v.tags.get("airloop.bento_tag"),
             "alias": "champion" if str(v.version) == champion else None}
            for v in sorted(versions, key=lambda v: int(v.version))
        ]
        facts["promotion_history"] = registry.history(spec, s)
    except Exception as exc:  # noqa: BLE001 - the summary says what could not be read
        facts["mlflow_error"] = str(exc)
    return facts


def print_summary(summary: dict, path: Path) -> None:
    steps, facts = summary["steps"], summary.get("facts", {})
    say("\n=== Airloop demo summary ===")
    batches = facts.get("validated_batches", [])
    say(f"ingest: {len(batches)} batches validated and versioned with DVC; "
        f"{len(facts.get('quarantined', []))} rejected and quarantined {facts.get('quarantined', [])}")
    for b in batches:
        say(f"  {b['batch']}  {b['rows']:>5} rows  md5 {b['md5']}  rev {b['rev'][:10]}  {b['validation_result_id']}")
    for v in facts.get("model_versions", []):
        say(f"model v{v['version']}: run {v['run_id']}  gate {v['gate']}  reason {v['trigger_reason']!r}"
            f"{'  drift report ' + v['drift_report_id'] if v.get('drift_report_id') else ''}"
            f"  bento {v['bento_tag']}{'  @champion' if v['alias'] else ''}")
    for c in steps.get("drift_checks", []):
        say(f"drift check {c['report_id']}: {c['status']}, drifted share {c['drifted_share']}, "
            f"retrain: {c['trigger']} ({c['reason']})")
    if "final_predict" in steps:
        say(f"/predict answers with model v{steps['final_predict']['model_version']}")
    if "error" in summary:
        say(f"FAILED: {summary['error']}")
    say(f"wall time: {summary['wall_seconds']} s; summary written to {path}")


def main(argv: list[str] | None = None) -> int:
    signals = StopSignals().install()  # before anything starts
    try:
        return _main(argv, signals)
    except Stopped as stop:  # before Airflow started, or while the summary was being collected
        return stopped(stop.signum)
    finally:
        signals.uninstall()


def _model_count(text: str) -> tuple[str, int]:
    model, sep, count = text.partition("=")
    if not sep or not model or not count.isdigit() or int(count) < 1:
        raise argparse.ArgumentTypeError(f"expected MODEL=N (N >= 1), got {text!r}")
    return model, int(count)


def _main(argv: list[str] | None, signals: StopSignals) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", dest="models", action="append", metavar="MODEL",
                        help=f"a model to run the loop for; repeat it to run several side by side in one Airflow "
                             f"(default: {DEMO_MODEL})")
    parser.add_argument("--seed", type=int, default=None, help="default: the example's own")
    parser.add_argument("--clean-days", type=int, default=14)
    parser.add_argument("--drift-days", type=int, default=5)
    parser.add_argument("--drift-strength", type=float, default=0.6)
    parser.add_argument("--rows-per-day", "--orders-per-day", type=int, default=None,
                        help="events per daily batch (default: the example's own)")
    parser.add_argument("--traffic", type=int, default=800, help="requests served per traffic wave")
    parser.add_argument("--traffic-of", type=_model_count, action="append", metavar="MODEL=N",
                        help="requests per wave for one model (overrides --traffic for it; repeatable)")
    parser.add_argument("--airflow-port", type=int, default=None, help="default: a free port")
    parser.add_argument("--keep-running", action="store_true", help="leave Airflow and the service up")
    args = parser.parse_args(argv)
    args.models = list(dict.fromkeys(args.models or [DEMO_MODEL]))
    args.model = args.models[0]
    from airloop.settings import WeakSecretError, ensure_dirs, require_strong_secrets, serve_url_env

    # Each demo model's service on a free port unless one is configured for it (its own URL, or
    # the shared one when only one model runs: two services cannot share it). Only the demo
    # models' variables are set: no other model's DAGs are pointed at them.
    shared = () if len(args.models) > 1 else ("AIRLOOP_SERVE_URL",)
    taken = set()
    for model in args.models:
        if not any(os.environ.get(name, "").strip() for name in (serve_url_env(model), *shared)):
            while (port := free_port()) in taken:
                pass
            taken.add(port)
            os.environ[serve_url_env(model)] = f"http://127.0.0.1:{port}"

    try:
        require_strong_secrets()
    except WeakSecretError as exc:
        print(f"airloop demo: {exc}", file=sys.stderr)
        return 1
    ensure_dirs()
    return Session(args, signals).main()


if __name__ == "__main__":
    raise SystemExit(main())
