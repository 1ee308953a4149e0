"""dvc.yaml's code dependencies are each stage's real import closure within the project, no more
and no less: a code change re-runs exactly the stages whose code changed.

The closure is read from the source (every `import` / `from ... import`, function-level ones
included, since a lazy import still runs, and every "module:function" string naming a project
module: the model registry's lazily imported builders), not from a running interpreter, so an
import taken only on some path counts too."""
import ast
import re
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO_ROOT

PROJECT_PACKAGES = ("pipeline", "stages")
LAZY_TARGET = re.compile(r"^((?:pipeline|stages)(?:\.\w+)+):\w+$")  # "pipeline.nets.mlp:build"


def module_file(module: str) -> Path | None:
    """The project file that defines `module` (a package's __init__.py), or None outside the project."""
    if module.split(".")[0] not in PROJECT_PACKAGES:
        return None
    base = REPO_ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path) -> set[str]:
    """Every module an `import` statement in `path` may load (for `from a import b`: a, and a.b
    when b is a submodule)."""
    package = ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts)
    if path.name == "__init__.py":
        package = package.rsplit(".", 1)[0] + "._"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                parent = package.rsplit(".", node.level)[0]
                base = f"{parent}.{base}" if base else parent
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and LAZY_TARGET.match(node.value):
            found.add(LAZY_TARGET.match(node.value).group(1))
    # importing a.b.c runs a/__init__.py and a/b/__init__.py first
    return {".".join(m.split(".")[:i]) for m in found for i in range(1, m.count(".") + 2)}


def import_closure(module: str) -> set[Path]:
    """Project files loaded, transitively, by importing `module`."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        path = module_file(todo.pop())
        if path is None or path in seen:
            continue
        seen.add(path)
        todo.extend(imported_modules(path))
    return seen


def declared_code_deps(stage: dict) -> set[Path]:
    """The project files a dvc.yaml stage lists (a folder stands for every .py file in it)."""
    files: set[Path] = set()
    for dep in stage["do"]["deps"] if "do" in stage else stage["deps"]:
        path = REPO_ROOT / dep
        if dep.split("/")[0] not in PROJECT_PACKAGES:
            continue
        files.update(sorted(path.rglob("*.py")) if path.is_dir() else [path])
    return files


STAGES = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_code_deps_are_its_import_closure(name):
    command = (STAGES[name]["do"] if "do" in STAGES[name] else STAGES[name])["cmd"]
    module = command.split()[2]  # python -m stages.<name> ...
    rel = lambda paths: sorted(str(p.relative_to(REPO_ROOT)) for p in paths)  # noqa: E731
    assert rel(declared_code_deps(STAGES[name])) == rel(import_closure(module))


def test_closure_follows_lazy_and_package_imports():
    """The checker itself: a function-level import and a package's __init__ are both found."""
    evaluate = {str(p.relative_to(REPO_ROOT)) for p in import_closure("pipeline.evaluate.run")}
    assert "pipeline/evaluate/classifier.py" in evaluate  # imported inside a function
    assert {"pipeline/__init__.py", "pipeline/nets/__init__.py", "pipeline/nets/common.py"} <= evaluate
    assert "pipeline/report/pages.py" not in evaluate
