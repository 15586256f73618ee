"""DAG integrity: every file in dags/ parses cleanly, is wiring only, and imports nothing heavy.

Parsing happens in a fresh interpreter (``probe``): there ``sys.modules`` shows exactly what
parsing the DAG files imported. No metadata DB is needed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from airloop.orchestration import (
    RETRAIN_POLICY_TASK, STAGES, ingest_params, monitor_params, promote_params, rollback_params, train_params,
)
from airloop.spec import load_specs

REPO_ROOT = Path(__file__).resolve().parents[2]
DAGS = REPO_ROOT / "dags"
# What a DAG file (and airloop.orchestration) may import only inside task functions.
HEAVY = ("mlflow", "feast", "bentoml", "evidently", "great_expectations", "dvc", "sklearn", "pandas")
# Written out, not taken from airloop.orchestration.STAGES: dropping a stage there must fail here.
EXPECTED_STAGES = {"ingest", "features", "train", "promote", "rollback", "package", "monitor"}
MAX_DAG_FILE_LINES = 80

_PROBE = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
heavy = set(sys.argv[1].split(","))
for folder, extra_path in json.loads(sys.argv[2]):
    if extra_path:
        sys.path.insert(0, extra_path)
    bag = DagBag(dag_folder=folder, safe_mode=False)
    print("PROBE " + json.dumps({
        "dags": {dag_id: sorted(dag.tags) for dag_id, dag in bag.dags.items()},
        "import_errors": {k: v.strip().splitlines()[-1] for k, v in bag.import_errors.items()},
        "heavy": sorted({m.split(".")[0] for m in sys.modules} & heavy),
    }), flush=True)
    if extra_path:  # leave nothing behind for the next folder
        sys.path.remove(extra_path)
        for name in [m for m in sys.modules if m.split(".")[0] in heavy]:
            del sys.modules[name]
"""


def probe(*folders: tuple[Path, Path | None]) -> list[dict]:
    """Parse each DAG folder in turn with Airflow's DagBag in one fresh interpreter; report, per
    folder, the DAGs with their tags, the import errors and the heavy packages in ``sys.modules``.
    A folder given an extra path has it on ``sys.path`` while it parses, and leaves no heavy
    module behind (only a canary needs one)."""
    args = json.dumps([[str(folder), str(extra) if extra else None] for folder, extra in folders])
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, ",".join(HEAVY), args],
        capture_output=True, text=True, check=True, cwd=REPO_ROOT, timeout=300,
    )
    return [json.loads(line.removeprefix("PROBE ")) for line in out.stdout.splitlines() if line.startswith("PROBE ")]


def _canary(root: Path) -> tuple[Path, Path]:
    """A DAG folder whose one DAG imports a stand-in ``sklearn`` at module level, and the
    folder holding that stand-in (so the canary costs no real heavy import)."""
    (root / "lib" / "sklearn").mkdir(parents=True)
    (root / "lib" / "sklearn" / "__init__.py").write_text("")
    (root / "dags").mkdir()
    (root / "dags" / "heavy.py").write_text(
        "import sklearn  # noqa: F401\nfrom airflow.sdk import dag\n\n\n@dag(schedule=None)\ndef heavy():\n"
        "    pass\n\n\nheavy()\n"
    )
    return root / "dags", root / "lib"


@pytest.fixture(scope="module")
def probes(tmp_path_factory) -> tuple[dict, dict]:
    """The canary, then the real dags/ folder, parsed in one fresh interpreter."""
    canary_dags, canary_lib = _canary(tmp_path_factory.mktemp("canary"))
    canary, real = probe((canary_dags, canary_lib), (DAGS, None))
    return real, canary


@pytest.fixture(scope="module")
def parse_report(probes) -> dict:
    return probes[0]


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS), safe_mode=False)


def test_no_import_errors(parse_report):
    assert parse_report["dags"], "no DAGs parsed"
    assert parse_report["import_errors"] == {}


def test_parsing_imports_no_heavy_library(parse_report):
    assert parse_report["dags"], "no DAGs parsed: the check below would prove nothing"
    assert parse_report["heavy"] == [], "heavy modules imported at parse time (import them in the task)"


def test_the_heavy_import_probe_sees_a_heavy_import(probes):
    """The check above can fail: a DAG file importing a (stand-in) heavy package is reported."""
    _, canary = probes
    assert canary["import_errors"] == {}
    assert list(canary["dags"]) == ["heavy"]
    assert canary["heavy"] == ["sklearn"]


def test_every_spec_gets_exactly_its_stage_dags(parse_report):
    """The seven stages for every spec in the models directory, and no other DAG."""
    specs = load_specs()
    assert specs, "no model specs"
    assert set(STAGES) == EXPECTED_STAGES
    for spec in specs:
        ids = {dag_id for dag_id in parse_report["dags"] if dag_id.startswith(f"{spec.name}__")}
        assert ids == {f"{spec.name}__{stage}" for stage in EXPECTED_STAGES}, spec.name
    expected = {spec.dag_id(stage) for spec in specs for stage in EXPECTED_STAGES}
    assert len(expected) == len(specs) * len(EXPECTED_STAGES), "two specs map to one DAG id"
    assert set(parse_report["dags"]) == expected


def _assets(dag) -> set[tuple[str, str, str | None]]:
    """(kind, name, uri) of every Asset or AssetAlias a DAG is scheduled on, reads or emits."""
    from airflow.sdk.definitions.asset import AssetBooleanCondition

    found: list = []
    pending = [getattr(dag.timetable, "asset_condition", None)]
    while pending:  # a schedule may be an Asset or an and/or of them, nested
        condition = pending.pop()
        if isinstance(condition, AssetBooleanCondition):
            pending.extend(condition.objects)
        elif condition is not None:
            found.append(condition)
    for task in dag.tasks:
        found += [*task.inlets, *task.outlets]
    return {(type(a).__name__, a.name, getattr(a, "uri", None)) for a in found if hasattr(a, "name")}


def test_models_share_no_asset_and_trigger_only_their_own_dags(dagbag):
    """Side by side, one model's events never start another model's runs."""
    specs = load_specs()
    owner: dict[tuple[str, str], str] = {}
    for spec in specs:
        seen = set()
        for stage in EXPECTED_STAGES:
            dag = dagbag.dags[spec.dag_id(stage)]
            assert dag.dag_id == f"{spec.name}__{stage}" and f"model:{spec.name}" in dag.tags
            for kind, name, uri in _assets(dag):
                seen.add(name)
                assert name.startswith(f"{spec.name}__"), f"{dag.dag_id}: {kind} {name!r} is not {spec.name}'s"
                assert uri is None or uri.startswith(f"airloop://{spec.name}/"), f"{dag.dag_id}: {kind} {uri!r}"
                for key in ((kind, name), (kind, uri)) if uri else ((kind, name),):
                    assert owner.setdefault(key, spec.name) == spec.name, f"{key} shared by {owner[key]} and {spec.name}"
            for task in dag.tasks:
                target = getattr(task, "trigger_dag_id", None)
                if target is not None:
                    assert target.startswith(f"{spec.name}__"), f"{dag.dag_id}.{task.task_id} triggers {target}"
        assert seen, f"{spec.name}: no Asset found; the check above proved nothing"


def test_every_stage_dag_is_tagged(parse_report):
    for spec in load_specs():
        for stage in EXPECTED_STAGES:
            tags = set(parse_report["dags"].get(f"{spec.name}__{stage}", ()))
            assert {"airloop", f"model:{spec.name}", f"stage:{stage}"} <= tags, (spec.name, stage, tags)


def test_dag_files_are_wiring_sized():
    files = sorted(p for p in DAGS.iterdir() if p.is_file())
    assert files, "dags/ is empty"
    long = {p.name: n for p in files if (n := len(p.read_text().splitlines())) > MAX_DAG_FILE_LINES}
    assert not long, f"DAG files longer than {MAX_DAG_FILE_LINES} lines (move logic to include/airloop): {long}"


def _schema(params) -> dict:
    """Param name -> (default, JSON schema, description), from a DAG's ParamsDict or a dict of Params."""
    get = params.get_param if hasattr(params, "get_param") else params.__getitem__
    return {k: (get(k).value, get(k).schema, get(k).description) for k in params.keys()}


def test_dags_take_their_params_from_orchestration(dagbag):
    for spec in load_specs():
        expected = {
            "ingest": ingest_params(),
            "train": train_params(),
            "promote": promote_params(),
            "rollback": rollback_params(),
            "monitor": monitor_params(spec),
        }
        for stage, params in expected.items():
            dag = dagbag.dags[spec.dag_id(stage)]
            assert list(dag.params.keys()) == list(params), (stage, list(dag.params.keys()))
            assert _schema(dag.params) == _schema(params), stage


def test_retrain_conf_pulls_from_a_task_that_exists(dagbag):
    for spec in load_specs():
        monitor = dagbag.dags[spec.dag_id("monitor")]
        assert RETRAIN_POLICY_TASK in monitor.task_ids
        assert monitor.get_task("trigger_training").trigger_dag_id == spec.dag_id("train")


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


def test_a_broken_spec_gets_no_dags_but_takes_no_other_models_down(tmp_path, monkeypatch):
    import shutil

    models = tmp_path / "models"
    shutil.copytree(REPO_ROOT / "include" / "models", models)
    (models / "broken.yaml").write_text("name: broken\ndataset: {name: x}\n")
    monkeypatch.setenv("AIRLOOP_MODELS_DIR", str(models))
    from airloop.orchestration import dag_specs
    from airloop.spec import SpecError, load_valid_specs

    specs, errors = load_valid_specs()
    assert [s.name for s in specs] == [s.name for s in load_specs(REPO_ROOT / "include" / "models")]
    assert len(errors) == 1 and isinstance(errors[0], SpecError) and "broken.yaml" in str(errors[0])
    assert [s.name for s in dag_specs()] == [s.name for s in specs]
    (result,) = probe((DAGS, None))  # a fresh interpreter, with this models dir
    assert result["import_errors"] == {}
    assert {dag_id.split("__")[0] for dag_id in result["dags"]} == {s.name for s in specs}


def test_every_spec_agrees_with_its_feast_declarations():
    """What parsing cannot check (it must not import Feast), checked here for every shipped
    spec; a model's __features and __train runs check it again first thing."""
    from airloop.features.consistency import definition_problems

    specs = load_specs()
    assert specs, "no model specs"
    for spec in specs:
        assert definition_problems(spec) == [], spec.name


def test_a_spec_failing_its_own_checks_gets_no_dags_but_takes_no_other_models_down(tmp_path, monkeypatch):
    """A warm-up shorter than the longest declared window fails the spec at load, naming the field."""
    import shutil

    from airloop.orchestration import dag_specs
    from airloop.spec import load_valid_specs

    models = tmp_path / "models"
    shutil.copytree(REPO_ROOT / "include" / "models", models, ignore=shutil.ignore_patterns("__pycache__"))
    spec_file = models / "trip_duration.yaml"
    spec_file.write_text(spec_file.read_text().replace("warmup_days: 7", "warmup_days: 2"))
    monkeypatch.setenv("AIRLOOP_MODELS_DIR", str(models))

    specs, errors = load_valid_specs()
    shipped = [s.name for s in load_specs(REPO_ROOT / "include" / "models")]
    assert [s.name for s in specs] == [name for name in shipped if name != "trip_duration"]
    assert len(errors) == 1 and "trip_duration.yaml" in str(errors[0])
    assert "split.warmup_days: 2 is shorter than the longest declared window, 7d" in str(errors[0])
    assert [s.name for s in dag_specs()] == [s.name for s in specs]
