"""The run tab's page (``plugins/airloop_runs.py``) from hand-built task lists: decisions first,
everything escaped, long values cut. The tab through a real api-server and Chromium, on real
train and monitor runs, is in ``test_task_logs.py``."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins"))
from airloop_runs import MAX_VALUE_CHARS, decisions, render_run  # noqa: E402

HOSTILE = '<img src=x onerror=alert(1)>'


def test_decisions_come_first_and_everything_is_escaped():
    tasks = [
        {"task_id": "train_and_register", "map_index": -1, "state": "success",
         "value": {"version": "3", "run_id": "abc", "note": HOSTILE}},
        {"task_id": "champion_challenger_gate", "map_index": -1, "state": "success",
         "value": {"promoted": False, "reason": f"roc_auc 0.61 misses the floor 0.7 {HOSTILE}", "version": "3"}},
        {"task_id": "promoted", "map_index": -1, "state": "success", "value": False},
        {"task_id": "announce_champion", "map_index": -1, "state": "skipped"},
    ]
    page = render_run("m__train", f"manual__{HOSTILE}", tasks)
    assert decisions(tasks) == [("champion_challenger_gate", tasks[1]["value"])]
    assert page.index('class="decision refused"') < page.index("<table>")
    assert "promoted: <b>false</b>" in page and "misses the floor 0.7" in page
    assert "<img" not in page and page.count("&lt;img src=x onerror=alert(1)&gt;") == 4  # reason, run id, note
    assert "<td>announce_champion</td><td>skipped</td>" in page
    assert "announce_champion returned" not in page  # nothing returned, nothing shown


def test_mapped_tasks_lists_and_long_values():
    batches = [{"batch": f"orders_2026-10-0{i}.csv", "rows": 100 + i} for i in range(1, 4)]
    tasks = [
        {"task_id": "find_batches", "map_index": -1, "state": "success", "value": ["a.csv", "b.csv"]},
        *({"task_id": "validate_and_publish", "map_index": i, "state": "success", "value": b}
          for i, b in enumerate(batches)),
        {"task_id": "announce_validated", "map_index": -1, "state": "success", "value": batches},
        {"task_id": "big", "map_index": -1, "state": "success", "value": {"columns": "x" * 5000}},
    ]
    page = render_run("m__ingest", "scheduled__2026-10-04", tasks)
    assert "No task of this run has recorded a decision" in page
    assert "<td>validate_and_publish[2]</td>" in page and "validate_and_publish[2] returned" in page
    assert "<tr><th>batch</th><th>rows</th></tr>" in page  # a list of rows is a table
    assert "x" * MAX_VALUE_CHARS in page and "x" * (MAX_VALUE_CHARS + 1) not in page
    assert "(5000 characters)" in page
