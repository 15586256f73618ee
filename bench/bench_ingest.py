"""Peak memory of reading a landing batch: Airloop's reader next to a plain pandas.read_csv.

    python -m bench.bench_ingest [--sizes 10,50,200] [--quick] [--gx] [--json]

Writes orders batches of growing size (MB, the demo schema: datagen rows repeated) to a temp
dir, then measures each size with each reader in a fresh process:

- ``baseline``: ``pandas.read_csv(path)`` with type inference (what a plain loader does);
- ``airloop``: ``validation.read_typed(spec.events, path)``, the ingest gate's first layer (parse
  strictly, check the header and every value's type, build the typed frame);
- ``airloop+gx`` (with ``--gx``): ``validation.run_validation``, i.e. the above plus the Great
  Expectations checkpoint (the 200 MB batch fails its row-count rule but is still checked).

The child imports everything first, then resets its peak RSS (``/proc/self/clear_refs``), so
``ratio`` = (peak RSS - RSS before reading) / file size is the reading's own cost. Airloop's
goal is a ratio <= 3. ``--quick`` runs 5 and 20 MB without GX in well under a minute.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.bench_drift import peak_mib, reset_peak, rss_mib

REPO_ROOT = Path(__file__).resolve().parents[1]
READERS = ("baseline", "airloop")
DAY = dt.date(2024, 3, 1)


def write_batch(path: Path, megabytes: float) -> int:
    """An orders CSV of about ``megabytes`` MB (one day's rows repeated); returns its size."""
    from airloop.fileio import to_csv_bytes
    from airloop.spec import example_data

    datagen = example_data("late_delivery")

    body = to_csv_bytes(datagen.generate_orders(DAY, orders_per_day=5_000))
    header, rows = body.split(b"\n", 1)
    target = int(megabytes * 1_000_000)
    with path.open("wb") as out:
        out.write(header + b"\n")
        size = len(header) + 1
        while size < target:
            out.write(rows)
            size += len(rows)
    return path.stat().st_size


def measure(reader: str, path: Path) -> dict:
    """Run one reader on ``path`` in this process and report its peak RSS (child side)."""
    import pandas as pd
    import pyarrow  # noqa: F401  (imported before the reset: not the reading's cost)

    from airloop import validation
    from airloop.spec import load_spec

    spec = load_spec(REPO_ROOT / "include" / "models" / "late_delivery.yaml")
    if reader == "airloop+gx":
        import great_expectations  # noqa: F401

        from airloop.settings import ensure_dirs

        settings = ensure_dirs()
    before = rss_mib()
    reset_peak()
    clock = time.perf_counter()
    if reader == "baseline":
        rows = len(pd.read_csv(path))
        failures: list[str] = []
    elif reader == "airloop":
        frame, found = validation.read_typed(spec.events, path)
        rows, failures = (len(frame) if frame is not None else 0), [f.describe() for f in found]
    else:
        result, _ = validation.run_validation(spec.events, path.name, path, DAY, settings)
        rows, failures = result.rows or 0, [f.expectation for f in result.failures]
    return {
        "seconds": round(time.perf_counter() - clock, 2),
        "before_mib": round(before, 1),
        "peak_mib": round(peak_mib(), 1),
        "rows": rows,
        "failures": failures,
    }


def child(reader: str, path: Path, home: Path) -> dict:
    """``measure`` in a fresh process, so each peak is its own."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.bench_ingest", "--child", reader, str(path)],
        cwd=REPO_ROOT, check=True, capture_output=True, text=True,
        env={**os.environ, "AIRLOOP_HOME": str(home)},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure_sizes(sizes: list[float], readers=READERS, say=None) -> list[dict]:
    """Each reader on a batch of each size, each in a fresh process; ``say`` prints a line per result."""
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        for megabytes in sizes:
            path = Path(tmp) / f"orders_{DAY}.csv"
            size = write_batch(path, megabytes)
            for reader in readers:
                figures = child(reader, path, Path(tmp) / "home")
                used = (figures["peak_mib"] - figures["before_mib"]) * 2**20
                results.append({"file_mb": round(size / 1e6, 1), "reader": reader, **figures,
                                "ratio": round(used / size, 2)})
                if say:
                    r = results[-1]
                    say(f"{r['file_mb']:>7.1f} MB  {reader:<11} {r['rows']:>9,} rows  "
                        f"{r['seconds']:>6.1f} s  peak {r['peak_mib']:>7.0f} MiB "
                        f"(+{r['peak_mib'] - r['before_mib']:.0f} over {r['before_mib']:.0f} after imports)  "
                        f"ratio {r['ratio']:.2f}x file"
                        + (f"  failures: {r['failures']}" if r["failures"] else ""), flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10,50,200", help="batch sizes in MB, comma-separated")
    parser.add_argument("--quick", action="store_true", help="5 and 20 MB only (well under a minute)")
    parser.add_argument("--gx", action="store_true", help="also run the Great Expectations layer")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--child", nargs=2, metavar=("READER", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child[0], Path(args.child[1]))))
        return 0

    sizes = [5.0, 20.0] if args.quick else [float(s) for s in args.sizes.split(",")]
    readers = READERS + (("airloop+gx",) if args.gx else ())
    results = measure_sizes(sizes, readers, say=None if args.json else print)
    if args.json:
        print(json.dumps(results, indent=2))
    return 0



# --- for the report (bench.__main__) ----------------------------------------------------------------


def run(quick: bool = False, sizes: list[float] | None = None):
    """Airloop's typed reader against plain ``pandas.read_csv``, each size in fresh processes."""
    from bench.results import BenchResult, Row

    sizes = sizes or ([5.0] if quick else [10.0, 50.0, 200.0])
    figures = measure_sizes(sizes)
    out = BenchResult("ingest_read", raw=figures)
    for mb in sorted({f["file_mb"] for f in figures}):
        a, b = (next(f for f in figures if f["file_mb"] == mb and f["reader"] == r) for r in READERS[::-1])
        target = f"read a {mb:g} MB landing batch: Airloop read_typed vs pandas.read_csv"
        out.rows.append(Row(target, "seconds", a["seconds"], b["seconds"]))
        out.rows.append(Row(target, "peak growth / file size", a["ratio"], b["ratio"], "ingest_read_memory_x_file"))
    names = {"airloop": "Airloop read_typed", "baseline": "pandas.read_csv"}
    out.series["memory_over_rows"] = {
        names[r]: [(f["rows"], f["peak_mib"] - f["before_mib"]) for f in figures if f["reader"] == r] for r in READERS
    }
    out.series["memory_label"] = "peak RSS growth of the read (MiB)"
    return out


if __name__ == "__main__":
    raise SystemExit(main())
