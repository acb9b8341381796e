"""Inline vega, vega-lite and vega-embed into the offline page for `dvc plots show` / `diff`.

DVC's default page loads vega, vega-lite and vega-embed from a CDN, so without internet every
Vega plot is blank. .dvc/config points `plots.html_template` at .dvc/plots/vega_offline.html,
whose page (head, style, the {plot_divs} and {refresh_tag} placeholders DVC fills) is written by
hand in that file and lives nowhere else. Between its two marker comments, BEGIN and END below,
this script writes the minified browser builds of the pinned packages, installed from the npm
registry into a temporary directory, each preceded by a comment naming package, version and
sha256, the package's licence and the licences of the third-party packages bundled into that
build (read from the build's source map). Everything outside the markers is kept byte for byte.

Re-run after changing PINS (needs node/npm and the npm registry; nothing else):

    python tools/build_plots_template.py
"""

import hashlib
import json
import re
import subprocess
import tempfile
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUTPUT = REPO / ".dvc" / "plots" / "vega_offline.html"

# The major versions dvc-render's default page loads (vega@5, vega-lite@5, vega-embed@6): its
# templates emit Vega-Lite v5 specs. Latest releases of those majors when this was written.
PINS = {"vega": "5.33.1", "vega-lite": "5.23.0", "vega-embed": "6.29.0"}

# The marker comments in the page; the builds go between them. The page has no {scripts}
# placeholder on purpose: DVC would fill it with the CDN <script> tags.
BEGIN = "<!-- BEGIN libraries inlined by tools/build_plots_template.py: do not edit by hand -->"
END = "<!-- END libraries inlined by tools/build_plots_template.py -->"

FORBIDDEN = ("</script", "<!--", "{plot_divs}", "{scripts}", "{refresh_tag}")


def npm_install(directory: Path) -> Path:
    """node_modules with the pinned packages and their dependencies, from the npm registry."""
    specs = [f"{name}@{version}" for name, version in PINS.items()]
    # A package.json of its own, so that npm does not install into a parent directory's project.
    (directory / "package.json").write_text('{"private": true}\n', encoding="utf-8")
    subprocess.run(
        ["npm", "install", "--ignore-scripts", "--no-audit", "--no-fund", "--save-exact", *specs],
        cwd=directory,
        check=True,
    )
    return directory / "node_modules"


def package_dir(modules: Path, name: str, parent: str | None = None) -> Path:
    """Where npm put ``name``: nested under ``parent`` if it has its own copy, else top level."""
    if parent and (modules / parent / "node_modules" / name).is_dir():
        return modules / parent / "node_modules" / name
    return modules / name


def wrap(text: str) -> list[str]:
    return textwrap.wrap(text, 92, break_on_hyphens=False)


def licence_text(directory: Path) -> str | None:
    for candidate in sorted(directory.iterdir()):
        if re.fullmatch(r"(?i)licen[cs]e(\.md|\.txt)?", candidate.name):
            return candidate.read_text(encoding="utf-8").strip()
    return None


def bundled_packages(source_map: Path) -> list[str]:
    """The npm packages whose code a build bundles, from the paths in its source map."""
    names = set()
    for source in json.loads(source_map.read_text(encoding="utf-8"))["sources"]:
        if "node_modules/" in source:
            names.add(re.findall(r"node_modules/((?:@[^/]+/)?[^/]+)", source)[-1])
        elif match := re.match(r"(?:\.\./)+(vega-[\w-]+)/", source):  # vega's monorepo siblings
            names.add(match.group(1))
    return sorted(names)


def notice(modules: Path, name: str) -> str:
    """The comment placed before a build: package, version, checksum and licences."""
    directory = modules / name
    meta = json.loads((directory / "package.json").read_text(encoding="utf-8"))
    if meta["version"] != PINS[name]:
        raise SystemExit(f"npm installed {name}@{meta['version']}, not {PINS[name]}")
    build = directory / "build" / f"{name}.min.js"
    digest = hashlib.sha256(build.read_bytes()).hexdigest()
    own = licence_text(directory)
    lines = [
        f"{name} {meta['version']}: build/{build.name} of the npm package {name}@{meta['version']}",
        f"(sha256 {digest}). Licence: {meta['license']}.",
    ]
    # Group the bundled packages by licence text so that each text appears once.
    by_text: dict[str, list[str]] = {}
    without_file = []
    for bundled in bundled_packages(build.with_name(build.name + ".map")):
        bundled_dir = package_dir(modules, bundled, parent=name)
        bundled_meta = json.loads((bundled_dir / "package.json").read_text(encoding="utf-8"))
        label = f"{bundled}@{bundled_meta['version']} ({bundled_meta.get('license', '?')})"
        if text := licence_text(bundled_dir):
            by_text.setdefault(text, []).append(label)
        else:
            without_file.append(label)
    if own:
        lines += ["", *own.splitlines()]
    else:
        lines += ["", f"The {name} npm package ships no licence file (see its bundled vega-*"]
        lines += ["packages below, from the same repository)."]
    if by_text or without_file:
        lines += ["", "This build bundles code from the following packages (versions as npm"]
        lines += [f"resolves them for {name}@{meta['version']}), under these licences:"]
        for text, labels in by_text.items():
            lines += ["", *wrap("----- " + ", ".join(labels)), "", *text.splitlines()]
    if without_file:
        listed = "----- No licence file in the npm package; licence as its package.json says: "
        lines += ["", *wrap(listed + ", ".join(without_file))]
    body = "\n".join(f" * {line}".rstrip() for line in lines)
    return f"/*!\n{body}\n */"


def script(modules: Path, name: str) -> str:
    code = (modules / name / "build" / f"{name}.min.js").read_text(encoding="utf-8").strip()
    header = notice(modules, name)
    for forbidden in FORBIDDEN:
        if forbidden in code.lower() or forbidden in header.lower():
            raise SystemExit(f"{name}: cannot inline a build or notice holding {forbidden!r}")
    if "*/" in header[3:-3]:
        raise SystemExit(f"{name}: a licence text would end the comment early")
    return f"    <!-- {name} {PINS[name]} -->\n    <script>\n{header}\n{code}\n    </script>"


def split(page: str) -> tuple[str, str, str]:
    """``page`` as (what precedes the block, the inlined block, what follows it)."""
    opening, closing = BEGIN + "\n", "\n    " + END
    counts = page.count(opening), page.count(closing)
    if counts != (1, 1) or page.find(opening) > page.find(closing):
        raise SystemExit(
            f"{OUTPUT}: expected one {BEGIN!r} line before one {END!r} line indented by 4 spaces"
        )
    head, rest = page.split(opening)
    scripts, tail = rest.split(closing)
    return head, scripts, tail


def inline(page: str, scripts: str) -> str:
    """``page`` with what stands between its BEGIN and END lines replaced by ``scripts``."""
    head, _, tail = split(page)
    return f"{head}{BEGIN}\n{scripts}\n    {END}{tail}"


def main() -> None:
    page = OUTPUT.read_text(encoding="utf-8")  # checked before the slow npm install
    inline(page, "")
    with tempfile.TemporaryDirectory() as temporary:
        modules = npm_install(Path(temporary))
        scripts = "\n".join(script(modules, name) for name in PINS)
    OUTPUT.write_text(inline(page, scripts), encoding="utf-8")
    print(f"wrote {OUTPUT.relative_to(REPO)} ({OUTPUT.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
