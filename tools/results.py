"""The results tables: results/results.csv (git-tracked, one row per result), the published
numbers of results/published.csv, and the generated blocks of the README and docs/ made from
them (and from metrics/ and benchmarks/default_run.csv).

    python tools/results.py add NAME --command "dvc exp run ..." [--exp EXP] [--rev REV]
        a row from an experiment's params.yaml and metrics/ (dvc.api's params_show and
        metrics_show), or, without --exp, from the workspace's (e.g. after dvc repro)
    python tools/results.py tables      rewrite every generated block (README.md, docs/*.md)
    python tools/results.py check       exit 1 if a generated block is not current
    python tools/results.py compare A B
        two experiments' per-image estimates on the test images both have (the ais and
        inference_gap stages' data/estimates/, read from DVC's cache): each mean and the mean
        difference A - B with its paired standard error over the images

A generated block stands between ``<!-- NAME: tools/results.py -->`` and
``<!-- end of generated block -->``; tests/test_docs.py runs the check.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import re
import statistics
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import default_run  # noqa: E402
from latent.plumbing import params as params_model  # noqa: E402
from latent.plumbing.pipeline import stage_params  # noqa: E402

RESULTS = REPO / "results" / "results.csv"
PUBLISHED = REPO / "results" / "published.csv"
README = REPO / "README.md"
DOCS = REPO / "docs"
METRICS = REPO / "metrics"
# what made the model: every param of prepare and train, in the params model's order
PARAM_COLUMNS = [
    key for key in params_model.KEYS if key in stage_params("prepare") + stage_params("train")
]
# what an experiment older than a param had instead
BEFORE_THE_PARAM = {"weight_decay": 0, "prior": "standard", "prior_components": ""}
COLUMNS = [
    "name",
    *PARAM_COLUMNS,
    "objective",
    "epochs_run",
    "best_epoch",
    "seconds_per_epoch",
    "test_elbo",
    "test_log_px",
    "k",
    "approximation_gap",
    "amortization_gap",
    "active_units",
    "ais_examples",
    "ais_steps",
    "ais_log_px",
    "ais_minus_is",
    "train_minutes",
    "evaluate_minutes",
    "device",
    "command",
]
END = "<!-- end of generated block -->"
# the results table's groups that the README's headline table shows, in its order
HEADLINE = [
    "default",
    "iaf-default",
    "static-iwae5-dreg-wd003-150",
    "dyn-iwae5-dreg-600",
    "dyn-iwae5-iaf-600",
]


def param_value(params: dict, key: str):
    if key in params:
        return params[key]
    if key in BEFORE_THE_PARAM:
        return BEFORE_THE_PARAM[key]
    raise SystemExit(f"the experiment's params have no {key!r}: results.csv needs every one")


def row_from(params: dict, metrics: dict, name: str, command: str) -> dict:
    train = metrics.get("metrics/train.json", {})
    evaluate = metrics.get("metrics/evaluate.json", {})
    gap = metrics.get("metrics/inference_gap.json", {})
    ais = metrics.get("metrics/ais.json", {})
    return {
        "name": name,
        **{key: param_value(params, key) for key in PARAM_COLUMNS},
        "hidden_units": "-".join(str(u) for u in params["hidden_units"]),
        # read only by the VampPrior: empty for N(0, I)
        "prior_components": param_value(params, "prior_components")
        if param_value(params, "prior") == "vamp"
        else "",
        "objective": "ELBO"
        if params["train_samples"] == 1
        else f"IWAE k={params['train_samples']}",
        "epochs_run": train.get("epochs_run", ""),
        "best_epoch": train.get("best_epoch", ""),
        "seconds_per_epoch": train.get("seconds_per_epoch", ""),
        "test_elbo": evaluate.get("test_elbo", ""),
        "test_log_px": evaluate.get("test_log_px", ""),
        "k": evaluate.get("eval_samples", ""),
        "approximation_gap": gap.get("approximation_gap", ""),
        "amortization_gap": gap.get("amortization_gap", ""),
        "active_units": evaluate.get("active_units", ""),
        "ais_examples": ais.get("examples", ""),
        "ais_steps": ais.get("steps", ""),
        "ais_log_px": ais.get("ais_log_px", ""),
        "ais_minus_is": ais.get("ais_minus_is", ""),
        "train_minutes": round(train["seconds_total"] / 60, 1) if "seconds_total" in train else "",
        "evaluate_minutes": round(evaluate["seconds"] / 60, 1) if "seconds" in evaluate else "",
        "device": train.get("device", ""),
        "command": command,
    }


def stale_outputs(lock_text: str) -> set[str]:
    """The outputs, in a dvc.lock, of the stages that read another version of a file than the one
    its stage made, and of the stages that read theirs: an experiment stopped at a target
    (``dvc exp run ... evaluate``) keeps the stages after it as they were, and their metrics
    describe other networks than the experiment's."""
    stages = yaml.safe_load(lock_text)["stages"].values()
    made = {out["path"]: out.get("md5") for stage in stages for out in stage.get("outs", [])}
    stale: set[str] = set()
    while True:
        found = {
            out["path"]
            for stage in stages
            if any(
                dep["path"] in stale
                or (dep["path"] in made and dep.get("md5") != made[dep["path"]])
                for dep in stage.get("deps", [])
            )
            for out in stage.get("outs", [])
        }
        if found <= stale:
            return stale
        stale |= found


def fresh(metrics: dict, lock_text: str | None) -> dict:
    """``metrics`` without the files of stale stages (see stale_outputs)."""
    stale = stale_outputs(lock_text) if lock_text else set()
    return {path: values for path, values in metrics.items() if path not in stale}


# the files row_from reads, one metrics_show each: given several, it keeps a metric's file only
# where two share its name; dvc.api.exp_show does that too, and makes 69 69.0 and lists text
METRICS_FILES = [
    "metrics/train.json",
    "metrics/evaluate.json",
    "metrics/inference_gap.json",
    "metrics/ais.json",
]


def params_and_metrics(rev: str | None) -> tuple[dict, dict]:
    """params.yaml and the METRICS_FILES there are, less those of stale stages (see fresh), at a
    git revision (an experiment's ref) or, for None, in the workspace."""
    import dvc.api
    from dvc.exceptions import DvcException

    where = {"repo": str(REPO), "rev": rev}
    metrics = {}
    for path in METRICS_FILES:
        with contextlib.suppress(FileNotFoundError):  # its stage has not run there
            metrics[path] = dvc.api.metrics_show(path, **where)
    try:
        lock = dvc.api.read("dvc.lock", **where)
    except (FileNotFoundError, DvcException):
        lock = None
    return dvc.api.params_show("params.yaml", **where), fresh(metrics, lock)


def read_rows() -> list[dict]:
    if not RESULTS.exists():
        return []
    with open(RESULTS, newline="", encoding="utf-8") as f:
        # a row from before a column was added has it empty (not measured then)
        return [{c: row.get(c) or "" for c in COLUMNS} for row in csv.DictReader(f)]


def write_rows(rows: list[dict]) -> None:
    RESULTS.parent.mkdir(exist_ok=True)
    with open(RESULTS, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def model_words(row: dict) -> str:
    words = f"latent {row['latent_dim']}, {row['hidden_units']}"
    if row["activation"] == "gated":
        words += " gated"
    if row["posterior"] == "iaf":
        words += f", IAF x{row['flow_steps']}"
    if row["prior"] == "vamp":
        words += f", VampPrior K={row['prior_components']}"
    return words


def training_words(row: dict) -> str:
    words = row["objective"] + (" DReG" if row["gradient_estimator"] == "dreg" else "")
    extras = [f"{row['lr_schedule']} lr schedule" if row["lr_schedule"] != "constant" else ""]
    extras.append(f"warm-up {row['kl_warmup_epochs']}" if int(row["kl_warmup_epochs"]) else "")
    extras.append("EMA" if str(row["ema"]) == "True" else "")
    extras.append(f"weight decay {row['weight_decay']}" if float(row["weight_decay"]) else "")
    return ", ".join([words] + [e for e in extras if e])


def number(value, digits=2, sign=True) -> str:
    if value == "":
        return "–"
    text = f"{float(value):.{digits}f}"
    return text.replace("-", "−") if sign else text


def seed_groups(rows: list[dict]) -> list[list[dict]]:
    """The rows that differ only in seed (and in what was measured), in order of appearance."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        key = tuple(str(row[c]) for c in PARAM_COLUMNS if c != "seed") + (str(row["k"]),)
        groups.setdefault(key, []).append(row)
    return list(groups.values())


def group_name(group: list[dict]) -> str:
    """The rows' name without its seed suffix (``-s1``) where they share one."""
    names = {re.sub(r"-s\d+$", "", row["name"]) for row in group}
    return names.pop() if len(names) == 1 else " / ".join(row["name"] for row in group)


def spread(group: list[dict], column: str, digits: int = 2) -> str:
    """One row's value, or mean ± sample standard deviation (n) over the seeds."""
    values = [float(row[column]) for row in group if row[column] != ""]
    if len(values) <= 1:
        return number(values[0] if values else "", digits)
    mean, sd = statistics.mean(values), statistics.stdev(values)
    return f"{number(mean, digits)} ± {sd:.{digits}f} ({len(values)})"


def ais_words(group: list[dict]) -> str:
    """AIS log p(x) minus IS log p(x) on the same test images, with how many and the steps."""
    measured = [row for row in group if row["ais_minus_is"] != ""]
    if not measured:
        return "–"
    sizes = sorted({(row["ais_examples"], row["ais_steps"]) for row in measured})
    where = "; ".join(f"{n} images, {t} steps" for n, t in sizes)
    difference = spread(measured, "ais_minus_is")
    return f"{'' if difference.startswith('−') else '+'}{difference} ({where})"


def minutes(row: dict) -> float:
    return sum(float(row[key] or 0) for key in ("train_minutes", "evaluate_minutes"))


def epochs_words(group: list[dict]) -> str:
    runs = sorted({int(row["epochs_run"]) for row in group if row["epochs_run"] != ""})
    best = sorted({int(row["best_epoch"]) for row in group if row["best_epoch"] != ""})
    span = lambda v: "–" if not v else str(v[0]) if len(v) == 1 else f"{v[0]}–{v[-1]}"
    return f"{span(runs)} ({span(best)})"


def markdown_table(head: list[str], rows: list[list]) -> str:
    """A Markdown table: the header, its rule, a line per row."""
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


RESULTS_HEAD = [
    "name", "model", "binarization", "training", "seeds", "epochs (best)", "test ELBO",
    "test log p(x)", "k", "AIS − IS", "active units", "approx. gap", "amort. gap",
    "train + eval", "device",
]  # fmt: skip


def results_block(rows: list[dict]) -> str:
    lines = []
    for group in seed_groups(rows):
        row = group[0]
        lines.append(
            [
                group_name(group),
                model_words(row),
                row["binarization"],
                training_words(row),
                ", ".join(str(r["seed"]) for r in group),
                epochs_words(group),
                spread(group, "test_elbo"),
                spread(group, "test_log_px"),
                row["k"],
                ais_words(group),
                spread(group, "active_units", 0),
                spread(group, "approximation_gap"),
                spread(group, "amortization_gap"),
                f"{statistics.mean(minutes(r) for r in group):.0f} min",
                ", ".join(sorted({r["device"] for r in group})),
            ]
        )
    return markdown_table(RESULTS_HEAD, lines)


def reproduce_block(rows: list[dict]) -> str:
    return markdown_table(
        ["name", "command", "train + eval", "device"],
        [[r["name"], f"`{r['command']}`", f"{minutes(r):.0f} min", r["device"]] for r in rows],
    )


def read_published() -> list[dict]:
    with open(PUBLISHED, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def published_block(published: list[dict]) -> str:
    return markdown_table(
        ["model", "binarization", "test NLL", "k", "source"],
        [[p["model"], p["binarization"], p["test_nll"], p["k"], p["source"]] for p in published],
    )


def nll_words(group: list[dict]) -> str:
    """Test NLL = -log p(x): one row's, or mean ± sd (n seeds)."""
    values = [-float(row["test_log_px"]) for row in group]
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f} ({len(values)} seeds)"


def headline_block(rows: list[dict], published: list[dict]) -> str:
    """The README's table: the HEADLINE rows of results.csv and the published numbers marked
    headline, in one table."""
    groups = {group_name(group): group for group in seed_groups(rows)}
    ours = [
        [
            f"[`{name}`](docs/results.md#the-results-table)",
            model_words(groups[name][0]),
            groups[name][0]["binarization"],
            training_words(groups[name][0]),
            f"**{nll_words(groups[name])}**",
            groups[name][0]["k"],
        ]
        for name in HEADLINE
    ]
    theirs = [
        [
            f"[{p['cite']}](docs/results.md#published-numbers)",
            p["model"],
            p["binarization"],
            "–",
            p["test_nll"],
            p["k"],
        ]
        for p in published
        if p["headline"] == "yes"
    ]
    return markdown_table(["", "model", "binarization", "training", "test NLL", "k"], ours + theirs)


def read_metrics(name: str) -> dict:
    return json.loads((METRICS / f"{name}.json").read_text(encoding="utf-8"))


def signed(value: float, digits: int = 2) -> str:
    return f"{value:+.{digits}f}".replace("-", "−")


def default_ais_block(ais: dict) -> str:
    """The default run's AIS against quadrature and IS, from metrics/ais.json."""
    exact = ais["quadrature_log_px"]
    worst = ais["worst_image_ais_minus_quadrature"]
    spread = ais["ais_minus_quadrature_standard_error"]
    head = [
        f"first {ais['examples']} test images, nats per image",
        "mean",
        "− quadrature (± se)",
        "mean \\|− quadrature\\|",
        "worst image",
    ]
    return markdown_table(
        head,
        [
            ["log p(x) by quadrature (exact)", number(exact), "–", "–", "–"],
            [
                f"AIS from the {ais['initial']}, {ais['chains']} chains, {ais['steps']} steps",
                number(ais["ais_log_px"]),
                f"{signed(ais['ais_minus_quadrature'])} ± {spread:.2f}",
                f"{ais['mean_abs_ais_minus_quadrature']:.2f}",
                f"{signed(worst['difference'])} (image {worst['image']})",
            ],
            [
                f"IS, k = {ais['eval_samples']}, from the encoder",
                number(ais["is_log_px"]),
                signed(ais["is_log_px"] - exact),
                f"{ais['mean_abs_is_minus_quadrature']:.2f}",
                "–",
            ],
        ],
    )


def quickstart_block(records: list[dict]) -> str:
    """One line: the latest default-run time of each XLA cap on record."""
    latest = {(r["cpu"], r["vector"], r["isa"]): r for r in records}  # the last of each
    latest = dict(sorted(latest.items(), key=lambda item: item[1]["isa"] != "host"))
    parts = [
        f"{default_run.minutes_seconds(r['total'])} on an {default_run.cpu_words(r)}"
        + ("" if r["isa"] == "host" else f" with XLA {default_run.isa_words(r)}")
        for r in latest.values()
    ]
    return (
        f"It takes {'; '.join(parts)} (package installation not counted; "
        "[the budget](docs/pipeline.md#the-default-runs-time-budget))."
    )


def generated() -> dict[str, tuple[Path, str]]:
    """Every generated block: marker name -> (the file it stands in, its text)."""
    rows, published, records = read_rows(), read_published(), default_run.read_records()
    results_md, pipeline_md = DOCS / "results.md", DOCS / "pipeline.md"
    return {
        "headline table": (README, headline_block(rows, published)),
        "default run time": (README, quickstart_block(records)),
        "results table": (results_md, results_block(rows)),
        "reproduction commands": (results_md, reproduce_block(rows)),
        "published numbers": (results_md, published_block(published)),
        "default run timings": (pipeline_md, default_run.table(records)),
        "default run AIS": (DOCS / "ais.md", default_ais_block(read_metrics("ais"))),
    }


def marker(name: str) -> str:
    return f"<!-- {name}: tools/results.py -->"


def block_in(text: str, name: str) -> str | None:
    """The text of the block ``name`` in ``text``, None where it has no such block."""
    if marker(name) not in text:
        return None
    return text.split(marker(name), 1)[1].split(END, 1)[0].strip()


def stale_blocks() -> list[str]:
    """'file: block' for every generated block that is missing or not current."""
    stale = []
    for name, (path, block) in generated().items():
        if block_in(path.read_text(encoding="utf-8"), name) != block:
            stale.append(f"{path.relative_to(REPO)}: {name}")
    return stale


def rewrite_blocks() -> None:
    for name, (path, block) in generated().items():
        text = path.read_text(encoding="utf-8")
        if marker(name) not in text:
            raise SystemExit(
                f"{path.relative_to(REPO)} has no {marker(name)}: add it, then run again"
            )
        before, rest = text.split(marker(name), 1)
        path.write_text(f"{before}{marker(name)}\n{block}\n{END}{rest.split(END, 1)[1]}", "utf-8")


# per-image estimates that two experiments can be compared on: (file, column, words); a pair
# of columns is their difference per image
PER_IMAGE = [
    (
        "data/estimates/evaluate.csv",
        "log_px",
        "log p(x), IS k = eval_samples from q, every test image",
    ),
    ("data/estimates/evaluate.csv", "elbo", "ELBO, every test image"),
    ("data/estimates/ais.csv", "log_px_ais", "log p(x), AIS"),
    ("data/estimates/ais.csv", "log_px_is", "log p(x), IS k = 5000 from q"),
    (
        "data/estimates/ais.csv",
        ("log_px_ais", "log_px_is"),
        "AIS - IS, how loose IS from q is",
    ),
    ("data/estimates/inference_gap.csv", "log_px", "log p(x), IS from the better of q and q*"),
    ("data/estimates/inference_gap.csv", "log_px_quadrature", "log p(x), quadrature (latent 2)"),
    ("data/estimates/inference_gap.csv", "elbo_amortized", "ELBO[q]"),
    ("data/estimates/inference_gap.csv", "elbo_refined", "ELBO[q*]"),
]


def paired(a: dict[int, float], b: dict[int, float]) -> tuple[int, float, float, float, float]:
    """On the images (keys) both have: their count, the mean of a, of b, of a - b, and the
    standard error of that difference from its spread over the images (nan for one image)."""
    common = sorted(set(a) & set(b))
    if not common:  # a column neither or only one of them has (quadrature beyond latent 2)
        return 0, float("nan"), float("nan"), float("nan"), float("nan")
    differences = [a[i] - b[i] for i in common]
    se = statistics.stdev(differences) / len(common) ** 0.5 if len(common) > 1 else float("nan")
    return (
        len(common),
        statistics.mean(a[i] for i in common),
        statistics.mean(b[i] for i in common),
        statistics.mean(differences),
        se,
    )


def per_image_values(table: list[dict], column: str | tuple[str, str]) -> dict[int, float]:
    """{test image: value} of a column, or of the difference of two, on the rows that have it."""
    first, second = (column, None) if isinstance(column, str) else column
    return {
        int(r["test_index"]): float(r[first]) - (float(r[second]) if second else 0.0)
        for r in table
        if r.get(first) and (second is None or r.get(second))
    }


def git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout


def experiment_ref(name: str, baseline: str | None = None) -> str:
    """The git ref of the experiment called ``name`` (of the commit ``baseline`` where given):
    exactly one, else a one-line error."""
    # not dvc.api.exp_show: it reads every experiment's metrics, of the given commits only
    under = "refs/exps"
    if baseline:
        sha = git("rev-parse", "--verify", f"{baseline}^{{commit}}").strip()
        under += f"/{sha[:2]}/{sha[2:]}"
    refs = git("for-each-ref", "--format=%(refname)", under).split()
    found = [ref for ref in refs if ref.rsplit("/", 1)[-1] == name]
    if len(found) != 1:
        which = "no experiment" if not found else f"{len(found)} experiments ({', '.join(found)})"
        raise SystemExit(f"{which} named {name!r} here: see dvc exp show, or dvc exp pull")
    return found[0]


def per_image(ref: str, path: str) -> list[dict] | None:
    """The experiment's copy of a per-image estimates file, or None where it has none or its
    DVC cache does not hold it (DVC says PathMissingError for both)."""
    import dvc.api
    from dvc.exceptions import DvcException

    try:
        with dvc.api.open(path, repo=str(REPO), rev=ref) as f:
            return list(csv.DictReader(f))
    except (FileNotFoundError, DvcException):
        return None


def stages_not_run(ref: str) -> dict[str, str]:
    """{output path: its stage} for the stages the experiment's run did not run (an experiment
    run up to ``evaluate`` keeps its baseline's later outputs). Not run: its dvc.lock entry
    depends on an output that differs from what the run's stages wrote, or on a param whose
    value is not the run's."""
    stages = yaml.safe_load(git("show", f"{ref}:dvc.lock"))["stages"]
    values = yaml.safe_load(git("show", f"{ref}:params.yaml"))
    written = {out["path"]: out.get("md5") for st in stages.values() for out in st.get("outs", [])}
    not_run = {}
    for name, stage in stages.items():
        deps = stage.get("deps", [])
        used = stage.get("params", {}).get("params.yaml", {})
        if any(
            dep["path"] in written and dep.get("md5") != written[dep["path"]] for dep in deps
        ) or any(values.get(key) != value for key, value in used.items()):
            not_run.update({out["path"]: name for out in stage.get("outs", [])})
    return not_run


def compare(name_a: str, name_b: str) -> list[str]:
    refs = {name: experiment_ref(name) for name in (name_a, name_b)}
    lines = [
        f"A = {name_a}, B = {name_b}: per test image, nats; ± is the paired standard error over"
        " the images (it does not include the spread between seeds)"
    ]
    stale = {name: stages_not_run(ref) for name, ref in refs.items()}
    for path in dict.fromkeys(path for path, _, _ in PER_IMAGE):
        not_run = {name: stale[name].get(path) for name in refs}
        if any(not_run.values()):
            lines.append(
                f"{path}: not a result of "
                + ", ".join(
                    f"{name} (its run did not run {s!r})" for name, s in not_run.items() if s
                )
            )
            continue
        tables = {name: per_image(ref, path) for name, ref in refs.items()}
        if None in tables.values():
            missing = [name for name, table in tables.items() if table is None]
            lines.append(
                f"{path}: not in {', '.join(missing)} or not in this DVC cache"
                " (dvc exp pull REMOTE NAME brings an experiment's outputs)"
            )
            continue
        for _, column, words in (entry for entry in PER_IMAGE if entry[0] == path):
            values = [per_image_values(tables[n], column) for n in (name_a, name_b)]
            n, mean_a, mean_b, difference, se = paired(*values)
            if n:
                lines.append(
                    f"{words} ({n} images): A {mean_a:.3f}, B {mean_b:.3f},"
                    f" A - B {difference:+.3f} ± {se:.3f}"
                )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="action", required=True)
    add = commands.add_parser("add", help="add or replace the row NAME")
    add.add_argument("name")
    add.add_argument("--command", required=True, help="the exact command that produced it")
    add.add_argument("--exp", help="the experiment (dvc exp show); default: the workspace")
    add.add_argument("--rev", help="the commit the experiment is based on (default: any)")
    commands.add_parser("tables", help="rewrite every generated block of README.md and docs/")
    commands.add_parser("check", help="exit 1 if a generated block is not current")
    pair = commands.add_parser("compare", help="two experiments, image by image")
    pair.add_argument("a", help="an experiment's name (dvc exp show)")
    pair.add_argument("b", help="the other experiment's name")
    args = parser.parse_args()
    if args.action == "compare":
        print("\n".join(compare(args.a, args.b)))
        return
    rows = read_rows()
    if args.action == "add":
        params, metrics = params_and_metrics(
            experiment_ref(args.exp, args.rev) if args.exp else None
        )
        row = row_from(params, metrics, args.name, args.command)
        names = [r["name"] for r in rows]
        if args.name in names:  # replaced where it stands
            rows[names.index(args.name)] = row
        else:
            rows.append(row)
        write_rows(rows)
        print(f"{RESULTS.relative_to(REPO)}: {args.name}: test log p(x) {row['test_log_px']}")
    elif args.action == "tables":
        rewrite_blocks()
    elif stale := stale_blocks():
        raise SystemExit(f"not current: {', '.join(stale)}: run python tools/results.py tables")


if __name__ == "__main__":
    main()
