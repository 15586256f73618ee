"""One model's closed loop (:class:`Demo`), driven through Airflow's REST API and the model's service."""

from __future__ import annotations

import argparse
import datetime as dt
import threading
import time
from pathlib import Path

from airloop.demo.signals import Cancelled, StopSignals
from airloop.demo.summary import say
from airloop.notifiers import read_alerts
from airloop.settings import get_settings
from airloop.spec import example_data, get_spec
from airloop.testing import deferred_signals


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
        """One progress line, prefixed with the model's name when several loops run."""
        say(self.prefix + text)

    def step(self, text: str) -> None:
        """Start the next of the loop's numbered steps (and time it as a stage)."""
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
        """This model's DAG id for ``stage`` (``<model>__<stage>``)."""
        return self.spec.dag_id(stage)

    def wait_idle(self, timeout: float | None = None) -> None:
        """Wait until this model's DAGs are idle: no run queued or running, and no Asset event
        queued to start one (an event waits there between its producer's end and the scheduler
        creating the consumer's run). Two polls in a row must agree, runs and states alike, so a
        run created between reading the queue and reading the runs is not missed.
        ``timeout`` defaults to :attr:`idle_timeout`.
        """
        timeout = self.idle_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        previous = None
        while time.monotonic() < deadline:
            queued = any(self.stack.queued_asset_events(dag_id) for dag_id in self.dag_ids)
            runs = set()
            for run in self.stack.runs_of(self.dag_ids):
                key = f"{run['dag_id']}/{run['dag_run_id']}"
                if self.seen.get(key) != run["state"]:
                    self.seen[key] = run["state"]
                    self.say(f"      {run['dag_id']:<26} {run['run_type']:<15} {run['state']}")
                runs.add((key, run["state"]))
            busy = queued or any(state in ("queued", "running") for _, state in runs)
            if not busy and runs == previous:
                return
            previous = None if busy else runs
            self.pause(2)
        raise TimeoutError(f"DAG runs still busy after {timeout}s")

    def unpause(self, stage: str) -> bool:
        """Unpause a DAG; True if its schedule has a run due now, which the scheduler starts."""
        dag_id = self.dag(stage)
        due = self.stack.run_due(dag_id)
        self.stack.unpause(dag_id)
        return due

    def unpause_and_run(self, stage: str, conf: dict | None = None) -> None:
        """Unpause a DAG; if its schedule has a run due, wait until the scheduler starts it, else
        trigger one with ``conf``."""
        dag_id = self.dag(stage)
        before = {r["dag_run_id"] for r in self.stack.runs(dag_id)}
        if self.unpause(stage):
            self.wait_for_new_run(dag_id, before)
        else:
            self.stack.trigger(dag_id, conf=conf)

    def wait_for_new_run(self, dag_id: str, before: set[str], timeout: float = 120) -> None:
        """Wait until ``dag_id`` has a run that is not in ``before`` (a scheduled run was due)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(r["dag_run_id"] not in before for r in self.stack.runs(dag_id)):
                return
            self.pause(1)
        raise TimeoutError(f"{dag_id}: a scheduled run was due, but none started in {timeout}s")

    def last_task_xcom(self, stage: str, task_id: str) -> dict | None:
        """The return value of ``task_id`` in the latest successful run of the stage's DAG that has one."""
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
        """Run the monitor DAG over the traffic since ``since``; its drift check and retrain decision."""
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
        """Step 1: the reference tables (if any) and the clean days, the third with a defect."""
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
        from airloop.orchestration import STAGES  # imports Airflow's SDK: not before the stop handlers

        deadline = time.monotonic() + 120
        while len(self.dag_ids) < len(STAGES) and time.monotonic() < deadline:  # every stage's DAG parsed
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
        self.say(f"      the corrected {self.clean_days[2]} batch lands again and is ingested by date")
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
        before = {r["dag_run_id"] for r in self.stack.runs(self.dag("monitor"))}
        if self.unpause("monitor"):  # the monitor's own daily run is due: let it pass first
            self.wait_for_new_run(self.dag("monitor"), before)
        self.wait_idle()
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
        """Record and report that this loop failed with ``exc``."""
        s = get_settings()
        self.end_stage()
        self.summary["error"] = f"{exc.__class__.__name__}: {exc}"
        self.say(f"demo failed: {self.summary['error']}")
        self.say(f"logs: {s.home / 'airflow'}/*.log, {self.server.log_path}")

    def loop_closed(self) -> bool:
        """Whether drift started a retrain whose gate decided, and /predict answers with the champion."""
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
