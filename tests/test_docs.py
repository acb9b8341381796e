"""The README and the pages of docs/ stay true: the quickstart is two commands and CI runs the
test one, every -S key exists, every image and relative link (with its #anchor) resolves, every
generated block is current, the README is an entry point of at most 250 lines that links every
page, and each page opens with a summary."""

import re
from pathlib import Path

import pytest
import yaml

from latent.plumbing import params
from tests.conftest import REPO

README = (REPO / "README.md").read_text()
PAGES = sorted((REPO / "docs").glob("*.md"))
DOCUMENTS = [REPO / "README.md", *PAGES]


def prose(path: Path) -> str:
    """The Markdown of ``path`` without its fenced code blocks."""
    return re.sub(r"^```.*?^```", "", path.read_text(), flags=re.M | re.S)


def quickstart_commands() -> list[str]:
    section = README.split("## Quickstart", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def test_quickstart_is_two_commands_one_for_the_pipeline_one_for_the_tests():
    commands = quickstart_commands()
    assert len(commands) == 2
    assert commands[0].endswith("&& dvc repro") and "pip install -r requirements.txt" in commands[0]
    assert (
        commands[1].endswith("&& python -m pytest")
        and "pip install -r requirements.txt" in commands[1]
    )


def test_ci_runs_the_readme_test_command_verbatim():
    ci_lines = (REPO / ".ci/run").read_text().splitlines()
    assert quickstart_commands()[1] in ci_lines


def test_the_readme_is_an_entry_point_that_links_every_page():
    assert len(README.splitlines()) <= 250
    for page in PAGES:
        assert f"(docs/{page.name}" in README, page.name


@pytest.mark.parametrize("path", PAGES, ids=lambda p: p.name)
def test_each_page_opens_with_a_summary(path):
    """A title, then a paragraph of prose (not a list, table, code or another heading)."""
    blocks = [b for b in path.read_text().split("\n\n") if b.strip()]
    assert blocks[0].startswith("# ") and "\n" not in blocks[0].strip()
    first = blocks[1].lstrip()
    assert not first.startswith(("#", "-", "|", "```", "<!--", "!")) and len(first) > 200


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: p.name)
def test_every_overridden_key_exists(path):
    keys = set(re.findall(r"-S '?(\w+)=", path.read_text()))
    assert keys <= set(params.KEYS), keys - set(params.KEYS)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found, seen = set(), {}
    for heading in re.findall(r"^#{1,6} (.+)$", prose(path), re.M):
        name = slug(heading)
        found.add(name if name not in seen else f"{name}-{seen[name]}")
        seen[name] = seen.get(name, 0) + 1
    return found


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: p.name)
def test_relative_links_images_and_anchors_resolve(path):
    targets = re.findall(r"\]\(([^)\s]+)\)", prose(path))
    assert targets
    for target in targets:
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        assert linked.exists(), f"{path.name}: {target}"
        if anchor:
            assert anchor in anchors(linked), f"{path.name}: {target}"


def test_the_param_defaults_in_the_pipeline_page_are_params_yaml():
    defaults = yaml.safe_load((REPO / "params.yaml").read_text())
    section = (REPO / "docs" / "pipeline.md").read_text().split("## The params", 1)[1]
    table = section.split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| `(\w+)` \| ([^|]+) \|", table, re.M))
    assert set(rows) == set(defaults)
    for key, shown in rows.items():
        value = defaults[key]
        expected = str(value).lower() if isinstance(value, bool) else str(value)
        assert shown.strip().strip("`").replace(", ", ",") == expected.replace(", ", ","), key


def results_tool():
    import importlib.util

    spec = importlib.util.spec_from_file_location("results", REPO / "tools" / "results.py")
    results = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(results)
    return results


def test_every_generated_block_is_current():
    """The tables of README.md and docs/ are those tools/results.py makes from results.csv,
    published.csv, metrics/ and benchmarks/default_run.csv."""
    results = results_tool()
    assert all(row["command"] for row in results.read_rows())
    assert results.stale_blocks() == []


def test_a_row_from_an_experiment_older_than_weight_decay_says_none_and_renders():
    import yaml

    results = results_tool()
    older = yaml.safe_load((REPO / "params.yaml").read_text())
    del older["weight_decay"]
    row = results.row_from(older, {}, "older", "dvc repro")
    assert row["weight_decay"] == 0
    assert "| older | " in results.results_block([row])
    assert "weight decay" not in results.training_words(row)


def test_rows_that_differ_only_in_seed_are_one_line_with_mean_and_sd():
    import yaml

    results = results_tool()
    values = yaml.safe_load((REPO / "params.yaml").read_text())
    metrics = {"metrics/evaluate.json": {"test_log_px": -85.0, "test_elbo": -90.0}}
    rows = [results.row_from(dict(values, seed=s), metrics, f"run-s{s}", "c") for s in (0, 1, 2)]
    for row, log_px in zip(rows, (-85.0, -86.0, -87.0)):
        row["test_log_px"] = log_px
    other = results.row_from(dict(values, seed=0, latent_dim=3), metrics, "other", "c")
    block = results.results_block(rows + [other]).splitlines()
    assert len(block) == 2 + 2  # header, rule, the three seeds as one line, the other row
    assert block[2].startswith("| run | ") and "| 0, 1, 2 |" in block[2]
    assert "| −86.00 ± 1.00 (3) |" in block[2] and "| −90.00 ± 0.00 (3) |" in block[2]
    assert block[3].startswith("| other | ") and "| −85.00 |" in block[3]
    assert len(results.reproduce_block(rows).splitlines()) == 2 + 3  # every seed's command


def test_metrics_of_stages_an_experiment_did_not_reach_are_left_out_of_its_row():
    """dvc exp run ... evaluate: inference_gap and ais still hold the baseline's metrics, computed
    from other networks (their models dep differs from train's models out), and so does ais
    through inference_gap's estimates; train's and evaluate's are the experiment's."""
    import yaml

    results = results_tool()
    lock = yaml.safe_load((REPO / "dvc.lock").read_text())
    train_models = next(o for o in lock["stages"]["train"]["outs"] if o["path"] == "models")
    train_models["md5"] = "0123456789abcdef0123456789abcdef.dir"  # the experiment's networks
    evaluate_models = next(d for d in lock["stages"]["evaluate"]["deps"] if d["path"] == "models")
    evaluate_models["md5"] = train_models["md5"]  # evaluate ran on them
    lock_text = yaml.safe_dump(lock)
    stale = results.stale_outputs(lock_text)
    assert {"metrics/inference_gap.json", "metrics/ais.json", "figures/posterior.png"} <= stale
    assert "metrics/evaluate.json" not in stale and "metrics/train.json" not in stale
    metrics = {
        path: {"value": 1.0}
        for path in ("metrics/train.json", "metrics/evaluate.json", "metrics/ais.json")
    }
    assert set(results.fresh(metrics, lock_text)) == {"metrics/train.json", "metrics/evaluate.json"}
    assert results.stale_outputs((REPO / "dvc.lock").read_text()) == set()  # the committed run


def test_compare_pairs_the_images_both_runs_have():
    """The paired difference uses only the common images, and its standard error comes from the
    spread of the differences, not of the values: a large per-image offset shared by both runs
    leaves it small."""
    results = results_tool()
    offsets = {0: -40.0, 1: -120.0, 2: -80.0, 3: -95.0}  # images differ by tens of nats
    a = {i: offsets[i] + d for i, d in zip(offsets, (1.0, 0.0, 1.0, 2.0))} | {7: 0.0}
    b = dict(offsets) | {9: -500.0}  # image 7 only in a, 9 only in b
    n, mean_a, mean_b, difference, se = results.paired(a, b)
    assert n == 4
    assert mean_b == sum(offsets.values()) / 4 and mean_a == mean_b + 1.0
    assert difference == 1.0
    assert abs(se - (2 / 3) ** 0.5 / 2) < 1e-12  # sd of (1, 0, 1, 2) over sqrt(4)


def test_compare_names_an_experiment_that_is_not_there():
    import pytest

    results = results_tool()
    with pytest.raises(SystemExit, match="no experiment named 'no-such-run'"):
        results.experiment_ref("no-such-run")


def test_compare_can_pair_the_difference_of_two_columns():
    """AIS - IS per image is read as the difference of the two columns, on rows with both."""
    results = results_tool()
    table = [
        {"test_index": "3", "log_px_ais": "-80.5", "log_px_is": "-81.0"},
        {"test_index": "5", "log_px_ais": "-90.0", "log_px_is": "-92.0"},
        {"test_index": "8", "log_px_ais": "", "log_px_is": "-70.0"},  # no AIS for this image
    ]
    assert results.per_image_values(table, ("log_px_ais", "log_px_is")) == {3: 0.5, 5: 2.0}
    assert results.per_image_values(table, "log_px_is") == {3: -81.0, 5: -92.0, 8: -70.0}
