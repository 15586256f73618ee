"""Run every quick benchmark and print its figures: python -m bench (or make bench)."""

import subprocess
import sys

QUICK = ["bench.parse_dags"]

if __name__ == "__main__":
    status = 0
    for module in QUICK:
        print(f"== {module}", flush=True)
        status |= subprocess.call([sys.executable, "-m", module])
    raise SystemExit(status)
