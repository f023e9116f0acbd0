"""The package layout: sub-packages by concern, imports that run one way (ARCHITECTURE §2).

Every import statement of the package is read from the source (function-level imports included, since heavy and
late imports live there), and so is every module path a string names (``importlib.import_module``, docstrings), so
a dependency can hide neither inside a function nor behind a name.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from helpers import REPO_ROOT

PACKAGE = "invokeai_provider"
FOLDERS = {"provider": PACKAGE, "operators": f"{PACKAGE}.operators", "models": f"{PACKAGE}.models"}

# The Airflow side: what compiles graphs into DAGs and runs them as tasks. It sits on top of everything.
AIRFLOW_SIDE = tuple(f"{PACKAGE}.{name}" for name in ("compiler", "execution", "airflow", "cli", "cluster",
                                                      "get_provider_info"))
# The core every layer may use: node base, fields, registry, context, the artifact store, config and errors.
CORE = tuple(f"{PACKAGE}.{name}" for name in ("core", "storage", "errors", "config"))
GRAPH = f"{PACKAGE}.graph"
MODELS = f"{PACKAGE}.models"
OPERATORS = f"{PACKAGE}.operators"

# Old import paths kept for node packs and DAG files written against them; each only aliases its new module.
COMPAT_ALIASES = {f"{PACKAGE}.{name}" for name in ("invocation", "batch", "engine", "compile", "dag_factory")}
# `invokeai_provider.operators.<Name>Operator` is built on first access from the operator factory (README,
# "Operators"): the one import from the node side up to the Airflow side, and only inside __getattr__/__dir__.
ALLOWED = {(OPERATORS, f"{PACKAGE}.airflow.operator"),
           # the registry loads the built-in node pack by name, as it loads entry-point packs
           (f"{PACKAGE}.core.registry", OPERATORS)}


_NAMED_MODULE = re.compile(rf"\b{PACKAGE}(?:\.\w+)+")


def _module_name(path: Path) -> str:
    folder = path.relative_to(REPO_ROOT).parts[0]
    parts = list(path.relative_to(REPO_ROOT / folder).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([FOLDERS[folder], *parts])


def _sources() -> dict[str, Path]:
    return {_module_name(p): p for folder in FOLDERS for p in sorted((REPO_ROOT / folder).rglob("*.py"))}


def _imports(module: str, path: Path, modules: set[str]) -> set[str]:
    """The package modules a module's import statements name (``from pkg import mod`` names ``pkg.mod``)."""
    names: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            # a module named in a string (importlib.import_module, a docstring) is a dependency as well
            for named in _NAMED_MODULE.findall(node.value):
                known = [m for m in modules if named == m or named.startswith(f"{m}.")]
                if known:
                    names.add(max(known, key=len))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            names.update(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names)
    return {n for n in names if n == PACKAGE or n.startswith(f"{PACKAGE}.")}


def _within(name: str, prefixes: tuple[str, ...] | str) -> bool:
    prefixes = (prefixes,) if isinstance(prefixes, str) else prefixes
    return any(name == p or name.startswith(f"{p}.") for p in prefixes)


def _layer_violations(sources: dict[str, Path]) -> list[str]:
    found = []
    for module, path in sources.items():
        if module in COMPAT_ALIASES:
            continue
        for target in sorted(_imports(module, path, set(sources))):
            if target in (module, PACKAGE) or (module, target) in ALLOWED:
                continue
            if _within(module, MODELS):
                forbidden = _within(target, (OPERATORS, *AIRFLOW_SIDE))
            elif _within(module, OPERATORS):
                forbidden = _within(target, AIRFLOW_SIDE)
            elif _within(module, CORE):
                forbidden = not _within(target, CORE)
            elif _within(module, GRAPH):
                forbidden = not _within(target, (*CORE, GRAPH))
            else:
                continue  # the Airflow side may import anything below it
            if forbidden:
                found.append(f"{module} imports {target} ({path.name})")
    return found


def test_imports_run_one_way():
    """models never import nodes or the Airflow side; nodes never import the Airflow side; the core and the
    graph import nothing above them."""
    assert _layer_violations(_sources()) == []


def test_the_check_sees_a_wrong_way_import(tmp_path):
    """The check itself fails on a backend that imports a node module, from inside a function or by name."""
    offender = tmp_path / "probe.py"
    offender.write_text("def f():\n    from invokeai_provider.operators.image.io import load_image\n")
    by_name = tmp_path / "by_name.py"
    by_name.write_text("import importlib\nio = importlib.import_module('invokeai_provider.operators.image.io')\n")
    sources = {**_sources(), f"{MODELS}.image_util.probe": offender, f"{MODELS}.image_util.by_name": by_name}
    assert sorted(v for v in _layer_violations(sources) if "image_util" in v) == [
        "invokeai_provider.models.image_util.by_name imports invokeai_provider.operators.image.io (by_name.py)",
        "invokeai_provider.models.image_util.probe imports invokeai_provider.operators.image.io (probe.py)"]


def _is_small_index(path: Path) -> bool:
    """Docstring, imports and constants only: no functions or classes, nothing a reader has to look for."""
    tree = ast.parse(path.read_text())
    return not any(isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) for node in tree.body)


@pytest.mark.parametrize("folder", ["operators", "models"])
def test_top_of_operators_and_models_holds_only_packages_and_indexes(folder):
    """Code lives in a sub-package named for its concern; the top holds the package __init__ and aliases."""
    loose = [p.name for p in sorted((REPO_ROOT / folder).glob("*.py"))
             if p.name != "__init__.py" and not _is_small_index(p)]
    assert loose == []


def test_a_module_with_code_is_not_an_index(tmp_path):
    index, code = tmp_path / "index.py", tmp_path / "code.py"
    index.write_text('"""An alias."""\nimport sys\n\nfrom a import b as _module\n\nsys.modules[__name__] = _module\n')
    code.write_text("def helper():\n    return 1\n")
    assert _is_small_index(index) and not _is_small_index(code)


def test_every_sub_package_is_packaged():
    """pyproject.toml lists every sub-package (setuptools cannot find them through the folder mapping)."""
    import tomllib

    listed = set(tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {name for name, path in _sources().items() if path.name == "__init__.py"}
    assert on_disk - listed == set(), "add these to [tool.setuptools] packages"
    assert listed - on_disk == set()


def test_old_import_paths_are_the_new_modules():
    """Node packs and DAG files written against the old flat layout keep importing the same objects."""
    import importlib

    from invokeai_provider.compiler import dag_factory, dags
    from invokeai_provider.core import invocation
    from invokeai_provider.graph import batch, engine
    from invokeai_provider.operators.core import primitives

    for old, new in [("invocation", invocation), ("batch", batch), ("engine", engine), ("compile", dags),
                     ("dag_factory", dag_factory), ("operators.primitives", primitives)]:
        assert importlib.import_module(f"{PACKAGE}.{old}") is new
