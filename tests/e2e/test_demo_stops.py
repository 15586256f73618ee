"""``python -m airloop.demo --keep-running`` stops cleanly on SIGTERM and SIGINT and leaves nothing.

The demo starts Airflow's components and the Bento server in sessions of their own, and
Airflow's task processes put themselves in process groups of their own: nothing but the demo
itself can stop them. Each case starts a real demo (tiny data: the point is process hygiene,
not the ML) in its own session with stdin closed, as a background job would be, records the
whole process tree, signals the demo alone, and checks that it exits with the shell's status
for the signal and that no process it started is still running.

Dead processes whose parent is gone may stay zombies on machines whose PID 1 does not reap
orphans (this one): a zombie runs nothing and holds nothing, so it counts as gone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import requests

from airloop.testing import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

REPO_ROOT = Path(__file__).resolve().parents[2]
STOP_WITHIN = 60  # seconds from the signal to the demo's exit
# The smallest demo the CLI allows (the third clean day carries the defect); it never gets far.
SMALL = ["--clean-days", "3", "--drift-days", "1", "--rows-per-day", "150", "--traffic", "20"]


def _ignore_sigint() -> None:
    """What a non-interactive shell does to a job started with ``&``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class RunningDemo:
    def __init__(self, tmp_path: Path, *, sigint_ignored: bool = False, argv: list[str] | None = None):
        self.home = tmp_path / "airloop"
        self.port = free_port()
        self.log_path = tmp_path / "demo.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRLOOP_", "AIRFLOW_", "AIRFLOW__", "MLFLOW_"))}
        env.update(
            AIRLOOP_HOME=str(self.home), AIRFLOW_HOME=str(self.home / "airflow"),
            AIRLOOP_SERVE_URL=f"http://127.0.0.1:{free_port()}", BENTOML_DO_NOT_TRACK="true",
            DVC_NO_ANALYTICS="1", GX_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1",
        )
        argv = argv or ["-m", "airloop.demo", "--keep-running", *SMALL, "--airflow-port", str(self.port)]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, *argv], cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=_ignore_sigint if sigint_ignored else None,
            )
        self.recorded: list[psutil.Process] = []

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def tree(self) -> list[psutil.Process]:
        with contextlib.suppress(psutil.NoSuchProcess):
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        return []

    def wait_until(self, what: str, condition, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"the demo exited ({self.proc.returncode}) before {what}:\n{self.log()[-4000:]}"
            if condition():
                return
            time.sleep(0.5)
        pytest.fail(f"no {what} after {timeout}s:\n{self.log()[-4000:]}")

    def api_answers(self) -> bool:
        try:
            return requests.get(f"http://127.0.0.1:{self.port}/api/v2/monitor/health", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def record(self) -> list[psutil.Process]:
        self.recorded = self.tree()
        self.described = _describe(self.recorded)  # while they are there to describe
        self.sessions = {self.proc.pid, *(_sid(p) for p in self.recorded)} - {None}
        return self.recorded

    def signal_and_wait(self, sig: int) -> tuple[int | None, float]:
        started = time.monotonic()
        self.proc.send_signal(sig)  # the demo alone, as `kill PID` would
        try:
            return self.proc.wait(STOP_WITHIN), time.monotonic() - started
        except subprocess.TimeoutExpired:
            return None, time.monotonic() - started

    def survivors(self) -> list[psutil.Process]:
        """Every process of this demo still running: the recorded ones, any process started for
        this AIRLOOP_HOME, anything in their sessions (components are session leaders; what they
        fork, retitled with setproctitle, no longer shows its environment), and their descendants."""
        family = {p for p in self.recorded if _running(p)}
        sessions = getattr(self, "sessions", {self.proc.pid})
        for p in psutil.process_iter():
            with contextlib.suppress(psutil.Error, ProcessLookupError):
                if p.pid == os.getpid() or not _running(p):
                    continue
                if os.getsid(p.pid) in sessions or p.environ().get("AIRLOOP_HOME") == str(self.home):
                    family.add(p)
        for p in list(family):
            with contextlib.suppress(psutil.Error):
                family.update(c for c in p.children(recursive=True) if _running(c))
        return sorted(family, key=lambda p: p.pid)

    def kill_everything(self) -> None:
        """Whatever the outcome, leave nothing of this demo running on the machine."""
        for _ in range(3):
            left = self.survivors()
            if not left:
                break
            for p in left:
                with contextlib.suppress(psutil.Error):
                    p.kill()
            psutil.wait_procs(left, timeout=10)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)


def _zombies(procs: list[psutil.Process]) -> int:
    return sum(p.is_running() and not _running(p) for p in procs)


def _sid(p: psutil.Process) -> int | None:
    try:
        return os.getsid(p.pid)
    except ProcessLookupError:
        return None


def _running(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _describe(procs: list[psutil.Process]) -> str:
    lines = []
    for p in procs:
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            lines.append(f"  {p.pid} pgid {os.getpgid(p.pid)} {' '.join(p.cmdline())[:110]}")
    return "\n".join(lines)


def _task_process(demo: RunningDemo) -> bool:
    """An Airflow task process: a process group of its own below a component's session."""
    for p in demo.tree()[1:]:
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if os.getpgid(p.pid) == p.pid != os.getsid(p.pid) and os.getsid(p.pid) != os.getsid(demo.proc.pid):
                return True
    return False


def _bento_server(demo: RunningDemo) -> bool:
    return "bentoml" in _describe(demo.tree())


def _stop_and_check(demo: "RunningDemo", recorded, signum: signal.Signals) -> None:
    """Send ``signum``; the demo must exit 128+signum, say so once, and leave nothing running."""
    status, took = demo.signal_and_wait(signum)
    left = demo.survivors()
    print(f"stopped in {took:.1f} s; {len(recorded)} processes were recorded, {_zombies(recorded)} of them "
          f"left as zombies (exited, not yet reaped):\n{demo.described}")
    assert status == 128 + signum and not left, (
        f"exit status {status} after {took:.0f}s; {len(left)} left running:\n{_describe(left)}\n"
        f"{demo.log()[-3000:]}")
    assert demo.log().count(f"airloop demo: stopped by {signum.name}") == 1, demo.log()[-2000:]


def test_sigterm_mid_run_stops_the_demo_and_everything_it_started(tmp_path):
    demo = RunningDemo(tmp_path)
    try:
        demo.wait_until("Airflow api-server answering", demo.api_answers, timeout=240)
        demo.wait_until("Bento server", lambda: _bento_server(demo), timeout=60)
        # Mid-run: the daily ingest is running, so there are task processes in groups of their own.
        demo.wait_until("Airflow task process", lambda: _task_process(demo), timeout=120)
        recorded = demo.record()
        # The demo, four components and the Bento server each lead a session of their own.
        assert len(recorded) >= 8 and len(demo.sessions) >= 6, demo.described

        _stop_and_check(demo, recorded, signal.SIGTERM)
    finally:
        demo.kill_everything()


def test_sigterm_stops_a_demo_of_two_models_side_by_side(tmp_path):
    # Both loops run in threads of their own; the signal reaches the main thread only, which
    # must stop the loops, both prediction services and Airflow once.
    argv = ["-m", "airloop.demo", "--model", "late_delivery", "--model", "trip_duration", *SMALL,
            "--airflow-port", str(free_port())]
    demo = RunningDemo(tmp_path, argv=argv)
    demo.port = int(argv[-1])
    try:
        demo.wait_until("Airflow api-server answering", demo.api_answers, timeout=240)
        demo.wait_until("two Bento servers", lambda: _describe(demo.tree()).count("bentoml serve") == 2, timeout=60)
        demo.wait_until("Airflow task process", lambda: _task_process(demo), timeout=180)
        recorded = demo.record()
        assert len(demo.sessions) >= 7, demo.described  # the demo, four components, two servers

        _stop_and_check(demo, recorded, signal.SIGTERM)
    finally:
        demo.kill_everything()


def test_sigint_stops_a_background_demo_while_airflow_starts(tmp_path):
    # The demo inherits SIGINT ignored, as `python -m airloop.demo --keep-running &` does from sh.
    demo = RunningDemo(tmp_path, sigint_ignored=True)
    try:
        # While Airflow starts: the api-server answers, the demo still waits for a healthy scheduler
        # (or has just started the Bento server).
        demo.wait_until("Airflow api-server answering", demo.api_answers, timeout=240)
        recorded = demo.record()
        assert len(recorded) >= 5, demo.described

        _stop_and_check(demo, recorded, signal.SIGINT)
    finally:
        demo.kill_everything()


# The loop itself replaced by nothing, so the demo reaches --keep-running's wait in seconds.
KEEP_RUNNING = """
import sys
from airloop import demo
demo.Demo.run = lambda self: self.summary
sys.exit(demo.main(sys.argv[1:]))
"""


@pytest.mark.parametrize(("sig", "status", "sigint_ignored"), [(signal.SIGTERM, 143, False), (signal.SIGINT, 130, True)],
                         ids=["SIGTERM", "SIGINT-inherited-ignored"])
def test_a_signal_ends_the_keep_running_wait(tmp_path, sig, status, sigint_ignored):
    demo = RunningDemo(tmp_path, sigint_ignored=sigint_ignored, argv=["-c", KEEP_RUNNING, "--keep-running", *SMALL])
    try:
        demo.wait_until("keep-running wait", lambda: "keeps running" in demo.log(), timeout=120)
        got, took = demo.signal_and_wait(sig)
        assert got == status, f"exit status {got} after {took:.0f}s:\n{demo.log()[-3000:]}"
        assert f"airloop demo: stopped by {signal.Signals(sig).name}" in demo.log(), demo.log()
    finally:
        demo.kill_everything()
