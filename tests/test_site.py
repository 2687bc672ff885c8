"""`make site`: the executed notebooks as static HTML; every link, anchor and image resolves (on disk, and in
headless Chromium when it is installed)."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"


def run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPTS / script), *args], capture_output=True, text=True,
                          timeout=600, cwd=ROOT)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site") / "site"
    built = run("build_site.py", "--out", str(out))
    assert built.returncode == 0, built.stderr
    return out


def test_the_site_has_an_index_every_notebook_and_the_docs(site):
    pages = {p.relative_to(site).as_posix() for p in site.rglob("*.html")}
    notebooks = {f"notebooks/{p.stem}.html" for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")}
    assert {"index.html", "README.html", "docs/paper.html", "data/README.html"} | notebooks <= pages
    index = (site / "index.html").read_text()
    assert all(f'href="{n}"' in index for n in notebooks)


def test_notebook_pages_embed_their_figures_and_link_pages_not_sources(site):
    page = (site / "notebooks" / "01_data_exploration.html").read_text()
    assert page.count("data:image/png;base64,") >= 3
    assert 'href="../docs/paper.html#' in page and ".ipynb\"" not in page


def test_file_check_passes(site):
    checked = run("check_site.py", "--site", str(site), "--browser", "never")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_file_check_finds_a_broken_link_and_a_missing_image(site, tmp_path):
    broken = tmp_path / "site"
    shutil.copytree(site, broken)
    index = broken / "index.html"
    index.write_text(index.read_text().replace("</body>", '<a href="nope.html">x</a><img src="gone.png"></body>'))
    (broken / "docs" / "paper.html").unlink()
    checked = run("check_site.py", "--site", str(broken), "--browser", "never")
    assert checked.returncode == 1
    assert "nope.html not found" in checked.stderr and "gone.png not found" in checked.stderr
    assert "paper.html not found" in checked.stderr


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium not on PATH (apt-get install chromium)")
def test_browser_check_passes(site):
    checked = run("check_site.py", "--site", str(site), "--browser", "always")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "browser check (chromium): 0 problem(s)" in checked.stdout
