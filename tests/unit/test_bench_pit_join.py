"""bench.bench_pit_join: its reference join means what its entity rows say, and a quick run works."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def _run(code: str) -> dict | list:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO_ROOT, check=True,
                          capture_output=True, text=True, timeout=300)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_reference_joins_each_kind_of_entity_row_as_its_kind_says():
    """Each edge kind gets a value or a null from merge_asof, as make_entities intends."""
    figures = _run("""
        import json
        from bench.bench_pit_join import FEATURES, make_entities, make_view, merge_asof
        view = make_view(10, 720, 0)
        out = {}
        for precision in ("us", "ns"):
            entities, kinds = make_entities(view, 2000, 10, 720, 0, precision)
            ref = merge_asof(entities, view).set_index("row_id")
            valued = ref[list(FEATURES)].notna().any(axis=1)
            stamps = entities["event_timestamp"].astype("int64")
            dup = entities[kinds.loc[entities["row_id"]].to_numpy() == "duplicate"]
            twins = entities.merge(dup[["location_id", "event_timestamp", "row_id"]],
                                   on=["location_id", "event_timestamp"], suffixes=("", "_dup"))
            twins = twins[twins["row_id"] != twins["row_id_dup"]]
            same = (ref.loc[twins["row_id"], list(FEATURES)].fillna(-1).to_numpy()
                    == ref.loc[twins["row_id_dup"], list(FEATURES)].fillna(-1).to_numpy()).all()
            out[precision] = {
                "rows": len(entities), "ids": sorted(set(entities["row_id"])) == list(range(len(entities))),
                "dtype": str(entities["event_timestamp"].dtype),
                "sub_us": int((stamps % 1000 != 0).sum()),
                "valued": {k: float(valued[kinds == k].mean()) for k in sorted(set(kinds))},
                "duplicates": len(dup), "twins_same": bool(same), "twins": int(twins["row_id_dup"].nunique()),
                "extra": [c for c in entities.columns if c not in ("row_id", "location_id", "event_timestamp")],
            }
        print(json.dumps(out))
    """)
    for precision, f in figures.items():
        assert f["ids"] and f["rows"] >= 2000 and f["dtype"] == "datetime64[ns, UTC]", f
        assert (f["sub_us"] == 0) == (precision == "us"), f
        valued = f["valued"]
        for kind in ("exact", "hour_minus_1us", "ttl_edge"):
            assert valued[kind] == 1.0, (precision, kind, valued)
        for kind in ("ttl_out_1us", "in_gap", "before_first", "unknown_location"):
            assert valued[kind] == 0.0, (precision, kind, valued)
        if precision == "ns":
            assert valued["hour_minus_1ns"] == 1.0 and valued["ttl_out_1ns"] == 0.0, valued
        else:
            assert "hour_minus_1ns" not in valued and "ttl_out_1ns" not in valued, valued
        assert 0.3 < valued["random"] < 1.0, valued  # random rows also fall in gaps and TTL misses
        assert f["duplicates"] >= 20 and f["twins"] == f["duplicates"] and f["twins_same"], f
        assert f["extra"] == ["label", "distance_km", "channel"], f


def test_a_quick_run_of_the_duckdb_store_matches_the_reference():
    done = subprocess.run(
        [sys.executable, "-m", "bench.bench_pit_join", "--quick", "--stores", "duckdb", "--json"],
        cwd=REPO_ROOT, check=True, capture_output=True, text=True, timeout=300,
    )
    results = json.loads(done.stdout[done.stdout.index("["):])
    assert [(r["store"], r["rows"]) for r in results] == [("merge_asof", 1_000), ("duckdb", 1_000)]
    for r in results:
        assert "error" not in r, r
        assert r["correct"] and r["mismatches"] == 0 and r["timestamps_changed"] == 0, r
        assert r["seconds"] > 0 and r["growth_mib"] < 1024, r
