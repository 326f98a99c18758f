"""Feedback for students: nbgrader's HTML, made inert, with the grader's results in a block
that nothing in a notebook can imitate.

nbgrader's feedback, as it comes, has two problems:

* it shows hidden tests and their tracebacks (nbgrader issue #917): ``BlankHiddenTracebacks``
  and then ``ClearHiddenTests`` leave a hidden test cell only the grader's message;
* it renders the notebook's markdown and outputs as HTML, unescaped, in a page the instructor
  opens in a browser: a submission could run scripts there, load things, restyle the page or
  print "Grader: 15 / 15 points" where the grader's results are.

So everything in the notebook is treated as the student's, the instructor's markdown too, and
every page is made by ``FeedbackExporter`` (nbconvert's HTML exporter with nbgrader's feedback
template; ``nbconfig`` names it):

1. ``make_inert`` rebuilds every cell and output from a short list of kinds: text (escaped by
   the template), PNG and JPEG as checked base64, SVG shown as an ``<img>`` (where an SVG runs
   no script and loads nothing), HTML and markdown through ``clean_html``. JavaScript, widget
   views and state, LaTeX and unknown kinds are dropped, and so is every metadata field the
   template could turn into markup (``isolated`` iframes, image sizes, tags), but nbgrader's;
2. markdown and raw cells go through ``clean_html`` too: nh3 (the Rust sanitizer Ammonia) with
   an allowlist of formatting tags and no ``class``, ``id`` or ``style``: links only to
   http(s) or ``#``, images only from ``data:image/...;base64``;
3. the page has a Content-Security-Policy (``csp``: no script, no request, only the page's
   own styles, by nonce) and loads no MathJax;
4. the grader's results are written in last, from ``nb.metadata[TRUSTED_KEY]`` (which
   ``annotate`` wrote in the grading process, after the student's code ran), as escaped text,
   in elements with a ``llmcourse-grader`` class and the page's nonce, which no sanitized
   content can carry. Where a note or message quotes the submission (an exception's
   message, a returned string, the output of a failed run), the quote is marked as one;
5. ``page_problems`` checks the finished page, independently of the sanitizer: a page with a
   script, an event handler, a frame, a form, a URL to anywhere, a style without the nonce or
   an unmarked grader element is not written, and the student gets a page saying so.
"""
from __future__ import annotations

import base64
import binascii
import copy
import html
import re
import secrets
import tempfile
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import jinja2
import nbformat
import nh3
from nbconvert.exporters import HTMLExporter
from nbgrader.preprocessors import NbGraderPreprocessor
from traitlets import Bool, default

from .records import Assignment, Report
from .results import Permissions, write_output

TRUSTED_KEY = "llmcourse_trusted"
HIDDEN_BEGIN = "### BEGIN HIDDEN TESTS"
GRADER_CLASS = "llmcourse-grader"  # every element of the grader's results has this class...
GRADER_ATTR = "data-llmcourse-grader"  # ...and this attribute, set to the page's nonce


def csp(nonce: str | None = None) -> str:
    """The Content-Security-Policy of a feedback page: nothing runs, nothing is fetched;
    images only from ``data:``, styles only the page's own (``nonce``)."""
    styles = f"'nonce-{nonce}'" if nonce else "'none'"
    return f"default-src 'none'; style-src {styles}; img-src data:; base-uri 'none'; form-action 'none'"


def csp_meta(nonce: str | None = None) -> str:
    return f'<meta http-equiv="Content-Security-Policy" content="{csp(nonce)}">'


# ---------------------------------------------------------------- the student's HTML

ALLOWED_TAGS = {
    "a", "abbr", "b", "blockquote", "br", "caption", "code", "dd", "del", "div", "dl", "dt", "em",
    "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "kbd", "li", "ol", "p", "pre", "q", "s",
    "samp", "small", "span", "strong", "sub", "sup", "table", "tbody", "td", "tfoot", "th", "thead",
    "tr", "u", "ul"}
ALLOWED_ATTRIBUTES = {"a": {"href"}, "img": {"src", "alt"}, "ol": {"start"},
                      "td": {"colspan", "rowspan"}, "th": {"colspan", "rowspan"}}
LINK = re.compile(r"(https?://|#)", re.I)
IMAGE_DATA = re.compile(r"data:image/(png|jpeg|gif|webp|svg\+xml);base64,[A-Za-z0-9+/=\s]*\Z", re.I)


def _attribute(tag: str, name: str, value: str) -> str | None:
    value = value.strip()
    if name == "href":
        return value if LINK.match(value) else None
    if name == "src":
        return value if IMAGE_DATA.match(value) else None
    if name in ("start", "colspan", "rowspan"):
        return value if value.isdigit() and len(value) <= 4 else None
    return value


_CLEANER = nh3.Cleaner(tags=ALLOWED_TAGS, attributes=ALLOWED_ATTRIBUTES, attribute_filter=_attribute,
                       url_schemes={"http", "https", "data"}, link_rel="noopener noreferrer nofollow",
                       strip_comments=True)


def clean_html(fragment) -> str:
    """HTML from a notebook (markdown rendered, an output, a raw cell) made inert: the
    allowlisted formatting tags stay, with no attributes but safe ``href``/``src``/``alt``;
    everything else goes (``<script>``, ``<style>`` with their content; other tags keep
    their text)."""
    return _CLEANER.clean(fragment.decode() if isinstance(fragment, bytes) else str(fragment))


# ---------------------------------------------------------------- the grader's marks

def trusted_output(text: str, nonce: str) -> nbformat.NotebookNode:
    """A display output with the grader's message for a test cell, marked with the notebook's
    grader nonce (``annotate``); the feedback page renders it from the grader's data."""
    return nbformat.v4.new_output("display_data", data={"text/plain": text}, metadata={TRUSTED_KEY: nonce})


def grader_nonce(nb) -> str | None:
    """The nonce ``annotate`` drew for this notebook (None when it has no grader results)."""
    meta = nb.get("metadata", {}).get(TRUSTED_KEY)
    nonce = meta.get("nonce") if isinstance(meta, dict) else None
    return nonce if isinstance(nonce, str) and len(nonce) >= 32 else None


def is_trusted(output, nonce: str | None) -> bool:
    """Whether ``output`` is one ``annotate`` added to the notebook with ``nonce``."""
    return nonce is not None and output.get("metadata", {}).get(TRUSTED_KEY) == nonce


def annotate(nb, report: Report) -> None:
    """Give the autograded notebook the grader's results: in ``nb.metadata[TRUSTED_KEY]`` the
    scores, messages and notes the feedback page shows, and in every test cell an output with
    the cell's result (for a reader of the ``.ipynb``).

    Both carry a nonce drawn here, after the student's code ran; outputs of that run that
    claim to be the grader's are dropped first. Nothing is added as a cell: a cell, like
    anything else in the notebook, is the student's to imitate.
    """
    nonce = secrets.token_hex(16)
    by_id = {c.grade_id: c for c in report.cells}
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        cell.outputs = [out for out in cell.outputs if TRUSTED_KEY not in out.get("metadata", {})]
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if grade_id in by_id:
            result = by_id[grade_id]
            cell.outputs.append(trusted_output(
                f"Grader: {result.score:g} / {result.max_score:g} points\n" + "\n".join(result.messages), nonce))
    nb.metadata[TRUSTED_KEY] = {
        "nonce": nonce, "score": report.score, "max_score": report.max_score,
        "cells": [{"grade_id": c.grade_id, "score": c.score, "max_score": c.max_score,
                   "messages": list(c.messages)} for c in report.cells],
        "notes": list(report.notes), "sandboxed": report.sandboxed, "sandbox_note": report.sandbox_note}


class BlankHiddenTracebacks(NbGraderPreprocessor):
    """In cells holding hidden tests, drop every output but the grader's message."""

    def preprocess(self, nb, resources):
        self._nonce = grader_nonce(nb)
        return super().preprocess(nb, resources)

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type == "code" and HIDDEN_BEGIN in cell.source:
            cell.outputs = [out for out in cell.outputs if is_trusted(out, self._nonce)]
        return cell, resources


# ---------------------------------------------------------------- the notebook, inert

CELL_ID = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")
GRADE_ID = re.compile(r"[A-Za-z0-9_.-]{1,100}\Z")
# nbgrader's cell metadata that its feedback template reads, with the type each must have
NBGRADER_FIELDS = {"grade": bool, "solution": bool, "task": bool, "locked": bool, "points": (int, float),
                   "score": (int, float), "grade_id": str, "comment": str}
RASTER = ("image/png", "image/jpeg")  # the template shows these two as <img>


@dataclass
class Page:
    """One feedback page in the making."""

    nonce: str  # drawn per page, after the notebook exists: for its styles and the grader's elements
    grader: dict  # nb.metadata[TRUSTED_KEY] as ``annotate`` wrote it ({} when absent)
    slots: dict = field(default_factory=dict)  # placeholder text -> grade_id of a cell's result


def _text(value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "".join(value)
    return ""


SGR = re.compile(r"\x1b\[([0-9;]*)m")


def _basic_colors(text: str) -> str:
    """``text`` without ANSI 256-colour and true-colour codes (IPython's tracebacks have them):
    the template turns those into ``style`` attributes, which the policy blocks; the 16 basic
    colours become classes."""
    def keep(match):
        params, kept, i = match.group(1).split(";"), [], 0
        while i < len(params):
            if params[i] in ("38", "48", "58"):
                i += {"5": 3, "2": 5}.get(params[i + 1] if i + 1 < len(params) else "", 1)
                continue
            kept.append(params[i])
            i += 1
        return f"\x1b[{';'.join(kept)}m" if kept else ""
    return SGR.sub(keep, text)


def _base64(value) -> str | None:
    """``value`` as canonical base64 when it is base64 at all (it goes into a ``src``)."""
    compact = "".join(_text(value).split())
    try:
        data = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        return None
    return base64.b64encode(data).decode("ascii") if data else None


def _nbgrader_metadata(meta) -> dict:
    nbg = meta.get("nbgrader") if isinstance(meta, dict) else None
    if not isinstance(nbg, dict):
        return {}
    kept = {k: v for k, v in nbg.items() if k in NBGRADER_FIELDS and isinstance(v, NBGRADER_FIELDS[k])
            and not (isinstance(v, bool) and NBGRADER_FIELDS[k] == (int, float))}
    if "grade_id" in kept and not GRADE_ID.match(kept["grade_id"]):
        return {}  # the template writes grade ids into attributes
    return {"nbgrader": kept} if kept else {}


def inert_output(output) -> nbformat.NotebookNode | None:
    """A copy of one output of the student's run with only what renders inert (None: nothing)."""
    kind = output.get("output_type")
    if kind == "stream":
        return nbformat.v4.new_output("stream", name="stderr" if output.get("name") == "stderr" else "stdout",
                                      text=_basic_colors(_text(output.get("text"))))
    if kind == "error":
        traceback = output.get("traceback")
        return nbformat.v4.new_output("error", ename=_text(output.get("ename")), evalue=_text(output.get("evalue")),
                                      traceback=[_basic_colors(_text(line)) for line in traceback]
                                      if isinstance(traceback, list) else [])
    if kind not in ("display_data", "execute_result"):
        return None
    data = output.get("data") if isinstance(output.get("data"), dict) else {}
    safe = {}
    if "text/html" in data:
        safe["text/html"] = clean_html(_text(data["text/html"]))
    elif "text/markdown" in data:
        from nbconvert.filters.markdown_mistune import markdown2html_mistune
        safe["text/html"] = clean_html(markdown2html_mistune(_text(data["text/markdown"])))
    for mime in RASTER:
        image = _base64(data.get(mime)) if mime in data else None
        if image:
            safe[mime] = image
    if "image/svg+xml" in data:
        safe["image/svg+xml"] = _text(data["image/svg+xml"])  # the template shows it as an <img>
    if "text/plain" in data:
        safe["text/plain"] = _basic_colors(_text(data["text/plain"]))
    if not safe:
        kinds = ", ".join(str(k)[:60] for k in sorted(data, key=str)[:5])
        safe["text/plain"] = f"[output not shown in the feedback: {kinds or 'empty'}]"
    if kind == "execute_result":
        count = output.get("execution_count")
        return nbformat.v4.new_output("execute_result", data=safe,
                                      execution_count=count if type(count) is int else None)
    return nbformat.v4.new_output("display_data", data=safe)


def make_inert(nb, page: Page) -> None:
    """Rebuild ``nb`` (in place) from what renders inert: see the module's docstring.

    Each of the grader's outputs (``is_trusted``) becomes a placeholder (``page.slots``) that
    ``finish_page`` replaces with the grader's block, after the template ran.
    """
    nonce = page.grader.get("nonce")
    results = {c.get("grade_id") for c in page.grader.get("cells", []) if isinstance(c, dict)}
    nb.metadata = nbformat.from_dict({"language_info": {"name": "python"}})
    cells = []
    for index, cell in enumerate(nb.cells):
        meta = _nbgrader_metadata(cell.get("metadata"))
        source = _text(cell.get("source"))
        if cell.cell_type == "code":
            grade_id = meta.get("nbgrader", {}).get("grade_id")
            outputs = []
            for output in cell.get("outputs", []):
                if is_trusted(output, nonce) and grade_id in results:
                    token = f"llmcourse-grader-slot-{page.nonce}-{len(page.slots)}"
                    page.slots[token] = grade_id
                    outputs.append(nbformat.v4.new_output("display_data", data={"text/plain": token}))
                elif (safe := inert_output(output)) is not None:
                    outputs.append(safe)
            count = cell.get("execution_count")
            new = nbformat.v4.new_code_cell(source, outputs=outputs, metadata=meta,
                                            execution_count=count if type(count) is int else None)
        elif cell.cell_type == "markdown":
            new = nbformat.v4.new_markdown_cell(source, metadata=meta)  # attachments dropped
        elif cell.cell_type == "raw":
            new = nbformat.v4.new_raw_cell(source, metadata=meta)
        else:
            continue
        cell_id = cell.get("id")
        new["id"] = cell_id if isinstance(cell_id, str) and CELL_ID.match(cell_id) else f"cell-{index}"
        cells.append(new)
    nb.cells = cells


# ---------------------------------------------------------------- the grader's block

# Where the grader's notes and messages quote the submission (group "q"): the words around
# each are the grader's (scoring.py, grade.py, checks.py), the quoted part is not.
QUOTES = [
    re.compile(r"^answer cell '[^'\n]*' raised: (?P<q>.+)", re.S),  # a cell's exception, to the end
    re.compile(r"FAILED: \w+ raised (?P<q>.+)\Z", re.S),  # "FAILED: f raised ValueError: ...", the message's end
    re.compile(r"^ +raised (?P<q>.*)$", re.M),  # a case's "raised ValueError: ... (line 3 ...)", one line
    # what the feedback run (inside the sandbox) said about itself
    re.compile(r"^running the notebook for feedback: (?!executing the notebook failed)(?P<q>.+)", re.S),
    re.compile(r"could not be read \((?P<q>.+)\)\Z", re.S),
    re.compile(r"the answer code did not finish: [^(]*\((?P<q>.+)\)\Z", re.S),  # its last line of stderr
    re.compile(r"\bgot (?P<q>str .+|'.*'|\".*\")$", re.M),  # a returned string, as repr (one line)
    re.compile(r"^feedback failed: (?P<q>.+)", re.S),
]


def _mark(cls: str, nonce: str) -> str:
    return f'class="{GRADER_CLASS} {cls}" {GRADER_ATTR}="{nonce}"'


def quoted(text: str, nonce: str) -> str:
    """``text`` (a note or a check's message) escaped, with the parts that quote the
    submission marked as quotations."""
    spans = sorted(m.span("q") for pattern in QUOTES for m in pattern.finditer(text))
    merged: list[list[int]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    out, at = [], 0
    for start, end in merged:
        out.append(html.escape(text[at:start], quote=False))
        out.append(f"<span {_mark('llmcourse-quote-label', nonce)}>[quoted from the submission:]</span> "
                   f"<span {_mark('llmcourse-quote', nonce)}>{html.escape(text[start:end], quote=False)}</span>")
        at = end
    out.append(html.escape(text[at:], quote=False))
    return "".join(out)


def _points(value) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "?"


def cell_block(result: dict, nonce: str) -> str:
    """The grader's result for one test cell, in place of its trusted output."""
    messages = "\n".join(quoted(_text(m), nonce) for m in result.get("messages", []))  # each its own quotes
    return (f"<div {_mark('llmcourse-grader-result', nonce)}>"
            f"<div {_mark('llmcourse-grader-verdict', nonce)}>Grader: {_points(result.get('score'))} / "
            f"{_points(result.get('max_score'))} points</div>"
            + (f"<pre {_mark('llmcourse-grader-text', nonce)}>{messages}</pre>" if messages else "")
            + "</div>")


def summary_block(grader: dict, nonce: str) -> str:
    """The grader's results at the top of the page: total, points per test cell, notes."""
    if not grader:
        return (f"<section {_mark('llmcourse-grader-summary', nonce)}><h2 {_mark('llmcourse-grader-title', nonce)}>"
                "This notebook carries no results of the course grader.</h2></section>")
    rows = "".join(
        f"<tr><td><a href=\"#{html.escape(c['grade_id'])}\">{html.escape(c['grade_id'])}</a></td>"
        f"<td>{_points(c.get('score'))} / {_points(c.get('max_score'))}</td></tr>"
        for c in grader.get("cells", []) if isinstance(c, dict) and GRADE_ID.match(str(c.get("grade_id", ""))))
    notes = "".join(f"<li><pre {_mark('llmcourse-grader-text', nonce)}>{quoted(_text(n), nonce)}</pre></li>"
                    for n in grader.get("notes", []))
    sandbox = "" if grader.get("sandboxed", True) else (
        f"<p {_mark('llmcourse-grader-warning', nonce)}>NOT SANDBOXED: "
        f"{html.escape(_text(grader.get('sandbox_note')), quote=False)}</p>")
    return (f"<section {_mark('llmcourse-grader-summary', nonce)}>"
            f"<h2 {_mark('llmcourse-grader-title', nonce)}>Grader: {_points(grader.get('score'))} / "
            f"{_points(grader.get('max_score'))} points</h2>"
            f"<p {_mark('llmcourse-grader-fine', nonce)}>The course grader's results, from its own checks of the "
            "submission. Only the grader writes boxes like this one; text it quotes from the submission (an "
            "error message, a returned value, printed output) is marked as quoted.</p>"
            f"<table {_mark('llmcourse-grader-table', nonce)}><tr><th>test cell</th><th>points</th></tr>{rows}</table>"
            + (f"<h3 {_mark('llmcourse-grader-title', nonce)}>Grader notes</h3><ul>{notes}</ul>" if notes else "")
            + sandbox + "</section>")


PAGE_CSS = """
.llmcourse-grader { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; color: #102a43; }
section.llmcourse-grader-summary, div.llmcourse-grader-result {
  border: 3px double #1f4e79; background: #eef4fb; border-radius: 4px; padding: .6em .9em; margin: .8em 0; }
section.llmcourse-grader-summary { max-width: 1140px; margin: 1em auto; }
.llmcourse-grader-title, .llmcourse-grader-verdict { font-weight: bold; font-size: 1.15em; margin: 0 0 .3em; }
h3.llmcourse-grader-title { font-size: 1em; margin-top: .8em; }
.llmcourse-grader-fine { font-size: .85em; color: #334e68; margin: .2em 0 .6em; }
pre.llmcourse-grader-text { white-space: pre-wrap; background: #fff; border: 1px solid #9fb3c8;
  padding: .4em; margin: .3em 0; font-size: .9em; font-family: monospace; }
table.llmcourse-grader-table td, table.llmcourse-grader-table th { padding: .1em .9em; border-bottom: 1px solid #bcccdc; }
.llmcourse-quote-label { font-style: italic; color: #8d6e00; font-family: sans-serif; font-size: .85em; }
.llmcourse-quote { background: #fff3cd; border: 1px dashed #b7791f; color: #5f370e; padding: 0 .2em; }
.llmcourse-grader-warning { color: #9b1c1c; font-weight: bold; }
/* long lines of code and output wrap in the page instead of running off its right edge */
div.input_area pre, div.output_area pre { white-space: pre-wrap; overflow-wrap: anywhere; }
/* the notebook's tables, which the sanitizer leaves without attributes */
.rendered_html table { border-collapse: collapse; margin: .5em 0; }
.rendered_html th, .rendered_html td { border: 1px solid #ccc; padding: .2em .6em; }
"""


FONT_FACE = re.compile(r"@font-face\s*\{[^}]*\}", re.I)
# nbgrader's index at the top of the page names every graded cell by its kind alone ("Test cell",
# "Test cell", ...); ``finish_page`` adds the cell's grade id (checked by ``make_inert``)
INDEX_LINK = re.compile(r'<a href="#([A-Za-z0-9_.-]{1,100})">(Test cell|Coding free-response|Written response|Task)</a>')


class UnsafeFeedback(Exception):
    """A page failed ``page_problems`` (or could not take the grader's results): not written."""


def finish_page(page_html: str, page: Page) -> str:
    """The rendered template plus: the policy first in ``<head>``, the nonce on every style
    (whose fonts, Bootstrap's icons, are dropped: the policy would block them), each graded
    cell's id in the index, the grader's results in their places and at the top of ``<body>``."""
    nonce = page.nonce
    out = re.sub(r"<style\b([^>]*)>(.*?)</style>",
                 lambda m: f'<style nonce="{nonce}"{m.group(1)}>{FONT_FACE.sub("", m.group(2))}</style>',
                 page_html, flags=re.I | re.S)
    out = INDEX_LINK.sub(r'<a href="#\1">\2 <code>\1</code></a>', out)
    cells = {c.get("grade_id"): c for c in page.grader.get("cells", []) if isinstance(c, dict)}
    for token, grade_id in page.slots.items():
        out, count = re.subn(rf"<pre>\s*{re.escape(token)}\s*</pre>",
                             lambda _m, r=cells[grade_id]: cell_block(r, nonce), out)
        if count != 1:
            raise UnsafeFeedback(f"the grader's result for {grade_id} found {count} places in the page")
    out, heads = re.subn(r"<head>", lambda _m: f'<head>\n{csp_meta(nonce)}\n<style nonce="{nonce}">{PAGE_CSS}'
                                               "</style>", out, count=1, flags=re.I)
    out, bodies = re.subn(r"<body\b[^>]*>", lambda m: m.group(0) + summary_block(page.grader, nonce), out,
                          count=1, flags=re.I)
    if heads != 1 or bodies != 1:
        raise UnsafeFeedback("the template's page has no <head> or <body> to complete")
    return out


class FeedbackExporter(HTMLExporter):
    """nbgrader's feedback template over a notebook made inert, the grader's results added:
    see the module's docstring. ``GenerateFeedback.exporter_class`` in ``nbconfig``."""

    sanitize_html = Bool(True, help="Always on: the template's HTML outputs go through clean_html.").tag(config=True)
    exclude_anchor_links = Bool(True).tag(config=True)

    @default("extra_loaders")
    def _extra_loaders_default(self):
        # the classic template's MathJax macro, which loads scripts from a CDN, does nothing here
        return [jinja2.DictLoader({"mathjax.html.j2": "{%- macro mathjax(url='') -%}{%- endmacro %}"})]

    def default_filters(self):
        yield from super().default_filters()
        yield ("clean_html", clean_html)

    @jinja2.pass_context
    def markdown2html(self, context, source):
        return clean_html(super().markdown2html(context, source))

    def _init_resources(self, resources):
        resources = super()._init_resources(resources)
        resources["should_sanitize_html"] = True
        resources["should_not_encode_svg"] = False  # an SVG only ever as an <img>
        return resources

    def _preprocess(self, nb, resources):
        nb, resources = super()._preprocess(nb, resources)  # nbgrader's, BlankHiddenTracebacks...
        make_inert(nb, self._page)
        return nb, resources

    def from_notebook_node(self, nb, resources=None, **kw):
        nb = copy.deepcopy(nb)
        self._page = Page(secrets.token_hex(16), nb.metadata[TRUSTED_KEY] if grader_nonce(nb) else {})
        nb.metadata["language_info"] = {"name": "python"}  # read for the lexer before preprocessing
        page_html, resources = super().from_notebook_node(nb, resources, **kw)
        page_html = finish_page(page_html, self._page)
        problems = page_problems(page_html)
        if problems:
            raise UnsafeFeedback("; ".join(problems[:5]))
        return page_html, resources


# ---------------------------------------------------------------- the finished page, checked

FORBIDDEN_ELEMENTS = {"script", "iframe", "frame", "frameset", "object", "embed", "applet", "base", "link",
                      "form", "input", "button", "textarea", "select", "svg", "math", "template", "portal",
                      "noscript", "audio", "video", "source", "track", "canvas", "dialog"}
URL_ATTRIBUTES = {"href", "src", "srcset", "action", "formaction", "data", "poster", "background", "cite",
                  "longdesc", "ping", "xlink:href", "manifest", "codebase", "usemap", "lowsrc", "dynsrc"}


class _PageCheck(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []
        self.nonce: str | None = None
        self.summaries = 0

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)

    def handle_starttag(self, tag, attrs):
        attrs = [(name.lower(), value or "") for name, value in attrs]
        named = dict(attrs)
        if tag in FORBIDDEN_ELEMENTS:
            self.problems.append(f"<{tag}> element")
        if tag == "meta":
            self._meta(named)
        if tag == "style" and (self.nonce is None or named.get("nonce") != self.nonce):
            self.problems.append("<style> without the page's nonce")
        for name, value in attrs:
            self._attribute(tag, name, value)
        classes = named.get("class", "").split()
        if any("llmcourse" in c for c in classes) or GRADER_ATTR in named:
            if self.nonce is None or named.get(GRADER_ATTR) != self.nonce or GRADER_CLASS not in classes:
                self.problems.append(f"<{tag}> looks like the grader's but lacks its marks")
            if "llmcourse-grader-summary" in classes:
                self.summaries += 1

    def _meta(self, named):
        equiv = named.get("http-equiv", "").lower()
        if equiv == "content-security-policy":
            found = re.search(r"'nonce-([0-9a-f]{32})'", named.get("content", ""))
            if self.nonce is not None or not found or named.get("content") != csp(found.group(1)):
                self.problems.append("a second or unexpected Content-Security-Policy")
            else:
                self.nonce = found.group(1)
        elif equiv or not (set(named) <= {"charset"} or named.get("name") == "viewport"):
            self.problems.append(f"<meta {' '.join(sorted(named))}>")

    def _attribute(self, tag, name, value):
        if name.startswith("on"):
            self.problems.append(f"event handler {name} on <{tag}>")
        elif name == "style":  # none is made (``_basic_colors``), and the policy would block it
            self.problems.append(f"style attribute {value[:60]!r} on <{tag}>")
        elif name in URL_ATTRIBUTES:
            ok = (tag == "a" and name == "href" and LINK.match(value.strip())) or \
                 (tag == "img" and name == "src" and IMAGE_DATA.match(value.strip()))
            if not ok:
                self.problems.append(f"{name}={value[:60]!r} on <{tag}>")


def page_problems(page_html: str) -> list[str]:
    """What makes a finished feedback page unsafe to open ([] for none): see the module's docstring."""
    check = _PageCheck()
    check.feed(page_html)
    check.close()
    if check.nonce is None:
        check.problems.append("no Content-Security-Policy")
    if check.summaries != 1:
        check.problems.append(f"{check.summaries} blocks of the grader's results at the top, not 1")
    return check.problems


# ---------------------------------------------------------------- pages

def rejection_html(student: str, assignment: str, reason: str,
                   heading: str = "This submission could not be graded (score 0):") -> str:
    """The feedback page of a submission that could not be graded at all (or, with another
    ``heading``, whose page could not be made)."""
    return (f"<!DOCTYPE html><html><head>{csp_meta()}<meta charset='utf-8'><title>{html.escape(assignment)} "
            f"feedback</title></head><body><h1>{html.escape(assignment)}: {html.escape(student)}</h1>"
            f"<p><strong>{html.escape(heading)}</strong></p>"
            f"<pre>{html.escape(reason)}</pre></body></html>\n")


def write_feedback(config, assignment: Assignment, reports: list[Report], out: Path, permissions: Permissions,
                   log=print) -> None:
    """nbgrader's feedback HTML for graded submissions, a short page for rejected ones.

    nbgrader writes into a temporary folder; each page is checked (``page_problems``), then
    moved into place atomically. A page that cannot be made, or fails the check, costs only
    that student: they get a page saying so.
    """
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    with tempfile.TemporaryDirectory(prefix="llmcourse-feedback-") as tmp:
        config = copy.deepcopy(config)
        config.CourseDirectory.feedback_directory = tmp
        api = NbGraderAPI(CourseDirectory(config=config), config=config)
        for report in reports:
            target = out / "feedback" / report.student / assignment.name / f"{assignment.notebook}.html"
            if report.status == "rejected":
                write_output(target, rejection_html(report.student, assignment.name, report.reason).encode(),
                             permissions)
                continue
            result = api.generate_feedback(assignment.name, report.student, force=True)
            page = Path(tmp) / report.student / assignment.name / f"{assignment.notebook}.html"
            error = "" if result["success"] and page.is_file() else str(result.get("error", ""))[-300:]
            if not error:
                problems = page_problems(page.read_text(encoding="utf-8", errors="replace"))
                error = f"the page failed the safety check: {'; '.join(problems[:5])}" if problems else ""
            if error:
                report.notes.append(f"feedback failed: {error}")
                log(f"  feedback for {report.student} failed")
                write_output(target, rejection_html(
                    report.student, assignment.name, f"graded: {report.score:g} / {report.max_score:g} points",
                    heading="The feedback page could not be made; your scores are in the gradebook.").encode(),
                    permissions)
                continue
            write_output(target, page.read_bytes(), permissions)
