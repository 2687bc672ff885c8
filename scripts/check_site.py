"""Check `site/`: every local link and anchor resolves, every image is there and decodes.

    python scripts/check_site.py [--site site] [--browser auto|always|never]

Two checks. The file check (always) parses each page: `<a href>` targets exist on disk (with their `#anchor`),
`<img src>` files exist and `data:` images decode to a known image format. The browser check opens each page in
headless Chromium (Debian's `chromium` package) and reads the DOM after load: the page's own probe counts images
the browser failed to decode, and the links are checked again on the rendered DOM. `--browser auto` (default)
runs it when `chromium` is on PATH and says so when it is not. Exits 1 and lists every problem on failure.
"""
from __future__ import annotations

import argparse
import base64
import binascii
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parents[1]
IMAGE_MAGIC = {b"\x89PNG": "png", b"\xff\xd8\xff": "jpeg", b"GIF8": "gif", b"<svg": "svg", b"<?xm": "svg"}
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


class PageParser(HTMLParser):
    """Collects the links, images and element ids of one HTML page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []
        self.images: list[str] = []
        self.ids: set[str] = set()
        self.body_attrs: dict[str, str] = {}

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("name"):
            self.ids.add(attrs["name"])
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])
        if tag == "img":
            self.images.append(attrs.get("src") or "")
        if tag == "body":
            self.body_attrs = {k: v or "" for k, v in attrs.items()}


def parse(text: str) -> PageParser:
    parser = PageParser()
    parser.feed(text)
    return parser


def pages(site: Path) -> list[Path]:
    """Every HTML page of the site."""
    found = sorted(site.rglob("*.html"))
    if not found:
        raise SystemExit(f"{site}: no HTML pages; build the site first (make site)")
    return found


def image_problem(src: str, page: Path) -> str | None:
    """Why an `<img src>` would not show, or None."""
    if not src:
        return "an <img> without src"
    if src.startswith("data:"):
        header, _, payload = src.partition(",")
        try:
            raw = base64.b64decode(payload[:200].ljust(len(payload[:200]) // 4 * 4, "="), validate=False) \
                if ";base64" in header else unquote(payload[:200]).encode()
        except (binascii.Error, ValueError):
            return f"data: image that is not valid base64 ({header})"
        return None if any(raw.startswith(m) for m in IMAGE_MAGIC) else f"data: image of unknown format ({header})"
    if re.match(r"^[a-z]+:", src):
        return None  # remote: not checked offline
    target = (page.parent / unquote(src.split("#")[0])).resolve()
    return None if target.is_file() else f"image {src} not found"


def link_problem(href: str, page: Path, ids_of) -> str | None:
    """Why an `<a href>` would be broken, or None (remote links are not checked: the site must work offline)."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", href):
        return None
    path, _, fragment = href.partition("#")
    target = (page.parent / unquote(path)).resolve() if path else page.resolve()
    if target.is_dir():
        target = target / "index.html"
    if not target.exists():
        return f"link {href}: {target.name} not found"
    if fragment and target.suffix == ".html" and not {fragment, unquote(fragment)} & ids_of(target):
        return f"link {href}: no element with id {fragment!r} in {target.name}"
    if target.suffix in (".ipynb", ".md"):
        return f"link {href}: points at a source file, not at its page (.html)"
    return None


def check_files(site: Path) -> list[str]:
    """The file check: links, anchors and images of every page, on disk."""
    cache: dict[Path, PageParser] = {}

    def parsed(path: Path) -> PageParser:
        if path not in cache:
            cache[path] = parse(path.read_text(encoding="utf-8"))
        return cache[path]

    problems = []
    for page in pages(site):
        p = parsed(page)
        name = page.relative_to(site).as_posix()
        problems += [f"{name}: {m}" for m in (image_problem(s, page) for s in p.images) if m]
        problems += [f"{name}: {m}" for m in (link_problem(h, page, lambda t: parsed(t).ids) for h in p.links) if m]
    return problems


def browser() -> str | None:
    """The headless browser on PATH, if any."""
    return next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)


def dump_dom(binary: str, page: Path, timeout: int = 60) -> str:
    """The page's DOM after load, as headless Chromium renders it."""
    cmd = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
           "--virtual-time-budget=5000", "--dump-dom", page.resolve().as_uri()]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0 or "<body" not in out.stdout:
        raise RuntimeError(f"{binary} could not render {page}: {out.stderr.strip()[-400:]}")
    return out.stdout


def check_browser(site: Path, binary: str) -> list[str]:
    """The browser check: each page rendered by Chromium, its image probe and its links on the live DOM."""
    problems = []
    doms = {page: parse(dump_dom(binary, page)) for page in pages(site)}
    for page, dom in doms.items():
        name = page.relative_to(site).as_posix()
        broken = dom.body_attrs.get("data-broken-images")
        if broken is None:
            problems.append(f"{name}: the image probe did not run (page not loaded?)")
        elif broken != "0":
            problems.append(f"{name}: {broken} image(s) failed to load in the browser")
        ids_of = lambda t: doms[t].ids if t in doms else parse(t.read_text(encoding="utf-8")).ids  # noqa: E731
        problems += [f"{name}: {m}" for m in (link_problem(h, page, ids_of) for h in dom.links) if m]
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--site", default=str(ROOT / "site"))
    parser.add_argument("--browser", choices=("auto", "always", "never"), default="auto")
    args = parser.parse_args(argv)
    site = Path(args.site)
    problems = check_files(site)
    print(f"file check: {len(pages(site))} pages, {len(problems)} problem(s)")
    binary = browser()
    if args.browser == "always" and binary is None:
        print("browser check: no chromium on PATH (apt-get install chromium)", file=sys.stderr)
        return 1
    if args.browser != "never" and binary:
        found = check_browser(site, binary)
        print(f"browser check ({Path(binary).name}): {len(found)} problem(s)")
        problems += found
    elif args.browser == "auto":
        print("browser check skipped: no chromium on PATH (apt-get install chromium)")
    for problem in problems:
        print("  " + problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
