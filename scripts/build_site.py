"""Build `site/`: the executed notebooks as static HTML, with their outputs and figures, browsable without Jupyter.

    python scripts/build_site.py [--out site]

Layout mirrors the repository, so relative links keep working once `.ipynb` and `.md` become `.html`:
`site/index.html` (the notebook map), `site/notebooks/NN_*.html`, `site/README.html`, `site/docs/paper.html`,
`site/data/README.html`. Figures are embedded in the pages (data: URIs), so the folder can be copied anywhere.
"""
from __future__ import annotations

import argparse
import html
import json
import posixpath
import re
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = ["README.md", "docs/paper.md", "data/README.md"]  # rendered beside the notebooks
STYLE = """
body { max-width: 1100px; margin: 0 auto; padding: 0 1.2rem 3rem; font: 15px/1.5 system-ui, sans-serif; }
nav.site { position: sticky; top: 0; background: #fff; border-bottom: 1px solid #ddd; padding: .5rem 0;
           z-index: 10; font-size: 14px; }
nav.site a { margin-right: .9rem; }
table { border-collapse: collapse; margin: .8rem 0; display: block; overflow-x: auto; }
th, td { border: 1px solid #ccc; padding: .25rem .5rem; text-align: left; vertical-align: top; }
pre, code { font-size: 13px; } pre { background: #f6f8fa; padding: .6rem; overflow-x: auto; }
.jp-OutputArea-output table, .jp-RenderedHTMLCommon table { display: block; overflow-x: auto; max-width: 100%; }
img { max-width: 100%; }
"""
# After load, a real browser records how many images failed to decode (scripts/check_site.py reads it).
IMAGE_PROBE = """<script>window.addEventListener("load", function () {
  var bad = Array.prototype.filter.call(document.images, function (i) { return !i.complete || !i.naturalWidth; });
  document.body.setAttribute("data-broken-images", String(bad.length));
});</script>"""


def notebooks() -> list[Path]:
    """The tutorial notebooks in reading order."""
    return sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def rewrite_href(href: str) -> str:
    """A repository link as it must read in the site: `.ipynb` and `.md` pages become `.html`.

    >>> rewrite_href("02_semantic_ids.ipynb"), rewrite_href("../docs/paper.md#the-task"), rewrite_href("https://x.md")
    ('02_semantic_ids.html', '../docs/paper.html#the-task', 'https://x.md')
    """
    if re.match(r"^[a-z][a-z0-9+.-]*:", href) or href.startswith("#"):
        return href
    path, sep, fragment = href.partition("#")
    path = re.sub(r"\.(ipynb|md)$", ".html", path)
    return path + sep + fragment


def rewrite_links(page: str) -> str:
    """Every `href="..."` of an HTML page through `rewrite_href`."""
    return re.sub(r'href="([^"]*)"', lambda m: f'href="{rewrite_href(html.unescape(m.group(1)))}"', page)


def slug(text: str) -> str:
    """GitHub's anchor for a heading, so `paper.md#...` links work in the site as they do on GitHub.

    >>> slug("3. Context utilization: progressive GRPO")
    '3-context-utilization-progressive-grpo'
    """
    text = re.sub(r"<[^>]+>", "", html.unescape(text)).strip().lower()
    return re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", text))


def add_heading_ids(page: str) -> str:
    """`<h2>Title</h2>` -> `<h2 id="title">Title</h2>` (headings that have no id yet)."""
    return re.sub(r"<h([1-6])>(.*?)</h\1>", lambda m: f'<h{m.group(1)} id="{slug(m.group(2))}">{m.group(2)}</h{m.group(1)}>',
                  page)


def nav(depth: int) -> str:
    """The bar on top of every page: home, README, the paper, each notebook."""
    up = "../" * depth
    links = [("index.html", "Home"), ("README.html", "README"), ("docs/paper.html", "The paper")]
    links += [(f"notebooks/{p.stem}.html", p.stem[:2]) for p in notebooks()]
    return '<nav class="site">' + "".join(f'<a href="{up}{h}">{html.escape(t)}</a>' for h, t in links) + "</nav>"


def page(title: str, body: str, depth: int) -> str:
    """A complete HTML page around rendered markdown."""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head>\n<body>{nav(depth)}\n{body}\n{IMAGE_PROBE}</body></html>\n")


def markdown_html(text: str) -> str:
    """Markdown (GitHub flavour: tables) to HTML, headings with GitHub's ids."""
    from markdown_it import MarkdownIt

    return add_heading_ids(MarkdownIt("commonmark", {"html": True}).enable("table").render(text))


def link_notebook_names(source: str) -> str:
    """Markdown that names a notebook as code (`` `02_semantic_ids.ipynb` ``) links to it."""
    known = {p.name for p in notebooks()}
    return re.sub(r"(?<!\[)`(\d\d_\w+\.ipynb)`(?!\])",
                  lambda m: f"[`{m.group(1)}`]({m.group(1)})" if m.group(1) in known else m.group(0), source)


def notebook_html(path: Path) -> str:
    """One executed notebook with its outputs (figures embedded), links rewritten, the site's bar on top."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = link_notebook_names(cell.source)
    exporter = HTMLExporter(template_name="lab")
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": path.stem}})
    body = body.replace("</head>", f"<style>{STYLE}</style></head>", 1)
    body = re.sub(r"(<body[^>]*>)", lambda m: m.group(1) + nav(1), body, count=1)
    body = body.replace("</body>", IMAGE_PROBE + "</body>", 1)
    return rewrite_links(body)


def notebook_summary(path: Path) -> tuple[str, str]:
    """(title, first paragraph) of a notebook's first markdown cell, for the index."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    text = "".join(next(c for c in cells if c["cell_type"] == "markdown")["source"])
    title, _, rest = text.partition("\n")
    paragraph = rest.strip().split("\n\n")[0]
    paragraph = paragraph[:-1] + " ..." if paragraph.endswith(":") else paragraph  # it introduced a list
    return title.lstrip("# ").strip(), paragraph


def index_html() -> str:
    """The home page: what this is, and the notebook map with a link to each notebook."""
    rows = []
    for path in notebooks():
        title, paragraph = notebook_summary(path)
        paragraph = re.sub(r"\]\((?![a-z]+:|#)([^)]+)\)", lambda m: f"]({posixpath.normpath('notebooks/' + m.group(1))})",
                           paragraph)  # its links are relative to notebooks/
        rows.append(f"| [{path.stem}](notebooks/{path.name}) | **{title}** {paragraph.replace(chr(10), ' ')} |")
    text = "\n".join([
        "# conrec: CoNRec, LLM-based negative recommendation, as runnable notebooks",
        "",
        "The executed tutorial notebooks, with their outputs and figures, rendered to static pages. "
        "Start with the [README](README.md) (setup, results, troubleshooting) and "
        "[the paper in our words](docs/paper.md); the notebooks are read in order:",
        "",
        "| notebook | what it does |", "|---|---|", *rows,
        "",
        "Every notebook also runs on its own: `python -m conrec_lib run --only 03` (see the README). "
        "The bundled datasets are described in [data/README.md](data/README.md).",
    ])
    return markdown_html(text)


def write(out: Path, relative: str, content: str) -> None:
    target = out / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(content, encoding="utf-8")


def build(out: Path) -> list[Path]:
    """Write the whole site into `out` (emptied first); returns the pages written."""
    if out.exists():
        shutil.rmtree(out)
    written = []
    write(out, "index.html", rewrite_links(page("conrec", index_html(), 0)))
    written.append(out / "index.html")
    for doc in DOCUMENTS:
        relative = re.sub(r"\.md$", ".html", doc)
        depth = relative.count("/")
        body = markdown_html((ROOT / doc).read_text(encoding="utf-8"))
        write(out, relative, rewrite_links(page(doc, body, depth)))
        written.append(out / relative)
    for path in notebooks():
        relative = f"notebooks/{path.stem}.html"
        write(out, relative, notebook_html(path))
        written.append(out / relative)
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "site"), help="folder to write (emptied first)")
    args = parser.parse_args()
    pages = build(Path(args.out))
    print(f"{len(pages)} pages in {args.out}; open {Path(args.out) / 'index.html'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
