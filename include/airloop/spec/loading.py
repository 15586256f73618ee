"""Finding and loading spec files, and importing the modules a model's directory holds."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import yaml
from pydantic import ValidationError

from airloop.spec.base import SpecError
from airloop.spec.model import ModelSpec

__all__ = [
    "EXAMPLE_DATA_MODULE",
    "example_data",
    "get_spec",
    "has_example_data",
    "import_model_module",
    "load_spec",
    "load_specs",
    "load_valid_specs",
]


def load_spec(path: str | Path) -> ModelSpec:
    """The spec in ``path``, validated (its name is the file's; its definitions and transform exist)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise SpecError(f"{path}: cannot read spec: {exc}") from exc
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: a spec is a YAML mapping, got {type(raw).__name__}")
    try:
        spec = ModelSpec.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
        )
        raise SpecError(f"{path}: invalid model spec: {problems}") from exc
    if spec.name != path.stem:
        raise SpecError(f"{path}: spec name {spec.name!r} must match the file name {path.stem!r}")
    spec = spec.model_copy(update={"source_file": path})
    if not spec.definitions_dir.is_dir():
        raise SpecError(f"{path}: features.definitions: no directory {spec.definitions_dir}")
    if spec.features.transform is not None:
        problem = _transform_problem(spec.home, spec.features.transform)
        if problem:
            raise SpecError(f"{path}: features.transform: {problem}")
    return spec


def _transform_problem(home: Path, dotted: str) -> str | None:
    """Why ``dotted`` does not name a top-level function of a module under ``home`` (None: it does).

    Checked on the source text, so loading a spec (at DAG parse time) imports nothing.
    """
    import ast

    module, _, function = dotted.rpartition(".")
    source = home.joinpath(*module.split(".")).with_suffix(".py")
    if not source.is_file():
        return f"{dotted!r}: no module file {source}"
    try:
        tree = ast.parse(source.read_text(), filename=str(source))
    except (OSError, SyntaxError, ValueError) as exc:
        return f"{dotted!r}: cannot read {source}: {exc}"
    if not any(isinstance(node, ast.FunctionDef) and node.name == function for node in tree.body):
        return f"{dotted!r}: {source} defines no top-level function {function!r}"
    return None


def import_model_module(spec: ModelSpec, module_name: str) -> ModuleType:
    """Import ``module_name`` (e.g. ``my_model.jobs``) from the spec's directory.

    The directory is first on ``sys.path`` only during the import, and the module must resolve
    to a file under it, not to an installed module of the same name.
    """
    import importlib
    import sys

    home = spec.home.resolve()
    sys.path.insert(0, str(home))
    try:
        module = importlib.import_module(module_name)
    finally:
        sys.path.remove(str(home))
    origin = Path(getattr(module, "__file__", "") or "").resolve()
    if not origin.is_relative_to(home):
        raise SpecError(f"{spec.name}: {module_name!r} resolves to {origin}, outside {home}")
    return module


EXAMPLE_DATA_MODULE = "datagen"


def has_example_data(spec: ModelSpec) -> bool:
    """Whether the model's directory holds example data (``<model>/datagen.py``)."""
    return (spec.home / spec.name / f"{EXAMPLE_DATA_MODULE}.py").is_file()


def example_data(model: "str | ModelSpec") -> ModuleType:
    """The model's example-data module, ``<model>/datagen.py`` beside its spec (a model name
    is looked up in the models directory).

    What the demo lands and serves, and what tests and benchmarks generate data with; the
    library itself never reads it. Imported as ``<model>.datagen`` by
    :func:`import_model_module`, once per process: every caller gets the same module.
    """
    spec = get_spec(model) if isinstance(model, str) else model
    return import_model_module(spec, f"{spec.name}.{EXAMPLE_DATA_MODULE}")


def load_specs(models_dir: str | Path | None = None) -> list[ModelSpec]:
    """All specs in the models directory, sorted by name."""
    if models_dir is None:
        from airloop.settings import get_settings

        models_dir = get_settings().models_dir
    return [load_spec(p) for p in sorted(Path(models_dir).glob("*.yaml"))]


def load_valid_specs(models_dir: str | Path | None = None) -> tuple[list[ModelSpec], list[SpecError]]:
    """Every spec in the models directory that loads, sorted by name, and the errors of those
    that do not (each names its file)."""
    if models_dir is None:
        from airloop.settings import get_settings

        models_dir = get_settings().models_dir
    specs, errors = [], []
    for path in sorted(Path(models_dir).glob("*.yaml")):
        try:
            specs.append(load_spec(path))
        except SpecError as exc:
            errors.append(exc)
    return specs, errors


def get_spec(name: str, models_dir: str | Path | None = None) -> ModelSpec:
    """The spec named ``name`` in the models directory; :class:`SpecError` if there is none."""
    for spec in load_specs(models_dir):
        if spec.name == name:
            return spec
    raise SpecError(f"no model spec named {name!r}")
