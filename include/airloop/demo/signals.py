"""Stop signals turned into one orderly shutdown of the demo.

SIGINT (Ctrl-C) and SIGTERM raise :class:`Stopped` in the main thread; loop threads unwind
with :class:`Cancelled`; :func:`stopped` prints the one closing line and gives the exit status.
:func:`stop_early` covers the seconds before the demo's own handlers are installed.
"""

from __future__ import annotations

import signal

from airloop.demo.summary import say


def stop_early() -> None:
    """For ``python -m airloop.demo``: SIGINT and SIGTERM end it even during the seconds its
    imports take (a background job inherits SIGINT ignored). Nothing has started yet;
    :class:`StopSignals` takes over once :func:`airloop.demo.main` runs."""

    def handle(signum: int, frame) -> None:
        print(f"airloop demo: stopped by {signal.Signals(signum).name} before anything started", flush=True)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)


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
        """Handle SIGINT and SIGTERM from now on; returns itself."""
        # Explicitly, for both: a background job of a non-interactive shell (``demo &``) inherits
        # SIGINT ignored, and Python then installs no KeyboardInterrupt handler; SIGTERM's default
        # ends the process without any cleanup. Airflow and the service run in sessions of their
        # own (a Ctrl-C meant for the demo does not reach them), so only the demo can stop them.
        for sig in self.SIGNALS:
            self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def uninstall(self) -> None:
        """Put back the handlers :meth:`install` replaced."""
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
