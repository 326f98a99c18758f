"""Write each chapter of the book as a real Jupyter notebook, for Colab, Binder and download.

    python scripts/make_notebooks.py           write book/<chapter>.ipynb beside each book/<chapter>.md
    python scripts/make_notebooks.py --check   exit 1 if a notebook or an install cell is out of date

The chapters are MyST Markdown (book/*.md), which Colab cannot open. This script
1. puts the same install cell first in every chapter that has code: it installs the
   course package from the repository named in book/_config.yml (repository.url, the
   one place the URL is set) when ``import llmcourse`` would fail, as on Colab or in a
   downloaded notebook, and does nothing where it is installed (the book build);
2. converts every chapter to book/<chapter>.ipynb with myst-nb's own reader, so each
   notebook has exactly the page's cells (no outputs; glossary links and citations in
   the text as plain words, which Jupyter renders). The launch buttons of the site
   point at these files (sphinx-book-theme uses the .ipynb beside a page's .md), and
   book/_config.yml keeps them out of the Sphinx sources.

tests/test_notebooks.py runs ``--check``, so a chapter edited without re-running this
script fails the tests.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat
import yaml
from myst_nb.core.read import read_myst_markdown_notebook

BOOK = Path(__file__).resolve().parent.parent / "book"
INSTALL_TAG = "install-llmcourse"
INSTALL_CELL = '''```{{code-cell}} ipython3
:tags: [{tag}, hide-cell]

# On Colab, Binder or in a downloaded copy: install the course package when it is missing.
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("llmcourse") is None:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "llmcourse[book] @ git+{url}"], check=True)
```
'''
# The existing install cell, if any: from its fence to the closing fence.
INSTALL_RE = re.compile(r"```\{code-cell\} ipython3\n:tags: \[" + INSTALL_TAG + r"[^\n]*\n.*?\n```\n\n?", re.S)


def repository_url() -> str:
    url = yaml.safe_load((BOOK / "_config.yml").read_text())["repository"]["url"]
    if not re.fullmatch(r"https://[\w.-]+/[\w.-]+/[\w.-]+", url):
        raise SystemExit(f"book/_config.yml repository.url must be https://HOST/OWNER/REPO, got {url!r}")
    return url


def chapters() -> list[Path]:
    """The pages of book/_toc.yml that have code cells, in order."""
    toc = yaml.safe_load((BOOK / "_toc.yml").read_text())
    stems = [toc["root"]] + [c["file"] for part in toc["parts"] for c in part["chapters"]]
    pages = [BOOK / f"{stem}.md" for stem in stems]
    return [page for page in pages if "```{code-cell}" in page.read_text(encoding="utf-8")]


def with_install_cell(text: str, url: str) -> str:
    """The chapter's text with the install cell (re)written just before its first code cell."""
    cell = INSTALL_CELL.format(tag=INSTALL_TAG, url=url)
    text = INSTALL_RE.sub("", text, count=1)
    first = text.index("```{code-cell}")
    return text[:first] + cell + "\n" + text[first:]


TERM_RE = re.compile(r"\{term\}`([^`<]+?)(?:\s*<[^`>]+>)?`")
CITE_RE = re.compile(r"\{cite\}`([^`]+)`")


def plain_markdown(text: str) -> str:
    """Markdown that Jupyter and Colab render: the glossary links become their words and
    citations their keys in brackets (the site keeps the links; other MyST stays as is)."""
    text = TERM_RE.sub(lambda m: m.group(1).strip(), text)
    return CITE_RE.sub(lambda m: "[" + ", ".join(k.strip() for k in m.group(1).split(",")) + "]", text)


def notebook_of(text: str) -> str:
    notebook = read_myst_markdown_notebook(text)
    for index, cell in enumerate(notebook.cells):
        cell["id"] = f"cell-{index}"  # stable ids: the file changes only when the chapter does
        if cell.cell_type == "markdown":
            cell.source = plain_markdown(cell.source)
    return nbformat.writes(notebook) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if anything is out of date")
    args = parser.parse_args(argv)
    url = repository_url()
    stale = []
    for page in chapters():
        text = page.read_text(encoding="utf-8")
        want_text = with_install_cell(text, url)
        want_notebook = notebook_of(want_text)
        target = page.with_suffix(".ipynb")
        for path, want, have in [(page, want_text, text),
                                 (target, want_notebook, target.read_text(encoding="utf-8") if target.exists() else None)]:
            if want != have:
                stale.append(path.relative_to(BOOK.parent))
                if not args.check:
                    path.write_text(want, encoding="utf-8")
    if stale:
        verb = "out of date (run python scripts/make_notebooks.py)" if args.check else "written"
        print(f"{verb}: " + ", ".join(map(str, stale)))
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
