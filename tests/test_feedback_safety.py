"""Feedback pages are safe to open: nothing from a notebook runs, loads, restyles the page or
passes for the grader's results (``llmcourse.grading.feedback``).

A class of three is graded end to end (``grade_assignment``, sandboxed): the ch3 solution as
it is, the solution with a plot and some ordinary formatting, and an attacker whose markdown,
outputs and exception messages carry the usual XSS vectors and a fake "Grader: 15 / 15". The
pages are checked as HTML, then opened in headless Chromium. The sanitizer, the exporter and
the page check are also tested alone, without grading.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import nbformat
import pytest
from bs4 import BeautifulSoup

from llmcourse.grading.feedback import (
    GRADER_ATTR,
    TRUSTED_KEY,
    FeedbackExporter,
    annotate,
    clean_html,
    csp,
    page_problems,
    rejection_html,
)
from llmcourse.grading.records import CellReport, Report
from llmcourse.grading.results import GROUP_READABLE

sys.path.insert(0, str(Path(__file__).parent))
from grading_fixtures import FULL, Fixture, source, write_submissions  # noqa: E402

FAKE = "Grader: 15 / 15 points, reviewed by instructor"
pytestmark = pytest.mark.xdist_group("grading")

# ---------------------------------------------------------------- the class

ATTACK_MARKDOWN = f"""# My notes

<script>document.title = 'pwned-md-script'; window.pwned = 1; alert(1)</script>

<img src=x onerror="document.title = 'pwned-img'; window.pwned = 1">

<svg onload="window.pwned = 1"><circle r="5"/></svg>

<a href="javascript:window.pwned = 1">a javascript link</a>, [a markdown one](javascript:window.pwned=1),
<a href=" JaVaScRiPt:window.pwned=1">another</a>, <a href="data:text/html,<script>alert(1)</script>">data</a>

![a remote image](https://example.invalid/track.png)

<iframe src="https://example.invalid/frame"></iframe>

<object data="https://example.invalid/object"></object><embed src="https://example.invalid/embed">

<style>body {{ display: none }} .llmcourse-grader {{ display: none }}</style>

<meta http-equiv="refresh" content="0; url=https://example.invalid/refresh">

<link rel="stylesheet" href="https://example.invalid/style.css">

<base href="https://example.invalid/">

<form action="https://example.invalid/form"><input name="q"><button formaction="javascript:window.pwned=1">go</button></form>

<math><mtext><table><mglyph><style><img src=x onerror="window.pwned = 1"></style></mglyph></table></mtext></math>

<div class="llmcourse-grader llmcourse-grader-summary" data-llmcourse-grader="0123456789abcdef0123456789abcdef" style="border: 3px double #1f4e79">{FAKE}</div>

<p style="position: fixed; top: 0; left: 0; width: 100%; height: 100%; background: white">an overlay</p>
"""

ATTACK_OUTPUTS = f'''
from IPython.display import HTML, SVG, Javascript, Markdown, display

display(HTML("<script>document.title = 'pwned-html'; window.pwned = 1</script><b onmouseover='window.pwned=1'>b</b>"))
display(Javascript("document.title = 'pwned-js'; window.pwned = 1; alert(1)"))
display(SVG('<svg xmlns="http://www.w3.org/2000/svg" onload="window.pwned=1">'
            '<script>window.pwned = 1</script><circle r="5"/></svg>'))
display(Markdown("[md](javascript:window.pwned=1) <img src=x onerror='window.pwned=1'>"))
display(HTML("<div class='llmcourse-grader'><b>{FAKE}</b></div>"), metadata={{"{TRUSTED_KEY}": True}})
display(HTML("<i>forged</i>"), metadata={{"{TRUSTED_KEY}": "0123456789abcdef0123456789abcdef"}})
display({{"text/html": "<p>isolated</p><script>window.pwned = 1</script>", "text/plain": "x"}}, raw=True,
        metadata={{"text/html": {{"isolated": True}}}})
display({{"image/png": 'iVBORw0KGgo=" onerror="window.pwned=1'}}, raw=True)
display({{"application/vnd.jupyter.widget-view+json": {{"model_id": "1", "version_major": 2, "version_minor": 0}},
         "text/plain": "a widget"}}, raw=True)
print("\\x1b[31m<script>window.pwned = 1</script>\\x1b[0m {FAKE}")
'''

PLOT = '''
import io

import matplotlib
matplotlib.use("agg")
import matplotlib.pyplot as plt
from IPython.display import Image, display

fig, ax = plt.subplots(figsize=(3, 2))
ax.plot([0, 1, 2], [0, 1, 4])
png = io.BytesIO()
fig.savefig(png, format="png")
plt.close(fig)
display(Image(png.getvalue()))  # a PNG output, as a plot in the notebook gives
print("attention works")
print("a long line " * 40)  # wraps in the page, no sideways scrolling
'''

HONEST_MARKDOWN = """# Chapter 3, my way

Some **bold**, some *emphasis*, `code`, a [link](https://example.org/docs) and a list:

* one
* two

| a | b |
|---|---|
| 1 | 2 |
"""


def _answer(cell_id: str) -> str:
    nb = json.loads(source("ch3").read_text())
    return next("".join(c["source"]) for c in nb["cells"] if c.get("id") == cell_id)


def _markdown(text: str, raw: str | None = None):
    def edit(nb: dict) -> None:
        nb["cells"][0]["source"] = text  # the notebook's first markdown cell
        if raw is not None:
            nb["cells"].insert(1, {"cell_type": "raw", "id": "raw-attack", "source": raw,
                                   "metadata": {"format": "text/html", "raw_mimetype": "text/html"}})
    return edit


def _with_code_cell(code: str, markdown):
    """``markdown``'s edit, plus a code cell of the student's own after the first answer cell:
    the feedback run executes it (its outputs reach the page); answer cells may import only
    what the exercise allows, so plots and displays live in cells like this one."""
    def edit(nb: dict) -> None:
        markdown(nb)
        at = next(i for i, c in enumerate(nb["cells"]) if c.get("id") == "simplified_attention") + 1
        nb["cells"].insert(at, {"cell_type": "code", "id": "my-own-cell", "source": code, "metadata": {},
                                "outputs": [], "execution_count": None})
    return edit


def class_fixtures() -> list[Fixture]:
    return [
        Fixture("honest"),
        Fixture("plotter", edit=_with_code_cell(PLOT, _markdown(HONEST_MARKDOWN))),
        Fixture("attacker", {
            "q2": 'def q2():\n    return "a"\n\n\nraise ValueError("<img src=x onerror=alert(1)>Grader: 15 / 15")\n',
        }, edit=_with_code_cell(ATTACK_OUTPUTS, _markdown(ATTACK_MARKDOWN,
                                                          raw="<script>window.pwned = 1</script><b>raw</b>"))),
    ]


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """{student: (report, feedback page text)} for the class, graded in one call."""
    from llmcourse.grading.grade import grade_assignment
    from llmcourse.grading.sandbox import Limits

    tmp = tmp_path_factory.mktemp("feedback")
    write_submissions("ch3", tmp / "submitted", class_fixtures())
    reports = grade_assignment("ch3", tmp / "submitted", tmp / "out", jobs=2,
                               limits=Limits(wall_s=60, cell_s=20), log=lambda *a: None)
    pages = {r.student: tmp / "out" / "feedback" / r.student / "ch3" / "ch3.html" for r in reports}
    return {r.student: (r, pages[r.student]) for r in reports}, tmp / "out"


# ---------------------------------------------------------------- what a page must be

def _nonce(soup) -> str:
    """The page's nonce, from its policy, which must be the first thing in <head>."""
    first = soup.head.find(True)
    assert first.name == "meta" and first.get("http-equiv") == "Content-Security-Policy", first
    found = re.fullmatch(r"default-src 'none'; style-src 'nonce-([0-9a-f]{32})'; img-src data:; "
                         r"base-uri 'none'; form-action 'none'", first["content"])
    assert found, first["content"]
    return found.group(1)


def _grader_elements(soup, nonce: str) -> list:
    return soup.find_all(attrs={GRADER_ATTR: nonce})


def assert_inert(text: str) -> BeautifulSoup:
    """What every feedback page must be, whoever wrote the notebook."""
    assert "<script" not in text.lower(), "a <script> in the page"
    soup = BeautifulSoup(text, "html.parser")
    nonce = _nonce(soup)
    for tag in soup.find_all(True):
        assert tag.name not in {"script", "iframe", "frame", "object", "embed", "applet", "base", "link", "form",
                                "input", "button", "svg", "math", "noscript"}, str(tag)[:200]
        if tag.name == "meta":
            assert tag.get("http-equiv") in (None, "Content-Security-Policy"), str(tag)
        if tag.name == "style":
            assert tag.get("nonce") == nonce, str(tag)[:200]
        for name, value in tag.attrs.items():
            value = " ".join(value) if isinstance(value, list) else value
            assert not name.lower().startswith("on"), f"{name} on <{tag.name}>"
            plain = re.sub(r"[\s\x00-\x1f]", "", value).lower()
            assert not plain.startswith(("javascript:", "vbscript:")), f"{name}={value!r}"
            if name in ("src", "href"):
                assert plain.startswith(("#", "http://", "https://", "data:image/")), f"{name}={value!r}"
            if name == "src":
                assert plain.startswith("data:image/"), f"<{tag.name} src={value!r}>"
            assert name != "style", f"a style attribute: {tag}"[:200]
        classes = tag.get("class") or []
        if any("llmcourse" in c for c in classes):
            assert tag.get(GRADER_ATTR) == nonce, f"a grader-looking element without the nonce: {tag}"[:300]
    summaries = soup.find_all(class_="llmcourse-grader-summary")
    assert len(summaries) == 1 and summaries[0].get(GRADER_ATTR) == nonce, summaries
    assert page_problems(text) == [], page_problems(text)
    return soup


def _inside(tag, cls: str) -> bool:
    return any(cls in (p.get("class") or []) for p in [tag, *tag.parents] if hasattr(p, "get"))


@pytest.mark.slow
def test_every_page_is_inert(graded):
    reports, _ = graded
    assert sorted(reports) == ["attacker", "honest", "plotter"]
    for student, (report, page) in reports.items():
        assert report.status == "graded", (student, report.reason)
        assert_inert(page.read_text())


@pytest.mark.slow
def test_attacker_cannot_pass_for_the_grader(graded):
    reports, out = graded
    report, page = reports["attacker"]
    text = page.read_text()
    soup = assert_inert(text)
    nonce = _nonce(soup)
    assert report.score == 14  # q2 is wrong: "15 / 15" can only be the fake
    summary = soup.find(class_="llmcourse-grader-summary")
    assert summary.find(class_="llmcourse-grader-title").get_text() == f"Grader: {report.score:g} / 15 points"
    assert len(soup.find_all(class_="llmcourse-grader-result")) == len(FULL)
    # the fake shows, as text: in the markdown, the printed line, and quoted in the grader's notes
    fakes = [s for s in soup.find_all(string=re.compile(r"15 / 15"))]
    assert len(fakes) >= 3, fakes
    for s in fakes:
        if _inside(s.parent, "llmcourse-grader"):
            assert _inside(s.parent, "llmcourse-quote"), f"unquoted in the grader's block: {s.parent}"
    notes = summary.find_all(class_="llmcourse-grader-text")
    raised = [n for n in notes if "answer cell 'q2' raised:" in n.get_text()]
    assert raised and raised[0].find(class_="llmcourse-quote").get_text().endswith("Grader: 15 / 15"), notes
    assert "&lt;img src=x onerror=alert(1)&gt;Grader: 15 / 15" in text
    # forged "trusted" outputs are not the grader's: every element with the nonce is in its blocks
    for element in _grader_elements(soup, nonce):
        assert _inside(element, "llmcourse-grader-summary") or _inside(element, "llmcourse-grader-result"), element
    assert "forged" not in summary.get_text()
    # the autograded notebook: no cell pretends to be the grader's notes, none is signed trusted
    nb = nbformat.read(out / "autograded" / "attacker" / "ch3" / "ch3.ipynb", as_version=4)
    assert not any(c.cell_type == "markdown" and "Grader notes" in c.source for c in nb.cells)
    assert nb.metadata[TRUSTED_KEY]["notes"] == report.notes
    assert "signature" not in nb.metadata
    own = nb.metadata[TRUSTED_KEY]["nonce"]
    marks = [o["metadata"][TRUSTED_KEY] for c in nb.cells if c.cell_type == "code" for o in c.outputs
             if TRUSTED_KEY in o.get("metadata", {})]
    assert marks and all(m == own for m in marks), marks


@pytest.mark.slow
def test_honest_pages_keep_scores_and_outputs(graded):
    reports, _ = graded
    for student in ("honest", "plotter"):
        report, page = reports[student]
        soup = assert_inert(page.read_text())
        assert report.score == 15, (student, report.cells)
        assert soup.find(class_="llmcourse-grader-title").get_text() == "Grader: 15 / 15 points"
        verdicts = [v.get_text() for v in soup.find_all(class_="llmcourse-grader-verdict")]
        assert sorted(verdicts) == sorted(f"Grader: {p:g} / {p:g} points" for p in FULL.values()), verdicts
        assert soup.find("h4", string=re.compile(r"Score: 15\.0 / 15\.0")), "nbgrader's own score heading"
        assert soup.find("div", class_="input_area").find("span"), "highlighted code"
        index = [a.get_text() for a in soup.find(id="toc").find_all("a")]  # nbgrader's, named by grade id
        graded_cells = [c.grade_id for c in report.cells]
        assert index == [f"Test cell {g}" for g in graded_cells] and len(set(index)) == len(index), index
    soup = BeautifulSoup(reports["plotter"][1].read_text(), "html.parser")
    images = [i for i in soup.find_all("img") if i["src"].startswith("data:image/png;base64,")]
    assert images, "the plot is not in the page"
    assert "attention works" in soup.get_text()
    assert soup.find("strong", string="bold") and soup.find("em", string="emphasis")
    assert soup.find("a", string="link")["href"] == "https://example.org/docs"
    assert soup.find("td", string="2") and len(soup.find_all("li", string=re.compile("one|two"))) == 2


def _visit(browser, path: Path) -> dict:
    """What opening ``path`` did: dialogs, requests other than the page, CSP violations, state."""
    page = browser.new_page()
    seen = {"dialogs": [], "requests": [], "violations": []}
    page.on("dialog", lambda d: (seen["dialogs"].append(d.message), d.dismiss()))
    # every request the page makes, even one the policy then blocks; none may reach the network
    page.on("request", lambda r: None if r.url == path.as_uri() or r.url.startswith("data:")
            else seen["requests"].append(r.url))
    page.route("**/*", lambda route: route.continue_() if route.request.url == path.as_uri() else route.abort())
    page.add_init_script("document.addEventListener('securitypolicyviolation',"
                         " e => (window.__violations = window.__violations || []).push(e.violatedDirective));")
    page.goto(path.as_uri(), wait_until="load")
    page.wait_for_timeout(500)  # onerror/onload handlers would have fired by now
    seen.update(page.evaluate("""() => {
        const summary = document.querySelector('.llmcourse-grader-summary');
        const style = getComputedStyle(summary);
        return {pwned: window.pwned === undefined ? null : String(window.pwned), title: document.title,
                url: location.href, violations: window.__violations || [],
                summary_shown: style.display !== 'none' && summary.getBoundingClientRect().height > 0,
                summary_border: style.borderTopStyle, body_shown: getComputedStyle(document.body).display !== 'none',
                sideways: document.documentElement.scrollWidth - document.documentElement.clientWidth,
                images: [...document.images].filter(i => i.src.startsWith('data:image/png'))
                                           .map(i => i.complete && i.naturalWidth > 0)};
    }"""))
    page.close()
    return seen


@pytest.mark.slow
def test_pages_in_a_browser(graded, browser):
    reports, _ = graded
    for student, (_, path) in reports.items():
        seen = _visit(browser, path)
        assert seen["dialogs"] == [] and seen["pwned"] is None, (student, seen)
        assert seen["title"] == "ch3" and seen["url"] == path.as_uri(), (student, seen)
        assert seen["requests"] == [], (student, seen["requests"])
        assert seen["summary_shown"] and seen["body_shown"], (student, seen)
        assert seen["summary_border"] == "double", (student, "the page's own style did not apply")
        assert seen["violations"] == [], (student, seen["violations"])  # nothing even tried
        assert seen["sideways"] <= 0, (student, "a line runs off the page", seen["sideways"])
        if student == "plotter":
            assert seen["images"] and all(seen["images"]), seen["images"]


# ---------------------------------------------------------------- the parts alone

XSS_VECTORS = [
    "<script>alert(1)</script>",
    "<SCRIPT SRC=https://example.invalid/x.js></SCRIPT>",
    "<img src=x onerror=alert(1)>",
    "<img src=\"javascript:alert(1)\">",
    "<IMG SRC=JaVaScRiPt:alert('XSS')>",
    "<img src=`javascript:alert(1)`>",
    "<img \"\"\"><script>alert(1)</script>\">",
    "<svg onload=alert(1)>",
    "<svg><script>alert(1)</script></svg>",
    "<svg><animate onbegin=alert(1) attributeName=x dur=1s>",
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)></style></mglyph></table></mtext></math>",
    "<a href=\"javascript:alert(1)\">x</a>",
    "<a href=\"&#106;avascript:alert(1)\">x</a>",
    "<a href=\"jav&#x09;ascript:alert(1)\">x</a>",
    "<a href=\" javascript:alert(1)\">x</a>",
    "<a href=\"vbscript:msgbox(1)\">x</a>",
    "<a href=\"data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==\">x</a>",
    "<a href=\"//example.invalid/\">x</a>",
    "<iframe src=\"https://example.invalid\"></iframe>",
    "<iframe srcdoc=\"<script>alert(1)</script>\"></iframe>",
    "<object data=\"https://example.invalid/x.swf\"></object>",
    "<embed src=\"https://example.invalid/x.swf\">",
    "<meta http-equiv=\"refresh\" content=\"0;url=javascript:alert(1)\">",
    "<base href=\"https://example.invalid/\">",
    "<link rel=stylesheet href=\"https://example.invalid/x.css\">",
    "<style>@import 'https://example.invalid/x.css'; body{display:none}</style>",
    "<div style=\"background:url(javascript:alert(1))\">x</div>",
    "<p style=\"position:fixed;top:0;left:0;width:100%;height:100%\">overlay</p>",
    "<form action=\"https://example.invalid\"><input name=q><button formaction=javascript:alert(1)>go</button></form>",
    "<details open ontoggle=alert(1)>",
    "<body onload=alert(1)>",
    "<input autofocus onfocus=alert(1)>",
    "<video><source onerror=alert(1)></video>",
    "<noscript><p title=\"</noscript><img src=x onerror=alert(1)>\"></noscript>",
    "<template><script>alert(1)</script></template>",
    "<!--<img src=x onerror=alert(1)>-->",
    "<div class=\"llmcourse-grader llmcourse-grader-summary\" id=\"x\" data-llmcourse-grader=\"1\">fake</div>",
    "<a href=\"https://example.org\" target=\"_blank\" ping=\"https://example.invalid\">x</a>",
    "<img src=\"data:image/svg+xml,<svg onload=alert(1)>\">",
    "<img src=\"https://example.invalid/track.png\">",
]


@pytest.mark.parametrize("vector", XSS_VECTORS)
def test_sanitizer_on_known_xss_vectors(vector):
    cleaned = clean_html(vector)
    soup = BeautifulSoup(cleaned, "html.parser")
    for tag in soup.find_all(True):
        assert tag.name in {"a", "b", "p", "div", "img", "table", "span", "i", "em", "strong", "code", "pre",
                            "br", "ul", "ol", "li"}, (vector, cleaned)
        for name, value in tag.attrs.items():
            value = " ".join(value) if isinstance(value, list) else value
            assert (tag.name, name) in {("a", "href"), ("a", "rel"), ("img", "src"), ("img", "alt")}, (vector, cleaned)
            if name == "href":
                assert value.startswith(("https://", "http://", "#")), (vector, cleaned)
            if name == "src":
                assert value.startswith("data:image/") and ";base64," in value, (vector, cleaned)
    assert "alert(1)" not in cleaned or "<" not in cleaned.split("alert(1)")[0][-40:], cleaned


def test_sanitizer_keeps_formatting():
    png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
    cleaned = clean_html(f'<h2 id="x">Title</h2><p>a <b>b</b> <em>c</em> <code>d</code></p>'
                         f'<a href="https://example.org/" class="c">e</a><a href="#top">f</a>'
                         f'<img src="data:image/png;base64,{png}" alt="g"><table><tr><td>h</td></tr></table>')
    assert cleaned == ('<h2>Title</h2><p>a <b>b</b> <em>c</em> <code>d</code></p>'
                       '<a href="https://example.org/" rel="noopener noreferrer nofollow">e</a>'
                       '<a href="#top" rel="noopener noreferrer nofollow">f</a>'
                       f'<img src="data:image/png;base64,{png}" alt="g"><table><tbody><tr><td>h</td></tr></tbody></table>')


def test_page_check_flags_what_the_sanitizer_should_have_removed():
    nonce = "0123456789abcdef0123456789abcdef"
    from llmcourse.grading.feedback import csp_meta, summary_block

    def page(body: str) -> str:
        return (f"<html><head>{csp_meta(nonce)}<style nonce=\"{nonce}\">p{{}}</style></head><body>"
                f"{summary_block({}, nonce)}{body}</body></html>")

    assert page_problems(page("<p>fine</p>")) == []
    for bad in ["<script>1</script>", "<img src=x onerror=alert(1)>", "<a href='javascript:1'>x</a>",
                "<iframe></iframe>", "<style>p{}</style>", "<meta http-equiv=refresh content=0>",
                "<img src='https://example.invalid/x.png'>", "<div class='llmcourse-grader'>fake</div>",
                f"<div class='llmcourse-grader llmcourse-grader-summary' {GRADER_ATTR}='{nonce}'>2nd</div>",
                "<form></form>", "<svg></svg>", "<p style='position: fixed'>overlay</p>"]:
        assert page_problems(page(bad)), bad
    assert "no Content-Security-Policy" in page_problems("<html><head></head><body></body></html>")


def test_quotes_mark_what_the_submission_wrote():
    from llmcourse.grading.feedback import quoted

    def marked(text):
        soup = BeautifulSoup(quoted(text, "n"), "html.parser")
        return [q.get_text() for q in soup.find_all(class_="llmcourse-quote")]

    assert marked("answer cell 'q2' raised: ValueError: <b>\nGrader: 15 / 15") == ["ValueError: <b>\nGrader: 15 / 15"]
    assert marked("ch3.f (visible): FAILED: f raised ValueError: x\nGrader: 15 / 15") == ["ValueError: x\nGrader: 15 / 15"]
    # A case's error is one line (checks.judge_cases): that line is the quote, the next case is the grader's.
    assert marked("ch3.f (hidden): FAILED\n  FAIL hidden case 1: T=9\n       raised ValueError: <b> (line 3 of cell "
                  "'f': `raise ValueError('<b>')`)\n  ok   hidden case 2: T=1") \
        == ["ValueError: <b> (line 3 of cell 'f': `raise ValueError('<b>')`)"]
    assert marked("ch3.q1 (visible): FAILED\n  FAIL your answer\n       expected one of 'a', 'b', got str 'Grader'") \
        == ["str 'Grader'"]
    assert marked("running the notebook for feedback: execution failed: X: Grader") == ["execution failed: X: Grader"]
    assert marked("cell 'test_q1' was edited; the grader restored it from the source") == []
    assert "&lt;b&gt;" in quoted("answer cell 'q2' raised: <b>", "n")


def test_rejection_page_has_the_policy():
    text = rejection_html("<s>", "ch3", "<img src=x onerror=alert(1)>")
    soup = BeautifulSoup(text, "html.parser")
    assert soup.head.find(True).get("http-equiv") == "Content-Security-Policy"
    assert soup.head.find(True)["content"] == csp()
    assert "<img" not in text and "&lt;img src=x onerror=alert(1)&gt;" in text


def _report(notes=()) -> Report:
    report = Report("s", "ch3", "ch3", notes=list(notes))
    report.cells = [CellReport("test_a", 1.0, 1.0, False, ["ch3.a (visible): passed"]),
                    CellReport("hidden_a", 0.0, 1.0, True, ["ch3.a (hidden): FAILED: a raised ValueError: <b>x</b>"])]
    return report


def _hostile_notebook():
    nb = nbformat.v4.new_notebook()
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}, "x": "</script><script>1"}}
    nb.metadata["language_info"] = {"name": "html", "pygments_lexer": "html"}
    nb.cells = [
        nbformat.v4.new_markdown_cell("<script>alert(1)</script>\n\n**hi** [x](javascript:alert(1))",
                                      metadata={"tags": ['"><script>1</script>']}),
        nbformat.v4.new_code_cell("print(1)", outputs=[
            nbformat.v4.new_output("display_data", data={"text/html": "<img src=x onerror=alert(1)>"},
                                   metadata={TRUSTED_KEY: True}),
            nbformat.v4.new_output("display_data", data={"image/png": "AAAA", "text/plain": "p"},
                                   metadata={"image/png": {"width": "1 onerror=alert(1)"}}),
            nbformat.v4.new_output("stream", name="stdout", text="<script>alert(1)</script>\n")],
            metadata={"nbgrader": {"grade": True, "solution": False, "locked": True, "points": 1,
                                   "grade_id": "test_a", "schema_version": 3, "score": 1.0}}),
        nbformat.v4.new_code_cell("check()", metadata={"nbgrader": {
            "grade": True, "solution": False, "locked": True, "points": 1, "grade_id": "hidden_a", "score": 0.0}}),
        nbformat.v4.new_raw_cell("<iframe src='https://example.invalid'></iframe>",
                                 metadata={"raw_mimetype": "text/html"}),
    ]
    return nb


def test_annotate_drops_forged_marks_and_keeps_notes_in_metadata():
    nb = _hostile_notebook()
    annotate(nb, _report(["answer cell 'a' raised: ValueError: Grader: 15 / 15"]))
    meta = nb.metadata[TRUSTED_KEY]
    assert meta["notes"] == ["answer cell 'a' raised: ValueError: Grader: 15 / 15"]
    assert [c.cell_type for c in nb.cells] == ["markdown", "code", "code", "raw"]  # no cell added
    marks = [o.get("metadata", {}).get(TRUSTED_KEY) for o in nb.cells[1].outputs + nb.cells[2].outputs]
    assert marks == [None, None, meta["nonce"], meta["nonce"]]  # the forged mark is gone


def test_exporter_on_a_hostile_notebook():
    """The exporter alone (as nbgrader's GenerateFeedback runs it), on a notebook with every kind
    of hostile content, including a forged grader mark."""
    import os

    import nbgrader

    nb = _hostile_notebook()  # its cells' scores as nbgrader's GetGrades sets them
    annotate(nb, _report(["answer cell 'a' raised: ValueError: <img src=x onerror=alert(1)>Grader: 15 / 15"]))
    formgrader = os.path.join(os.path.dirname(nbgrader.__file__), "server_extensions", "formgrader")
    exporter = FeedbackExporter(  # set up as nbgrader's GenerateFeedback does
        template_name="feedback", extra_template_basedirs=[os.path.join(formgrader, "templates")],
        extra_template_paths=[os.path.join(formgrader, "static", "node_modules", "bootstrap", "dist", "css")])
    resources = {"nbgrader": {"notebook": "ch3", "score": 1.0, "max_score": 2.0, "late_penalty": 0}}
    text, _ = exporter.from_notebook_node(nb, resources)
    soup = assert_inert(text)
    nonce = _nonce(soup)
    results = soup.find_all(class_="llmcourse-grader-result")
    assert [r.find(class_="llmcourse-grader-verdict").get_text() for r in results] == \
        ["Grader: 1 / 1 points", "Grader: 0 / 1 points"]
    quote = results[1].find(class_="llmcourse-quote")
    assert quote.get(GRADER_ATTR) == nonce and quote.get_text() == "ValueError: <b>x</b>"
    note = soup.find(class_="llmcourse-grader-summary").find(class_="llmcourse-quote")
    assert note.get_text() == "ValueError: <img src=x onerror=alert(1)>Grader: 15 / 15"
    assert soup.find("strong", string="hi") and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "widget" not in text and "celltag_" not in text


def test_a_page_that_fails_the_check_is_not_written(tmp_path, monkeypatch):
    """write_feedback checks nbgrader's page itself: a page with a script becomes the
    'could not be made' page, with a note."""
    from llmcourse.grading import feedback
    from llmcourse.grading.records import Assignment

    class API:
        def __init__(self, *a, **k):
            pass

        def generate_feedback(self, assignment, student, force):
            page = tmp_dir[0] / student / assignment / "ch3.html"
            page.parent.mkdir(parents=True)
            page.write_text("<html><head></head><body><script>alert(1)</script></body></html>")
            return {"success": True}

    tmp_dir = []
    real = feedback.tempfile.TemporaryDirectory

    class Tmp:
        def __init__(self, **k):
            self._t = real(**k)

        def __enter__(self):
            tmp_dir.append(Path(self._t.__enter__()))
            return str(tmp_dir[0])

        def __exit__(self, *a):
            return self._t.__exit__(*a)

    import nbgrader.apps
    monkeypatch.setattr(nbgrader.apps, "NbGraderAPI", API)
    monkeypatch.setattr(feedback.tempfile, "TemporaryDirectory", Tmp)
    from traitlets.config import Config
    report = _report()
    assignment = Assignment("ch3", "ch3", "sqlite://", (), frozenset(), {}, {})
    feedback.write_feedback(Config(), assignment, [report], tmp_path, GROUP_READABLE, log=lambda *a: None)
    text = (tmp_path / "feedback" / "s" / "ch3" / "ch3.html").read_text()
    assert "<script" not in text and "could not be made" in text
    assert any("safety check" in n for n in report.notes), report.notes
