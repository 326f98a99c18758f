"""The book site builds, and every page works offline in a real browser.

The book is built once per run with ``scripts/build_book.sh`` (warnings, broken
references and failing cells are errors there). The built site is then served on
127.0.0.1 and every HTML page is opened in headless Chromium (Debian's, driven by
Playwright; ``scripts/install_system_deps.sh`` installs it). A page fails on:

- a console error or an uncaught page error;
- any request to a host other than 127.0.0.1 (such requests are also aborted, as
  they would be for a reader without internet);
- a failed request or an HTTP error (a missing image, script or font);
- an ``<img>`` that did not load (``naturalWidth == 0``);
- math left unrendered (a ``.math`` element without MathJax output, a MathJax error,
  or raw ``$$`` / ``\\(`` / ``\\[`` left in the text);
- an embedded widget view that did not render;
- a link to a local page or anchor that does not exist.

A full-page screenshot of every content page goes to ``artifacts/screenshots/``.
"""
from __future__ import annotations

import functools
import http.server
import os
import re
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import pytest
from bs4 import BeautifulSoup

REPO = Path(__file__).resolve().parents[1]
BOOK = REPO / "book"
SITE = BOOK / "_build" / "html"
SCREENSHOTS = REPO / "artifacts" / "screenshots"
# A cold build executes every chapter (each may take minutes); a cached one takes seconds.
BUILD_TIMEOUT_S = 3600
# Folders of the built site that hold assets, not pages.
NOT_PAGES = {"_static", "_sources", "_images", "_downloads", "_sphinx_design_static"}
# Sphinx's generated pages: checked in the browser, not screenshotted.
GENERATED_PAGES = {"genindex.html", "search.html", "py-modindex.html"}
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("book")]


# --------------------------------------------------------------------------- build


@pytest.fixture(scope="module")
def build() -> subprocess.CompletedProcess:
    """Run scripts/build_book.sh once for this module, with this venv's bin/ on PATH."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(
        ["bash", str(REPO / "scripts" / "build_book.sh")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S,
    )


def _build_log(proc: subprocess.CompletedProcess, tail: int = 60) -> str:
    lines = (proc.stdout + "\n" + proc.stderr).splitlines()
    return "\n".join(lines[-tail:])


@pytest.fixture(scope="module")
def site(build) -> Path:
    """The built site folder; fails the dependent test if the build failed."""
    if build.returncode != 0:
        pytest.fail(f"book build failed (exit {build.returncode}); see test_book_builds:\n"
                    f"{_build_log(build, 20)}")
    return SITE


def test_book_builds(build):
    assert build.returncode == 0, (
        f"scripts/build_book.sh failed with exit {build.returncode}:\n{_build_log(build)}")
    assert (SITE / "index.html").is_file(), f"{SITE / 'index.html'} was not written"
    assert "book/_build/html/index.html" in build.stdout, (
        "build_book.sh must print where the site is")


def test_pages_declare_the_course_icon(site):
    """Every page names the icon (so browsers do not probe a missing /favicon.ico)."""
    for page in sorted(site.glob("*.html")):
        text = page.read_text()
        if text.startswith('<meta http-equiv="Refresh"'):
            continue  # index.html: Jupyter Book's redirect to the first page
        match = re.search(r'<link rel="icon" href="([^"]+)"', text)
        assert match, f"{page.name} declares no icon"
        assert (page.parent / match.group(1)).is_file(), f"{page.name}: {match.group(1)} is missing"


# ------------------------------------------------------------------ serve and browse


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        pass


@pytest.fixture(scope="module")
def base_url(site):
    """The built site served on 127.0.0.1 at a free port (a thread, stopped at the end)."""
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def _pages(site: Path) -> list[str]:
    """Every HTML page of the site, as paths relative to it (POSIX)."""
    pages = []
    for path in sorted(site.rglob("*.html")):
        rel = path.relative_to(site)
        if rel.parts[0] not in NOT_PAGES and not rel.parts[0].startswith("."):
            pages.append(rel.as_posix())
    return pages


def _redirect_target(path: Path) -> str | None:
    """The URL a meta-refresh redirect page (such as index.html) points at, else None."""
    soup = BeautifulSoup(path.read_text(encoding="utf-8"), "html.parser")
    meta = soup.find("meta", attrs={"http-equiv": re.compile("^refresh$", re.I)})
    if meta is None:
        return None
    match = re.search(r"url=(.+)$", meta.get("content", ""), re.I)
    return match.group(1).strip("'\" ") if match else ""


@dataclass
class Visit:
    """What one page showed in the browser."""
    problems: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)   # absolute hrefs of every <a href>
    ids: set[str] = field(default_factory=set)       # element ids and <a name>s
    counts: dict[str, int] = field(default_factory=dict)
    screenshot: Path | None = None                   # where its screenshot should be


_SETTLE_JS = """
async () => {
  // Lazy images would not load in a page that is never scrolled: load them all.
  const imgs = [...document.images];
  imgs.forEach(i => { i.loading = "eager"; });
  await Promise.all(imgs.map(i => i.complete ? null : new Promise(r => {
    i.addEventListener("load", r); i.addEventListener("error", r); })));
  // MathJax 3 resolves startup.promise once the first typesetting pass is done.
  if (document.querySelector(".math")) {
    const t0 = Date.now();
    while (!(window.MathJax && MathJax.startup && MathJax.startup.promise)) {
      if (Date.now() - t0 > 20000) break;
      await new Promise(r => setTimeout(r, 50));
    }
    if (window.MathJax && MathJax.startup && MathJax.startup.promise)
      await MathJax.startup.promise;
  }
}
"""

_WIDGETS_RENDERED_JS = """
() => [...document.querySelectorAll('script[type="%s"]')]
        .every(s => s.parentElement.querySelector(".jupyter-widgets"))
""" % WIDGET_VIEW

_INSPECT_JS = """
() => {
  const out = {};
  out.brokenImages = [...document.images].filter(i => i.naturalWidth === 0)
      .map(i => i.getAttribute("src") || "(no src)");
  const maths = [...document.querySelectorAll(".math")];
  out.math = maths.length;
  out.mathRendered = document.querySelectorAll("mjx-container").length;
  out.unrenderedMath = maths.filter(m => !m.querySelector("mjx-container"))
      .map(m => m.textContent.trim().slice(0, 80));
  out.mathErrors = [...document.querySelectorAll("mjx-merror")]
      .map(m => (m.getAttribute("data-mjx-error") || m.textContent).slice(0, 80));
  // Raw TeX delimiters outside code mean the math was never recognised as math.
  const main = document.querySelector("main") || document.body;
  const clone = main.cloneNode(true);
  clone.querySelectorAll("pre, code, script, style, mjx-container").forEach(e => e.remove());
  const text = clone.textContent;
  out.rawTex = ["$$", "\\\\(", "\\\\["].filter(d => text.includes(d));
  const views = [...document.querySelectorAll('script[type="%s"]')];
  out.widgets = views.length;
  out.unrenderedWidgets = views.filter(s => !s.parentElement.querySelector(".jupyter-widgets"))
      .map(s => { try { return JSON.parse(s.textContent).model_id; } catch (e) { return "?"; } });
  out.widgetState = !!document.querySelector(
      'script[type="application/vnd.jupyter.widget-state+json"]');
  out.links = [...document.querySelectorAll("a[href]")].map(a => a.href);
  out.ids = [...document.querySelectorAll("[id]")].map(e => e.id)
      .concat([...document.querySelectorAll("a[name]")].map(e => e.getAttribute("name")));
  return out;
}
""" % WIDGET_VIEW


def _is_local(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("data", "blob", "about") or parts.hostname == "127.0.0.1"


def _visit(context, base_url: str, rel: str, screenshot: bool) -> Visit:
    visit = Visit()
    problems = visit.problems
    page = context.new_page()

    def on_console(msg):
        loc = msg.location or {}
        if msg.type == "error":
            where = f" [{loc.get('url', '')}:{loc.get('lineNumber', '')}]" if loc.get("url") else ""
            problems.append(f"console error: {msg.text}{where}")

    def on_request(request):
        if not _is_local(request.url):
            problems.append(f"request to another host: {request.url}")

    def on_request_failed(request):
        if _is_local(request.url):  # offsite ones were aborted on purpose, reported above
            problems.append(f"failed request: {request.url} ({request.failure})")

    def on_response(response):
        if response.status >= 400:
            problems.append(f"HTTP {response.status}: {response.url}")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("request", on_request)
    page.on("requestfailed", on_request_failed)
    page.on("response", on_response)
    try:
        page.goto(base_url + rel, wait_until="load", timeout=60_000)
        page.evaluate(_SETTLE_JS)
        try:
            page.wait_for_function(_WIDGETS_RENDERED_JS, timeout=20_000)
        except Exception:  # reported below, with the models that did not render
            pass
        info = page.evaluate(_INSPECT_JS)
        if screenshot:
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            visit.screenshot = SCREENSHOTS / (rel.removesuffix(".html").replace("/", "__") + ".png")
            page.screenshot(path=str(visit.screenshot), full_page=True)
    except Exception as exc:  # a timeout or a crash is a finding about this page
        problems.append(f"could not load and inspect the page: {exc}")
        return visit
    finally:
        page.close()

    problems += [f"image did not load: {src}" for src in info["brokenImages"]]
    problems += [f"math not rendered by MathJax: {tex!r}" for tex in info["unrenderedMath"]]
    problems += [f"MathJax error: {err!r}" for err in info["mathErrors"]]
    problems += [f"raw TeX delimiter {d!r} left in the page text" for d in info["rawTex"]]
    if info["widgets"] and not info["widgetState"]:
        problems.append("widget views but no embedded widget state "
                        "(was the notebook executed with widget state stored?)")
    problems += [f"widget view did not render (model {m})" for m in info["unrenderedWidgets"]]
    visit.links = info["links"]
    visit.ids = set(info["ids"])
    visit.counts = {k: info[k] for k in ("math", "mathRendered", "widgets")}
    return visit


@pytest.fixture(scope="module")
def visits(site, base_url, browser) -> dict[str, Visit]:
    """Open every page of the site once; what each showed, by relative path."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    # A reader offline: nothing may leave 127.0.0.1 (requests are recorded per page).
    context.route("**/*", lambda route: route.continue_() if _is_local(route.request.url)
                  else route.abort("blockedbyclient"))
    results = {}
    for rel in _pages(site):
        target = _redirect_target(site / rel)
        if target is not None:  # index.html: a meta-refresh to the root page
            visit = Visit(links=[urljoin(base_url + rel, target)])
        else:
            visit = _visit(context, base_url, rel, screenshot=rel not in GENERATED_PAGES)
        results[rel] = visit
    context.close()
    return results


def _report(findings: dict[str, list[str]]) -> str:
    lines = []
    for page, problems in sorted(findings.items()):
        lines.append(f"{page}:")
        lines += [f"  - {p}" for p in dict.fromkeys(problems)]  # de-duplicated, in order
    return "\n".join(lines)


def test_every_page_renders_offline(visits):
    findings = {page: v.problems for page, v in visits.items() if v.problems}
    assert not findings, "pages with problems:\n" + _report(findings)


def test_site_exercises_math_figures_and_widgets(visits, site):
    """The checks above must have something to check: the book has math, figures, widgets."""
    totals = {k: sum(v.counts.get(k, 0) for v in visits.values())
              for k in ("mathRendered", "widgets")}
    figures = list((site / "_images").glob("*.png")) + list((site / "_images").glob("*.svg"))
    missing = [what for what, n in (("rendered math", totals["mathRendered"]),
                                    ("embedded widgets", totals["widgets"]),
                                    ("figures in _images/", len(figures))) if n == 0]
    assert not missing, f"the built book has no {', '.join(missing)}: the offline pipeline " \
                        f"is not exercised (chapter 2 should have all three)"


def test_chapter_screenshots_saved(visits):
    chapters = [rel for rel in visits if re.match(r"ch\d", rel)]
    assert chapters, "no chapter pages (ch<N>_*.html) in the built site"
    missing = [rel for rel in chapters
               if visits[rel].screenshot is None or not visits[rel].screenshot.is_file()]
    assert not missing, f"no screenshot in {SCREENSHOTS} for: {missing}"


def _resolve(url: str, base_url: str) -> tuple[Path, str] | None:
    """The site file and fragment a local URL points at; None for external URLs."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not url.startswith(base_url):
        return None
    path = SITE / unquote(parts.path).lstrip("/")
    if path.is_dir():
        path = path / "index.html"
    return path, unquote(parts.fragment)


def test_internal_links_resolve(visits, base_url):
    findings: dict[str, list[str]] = {}
    for page, visit in visits.items():
        for url in visit.links:
            resolved = _resolve(url, base_url)
            if resolved is None:
                continue
            path, fragment = resolved
            shown = url.removeprefix(base_url)
            if not path.is_file():
                findings.setdefault(page, []).append(f"dead link {shown}: no such file")
            elif fragment:
                target = path.relative_to(SITE).as_posix()
                ids = visits[target].ids if target in visits else None
                if ids is None:
                    findings.setdefault(page, []).append(
                        f"link {shown}: anchor into a file that is not a page")
                elif fragment not in ids:
                    findings.setdefault(page, []).append(
                        f"dead link {shown}: no anchor #{fragment} in {target}")
    assert not findings, "dead internal links:\n" + _report(findings)


# ------------------------------------------------------------- launch and download


def _repository_path(url: str) -> str | None:
    """The repository file a Colab or Binder launch link opens, else None (another URL)."""
    parts = urlsplit(url)
    repo = "/".join(urlsplit(_config()["repository"]["url"]).path.strip("/").split("/")[:2])
    branch = _config()["repository"].get("branch", "main")
    if parts.hostname == "colab.research.google.com":
        prefix = f"/github/{repo}/blob/{branch}/"
        return parts.path.removeprefix(prefix) if parts.path.startswith(prefix) else ""
    if parts.hostname == "mybinder.org":
        if not parts.path.startswith(f"/v2/gh/{repo}/{branch}"):
            return ""
        query = dict(q.split("=", 1) for q in parts.query.split("&") if "=" in q)
        return unquote(query.get("urlpath", "")).removeprefix("lab/tree/").removeprefix("tree/")
    return None


@functools.cache
def _config() -> dict:
    import yaml

    return yaml.safe_load((BOOK / "_config.yml").read_text())


def test_launch_and_download_links_open_real_notebooks(site):
    """Every chapter's Colab and Binder buttons open its notebook twin, which exists in the
    repository; its download links point at files of the built site; no placeholder host."""
    problems = []
    for page in sorted(site.glob("ch*.html")):
        soup = BeautifulSoup(page.read_text(encoding="utf-8"), "html.parser")
        launch = [a["href"] for a in soup.select(".dropdown-launch-buttons a[href]")]
        downloads = [a["href"] for a in soup.select(".dropdown-download-buttons a[href]")]
        hosts = {urlsplit(url).hostname for url in launch}
        if hosts != {"colab.research.google.com", "mybinder.org"}:
            problems.append(f"{page.name}: launch buttons go to {sorted(map(str, hosts))}, "
                            "expected Colab and Binder only")
        for url in launch:
            path = _repository_path(url)
            if not path or not path.endswith(".ipynb"):
                problems.append(f"{page.name}: launch link {url} does not open a notebook of the repository")
            elif not (REPO / path).is_file():
                problems.append(f"{page.name}: launch link opens {path}, which is not in the repository")
        suffixes = {Path(urlsplit(href).path).suffix for href in downloads}
        if not {".ipynb", ".md"} <= suffixes:
            problems.append(f"{page.name}: downloads {sorted(suffixes)}, expected the .ipynb and the .md")
        for href in downloads:
            if urlsplit(href).scheme:
                continue  # e.g. the print button's javascript: link
            if not (page.parent / unquote(urlsplit(href).path)).resolve().is_file():
                problems.append(f"{page.name}: download link {href} has no file in the site")
    assert not problems, "launch and download problems:\n" + "\n".join(problems)


# --------------------------------------------------------------------- phone width

PHONE = {"width": 390, "height": 844}
FIGURE_COLUMN_PX = 342  # the content column at 390 px, which tests/test_figures.py sizes the diagrams' text for

_PHONE_JS = """
() => {
  const root = document.documentElement;
  const out = {overflow: root.scrollWidth - window.innerWidth, wide: []};
  if (out.overflow > 1) {
    // What sticks out: the outermost elements wider than the window.
    for (const el of document.querySelectorAll(".bd-article *")) {
      const r = el.getBoundingClientRect();
      if (r.right > window.innerWidth + 1 && !el.closest(".cell_output, .highlight, .jupyter-widgets, table"))
        out.wide.push(el.tagName.toLowerCase() + "." + el.className + ": " + (el.textContent || "").slice(0, 40));
      if (out.wide.length > 5) break;
    }
  }
  // Plots in cell outputs keep at least 80%% of their own size (their box scrolls): matplotlib's
  // 10-pt labels at 100 dpi are 14 px, so they stay above 11 px.
  out.shrunkPlots = [...document.querySelectorAll(".cell_output img")]
      .filter(i => i.naturalWidth > 0 && i.getBoundingClientRect().width < 0.8 * i.naturalWidth)
      .map(i => `${(i.getAttribute("src") || "").slice(0, 60)}: ${Math.round(i.getBoundingClientRect().width)} of ${i.naturalWidth} px`);
  // The SVG figures are drawn for a column of %d px (tests/test_figures.py): shown narrower,
  // their smallest text would fall under 11 px.
  out.smallFigures = [...document.querySelectorAll("figure img[src$='.svg']")]
      .filter(i => i.getBoundingClientRect().width < %d - 0.5)
      .map(i => `${i.getAttribute("src")} shown ${Math.round(i.getBoundingClientRect().width)} px wide`);
  out.korean = [...document.fonts].filter(f => f.family.replace(/"/g, "") === "Noto Sans KR"
      && f.status === "loaded").length;
  out.hangul = /[\\uac00-\\ud7a3]/.test(document.body.innerText);
  return out;
}
""" % (FIGURE_COLUMN_PX, FIGURE_COLUMN_PX)


def _opens(page, toggle: str, dialog: str) -> str | None:
    """Tap the visible ``toggle`` button; None if ``dialog`` opens with links, else the problem."""
    buttons = [b for b in page.query_selector_all(toggle) if b.is_visible()]
    if not buttons:
        return f"no visible {toggle} button"
    buttons[0].click()
    try:
        page.wait_for_selector(f"{dialog}[open] a", state="visible", timeout=5_000)
    except Exception:
        return f"tapping {toggle} did not open {dialog} with its links"
    page.keyboard.press("Escape")
    page.wait_for_selector(f"{dialog}[open]", state="detached", timeout=5_000)
    return None


@pytest.fixture(scope="module")
def phone_visits(site, base_url, browser) -> dict[str, dict]:
    """Every chapter page at a phone's width: layout measurements and whether both menus open."""
    context = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
    context.route("**/*", lambda route: route.continue_() if _is_local(route.request.url)
                  else route.abort("blockedbyclient"))
    results = {}
    for rel in [p for p in _pages(site) if p not in GENERATED_PAGES and _redirect_target(site / p) is None]:
        page = context.new_page()
        try:
            page.goto(base_url + rel, wait_until="load", timeout=60_000)
            page.evaluate(_SETTLE_JS)
            page.evaluate("document.fonts.ready")
            info = page.evaluate(_PHONE_JS)
            info["menus"] = [problem for problem in (
                _opens(page, ".primary-toggle", "#pst-primary-sidebar-modal"),
                _opens(page, ".secondary-toggle", "#pst-secondary-sidebar-modal") if rel.startswith("ch") else None,
            ) if problem]
            if rel.startswith("ch"):
                SCREENSHOTS.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(SCREENSHOTS / ("phone__" + rel.removesuffix(".html") + ".png")))
        finally:
            page.close()
        results[rel] = info
    context.close()
    return results


def test_pages_fit_a_phone_and_its_menus_open(phone_visits):
    """At 390 px: no page scrolls sideways, both menus open, plots keep a legible size,
    the diagrams are shown large enough, and Korean text gets the shipped web font."""
    findings = {}
    for rel, info in phone_visits.items():
        problems = list(info["menus"])
        if info["overflow"] > 1:
            problems.append(f"the page is {info['overflow']} px wider than the screen: {info['wide']}")
        problems += [f"plot shrunk to unreadable size: {s}" for s in info["shrunkPlots"]]
        problems += [f"diagram narrower than the {FIGURE_COLUMN_PX}-px column its text is sized for: {s}"
                     for s in info["smallFigures"]]
        if info["hangul"] and not info["korean"]:
            problems.append("Korean text on the page, but the Noto Sans KR web font did not load")
        if problems:
            findings[rel] = problems
    assert len(phone_visits) >= 7, f"only {len(phone_visits)} pages visited at phone width"
    assert any(info["korean"] for info in phone_visits.values()), "no page loaded the Korean web font"
    assert not findings, "pages at 390 px:\n" + _report(findings)


# ------------------------------------------------------------------------- glossary

_HANGUL = re.compile(r"[\uac00-\ud7a3]")


def _article(path: Path) -> BeautifulSoup:
    """The article body of a built page (no navigation, sidebars or footer)."""
    soup = BeautifulSoup(path.read_text(encoding="utf-8"), "html.parser")
    return soup.find("article") or soup.find("main") or soup.body


@dataclass
class _GlossaryEntry:
    """One term of the Sphinx glossary: its names (English first), their anchors, its definition."""

    names: list[str]
    ids: list[str]
    definition: BeautifulSoup | None


def _glossary_entries(glossary: Path) -> list[_GlossaryEntry]:
    """The entries of glossary.html, in page order.

    book/glossary.md is a ``{glossary}`` directive, which Sphinx renders as
    ``<dl class="glossary">``: each entry is one or more ``<dt id="term-...">`` (the English
    term, other English names, the Korean name(s)) followed by one ``<dd>``.
    """
    article = _article(glossary)
    dl = article.find("dl", class_="glossary")
    assert dl is not None, (
        "glossary.html has no Sphinx glossary (<dl class=\"glossary\">): write book/glossary.md "
        "as a ```{glossary} directive")
    entries, names, ids = [], [], []
    for child in dl.find_all(["dt", "dd"], recursive=False):
        if child.name == "dt":
            for link in child.find_all("a", class_="headerlink"):
                link.extract()  # the "#" permalink after each term
            names.append(" ".join(child.get_text(" ", strip=True).split()))
            ids.append(child.get("id", ""))
        else:
            entries.append(_GlossaryEntry(names, ids, child))
            names, ids = [], []
    if names:  # terms with no definition after them
        entries.append(_GlossaryEntry(names, ids, None))
    return entries


@pytest.fixture(scope="module")
def glossary_entries(site) -> list[_GlossaryEntry]:
    glossary = site / "glossary.html"
    assert glossary.is_file(), "the book has no glossary page (book/glossary.md)"
    entries = _glossary_entries(glossary)
    assert entries, "glossary.html has a glossary without entries"
    return entries


def _chapter_pages(site: Path) -> list[Path]:
    return sorted(site.glob("ch*.html"))


def test_glossary_entries_link_to_pages_using_the_term(site, glossary_entries):
    """Every entry has a Korean name and a definition that links to a page using the term."""
    glossary = site / "glossary.html"
    problems = []
    for entry in glossary_entries:
        term = entry.names[0]  # the English term; abbreviations and Korean names follow
        if not any(_HANGUL.search(name) for name in entry.names):
            problems.append(f"{term!r}: no Korean name; add it on the line after the English term")
        if not all(entry.ids):
            problems.append(f"{term!r}: a name without an anchor (<dt id=...>)")
        if entry.definition is None:
            problems.append(f"{term!r}: no definition")
            continue
        links = [a["href"] for a in entry.definition.find_all("a", href=True)
                 if not urlsplit(a["href"]).scheme and not a["href"].startswith("#")]
        if not links:
            problems.append(f"{term!r}: no link to a page of the book")
            continue
        pattern = re.compile(rf"\b{re.escape(term)}(s|es)?\b", re.I)
        for href in links:
            target = (glossary.parent / unquote(urlsplit(href).path)).resolve()
            if target == glossary.resolve():
                problems.append(f"{term!r}: links to the glossary itself ({href})")
            elif not target.is_file():
                problems.append(f"{term!r}: link {href} points at no page")
            elif not pattern.search(" ".join(_article(target).get_text(" ").split())):
                problems.append(f"{term!r}: {href} does not mention {term!r}")
    english = [entry.names[0] for entry in glossary_entries]
    for k in range(1, len(english)):
        if english[k - 1].lower() > english[k].lower():
            problems.append(f"not in alphabetical order: {english[k - 1]!r} comes before {english[k]!r}")
    assert not problems, "glossary problems (glossary.html):\n" + "\n".join(
        f"  - {p}" for p in problems)


def test_glossary_terms_are_linked_from_the_chapters(site, glossary_entries):
    """Every glossary term is linked with {term} from at least one chapter page."""
    chapters = _chapter_pages(site)
    assert chapters, f"no chapter pages (ch*.html) in {site}"
    linked: dict[str, set[str]] = {}  # glossary anchor -> chapter pages that link to it
    for page in chapters:
        for a in _article(page).find_all("a", href=True):
            path, _, fragment = a["href"].partition("#")
            if path == "glossary.html" and "reference" in a.get("class", []) and fragment:
                linked.setdefault(fragment, set()).add(page.name)
    unlinked = [entry.names[0] for entry in glossary_entries
                if not any(anchor in linked for anchor in entry.ids)]
    assert not unlinked, (
        f"{len(unlinked)} glossary terms are linked from no chapter page "
        f"({', '.join(p.name for p in chapters)}); link the first mention of each in a chapter "
        "with {term}`term` or {term}`text <term>`:\n" + "\n".join(f"  - {t}" for t in unlinked))


def test_index_lists_the_glossary_terms(site, glossary_entries):
    """genindex.html lists the glossary's terms (Sphinx adds an index entry for each name)."""
    index = site / "genindex.html"
    assert index.is_file(), "the site has no genindex.html"
    entries = [a["href"] for a in _article(index).find_all("a", href=True)
               if a["href"].startswith("glossary.html#term-")]
    assert len(entries) >= len(glossary_entries), (
        f"genindex.html lists {len(entries)} glossary entries, fewer than the glossary's "
        f"{len(glossary_entries)} terms")
    listed = {href.partition("#")[2] for href in entries}
    missing = [entry.names[0] for entry in glossary_entries if entry.ids[0] not in listed]
    assert not missing, "genindex.html does not list these glossary terms:\n" + "\n".join(
        f"  - {t}" for t in missing)
