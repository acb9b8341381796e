"""dvc.yaml lists, for each stage, every module of stages/ it imports and exactly the params it
reads: a change in validation, I/O or model code is never silently skipped, and DVC's run-cache is
keyed by what the stage really depends on."""

import ast
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

DVC_YAML = yaml.safe_load((REPO / "dvc.yaml").read_text())
STAGES = DVC_YAML["stages"]


def imported_stage_modules(module: str) -> set[str]:
    """stages/<module>.py and every stages module it imports, directly or not (and the package)."""
    seen, todo = {"__init__"}, [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        tree = ast.parse((REPO / "stages" / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "stages":
                todo += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("stages."):
                todo.append(node.module.split(".", 1)[1])
            elif isinstance(node, ast.Import):
                todo += [
                    a.name.split(".", 1)[1] for a in node.names if a.name.startswith("stages.")
                ]
    return seen


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_imported_module_is_a_dependency(stage):
    module = STAGES[stage]["cmd"].removeprefix("python -m stages.")
    needed = {f"stages/{name}.py" for name in imported_stage_modules(module)}
    listed = {dep for dep in STAGES[stage]["deps"] if dep.startswith("stages/")}
    assert needed - listed == set(), f"{stage} imports modules it does not list"
    assert listed - needed == set(), f"{stage} lists modules it does not import"


@pytest.mark.parametrize("stage", sorted(s for s in STAGES if "params" in STAGES[s]))
def test_listed_params_are_the_stage_modules_params(stage):
    import importlib

    module = importlib.import_module(STAGES[stage]["cmd"].removeprefix("python -m "))
    declared = getattr(module, "PARAMS", None)
    if declared is None:  # stages that read their keys inline
        source = Path(module.__file__).read_text()
        declared = [key for key in STAGES[stage]["params"] if f'"{key}"' in source]
    assert sorted(STAGES[stage]["params"]) == sorted(declared)


def options(entry) -> dict:
    return next(iter(entry.values())) if isinstance(entry, dict) else {}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_stage_can_have_a_run_cache_entry(stage):
    """DVC keeps no run-cache entry for a stage with a persistent output (dvc/stage/cache.py) or
    with an uncached output that is neither a metric nor a plot (dvc/stage/__init__.py)."""
    for kind in ("outs", "metrics", "plots"):
        for entry in STAGES[stage].get(kind, []):
            assert not options(entry).get("persist"), entry
            if kind == "outs":
                assert options(entry).get("cache", True), entry


def test_offline_plots_page_is_the_configured_template_with_one_inlined_block():
    """The page DVC renders plots with is hand-written around one builder-owned block, which
    holds the three pinned builds; re-inlining that block leaves the page byte for byte."""
    import configparser

    from tools import build_plots_template as builder

    config = configparser.ConfigParser()
    config.read(REPO / ".dvc" / "config")
    assert REPO / ".dvc" / config["plots"]["html_template"] == builder.OUTPUT
    page = builder.OUTPUT.read_text(encoding="utf-8")
    inlined = builder.split(page)[1]
    assert builder.inline(page, inlined) == page
    for name, version in builder.PINS.items():
        assert f"<!-- {name} {version} -->\n    <script>" in inlined, name
    outside = builder.inline(page, "")
    assert "{plot_divs}" in outside and "<script" not in outside and "{scripts}" not in outside
    with pytest.raises(SystemExit, match="expected one"):
        builder.inline(page.replace(builder.END, ""), inlined)
