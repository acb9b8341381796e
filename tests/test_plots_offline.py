"""`dvc plots show` and `dvc plots diff` pages render every declared plot with no network.

.dvc/config points `plots.html_template` at .dvc/plots/vega_offline.html, which inlines vega,
vega-lite and vega-embed (tools/build_plots_template.py) instead of loading them from a CDN.
In a temporary git repository holding this project's files, plain `dvc plots show` and
`dvc plots diff main other` write their pages; headless Chromium opens a copy of each page with
name resolution disabled and a proxy that goes nowhere, and with a Content-Security-Policy that
admits only file:, data: and blob: URLs, so any http(s) request is reported (and blocked). A probe
script injected into the copy waits for every vegaEmbed call and image, then writes a summary
into the DOM, read back with --dump-dom. The test proves that each plot declared in dvc.yaml is
on the page: a drawn <svg>/<canvas> per Vega plot, one loaded image per revision per image plot,
and that no error was raised or logged and no http(s) URL was requested.
"""

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dvc_render.base import Renderer
from dvc_render.image import ImageRenderer

from tests.conftest import REPO, git_repository_env

pytestmark = pytest.mark.pipeline

CHROMIUM = "/usr/bin/chromium"
# Chromium without network: no host name resolves, every request goes to a closed local port,
# and nothing runs in the background (updates, sync, safe browsing).
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--no-first-run",
    "--no-default-browser-check",
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--proxy-server=127.0.0.1:9",
    "--virtual-time-budget=20000",
    "--window-size=1280,5600",
]
CSP = "default-src file: data: blob: 'unsafe-inline' 'unsafe-eval'"

# The start of every probe (run first in <head>): ``probe`` collects errors (console.error,
# uncaught ones, unhandled rejections, failed loads) and blocked requests; ``writeProbe()`` adds
# every request for other than a file:, data: or blob: URL and writes ``probe`` as JSON into
# <script id="probe-result">, for --dump-dom.
PROBE_START = """
  var probe = {errors: [], requests: []};
  function text(value) { return value && value.stack ? String(value.stack) : String(value); }
  var consoleError = console.error;
  console.error = function () {
    probe.errors.push("console.error: " + Array.prototype.map.call(arguments, text).join(" "));
    return consoleError.apply(console, arguments);
  };
  window.addEventListener("error", function (event) {
    var source = event.target && event.target !== window && event.target.src;
    probe.errors.push(source ? "failed to load " + source
                             : "uncaught: " + (event.error ? text(event.error) : event.message));
  }, true);
  window.addEventListener("unhandledrejection", function (event) {
    probe.errors.push("unhandled rejection: " + text(event.reason));
  });
  document.addEventListener("securitypolicyviolation", function (event) {
    probe.requests.push(event.blockedURI);
  });
  function writeProbe() {
    performance.getEntriesByType("resource").forEach(function (entry) {
      if (!/^(file|data|blob):/i.test(entry.name)) probe.requests.push(entry.name);
    });
    var node = document.createElement("script");
    node.type = "application/json";
    node.id = "probe-result";
    node.textContent = JSON.stringify(probe).replace(/</g, "\\\\u003c");
    document.body.appendChild(node);
  }
"""

# The plots pages' probe: wraps vegaEmbed to wait for every plot, and after the load event
# reports each plot's drawn marks and loaded images.
PROBE = (
    "(function () {"
    + PROBE_START
    + """
  probe.embeds = 0;
  probe.plots = {};
  var pending = [];
  var embed;
  Object.defineProperty(window, "vegaEmbed", {
    configurable: true,
    get: function () { return embed; },
    set: function (real) {
      embed = Object.assign(function () {
        var result = real.apply(this, arguments);
        probe.embeds += 1;
        pending.push(result.catch(function () {}));
        return result;
      }, real);
    }
  });
  function drawn(element) {
    var box = element.getBoundingClientRect();
    return box.width > 0 && box.height > 0;
  }
  function report() {
    document.querySelectorAll("body div[id]").forEach(function (div) {
      var marks = div.querySelectorAll("svg.marks, canvas.marks");
      probe.plots[div.id] = {
        marks: Array.prototype.filter.call(marks, drawn).length,
        images: Array.prototype.map.call(div.querySelectorAll("img"), function (img) {
          return {src: img.getAttribute("src"), loaded: img.complete && img.naturalWidth > 0};
        })
      };
    });
    writeProbe();
  }
  window.addEventListener("load", function () {
    Promise.all(pending).then(function () { setTimeout(report, 0); });
  });
})();
"""
)


def run(command: list, cwd: Path, env: dict | None = None, timeout: int = 120) -> str:
    result = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, command))} failed ({result.returncode}):\n"
            f"{result.stdout}\n{result.stderr}"
        )
    return result.stdout


def apt_get(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    return subprocess.run(["apt-get", *args], env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's Chromium, installed with apt-get when missing and running as root."""
    if os.path.exists(CHROMIUM):
        return CHROMIUM
    if not shutil.which("apt-get") or os.geteuid() != 0:
        pytest.skip(f"{CHROMIUM} is missing and cannot be installed (needs apt-get and root)")
    # one installer at a time: the test workers (pytest -n 2) may both get here
    with open("/tmp/vae-mnist-tests-chromium.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.exists(CHROMIUM):
            return CHROMIUM
        installed = apt_get("install", "-y", "chromium")
        if installed.returncode != 0:  # package lists missing or stale
            apt_get("update")
            installed = apt_get("install", "-y", "chromium")
    if installed.returncode != 0 or not os.path.exists(CHROMIUM):
        pytest.skip(f"apt-get install chromium failed: {installed.stderr.strip()[-500:]}")
    return CHROMIUM


def project_files() -> list[str]:
    """This repository's files as git sees them: tracked, plus new ones not ignored."""
    listed = run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], REPO)
    return [name for name in listed.splitlines() if (REPO / name).is_file()]


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A git repository with this project's files on branch main, and branch other that
    changes one value of the validation ELBO curve. Returns (path, environment)."""
    path = tmp_path_factory.mktemp("plots") / "repo"
    for name in project_files():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, path / name)
    env = git_repository_env()
    run(["git", "init", "-q", "-b", "main"], path, env)
    run([sys.executable, "-m", "dvc", "config", "--local", "core.check_update", "false"], path, env)
    run(["git", "add", "-A"], path, env)
    run(["git", "commit", "-qm", "project"], path, env)
    run(["git", "checkout", "-qb", "other"], path, env)
    curve = path / "dvclive/plots/metrics/valid/elbo.tsv"
    lines = curve.read_text().splitlines()
    step, value = lines[-1].split("\t")
    lines[-1] = f"{step}\t{float(value) - 5}"
    curve.write_text("\n".join(lines) + "\n")
    run(["git", "commit", "-qam", "a worse last validation ELBO"], path, env)
    run(["git", "checkout", "-q", "main"], path, env)
    return path, env


def declared_plots(repo: Path) -> dict[str, str]:
    """Each plot dvc.yaml declares (top level and stage outputs), by the id of its <div> on the
    page: 'image' for image files, 'vega' for everything else. Directories give one plot per
    file."""
    dvc_yaml = yaml.safe_load((repo / "dvc.yaml").read_text())
    entries = list(dvc_yaml.get("plots") or [])
    for stage in (dvc_yaml.get("stages") or {}).values():
        entries += stage.get("plots") or []
    plots = {}
    for entry in entries:
        name = entry if isinstance(entry, str) else next(iter(entry))
        names = [name]
        if (repo / name).is_dir():
            files = sorted(p for p in (repo / name).rglob("*") if p.is_file())
            names = [p.relative_to(repo).as_posix() for p in files]
        for name in names:
            kind = "image" if ImageRenderer.matches(name) else "vega"
            plots[Renderer.remove_special_chars(name)] = kind
    assert plots, "dvc.yaml declares no plots"
    return plots


def open_offline(
    chromium: str, page: Path, screenshot: Path, probe: str = PROBE, window_size: str = ""
) -> dict:
    """Open a copy of ``page`` in Chromium with no network, ``probe`` (a script that ends by
    calling ``writeProbe()``) run first in it; the probe's findings. ``window_size`` ("W,H")
    replaces CHROMIUM_FLAGS' own."""
    html = page.read_text(encoding="utf-8")
    probed = page.with_name("probed.html")
    head = (
        f'<head>\n<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
        f"<script>{probe}</script>"
    )
    probed.write_text(html.replace("<head>", head, 1), encoding="utf-8")
    flags = [f for f in CHROMIUM_FLAGS if not (window_size and f.startswith("--window-size="))]
    command = [
        chromium,
        *flags,
        *([f"--window-size={window_size}"] if window_size else []),
        f"--user-data-dir={page.parent / 'chromium-profile'}",
        f"--screenshot={screenshot}",
        "--dump-dom",
        probed.as_uri(),
    ]
    dom = run(command, page.parent, timeout=120)
    found = re.search(r'<script type="application/json" id="probe-result">(.*?)</script>', dom)
    assert found, f"the probe did not report; is the page broken?\n{dom[-2000:]}"
    return json.loads(found.group(1))


def check_page(chromium: str, page: Path, revisions: list[str], repo: Path) -> None:
    html = page.read_text(encoding="utf-8")
    assert not re.search(r"<script[^>]+src=", html), "the page loads a script from elsewhere"
    assert "cdn.jsdelivr" not in html
    probe = open_offline(chromium, page, page.with_name("screenshot.png"))
    assert probe["errors"] == []
    assert probe["requests"] == []
    plots = declared_plots(repo)
    assert probe["embeds"] == list(plots.values()).count("vega")
    for div, kind in plots.items():
        assert div in probe["plots"], f"plot {div} is not on the page"
        shown = probe["plots"][div]
        if kind == "vega":
            assert shown["marks"] == 1, f"plot {div} was not drawn: {shown}"
        else:
            assert len(shown["images"]) == len(revisions), f"plot {div}: {shown}"
            for image, revision in zip(shown["images"], revisions):
                assert image["loaded"], f"image {image['src']} did not load"
                assert os.path.basename(image["src"]).startswith(revision), image


def test_plots_show_renders_every_declared_plot_offline(repo, chromium):
    path, env = repo
    out = run([sys.executable, "-m", "dvc", "plots", "show"], path, env)
    page = path / "dvc_plots" / "index.html"
    assert page.as_uri() in out
    check_page(chromium, page, ["workspace"], path)


def test_plots_diff_renders_both_revisions_of_every_declared_plot_offline(repo, chromium, tmp_path):
    path, env = repo
    run([sys.executable, "-m", "dvc", "plots", "diff", "main", "other", "-o", tmp_path], path, env)
    page = tmp_path / "index.html"
    html = page.read_text(encoding="utf-8")
    assert '"rev": "main"' in html and '"rev": "other"' in html
    check_page(chromium, page, ["main", "other"], path)
