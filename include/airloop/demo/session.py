"""One Airflow stack, a prediction service per model and a loop per model (:class:`Session`)."""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import threading
import time

from airloop.demo.loop import Demo
from airloop.demo.signals import Cancelled, Stopped, StopSignals, stopped
from airloop.demo.summary import asset_event_facts, collect_facts, print_summary, say
from airloop.settings import get_settings
from airloop.testing import AirflowStack, BentoServer, deferred_signals


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
        """Start the stack and the services, then run every loop (in threads when there are several)."""
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
        """Run the loops, stop every process, write and print the summary; the exit status."""
        s = get_settings()
        airflow_facts: dict = {}
        try:
            self.run_loops()
            ok = all(demo.ok for demo in self.demos)
            if ok and len(self.demos) > 1:
                airflow_facts = asset_event_facts(self.stack)
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
