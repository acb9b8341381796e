"""dvc.yaml lists, for each stage, every module it imports (the stage's own, and the library's,
directly or not) and the params it reads, and is the one list of them: a change in validation,
I/O or model code is never silently skipped, and DVC's run-cache is keyed by what the stage
really depends on."""

import ast
import re
from pathlib import Path

import pytest
import yaml

from latent.plumbing import params, pipeline
from tests.conftest import REPO

DVC_YAML = yaml.safe_load((REPO / "dvc.yaml").read_text())
STAGES = DVC_YAML["stages"]
PACKAGES = ("stages", "latent")


def module_path(dotted: str) -> Path | None:
    """The file of a module of this repository (a package's __init__.py), if it is one."""
    if dotted.split(".")[0] not in PACKAGES:
        return None
    base = REPO.joinpath(*dotted.split("."))
    if base.with_suffix(".py").exists():
        return base.with_suffix(".py")
    return base / "__init__.py" if (base / "__init__.py").exists() else None


def imported_modules(path: Path) -> set[str]:
    """Dotted names of the repository's modules one file imports (``from a.b import c`` counts
    a.b and, where it is a module, a.b.c)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in names if module_path(name) is not None}


def with_packages(dotted: str) -> set[str]:
    """The module and every package above it (importing a.b.c runs a and a.b first)."""
    parts = dotted.split(".")
    return {".".join(parts[: i + 1]) for i in range(len(parts))}


def code_of(module: str) -> set[Path]:
    """Every file of the repository that importing ``module`` runs."""
    seen: set[str] = set()
    todo = sorted(with_packages(module))
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for imported in imported_modules(module_path(name)):
            todo += sorted(with_packages(imported) - seen)
    return {module_path(name) for name in seen}


def stage_module(stage: str) -> str:
    return STAGES[stage]["cmd"].removeprefix("python -m ")


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_imported_module_is_a_dependency(stage):
    needed = {path.relative_to(REPO).as_posix() for path in code_of(stage_module(stage))}
    listed = {dep for dep in STAGES[stage]["deps"] if dep.endswith(".py")}
    assert needed - listed == set(), f"{stage} imports modules it does not list"
    assert listed - needed == set(), f"{stage} lists modules it does not import"


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_no_stage_imports_another_stage(stage):
    own = module_path(stage_module(stage))
    others = {p for p in code_of(stage_module(stage)) if p.parent.name == "stages"}
    assert others <= {own, REPO / "stages" / "__init__.py"}


def test_the_library_imports_no_stage_and_each_subject_only_those_below_it():
    """latent/__init__.py lists the subjects top-down; each may import only those below it."""
    order = re.findall(r"^    (\w+)/", (REPO / "latent" / "__init__.py").read_text(), re.M)
    assert sorted(order) == sorted(
        p.name for p in (REPO / "latent").iterdir() if p.is_dir() and (p / "__init__.py").exists()
    )
    for subject in order:
        for path in (REPO / "latent" / subject).glob("*.py"):
            for name in imported_modules(path):
                assert not name.startswith("stages"), f"{path} imports the stage {name}"
                parts = name.split(".")
                if len(parts) > 1 and parts[1] != subject:
                    below = order[order.index(subject) + 1 :]
                    assert parts[1] in below, f"{path} imports {name}, not below {subject}"


@pytest.mark.parametrize("stage", sorted(s for s in STAGES if "params" in STAGES[s]))
def test_a_stage_reads_its_params_from_dvc_yaml_and_every_listed_key_is_used(stage):
    """The stage asks for its own keys by name, and each listed key is read somewhere in the
    code it runs (a key that nothing reads would only re-run the stage for nothing)."""
    source = module_path(stage_module(stage)).read_text()
    assert f'params.load("{stage}")' in source
    code = "".join(path.read_text() for path in code_of(stage_module(stage)))
    for key in pipeline.stage_params(stage):
        read = f"config.{key}" in code or f'"{key}"' in code  # or getattr(config, "key")
        assert read, f"{stage} lists {key} but its code never reads it"


def test_every_param_is_read_by_some_stage():
    read = {key for stage in STAGES for key in STAGES[stage].get("params", [])}
    assert read == set(params.KEYS)
    assert set(yaml.safe_load((REPO / "params.yaml").read_text())) == set(params.KEYS)


def test_the_readme_stage_table_lists_what_dvc_yaml_lists():
    readme = (REPO / "README.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \| ([^|]*) \|", readme, re.M)
    assert sorted(stage for stage, _ in rows) == sorted(STAGES)
    for stage, listed in rows:
        assert re.findall(r"`(\w+)`", listed) == pipeline.stage_params(stage), stage


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
