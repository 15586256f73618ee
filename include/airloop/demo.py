"""Airloop's main job on the embedded default: ``make demo`` (or ``python -m airloop.demo``).

It starts Airflow's own components (api-server, scheduler, dag-processor, triggerer) on SQLite
with the LocalExecutor, lands generated order batches (one of them defective), triggers the
ingest DAG over the REST API as a user's script would, lets Asset schedules run the stages
downstream, and reports what every stage did with real ids. The human summary is printed; the
same facts go to ``$AIRLOOP_HOME/demo-summary.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from pathlib import Path

from airloop import datagen
from airloop.notifiers import read_alerts
from airloop.settings import ensure_dirs
from airloop.spec import get_spec
from airloop.testing import AirflowStack

DEMO_MODEL = "late_delivery"
CLEAN_DAYS = 14
DEFECTIVE_DAY = 4  # index of the day first delivered with a defect, then re-delivered clean
DEFECT = "out_of_range"


def step(n: int, total: int, text: str) -> None:
    print(f"[{n}/{total}] {text}", flush=True)


def airloop_dag_ids(stack: AirflowStack, model: str) -> list[str]:
    dags = stack.api("GET", "/dags", params={"tags": f"model:{model}", "limit": 100})["dags"]
    return sorted(d["dag_id"] for d in dags)


def wait_until_idle(stack: AirflowStack, dag_ids: list[str], timeout: float = 900, settle: float = 8) -> None:
    """Wait until no run of these DAGs is queued or running for ``settle`` seconds.

    Runs started by Asset events appear a moment after their producer finishes, hence settle.
    """
    deadline = time.monotonic() + timeout
    quiet_since = None
    seen: dict[str, str] = {}
    while time.monotonic() < deadline:
        busy = False
        for dag_id in dag_ids:
            for run in stack.runs(dag_id):
                key = f"{dag_id}/{run['dag_run_id']}"
                if seen.get(key) != run["state"]:
                    seen[key] = run["state"]
                    print(f"      {dag_id:<28} {run['run_type']:<14} {run['state']}", flush=True)
                busy |= run["state"] in ("queued", "running")
        if busy:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= settle:
            return
        time.sleep(2)
    raise TimeoutError(f"DAG runs still busy after {timeout}s")


def wait_for_scheduled_run(stack: AirflowStack, dag_id: str, timeout: float = 30) -> str | None:
    """The run the scheduler starts when a DAG is unpaused with a due interval, if any."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = [r for r in stack.runs(dag_id) if r["run_type"] == "scheduled"]
        if runs:
            return runs[0]["dag_run_id"]
        time.sleep(1)
    return None


def asset_events(stack: AirflowStack, dag_id: str) -> list[dict]:
    events = stack.api(
        "GET", "/assets/events", params={"source_dag_id": dag_id, "limit": 100, "order_by": "timestamp"}
    )["asset_events"]
    return [e["extra"] for e in events]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep-running", action="store_true", help="leave Airflow up at the end")
    args = parser.parse_args(argv)

    started = time.monotonic()
    settings = ensure_dirs()
    spec = get_spec(DEMO_MODEL)
    landing = settings.landing_dir / spec.dataset.name
    today = dt.datetime.now(dt.timezone.utc).date()
    days = [today - dt.timedelta(days=CLEAN_DAYS - i) for i in range(CLEAN_DAYS)]
    total = 4
    summary: dict = {"model": spec.name, "airloop_home": str(settings.home), "steps": {}}

    step(1, total, f"landing {len(days)} daily order batches ({days[0]} .. {days[-1]}); "
                   f"{days[DEFECTIVE_DAY]} arrives with a '{DEFECT}' defect")
    for i, day in enumerate(days):
        datagen.write_batch(landing, day, seed=args.seed, defect=DEFECT if i == DEFECTIVE_DAY else None)

    step(2, total, "starting Airflow (api-server, scheduler, dag-processor, triggerer) on SQLite")
    stack = AirflowStack(settings.home / "airflow", env=settings.as_env())
    stack.start()
    print(f"      Airflow UI: {stack.url}  (admin / {stack.password})", flush=True)
    try:
        dag_ids = []
        deadline = time.monotonic() + 120
        while not dag_ids and time.monotonic() < deadline:
            dag_ids = airloop_dag_ids(stack, spec.name)
            time.sleep(1)
        for dag_id in dag_ids:
            stack.unpause(dag_id)
        print(f"      DAGs: {', '.join(dag_ids)}", flush=True)

        step(3, total, "ingest: validate every batch, version the good ones, quarantine the bad")
        ingest_id = spec.dag_id("ingest")
        first = wait_for_scheduled_run(stack, ingest_id)
        if first is None:  # the daily schedule had nothing due: run it by hand
            first = stack.trigger(ingest_id)
        first_run = stack.wait_for_run(ingest_id, first, timeout=900)
        rejected = [a for a in read_alerts() if a["dag_id"] == ingest_id]
        print(f"      run {first}: {first_run['state']} "
              f"({len(rejected)} batch rejected, see {settings.quarantine_dir / spec.dataset.name})", flush=True)
        for alert in rejected:
            print("      " + alert["message"].replace("\n", "\n      "), flush=True)

        datagen.write_batch(landing, days[DEFECTIVE_DAY], seed=args.seed)
        print(f"      corrected {days[DEFECTIVE_DAY]} batch re-delivered", flush=True)
        second = stack.trigger(ingest_id, conf={"batch_date": days[DEFECTIVE_DAY].isoformat()})
        second_run = stack.wait_for_run(ingest_id, second, timeout=600)
        print(f"      run {second}: {second_run['state']}", flush=True)

        step(4, total, "downstream stages scheduled on the validated-data Asset")
        wait_until_idle(stack, dag_ids)

        validated = asset_events(stack, ingest_id)
        summary["steps"]["ingest"] = {
            "runs": {first: first_run["state"], second: second_run["state"]},
            "validated": [
                {k: e[k] for k in ("batch", "rows", "md5", "dvc_rev", "validation_result_id")}
                for e in sorted(validated, key=lambda e: e["batch"])
            ],
            "rejected": [
                {"batch": Path(p).name, "quarantined": str(p)}
                for p in sorted((settings.quarantine_dir / spec.dataset.name).glob("*.csv"))
            ],
            "alerts": [a["message"].splitlines()[0] for a in rejected],
        }
    finally:
        if args.keep_running:
            print(f"Airflow keeps running at {stack.url}; Ctrl-C to stop.", flush=True)
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
        stack.stop()

    summary["wall_seconds"] = round(time.monotonic() - started, 1)
    out = settings.home / "demo-summary.json"
    out.write_text(json.dumps(summary, indent=2, default=str))
    print_summary(summary, out)
    ok = len(summary["steps"]["ingest"]["validated"]) == CLEAN_DAYS and len(summary["steps"]["ingest"]["rejected"]) >= 1
    return 0 if ok else 1


def print_summary(summary: dict, path: Path) -> None:
    print("\n=== Airloop demo summary ===")
    ingest = summary["steps"]["ingest"]
    print(f"ingest: {len(ingest['validated'])} batches validated and versioned, {len(ingest['rejected'])} rejected")
    for e in ingest["validated"]:
        print(f"  ok   {e['batch']}  {e['rows']:>5} rows  md5 {e['md5']}  rev {e['dvc_rev'][:10]}")
    for r in ingest["rejected"]:
        print(f"  bad  {r['batch']}  quarantined at {r['quarantined']}")
    print(f"wall time: {summary['wall_seconds']} s")
    print(f"summary written to {path}")


if __name__ == "__main__":
    raise SystemExit(main())
