"""Static checks of the project's Python, by reading it (no imports, no services).

- ruff: no undefined names, unused imports or syntax errors;
- the library's public API: every public module-level function and class in ``airloop`` has a
  docstring and type annotations, every package ``__init__`` declares ``__all__``, and the
  top-level docstring says what each module holds;
- underscore names stay in their module: no file imports or reads an ``airloop`` module's
  underscore names, and the private attributes of other objects that are used at all belong to
  third-party libraries listed in :data:`THIRD_PARTY_PRIVATE`.
"""

from __future__ import annotations

import ast
import functools
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
LIBRARY = REPO_ROOT / "include" / "airloop"
# Where code that may use the library lives.
CODE_DIRS = ("include", "dags", "plugins", "tests", "bench")

# The private attributes of objects the project does not own that it reads anyway, each with
# the reason; (path, attribute). Anything else written ``obj._name`` (obj not self or cls) fails.
THIRD_PARTY_PRIVATE = {
    # feast: the provider's online store and batch engine have no public accessor.
    ("include/airloop/features/materialize.py", "_get_provider"),
    ("bench/bench_aggregations.py", "_get_provider"),
    # feast: the Ray offline store starts Ray lazily; the benchmark starts it before timing.
    ("bench/bench_pit_join.py", "_ensure_ray_initialized"),
    # evidently: a Snapshot's widgets, to group several reports into one page.
    ("include/airloop/monitoring/reports.py", "_widgets"),
    # scikit-learn: HistGradientBoosting's fitted trees, to check what a loaded model holds.
    ("tests/unit/test_registry.py", "_predictors"),
    # pytest: the node id schemathesis reads and renames.
    ("tests/unit/test_service_schema.py", "_nodeid"),
}
# Underscore names that are public API by convention (namedtuple methods and fields).
PUBLIC_BY_CONVENTION = {"_asdict", "_fields", "_replace", "_make"}


def test_ruff_finds_no_errors():
    ruff = Path(sys.executable).parent / "ruff"
    result = subprocess.run(
        [str(ruff), "check", "--select", "F,E9", "--no-cache", "dags", "include", "plugins", "bench", "tests", "feature_repo"],
        cwd=REPO_ROOT, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- helpers ------------------------------------------------------------------------------------


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _library_files(root: Path) -> list[Path]:
    return sorted((root / "include" / "airloop").rglob("*.py"))


def _code_files(root: Path) -> list[Path]:
    return sorted(path for folder in CODE_DIRS for path in (root / folder).rglob("*.py"))


def _module_name(path: Path, root: Path) -> str:
    """``airloop.monitoring.state`` for include/airloop/monitoring/state.py; tests.x for tests/x.py."""
    relative = path.relative_to(root)
    parts = list(relative.with_suffix("").parts)
    if parts[0] == "include":
        parts = parts[1:]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _missing_docs_and_types(root: Path) -> list[str]:
    problems = []
    for path in _library_files(root):
        where = path.relative_to(root)
        for node in ast.parse(path.read_text(), str(path)).body:
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) or node.name.startswith("_"):
                continue
            if not ast.get_docstring(node):
                problems.append(f"{where}:{node.lineno} {node.name}: no docstring")
            if isinstance(node, ast.ClassDef):
                continue
            args = node.args
            every = [*args.posonlyargs, *args.args, *args.kwonlyargs, *filter(None, (args.vararg, args.kwarg))]
            untyped = [arg.arg for arg in every if arg.annotation is None]
            if untyped:
                problems.append(f"{where}:{node.lineno} {node.name}: no type for {', '.join(untyped)}")
            if node.returns is None:
                problems.append(f"{where}:{node.lineno} {node.name}: no return type")
    return problems


def _packages_without_all(root: Path) -> list[str]:
    problems = []
    for path in sorted((root / "include" / "airloop").rglob("__init__.py")):
        where = path.relative_to(root)
        tree = ast.parse(path.read_text(), str(path))
        bound = set()
        declared = None
        for node in tree.body:
            targets = []
            if isinstance(node, ast.Assign):
                targets = node.targets
            elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
                targets = [node.target]
            for target in targets:
                if isinstance(target, ast.Name):
                    bound.add(target.id)
                    if target.id == "__all__":
                        declared = node.value
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                bound.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                bound.add(node.name)
        if declared is None:
            problems.append(f"{where}: no __all__")
        elif isinstance(declared, (ast.List, ast.Tuple)):
            # A literal list can be checked here: each name must be bound in the module.
            names = [elt.value for elt in declared.elts if isinstance(elt, ast.Constant)]
            problems += [f"{where}: __all__ names {name!r}, which it does not define" for name in names if name not in bound]
    return problems


def _imported_from_airloop(tree: ast.Module, package: str) -> tuple[list[tuple[int, str, str]], dict[str, str]]:
    """(underscore names imported from airloop modules, local name -> the airloop object it binds)."""
    private_imports, aliases = [], {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # relative: resolved against the importing module's package
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([module] if module else []))
            if module.split(".")[0] != "airloop":
                continue
            for alias in node.names:
                if _is_private(alias.name):
                    private_imports.append((node.lineno, module, alias.name))
                aliases[alias.asname or alias.name] = f"{module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "airloop":
                    aliases[alias.asname or "airloop"] = alias.name if alias.asname else "airloop"
    return private_imports, aliases


@functools.cache
def _underscore_uses(root: Path) -> tuple[list[str], list[str]]:
    """(uses of airloop modules' underscore names, private attributes of other objects not listed)."""
    airloop_uses, unlisted = [], []
    for path in _code_files(root):
        where = path.relative_to(root)
        tree = ast.parse(path.read_text(), str(path))
        me = _module_name(path, root)
        package = me if path.name == "__init__.py" else me.rpartition(".")[0]
        private_imports, aliases = _imported_from_airloop(tree, package)
        airloop_uses += [f"{where}:{line} from {module} import {name}" for line, module, name in private_imports]
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and _is_private(node.attr) and node.attr not in PUBLIC_BY_CONVENTION:
                base, chain = node.value, []
                while isinstance(base, ast.Attribute):
                    chain.insert(0, base.attr)
                    base = base.value
                if isinstance(base, ast.Name) and base.id in ("self", "cls") and not chain:
                    continue
                if isinstance(base, ast.Name) and base.id in aliases:
                    target = ".".join([aliases[base.id], *chain])
                    if target != me:
                        airloop_uses.append(f"{where}:{node.lineno} {target}.{node.attr}")
                    continue
                if (str(where), node.attr) not in THIRD_PARTY_PRIVATE:
                    unlisted.append(f"{where}:{node.lineno} .{node.attr}")
            elif isinstance(node, ast.Call) and node.args:
                # monkeypatch.setattr(module, "_name", ...) / setattr("airloop.x._name", ...)
                first = node.args[0]
                second = node.args[1] if len(node.args) > 1 else None
                if isinstance(first, ast.Constant) and isinstance(first.value, str) and first.value.startswith("airloop."):
                    if any(_is_private(part) for part in first.value.split(".")):
                        airloop_uses.append(f"{where}:{node.lineno} {first.value!r}")
                elif (
                    isinstance(first, ast.Name) and first.id in aliases
                    and isinstance(second, ast.Constant) and isinstance(second.value, str) and _is_private(second.value)
                    and aliases[first.id] != me
                ):
                    airloop_uses.append(f"{where}:{node.lineno} {aliases[first.id]}.{second.value} (by name)")
    return airloop_uses, unlisted


# --- the tests ----------------------------------------------------------------------------------


def test_every_public_function_and_class_has_a_docstring_and_types():
    problems = _missing_docs_and_types(REPO_ROOT)
    assert not problems, f"{len(problems)} public names undocumented or untyped:\n" + "\n".join(problems)


def test_every_package_declares_its_public_names():
    problems = _packages_without_all(REPO_ROOT)
    assert not problems, "\n".join(problems)


def _unmapped_modules(root: Path) -> list[str]:
    """The library's modules and packages that its top-level docstring does not name."""
    library = root / "include" / "airloop"
    doc = ast.get_docstring(ast.parse((library / "__init__.py").read_text())) or ""
    names = {p.stem for p in library.glob("*.py") if p.stem != "__init__"}
    names |= {p.parent.name for p in library.glob("*/__init__.py")}
    return sorted(name for name in names if f"``{name}``" not in doc)


def test_the_package_docstring_maps_every_module():
    unmapped = _unmapped_modules(REPO_ROOT)
    assert not unmapped, f"airloop/__init__.py's docstring does not say what these hold: {unmapped}"


def test_no_file_uses_an_airloop_modules_underscore_names():
    airloop_uses, _ = _underscore_uses(REPO_ROOT)
    assert not airloop_uses, (
        "underscore names are their module's own; make the name public or add a public way:\n" + "\n".join(airloop_uses)
    )


def test_private_attributes_read_from_other_objects_are_listed_third_party_ones():
    _, unlisted = _underscore_uses(REPO_ROOT)
    assert not unlisted, (
        "a private attribute of another object: if it is Airloop's, add a public way; if it is a third "
        "party's, list it with its reason in THIRD_PARTY_PRIVATE:\n" + "\n".join(unlisted)
    )


def test_the_checks_catch_planted_violations(tmp_path):
    """Each check above fails on a tree that breaks its rule (so a pass means something)."""
    library = tmp_path / "include" / "airloop"
    (library / "sub").mkdir(parents=True)
    (library / "__init__.py").write_text('"""A package."""\n\n__all__ = ["missing"]\n')
    (library / "sub" / "__init__.py").write_text('"""No __all__."""\n')
    (library / "mod.py").write_text(
        '"""A module."""\n\n_SECRET = 1\n\n\ndef undocumented(x: int) -> int:\n    return x\n\n\n'
        'def untyped(x):\n    """Documented."""\n    return x\n\n\nclass Bare:\n    pass\n'
    )
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_x.py").write_text(
        "from airloop.mod import _SECRET\nfrom airloop import mod\nimport airloop.mod as m\nimport airloop.sub\n\n"
        "mod._SECRET\nm._SECRET\nairloop.sub.mod._x\nthing._private\n\n\n"
        "def test_patch(monkeypatch):\n    monkeypatch.setattr(mod, '_SECRET', 2)\n"
        "    monkeypatch.setattr('airloop.mod._SECRET', 2)\n"
    )
    (library / "sub" / "rel.py").write_text('"""Relative."""\n\nfrom .. import mod\nfrom ..mod import _SECRET\n\nmod._SECRET\n')

    problems = "\n".join(_missing_docs_and_types(tmp_path))
    assert "undocumented: no docstring" in problems and "Bare: no docstring" in problems
    assert "untyped: no type for x" in problems and "untyped: no return type" in problems
    assert "untyped: no docstring" not in problems
    assert _unmapped_modules(tmp_path) == ["mod", "sub"]
    packages = "\n".join(_packages_without_all(tmp_path))
    assert "sub/__init__.py: no __all__" in packages and "'missing'" in packages
    airloop_uses, unlisted = _underscore_uses(tmp_path)
    found = "\n".join(airloop_uses)
    assert "tests/test_x.py:1 from airloop.mod import _SECRET" in found
    for line in (6, 7, 8, 13, 14):
        assert f"tests/test_x.py:{line} " in found, (line, found)
    assert "rel.py:4 from airloop.mod import _SECRET" in found and "rel.py:6 airloop.mod._SECRET" in found
    assert unlisted == ["tests/test_x.py:9 ._private"]
