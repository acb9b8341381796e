"""The default run's time budget: `dvc repro -f` of the checked-out commit's params in a fresh
clone, every stage computed, timed stage by stage.

    python benchmarks/default_run.py               # this CPU, as it is
    python benchmarks/default_run.py --isa AVX2    # XLA capped at AVX2, as on an AVX2-only CPU
    python benchmarks/default_run.py --table       # print the Markdown table of the records

A run clones HEAD into a temporary directory (uncommitted changes are not measured), copies the
verified downloads of data/downloads/ so that no download is timed, runs `dvc repro -f` there
and appends one row to benchmarks/default_run.csv: the date, the CPU, the instruction-set cap,
the commit and the seconds of each stage, from DVC's "Running stage" line to the next (a stage's
time includes its Python start-up and DVC's hashing of its outputs). Package installation is not
part of it. The clone is removed afterwards. `--isa AVX2` sets XLA_FLAGS=--xla_cpu_max_isa=AVX2,
which approximates an AVX2-only CPU (docs/reproducibility.md says how far); its networks differ
from the committed ones, as on such a CPU.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from latent.plumbing import devices  # noqa: E402
from latent.plumbing.pipeline import stages  # noqa: E402

RECORDS = REPO / "benchmarks" / "default_run.csv"
FIXED = ["date", "cpu", "vector", "isa", "commit"]


def columns() -> list[str]:
    return FIXED + list(stages()) + ["total"]


def timed_repro(clone: Path, env: dict) -> dict[str, float]:
    """Seconds per stage of `dvc repro -f` in ``clone``; the output goes to this terminal."""
    command = [sys.executable, "-m", "dvc", "repro", "-f"]
    process = subprocess.Popen(
        command, cwd=clone, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    seconds, current, started = {}, None, time.monotonic()
    begin = started
    for line in process.stdout:
        sys.stdout.write(line)
        found = re.match(r"Running stage '(\w+)'", line)
        if found:
            now = time.monotonic()
            if current:
                seconds[current] = now - started
            current, started = found.group(1), now
    if process.wait() != 0:
        raise SystemExit(f"dvc repro -f failed with exit status {process.returncode}")
    end = time.monotonic()
    if current:
        seconds[current] = end - started
    seconds["total"] = end - begin
    return seconds


def vector_instructions() -> str:
    """The widest x86 vector instruction set the CPU has (from /proc/cpuinfo's flags)."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return "unknown"
    return "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "other"


def cpu_words(row: dict[str, str]) -> str:
    """'Intel Xeon (2 threads, AVX-512)' from a record."""
    name = re.sub(r"\(R\)|\(TM\)| Processor|^CPU: ", "", row["cpu"]).strip()
    return f"{name[:-1]}, {row['vector']})" if name.endswith(")") else f"{name} ({row['vector']})"


def minutes_seconds(seconds: str) -> str:
    """'7 min 05 s' from a record's whole seconds."""
    total = int(seconds)
    return f"{total // 60} min {total % 60:02d} s"


def isa_words(row: dict[str, str]) -> str:
    return "as the CPU has" if row["isa"] == "host" else f"capped at {row['isa']}"


def record(isa: str | None) -> dict[str, str]:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    env = dict(os.environ)
    if isa:
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_cpu_max_isa={isa}".strip()
    with tempfile.TemporaryDirectory() as directory:
        clone = Path(directory) / "clone"
        subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
        downloads = REPO / "data" / "downloads"
        if downloads.is_dir():
            shutil.copytree(downloads, clone / "data" / "downloads")
        seconds = timed_repro(clone, env)
    row = {
        "date": datetime.date.today().isoformat(),
        "cpu": devices.describe(),
        "vector": vector_instructions(),
        "isa": isa or "host",
        "commit": commit,
        **{name: f"{value:.0f}" for name, value in seconds.items()},
    }
    new = not RECORDS.exists()
    with RECORDS.open("a", newline="") as file:
        writer = csv.DictWriter(file, columns(), lineterminator="\n", restval="")
        if new:
            writer.writeheader()
        writer.writerow(row)
    return row


def read_records() -> list[dict[str, str]]:
    with RECORDS.open(newline="") as file:
        return list(csv.DictReader(file))


def table(rows: list[dict[str, str]]) -> str:
    """Markdown: a row per record, seconds per stage and the total in minutes and seconds."""
    names = [name for name in stages() if any(row.get(name) for row in rows)]
    head = ["date", "CPU", "XLA's vector instructions", *names, "total"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row["date"], cpu_words(row), isa_words(row), *(row.get(s) or "–" for s in names)]
        lines.append("| " + " | ".join([*cells, minutes_seconds(row["total"])]) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--isa", help="cap XLA's CPU instruction set, e.g. AVX2")
    parser.add_argument("--table", action="store_true", help="print the records as Markdown")
    args = parser.parse_args()
    if args.table:
        print(table(read_records()))
        return
    row = record(args.isa)
    print(f"default run on {row['cpu']} ({row['isa']}): {row['total']} s; wrote {RECORDS}")


if __name__ == "__main__":
    main()
