"""Small command-line entry points that derive their arguments from the settings.

    python -m airloop.cli mlflow-ui [--port 5000]   # MLflow UI on the embedded store
    python -m airloop.cli settings                  # print the effective settings as env vars
    python -m airloop.cli check-secrets             # exit 1 naming any placeholder or short secret
"""

from __future__ import annotations

import argparse
import os
import sys

from airloop.settings import WeakSecretError, ensure_dirs, get_settings, require_strong_secrets, serve_config


def mlflow_ui(port: int, host: str) -> int:
    """Replace this process with ``mlflow server`` on the configured tracking store and artifacts."""
    s = ensure_dirs()
    cmd = [
        os.path.join(os.path.dirname(sys.executable), "mlflow"), "server",
        "--backend-store-uri", s.mlflow_tracking_uri,
        "--artifacts-destination", str(s.mlflow_artifacts_dir),
        "--host", host, "--port", str(port),
    ]
    print(" ".join(cmd), flush=True)
    os.execv(cmd[0], cmd)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m airloop.cli``: run one sub-command; the exit status."""
    parser = argparse.ArgumentParser(prog="airloop")
    sub = parser.add_subparsers(dest="command", required=True)
    ui = sub.add_parser("mlflow-ui", help="serve the MLflow UI on the configured store")
    ui.add_argument("--port", type=int, default=5000)
    ui.add_argument("--host", default="127.0.0.1")
    sub.add_parser("settings", help="print the effective settings")
    sub.add_parser("check-secrets", help="refuse placeholder, empty or short secrets in the environment")
    args = parser.parse_args(argv)
    if args.command == "mlflow-ui":
        return mlflow_ui(args.port, args.host)
    if args.command == "check-secrets":
        try:
            require_strong_secrets()
        except WeakSecretError as exc:
            print(f"airloop: {exc}", file=sys.stderr)
            return 1
        return 0
    for key, value in sorted({**get_settings().as_env(), **serve_config().as_env()}.items()):
        print(f"{key}={value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
