"""The book's hand-written SVG diagrams (book/figures/*.svg): well-formed, self-contained,
and legible on a phone.

On a phone 390 px wide the book's content column is 342 px wide (measured by
tests/test_book.py at that width), and a figure set to
``:width: 100%`` is scaled to it, so text of font-size s (user units) in a figure whose
viewBox is W wide shows s * 342 / W px tall. Under 11 px it is too small to read. The font
size of a text is its own ``font-size`` or the nearest ancestor's (a plain number or px);
the figures use no CSS (no <style>, no classes), so attributes are all there is to resolve.

The checks are plain functions returning a list of problems, so the tests at the end can
prove on deliberately bad figures that each check fails when it should.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

FIGURES = Path(__file__).resolve().parents[1] / "book" / "figures"
SVG_NS = "http://www.w3.org/2000/svg"
XLINK_HREF = "{http://www.w3.org/1999/xlink}href"
PHONE_COLUMN_PX = 342  # content column of the book on a 390-px-wide phone (tests/test_book.py checks it)
MIN_TEXT_PX = 11
MAX_INTRINSIC_WIDTH = 640  # a larger fixed width would overflow, or shrink text, off a phone
COURSE_FIGURES = {
    "gpt-stack.svg", "transformer-block.svg", "qkv-attention.svg", "split-merge-heads.svg",
    "causal-mask.svg", "sliding-window.svg", "kv-cache.svg",
}
FORBIDDEN_ELEMENTS = {"script", "image", "foreignObject", "style"}
EXTERNAL_MARKERS = ("http:", "https:", "//")
NUMBER = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"

FIGURE_FILES = sorted(FIGURES.glob("*.svg"))


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _namespace(tag: str) -> str:
    return tag[1:].split("}", 1)[0] if tag.startswith("{") else ""


def _parse(path: Path) -> ET.Element:
    return ET.parse(path).getroot()


def _viewbox(root: ET.Element) -> tuple[float, float, float, float] | None:
    parts = re.split(r"[\s,]+", root.get("viewBox", "").strip())
    if len(parts) != 4 or not all(re.fullmatch(NUMBER, p) for p in parts):
        return None
    return tuple(float(p) for p in parts)


def structure_problems(path: Path) -> list[str]:
    """An <svg> root in the SVG namespace, a viewBox of 4 numbers with positive width and
    height, a non-empty <title> and <desc>, and no fixed width too wide for a phone."""
    name = path.name
    try:
        root = _parse(path)
    except ET.ParseError as e:
        return [f"{name}: not well-formed XML ({e})"]
    if root.tag != f"{{{SVG_NS}}}svg":
        return [f"{name}: the root element is {root.tag!r}, not <svg> in the namespace {SVG_NS}"]
    problems = []
    box = _viewbox(root)
    if box is None:
        problems.append(f"{name}: viewBox {root.get('viewBox')!r} is not 4 numbers")
    elif box[2] <= 0 or box[3] <= 0:
        problems.append(f"{name}: viewBox {root.get('viewBox')!r} has a width or height <= 0")
    for part in ("title", "desc"):
        el = root.find(f"{{{SVG_NS}}}{part}")
        if el is None or not "".join(el.itertext()).strip():
            problems.append(f"{name}: no non-empty <{part}> (screen readers read it)")
    width = root.get("width")
    if width is not None and not width.strip().endswith("%"):
        m = re.fullmatch(rf"\s*({NUMBER})\s*(px)?\s*", width)
        if not m:
            problems.append(f"{name}: width {width!r} is neither a percentage nor a number of px")
        elif float(m.group(1)) > MAX_INTRINSIC_WIDTH:
            problems.append(f"{name}: fixed width {width!r} is wider than {MAX_INTRINSIC_WIDTH} px")
    return problems


def reference_problems(path: Path) -> list[str]:
    """Nothing from outside the file, nothing that runs: no attribute value with http:,
    https: or // (namespace declarations are not attributes once parsed), links only to
    #fragments of the file itself, no <script>, <image>, <foreignObject> or <style>, no
    element outside the SVG namespace, and no DTD (which could pull in external entities)."""
    name = path.name
    if "<!DOCTYPE" in path.read_text(encoding="utf-8", errors="replace").upper():
        return [f"{name}: has a <!DOCTYPE> (a DTD can pull in external entities)"]
    try:
        root = _parse(path)
    except ET.ParseError as e:
        return [f"{name}: not well-formed XML ({e})"]
    problems = []
    for el in root.iter():
        tag = _local(el.tag)
        if _namespace(el.tag) != SVG_NS:
            problems.append(f"{name}: element {el.tag!r} is not in the SVG namespace")
        if tag in FORBIDDEN_ELEMENTS:
            problems.append(f"{name}: has a <{tag}> element")
        for attr, value in el.attrib.items():
            low = value.lower()
            if any(marker in low for marker in EXTERNAL_MARKERS):
                problems.append(f"{name}: <{tag} {_local(attr)}={value!r}> points outside the file")
            if attr in ("href", XLINK_HREF) and not value.startswith("#"):
                problems.append(f"{name}: <{tag} href={value!r}> is not a #fragment of this file")
            for target in re.findall(r"url\(\s*['\"]?([^)'\"]*)", value):
                if not target.startswith("#"):
                    problems.append(f"{name}: <{tag} {_local(attr)}={value!r}> uses a url() outside the file")
    return problems


def _font_size(el: ET.Element) -> str | None:
    """The font-size an element sets itself (a style declaration wins over the attribute)."""
    m = re.search(r"font-size\s*:\s*([^;]+)", el.get("style", ""))
    if m:
        return m.group(1).strip()
    return el.get("font-size")


def _own_text(el: ET.Element) -> str:
    """The characters an element holds itself: its text and the tails of its children
    (a child <tspan>'s own characters are checked with the tspan)."""
    return (el.text or "") + "".join(child.tail or "" for child in el)


def legibility_problems(path: Path) -> list[str]:
    """Every text and tspan with visible characters has a resolvable font-size, and that
    size, scaled from the viewBox to the phone's content column, is at least 11 px."""
    name = path.name
    try:
        root = _parse(path)
    except ET.ParseError as e:
        return [f"{name}: not well-formed XML ({e})"]
    box = _viewbox(root)
    if box is None or box[2] <= 0:
        return [f"{name}: no usable viewBox, so the text size on a phone is unknown"]
    view_width = box[2]
    parents = {child: parent for parent in root.iter() for child in parent}
    problems = []
    for el in root.iter():
        tag = _local(el.tag)
        if tag not in ("text", "tspan"):
            continue
        content = " ".join(_own_text(el).split())
        if not content:
            continue
        chain, node = [], el
        while node is not None:
            chain.append(node)
            node = parents.get(node)
        for node in chain:
            transform = node.get("transform", "")
            if re.search(r"scale|matrix", transform):
                problems.append(f"{name}: text {content!r} sits under transform={transform!r}; "
                                f"scaled text cannot be checked")
            if node is not root and _local(node.tag) == "svg":
                problems.append(f"{name}: text {content!r} is inside a nested <svg>, which rescales it")
        size = next((s for s in map(_font_size, chain) if s is not None), None)
        if size is None:
            problems.append(f"{name}: text {content!r} has no font-size, on itself or an ancestor")
            continue
        m = re.fullmatch(rf"\s*({NUMBER})\s*(px)?\s*", size)
        if not m:
            problems.append(f"{name}: text {content!r} has font-size {size!r}, not a plain number or px")
            continue
        px = float(m.group(1)) * PHONE_COLUMN_PX / view_width
        if px < MIN_TEXT_PX:
            problems.append(
                f"{name}: text {content!r} has font-size {size} in a viewBox {view_width:g} wide, "
                f"{px:.1f} px on a phone (needs >= {MIN_TEXT_PX} px, "
                f"font-size >= {MIN_TEXT_PX * view_width / PHONE_COLUMN_PX:.1f})"
            )
    return problems


def _report(problems: list[str]) -> str:
    return "\n".join(problems)


# --- the book's figures -------------------------------------------------------------------

def test_all_course_figures_are_there():
    missing = COURSE_FIGURES - {p.name for p in FIGURE_FILES}
    assert not missing, f"missing from {FIGURES}: {sorted(missing)}"


@pytest.mark.parametrize("path", FIGURE_FILES, ids=lambda p: p.name)
def test_every_figure_is_an_svg_with_a_viewbox_and_a_title(path):
    problems = structure_problems(path)
    assert not problems, _report(problems)


@pytest.mark.parametrize("path", FIGURE_FILES, ids=lambda p: p.name)
def test_no_figure_loads_anything_from_outside_or_runs_code(path):
    problems = reference_problems(path)
    assert not problems, _report(problems)


@pytest.mark.parametrize("path", FIGURE_FILES, ids=lambda p: p.name)
def test_every_figure_is_legible_on_a_phone(path):
    problems = legibility_problems(path)
    assert not problems, _report(problems)


# --- the checks themselves: they pass a good figure and fail bad ones ---------------------

def _svg(body: str, viewbox: str = "0 0 480 300", extra: str = "", title: str = "t", desc: str = "d") -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
            f'viewBox="{viewbox}" {extra}><title>{title}</title><desc>{desc}</desc>{body}</svg>')


GOOD = _svg('<g font-size="16"><text x="10" y="20">inherited <tspan font-size="17px">own px</tspan></text>'
            '<text x="10" y="60" font-size="20" transform="rotate(-40 10 60)">rotated</text></g>'
            '<text x="10" y="90" style="font-size: 18px">styled</text><text x="1" y="1">  </text>'
            '<defs><marker id="a"><path d="M0,0 L1,1"/></marker></defs>'
            '<line x1="0" y1="0" x2="9" y2="9" marker-end="url(#a)"/><use href="#a"/>',
            extra='width="480" height="300"')

BAD = {
    # name: (figure text, check, fragments the problem report must name)
    "text_too_small": (_svg('<text x="0" y="20" font-size="12">tiny</text>', "0 0 600 300"),
                       legibility_problems, ["'tiny'", "font-size 12", "6.8 px"]),
    "inherited_size_too_small": (_svg('<g font-size="14"><text x="0" y="20">a <tspan>b</tspan></text></g>'),
                                 legibility_problems, ["'a'", "'b'", "10.0 px"]),
    "no_font_size": (_svg('<text x="0" y="20">unsized</text>'), legibility_problems,
                     ["'unsized'", "no font-size"]),
    "em_font_size": (_svg('<text x="0" y="20" font-size="1.2em">relative</text>'), legibility_problems,
                     ["'relative'", "'1.2em'"]),
    "scaled_text": (_svg('<g transform="scale(0.5)"><text x="0" y="20" font-size="20">half</text></g>'),
                    legibility_problems, ["'half'", "scale(0.5)"]),
    "external_image": (_svg('<image href="https://example.org/x.png" width="9" height="9"/>'),
                       reference_problems, ["<image>", "https://example.org/x.png"]),
    "protocol_relative_link": (_svg('<a href="//example.org/"><rect width="9" height="9"/></a>'),
                               reference_problems, ["//example.org/"]),
    "other_file": (_svg('<use xlink:href="other.svg#shape"/>'), reference_problems,
                   ["'other.svg#shape'", "not a #fragment"]),
    "url_outside": (_svg('<rect width="9" height="9" fill="url(pattern.svg#p)"/>'), reference_problems,
                    ["url() outside"]),
    "script": (_svg('<script>alert(1)</script>'), reference_problems, ["<script>"]),
    "style_block": (_svg('<style>text { font-size: 4px }</style>'), reference_problems, ["<style>"]),
    "foreign_object": (_svg('<foreignObject width="9" height="9"><div xmlns="http://www.w3.org/1999/xhtml">'
                            'html</div></foreignObject>'), reference_problems,
                       ["<foreignObject>", "not in the SVG namespace"]),
    "doctype": ('<?xml version="1.0"?>\n<!DOCTYPE svg [<!ENTITY x "y">]>\n' + _svg(""),
                reference_problems, ["<!DOCTYPE>"]),
    "no_title": (_svg("", title=""), structure_problems, ["<title>"]),
    "no_desc": (_svg("", desc=" "), structure_problems, ["<desc>"]),
    "viewbox_three_numbers": (_svg("", "0 0 480"), structure_problems, ["not 4 numbers"]),
    "viewbox_zero_width": (_svg("", "0 0 0 300"), structure_problems, ["width or height <= 0"]),
    "fixed_huge_width": (_svg("", extra='width="1600"'), structure_problems, ["'1600'", "wider than 640"]),
    "svg_namespace_missing": ('<svg viewBox="0 0 480 300"><title>t</title></svg>', structure_problems,
                              ["not <svg> in the namespace"]),
    "not_xml": ('<svg xmlns="http://www.w3.org/2000/svg"><text>unclosed</svg>', structure_problems,
                ["not well-formed XML"]),
}


def test_the_checks_pass_a_good_figure_with_inherited_and_styled_sizes(tmp_path):
    path = tmp_path / "good.svg"
    path.write_text(GOOD, encoding="utf-8")
    for check in (structure_problems, reference_problems, legibility_problems):
        assert check(path) == [], f"{check.__name__} rejected a good figure: {check(path)}"


@pytest.mark.parametrize("case", sorted(BAD))
def test_the_checks_reject_a_bad_figure(tmp_path, case):
    text, check, fragments = BAD[case]
    path = tmp_path / f"{case}.svg"
    path.write_text(text, encoding="utf-8")
    problems = check(path)
    assert problems, f"{check.__name__} found nothing wrong with the bad figure {case!r}"
    report = _report(problems)
    for fragment in fragments:
        assert fragment in report, f"{check.__name__}'s report on {case!r} lacks {fragment!r}:\n{report}"
    assert report.startswith(f"{case}.svg: "), f"the report should name the file: {report}"
