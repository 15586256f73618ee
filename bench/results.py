"""What every benchmark returns, and the goals the report holds its figures to (one place).

A benchmark's ``run(quick=...)`` returns a :class:`BenchResult`: table rows that set an Airloop
figure next to its baseline's from the same run, the series its plots are drawn from, and notes.
``bench.__main__`` runs them all and ``bench.report`` prints the table and writes the report.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Goal:
    """``on`` is what the goal limits: the Airloop value or the ratio (Airloop / baseline)."""

    on: str  # "airloop" | "ratio"
    op: str  # "<=" | "<" | ">=" | "=="
    limit: float
    source: str

    def text(self) -> str:
        what = "ratio" if self.on == "ratio" else "value"
        return f"{what} {self.op} {self.limit:g}"

    def met(self, airloop: float | None, ratio: float | None) -> bool | None:
        value = ratio if self.on == "ratio" else airloop
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return None
        compare = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, "==": operator.eq}[self.op]
        return bool(compare(value, self.limit))


ISSUE_20 = "issue #20"
# Every goal the report checks, keyed by the ``goal`` name a row carries. Rows of a size a goal
# does not speak of (a quick run's 1k-row join against the 1M-row goal) carry none.
GOALS: dict[str, Goal] = {
    "serve_p99_1_vs_fastapi": Goal("ratio", "<=", 1.0, ISSUE_20),
    "serve_p99_1_vs_in_process": Goal("ratio", "<=", 1.5, ISSUE_20),
    "serve_rps_8_vs_fastapi": Goal("ratio", ">=", 1.5, ISSUE_20 + " (one worker per core)"),
    "serve_every_prediction_logged": Goal("ratio", ">=", 1.0, ISSUE_20),
    "ingest_dag_14x1500_seconds": Goal("airloop", "<=", 40.0, ISSUE_20),
    "demo_seconds": Goal("airloop", "<=", 300.0, ISSUE_20),
    "loop_wall_vs_work": Goal("ratio", "<", 1 / 0.75, "bench_loop: orchestration wait < 25% of the loop"),
    "ingest_read_memory_x_file": Goal("airloop", "<=", 3.0, "bench_ingest: peak growth <= 3x the file"),
    "pit_join_1m_seconds": Goal("airloop", "<=", 60.0, "bench_pit_join: 1M rows within 60 s"),
    "pit_join_1m_growth_mib": Goal("airloop", "<=", 2048.0, "bench_pit_join: 1M rows within 2 GiB"),
    "pit_join_mismatches": Goal("airloop", "==", 0.0, "bench_pit_join: the reference's rows"),
    "parse_heavy_modules": Goal("airloop", "==", 0.0, "README: parsing a DAG file imports no heavy library"),
}


@dataclass
class Row:
    """One line of the table: an Airloop figure and its baseline's, measured in the same run."""

    target: str
    metric: str
    airloop: float | None
    baseline: float | None = None
    goal: str | None = None  # a key of GOALS

    @property
    def ratio(self) -> float | None:
        if self.airloop is None or self.baseline in (None, 0):
            return None
        return self.airloop / self.baseline

    @property
    def goal_spec(self) -> Goal | None:
        return GOALS[self.goal] if self.goal else None

    @property
    def met(self) -> bool | None:
        goal = self.goal_spec
        return goal.met(self.airloop, self.ratio) if goal else None

    def as_dict(self) -> dict:
        goal = self.goal_spec
        return {"target": self.target, "metric": self.metric, "airloop": self.airloop, "baseline": self.baseline,
                "ratio": self.ratio, "goal": goal.text() if goal else None,
                "goal_source": goal.source if goal else None, "met": self.met}


@dataclass
class BenchResult:
    """A benchmark's rows, the series for its plots, notes and its own raw figures."""

    name: str
    rows: list[Row] = field(default_factory=list)
    series: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    raw: object = None
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    skipped: str | None = None  # why it did not run
    error: str | None = None
