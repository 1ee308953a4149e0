"""dvc.yaml's code dependencies cover each stage's real import closure within the project and name
nothing else of the computation: a code change re-runs the stages whose code changed, and a loss,
a family's net or the report code re-runs no other stage.

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


def imported_modules(path: Path, lazy: bool = True) -> set[str]:
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
        elif lazy and isinstance(node, ast.Constant) and isinstance(node.value, str) and LAZY_TARGET.match(node.value):
            found.add(LAZY_TARGET.match(node.value).group(1))
    # importing a.b.c runs a/__init__.py and a/b/__init__.py first
    return {".".join(m.split(".")[:i]) for m in found for i in range(1, m.count(".") + 2)}


def import_closure(module: str, lazy: bool = True) -> set[Path]:
    """Project files loaded, transitively, by importing `module` (and, with `lazy`, by resolving
    every "module:function" string on the way)."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        path = module_file(todo.pop())
        if path is None or path in seen:
            continue
        seen.add(path)
        todo.extend(imported_modules(path, lazy))
    return seen


def declared_code_deps(stage: dict, model: str | None = None) -> set[Path]:
    """The project files a dvc.yaml stage lists (a folder stands for every .py file in it), with
    `${item.model}` read as `model`."""
    files: set[Path] = set()
    for dep in stage["do"]["deps"] if "do" in stage else stage["deps"]:
        if dep.split("/")[0] not in PROJECT_PACKAGES:
            continue
        path = REPO_ROOT / dep.replace("${item.model}", model or "${item.model}")
        files.update(sorted(path.rglob("*.py")) if path.is_dir() else [path])
    return files


def lazy_targets(module: str) -> set[str]:
    """The "module:function" strings in `module`'s file: imports deferred until a stage computes."""
    return {LAZY_TARGET.match(node.value).group(1) for node in ast.walk(ast.parse(module_file(module).read_text()))
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and LAZY_TARGET.match(node.value)}


STAGES = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]
# What a stage computes with beyond its imports: the family registry's builders (train and evaluate
# build the nets: only the experiment's own family) and the loss registry's functions (train).
FAMILY, LOSS = "family", "loss"
RESOLVES = {"train": {FAMILY, LOSS}, "evaluate": {FAMILY}}
# Each param file's experiments, so every family is checked (the default runs no projected cgan ...).
EXPERIMENT_FILES = ["params.yaml", "studies/cpu.yaml", "studies/paper.yaml"]
# DVC's templating cannot look up a family's shared module: every experiment depends on the
# conditional families' shared G and trunk (editing it re-runs every experiment, never too few).
SHARED_BY_FAMILIES = {"pipeline/nets/conditional.py"}
# How a stage's process starts (forked by the stage server, or fresh), not what it computes:
# tests/test_stage_server.py checks that a training writes the same weights either way, so
# editing the server re-runs no stage.
HOW_A_STAGE_STARTS = {REPO_ROOT / "stages" / "_server.py"}


def stage_module(name: str) -> str:
    return (STAGES[name]["do"] if "do" in STAGES[name] else STAGES[name])["cmd"].split()[2]  # python -m stages.<name>


def expected_deps(name: str, model: str | None) -> set[Path]:
    from pipeline.core.registry import LOSSES
    from pipeline.nets import FAMILIES

    files = import_closure(stage_module(name), lazy=False) - HOW_A_STAGE_STARTS
    if FAMILY in RESOLVES.get(name, ()):
        files |= import_closure(FAMILIES[model].builder.split(":")[0], lazy=False)
    if LOSS in RESOLVES.get(name, ()):
        for loss in LOSSES.values():
            files |= import_closure(loss.d.split(":")[0], lazy=False) | import_closure(loss.g.split(":")[0], lazy=False)
    return files


def models_in_use() -> list[str]:
    return sorted({entry["model"] for f in EXPERIMENT_FILES
                   for entry in yaml.safe_load((REPO_ROOT / f).read_text())["experiments"].values()})


def rel(paths) -> list[str]:
    return sorted(str(p.relative_to(REPO_ROOT)) for p in paths)


CASES = [(name, model) for name in sorted(STAGES)
         for model in (models_in_use() if "${item.model}" in str(STAGES[name]) else [None])]


@pytest.mark.parametrize("name,model", CASES)
def test_stage_code_deps_cover_its_imports_and_name_nothing_else(name, model):
    declared, needed = declared_code_deps(STAGES[name], model), expected_deps(name, model)
    assert rel(needed - declared) == []  # a change there would not re-run the stage
    extra = {str(p.relative_to(REPO_ROOT)) for p in declared - needed}
    # a package named as a whole may hold modules the stage does not import (its __init__ and
    # siblings), but never a model family's net, a loss or the report code it does not use
    narrow = [f for f in extra if f.startswith(("pipeline/nets/", "pipeline/report/", "pipeline/train/"))]
    assert sorted(set(narrow) - SHARED_BY_FAMILIES) == []
    # code folders named whole (a data folder such as runs/ is a folder too once `dvc repro` made it)
    packages = {str(Path(d)) for d in (STAGES[name].get("do", STAGES[name])["deps"])
                if d.startswith(("pipeline/", "stages/")) and (REPO_ROOT / d).is_dir()}
    for package in packages:  # each package named is one the stage imports from
        assert any(str(p.relative_to(REPO_ROOT)).startswith(package + "/") for p in needed), package


def test_validating_params_imports_no_computation():
    """Every stage loads params.yaml: its validation must not reach the losses, the nets, training,
    evaluation or the report, or editing them would re-run every stage."""
    config = rel(import_closure("pipeline.core.config", lazy=False))
    assert [f for f in config if f.startswith(("pipeline/train/", "pipeline/evaluate/", "pipeline/report/",
                                                "pipeline/tracking/"))] == []
    assert [f for f in config if f.startswith("pipeline/nets/")] == ["pipeline/nets/__init__.py", "pipeline/nets/options.py"]


def test_every_family_and_loss_named_lazily_exists():
    """The registries' "module:function" strings point at real functions (a typo would only fail
    when a training first uses that family or loss)."""
    import importlib

    from pipeline.core.registry import LOSSES
    from pipeline.nets import FAMILIES

    targets = [f.builder for f in FAMILIES.values()] + [t for loss in LOSSES.values() for t in (loss.d, loss.g)]
    for target in targets:
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function)), target


def test_closure_follows_lazy_and_package_imports():
    """The checker itself: a function-level import and a package's __init__ are both found."""
    evaluate = set(rel(import_closure("pipeline.evaluate.run")))
    assert "pipeline/evaluate/classifier.py" in evaluate  # imported inside a function
    assert {"pipeline/__init__.py", "pipeline/nets/__init__.py", "pipeline/nets/common.py"} <= evaluate
    assert "pipeline/report/pages.py" not in evaluate
    assert "pipeline/nets/cgan.py" in evaluate  # the registry's lazy builder strings, when followed
    assert "pipeline/nets/cgan.py" not in set(rel(import_closure("pipeline.evaluate.run", lazy=False)))
