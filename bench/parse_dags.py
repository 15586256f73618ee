"""Parse time of every DAG file in dags/, as Airflow's DagBag measures it.

Run: python -m bench.parse_dags   (prints one line per file and the heavy modules loaded)
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

HEAVY = ("mlflow", "feast", "bentoml", "evidently", "great_expectations", "dvc", "sklearn")


def measure(dags_folder: Path) -> dict:
    t0 = time.perf_counter()
    from airflow.dag_processing.dagbag import DagBag

    import_airflow_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    bag = DagBag(dag_folder=str(dags_folder), safe_mode=False)
    total_s = time.perf_counter() - t1
    files = [
        {"file": Path(stat.file).name, "dags": stat.dag_num, "seconds": stat.duration.total_seconds()}
        for stat in bag.dagbag_stats
    ]
    return {
        "import_airflow_s": round(import_airflow_s, 3),
        "parse_folder_s": round(total_s, 3),
        "files": files,
        "dags": sorted(bag.dag_ids),
        "import_errors": {k: v.splitlines()[-1] for k, v in bag.import_errors.items()},
        "heavy_modules_loaded": sorted(m for m in HEAVY if m in sys.modules),
    }


def main() -> int:
    from airloop.settings import REPO_ROOT

    result = measure(REPO_ROOT / "dags")
    if "--json" in sys.argv:
        print(json.dumps(result))
        return 0
    print(f"import airflow: {result['import_airflow_s']:.3f} s (once per parser process)")
    for row in sorted(result["files"], key=lambda r: r["file"]):
        print(f"  {row['file']:<28} {row['dags']:>2} DAG(s)  {row['seconds'] * 1000:8.1f} ms")
    print(f"whole dags/ folder: {result['parse_folder_s'] * 1000:.1f} ms, {len(result['dags'])} DAGs")
    print(f"import errors: {len(result['import_errors'])}; heavy modules loaded: {result['heavy_modules_loaded'] or 'none'}")
    return 1 if result["import_errors"] else 0



def run(quick: bool = False):
    """DagBag's parse of dags/ in a fresh process (no baseline: the figures stand alone)."""
    import subprocess

    from airloop.settings import REPO_ROOT
    from bench.results import BenchResult, Row

    done = subprocess.run([sys.executable, "-m", "bench.parse_dags", "--json"], cwd=REPO_ROOT, capture_output=True,
                          text=True, check=False)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    out = BenchResult("parse", raw=result)
    slowest = max(result["files"], key=lambda r: r["seconds"])
    out.rows += [
        Row("parse dags/ with DagBag", "folder seconds", result["parse_folder_s"]),
        Row(f"parse dags/ with DagBag: slowest file {slowest['file']}", "seconds", round(slowest["seconds"], 3)),
        Row("parse dags/ with DagBag", "heavy modules loaded", len(result["heavy_modules_loaded"]), None,
            "parse_heavy_modules"),
    ]
    out.notes.append(f"{len(result['dags'])} DAGs, {len(result['import_errors'])} import errors; import airflow "
                     f"{result['import_airflow_s']} s (not in the folder's figure)")
    return out


if __name__ == "__main__":
    raise SystemExit(main())
