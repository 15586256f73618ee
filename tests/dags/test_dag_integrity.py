"""DAG integrity: every file in dags/ parses cleanly, quickly, and without heavy imports."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from airloop.orchestration import STAGES
from airloop.spec import load_specs

HEAVY = ("mlflow", "feast", "bentoml", "evidently", "great_expectations", "dvc", "sklearn")


@pytest.fixture(scope="module")
def parse_report():
    """Parse dags/ in a fresh interpreter, so sys.modules shows only what parsing imported."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.parse_dags", "--json"],
        capture_output=True, text=True, check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    from airloop.settings import REPO_ROOT

    return DagBag(dag_folder=str(REPO_ROOT / "dags"), safe_mode=False)


def test_no_import_errors(parse_report):
    assert parse_report["import_errors"] == {}


def test_parsing_imports_no_heavy_library(parse_report):
    assert parse_report["heavy_modules_loaded"] == []


def test_each_dag_file_parses_quickly(parse_report):
    slow = {f["file"]: f["seconds"] for f in parse_report["files"] if f["seconds"] >= 0.25}
    assert not slow, f"DAG files slower than 0.25 s to parse: {slow}"


def test_every_spec_gets_its_dags(dagbag):
    built = {stage for stage in STAGES}
    for spec in load_specs():
        ids = {dag_id for dag_id in dagbag.dag_ids if dag_id.startswith(f"{spec.name}__")}
        assert ids, f"no DAGs generated for model spec {spec.name}"
        assert ids <= {spec.dag_id(stage) for stage in built}


@pytest.mark.parametrize("check", ["tags", "retries", "owner", "doc"])
def test_dag_conventions(dagbag, check):
    assert dagbag.dags, "no DAGs found"
    for dag_id, dag in dagbag.dags.items():
        if check == "tags":
            assert "airloop" in dag.tags, f"{dag_id} lacks the airloop tag"
        elif check == "retries":
            assert dag.default_args.get("retries", 0) >= 2, f"{dag_id}: default retries < 2"
        elif check == "owner":
            assert dag.default_args.get("owner"), f"{dag_id} has no owner"
        else:
            assert dag.doc_md, f"{dag_id} has no doc_md"
