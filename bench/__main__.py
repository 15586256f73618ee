"""Print benchmark figures: ``python -m bench`` (quick) or ``python -m bench --all``.

Each entry is also runnable alone (``python -m bench.<name> --help`` for its options).
"""

import subprocess
import sys

QUICK = ["bench.parse_dags"]
# Minutes each on 2 cores: feature materialization, point-in-time joins (offline stores against
# merge_asof), serving latency, drift check cost, the closed loop (a whole demo run), ingest, and
# windowed statistics (daily_windows against Feast's BatchFeatureView aggregations).
LONG = ["bench.bench_materialize", "bench.bench_pit_join", "bench.bench_drift", "bench.bench_serve", "bench.bench_loop",
        "bench.bench_ingest", "bench.bench_aggregations"]

if __name__ == "__main__":
    status = 0
    for module in QUICK + (LONG if "--all" in sys.argv else []):
        print(f"== {module}", flush=True)
        status |= subprocess.call([sys.executable, "-m", module])
    raise SystemExit(status)
