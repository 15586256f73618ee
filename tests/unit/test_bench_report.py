"""``python -m bench``: one run writes the table (with ratio rows), the markdown report and its PNGs.

Tiny sizes of two cheap benchmarks; no timing is asserted.
"""

from __future__ import annotations

import json

import pytest

from airloop.timeline import loop_timeline


def _task(task_id: str, start: str, end: str) -> dict:
    return {"task_id": task_id, "start_date": f"2026-01-01T00:{start}+00:00", "end_date": f"2026-01-01T00:{end}+00:00"}


@pytest.mark.timeout(300)
def test_the_runner_writes_a_report_with_ratio_rows_and_plots(tmp_path, monkeypatch, capsys):
    from bench import __main__ as runner
    from bench.results import GOALS

    home = tmp_path / "airloop"
    home.mkdir()
    monkeypatch.setenv("AIRLOOP_HOME", str(home))
    # What the last demo left: the loop's tasks, for the quick run's loop row and timeline plot.
    timing = loop_timeline(
        [_task("check_drift", "00:00", "00:05")],
        [_task("train", "00:07", "00:30"), _task("gate", "00:30", "00:36")],
        [_task("build", "00:40", "00:50"), _task("confirm_served", "00:52", "00:55")],
    )
    (home / "demo-summary.json").write_text(json.dumps({"wall_seconds": 250.0, "steps": {"loop_timing": timing}}))

    status = runner.main(["--quick", "--only", "ingest_read,loop"],
                         bench_kwargs={"ingest_read": {"sizes": [0.2]}})

    assert status == 0
    (out_dir,) = (home / "bench").iterdir()
    names = {p.name for p in out_dir.iterdir()}
    assert {"report.md", "results.json", "ingest_read_memory.png", "loop_timeline.png"} <= names, names
    for png in out_dir.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5_000, png
    report = (out_dir / "report.md").read_text()
    assert "| target | metric | airloop | baseline | ratio | goal | met? |" in report
    assert "![loop_timeline](loop_timeline.png)" in report
    results = {r["name"]: r for r in json.loads((out_dir / "results.json").read_text())}
    rows = [row for r in results.values() for row in r["rows"]]
    ratio_rows = [row for row in rows if row["ratio"] is not None]
    assert {row["metric"] for row in ratio_rows} >= {"seconds", "peak growth / file size"}, rows
    for row in ratio_rows:
        assert row["ratio"] == pytest.approx(row["airloop"] / row["baseline"]), row
    loop = next(row for row in rows if row["target"].startswith("loop"))
    assert loop["airloop"] == 50.0 and loop["baseline"] == 42.0, loop  # 8 s of the 50 s is wait
    assert loop["goal"] == GOALS["loop_wall_vs_work"].text() and loop["met"] is True, loop
    printed = capsys.readouterr().out
    assert "ratio" in printed and "report: " in printed and "read_typed vs pandas.read_csv" in printed
