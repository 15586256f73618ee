"""Serving latency and throughput: the Bento vs. two baselines, in one run on one setup.

    python -m bench.bench_serve [--home DIR] [--seconds 10] [--rounds 5] [--json]

Targets, each measured with 1 and 8 concurrent clients sending single-row predictions:

- ``in-process``: ``airloop.serve.lookup_and_predict`` called directly (Feast online lookup
  through the FeatureService + HistGradientBoosting predict), no HTTP; 8 clients = 8 threads.
- ``fastapi``: a minimal plain FastAPI app under uvicorn doing the same lookup and predict in a
  sync endpoint (FastAPI's thread pool), with the same pydantic request model; no prediction
  log, no access log.
- ``bento``: ``bentoml serve airloop.bento_service:PredictionService`` as configured by
  default (``/predict`` computes on the event loop) but without the access log; it also
  queues every prediction for the prediction log.
- ``bento-thread-t<N>`` (``--in-thread N``): the same with ``AIRLOOP_SERVE_PREDICT_IN_THREAD=true``
  and ``AIRLOOP_SERVE_THREADS=N``, i.e. ``/predict`` in a thread pool of N threads.

Both servers run ``AIRLOOP_SERVE_WORKERS`` processes (default 1). All targets are measured
in interleaved rounds (see :func:`measure`), so slow drift of the machine's speed hits them
alike.

HTTP clients are threads in this process using keep-alive ``http.client`` connections, so
on a small machine the clients compete with the servers for CPU: compare ratios, not
absolutes. Every server runs with ``OMP_NUM_THREADS=1``. Without ``--home`` a temporary
AIRLOOP_HOME is prepared as the tests do (10 days of orders, statistics, Feast apply and
materialize, a trained @champion), which takes about a minute.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CLIENTS = (1, 8)
# The model served and measured: the requests are its rows.
MODEL = "late_delivery"


# --- setup ----------------------------------------------------------------------------------


def prepare_home(home: Path, days: int = 10, orders_per_day: int = 1500) -> None:
    """Orders -> statistics -> Feast -> a trained, gated @champion, under ``home``."""
    os.environ["AIRLOOP_HOME"] = str(home)
    import pandas as pd

    from airloop import features, promotion, registry, train
    from airloop.settings import ensure_dirs, get_settings
    from airloop.spec import example_data, load_spec

    datagen = example_data("late_delivery")

    settings = ensure_dirs(get_settings())
    spec = load_spec(settings.models_dir / f"{MODEL}.yaml")
    if registry.champion_version(spec, settings):
        return
    today = dt.datetime.now(dt.timezone.utc).date()
    out = (settings.offline_dir / "orders")
    out.mkdir(parents=True, exist_ok=True)
    for i in range(days, 0, -1):
        day = today - dt.timedelta(days=i)
        datagen.generate_orders(day, orders_per_day=orders_per_day).to_parquet(out / f"orders_{day:%Y-%m-%d}.parquet")
    features.derive(spec, settings)
    features.apply(settings)
    # Only this model's views: the other models' (applied too, one Feast project) have no data here.
    store = features.get_store(settings)
    features.materialize(
        dt.datetime.now(dt.timezone.utc), settings, feature_views=features.stored_views(spec, store), store=store
    )
    orders = pd.concat(pd.read_parquet(p) for p in sorted(out.glob("*.parquet")))
    training = features.build_training_set(spec, features.entity_df_from_events(spec, orders), settings=settings)
    fit_on, holdout = train.time_split(training, spec.dataset.timestamp, spec.split.holdout_days)
    columns = train.feature_columns(spec, training)
    model = train.fit(spec, fit_on, columns)
    metrics = train.evaluate(spec, model, holdout[columns], holdout[spec.target])
    _, version = train.log_training_run(
        spec, model, fit_on, holdout, columns, metrics, train.Lineage(trigger_reason="bench"), settings
    )
    promotion.gate(spec, version, holdout, metrics, actor="bench", settings=settings)


def request_rows(n: int = 500, seed: int = 1) -> list[dict]:
    from airloop.spec import example_data

    datagen = example_data("late_delivery")

    rng = random.Random(seed)
    ids = datagen.restaurants().ids.tolist()
    return [
        {
            "restaurant_id": rng.choice(ids),
            "distance_km": round(rng.uniform(0.5, 12.0), 2),
            "items": rng.randint(1, 8),
            "order_hour": rng.randint(0, 23),
        }
        for _ in range(n)
    ]


# --- the FastAPI baseline ---------------------------------------------------------------------


def baseline_predictor():
    """(spec, predict_one): the baselines' work, the same lookup + predict the Bento does.

    ``predict_one(row)`` reads the row's online features through the FeatureService (held,
    as the Bento's Predictor holds it) and predicts with the ``@champion`` model.
    """
    from airloop import features, registry, serve
    from airloop.settings import ServeConfig, get_settings

    settings = get_settings()
    spec = serve.serving_spec(ServeConfig(model=MODEL), settings)
    store = features.get_store(settings)
    model = registry.load_version(spec, registry.champion_version(spec, settings), settings)
    service = features.feature_service(spec, store)

    def predict_one(row: dict):
        return serve.lookup_and_predict(spec, [row], model, store, service)[0]

    return spec, predict_one


def fastapi_app():
    """``uvicorn bench.bench_serve:fastapi_app --factory``: lookup + predict, nothing else."""
    from fastapi import FastAPI

    from airloop import serve

    spec, predict_one = baseline_predictor()
    Request = serve.request_model(spec)
    app = FastAPI()

    def predict(body):
        scored = predict_one(body.model_dump())
        return {"prediction": scored.prediction, "model_version": scored.model_version, "request_id": scored.request_id}

    predict.__annotations__["body"] = Request  # a class built from the spec at run time
    app.post("/predict")(predict)

    @app.get("/ready")
    def ready() -> dict:
        return {"ok": True}

    predict_one(request_rows(1)[0])  # warm up like the Bento does
    return app


# --- load generation ----------------------------------------------------------------------------


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def summarize(latencies: list[float], errors: int, wall: float) -> dict:
    values = sorted(latencies)
    return {
        "requests": len(values),
        "errors": errors,
        "p50_ms": round(_percentile(values, 0.50) * 1000, 3),
        "p99_ms": round(_percentile(values, 0.99) * 1000, 3),
        "max_ms": round(values[-1] * 1000, 3) if values else None,
        "mean_ms": round(statistics.fmean(values) * 1000, 3) if values else None,
        "throughput_rps": round(len(values) / wall, 1) if wall else None,
    }


@dataclass
class Load:
    """Latencies (seconds), errors and measured wall time, summed over rounds."""

    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    wall: float = 0.0

    def summary(self) -> dict:
        return summarize(self.latencies, self.errors, self.wall)


def run_load(call, clients: int, seconds: float, rows: list[dict], into: Load, warmup: float = 0.5) -> None:
    """``clients`` threads calling ``call(worker_state, row)`` back to back for ``seconds``."""
    stop_at = [float("inf")]  # set once every client has warmed up
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    barrier = threading.Barrier(clients + 1)

    def worker(i: int) -> None:
        state: dict = {}
        rng = random.Random(i)
        barrier.wait()
        warm_until = time.perf_counter() + warmup
        while time.perf_counter() < warm_until:
            call(state, rng.choice(rows))
        barrier.wait()
        out = latencies[i]
        while time.perf_counter() < stop_at[0]:
            started = time.perf_counter()
            try:
                ok = call(state, rng.choice(rows))
            except Exception:
                ok = False
            if ok:
                out.append(time.perf_counter() - started)
            else:
                errors[i] += 1
        if "conn" in state:
            state["conn"].close()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()  # all started: warm up
    barrier.wait()  # warm-up over
    started = time.perf_counter()
    stop_at[0] = started + seconds
    for t in threads:
        t.join()
    into.wall += time.perf_counter() - started
    into.latencies.extend(x for per in latencies for x in per)
    into.errors += sum(errors)


def http_call(port: int, path: str = "/predict"):
    def call(state: dict, row: dict) -> bool:
        conn = state.get("conn")
        if conn is None:
            conn = state["conn"] = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        body = json.dumps(row)
        try:
            conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            state.pop("conn", None)
            raise
        return resp.status == 200

    return call


# --- servers ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(cmd: list[str], env: dict, log_path: Path, ready_url: tuple[int, str], timeout: float = 600) -> subprocess.Popen:
    log = open(log_path, "ab")
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    port, path = ready_url
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd[:4]} exited ({proc.returncode}); see {log_path}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                conn.close()
                return proc
            conn.close()
        except OSError:
            pass
        time.sleep(0.5)
    stop_server(proc)
    raise TimeoutError(f"{cmd[:4]} not ready after {timeout}s; see {log_path}")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def server_env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRLOOP_")}
    env.update(
        AIRLOOP_HOME=str(home),
        # The models directory holds several specs: the servers must be told which one to serve.
        AIRLOOP_SERVE_MODEL=MODEL,
        BENTOML_HOME=str(home / "bentoml"),
        BENTOML_DO_NOT_TRACK="true",
        BENTOML_CONTAINERIZED="true",
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    )
    return env


# --- main -----------------------------------------------------------------------------------------


def measure(home: Path, seconds: float, in_thread: list[int], rounds: int) -> dict:
    """Every target with 1 and 8 clients, in ``rounds`` interleaved slices of ``seconds / rounds``.

    All servers are up at once (an idle one costs nothing) and each round visits every target
    in a rotated order, so a machine that speeds up or slows down during the run shifts all
    targets alike instead of skewing whichever ran at the time.
    """
    os.environ["AIRLOOP_HOME"] = str(home)
    from airloop import prediction_log
    from airloop.settings import get_settings

    rows = request_rows()
    load_before = os.getloadavg()
    spec, predict_one = baseline_predictor()
    # A reused home holds earlier runs' predictions: count only this run's.
    logged_before = len(prediction_log.read_predictions(model=spec, settings=get_settings()))

    def in_process(state: dict, row: dict) -> bool:
        predict_one(row)
        return True

    env = server_env(home)
    workers = os.environ.get("AIRLOOP_SERVE_WORKERS", "1")  # both servers run this many processes
    logs = home / "bench-logs"
    logs.mkdir(exist_ok=True)
    targets = {"in-process": in_process}
    servers: list[subprocess.Popen] = []
    try:
        port = free_port()
        servers.append(start_server(
            [sys.executable, "-m", "uvicorn", "bench.bench_serve:fastapi_app", "--factory", "--host", "127.0.0.1",
             "--port", str(port), "--workers", workers, "--log-level", "warning", "--no-access-log"],
            env, logs / "fastapi.log", (port, "/ready"),
        ))
        targets["fastapi"] = http_call(port)
        bentos = {"bento": {}}
        for threads in in_thread:
            bentos[f"bento-thread-t{threads}"] = {"AIRLOOP_SERVE_PREDICT_IN_THREAD": "true", "AIRLOOP_SERVE_THREADS": str(threads)}
        for name, extra in bentos.items():
            port = free_port()
            servers.append(start_server(
                [sys.executable, "-m", "bentoml", "serve", "airloop.bento_service:PredictionService",
                 "--host", "127.0.0.1", "--port", str(port)],
                {**env, "AIRLOOP_SERVE_ACCESS_LOG": "false", "AIRLOOP_SERVE_WORKERS": workers, **extra},
                logs / f"{name}.log", (port, "/readyz"),
            ))
            targets[name] = http_call(port)
        loads = {f"{name}/{clients}": Load() for clients in CLIENTS for name in targets}
        names = list(targets)
        for clients in CLIENTS:
            for i in range(rounds):
                for name in names[i % len(names):] + names[: i % len(names)]:
                    run_load(targets[name], clients, seconds / rounds, rows, loads[f"{name}/{clients}"])
    finally:
        for proc in servers:
            stop_server(proc)
    logged = len(prediction_log.read_predictions(model=spec, settings=get_settings())) - logged_before
    return {
        "seconds_per_target": seconds,
        "rounds": rounds,
        "cpus": os.cpu_count(),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "bento_predictions_logged": logged,
        "results": {name: load.summary() for name, load in loads.items()},
    }


def main(argv: list[str] | None = None) -> int:
    # Before anything loads OpenMP (sklearn): the in-process baseline runs like the servers.
    os.environ["OMP_NUM_THREADS"] = "1"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, help="a prepared AIRLOOP_HOME to reuse (prepared if empty)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per target and client count")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved slices the seconds are split into")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    parser.add_argument("--in-thread", default="1",
                        help="also measure the Bento with /predict in a pool of N threads, for each N "
                             "in this comma-separated list ('' for none)")
    args = parser.parse_args(argv)

    tmp = None
    home = args.home
    if home is None:
        tmp = Path(tempfile.mkdtemp(prefix="airloop-bench-serve-"))
        home = tmp / "airloop"
    home = home.resolve()
    try:
        started = time.perf_counter()
        prepare_home(home)
        if not args.json:
            print(f"setup: {time.perf_counter() - started:.1f} s ({home})", flush=True)
        result = measure(home, args.seconds, [int(t) for t in args.in_thread.split(",") if t], args.rounds)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{result['cpus']} CPUs, load average before {result['loadavg_before']} after {result['loadavg_after']}; "
          f"{args.seconds:g} s per target in {args.rounds} interleaved rounds, single-row requests")
    print(f"{'target/clients':<18} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'mean ms':>8} {'req/s':>8} {'n':>7} {'errors':>6}")
    for name, r in result["results"].items():
        print(f"{name:<18} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['max_ms']:>8.1f} {r['mean_ms']:>8.2f} "
              f"{r['throughput_rps']:>8.1f} {r['requests']:>7} {r['errors']:>6}")
    print(f"bento predictions in the prediction log: {result['bento_predictions_logged']}")
    errors = sum(r["errors"] for r in result["results"].values())
    return 1 if errors else 0



# --- for the report (bench.__main__) ----------------------------------------------------------------


def run(quick: bool = False, home: Path | None = None, seconds: float | None = None, rounds: int | None = None,
        in_thread: list[int] | None = None):
    """The Bento against plain FastAPI and in-process, 1 and 8 clients, in one run.

    Both servers run one worker per core unless ``AIRLOOP_SERVE_WORKERS`` says otherwise (the
    issue's throughput goal is stated for that). ``home`` is a prepared AIRLOOP_HOME, reused if
    it already has a champion (the runner keeps one under ``$AIRLOOP_HOME/bench/serve-home``).
    """
    from bench.results import BenchResult, Row

    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ.setdefault("AIRLOOP_SERVE_WORKERS", str(os.cpu_count() or 1))
    seconds = seconds or (3.0 if quick else 10.0)
    rounds = rounds or (1 if quick else 5)
    in_thread = in_thread if in_thread is not None else ([] if quick else [1])
    tmp = None
    if home is None:
        tmp = Path(tempfile.mkdtemp(prefix="airloop-bench-serve-"))
        home = tmp / "airloop"
    saved = os.environ.get("AIRLOOP_HOME")
    try:
        started = time.perf_counter()
        prepare_home(home.resolve())
        setup = time.perf_counter() - started
        result = measure(home.resolve(), seconds, in_thread, rounds)
    finally:
        if saved is None:
            os.environ.pop("AIRLOOP_HOME", None)
        else:
            os.environ["AIRLOOP_HOME"] = saved
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    r = result["results"]
    out = BenchResult("serve", raw=result)
    out.rows += [
        Row("serve 1 client: Bento vs plain FastAPI", "p99 ms", r["bento/1"]["p99_ms"], r["fastapi/1"]["p99_ms"],
            "serve_p99_1_vs_fastapi"),
        Row("serve 1 client: Bento vs in-process", "p99 ms", r["bento/1"]["p99_ms"], r["in-process/1"]["p99_ms"],
            "serve_p99_1_vs_in_process"),
        Row("serve 1 client: Bento vs plain FastAPI", "p50 ms", r["bento/1"]["p50_ms"], r["fastapi/1"]["p50_ms"]),
        Row("serve 8 clients: Bento vs plain FastAPI", "req/s", r["bento/8"]["throughput_rps"],
            r["fastapi/8"]["throughput_rps"], "serve_rps_8_vs_fastapi"),
        Row("serve 8 clients: Bento vs plain FastAPI", "p99 ms", r["bento/8"]["p99_ms"], r["fastapi/8"]["p99_ms"]),
    ]
    for threads in in_thread:
        name = f"bento-thread-t{threads}"
        out.rows.append(Row(f"serve 8 clients: {name} vs plain FastAPI", "req/s", r[f"{name}/8"]["throughput_rps"],
                            r["fastapi/8"]["throughput_rps"]))
    # Every Bento request answered (warm-up ones too, which are not counted here) is logged.
    answered = sum(v["requests"] for k, v in r.items() if k.startswith("bento"))
    out.rows.append(Row("serve: Bento prediction log vs requests answered", "predictions",
                        result["bento_predictions_logged"], answered, "serve_every_prediction_logged"))
    out.series["latency"] = r
    out.notes.append(f"{result['seconds_per_target']:g} s per target and client count in {rounds} interleaved "
                     f"round(s); {os.environ['AIRLOOP_SERVE_WORKERS']} server worker(s); {result['cpus']} CPUs, "
                     f"load average {result['loadavg_before']} before, {result['loadavg_after']} after; "
                     f"setup {setup:.0f} s; errors {sum(v['errors'] for v in r.values())}; the log also holds "
                     f"the warm-up requests")
    return out


if __name__ == "__main__":
    raise SystemExit(main())
