"""The demo's command line: ``python -m airloop.demo [--model MODEL ...]`` (:func:`main`)."""

from __future__ import annotations

import argparse
import os
import sys

import airloop.demo
from airloop.demo.session import Session
from airloop.demo.signals import Stopped, StopSignals, stopped
from airloop.settings import WeakSecretError, ensure_dirs, require_strong_secrets, serve_url_env
from airloop.testing import free_port


def main(argv: list[str] | None = None) -> int:
    """Run the demo as ``python -m airloop.demo`` does with ``argv``; the process's exit status.

    0 when every loop closed, 1 when one failed (or a secret is weak), 130/143 when SIGINT or
    SIGTERM stopped it.
    """
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


def default_model() -> str:
    """The model the demo runs without ``--model``: the first, by name, with example data."""
    from airloop.spec import has_example_data, load_valid_specs

    names = [spec.name for spec in load_valid_specs()[0] if has_example_data(spec)]
    if not names:
        raise SystemExit("airloop demo: no model in the models directory has example data (<model>/datagen.py)")
    return names[0]


def _main(argv: list[str] | None, signals: StopSignals) -> int:
    parser = argparse.ArgumentParser(prog="python -m airloop.demo", description=airloop.demo.__doc__.splitlines()[0])
    parser.add_argument("--model", dest="models", action="append", metavar="MODEL",
                        help="a model to run the loop for; repeat it to run several side by side in one Airflow "
                             "(default: the first model, by name, with example data)")
    parser.add_argument("--seed", type=int, default=None, help="default: the example's own")
    parser.add_argument("--clean-days", type=int, default=14)
    parser.add_argument("--drift-days", type=int, default=5)
    parser.add_argument("--drift-strength", type=float, default=0.6)
    parser.add_argument("--rows-per-day", type=int, default=None,
                        help="events per daily batch (default: the example's own)")
    parser.add_argument("--traffic", type=int, default=800, help="requests served per traffic wave")
    parser.add_argument("--traffic-of", type=_model_count, action="append", metavar="MODEL=N",
                        help="requests per wave for one model (overrides --traffic for it; repeatable)")
    parser.add_argument("--airflow-port", type=int, default=None, help="default: a free port")
    parser.add_argument("--keep-running", action="store_true", help="leave Airflow and the service up")
    args = parser.parse_args(argv)
    args.models = list(dict.fromkeys(args.models or [default_model()]))
    args.model = args.models[0]
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
