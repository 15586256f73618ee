"""Processes the harness starts: free ports, signals held while spawning, stopping whole groups."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

__all__ = ["deferred_signals", "free_port", "process_descendants", "terminate_groups"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picked it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def deferred_signals(signums: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[None]:
    """Hold SIGINT/SIGTERM while a process is spawned and recorded; raise them afterwards.

    A Python signal handler that raises (KeyboardInterrupt, the demo's stop) can fire between
    ``Popen`` starting a child and the caller keeping its handle; that child would then be
    started but unknown to the cleanup. Inside this block such signals are only noted, and
    raised again, to whatever handler was there, when it ends. No-op outside the main thread.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {}
    for sig in signums:
        if signal.getsignal(sig) is not None:  # None: a handler not installed from Python
            previous[sig] = signal.signal(sig, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sig in dict.fromkeys(caught):
            signal.raise_signal(sig)


def process_descendants(procs: list[subprocess.Popen]) -> list:
    """psutil handles on every descendant of these processes (pid reuse safe), taken now."""
    import psutil

    found = []
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            found += psutil.Process(proc.pid).children(recursive=True)
    return found


def _killpg(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def terminate_groups(procs: list[subprocess.Popen], descendants: list, until: float) -> None:
    """SIGTERM these session leaders' groups and the groups their descendants lead; wait until
    ``until``; then SIGKILL the groups and every recorded descendant that is still there."""
    import psutil

    def signal_all(sig: int, members) -> None:
        for proc in procs:
            # SIGKILL goes to the group even when its leader (running when stop() began) has just
            # exited: members left in the group keep its id in use, so no other process has it.
            if proc.poll() is None or sig == signal.SIGKILL:
                _killpg(proc.pid, sig)
        for child in members:
            with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError, PermissionError):
                if sig == signal.SIGKILL:
                    child.kill()
                if child.is_running() and os.getpgid(child.pid) == child.pid:
                    os.killpg(child.pid, sig)  # a group of its own (a task), with what it started

    signal_all(signal.SIGTERM, descendants)
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(max(0.1, until - time.monotonic()))
    _, alive = psutil.wait_procs(descendants, timeout=max(0.1, until - time.monotonic()))
    left = [proc for proc in procs if proc.poll() is None]
    if left or alive:
        alive = list({*alive, *process_descendants(left)})  # and whatever the stragglers started since
        signal_all(signal.SIGKILL, alive)
        for proc in left:
            proc.wait()
        psutil.wait_procs(alive, timeout=10)
