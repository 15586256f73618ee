"""Write a compose ``.env`` from ``.env.example`` with every ``change-me`` replaced by a new secret.

    python docker/new_env.py            # writes .env next to docker-compose.yaml (mode 600)
    python docker/new_env.py --stdout   # prints it instead

Secrets are URL-safe (they end up inside database URLs); ``AIRFLOW_FERNET_KEY`` gets a real
Fernet key (32 random bytes, URL-safe base64). Standard library only. An existing ``.env`` is
never overwritten: delete it first if you mean to rotate every secret.
"""

from __future__ import annotations

import argparse
import base64
import os
import secrets
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLACEHOLDER = "change-me"


def new_secret(name: str) -> str:
    if name == "AIRFLOW_FERNET_KEY":
        return base64.urlsafe_b64encode(os.urandom(32)).decode()
    return secrets.token_urlsafe(32)


def render(example: str) -> str:
    """The example's text with each ``NAME=change-me`` line given a fresh secret."""
    lines = []
    for line in example.splitlines():
        name, sep, value = line.partition("=")
        if sep and not line.lstrip().startswith("#") and value.strip() == PLACEHOLDER:
            line = f"{name}={new_secret(name.strip())}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--example", type=Path, default=ROOT / ".env.example")
    parser.add_argument("--output", type=Path, default=ROOT / ".env")
    parser.add_argument("--stdout", action="store_true", help="print instead of writing --output")
    args = parser.parse_args(argv)
    text = render(args.example.read_text())
    if args.stdout:
        sys.stdout.write(text)
        return 0
    if args.output.exists():
        print(f"{args.output} exists; not overwriting it", file=sys.stderr)
        return 1
    fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    print(f"wrote {args.output} with new secrets")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
